"""Bulk generation throughput: the continuous engine against the static-batch engine and the naive per-prompt loop.

Run from the repository root: ``python -m benchmarks.generation --workload mixed`` (or ``uniform``). The model
(GPT-2 124M shape by default) is built here with random weights and a BPE tokenizer trained on the stdlib
docstrings, saved with ``save_pretrained`` and loaded through ``load_causal_lm``: nothing is downloaded.

- ``mixed``: 256 prompts of 4..64 tokens, each with its own ``max_new_tokens`` drawn (seed 0) from 8..128;
  continuous vs static. Every engine samples (top-k 50) and is forced to produce exactly each prompt's
  ``max_new_tokens`` (EOS masked with ``min_new_tokens``), so tokens/s compare like for like.
- ``uniform``: 64 prompts of 4..120 tokens, 32 new tokens each; continuous vs static, and batched (continuous)
  vs the naive batch-1 ``model.generate`` loop.
- ``--roof``: the fraction of the KV-bandwidth roof, ``bandwidth / (mean live context x KV bytes per token)``.
- ``--hf-cb``: also time transformers' own continuous batching (``init_continuous_batching`` manager, paged
  cache) on the same prompts (its tokens are not forced; counted as produced).

Each engine first runs a short warm-up. Ratios are of tokens/s, wall clock, measured in this run.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from shared.corpus import stdlib_documents
from worker.ml.common import pick_device
from worker.ml.lm.generate import GenerateConfig, PromptItem, generate, kv_bytes_per_token, rows_in_flight
from worker.ml.lm.loading import LoadedLM, load_causal_lm
from worker.ml.lm.tokenizer import train_bpe_tokenizer

logger = logging.getLogger(__name__)

SIZES = {
    "gpt2-124m": {},  # GPT2Config() defaults: 12 layers, 12 heads, 768 wide, vocab 50257, context 1024
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 256},
}
WORKLOADS = {  # prompts, prompt tokens (min, max), new tokens (min, max)
    "mixed": (256, (4, 64), (8, 128)),
    "uniform": (64, (4, 120), (32, 32)),
}


def build_model_dir(path: Path, size: str, seed: int = 0) -> Path:
    """Save a randomly initialised GPT-2 of ``size`` and a stdlib-trained BPE tokenizer at ``path``."""
    tokenizer = train_bpe_tokenizer(stdlib_documents(), vocab_size=8192)
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    config = GPT2Config(bos_token_id=eos, eos_token_id=eos, **SIZES[size])
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_items(lm: LoadedLM, count: int, prompt_range: tuple[int, int], new_range: tuple[int, int]):
    """``count`` prompts cut from the stdlib docstrings, lengths spread over ``prompt_range``; seeded limits."""
    stream = lm.tokenizer(" ".join(d.replace("\n", " ") for d in stdlib_documents()))["input_ids"]
    lo, hi = prompt_range
    limits = np.random.default_rng(0).integers(new_range[0], new_range[1] + 1, size=count)
    items, offset = [], 0
    for i in range(count):
        length = lo + (i * 37) % (hi - lo + 1)  # a deterministic spread over the whole range
        text = lm.tokenizer.decode(stream[offset : offset + length])
        items.append(PromptItem(i, text, max_new_tokens=int(limits[i])))
        offset = (offset + length) % max(1, len(stream) - hi)
    return items


def run_engine(lm: LoadedLM, items: list[PromptItem], engine: str, batch_size: int) -> tuple[float, int]:
    """genqueue's ``generate()`` with ``engine``, every prompt forced to its own limit. (wall s, tokens)"""
    longest = max(it.max_new_tokens for it in items)
    cfg = GenerateConfig(max_new_tokens=longest, min_new_tokens=longest, top_k=50, batch_size=batch_size)
    start = time.perf_counter()
    completions = generate(lm, items, cfg, engine=engine)
    seconds = time.perf_counter() - start
    tokens = sum(c.tokens for c in completions)
    expected = sum(it.max_new_tokens for it in items)
    if tokens != expected:
        raise RuntimeError(f"{engine} produced {tokens} tokens, expected {expected}")
    return seconds, tokens


def run_naive(lm: LoadedLM, items: list[PromptItem]) -> tuple[float, int]:
    """The GPT-2 snippet, one prompt at a time: encode, batch-1 ``model.generate``, decode. (wall s, tokens)"""
    model, tokenizer = lm.model, lm.tokenizer
    tokens = 0
    start = time.perf_counter()
    for it in items:
        input_ids = tokenizer.encode(it.prompt, return_tensors="pt").to(lm.device.torch_device)
        n = it.max_new_tokens
        with torch.inference_mode():
            output = model.generate(
                input_ids, max_new_tokens=n, min_new_tokens=n, do_sample=True, top_k=50, pad_token_id=0
            )
        tokenizer.decode(output[0][input_ids.shape[1] :], skip_special_tokens=True)
        tokens += output.shape[1] - input_ids.shape[1]
    return time.perf_counter() - start, tokens


def run_hf_cb(lm: LoadedLM, items: list[PromptItem], rows: int) -> tuple[float, int]:
    """transformers' continuous batching manager (paged cache), each request with its own limit. (wall s, tokens)"""
    from transformers import GenerationConfig

    ids = [lm.tokenizer(it.prompt)["input_ids"] or [lm.tokenizer.eos_token_id] for it in items]
    gen = GenerationConfig(do_sample=True, top_k=50, max_new_tokens=max(it.max_new_tokens for it in items))
    gen.eos_token_id = lm.tokenizer.eos_token_id
    gen.pad_token_id = lm.tokenizer.pad_token_id
    start = time.perf_counter()
    manager = lm.model.init_continuous_batching(generation_config=gen)
    manager.start()
    try:
        for i, (it, prompt) in enumerate(zip(items, ids, strict=True)):
            manager.add_request(prompt, request_id=f"r{i}", max_new_tokens=it.max_new_tokens)
        tokens = finished = 0
        while finished < len(items):
            result = manager.get_result(timeout=60)
            if result is None:
                raise RuntimeError("transformers' continuous batching returned nothing for 60 s")
            if result.is_finished():
                finished += 1
                tokens += len(result.generated_tokens)
    finally:
        manager.stop(block=True, timeout=30)
    return time.perf_counter() - start, tokens


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="mixed")
    parser.add_argument("--prompts", type=int, default=0, help="0 = the workload's count (mixed 256, uniform 64)")
    parser.add_argument("--size", choices=sorted(SIZES), default="gpt2-124m")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch-size", type=int, default=0, help="prompts in flight / per batch; 0 = automatic")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--naive-prompts", type=int, default=None, help="naive loop on this many prompts (rate)")
    parser.add_argument("--naive", choices=["auto", "yes", "no"], default="auto", help="auto: uniform workload only")
    parser.add_argument("--roof", action="store_true", help="print the fraction of the KV-bandwidth roof")
    parser.add_argument("--bandwidth", type=float, default=4.8e12, help="bytes/s for --roof (H200 HBM: 4.8e12)")
    parser.add_argument("--hf-cb", action="store_true", help="also time transformers' continuous batching")
    return parser.parse_args(argv)


def _line(name: str, seconds: float, tokens: int) -> float:
    rate = tokens / seconds
    print(f"{name:<34} {rate:9.1f} tokens/s  ({tokens} tokens in {seconds:.2f} s wall)", flush=True)
    return rate


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the workload; prints one line per engine and the ``ratio ...:`` lines; returns the rates."""
    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device("cpu" if args.device == "cpu" else None)
    if args.device == "cuda" and not device.is_cuda:
        raise SystemExit("--device cuda: no CUDA device available")
    with tempfile.TemporaryDirectory() as tmp:
        lm = load_causal_lm(str(build_model_dir(Path(tmp), args.size)), device)
    count, prompt_range, new_range = WORKLOADS[args.workload]
    items = build_items(lm, args.prompts or count, prompt_range, new_range)
    lengths = sorted(len(ids) for ids in lm.tokenizer([it.prompt for it in items])["input_ids"])
    limits = [it.max_new_tokens for it in items]
    width = max(lengths) + max(limits)
    print(
        f"model {args.size} ({sum(p.numel() for p in lm.model.parameters()) / 1e6:.0f}M params, random weights) "
        f"on {device.name} {lm.model.dtype}, torch threads {torch.get_num_threads()}, load {_load()}"
    )
    print(
        f"workload {args.workload}: {len(items)} prompts of {lengths[0]}..{lengths[-1]} tokens, "
        f"max_new_tokens {min(limits)}..{max(limits)} (mean {np.mean(limits):.1f}), forced; "
        f"rows in flight {args.batch_size or rows_in_flight(lm, GenerateConfig(), width)}"
    )
    warm = items[:4]
    for engine in ("continuous", "static"):
        run_engine(lm, [PromptItem(it.index, it.prompt, 2) for it in warm], engine, 2)
    rates = {}
    rates["static"] = _line("static (length-sorted batches)", *run_engine(lm, items, "static", args.batch_size))
    rates["continuous"] = _line("continuous (slots refill)", *run_engine(lm, items, "continuous", args.batch_size))
    if args.hf_cb:
        rates["hf_cb"] = _line("transformers continuous batching", *run_hf_cb(lm, items, args.batch_size))
    if args.naive == "yes" or (args.naive == "auto" and args.workload == "uniform"):
        naive = items[: args.naive_prompts] if args.naive_prompts else items
        run_naive(lm, warm[:1])
        rates["naive"] = _line(f"naive loop ({len(naive)} prompts)", *run_naive(lm, naive))
    if args.roof:
        _roof(lm, items, rates, args.bandwidth)
    print(f"load average after: {_load()} (other processes on the machine skew wall-clock numbers)")
    print(f"ratio continuous/static: {rates['continuous'] / rates['static']:.2f}")
    if "hf_cb" in rates:
        print(f"ratio continuous/hf_cb: {rates['continuous'] / rates['hf_cb']:.2f}")
    if "naive" in rates:
        print(f"ratio batched/naive: {rates['continuous'] / rates['naive']:.2f}")
    return rates


def mean_live_context(lm: LoadedLM, items: list[PromptItem]) -> float:
    """Mean context (prompt + tokens so far) a generated token attends over, over every token of the workload."""
    lengths = [max(1, len(ids)) for ids in lm.tokenizer([it.prompt for it in items])["input_ids"]]
    total = sum(n * p + n * (n - 1) / 2 for p, n in zip(lengths, (it.max_new_tokens for it in items), strict=True))
    return total / sum(it.max_new_tokens for it in items)


def _roof(lm: LoadedLM, items: list[PromptItem], rates: dict[str, float], bandwidth: float) -> None:
    """Tokens/s if every step only had to read each row's KV once at ``bandwidth``, and each engine's share of it."""
    context, per_token = mean_live_context(lm, items), kv_bytes_per_token(lm)
    roof = bandwidth / (context * per_token)
    print(
        f"kv roof: {bandwidth / 1e12:.1f} TB/s / ({context:.1f} tokens mean live context x {per_token / 1024:.0f} KiB"
        f"/token) = {roof:,.0f} tokens/s"
    )
    for name, rate in rates.items():
        print(f"fraction of kv roof {name}: {rate / roof:.3g}")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
