"""Request and response shapes of the REST API (the job params live in params.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.kinds import KINDS

Kind = Literal[tuple(KINDS)]  # the registry's kinds
Status = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]
DatasetKind = Literal["text", "images", "tagged"]
WebhookEvent = Literal["running", "succeeded", "failed", "cancelled"]
METADATA_MAX_KEYS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
METADATA_KEY_PATTERN = r"^[A-Za-z0-9_.:/-]+$"
MetadataKey = Annotated[
    str, StringConstraints(min_length=1, max_length=METADATA_KEY_CHARS, pattern=METADATA_KEY_PATTERN)
]
MetadataValue = Annotated[str, StringConstraints(max_length=METADATA_VALUE_CHARS)]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    Field(
        max_length=METADATA_MAX_KEYS,
        description=f"Your labels: up to {METADATA_MAX_KEYS} keys (1-{METADATA_KEY_CHARS} characters of letters, "
        f"digits and `_.:/-`) to strings of at most {METADATA_VALUE_CHARS} characters. Searchable with "
        "`GET /jobs?metadata.KEY=VALUE`.",
    ),
]


class JobCreate(BaseModel):
    """``POST /jobs``. ``params`` is validated against the kind's params schema."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    params: dict[str, Any] = Field(default_factory=dict, description="See the *Params schemas, by kind.")
    priority: int = Field(0, ge=-100, le=100, description="Higher runs first.")
    queue: Literal["gpu", "cpu"] | None = Field(
        None, description='"gpu" (ML work; CPU workers serve it too) or "cpu"; unset: the kind\'s queue (all: "gpu").'
    )
    metadata: Metadata = Field(default_factory=dict)
    webhook_url: str | None = Field(
        None,
        min_length=1,
        max_length=2048,
        description="POSTed the job (Standard Webhooks, signed) when it reaches one of `webhook_events`; "
        "unset: your default webhook URL, if any. Must resolve to a public address.",
    )
    webhook_events: list[WebhookEvent] | None = Field(
        None,
        min_length=1,
        max_length=4,
        description='Statuses that call the webhook; unset: ["succeeded", "failed", "cancelled"].',
    )


class Progress(BaseModel):
    done: int
    total: int
    eta_seconds: float | None = None


class ErrorInfo(BaseModel):
    code: str
    message: str


class JobOut(BaseModel):
    id: str
    kind: str
    status: Status
    params: dict[str, Any]
    priority: int
    queue: str
    attempt: int
    max_attempts: int
    progress: Progress
    error: ErrorInfo | None
    summary: dict[str, Any] | None
    model_id: str | None
    dataset_id: str | None
    retry_of: str | None
    worker: str | None
    device: str | None
    cancel_requested: bool
    metadata: dict[str, str]
    webhook_url: str | None
    webhook_events: list[str] | None
    created_at: str
    started_at: str | None
    finished_at: str | None


class JobList(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class EventOut(BaseModel):
    id: int
    at: str
    type: Literal["log", "metric", "status"]
    attempt: int
    step: int | None
    message: str | None
    data: dict[str, Any] | None


class EventList(BaseModel):
    items: list[EventOut]
    next_after: int | None


class JobDeleted(BaseModel):
    """``DELETE /jobs/{id}``: what went. A trained model is kept (``models_deleted`` false) unless ``with_model``."""

    id: str
    deleted: bool
    artifacts: int
    model_ids: list[str]
    models_deleted: bool


class Deleted(BaseModel):
    id: str
    deleted: bool


class MetricSeries(BaseModel):
    steps: list[int]
    values: list[float]
    points: int = Field(description="Points in the series before downsampling.")


class MetricsOut(BaseModel):
    """Metric series by name; long series are downsampled to the min and max of each step bucket."""

    job_id: str
    series: dict[str, MetricSeries]


class ResultOut(BaseModel):
    index: int
    sequence: int
    id: str | None
    prompt: str
    text: str
    tokens: int
    finish_reason: str
    ai_generated: Literal[True] = Field(True, description="always true: the text is machine-generated")
    provenance: dict[str, Any] = Field(
        description="model_id, model_name, job_id, seed, genqueue_version, created_at, label (shared/provenance.py)"
    )


class ArtifactOut(BaseModel):
    id: str
    job_id: str | None
    name: str
    role: str
    content_type: str
    size: int
    sha256: str
    step: int | None
    created_at: str


class ArtifactList(BaseModel):
    items: list[ArtifactOut]
    next_cursor: str | None = None


class ModelOut(BaseModel):
    id: str
    name: str
    kind: str
    source: str
    base: str | None
    job_id: str | None
    dataset_id: str | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    size_bytes: int
    created_at: str


class ModelList(BaseModel):
    items: list[ModelOut]
    next_cursor: str | None = None


class DatasetOut(BaseModel):
    id: str
    name: str
    kind: DatasetKind
    format: str
    size: int
    sha256: str
    stats: dict[str, Any]
    created_at: str


class DatasetList(BaseModel):
    items: list[DatasetOut]
    next_cursor: str | None = None


class DemoRequest(BaseModel):
    """How long the demo's two training jobs train (the defaults finish in minutes on a 2-core CPU)."""

    model_config = {"extra": "forbid"}

    steps: int = Field(300, ge=10, le=20_000, description="text.train steps of the tiny GPT-2")
    gan_steps: int = Field(400, ge=10, le=20_000, description="image.train_gan steps of the DCGAN on digits")
    tagger_steps: int = Field(
        200, ge=0, le=20_000, description="text.train_tagger steps of a tiny tagger on a built-in NER corpus (0: none)"
    )


class DemoOut(BaseModel):
    dataset: DatasetOut
    jobs: list[JobOut]


class FollowupRequest(BaseModel):
    """Queue the generation job that shows off the model of a succeeded demo training job."""

    model_config = {"extra": "forbid"}

    after: str = Field(..., min_length=1, max_length=64, pattern=r"^[^\x00]*$", description="a training job id")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    db: str
    broker: str
    workers: int


class WebhookSecret(BaseModel):
    secret: str = Field(description="`whsec_` + base64 key: verify `webhook-signature` with it")


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_url: str | None = Field(None, max_length=2048, description="for jobs that name no `webhook_url`")


class WebhookAttemptOut(BaseModel):
    number: int
    at: str
    outcome: Literal["success", "http_error", "timeout", "connection_error", "refused"]
    status_code: int | None
    duration_ms: int
    error: str | None


class WebhookDeliveryOut(BaseModel):
    id: str = Field(description="the `webhook-id` header, the same on every retry")
    event: str
    url: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: str | None
    created_at: str
    attempt_log: list[WebhookAttemptOut]


class WebhookDeliveryList(BaseModel):
    items: list[WebhookDeliveryOut]
    next_cursor: str | None = None


class ErrorBody(BaseModel):
    class Inner(BaseModel):
        code: str
        message: str
        details: list[Any] | None = None

    error: Inner
