"""The ``training`` section of ``benchmarks/gpu_check.sh``: issue 18's GPU training figures, in one process.

    python -m benchmarks.gpu_train_check [--smoke]

1. GPT-2 124M shape, bf16, sequence 1024, batch 16: genqueue's ``train_lm`` vs the Hugging Face ``Trainer`` with its
   best flags (bf16, fused AdamW, SDPA, TF32, ``torch_compile``), both compiled (the compile warm-up is printed, and
   left out of the timed steps); tokens/s, MFU against the GPU's datasheet peak (``worker.ml.mfu``) and
   ``ratio genqueue/hf``. Bars: ratio >= 1.5, MFU >= 35 % (goal 50 %).
2. DCGAN 64x64 images/s vs the reference loop, in bf16 (the GAN jobs' CUDA precision; bar >= 3x) and in fp32.

``--smoke``: the same steps on the CPU with a tiny model and a few steps, to check the script on a machine without a
GPU (its figures mean nothing). Without ``--smoke`` and without CUDA it says "GPU not measured: no device" and exits 2.
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchmarks import train_gan, train_lm


def lm_args(smoke: bool) -> list[str]:
    if smoke:
        shape = ["--size", "tiny", "--block-size", "64", "--batch-size", "4", "--device", "cpu"]
        return [*shape, "--steps", "6", "--warmup", "2", "--precision", "fp32"]
    shape = ["--size", "gpt2-124m", "--block-size", "1024", "--batch-size", "16", "--device", "cuda"]
    return [*shape, "--steps", "40", "--warmup", "10", "--precision", "bf16", "--compile", "--hf-compile"]


def gan_args(smoke: bool, precision: str) -> list[str]:
    if smoke:  # 32x32: the CPU (emulated bf16 too) only has to show the script works
        return ["--device", "cpu", "--precision", precision, "--image-size", "32", "--batch-size", "8"] + [
            *("--steps", "2", "--warmup", "1", "--rounds", "1")
        ]
    return ["--device", "cuda", "--precision", precision, "--image-size", "64", "--steps", "400", "--rounds", "4"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: checks the script, not the figures")
    args = p.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("GPU not measured: no device")
        return 2
    where = "CPU (smoke)" if args.smoke else torch.cuda.get_device_name()
    shape = "tiny, fp32, seq 64" if args.smoke else "GPT-2 124M, bf16, seq 1024"
    print(f"== train: {shape} on {where}", flush=True)
    train_lm.main(lm_args(args.smoke))
    for precision in ("bf16", "fp32"):
        print(f"== train: DCGAN 64x64, {precision}", flush=True)
        train_gan.main(gan_args(args.smoke, precision))
    return 0


if __name__ == "__main__":
    sys.exit(main())
