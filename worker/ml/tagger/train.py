"""Fine-tune a BERT-style encoder for token classification (the seed 002 system, made resumable and faster).

The seed's loop (``BertForTokenClassification`` + AdamW over a DataLoader padded to ``max_length``, scored with
``classification_report``) with: length-bucketed batches padded to their longest sentence, fused AdamW, bf16
autocast where the device computes it natively, linear warm-up and decay, entity-level evaluation every
``eval_every`` steps, atomic checkpoints every ``checkpoint_every`` steps (and on cancel), resume from the newest.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.defaults import LR_SCHEDULES, TAGGER_TRAIN
from shared.tagdata import label_list
from worker.ml.checkpoints import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from worker.ml.common import Device, Report, Stopped, no_report, with_precision
from worker.ml.tagger.data import (
    IGNORE,
    Encoded,
    bucketed_batches,
    encode,
    pad_batch,
    split_validation,
    train_wordpiece,
)
from worker.ml.tagger.metrics import evaluate
from worker.ml.tagger.model import load_tokenizer, n_params, pretrained_model, scratch_model

logger = logging.getLogger(__name__)
METRIC_EVERY = 10  # steps between train_loss / tokens_per_s points


class TooFewSentences(ValueError):
    """Not enough data to train and validate."""


@dataclass
class TaggerTrainConfig:
    base_model: str = "scratch"  # or a hub id / a local HF directory (a registry tagger)
    size: str = TAGGER_TRAIN.size
    vocab_size: int = TAGGER_TRAIN.vocab_size
    max_steps: int | None = TAGGER_TRAIN.max_steps
    epochs: float | None = None
    batch_size: int = TAGGER_TRAIN.batch_size
    learning_rate: float | None = None  # None: the fine-tune or scratch default
    warmup_steps: int = TAGGER_TRAIN.warmup_steps
    lr_schedule: str = TAGGER_TRAIN.lr_schedule
    weight_decay: float = TAGGER_TRAIN.weight_decay
    max_length: int = TAGGER_TRAIN.max_length
    eval_every: int = TAGGER_TRAIN.eval_every
    checkpoint_every: int = TAGGER_TRAIN.checkpoint_every
    validation_fraction: float = TAGGER_TRAIN.validation_fraction
    seed: int = TAGGER_TRAIN.seed
    precision: str = "auto"
    local_files_only: bool = True
    keep_checkpoints: int = 2


@dataclass
class TaggerResult:
    model_dir: Path
    steps: int
    labels: list[str]
    metrics: dict[str, float]
    report: dict[str, dict]
    resumed_from_step: int | None
    n_params: int
    context_length: int  # the encoder's positions


Sentences = Sequence[tuple[Sequence[str], Sequence[str]]]


def peak_lr(cfg: TaggerTrainConfig) -> float:
    if cfg.learning_rate is not None:
        return cfg.learning_rate
    return TAGGER_TRAIN.scratch_learning_rate if cfg.base_model == "scratch" else TAGGER_TRAIN.learning_rate


def _tokenizer(cfg: TaggerTrainConfig, train: Sentences, tok_dir: Path):
    """The scratch WordPiece (trained once, saved so a resumed run uses the very same), or the base's own."""
    if cfg.base_model != "scratch":
        return load_tokenizer(cfg.base_model, cfg.local_files_only)
    if (tok_dir / "tokenizer.json").exists():
        return load_tokenizer(str(tok_dir))
    tok = train_wordpiece((w for words, _ in train for w in words), vocab_size=cfg.vocab_size)
    tok.save_pretrained(tok_dir)
    return tok


def make_optimizer(model: torch.nn.Module, cfg: TaggerTrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; fused kernels on CUDA and CPU."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=peak_lr(cfg), fused=device.type in ("cuda", "cpu"))


def lr_schedule(opt: torch.optim.Optimizer, kind: str, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak over ``warmup`` steps, then ``"linear"`` decay to 0 at ``total`` or ``"constant"``."""
    if kind not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {kind!r}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def total_steps(cfg: TaggerTrainConfig, n_batches: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, math.ceil(n_batches * (cfg.epochs or 1.0)))


class Loop:
    """The state of one training run: model, optimizer, data, device."""

    def __init__(self, cfg, model, tokenizer, train_items: list[Encoded], device: Device):
        self.cfg, self.model, self.tokenizer, self.items, self.device = cfg, model, tokenizer, train_items, device
        self.opt = make_optimizer(model, cfg, device.torch_device)
        self.lengths = [len(e.input_ids) for e in train_items]
        self.n_batches = math.ceil(len(train_items) / cfg.batch_size)
        self.total = total_steps(cfg, self.n_batches)
        self.sched = lr_schedule(self.opt, cfg.lr_schedule, cfg.warmup_steps, self.total)
        self._epoch, self._batches = -1, []

    def autocast(self):
        dtype = self.device.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.torch_device.type, dtype=dtype)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of ``step``: epochs are seeded by (seed, epoch), so a resumed run sees the same batches."""
        epoch, pos = divmod(step, self.n_batches)
        if epoch != self._epoch:
            rng = random.Random(self.cfg.seed * 1_000_003 + epoch)
            self._epoch, self._batches = (
                epoch,
                bucketed_batches(len(self.items), self.lengths, self.cfg.batch_size, rng),
            )
        items = [self.items[i] for i in self._batches[pos]]
        return {k: v.to(self.device.torch_device) for k, v in pad_batch(items, self.tokenizer.pad_token_id).items()}

    def step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.model.train()
        with self.autocast():
            loss = self.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def state(self) -> dict:
        return {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "rng": rng_state()}

    def restore(self, path: Path) -> int:
        state = load_checkpoint(path, self.modules(), self.device.torch_device)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        return int(state["step"])


@torch.no_grad()
def predict_tags(model, tokenizer, items: list[Encoded], labels: list[str], device: Device, batch_size: int = 64):
    """(true word tags, predicted word tags, mean loss) over ``items``: scored at each word's first sub-token."""
    model.eval()
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    true: list[list[str]] = [[] for _ in items]
    pred: list[list[str]] = [[] for _ in items]
    loss_sum, n_batches = 0.0, 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = {
            k: v.to(device.torch_device) for k, v in pad_batch([items[i] for i in idx], tokenizer.pad_token_id).items()
        }
        autocast = (
            torch.autocast(device.torch_device.type, dtype=device.autocast_dtype)
            if device.autocast_dtype
            else contextlib.nullcontext()
        )
        with autocast:
            out = model(**batch)
        loss_sum, n_batches = loss_sum + float(out.loss), n_batches + 1
        best = out.logits.argmax(-1).cpu()  # (B, T)
        gold = batch["labels"].cpu()  # (B, T)
        for row, i in enumerate(idx):
            keep = gold[row] != IGNORE
            true[i] = [labels[j] for j in gold[row][keep].tolist()]
            pred[i] = [labels[j] for j in best[row][keep].tolist()]
    return true, pred, loss_sum / max(1, n_batches)


def evaluate_model(model, tokenizer, items: list[Encoded], labels: list[str], device: Device) -> dict:
    true, pred, loss = predict_tags(model, tokenizer, items, labels, device)
    return {**evaluate(true, pred), "val_loss": loss}


def train_tagger(
    cfg: TaggerTrainConfig,
    train: Sentences,
    val: Sentences | None,
    out_dir: Path,
    device: Device,
    report: Report = no_report,
    log: Callable[[str], None] = logger.info,
) -> TaggerResult:
    """Train, evaluate, checkpoint; returns the saved model directory (``out_dir/model``) and its scores.

    A second call with the same ``out_dir`` resumes from the newest checkpoint. :class:`Stopped` raised by
    ``report`` (cancel, shutdown) saves a checkpoint first, then propagates.
    """
    out_dir = Path(out_dir)
    train, val = list(train), list(val) if val else None
    if val is None:
        train, val = split_validation(train, cfg.validation_fraction, cfg.seed)
    if not train or not val:
        raise TooFewSentences("a tagger needs at least two sentences (one to train on, one to validate)")
    labels = label_list([_Sent(t) for _, t in [*train, *val]])
    label2id = {label: i for i, label in enumerate(labels)}
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    tokenizer = _tokenizer(cfg, train, out_dir / "tokenizer")
    if cfg.base_model == "scratch":
        model = scratch_model(cfg.size, len(tokenizer), labels, cfg.max_length)
    else:
        model = pretrained_model(cfg.base_model, labels, cfg.local_files_only)
    device = with_precision(device, cfg.precision)
    model.to(device.torch_device)
    train_items = encode(tokenizer, train, label2id, cfg.max_length)
    val_items = encode(tokenizer, val, label2id, cfg.max_length)
    loop = Loop(cfg, model, tokenizer, train_items, device)
    ckpt_root = out_dir / "checkpoints"
    start, resumed = 0, None
    if (last := latest_checkpoint(ckpt_root)) is not None:
        start = resumed = loop.restore(last)
        log(f"resumed from step {start}")
    log(f"{len(train)} training / {len(val)} validation sentences, {len(labels)} labels, {n_params(model):,} params")
    scores = _run(loop, val_items, labels, start, ckpt_root, report)
    model_dir = out_dir / "model"
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    metrics = {k: v for k, v in scores.items() if k != "report"}
    positions = int(model.config.max_position_embeddings)
    return TaggerResult(model_dir, loop.total, labels, metrics, scores["report"], resumed, n_params(model), positions)


@dataclass
class _Sent:
    tags: Sequence[str]


def _run(loop: Loop, val_items, labels, start: int, ckpt_root: Path, report: Report) -> dict:
    cfg, total = loop.cfg, loop.total
    scores: dict = {}
    window_loss, window_tokens, t0 = 0.0, 0, time.perf_counter()
    step = start
    try:
        while step < total:
            batch = loop.batch(step)
            loss = loop.step(batch)
            step += 1
            window_loss += float(loss)
            window_tokens += int(batch["attention_mask"].sum())
            metrics: dict[str, float] = {}
            if step % METRIC_EVERY == 0 or step == total:
                n = (step - 1) % METRIC_EVERY + 1
                elapsed = time.perf_counter() - t0
                metrics = {
                    "train_loss": window_loss / n,
                    "lr": loop.sched.get_last_lr()[0],
                    "tokens_per_s": window_tokens / max(elapsed, 1e-9),
                }
                window_loss, window_tokens, t0 = 0.0, 0, time.perf_counter()
            if step % cfg.eval_every == 0 or step == total:
                scores = evaluate_model(loop.model, loop.tokenizer, val_items, labels, loop.device)
                metrics.update({k: scores[k] for k in ("val_loss", "precision", "recall", "f1", "accuracy")})
            if step % cfg.checkpoint_every == 0 and step < total:
                save_checkpoint(ckpt_root, step, loop.modules(), loop.state(), keep=cfg.keep_checkpoints)
            report(step, total, **metrics)
    except Stopped:
        save_checkpoint(ckpt_root, step, loop.modules(), loop.state(), keep=cfg.keep_checkpoints)
        raise
    if not scores:  # resumed at the very end
        scores = evaluate_model(loop.model, loop.tokenizer, val_items, labels, loop.device)
    return scores
