"""SQLAlchemy 2.0 typed models, one module per aggregate."""

from shared.models.artifacts import Artifact
from shared.models.base import Base
from shared.models.datasets import Dataset
from shared.models.jobs import Job, JobEvent, JobStatus
from shared.models.registry import Model, ModelKind, ModelSource
from shared.models.results import GenerationResult, TagResult
from shared.models.users import ApiToken, User
from shared.models.webhooks import DeliveryStatus, WebhookAttempt, WebhookDelivery
from shared.models.workers import Worker

__all__ = [
    "ApiToken",
    "Artifact",
    "Base",
    "Dataset",
    "GenerationResult",
    "Job",
    "JobEvent",
    "JobStatus",
    "Model",
    "ModelKind",
    "ModelSource",
    "TagResult",
    "User",
    "WebhookAttempt",
    "WebhookDelivery",
    "DeliveryStatus",
    "Worker",
]
