"""Images/s of genqueue's DCGAN training loop against a straightforward reimplementation of the reference loop.

    python -m benchmarks.train_gan [--steps 200] [--batch-size 64] [--device cpu|cuda] [--threads N]

Both loops train the same DCGAN (28×28, latent 100, genqueue's Generator/Discriminator) on the same data (the
built-in digits at 28×28) with the same optimiser settings, for the same number of steps, in this process; they
alternate in rounds so a noisy neighbour on a shared machine hurts both alike.

The baseline is the reference article's loop written plainly, as most tutorials do: a torch ``DataLoader`` over a
``Dataset`` that turns each uint8 image into a PIL image, then a tensor, then normalises it (torchvision's
``ToTensor`` + ``Normalize((0.5,), (0.5,))`` redone with numpy/PIL); a Sigmoid discriminator with ``BCELoss``;
separate forwards for D(real) and D(G(z).detach()); G(z) recomputed for the generator step; fp32 throughout; the
losses read back with ``.item()`` for logging.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from worker.ml.common import Device, pick_device
from worker.ml.gan.data import load_images
from worker.ml.gan.models import build_gan
from worker.ml.gan.train import GanTrainConfig, GanTrainer
from worker.ml.host_memory import retained_heap

LATENT, SIZE = 100, 28


class ReferenceDigits(Dataset):
    """uint8 images ``(N, H, W)`` served one at a time through PIL, like torchvision's MNIST dataset."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = Image.fromarray(self.pixels[i], mode="L")
        x = np.asarray(img, dtype=np.float32)[None] / 255.0  # ToTensor: (1, H, W) in [0, 1]
        return torch.from_numpy((x - 0.5) / 0.5)  # Normalize((0.5,), (0.5,))


class ReferenceLoop:
    """The reference training loop, one step at a time over an endless DataLoader."""

    def __init__(self, pixels: np.ndarray, batch_size: int, device: torch.device, size: int = SIZE):
        self.device = device
        self.gen, disc = build_gan("dcgan", size, 1, LATENT)
        self.gen.to(device)
        self.disc = nn.Sequential(disc, nn.Sigmoid()).to(device)  # probabilities, as the reference
        self.criterion = nn.BCELoss()
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.loader = DataLoader(ReferenceDigits(pixels), batch_size=batch_size, shuffle=True)
        self.batches = iter(self.loader)

    def _next(self) -> torch.Tensor:
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def step(self) -> int:
        """One D and one G update; the number of real images used."""
        real = self._next().to(self.device)  # (B, 1, H, W)
        b = real.size(0)
        ones, zeros = torch.ones(b, device=self.device), torch.zeros(b, device=self.device)
        self.opt_d.zero_grad()
        err_real = self.criterion(self.disc(real), ones)
        fake = self.gen(torch.randn(b, LATENT, device=self.device))
        err_fake = self.criterion(self.disc(fake.detach()), zeros)
        (err_real + err_fake).backward()
        self.opt_d.step()
        self.opt_g.zero_grad()
        fake = self.gen(torch.randn(b, LATENT, device=self.device))  # recomputed for the G step
        err_g = self.criterion(self.disc(fake), ones)
        err_g.backward()
        self.opt_g.step()
        _ = (err_real + err_fake).item(), err_g.item()  # logged each step
        return b


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, n: int, device: torch.device) -> tuple[int, float, float]:
    """Run ``step`` ``n`` times; (images, wall seconds, this process's CPU seconds)."""
    _sync(device)
    start, cpu_start, images = time.perf_counter(), time.process_time(), 0
    for _ in range(n):
        images += step()
    _sync(device)
    return images, time.perf_counter() - start, time.process_time() - cpu_start


def _device(name: str, precision: str) -> Device:
    """genqueue's device choice for GAN jobs (``auto``: bf16 on CUDA, and on CPUs with native bf16 — see
    worker.devices.gan_device), or the same device with the precision forced."""
    device = pick_device(name)
    if precision == "auto":
        from worker.devices import cpu_has_native_bf16

        if not device.is_cuda and cpu_has_native_bf16() and os.environ.get("GENQUEUE_GAN_CPU_BF16", "1") != "0":
            return Device(device.torch_device, torch.bfloat16)
        return device
    return Device(device.torch_device, torch.bfloat16 if precision == "bf16" else None)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per loop (after warm-up)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--image-size", type=int, default=SIZE, choices=(28, 32, 64), help="square image side")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per loop first")
    parser.add_argument("--rounds", type=int, default=4, help="alternate the loops this many times")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="genqueue loop's autocast: auto = what GAN jobs use (bf16 on CUDA and on CPUs with native bf16); "
        "the reference loop is always fp32",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device, args.precision)
    dev = device.torch_device
    images = load_images("digits", args.image_size, 1)  # (N, 1, S, S) in [-1, 1]
    pixels = ((images[:, 0] + 1.0) * 127.5).round().to(torch.uint8).numpy()  # (N, 28, 28): the same data
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GanTrainConfig(batch_size=args.batch_size, max_steps=10**9, seed=0, image_size=args.image_size)
        ours = GanTrainer(cfg, images, device, Path(tmp), log=lambda msg: None)

        def ours_step() -> int:
            ours.train_step().tolist()  # the one host sync per step that report() needs
            return ours.batch

        torch.manual_seed(0)
        ref = ReferenceLoop(pixels, args.batch_size, dev, args.image_size)
        return _compare(ours_step, ref.step, args, device)


def _compare(ours_step, ref_step, args, device) -> dict[str, float]:
    dev = device.torch_device
    with retained_heap(enabled=dev.type == "cpu"):
        _timed(ours_step, args.warmup, dev)
    _timed(ref_step, args.warmup, dev)
    totals = {"genqueue": np.zeros(3), "reference": np.zeros(3)}  # images, wall s, CPU s
    per_round = max(1, args.steps // args.rounds)
    for _ in range(args.rounds):
        for name, step in (("reference", ref_step), ("genqueue", ours_step)):
            with retained_heap(enabled=name == "genqueue" and dev.type == "cpu"):  # as GanTrainer.run does
                totals[name] += _timed(step, per_round, dev)
    wall = {name: t[0] / t[1] for name, t in totals.items()}
    cpu = {name: t[0] / t[2] for name, t in totals.items()}
    print(
        f"device: {device.name}, genqueue autocast {device.autocast_dtype} (reference fp32), "
        f"threads {torch.get_num_threads()}, batch {args.batch_size}, {per_round * args.rounds} timed steps each"
    )
    print(
        f"reference loop (DataLoader + per-item transforms, Sigmoid+BCELoss, G recomputed): "
        f"{wall['reference']:8.1f} images/s   ({cpu['reference']:.1f} per CPU-second)"
    )
    print(
        f"genqueue loop  (in-memory batches, BCEWithLogits, G reused, D frozen in G step): "
        f"{wall['genqueue']:8.1f} images/s   ({cpu['genqueue']:.1f} per CPU-second)"
    )
    ratio = wall["genqueue"] / wall["reference"]
    print(f"ratio genqueue/reference per CPU-second: {cpu['genqueue'] / cpu['reference']:.2f}")
    print(f"ratio genqueue/reference: {ratio:.2f}")  # wall-clock: the headline figure
    return {"genqueue": wall["genqueue"], "reference": wall["reference"], "ratio": ratio}


if __name__ == "__main__":
    main()
