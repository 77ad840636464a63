"""Bulk generation throughput: genqueue's batched ``generate()`` against the naive one-prompt-at-a-time loop.

Run from the repository root: ``python -m benchmarks.generation`` (defaults: 64 prompts x 32 new tokens, GPT-2
124M shape with random weights, auto device). The model is built here with random weights and a BPE tokenizer
trained on the stdlib docstrings, saved with ``save_pretrained`` and loaded through ``load_causal_lm``: nothing is
downloaded. Both sides sample (top-k 50, temperature 1) and are forced to produce exactly ``--new-tokens`` tokens
per prompt with ``min_new_tokens = max_new_tokens`` (EOS is masked until then), so tokens/s compare like for like.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from shared.corpus import stdlib_documents
from worker.ml.common import pick_device
from worker.ml.generate import GenerateConfig, PromptItem, auto_batch_size, generate
from worker.ml.lm_loading import LoadedLM, load_causal_lm
from worker.ml.tokenizer import train_bpe_tokenizer

logger = logging.getLogger(__name__)

SIZES = {
    "gpt2-124m": {},  # GPT2Config() defaults: 12 layers, 12 heads, 768 wide, vocab 50257, context 1024
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 256},
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


def build_prompts(lm: LoadedLM, count: int, min_tokens: int = 4, max_tokens: int = 120) -> list[str]:
    """``count`` prompts of mixed lengths (``min_tokens``..``max_tokens``), cut from the stdlib docstrings."""
    stream = lm.tokenizer(" ".join(d.replace("\n", " ") for d in stdlib_documents()))["input_ids"]
    span = max_tokens - min_tokens + 1
    prompts, offset = [], 0
    for i in range(count):
        length = min_tokens + (i * 37) % span  # a deterministic spread over the whole range
        prompts.append(lm.tokenizer.decode(stream[offset : offset + length]))
        offset = (offset + length) % max(1, len(stream) - max_tokens)
    return prompts


def run_naive(lm: LoadedLM, prompts: list[str], new_tokens: int) -> tuple[float, float, int]:
    """The GPT-2 snippet, one prompt at a time: encode, batch-1 ``model.generate``, decode. (wall s, CPU s, tokens)"""
    model, tokenizer = lm.model, lm.tokenizer
    tokens = 0
    start, cpu = time.perf_counter(), time.process_time()
    for prompt in prompts:
        input_ids = tokenizer.encode(prompt, return_tensors="pt").to(lm.device.torch_device)
        output = model.generate(
            input_ids,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=True,
            top_k=50,
            pad_token_id=tokenizer.eos_token_id,
        )
        tokenizer.decode(output[0][input_ids.shape[1] :], skip_special_tokens=True)
        tokens += output.shape[1] - input_ids.shape[1]
    return time.perf_counter() - start, time.process_time() - cpu, tokens


def run_batched(lm: LoadedLM, prompts: list[str], new_tokens: int, batch_size: int) -> tuple[float, float, int]:
    """genqueue's ``generate()`` on the same prompts. (wall s, CPU s, tokens)"""
    items = [PromptItem(i, p) for i, p in enumerate(prompts)]
    cfg = GenerateConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, top_k=50, batch_size=batch_size)
    start, cpu = time.perf_counter(), time.process_time()
    completions = generate(lm, items, cfg)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    tokens = sum(c.tokens for c in completions)
    if tokens != len(prompts) * new_tokens:
        raise RuntimeError(f"batched run produced {tokens} tokens, expected {len(prompts) * new_tokens}")
    return seconds, cpu_seconds, tokens


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--size", choices=sorted(SIZES), default="gpt2-124m")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch-size", type=int, default=0, help="0 = genqueue's automatic batch size")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument(
        "--naive-prompts",
        type=int,
        default=None,
        help="time the naive loop on this many of the prompts and extrapolate its per-token rate "
        "(default: all on CPU, 64 on CUDA)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
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
    prompts = build_prompts(lm, args.prompts)
    naive_count = args.naive_prompts or (min(args.prompts, 64) if device.is_cuda else args.prompts)
    naive_prompts = prompts[:naive_count]
    lengths = sorted(len(ids) for ids in lm.tokenizer(prompts)["input_ids"])
    print(
        f"model {args.size} ({sum(p.numel() for p in lm.model.parameters()) / 1e6:.0f}M params, random weights) "
        f"on {device.name} {lm.model.dtype}, torch threads {torch.get_num_threads()}"
    )
    print(
        f"{len(prompts)} prompts of {lengths[0]}..{lengths[-1]} tokens (median {lengths[len(lengths) // 2]}), "
        f"{args.new_tokens} new tokens each, forced with min_new_tokens={args.new_tokens} (EOS masked until then)"
    )
    print(f"load average before: {_load()}")
    run_naive(lm, prompts[:1], 2)  # warm-up, both paths
    run_batched(lm, prompts[:2], 2, 2)
    naive_s, naive_cpu, naive_tokens = run_naive(lm, naive_prompts, args.new_tokens)
    scope = (
        "all prompts"
        if naive_count == len(prompts)
        else (f"timed on {naive_count} of {len(prompts)} prompts, per-token rate extrapolated")
    )
    print(
        f"naive   (batch-1 model.generate loop): {naive_tokens / naive_s:9.1f} tokens/s  "
        f"({naive_tokens} tokens in {naive_s:.2f} s wall, {naive_cpu:.2f} s CPU; {scope})"
    )
    batched_s, batched_cpu, batched_tokens = run_batched(lm, prompts, args.new_tokens, args.batch_size)
    batch = args.batch_size or f"auto={auto_batch_size(device)}"
    print(
        f"batched (genqueue generate, batch {batch}): {batched_tokens / batched_s:9.1f} tokens/s  "
        f"({batched_tokens} tokens in {batched_s:.2f} s wall, {batched_cpu:.2f} s CPU)"
    )
    ratio = (batched_tokens / batched_s) / (naive_tokens / naive_s)
    cpu_ratio = (batched_tokens / batched_cpu) / (naive_tokens / naive_cpu) if not device.is_cuda else None
    print(
        f"ratio batched/naive: {ratio:.2f}x (tokens/s, wall clock)"
        + (f"; {cpu_ratio:.2f}x per CPU-second" if cpu_ratio else "")
    )
    print(f"load average after: {_load()} (other processes on the machine skew wall-clock numbers)")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
