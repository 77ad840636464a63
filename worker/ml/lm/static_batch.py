"""The static-batch engine (genqueue's engine before continuous batching, kept as the benchmark baseline).

Prompts are sorted by length and cut into batches; per batch, prompts are prefilled in small micro-batches, their
KV caches merged, left-padded, into one static cache, and HF ``generate`` decodes the whole batch until its
longest row ends. Sampling uses one ``torch.Generator`` per batch, so a sampled text depends on its batch-mates.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import torch
from transformers import LogitsProcessorList, StaticCache, StoppingCriteria, StoppingCriteriaList

from worker.ml.common import Device, Report, no_report
from worker.ml.lm.gen_base import (
    Completion,
    Encoded,
    GenerateConfig,
    GenerationOOM,
    eos_ids,
    finish,
    first_stop,
    is_oom,
    stop_window,
)
from worker.ml.lm.loading import LoadedLM
from worker.ml.lm.sampling import Sample

logger = logging.getLogger(__name__)

# Rows (prompts x sequences) decoded together, and prompts per prefill micro-batch. Measured on the 2-core CPU
# with the GPT-2 124M shape (benchmarks/generation.py): decode throughput still grows from 32 to 64 rows once the
# padding cost is gone, and micro-batches of 8 keep prefill padding small while batching the weights' reads.
AUTO_BATCH_ROWS = {"cpu": 64, "cuda": 256}
PREFILL_MICRO_BATCH = {"cpu": 8, "cuda": 64}


def static_batch_size(device: Device, cfg: GenerateConfig | None = None) -> int:
    """Prompts per batch when ``cfg.batch_size`` is 0: a row budget by device, shared by the decoded sequences."""
    rows = AUTO_BATCH_ROWS["cuda" if device.is_cuda else "cpu"]
    return max(1, rows // (cfg.decoded_sequences if cfg else 1))


def generate_static(
    lm: LoadedLM,
    encoded: list[Encoded],
    cfg: GenerateConfig,
    report: Report = no_report,
    on_chunk: Callable[[list[Completion]], None] | None = None,
) -> list[Completion]:
    """Static batches of length-sorted prompts; ``on_chunk`` then ``report`` after each batch; OOM halves the batch."""
    encoded = sorted(encoded, key=lambda e: (-len(e.ids), e.item.index))
    batch_size = cfg.batch_size or static_batch_size(lm.device, cfg)
    results: list[Completion] = []
    done = new_tokens = 0
    start = time.perf_counter()
    while done < len(encoded):
        batch = encoded[done : done + batch_size]
        try:
            chunk, generated = _run_batch(lm, batch, cfg)
        except RuntimeError as exc:
            if not is_oom(exc):
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
        report(done, len(encoded), tokens_per_s=new_tokens / max(time.perf_counter() - start, 1e-9))
    return results


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


def _run_batch(lm: LoadedLM, batch: list[Encoded], cfg: GenerateConfig) -> tuple[list[Completion], int]:
    """Generate one batch (to the longest ``max_new_tokens`` in it); returns its completions and new tokens."""
    dev, copies = lm.device.torch_device, cfg.decoded_sequences
    rows = [e.ids for e in batch]
    max_new = max(e.max_new_tokens for e in batch)
    with torch.inference_mode(), _autocast(lm.device):
        cache, width = _prefill(lm, rows, copies, max_new)
        expanded = [ids for ids in rows for _ in range(copies)]
        input_ids, mask = _left_pad(expanded, width + 1, lm.tokenizer.pad_token_id, dev)  # (B*copies, W+1)
        processors = LogitsProcessorList()
        if not cfg.greedy:
            generator = torch.Generator(device=dev).manual_seed(_batch_seed(cfg.seed, batch[0].item.index))
            processors.append(Sample(cfg.temperature, cfg.top_k, cfg.top_p, generator))
        stops = [e.stop for e in batch for _ in range(copies)]
        criteria = StoppingCriteriaList([StopOnText(lm.tokenizer, stops, width + 1)] if any(stops) else [])
        out = lm.model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            past_key_values=cache,
            logits_processor=processors,
            stopping_criteria=criteria,
            do_sample=False,
            max_new_tokens=max_new,
            min_new_tokens=min(cfg.min_new_tokens, max_new) or None,
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


class StopOnText(StoppingCriteria):
    """Ends a row once its *new* text contains one of its stop strings (the text is cut in :func:`_completions`).

    HF's ``stop_strings`` also matches a stop string that straddles the end of the prompt; this decodes only the
    tail of the generated tokens, every step (a device sync on CUDA), so it is only installed when stops are set.
    """

    def __init__(self, tokenizer, stops: list[list[str]], prompt_width: int):
        self.tokenizer, self.stops, self.prompt_width = tokenizer, stops, prompt_width
        self.window = max(stop_window(s) for s in stops)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        tail = input_ids[:, self.prompt_width :][:, -self.window :].tolist()  # (B, <= window)
        texts = self.tokenizer.batch_decode(tail, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        found = [bool(stop) and first_stop(t, stop) is not None for t, stop in zip(texts, self.stops, strict=True)]
        return torch.tensor(found, dtype=torch.bool, device=input_ids.device)  # (B,)


def _completions(lm: LoadedLM, batch: list[Encoded], new: torch.Tensor, cfg: GenerateConfig):
    """Decode the new tokens (B*copies, new) row by row: cut at EOS and the row's own limit, then at a stop."""
    eos, per_prompt = eos_ids(lm), cfg.decoded_sequences
    copies = cfg.num_return_sequences // per_prompt  # greedy: the one decoded sequence stands for all
    out: list[Completion] = []
    generated = 0
    for r, ids in enumerate(new.tolist()):
        enc = batch[r // per_prompt]
        text, tokens, reason = finish(lm.tokenizer, ids, eos, enc.max_new_tokens, enc.stop)
        generated += min(len(ids), enc.max_new_tokens)
        out.extend(Completion(enc.item.index, r % per_prompt + k, text, tokens, reason) for k in range(copies))
    return out, generated


def _halve(batch_size: int, current: int, device: Device) -> int:
    """After an OOM on a batch of ``current`` prompts: free the cache and return half; none left → GenerationOOM."""
    if device.is_cuda:
        torch.cuda.empty_cache()
    if current <= 1:
        raise GenerationOOM(f"out of memory generating a single prompt on {device.name}")
    new_size = max(1, min(batch_size, current) // 2)
    logger.warning("out of memory with a batch of %d prompts; retrying with %d", current, new_size)
    return new_size
