"""Cross-job batching in the engine alone (no platform services): one-prompt "jobs" arriving at random times join
the running batch, against one job holding all the prompts. Runs with only torch, transformers and numpy (GPU hosts).

Each arrival is a :class:`~worker.ml.lm.gen_base.Stream` handed to the engine's ``join`` callback once its (seeded,
uniform) arrival time has passed; arrivals are spread over half the wall time the one big job took. Every prompt is
forced to ``--tokens`` new tokens. Prints tokens/s of both and ``ratio many-jobs/one-job tokens/s``.

    python -m benchmarks.engine_small_jobs [--size tiny|gpt2-124m] [--device cpu|cuda] [--jobs 1000] [--tokens 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.generation import SIZES, build_items, build_model_dir
from worker.ml.common import pick_device
from worker.ml.lm.continuous import generate_streams
from worker.ml.lm.gen_base import GenerateConfig, PromptItem, Stream
from worker.ml.lm.generate import generate
from worker.ml.lm.loading import load_causal_lm


def one_job(lm, items: list[PromptItem], cfg: GenerateConfig) -> tuple[float, int]:
    start = time.perf_counter()
    out = generate(lm, items, cfg)
    return time.perf_counter() - start, sum(c.tokens for c in out)


def arriving_jobs(lm, items: list[PromptItem], cfg: GenerateConfig, spread: float) -> tuple[float, int, int]:
    """Every item as its own one-prompt job, arriving at seeded random times within ``spread`` seconds."""
    arrivals = np.sort(np.random.default_rng(0).uniform(0, spread, size=len(items)))
    tokens, ended, outstanding = [0], [0], [0]

    def stream(item: PromptItem) -> Stream:
        def end(error: BaseException | None) -> None:
            if error is not None:
                raise error
            ended[0] += 1
            outstanding[0] -= 1

        def chunk(completions) -> None:
            tokens[0] += sum(c.tokens for c in completions)

        return Stream([PromptItem(0, item.prompt)], lambda *a, **k: None, chunk, end)

    nxt = [0]

    def join(free: int) -> list[Stream]:
        now = time.perf_counter() - start
        if outstanding[0] == 0 and nxt[0] < len(items) and arrivals[nxt[0]] > now:
            time.sleep(arrivals[nxt[0]] - now)  # nothing in flight: wait for the next arrival
            now = time.perf_counter() - start
        due = []
        while nxt[0] < len(items) and arrivals[nxt[0]] <= now and len(due) < max(free, 1):
            due.append(stream(items[nxt[0]]))
            nxt[0] += 1
        outstanding[0] += len(due)
        return due

    start = time.perf_counter()
    first = stream(items[0])
    nxt[0], outstanding[0] = 1, 1
    generate_streams(lm, [first], cfg, join)
    while nxt[0] < len(items):  # the engine ended between arrivals: the next job starts a new batch
        batch = join(1)
        generate_streams(lm, batch, cfg, join)
    return time.perf_counter() - start, tokens[0], ended[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=16)
    args = ap.parse_args()
    lm = load_causal_lm(
        str(build_model_dir(Path(tempfile.mkdtemp(prefix="gq-esj-")), args.size)), pick_device(args.device)
    )
    items = [PromptItem(i, it.prompt) for i, it in enumerate(build_items(lm, args.jobs, (4, 48), (1, 1)))]
    cfg = GenerateConfig(max_new_tokens=args.tokens, min_new_tokens=args.tokens, top_k=50)
    generate(lm, items[:8], cfg)  # warm-up (kernels, allocator)
    wall_one, tok_one = one_job(lm, items, cfg)
    wall_many, tok_many, ended = arriving_jobs(lm, items, cfg, spread=wall_one / 2)
    assert tok_one == tok_many == args.jobs * args.tokens and ended == args.jobs, (tok_one, tok_many, ended)
    print(f"{args.jobs} prompts x {args.tokens} new tokens, {args.size} on {lm.device.name}")
    print(f"one job              : {tok_one / wall_one:9.1f} tokens/s ({wall_one:.2f} s)")
    print(
        f"{args.jobs} arriving jobs : {tok_many / wall_many:9.1f} tokens/s ({wall_many:.2f} s, "
        f"arrivals over {wall_one / 2:.2f} s)"
    )
    print(f"ratio many-jobs/one-job tokens/s: {(tok_many / wall_many) / (tok_one / wall_one):.2f}")


if __name__ == "__main__":
    main()
