"""The parameters of a ``text.train`` run (:class:`LMTrainConfig`) and the scratch presets: what both the model
builder (``models``) and the loop (``train``) read, so neither imports the other for it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from shared.defaults import LM_PRESETS, TEXT_TRAIN
from worker.ml.common import PRECISIONS

SCRATCH = "scratch"

PRESETS = LM_PRESETS  # n_positions is widened to a longer block_size (see models.preset_config)


def _f(default, text: str):
    """A dataclass field documented by ``metadata["help"]`` (what argparse-style tools and schemas read)."""
    return field(default=default, metadata={"help": text})


@dataclass
class LMTrainConfig:
    """Parameters of a ``text.train`` job; ``metadata["help"]`` documents each field."""

    base_model: str = _f(SCRATCH, '"scratch", a local Hugging Face model directory, or a hub id')
    size: str = _f(TEXT_TRAIN.size, f"scratch only: preset {sorted(PRESETS)}")
    n_layer: int | None = _f(None, "scratch only: layers (overrides the preset)")
    n_head: int | None = _f(None, "scratch only: attention heads (overrides the preset)")
    n_embd: int | None = _f(None, "scratch only: embedding width (overrides the preset)")
    vocab_size: int = _f(TEXT_TRAIN.vocab_size, "scratch only: vocabulary of the byte-level BPE trained on the texts")
    dropout: float = _f(0.0, "scratch only: dropout (a fine-tuned model keeps its own)")
    block_size: int = _f(TEXT_TRAIN.block_size, "tokens per training sequence; at most the model's context")
    batch_size: int = _f(TEXT_TRAIN.batch_size, "sequences per micro-batch (per process)")
    grad_accum_steps: int = _f(TEXT_TRAIN.grad_accum_steps, "micro-batches per optimizer step")
    learning_rate: float = _f(TEXT_TRAIN.learning_rate, "peak learning rate (after warm-up)")
    min_lr_ratio: float = _f(0.1, "the cosine decays to learning_rate * min_lr_ratio at the last step")
    warmup_steps: int = _f(TEXT_TRAIN.warmup_steps, "optimizer steps of linear warm-up")
    max_steps: int | None = _f(None, "optimizer steps to train (give this or epochs; neither means 1 epoch)")
    epochs: float | None = _f(None, "passes over the training blocks, converted to optimizer steps")
    weight_decay: float = _f(TEXT_TRAIN.weight_decay, "AdamW weight decay, applied to matrices (2-D parameters) only")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 disables)")
    eval_every: int = _f(
        TEXT_TRAIN.eval_every, "evaluate on the validation blocks every this many steps (and at the end)"
    )
    eval_batches: int = _f(20, "at most this many validation batches per evaluation")
    checkpoint_every: int = _f(TEXT_TRAIN.checkpoint_every, "save a checkpoint every this many steps (and at the end)")
    keep_checkpoints: int = _f(3, "checkpoints kept; older ones are pruned")
    seed: int = _f(TEXT_TRAIN.seed, "seeds initialisation, the validation split, batch order and dropout")
    validation_fraction: float = _f(
        TEXT_TRAIN.validation_fraction, "fraction of blocks held out when no validation texts are given"
    )
    compile: bool = _f(False, "torch.compile the model's forward (faster on GPU after a slow first step)")
    precision: str = _f(TEXT_TRAIN.precision, f"{PRECISIONS}: auto = bf16 on CUDA and on CPUs with native bf16")
    num_processes: int = _f(TEXT_TRAIN.num_processes, "data-parallel processes (one per GPU; gloo on CPU)")
    log_every: int | None = _f(
        None,
        "read the loss back and report metrics every this many steps (default: 10 on CUDA, where "
        "that is a host sync; every step on a CPU, where it costs nothing)",
    )

    def __post_init__(self) -> None:
        positive = (
            "block_size batch_size grad_accum_steps eval_every eval_batches checkpoint_every keep_checkpoints "
            "vocab_size num_processes"
        )
        bad = [name for name in positive.split() if getattr(self, name) < 1]
        if bad:
            raise ValueError(f"must be at least 1: {', '.join(bad)}")
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("give max_steps or epochs, not both")
        if (self.max_steps is not None and self.max_steps < 1) or (self.epochs is not None and self.epochs <= 0):
            raise ValueError("max_steps / epochs must be positive")
        if self.learning_rate <= 0 or self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("need learning_rate > 0, warmup_steps >= 0 and 0 <= min_lr_ratio <= 1")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError("validation_fraction must be in (0, 1)")
        if self.base_model == SCRATCH and self.size not in PRESETS:
            raise ValueError(f"unknown size {self.size!r}; choose one of {sorted(PRESETS)}")
        if self.log_every is not None and self.log_every < 1:
            raise ValueError("log_every must be at least 1")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")

    def total_steps(self, n_train_blocks: int, world_size: int = 1) -> int:
        """Optimizer steps of the run: ``max_steps``, or ``epochs`` (default 1) worth of blocks."""
        if self.max_steps is not None:
            return self.max_steps
        per_step = self.batch_size * self.grad_accum_steps * world_size
        return max(1, math.ceil((self.epochs or 1.0) * n_train_blocks / per_step))
