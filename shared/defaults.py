"""The default of every training param, declared once: the API schemas (``shared/schemas/params.py``) and the ML
configs (``worker/ml``) both take their defaults from here, and a job's ML config is built from its validated params.

Plain Python (the standard library only), so that the ML code (which runs on GPU hosts without the web's packages)
can use it. The values are genqueue's recipe for small and medium models on one device; each is documented in the
OpenAPI document through the schema field that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

# Scratch GPT-2 sizes (``text.train`` with ``base_model: "scratch"``): the API's ``size`` choices and the shapes the
# worker builds. ``n_positions`` is the context; a longer ``block_size`` widens it.
LM_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 128, "n_positions": 256},
    "small": {"n_layer": 6, "n_head": 6, "n_embd": 384, "n_positions": 512},
    "gpt2-124m": {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024},
}


@dataclass(frozen=True)
class TextTrainDefaults:
    size: str = "tiny"  # scratch preset
    vocab_size: int = 4096  # the byte-level BPE trained on the dataset (scratch)
    validation_fraction: float = 0.1  # of the blocks, when no validation dataset is given
    block_size: int = 128
    batch_size: int = 16
    grad_accum_steps: int = 1
    learning_rate: float = 3e-4  # peak, after warm-up; cosine decay to 10 % of it
    warmup_steps: int = 20
    max_steps: int = 200  # when neither max_steps nor epochs is given
    weight_decay: float = 0.1
    eval_every: int = 50
    checkpoint_every: int = 100
    seed: int = 0
    precision: str = "auto"  # bf16 autocast on CUDA and on CPUs with native bf16, else fp32
    num_processes: int = 1  # data-parallel ranks on the worker ("auto" in a job's params: every GPU)


@dataclass(frozen=True)
class GanTrainDefaults:
    architecture: str = "dcgan"
    image_size: int = 28
    channels: int = 1
    latent_dim: int = 100
    batch_size: int = 64
    learning_rate: float = 2e-4  # Adam, both networks (the DCGAN paper's)
    beta1: float = 0.5
    beta2: float = 0.999
    max_steps: int = 500  # when neither max_steps nor epochs is given
    sample_every: int = 50
    checkpoint_every: int = 200
    seed: int = 0


TEXT_TRAIN = TextTrainDefaults()
GAN_TRAIN = GanTrainDefaults()


# Scratch BERT sizes (``text.train_tagger`` with ``base_model: "scratch"``): the API's ``size`` choices and the
# encoder shapes the worker builds (``bert-base`` is BERT-base's shape).
TAGGER_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 64, "intermediate_size": 128},
    "small": {"num_hidden_layers": 4, "num_attention_heads": 4, "hidden_size": 256, "intermediate_size": 1024},
    "base": {"num_hidden_layers": 12, "num_attention_heads": 12, "hidden_size": 768, "intermediate_size": 3072},
}


# How a tagger's learning rate goes after warm-up: "linear" decay to 0 at the last step, or "constant" at the peak.
LrSchedule = Literal["linear", "constant"]
LR_SCHEDULES: tuple[str, ...] = get_args(LrSchedule)


@dataclass(frozen=True)
class TaggerTrainDefaults:
    size: str = "tiny"  # scratch preset
    vocab_size: int = 4096  # the WordPiece vocabulary trained on the dataset (scratch)
    validation_fraction: float = 0.1  # of the sentences, when no validation dataset is given
    max_length: int = 128  # sub-tokens per sentence, [CLS] and [SEP] included; longer sentences are cut
    batch_size: int = 16
    learning_rate: float = 5e-5  # peak, after warm-up; linear decay to 0 (the seed's AdamW recipe)
    scratch_learning_rate: float = 1e-3  # the peak for a scratch encoder, when learning_rate is not given
    warmup_steps: int = 10
    lr_schedule: LrSchedule = "linear"  # after warm-up (LR_SCHEDULES)
    max_steps: int = 300  # when neither max_steps nor epochs is given
    weight_decay: float = 0.01
    eval_every: int = 50
    checkpoint_every: int = 100
    seed: int = 0


TAGGER_TRAIN = TaggerTrainDefaults()
MAX_TAGGER_LABELS = 256
