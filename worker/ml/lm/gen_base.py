"""What both generation engines share: the job's config, prompts, completions, encoding and text cutting."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from worker.ml.lm.loading import LoadedLM

logger = logging.getLogger(__name__)


class GenerationOOM(RuntimeError):
    """Out of memory even with one row in flight."""


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a job; ``index`` is its position in the job's prompt list.

    ``max_new_tokens`` and ``stop`` override the job's values for this prompt (None = the job's).
    """

    index: int
    prompt: str
    max_new_tokens: int | None = None
    stop: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Completion:
    """One generated sequence: only the new text, its token count and why it ended (``"stop"`` | ``"length"``)."""

    index: int
    sequence: int  # 0 .. num_return_sequences - 1
    text: str
    tokens: int
    finish_reason: str


@dataclass
class GenerateConfig:
    """Sampling and batching parameters of a ``text.generate`` job."""

    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = 50  # None or 0 = off
    top_p: float = 1.0
    num_return_sequences: int = 1
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)  # cut the text at the first of these; finish_reason "stop"
    seed: int = 0
    batch_size: int = 0  # prompts in flight (continuous) or per batch (static); 0 = auto
    min_new_tokens: int = 0  # EOS is masked until this many new tokens (benchmarks force exact lengths)

    def __post_init__(self) -> None:
        checks = {
            "max_new_tokens must be >= 1": self.max_new_tokens >= 1,
            "min_new_tokens must be >= 0": self.min_new_tokens >= 0,
            "temperature must be >= 0": self.temperature >= 0,
            "top_k must be >= 0": self.top_k is None or self.top_k >= 0,
            "top_p must be in (0, 1]": 0 < self.top_p <= 1,
            "num_return_sequences must be >= 1": self.num_return_sequences >= 1,
            "repetition_penalty must be > 0": self.repetition_penalty > 0,
            "batch_size must be >= 0": self.batch_size >= 0,
            "stop strings must be non-empty": all(isinstance(s, str) and s for s in self.stop),
        }
        errors = [message for message, ok in checks.items() if not ok]
        if errors:
            raise ValueError("; ".join(errors))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def decoded_sequences(self) -> int:
        """Sequences actually decoded per prompt: greedy ones are all the same, so one is decoded and copied."""
        return 1 if self.greedy else self.num_return_sequences


@dataclass(eq=False)
class Stream:
    """One job's prompts in a batch shared with other jobs (cross-job batching); its callbacks see only its rows.

    Each stream samples with its own ``cfg`` (temperature, top-k, top-p, seed, repetition penalty, sequences per
    prompt, default limit and stop strings): jobs of one model share a batch whatever their sampling, as requests do
    in vLLM. ``batch_size`` and ``min_new_tokens`` are the engine's (a budget, a benchmark switch).

    ``on_end(None)`` once every prompt was handed to ``on_chunk``; ``on_end(exc)`` when a callback of this stream
    raised ``exc`` or its prompts cannot be generated (then its rows left the batch, the other streams go on).
    Without ``on_end`` (a job running alone) such an exception propagates out of the engine.
    """

    items: Sequence[PromptItem]
    report: Callable[..., None]
    on_chunk: Callable[[list[Completion]], None] | None = None
    on_end: Callable[[BaseException | None], None] | None = None
    cfg: GenerateConfig | None = None  # this stream's sampling, limits and stop strings (None: the engine's)


@dataclass
class Encoded:
    """A prompt item, its token ids (truncated on the left to fit the context), its own limit and stop strings."""

    item: PromptItem
    ids: list[int]
    max_new_tokens: int
    stop: list[str]


def encode(lm: LoadedLM, items: Sequence[PromptItem], cfg: GenerateConfig) -> list[Encoded]:
    """Tokenize the prompts; an empty prompt starts from BOS/EOS, a long one keeps its last tokens."""
    tok = lm.tokenizer
    start_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    ids_list = tok([it.prompt for it in items])["input_ids"] if items else []
    out, truncated = [], []
    for item, ids in zip(items, ids_list, strict=True):
        limit = item.max_new_tokens or cfg.max_new_tokens
        if limit < 1:
            raise ValueError(f"prompt {item.index}: max_new_tokens must be >= 1")
        room = lm.context_length - limit
        if room < 1:
            raise ValueError(
                f"max_new_tokens {limit} leaves no room for a prompt in the "
                f"{lm.context_length}-token context of {lm.source}"
            )
        if len(ids) > room:
            truncated.append(item.index)
        stop = list(cfg.stop if item.stop is None else item.stop)
        out.append(Encoded(item, ids[-room:] or [start_id], limit, stop))
    if truncated:
        logger.warning("%d prompts too long for the context keep only their end (first: %d)", *_first(truncated))
    return out


def _first(indexes: list[int]) -> tuple[int, int]:
    return len(indexes), indexes[0]


def eos_ids(lm: LoadedLM) -> set[int]:
    """Every token id that ends a sequence (the model's generation config and the tokenizer's EOS)."""
    eos = lm.model.generation_config.eos_token_id
    ids = set(eos) if isinstance(eos, list | tuple) else ({eos} if eos is not None else set())
    if lm.tokenizer.eos_token_id is not None:
        ids.add(lm.tokenizer.eos_token_id)
    return ids


def first_stop(text: str, stop: Sequence[str]) -> int | None:
    """Where the earliest stop string starts in ``text`` (None when there is none)."""
    hits = [pos for s in stop if (pos := text.find(s)) >= 0]
    return min(hits) if hits else None


def stop_window(stop: Sequence[str]) -> int:
    """Tokens of a sequence's tail to decode to see a stop string that completes in its latest token."""
    return 4 * max((len(s) for s in stop), default=0) + 1  # <= 4 UTF-8 bytes per char, >= 1 byte per token


def tokens_to_stop(tokenizer, ids: list[int], stop: Sequence[str]) -> int:
    """The fewest leading tokens of ``ids`` whose text contains a stop string (binary search over prefixes)."""
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        text = tokenizer.decode(ids[:mid], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if first_stop(text, stop) is not None:
            hi = mid
        else:
            lo = mid + 1
    return lo


def finish(tokenizer, ids: list[int], eos: set[int], limit: int, stop: Sequence[str]) -> tuple[str, int, str]:
    """(text, tokens, finish_reason) of new tokens ``ids``: cut at EOS and at ``limit``, then at the first stop."""
    end = next((i for i, t in enumerate(ids[:limit]) if t in eos), None)
    ids = ids[:limit] if end is None else ids[:end]
    reason = "length" if end is None else "stop"
    text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    cut = first_stop(text, stop)
    if cut is None:
        return text, len(ids), reason
    return text[:cut], tokens_to_stop(tokenizer, ids, stop), "stop"


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()
