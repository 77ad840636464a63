"""The model registry: hub models, models trained on the platform, local directories registered by an operator."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, created_at_column


class ModelKind:
    CAUSAL_LM = "causal-lm"
    GAN_GENERATOR = "gan-generator"
    TOKEN_CLASSIFIER = "token-classifier"  # text.train_tagger's output, text.tag's input (config.labels)
    ENCODER = "encoder"  # a hub BERT-style encoder to fine-tune as a tagger (bert-base-cased)

    ALL = (CAUSAL_LM, GAN_GENERATOR, TOKEN_CLASSIFIER, ENCODER)


class ModelSource:
    HUB = "hub"
    TRAINED = "trained"
    REGISTERED = "registered"


class Model(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(20))
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)  # None: visible to everyone
    path: Mapped[str | None] = mapped_column(String(1000))  # a local directory (registered by an operator)
    object_key: Mapped[str | None] = mapped_column(String(500))  # trained: its directory in the object store
    hub_id: Mapped[str | None] = mapped_column(String(200))
    base: Mapped[str | None] = mapped_column(String(200))
    job_id: Mapped[str | None] = mapped_column(String(40))
    dataset_id: Mapped[str | None] = mapped_column(String(40))
    config: Mapped[dict[str, Any]]  # context_length, architecture, image_size, ...
    metrics: Mapped[dict[str, Any]]
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = created_at_column()
