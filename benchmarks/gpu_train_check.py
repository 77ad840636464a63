"""The training section of the GPU check (``benchmarks/gpu_check.sh`` may call this): issue 18's GPU figures.

    python -m benchmarks.gpu_train_check [--quick]

1. GPT-2 124M shape, bf16, sequence 1024: genqueue's ``train_lm`` vs the Hugging Face ``Trainer`` with its best
   flags (bf16, fused AdamW, SDPA, ``torch_compile``), both compiled; prints tokens/s, MFU against the datasheet peak
   of the GPU (``worker.ml.mfu``) and ``ratio genqueue/hf``. Bars: ratio >= 1.5, MFU >= 35 % (goal 50 %).
2. DCGAN 64x64 images/s vs the reference loop, bf16 (the GAN jobs' CUDA precision) — bar >= 3x — and fp32.

Each part runs in this process, one after the other, and prints its own ``ratio`` lines; ``--quick`` shortens both
(for a smoke run). Needs CUDA: without it, it says so and exits 2.
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchmarks import train_gan, train_lm


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps (a smoke run, not the figures)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("GPU not measured: no device")
        return 2
    steps, gan_steps = ("12", "60") if args.quick else ("40", "400")
    print(f"== train: GPT-2 124M, bf16, seq 1024 on {torch.cuda.get_device_name()}", flush=True)
    train_lm.main(
        [
            "--size",
            "gpt2-124m",
            "--block-size",
            "1024",
            "--batch-size",
            "8",
            "--steps",
            steps,
            "--warmup",
            "8" if not args.quick else "4",
            "--device",
            "cuda",
            "--compile",
            "--hf-compile",
        ]
    )
    for precision in ("bf16", "fp32"):
        print(f"== train: DCGAN 64x64, {precision}", flush=True)
        train_gan.main(["--device", "cuda", "--precision", precision, "--steps", gan_steps, "--image-size", "64"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
