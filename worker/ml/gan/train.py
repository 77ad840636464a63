"""``image.train_gan``: train a DCGAN (or the MLP GAN) on an in-memory image tensor, resumably.

Per step, as in pytorch/examples ``dcgan`` but cheaper: one generator forward whose output serves both updates
(detached for the discriminator step, attached for the generator step), ``BCEWithLogitsLoss`` on logits (stable,
no Sigmoid), the non-saturating generator loss, the discriminator's weights frozen during the generator's backward
(their gradients would be thrown away), batches gathered from the device-resident tensor by a seeded permutation,
and no host sync per step: the four metrics are summed on the device and read back every ``log_every`` steps (and at
samples) as window means. On a CPU the loop keeps its freed tensors in the heap (``worker.ml.host_memory``): no
page faults per step. On CUDA: bf16 autocast, channels_last, cuDNN autotune; fused Adam everywhere.

Checkpoints hold both networks, both optimizers, RNG, step, data position, the fixed sample noise and the config,
so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from shared.defaults import GAN_TRAIN
from worker.ml.checkpoints import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from worker.ml.common import Device, Report, Stopped
from worker.ml.gan.fid import FrechetScorer
from worker.ml.gan.images import make_grid_png
from worker.ml.gan.models import ARCHITECTURES, IMAGE_SIZES, GeneratorSpec, build_gan, save_generator
from worker.ml.host_memory import retained_heap
from worker.ml.lm.data import BatchOrder

logger = logging.getLogger(__name__)

__all__ = ["GanTrainConfig", "GanTrainResult", "GanTrainer", "train_gan"]

# Fields that may differ between the run that wrote a checkpoint and the run resuming it.
_RESUME_FREE = {"sample_every", "fid_every", "fid_samples", "checkpoint_every", "keep_checkpoints", "log_every"}
# Fields that change the networks' shapes: a checkpoint written with others cannot be loaded.
_SHAPE_FIELDS = {"architecture", "image_size", "channels", "latent_dim", "features"}


def _f(default, text: str):
    """A dataclass field documented by ``metadata["help"]``."""
    return field(default=default, metadata={"help": text})


@dataclass
class GanTrainConfig:
    """Parameters of an ``image.train_gan`` job; ``metadata["help"]`` documents each field."""

    architecture: str = _f(GAN_TRAIN.architecture, f"network family, one of {ARCHITECTURES}")
    image_size: int = _f(GAN_TRAIN.image_size, f"square image side, one of {IMAGE_SIZES}")
    channels: int = _f(GAN_TRAIN.channels, "1 (grayscale) or 3 (RGB)")
    latent_dim: int = _f(GAN_TRAIN.latent_dim, "length of the generator's noise vector z")
    features: int = _f(64, "DCGAN base width (ngf = ndf); ignored by the MLP GAN")
    batch_size: int = _f(GAN_TRAIN.batch_size, "real (and fake) images per step")
    learning_rate: float = _f(GAN_TRAIN.learning_rate, "Adam learning rate of both networks")
    beta1: float = _f(GAN_TRAIN.beta1, "Adam beta1 (0.5 as in the DCGAN paper)")
    beta2: float = _f(GAN_TRAIN.beta2, "Adam beta2")
    max_steps: int | None = _f(None, "training steps (give this or epochs; neither means 1 epoch)")
    epochs: float | None = _f(None, "passes over the images, converted to steps")
    sample_every: int = _f(
        GAN_TRAIN.sample_every, "emit a PNG grid of the fixed noise every this many steps (and at the end)"
    )
    fid_every: int = _f(
        2, "compute the Fréchet distance `fd` every this many samples (and at step 0 and the end); 0 disables it"
    )
    fid_samples: int = _f(500, "generated images per Fréchet distance")
    checkpoint_every: int = _f(GAN_TRAIN.checkpoint_every, "save a checkpoint every this many steps (and at the end)")
    keep_checkpoints: int = _f(3, "checkpoints kept; older ones are pruned")
    seed: int = _f(GAN_TRAIN.seed, "seeds initialisation, batch order, noise and the fixed sample noise")
    sample_grid: int = _f(64, "images in each sample grid (8 per row)")
    log_every: int | None = _f(
        None,
        "read the losses back and report them every this many steps (default: 10 on CUDA, where "
        "that is a host sync; every step on a CPU, where it costs nothing)",
    )

    def __post_init__(self) -> None:
        GeneratorSpec(self.architecture, self.image_size, self.channels, self.latent_dim, self.features)
        positive = ("batch_size", "sample_every", "fid_samples", "checkpoint_every", "keep_checkpoints", "sample_grid")
        bad = [name for name in positive if getattr(self, name) < 1]
        if self.log_every is not None and self.log_every < 1:
            bad.append("log_every")
        if bad or self.fid_every < 0:
            raise ValueError(f"must be at least 1: {', '.join(bad) or 'fid_every (or 0)'}")
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("give max_steps or epochs, not both")
        if (self.max_steps is not None and self.max_steps < 1) or (self.epochs is not None and self.epochs <= 0):
            raise ValueError("max_steps / epochs must be positive")
        if self.learning_rate <= 0 or not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("need learning_rate > 0 and 0 <= beta1, beta2 < 1")

    def total_steps(self, n_images: int) -> int:
        """Training steps of the run: ``max_steps``, or ``epochs`` (default 1) worth of batches."""
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil((self.epochs or 1.0) * n_images / self.batch_size))

    def spec(self) -> GeneratorSpec:
        return GeneratorSpec(self.architecture, self.image_size, self.channels, self.latent_dim, self.features)


@dataclass
class GanTrainResult:
    """What a finished run produced: ``generator_dir`` loads with :func:`worker.ml.gan.models.load_generator`."""

    generator_dir: Path
    steps: int
    resumed_from_step: int | None
    metrics: dict[str, float]  # d_loss, g_loss, d_real, d_fake and, unless disabled, fd


def train_gan(
    cfg: GanTrainConfig,
    images: torch.Tensor,
    work_dir: Path,
    device: Device,
    report: Report,
    on_sample: Callable[[int, bytes], None],
    log: Callable[[str], None] = logger.info,
) -> GanTrainResult:
    """Train on ``images`` ``(N, C, H, W)`` in [-1, 1]; resume from ``work_dir/checkpoints`` if one is there.

    ``report`` gets every step (``d_loss``, ``g_loss``, ``d_real``, ``d_fake``, ``images_per_s``; plus ``fd`` on
    Fréchet-distance steps, step 0 of a fresh run included); if it raises :class:`Stopped`, a checkpoint of that
    step is saved and the exception re-raised. ``on_sample(step, png)`` gets each sample grid. Writes
    ``work_dir/checkpoints/step-*`` and, at the end, ``work_dir/generator``.
    """
    want = (cfg.channels, cfg.image_size, cfg.image_size)
    if images.dim() != 4 or tuple(images.shape[1:]) != want or len(images) == 0:
        raise ValueError(f"images must be (N, {want[0]}, {want[1]}, {want[2]}), not {tuple(images.shape)}")
    work_dir = Path(work_dir)
    run = GanTrainer(cfg, images, device, work_dir / "checkpoints", log)
    found = latest_checkpoint(run.ckpt_root)
    if found is not None:
        run.restore(found)
    log(
        f"training a {cfg.architecture} GAN on {len(images)} images of {want}, steps {run.step}→{run.total} "
        f"on {device.name}"
    )
    metrics = run.run(report, on_sample)
    out = save_generator(run.gen, cfg.spec(), work_dir / "generator")
    log(f"done: {metrics}; generator saved to {out}")
    return GanTrainResult(out, run.step, run.resumed_from, metrics)


class GanTrainer:
    """One training run's state (networks, optimizers, data order, step, fixed noise, scorer) and its loop.

    :func:`train_gan` is the entry point; the class is public so benchmarks time exactly this loop.
    """

    def __init__(self, cfg: GanTrainConfig, images: torch.Tensor, device: Device, ckpt_root: Path, log) -> None:
        self.cfg, self.device, self.ckpt_root, self.log = cfg, device, ckpt_root, log
        dev = self.dev = device.torch_device
        torch.manual_seed(cfg.seed)
        gen, disc = build_gan(cfg.architecture, cfg.image_size, cfg.channels, cfg.latent_dim, cfg.features)
        d_fmt, g_fmt = self._memory_formats()
        if device.is_cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick the fastest kernels
        self.gen = gen.to(dev, memory_format=g_fmt).train()
        self.disc = disc.to(dev, memory_format=d_fmt).train()
        self.images = images.to(dev, memory_format=d_fmt)  # (N, C, H, W), device-resident
        self.batch = min(cfg.batch_size, len(images))
        self.order = BatchOrder(len(images), self.batch, cfg.seed, dev)
        self.opt_g, self.opt_d = (self._adam(net) for net in (gen, disc))
        self.bce = nn.BCEWithLogitsLoss()
        self.ones, self.zeros = torch.ones(self.batch, device=dev), torch.zeros(self.batch, device=dev)
        noise_gen = torch.Generator().manual_seed(cfg.seed)
        self.fixed_noise = torch.randn(cfg.sample_grid, cfg.latent_dim, generator=noise_gen)  # (G, nz), every grid
        self.total = cfg.total_steps(len(images))
        self.step, self.saved_step = 0, -1
        self.resumed_from: int | None = None
        self.metrics: dict[str, float] = {}
        self._scorer: FrechetScorer | None = None
        self._sums, self._window = torch.zeros(4, device=dev), (0, time.perf_counter())  # metric sums since a flush
        self.log_every = cfg.log_every or (10 if device.is_cuda else 1)

    def _memory_formats(self) -> tuple[torch.memory_format, torch.memory_format]:
        """(discriminator, generator) formats: channels_last (NHWC) where it measured faster.

        CUDA/bf16: both (tensor-core convolutions want NHWC). fp32 CPU (oneDNN): the discriminator's strided convs
        gained ~17% in NHWC while the generator's transposed convs lost, so only the discriminator.
        """
        if self.cfg.architecture != "dcgan":
            return torch.preserve_format, torch.preserve_format
        fast_g = self.device.is_cuda or self.device.autocast_dtype is not None
        return torch.channels_last, torch.channels_last if fast_g else torch.preserve_format

    def _adam(self, net: nn.Module) -> torch.optim.Adam:
        fused = self.dev.type in ("cuda", "cpu")
        return torch.optim.Adam(
            net.parameters(), lr=self.cfg.learning_rate, betas=(self.cfg.beta1, self.cfg.beta2), fused=fused
        )

    def _autocast(self):
        dtype = self.device.autocast_dtype
        return nullcontext() if dtype is None else torch.autocast(self.dev.type, dtype=dtype)

    def train_step(self) -> torch.Tensor:
        """One D update and one G update; ``[d_loss, g_loss, d_real, d_fake]`` still on the device."""
        real = self.images[self.order.next()]  # (B, C, H, W)
        z = torch.randn(self.batch, self.cfg.latent_dim, device=self.dev)  # (B, nz)
        with self._autocast():
            fake = self.gen(z)  # (B, C, H, W), computed once for both updates
            logit_real, logit_fake = self.disc(real), self.disc(fake.detach())  # (B,), (B,)
            d_loss = self.bce(logit_real, self.ones) + self.bce(logit_fake, self.zeros)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        self.disc.requires_grad_(False)  # G's backward needs d(logit)/d(image), not D's weight gradients
        with self._autocast():
            g_loss = self.bce(self.disc(fake), self.ones)  # non-saturating: G maximises log D(G(z))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.disc.requires_grad_(True)
        probs = torch.stack([logit_real.detach().float(), logit_fake.detach().float()]).sigmoid().mean(1)  # (2,)
        return torch.cat([torch.stack([d_loss.detach(), g_loss.detach()]).float(), probs])  # (4,)

    @torch.no_grad()
    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        """Generator outputs for ``noise`` in eval mode (BatchNorm running statistics), float32 on the device."""
        self.gen.eval()
        out = [self.gen(chunk.to(self.dev)).float() for chunk in noise.split(500)]
        self.gen.train()
        return torch.cat(out)  # (N, C, H, W)

    def frechet(self) -> float:
        """``fd`` of ``fid_samples`` images from a fixed noise set (built with the scorer on first use)."""
        if self._scorer is None:
            self._scorer = FrechetScorer(self.images, self.dev, seed=self.cfg.seed)
            gen = torch.Generator().manual_seed(self.cfg.seed + 1)
            self._fd_noise = torch.randn(self.cfg.fid_samples, self.cfg.latent_dim, generator=gen)  # (M, nz)
        return self._scorer.score(self.generate(self._fd_noise))

    def run(self, report: Report, on_sample: Callable[[int, bytes], None]) -> dict[str, float]:
        """Steps to ``total`` (reporting each), the end checkpoint; the final metrics."""
        try:
            if self.step == 0 and self.cfg.fid_every:
                self.metrics["fd"] = self.frechet()  # the untrained baseline the curve starts from
                report(0, self.total, fd=self.metrics["fd"])
            self._window = (self.step, time.perf_counter())
            with retained_heap(enabled=not self.device.is_cuda):  # no page faults per CPU step (host_memory)
                while self.step < self.total:
                    self._one_step(report, on_sample)
        except Stopped as stop:
            self.log(f"stopped ({stop.reason}) at step {self.step}: saving a checkpoint")
            self.save()
            raise
        self.save()
        return dict(self.metrics)

    def _one_step(self, report: Report, on_sample: Callable[[int, bytes], None]) -> None:
        self._sums += self.train_step()  # (4,) summed on the device: no host sync
        self.step += 1
        last = self.step == self.total
        sample = self.step % self.cfg.sample_every == 0 or last
        if not (sample or self.step % self.log_every == 0):
            report(self.step, self.total)  # progress only (and where cancellation is noticed)
        else:
            metrics = self._flush()
            if sample:
                on_sample(self.step, make_grid_png(self.generate(self.fixed_noise), nrow=8))
                n_sample = self.step // self.cfg.sample_every
                if self.cfg.fid_every and (last or n_sample % self.cfg.fid_every == 0):
                    metrics["fd"] = self.metrics["fd"] = self.frechet()
                self.log(f"step {self.step}/{self.total}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            report(self.step, self.total, **metrics)
            self._window = (self.step, time.perf_counter())  # sampling and scoring stay out of images_per_s
        if self.step % self.cfg.checkpoint_every == 0 and not last:
            self.save()

    def _flush(self) -> dict[str, float]:
        """The window's mean d_loss, g_loss, d_real, d_fake and its images/s: the window's one host sync."""
        first, since = self._window
        steps = max(1, self.step - first)
        d_loss, g_loss, d_real, d_fake = (self._sums / steps).tolist()
        self._sums.zero_()
        self.metrics.update(d_loss=d_loss, g_loss=g_loss, d_real=d_real, d_fake=d_fake)
        metrics = {**self.metrics, "images_per_s": self.batch * steps / max(1e-9, time.perf_counter() - since)}
        metrics.pop("fd", None)
        return metrics

    def save(self) -> None:
        """Checkpoint the current step (once)."""
        if self.saved_step == self.step:
            return
        state = {
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict(),
            "rng": rng_state(),
            "data": self.order.state_dict(),
            "fixed_noise": self.fixed_noise,
            "cfg": asdict(self.cfg),
            "metrics": dict(self.metrics),
        }
        modules = {"generator": self.gen, "discriminator": self.disc}
        save_checkpoint(self.ckpt_root, self.step, modules, state, keep=self.cfg.keep_checkpoints)
        self.saved_step = self.step

    def restore(self, path: Path) -> None:
        """Continue from the checkpoint at ``path``: weights, optimizers, RNG, data position, noise, step."""
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        changed = {k for k, v in state["cfg"].items() if getattr(self.cfg, k, v) != v} - _RESUME_FREE
        if changed & _SHAPE_FIELDS:
            raise ValueError(f"{path} was written for a different network ({sorted(changed & _SHAPE_FIELDS)})")
        modules = {"generator": self.gen, "discriminator": self.disc}
        state = load_checkpoint(path, modules, device="cpu")  # CPU first: RNG states must stay CPU tensors
        if changed:
            self.log(f"warning: resuming a checkpoint written with different {sorted(changed)}")
        self.opt_g.load_state_dict(state["optimizer_g"])  # moves optimizer state to the parameters' device
        self.opt_d.load_state_dict(state["optimizer_d"])
        self.order.load_state_dict(state["data"])
        set_rng_state(state["rng"])
        self.fixed_noise = state["fixed_noise"].cpu()
        self.step = self.saved_step = self.resumed_from = int(state["step"])
        self.metrics = {k: float(v) for k, v in state["metrics"].items()}
        self.log(f"resumed from {path.name} (step {self.step})")
