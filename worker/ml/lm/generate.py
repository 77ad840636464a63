"""Bulk text generation for ``text.generate``: continuous batching, per-prompt randomness and limits.

The task hands :func:`generate` a loaded model (:func:`worker.ml.lm.loading.load_causal_lm`), the prompts still
to do (a retried job skips those already stored), a :class:`GenerateConfig`, a ``report`` callback and an
``on_chunk`` callback. Completions go to ``on_chunk`` as their prompts finish (in bounded chunks, at least once a
second while some are ready), then ``report`` is called, which may raise :class:`~worker.ml.common.Stopped`; it
propagates, and what ``on_chunk`` got is kept.

Engines: :mod:`worker.ml.lm.continuous` (the default for GPT-2 models: rows in flight refill the moment one ends) and
:mod:`worker.ml.lm.static_batch` (the earlier length-sorted static batches, the benchmark baseline and the fallback
for other architectures).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from worker.ml.common import Report, no_report
from worker.ml.lm.continuous import generate_continuous, kv_bytes_per_token, rows_in_flight
from worker.ml.lm.gen_base import Completion, GenerateConfig, GenerationOOM, PromptItem, encode
from worker.ml.lm.loading import LoadedLM, UnsafeWeightsError, context_length_of, count_tokens, load_causal_lm
from worker.ml.lm.sampling import Sample
from worker.ml.lm.static_batch import generate_static
from worker.ml.lm.static_batch import static_batch_size as auto_batch_size

logger = logging.getLogger(__name__)

__all__ = [
    "ENGINES",
    "Completion",
    "GenerateConfig",
    "GenerationOOM",
    "LoadedLM",
    "PromptItem",
    "Sample",
    "UnsafeWeightsError",
    "auto_batch_size",
    "context_length_of",
    "count_tokens",
    "generate",
    "kv_bytes_per_token",
    "load_causal_lm",
    "rows_in_flight",
]

ENGINES = ("continuous", "static")
CONTINUOUS_MODEL_TYPES = {"gpt2"}  # absolute positions, one ``update(k, v, layer)`` per layer: checked by tests


def generate(
    lm: LoadedLM,
    items: Sequence[PromptItem],
    cfg: GenerateConfig,
    report: Report = no_report,
    on_chunk: Callable[[list[Completion]], None] | None = None,
    engine: str = "continuous",
) -> list[Completion]:
    """Generate ``cfg.num_return_sequences`` completions per prompt; returns them all (in the order they finished).

    ``report(done_prompts, total_prompts, tokens_per_s=...)`` follows each ``on_chunk`` and comes at least every
    half second of decode; it may raise ``Stopped`` (propagated). With the continuous engine a prompt's text
    depends only on the model, the config's sampling params, ``cfg.seed``, the prompt's index and the sequence
    number (see the README for what is promised across machines).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; one of {ENGINES}")
    encoded = encode(lm, items, cfg)
    if not encoded:
        return []
    if engine == "continuous" and lm.model.config.model_type not in CONTINUOUS_MODEL_TYPES:
        logger.info("%s is a %s: static batches", lm.source, lm.model.config.model_type)
        engine = "static"
    if engine == "static":
        return generate_static(lm, encoded, cfg, report, on_chunk)
    return generate_continuous(lm, encoded, cfg, report, on_chunk)
