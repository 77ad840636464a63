"""Job params per kind. Each model validates a submission and feeds the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from shared.defaults import GAN_TRAIN, LM_PRESETS, TEXT_TRAIN

MAX_NEW_TOKENS = 4096
MAX_IMAGE_COUNT = 1024

Name = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class CommonParams(BaseModel):
    """Fields every kind accepts: retry budget and a time limit."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int | None = Field(None, ge=1, le=20, description="Attempts before the job fails for good.")
    timeout_seconds: int | None = Field(None, ge=1, le=7 * 24 * 3600, description="Stop and fail after this long.")


StopStrings = list[Annotated[str, StringConstraints(min_length=1, max_length=100)]]


class PromptObject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="The prompt text.")
    id: str | None = Field(None, max_length=200, description="Your id for this prompt, echoed in results.")
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS, description="This prompt's own limit.")
    stop: StopStrings | None = Field(None, max_length=8, description="This prompt's stop strings (replace the job's).")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_str(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v


class TextGenerateParams(CommonParams):
    """Bulk GPT-2 generation over a list of prompts or an uploaded prompt file."""

    model: Ref = Field("gpt2", description="A hub id, a registry model id or name, or a registered directory name.")
    prompts: list[str | PromptObject] | None = Field(
        None, description="Prompts: strings or {prompt, id?, max_new_tokens?, stop?}."
    )
    dataset_id: str | None = Field(None, description="An uploaded .txt (a prompt per line) or .jsonl dataset.")
    max_new_tokens: int = Field(64, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(1.0, ge=0.0, le=5.0, description="0 means greedy decoding.")
    top_k: int = Field(50, ge=0, le=100_000, description="0 disables top-k filtering.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    num_return_sequences: int = Field(1, ge=1, le=16)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    stop: StopStrings = Field(
        default_factory=list, max_length=8, description="Stop strings; the text is cut before the first one."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    batch_size: int = Field(0, ge=0, le=4096, description="Prompts in flight; 0 picks it from the device's memory.")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_str(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_source(self) -> TextGenerateParams:
        if (self.prompts is None) == (self.dataset_id is None):
            raise ValueError("give exactly one of `prompts` or `dataset_id`")
        if self.prompts is not None and not self.prompts:
            raise ValueError("`prompts` must not be empty")
        for i, p in enumerate(self.prompts or []):
            if isinstance(p, str) and not p:
                raise ValueError(f"prompt {i} is empty")
        return self


class TrainingParams(CommonParams):
    """Fields every training kind accepts: how long to train (``max_steps`` or ``epochs``; neither: the kind's
    default number of steps)."""

    default_max_steps: ClassVar[int]

    max_steps: int | None = Field(None, ge=1, le=10_000_000, description="Optimizer steps to train.")
    epochs: float | None = Field(None, gt=0.0, le=10_000, description="Passes over the data (instead of max_steps).")

    @model_validator(mode="after")
    def _length(self) -> TrainingParams:
        if self.max_steps is None and self.epochs is None:
            self.max_steps = self.default_max_steps
        if self.max_steps is not None and self.epochs is not None:
            raise ValueError("give `max_steps` or `epochs`, not both")
        return self


class TextTrainParams(TrainingParams):
    """Fine-tune a GPT-2 or train one from scratch on an uploaded text dataset."""

    default_max_steps: ClassVar[int] = TEXT_TRAIN.max_steps

    base_model: Ref = Field("scratch", description='"scratch", a hub id, or a registry model id or name.')
    size: Literal[tuple(LM_PRESETS)] | None = Field(None, description="Preset for scratch models.")
    n_layer: int | None = Field(None, ge=1, le=48)
    n_head: int | None = Field(None, ge=1, le=64)
    n_embd: int | None = Field(None, ge=8, le=4096)
    vocab_size: int = Field(
        TEXT_TRAIN.vocab_size, ge=256, le=65536, description="Tokenizer vocabulary for scratch models."
    )
    dataset_id: str = Field(min_length=1)
    validation_dataset_id: str | None = None
    validation_fraction: float = Field(TEXT_TRAIN.validation_fraction, gt=0.0, lt=0.5)
    block_size: int = Field(TEXT_TRAIN.block_size, ge=8, le=4096)
    batch_size: int = Field(TEXT_TRAIN.batch_size, ge=1, le=1024)
    grad_accum_steps: int = Field(TEXT_TRAIN.grad_accum_steps, ge=1, le=1024)
    learning_rate: float = Field(TEXT_TRAIN.learning_rate, gt=0.0, le=1.0)
    warmup_steps: int = Field(TEXT_TRAIN.warmup_steps, ge=0, le=1_000_000)
    weight_decay: float = Field(TEXT_TRAIN.weight_decay, ge=0.0, le=1.0)
    eval_every: int = Field(TEXT_TRAIN.eval_every, ge=1)
    checkpoint_every: int = Field(TEXT_TRAIN.checkpoint_every, ge=1)
    seed: int = Field(TEXT_TRAIN.seed, ge=0, le=2**31 - 1)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        TEXT_TRAIN.precision, description="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32."
    )
    num_processes: int | Literal["auto"] = Field(
        TEXT_TRAIN.num_processes,
        description='Data-parallel processes on the worker (one per GPU; gloo on CPU); "auto": every GPU of the '
        "worker (1 on a CPU worker). batch_size is per process.",
    )
    name: Name | None = Field(None, description="Registry name for the trained model (unique).")

    @field_validator("num_processes")
    @classmethod
    def _processes(cls, v: int | str) -> int | str:
        if v != "auto" and not 1 <= v <= 64:
            raise ValueError('`num_processes` must be 1..64 or "auto"')
        return v

    @model_validator(mode="after")
    def _shape(self) -> TextTrainParams:
        explicit = [self.n_layer, self.n_head, self.n_embd]
        if self.base_model != "scratch" and (self.size or any(v is not None for v in explicit)):
            raise ValueError('`size`/`n_layer`/`n_head`/`n_embd` apply only to base_model "scratch"')
        if any(v is not None for v in explicit) and None in explicit:
            raise ValueError("give all of `n_layer`, `n_head`, `n_embd` or none")
        if self.n_embd is not None and self.n_head is not None and self.n_embd % self.n_head:
            raise ValueError("`n_embd` must be divisible by `n_head`")
        if self.base_model == "scratch" and self.size is None and self.n_layer is None:
            self.size = TEXT_TRAIN.size
        return self


class GanTrainParams(TrainingParams):
    """Train a DCGAN or the fully connected GAN on image data."""

    default_max_steps: ClassVar[int] = GAN_TRAIN.max_steps

    architecture: Literal["dcgan", "mlp"] = GAN_TRAIN.architecture
    dataset: Ref = Field("digits", description='"digits" (built in), "mnist" (online), or an image dataset id.')
    image_size: Literal[28, 32, 64] = GAN_TRAIN.image_size
    channels: Literal[1, 3] = GAN_TRAIN.channels
    latent_dim: int = Field(GAN_TRAIN.latent_dim, ge=2, le=1024)
    batch_size: int = Field(GAN_TRAIN.batch_size, ge=2, le=4096)
    learning_rate: float = Field(GAN_TRAIN.learning_rate, gt=0.0, le=1.0)
    beta1: float = Field(GAN_TRAIN.beta1, ge=0.0, lt=1.0)
    beta2: float = Field(GAN_TRAIN.beta2, ge=0.0, lt=1.0)
    sample_every: int = Field(GAN_TRAIN.sample_every, ge=1)
    checkpoint_every: int = Field(GAN_TRAIN.checkpoint_every, ge=1)
    seed: int = Field(GAN_TRAIN.seed, ge=0, le=2**31 - 1)
    name: Name | None = None


class ImageGenerateParams(CommonParams):
    """Sample images from a registry generator."""

    model: Ref = Field(description="A registry generator id or name.")
    count: int = Field(64, ge=1, le=MAX_IMAGE_COUNT)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    grid: bool = True


def __getattr__(name: str):
    """``PARAMS_BY_KIND`` moved to the job-kind registry (``shared/kinds.py``); old imports keep working."""
    if name == "PARAMS_BY_KIND":
        from shared.kinds import PARAMS_BY_KIND

        return PARAMS_BY_KIND
    raise AttributeError(name)
