"""``text.train``: fine-tune a GPT-2 (or any local causal LM) or train one from scratch, resumably.

The loop is deliberately plain, and each choice below was measured (README "Performance"): pre-tokenized blocks
(documents packed end to end with EOS, no padding) live on the device, so a batch is one gather and no data loading
sits on the critical path; bf16 autocast on CUDA and on CPUs with native bf16 (``precision``), fp32 master weights;
AdamW fused; SDPA attention (flash on CUDA, TF32 matmuls allowed there); GPT-2's seven-op Python GELU swapped for
the fused kernel (same function); no host sync per step: the loss is summed on the device and read back only every
``log_every`` steps and at evaluations, with ``tokens_per_s`` and ``mfu`` measured over that window; the LM head
and cross-entropy as one autograd node (``worker.ml.lm.loss``); on a CPU, freed tensors kept in the heap during the
loop, so a step does not page-fault its activations in again (``worker.ml.host_memory``).
``torch.compile`` is opt-in (``compile``): it paid on no CPU run we measured and costs a minute of warm-up.

With ``num_processes > 1`` the job runs data-parallel (``worker.ml.distributed``): each rank trains on its slice of
a global batch of ``batch_size * num_processes`` sequences, gradients are all-reduced (DDP), rank 0 evaluates,
reports and checkpoints, and a checkpoint resumes with any process count.

Checkpoints hold everything needed to continue bit-for-bit: weights, optimizer, scheduler, RNG, data position
(epoch + index into its permutation), the config and the tokens seen.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from shared.weights import context_length_of
from worker.ml.checkpoints import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from worker.ml.common import Device, Report, Stopped, with_precision
from worker.ml.distributed import SINGLE, World
from worker.ml.host_memory import retained_heap
from worker.ml.lm.config import LMTrainConfig
from worker.ml.lm.data import BatchOrder, DatasetTooSmall, LMData, build_data
from worker.ml.lm.loss import CausalLMLoss
from worker.ml.lm.models import (
    check_block_size,
    count_params,
    fuse_activations,
    model_and_tokenizer,
    save_final,
)
from worker.ml.mfu import flops_per_token, mfu, peak_tflops

logger = logging.getLogger(__name__)

__all__ = ["DatasetTooSmall", "LMTrainConfig", "LMTrainResult", "train_lm"]

BETAS = (0.9, 0.95)
# Fields that may differ between the run that wrote a checkpoint and the run resuming it.
_RESUME_FREE = {
    "eval_every",
    "eval_batches",
    "checkpoint_every",
    "keep_checkpoints",
    "compile",
    "log_every",
    "num_processes",
    "precision",
}


@dataclass
class LMTrainResult:
    """What a finished run produced: ``model_dir`` loads with ``from_pretrained``."""

    model_dir: Path
    steps: int
    resumed_from_step: int | None
    metrics: dict[str, float]  # train_loss, val_loss, perplexity
    n_params: int


def train_lm(
    cfg: LMTrainConfig,
    train_texts: Sequence[str],
    val_texts: Sequence[str] | None,
    work_dir: Path,
    device: Device,
    report: Report,
    log: Callable[[str], None] = logger.info,
) -> LMTrainResult:
    """Train on ``train_texts``; resume from ``work_dir/checkpoints`` if a checkpoint is there.

    Writes ``work_dir/tokenizer`` (scratch), ``work_dir/checkpoints/step-*`` and, at the end, ``work_dir/model``.
    ``report`` gets every optimizer step (metrics every ``log_every``); if it raises :class:`Stopped`, a checkpoint
    of that step is saved and the exception re-raised. Raises :class:`DatasetTooSmall` when the texts make no
    training/validation block. ``num_processes > 1`` runs the ranks as child processes of this one
    (:func:`worker.ml.distributed.launch`) and returns rank 0's result.
    """
    if cfg.num_processes > 1:
        from worker.ml.distributed import launch

        return launch(cfg, train_texts, val_texts, Path(work_dir), device, report, log)
    return train_rank(cfg, train_texts, val_texts, Path(work_dir), device, report, log, SINGLE)


def train_rank(cfg, train_texts, val_texts, work_dir: Path, device: Device, report, log, world: World):
    """One process's part of :func:`train_lm` (the whole of it when ``world`` is :data:`SINGLE`)."""
    _seed_everything(cfg.seed)
    with world.rank_zero_first():  # rank 0 trains and saves the tokenizer, the others then load it
        model, tokenizer = model_and_tokenizer(cfg, train_texts, work_dir / "tokenizer", log)
    check_block_size(cfg.block_size, context_length_of(model.config), cfg.base_model)
    data = build_data(tokenizer, train_texts, val_texts, cfg.block_size, cfg.validation_fraction, cfg.seed, log)
    run = _Run(cfg, model, data, with_precision(device, cfg.precision), work_dir / "checkpoints", log, world)
    found = latest_checkpoint(run.ckpt_root)
    if found is not None:
        run.restore(found)
    log(
        f"training {count_params(model):,} parameters on {len(data.train)} blocks ({len(data.val)} validation) "
        f"of {cfg.block_size} tokens, steps {run.step}→{run.total} on {run.device.name} "
        f"({run.device.autocast_dtype or torch.float32}, {world.size} process(es)); MFU against {run.peak_source}"
    )
    with retained_heap(enabled=not run.device.is_cuda):  # no page faults per CPU step (worker.ml.host_memory)
        metrics = run.run(report)
    model_dir = work_dir / "model"
    if world.is_main:
        save_final(model, tokenizer, model_dir)
        log(f"done: {metrics}; model saved to {model_dir}")
    return LMTrainResult(model_dir, run.step, run.resumed_from, metrics, count_params(model))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _make_optimizer(model: torch.nn.Module, cfg: LMTrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not biases, LayerNorm gains); fused kernels where supported."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=BETAS, fused=fused, foreach=None if fused else True)


def _make_scheduler(opt: torch.optim.Optimizer, cfg: LMTrainConfig, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak, then cosine decay to ``min_lr_ratio`` of it at ``total``."""
    warmup, floor = cfg.warmup_steps, cfg.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class _Run:
    """One training run's mutable state: model, optimizer, scheduler, data order, step."""

    def __init__(self, cfg: LMTrainConfig, model, data: LMData, device: Device, ckpt_root: Path, log, world) -> None:
        self.cfg, self.device, self.ckpt_root, self.log, self.world = cfg, device, ckpt_root, log, world
        dev = device.torch_device
        if device.is_cuda:
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast (and fp32 runs) on TF32
            torch.backends.cudnn.allow_tf32 = True
        self.model = fuse_activations(model).to(dev).train()
        self.loss_model = CausalLMLoss(self.model)  # LM head + cross-entropy fused (worker.ml.lm.loss)
        wrapped = world.wrap(self.loss_model)  # DDP when data-parallel
        self.forward = torch.compile(wrapped) if cfg.compile else wrapped
        self.train_blocks, self.val_blocks = data.train.to(dev), data.val.to(dev)  # (N, T), (M, T) int32
        # One global order of batch_size * world blocks per micro-batch; each rank takes its slice of it.
        self.order = BatchOrder(len(data.train), cfg.batch_size * world.size, cfg.seed, dev)
        self.total = cfg.total_steps(len(data.train), world.size)
        self.optimizer = _make_optimizer(self.model, cfg, dev)
        self.scheduler = _make_scheduler(self.optimizer, cfg, self.total)
        self.step, self.tokens_seen, self.saved_step = 0, 0, -1
        self.resumed_from: int | None = None
        self.metrics: dict[str, float] = {}
        self.tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum_steps * world.size
        self.flops_per_token = flops_per_token(self.model, cfg.block_size)
        self.peak, self.peak_source = peak_tflops(device)
        self.loss_sum, self.window = torch.zeros((), device=dev), _Window()
        self.log_every = cfg.log_every or (10 if device.is_cuda else 1)

    def _autocast(self):
        dtype = self.device.autocast_dtype
        return nullcontext() if dtype is None else torch.autocast(self.device.torch_device.type, dtype=dtype)

    def _loss(self, forward, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return forward(x)  # () mean over the B*(T-1) next-token predictions of x (B, T)

    def _micro_batch(self) -> torch.Tensor:
        idx = self.order.next()  # (B * world,)
        b = self.cfg.batch_size
        return self.train_blocks[idx[self.world.rank * b : (self.world.rank + 1) * b]]  # (B, T) this rank's slice

    def train_step(self) -> torch.Tensor:
        """One optimizer step over ``grad_accum_steps`` micro-batches; the mean loss, still on the device."""
        accum = self.cfg.grad_accum_steps
        loss_sum = torch.zeros((), device=self.device.torch_device)
        for i in range(accum):
            with self.world.no_sync(self.forward, last=i == accum - 1):  # all-reduce once, after the last
                loss = self._loss(self.forward, self._micro_batch())
                (loss / accum).backward()
            loss_sum += loss.detach().float()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip, foreach=True)
        self.last_lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used (a Python float)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum / accum

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss over at most ``eval_batches`` validation batches (always the same ones) and its perplexity."""
        self.model.eval()
        bsz, total = self.cfg.batch_size, torch.zeros((), device=self.device.torch_device)
        stop = min(len(self.val_blocks), self.cfg.eval_batches * bsz)
        for start in range(0, stop, bsz):
            x = self.val_blocks[start : start + bsz]  # (b, T)
            total += self._loss(self.loss_model, x).float() * len(x)
        self.model.train()
        val_loss = (total / stop).item()
        return {"val_loss": val_loss, "perplexity": math.exp(min(val_loss, 100.0))}

    def run(self, report: Report) -> dict[str, float]:
        """Steps to ``total`` (reporting each), the end checkpoint; the final metrics."""
        try:
            self.window.start(self.step)
            ran = self.step < self.total
            while self.step < self.total:
                self._one_step(report)
            if not ran and "val_loss" not in self.metrics:  # resumed from an end checkpoint that has no evaluation
                # (every rank restored the same metrics, so every rank takes this branch or none does)
                if self.world.is_main:
                    self.metrics.update(self.evaluate())
                self._report(report)
        except Stopped as stop:
            self.log(f"stopped ({stop.reason}) at step {self.step}: saving a checkpoint")
            self.save()
            raise
        self.save()
        return {k: self.metrics[k] for k in ("train_loss", "val_loss", "perplexity") if k in self.metrics}

    def _one_step(self, report: Report) -> None:
        self.loss_sum += self.train_step()  # stays on the device: no host sync
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        last = self.step == self.total
        evaluate = self.step % self.cfg.eval_every == 0 or last
        if evaluate or self.step % self.log_every == 0:
            self._flush_metrics()
            if evaluate and self.world.is_main:
                self.metrics.update(self.evaluate())
                self.log(
                    f"step {self.step}/{self.total}: train_loss {self.metrics['train_loss']:.4f} "
                    f"val_loss {self.metrics['val_loss']:.4f}"
                )
            self._report(report)
            self.window.start(self.step)  # evaluation and reporting stay out of the throughput window
        elif self.world.is_main:
            report(self.step, self.total)  # progress only (and where cancellation is noticed)
        if self.step % self.cfg.checkpoint_every == 0 and not last:
            self.save()

    def _flush_metrics(self) -> None:
        """The window's mean train loss (all ranks'), lr, tokens/s and MFU: the one host sync of the window."""
        steps = self.window.steps(self.step)
        loss = self.world.all_reduce_mean(self.loss_sum) / steps
        train_loss = loss.item()
        tokens_per_s = self.tokens_per_step * steps / self.window.seconds()
        self.loss_sum.zero_()
        self.metrics = {"train_loss": train_loss, "lr": self.last_lr, "tokens_per_s": tokens_per_s}
        util = mfu(self.flops_per_token, tokens_per_s / self.world.size, self.peak)
        if util is not None:
            self.metrics["mfu"] = util

    def _report(self, report: Report) -> None:
        """Rank 0 reports; a :class:`Stopped` it gets reaches every rank at this same step."""
        reason = None
        if self.world.is_main:
            try:
                report(self.step, self.total, **self.metrics)
            except Stopped as stop:
                reason = stop.reason
        reason = self.world.agree_on_stop(reason)
        if reason is not None:
            raise Stopped(reason)

    def save(self) -> None:
        """Checkpoint the current step (once; rank 0 writes it)."""
        if self.saved_step == self.step:
            return
        self.saved_step = self.step
        if not self.world.is_main:
            return
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "data": self.order.state_dict(),
            "cfg": asdict(self.cfg),
            "tokens_seen": self.tokens_seen,
            "metrics": dict(self.metrics),
        }
        save_checkpoint(self.ckpt_root, self.step, {"model": self.model}, state, keep=self.cfg.keep_checkpoints)

    def restore(self, path: Path) -> None:
        """Continue from the checkpoint at ``path``: weights, optimizer, scheduler, RNG, data position, step."""
        state = load_checkpoint(path, {"model": self.model}, device=self.device.torch_device)
        changed = {k for k, v in state["cfg"].items() if getattr(self.cfg, k, v) != v} - _RESUME_FREE
        if changed:
            self.log(f"warning: resuming a checkpoint written with different {sorted(changed)}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.order.load_state_dict(state["data"])
        set_rng_state(_to_cpu(state["rng"]))  # torch.set_rng_state wants CPU tensors
        if self.world.rank:
            torch.manual_seed(self.cfg.seed + 7919 * self.world.rank + int(state["step"]))  # own dropout masks
        self.step = self.saved_step = self.resumed_from = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.metrics = {k: float(v) for k, v in state["metrics"].items()}
        self.log(f"resumed from {path.name} (step {self.step}, {self.tokens_seen:,} tokens seen)")


class _Window:
    """The steps and wall-clock seconds since the last metrics flush."""

    def start(self, step: int) -> None:
        self.first, self.at = step, time.perf_counter()

    def steps(self, step: int) -> int:
        return max(1, step - self.first)

    def seconds(self) -> float:
        return max(1e-9, time.perf_counter() - self.at)


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
