"""Bulk text generation for ``text.generate``: length-sorted batches, ragged prefill, one HF ``generate`` per batch.

The task hands :func:`generate` a loaded model (:func:`worker.ml.lm_loading.load_causal_lm`), the prompts still
to do (a retried job skips those already stored), a :class:`GenerateConfig`, a ``report`` callback and an
``on_chunk`` callback. After each batch its completions go to ``on_chunk`` (the task stores them), then ``report``
is called, which may raise :class:`~worker.ml.common.Stopped`; it propagates, and what ``on_chunk`` got is kept.
A batch that runs out of memory is retried with half the batch size.

Per batch: prompts (sorted by length) are prefilled in small micro-batches, so a short prompt never pays for the
padding of a long one, and their KV caches are merged, left-padded, into one static cache; HF ``generate`` then
decodes the whole batch from it. Sampling is done by :class:`_Sample` with a per-batch ``torch.Generator``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StaticCache, StoppingCriteria, StoppingCriteriaList

from worker.ml.common import Device, Report, no_report
from worker.ml.lm_loading import LoadedLM, UnsafeWeightsError, context_length_of, count_tokens, load_causal_lm

logger = logging.getLogger(__name__)

__all__ = [
    "Completion",
    "GenerateConfig",
    "GenerationOOM",
    "LoadedLM",
    "PromptItem",
    "UnsafeWeightsError",
    "auto_batch_size",
    "context_length_of",
    "count_tokens",
    "generate",
    "load_causal_lm",
]

# Rows (prompts x sequences) decoded together, and prompts per prefill micro-batch. Measured on the 2-core CPU
# with the GPT-2 124M shape (benchmarks/generation.py): decode throughput still grows from 32 to 64 rows once the
# padding cost is gone, and micro-batches of 8 keep prefill padding small while batching the weights' reads.
AUTO_BATCH_ROWS = {"cpu": 64, "cuda": 256}
PREFILL_MICRO_BATCH = {"cpu": 8, "cuda": 64}


class GenerationOOM(RuntimeError):
    """Out of memory even with a batch of one prompt."""


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a job; ``index`` is its position in the job's prompt list."""

    index: int
    prompt: str


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
    batch_size: int = 0  # prompts per batch (one on_chunk/report each); 0 = auto from AUTO_BATCH_ROWS
    min_new_tokens: int = 0  # EOS is masked until this many new tokens (benchmarks force exact lengths)

    def __post_init__(self) -> None:
        checks = {
            "max_new_tokens must be >= 1": self.max_new_tokens >= 1,
            "min_new_tokens must be in [0, max_new_tokens]": 0 <= self.min_new_tokens <= self.max_new_tokens,
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


@dataclass
class _Encoded:
    """A prompt item and its token ids (truncated on the left to fit the context)."""

    item: PromptItem
    ids: list[int]


def auto_batch_size(device: Device, cfg: GenerateConfig | None = None) -> int:
    """Prompts per batch when ``cfg.batch_size`` is 0: a row budget by device, shared by the decoded sequences."""
    rows = AUTO_BATCH_ROWS["cuda" if device.is_cuda else "cpu"]
    return max(1, rows // (cfg.decoded_sequences if cfg else 1))


def generate(
    lm: LoadedLM,
    items: Sequence[PromptItem],
    cfg: GenerateConfig,
    report: Report = no_report,
    on_chunk: Callable[[list[Completion]], None] | None = None,
) -> list[Completion]:
    """Generate ``cfg.num_return_sequences`` completions per prompt, batch by batch; returns them all.

    Prompts are sorted by token length (longest first, so an OOM shows at once). After each batch:
    ``on_chunk(completions)``, then ``report(done_prompts, total_prompts, tokens_per_s=...)``, which may raise
    ``Stopped`` (propagated). The same items, config and seed give the same texts on the same machine: each batch
    samples from a generator seeded by ``cfg.seed`` and the index of its first prompt.
    """
    encoded = sorted(_encode(lm, items, cfg), key=lambda e: (-len(e.ids), e.item.index))
    batch_size = cfg.batch_size or auto_batch_size(lm.device, cfg)
    results: list[Completion] = []
    done = new_tokens = 0
    start = time.perf_counter()
    while done < len(encoded):
        batch = encoded[done : done + batch_size]
        try:
            chunk, generated = _run_batch(lm, batch, cfg)
        except RuntimeError as exc:
            if not _is_oom(exc):
                raise
            chunk = None  # handled below, outside the except block, so the failed batch's tensors are freed
        if chunk is None:
            batch_size = _halve(batch_size, len(batch), lm.device)
            continue
        results.extend(chunk)
        done += len(batch)
        new_tokens += generated
        if on_chunk is not None:
            on_chunk(chunk)
        rate = new_tokens / max(time.perf_counter() - start, 1e-9)
        logger.debug("generated %d/%d prompts, batch %d, %.1f tokens/s", done, len(encoded), len(batch), rate)
        report(done, len(encoded), tokens_per_s=rate)
    return results


def _encode(lm: LoadedLM, items: Sequence[PromptItem], cfg: GenerateConfig) -> list[_Encoded]:
    """Tokenize the prompts; an empty prompt starts from BOS/EOS, a long one keeps its last tokens."""
    max_prompt = lm.context_length - cfg.max_new_tokens
    if max_prompt < 1:
        raise ValueError(
            f"max_new_tokens {cfg.max_new_tokens} leaves no room for a prompt in the "
            f"{lm.context_length}-token context of {lm.source}"
        )
    tok = lm.tokenizer
    start_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    ids_list = tok([it.prompt for it in items])["input_ids"] if items else []
    encoded = [_Encoded(item, ids[-max_prompt:] or [start_id]) for item, ids in zip(items, ids_list, strict=True)]
    truncated = [item.index for item, ids in zip(items, ids_list, strict=True) if len(ids) > max_prompt]
    if truncated:
        logger.warning(
            "%d prompts longer than %d tokens keep only their end (first: %d)", len(truncated), max_prompt, truncated[0]
        )
    return encoded


def _left_pad(rows: list[list[int]], width: int, pad_id: int, device: torch.device):
    """``input_ids`` and ``attention_mask``, both (B, width), each row right-aligned."""
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, W)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, W)
    for r, ids in enumerate(rows):
        if ids:
            input_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[r, width - len(ids) :] = 1
    return input_ids.to(device), mask.to(device)


def _prefill(lm: LoadedLM, rows: list[list[int]], copies: int, max_new_tokens: int) -> tuple[StaticCache, int]:
    """KV cache of every row but its last token, for ``copies`` sequences per row; returns it and its width W.

    Micro-batches of similar length (the rows come sorted) are run separately, then left-padded to W and stacked
    into one static cache (B*copies, H, W, D) with room for the new tokens. Padded positions are zeroed.
    """
    width = max(len(ids) for ids in rows) - 1
    cache = StaticCache(config=lm.model.config, max_cache_len=width + 1 + max_new_tokens)
    if width == 0:
        return cache, 0  # one-token prompts: HF generate prefills them itself
    micro = PREFILL_MICRO_BATCH["cuda" if lm.device.is_cuda else "cpu"]
    parts = []  # per micro-batch: per layer (keys, values), each (b, H, W, D)
    for s in range(0, len(rows), micro):
        prefixes = [ids[:-1] for ids in rows[s : s + micro]]
        w = max(1, max(len(p) for p in prefixes))  # the micro-batch's own width
        input_ids, mask = _left_pad(prefixes, w, lm.tokenizer.pad_token_id, lm.device.torch_device)  # (b, w)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (b, w): as HF generate numbers left-padded tokens
        out = lm.model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
        )
        keep = mask.bool()[:, None, :, None]  # (b, 1, w, 1)
        pad = (0, 0, width - w, 0)  # left-pad the sequence dim from w to W
        parts.append(
            [
                (
                    torch.nn.functional.pad(torch.where(keep, layer.keys, 0), pad),
                    torch.nn.functional.pad(torch.where(keep, layer.values, 0), pad),
                )
                for layer in out.past_key_values.layers
            ]
        )
    for i in range(len(parts[0])):
        keys = torch.cat([p[i][0] for p in parts]).repeat_interleave(copies, dim=0)  # (B*copies, H, W, D)
        values = torch.cat([p[i][1] for p in parts]).repeat_interleave(copies, dim=0)
        cache.update(keys, values, i)
    return cache, width


def _run_batch(lm: LoadedLM, batch: list[_Encoded], cfg: GenerateConfig) -> tuple[list[Completion], int]:
    """Generate one batch; returns its completions and the number of new tokens actually generated."""
    dev, copies = lm.device.torch_device, cfg.decoded_sequences
    rows = [e.ids for e in batch]
    with torch.inference_mode(), _autocast(lm.device):
        cache, width = _prefill(lm, rows, copies, cfg.max_new_tokens)
        expanded = [ids for ids in rows for _ in range(copies)]
        input_ids, mask = _left_pad(expanded, width + 1, lm.tokenizer.pad_token_id, dev)  # (B*copies, W+1)
        processors = LogitsProcessorList()
        if not cfg.greedy:
            generator = torch.Generator(device=dev).manual_seed(_batch_seed(cfg.seed, batch[0].item.index))
            processors.append(_Sample(cfg, generator))
        criteria = StoppingCriteriaList([StopOnText(lm.tokenizer, cfg.stop, width + 1)] if cfg.stop else [])
        out = lm.model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            past_key_values=cache,
            logits_processor=processors,
            stopping_criteria=criteria,
            do_sample=False,
            max_new_tokens=cfg.max_new_tokens,
            min_new_tokens=cfg.min_new_tokens or None,
            repetition_penalty=cfg.repetition_penalty,
            pad_token_id=lm.tokenizer.pad_token_id,
            disable_compile=True,
            temperature=None,
            top_k=None,
            top_p=None,
        )  # (B*copies, W+1+new)
    return _completions(lm, batch, out[:, width + 1 :].cpu(), cfg)


def _batch_seed(seed: int, first_index: int) -> int:
    """A seed per batch, derived from the job's seed and the batch's first prompt index."""
    return (seed * 1_000_003 + first_index * 7_919 + 17) % (2**63 - 1)


def _autocast(device: Device):
    if device.is_cuda and device.autocast_dtype is not None:
        return torch.autocast("cuda", dtype=device.autocast_dtype)
    return contextlib.nullcontext()


class _Sample(LogitsProcessor):
    """Draws the next token (temperature, top-k, top-p) and returns scores whose argmax is that token.

    It runs last, under HF's greedy search (after the repetition penalty and min-length processors). Why not
    ``do_sample=True``: ``torch.multinomial`` draws an exponential per vocabulary entry per row (about 1 ms per
    row for GPT-2's 50k vocabulary on CPU, ~20% of a batched decode step), where this draws among the top-k only,
    and a per-batch ``torch.Generator`` leaves the global RNG alone.
    """

    def __init__(self, cfg: GenerateConfig, generator: torch.Generator):
        self.temperature, self.top_k, self.top_p = cfg.temperature, cfg.top_k, cfg.top_p
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()  # (B, V)
        if self.top_k and self.top_k < scores.shape[-1]:
            values, ids = scores.topk(self.top_k, dim=-1)  # (B, k), descending
        elif self.top_p < 1:
            values, ids = scores.sort(dim=-1, descending=True)  # (B, V)
        else:
            values, ids = scores, None
        probs = torch.softmax(values / self.temperature, dim=-1)  # (B, K)
        if self.top_p < 1:  # nucleus: keep the smallest prefix whose mass reaches top_p (at least one token)
            probs = probs.masked_fill(probs.cumsum(-1) - probs >= self.top_p, 0)
        cdf = probs.cumsum(-1)  # (B, K)
        u = torch.rand((cdf.shape[0], 1), generator=self.generator, device=cdf.device) * cdf[:, -1:]  # (B, 1)
        choice = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[-1] - 1)  # (B, 1)
        token = choice if ids is None else ids.gather(1, choice)  # (B, 1)
        return torch.full_like(scores, float("-inf")).scatter_(1, token, 0.0)  # (B, V)


class StopOnText(StoppingCriteria):
    """Ends a row once its *new* text contains a stop string (the text is cut in :func:`_completions`).

    HF's ``stop_strings`` also matches a stop string that straddles the end of the prompt, which would end a row
    on text that is not part of the completion; this decodes only the tail of the generated tokens. It reads the
    tokens on the host every step (a device sync on CUDA), so it is only installed when stop strings are set.
    """

    def __init__(self, tokenizer, stop: list[str], prompt_width: int):
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.prompt_width = prompt_width
        # a stop string first completes in the latest token; its bytes (<= 4 per char) span at most this many
        self.window = 4 * max(len(s) for s in self.stop) + 1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        tail = input_ids[:, self.prompt_width :][:, -self.window :].tolist()  # (B, <= window)
        texts = self.tokenizer.batch_decode(tail, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        found = [_first_stop(t, self.stop) is not None for t in texts]
        return torch.tensor(found, dtype=torch.bool, device=input_ids.device)  # (B,)


def _eos_ids(lm: LoadedLM) -> set[int]:
    eos = lm.model.generation_config.eos_token_id
    ids = set(eos) if isinstance(eos, list | tuple) else ({eos} if eos is not None else set())
    if lm.tokenizer.eos_token_id is not None:
        ids.add(lm.tokenizer.eos_token_id)
    return ids


def _completions(lm: LoadedLM, batch: list[_Encoded], new: torch.Tensor, cfg: GenerateConfig):
    """Decode the new tokens (B*copies, new) row by row: cut at EOS, then at the first stop string."""
    eos = _eos_ids(lm)
    per_prompt = cfg.decoded_sequences
    rows, reasons = [], []
    for ids in new.tolist():
        end = next((i for i, t in enumerate(ids) if t in eos), None)
        rows.append(ids if end is None else ids[:end])
        reasons.append("length" if end is None else "stop")
    texts = lm.tokenizer.batch_decode(rows, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    copies = cfg.num_return_sequences // per_prompt  # greedy: the one decoded sequence stands for all
    out: list[Completion] = []
    for r, (ids, text, reason) in enumerate(zip(rows, texts, reasons, strict=True)):
        tokens = len(ids)
        cut = _first_stop(text, cfg.stop)
        if cut is not None:
            text, reason, tokens = text[:cut], "stop", _tokens_to_stop(lm.tokenizer, ids, cfg.stop)
        index = batch[r // per_prompt].item.index
        out.extend(Completion(index, r % per_prompt + k, text, tokens, reason) for k in range(copies))
    return out, sum(len(ids) for ids in rows)


def _first_stop(text: str, stop: list[str]) -> int | None:
    """Where the earliest stop string starts in ``text`` (None when there is none)."""
    hits = [pos for s in stop if (pos := text.find(s)) >= 0]
    return min(hits) if hits else None


def _tokens_to_stop(tokenizer, ids: list[int], stop: list[str]) -> int:
    """The fewest leading tokens of ``ids`` whose text contains a stop string (binary search over prefixes)."""
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        text = tokenizer.decode(ids[:mid], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if _first_stop(text, stop) is not None:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _halve(batch_size: int, current: int, device: Device) -> int:
    """After an OOM on a batch of ``current`` prompts: free the cache and return half; none left → GenerationOOM."""
    if device.is_cuda:
        torch.cuda.empty_cache()
    if current <= 1:
        raise GenerationOOM(f"out of memory generating a single prompt on {device.name}")
    new_size = max(1, min(batch_size, current) // 2)
    logger.warning("out of memory with a batch of %d prompts; retrying with %d", current, new_size)
    return new_size
