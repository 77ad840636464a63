"""Params of the two token-classification kinds: ``text.train_tagger`` (the seed 002 system) and ``text.tag``."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.defaults import TAGGER_PRESETS, TAGGER_TRAIN, LrSchedule
from shared.schemas.params import CommonParams, Name, Ref, TrainingParams

MAX_TAG_TEXT_CHARS = 20_000


class TextTrainTaggerParams(TrainingParams):
    """Fine-tune a BERT-style encoder for token classification (named entities, BIO/IOB2 or IO tags)."""

    default_max_steps: ClassVar[int] = TAGGER_TRAIN.max_steps

    base_model: Ref = Field(
        "scratch", description='"scratch" (with `size`), a hub id such as bert-base-cased, or a registry tagger.'
    )
    size: Literal[tuple(TAGGER_PRESETS)] = Field(TAGGER_TRAIN.size, description="Encoder preset for scratch models.")
    vocab_size: int = Field(
        TAGGER_TRAIN.vocab_size, ge=256, le=65536, description="WordPiece vocabulary for scratch models."
    )
    dataset_id: str = Field(min_length=1, description="A tagged dataset (CoNLL or JSONL tokens/tags).")
    validation_dataset_id: str | None = None
    validation_fraction: float = Field(
        TAGGER_TRAIN.validation_fraction, gt=0.0, lt=0.5, description="Held out when no validation_dataset_id."
    )
    batch_size: int = Field(TAGGER_TRAIN.batch_size, ge=1, le=1024)
    learning_rate: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description=f"Peak AdamW rate; unset: {TAGGER_TRAIN.learning_rate} to fine-tune, "
        f"{TAGGER_TRAIN.scratch_learning_rate} from scratch.",
    )
    warmup_steps: int = Field(TAGGER_TRAIN.warmup_steps, ge=0, le=1_000_000)
    lr_schedule: LrSchedule = Field(
        TAGGER_TRAIN.lr_schedule,
        description="After warm-up: linear decay to 0 at the last step, or constant at the peak rate.",
    )
    weight_decay: float = Field(TAGGER_TRAIN.weight_decay, ge=0.0, le=1.0)
    max_length: int = Field(TAGGER_TRAIN.max_length, ge=8, le=512, description="Sub-tokens per sentence (cut).")
    eval_every: int = Field(TAGGER_TRAIN.eval_every, ge=1)
    checkpoint_every: int = Field(TAGGER_TRAIN.checkpoint_every, ge=1)
    seed: int = Field(TAGGER_TRAIN.seed, ge=0, le=2**31 - 1)
    name: Name | None = None


class TagText(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_TAG_TEXT_CHARS)
    id: str | None = Field(None, max_length=200, description="Your id for this text, echoed in results.")


class TextTagParams(CommonParams):
    """Tag many texts with a registry tagger (or a hub token-classification model)."""

    model: Ref = Field(description="A registry token-classifier id or name, or a hub id.")
    texts: list[str | TagText] | None = Field(None, description="Texts: strings or {text, id?}.")
    dataset_id: str | None = Field(None, description="An uploaded .txt dataset: one text per line.")
    batch_size: int = Field(32, ge=1, le=1024, description="Texts per forward pass (sorted by length).")
    max_length: int = Field(512, ge=8, le=512, description="Sub-tokens per window; longer texts are cut.")

    @model_validator(mode="after")
    def _one_source(self) -> TextTagParams:
        if (self.texts is None) == (self.dataset_id is None):
            raise ValueError("give exactly one of `texts` or `dataset_id`")
        if self.texts is not None and not self.texts:
            raise ValueError("`texts` must not be empty")
        for i, t in enumerate(self.texts or []):
            if isinstance(t, str) and not t.strip():
                raise ValueError(f"text {i} is empty")
            if isinstance(t, str) and len(t) > MAX_TAG_TEXT_CHARS:
                raise ValueError(f"text {i} is over {MAX_TAG_TEXT_CHARS} characters")
        return self
