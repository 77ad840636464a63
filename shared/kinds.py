"""The job-kind registry: every kind is declared here once, and everything else is derived from it.

What a kind declares (:class:`JobKind`): its name, its params schema, its queue and default timeout, the name of its
admission check (a function in ``web/services/admission.py``), and how the dashboard presents it (label, metric
charts, the job-page part in ``web/templates/jobparts/``). Derived from it: the Celery task name and module
(``genqueue.<kind>`` in ``worker/tasks/<kind with _>.py``), ``PARAMS_BY_KIND``, the API's ``kind`` choices,
``shared/broker.py:TASK_BY_KIND``, ``worker/celery_app.py:TASK_MODULES``, the web's admission table, the dashboard's
kind lists, labels, submit forms and charts.

This module imports only pydantic schemas: the web imports it without loading the worker or torch, and the worker
takes its per-kind runtime policy (the default timeout) from here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from shared.schemas.params import (
    CommonParams,
    GanTrainParams,
    ImageGenerateParams,
    TextGenerateParams,
    TextTrainParams,
)
from shared.schemas.tagger import TextTagParams, TextTrainTaggerParams

HOUR = 3600


@dataclass(frozen=True)
class Chart:
    """One chart on the job page: a title and the metric series (event ``data`` keys) it draws."""

    title: str
    series: tuple[tuple[str, str], ...]  # (metric key, legend label)


@dataclass(frozen=True)
class JobKind:
    name: str
    label: str
    params: type[CommonParams]
    admission: str  # the check's function name in web/services/admission.py
    default_timeout_seconds: int
    queue: str = "gpu"
    trains_model: bool = False  # ends with a registry model (demo follow-ups, "trained" metrics)
    charts: tuple[Chart, ...] = ()
    part: str | None = None  # web/templates/jobparts/<part>.html, the kind's own section of the job page
    model_param: str = "model"  # the param shown as "Model" in job lists
    results: str | None = None  # what GET /jobs/{id}/results serves: "generations" or "tags"
    form_fields: tuple[str, ...] = ()  # the submit form's main fields, in order; the others are "Advanced"
    # Cross-job batching: the params two jobs must agree on to share one running batch (their batch key,
    # :func:`batch_key`); empty: the kind's jobs always run alone.
    batch_params: tuple[str, ...] = ()

    @property
    def task(self) -> str:
        """The Celery task name."""
        return f"genqueue.{self.name}"

    @property
    def module(self) -> str:
        """The worker's task module."""
        return "worker.tasks." + self.name.replace(".", "_")


LM_CHARTS = (
    Chart("Loss", (("train_loss", "train"), ("val_loss", "validation"))),
    Chart("Validation perplexity", (("perplexity", "perplexity"),)),
    Chart("Learning rate", (("lr", "lr"),)),
    Chart("Throughput (tokens/s)", (("tokens_per_s", "tokens/s"),)),
    Chart("MFU (fraction of the device's peak FLOPS)", (("mfu", "MFU"),)),
)
GAN_CHARTS = (
    Chart("Losses", (("d_loss", "discriminator"), ("g_loss", "generator"))),
    Chart("Discriminator outputs", (("d_real", "D(real)"), ("d_fake", "D(fake)"))),
    Chart("Fréchet distance", (("fd", "FD"),)),
)
TAGGER_CHARTS = (
    Chart("Loss", (("train_loss", "train"), ("val_loss", "validation"))),
    Chart("Entity-level scores", (("f1", "f1"), ("precision", "precision"), ("recall", "recall"))),
    Chart("Token accuracy", (("accuracy", "accuracy"),)),
    Chart("Throughput (tokens/s)", (("tokens_per_s", "tokens/s"),)),
)

KINDS: dict[str, JobKind] = {
    k.name: k
    for k in (
        JobKind(
            "text.generate",
            "Text generation",
            TextGenerateParams,
            "check_text_generate",
            form_fields=(
                "model",
                "prompts",
                "dataset_id",
                "max_new_tokens",
                "temperature",
                "top_k",
                "top_p",
                "num_return_sequences",
            ),
            default_timeout_seconds=6 * HOUR,
            part="text_generate",
            results="generations",
            # jobs of one model share a batch: each draws with its own sampling params, limits and stop strings
            # (worker/ml/lm/gen_base.Stream) and gets exactly its texts alone; batch_size is only a budget
            batch_params=("model",),
        ),
        JobKind(
            "text.train",
            "LM training",
            TextTrainParams,
            "check_text_train",
            form_fields=(
                "dataset_id",
                "base_model",
                "size",
                "max_steps",
                "epochs",
                "learning_rate",
                "batch_size",
                "block_size",
                "name",
            ),
            default_timeout_seconds=72 * HOUR,
            trains_model=True,
            charts=LM_CHARTS,
            model_param="base_model",
        ),
        JobKind(
            "image.train_gan",
            "GAN training",
            GanTrainParams,
            "check_gan_train",
            form_fields=(
                "dataset",
                "architecture",
                "max_steps",
                "epochs",
                "image_size",
                "channels",
                "batch_size",
                "name",
            ),
            default_timeout_seconds=72 * HOUR,
            trains_model=True,
            charts=GAN_CHARTS,
            part="image_train_gan",
        ),
        JobKind(
            "image.generate",
            "Image generation",
            ImageGenerateParams,
            "check_image_generate",
            form_fields=("model", "count", "seed", "grid"),
            default_timeout_seconds=2 * HOUR,
            part="image_generate",
        ),
        JobKind(
            "text.train_tagger",
            "Tagger training",
            TextTrainTaggerParams,
            "check_train_tagger",
            form_fields=(
                "dataset_id",
                "base_model",
                "size",
                "max_steps",
                "epochs",
                "learning_rate",
                "batch_size",
                "max_length",
                "name",
            ),
            default_timeout_seconds=72 * HOUR,
            trains_model=True,
            charts=TAGGER_CHARTS,
            part="text_train_tagger",
            model_param="base_model",
        ),
        JobKind(
            "text.tag",
            "Tagging",
            TextTagParams,
            "check_tag",
            form_fields=("model", "texts", "dataset_id", "batch_size"),
            default_timeout_seconds=6 * HOUR,
            part="text_tag",
            results="tags",
        ),
    )
}

PARAMS_BY_KIND: dict[str, type[CommonParams]] = {name: k.params for name, k in KINDS.items()}
TASK_BY_KIND: dict[str, str] = {name: k.task for name, k in KINDS.items()}
TRAINING_KINDS: tuple[str, ...] = tuple(name for name, k in KINDS.items() if k.trains_model)


def batch_key(kind: str, params: CommonParams | dict) -> str | None:
    """The key under which a job of ``kind`` may share a running batch with others (cross-job batching): a digest of
    its ``batch_params`` as validated (defaults included), so the web (which stores it with the job, indexed) and the
    worker (which claims queued jobs by it) agree. None for a kind whose jobs run alone, and for params that do not
    validate (a row written by hand: a test's fault-injection job runs alone)."""
    names = KINDS[kind].batch_params if kind in KINDS else ()
    if not names:
        return None
    if isinstance(params, dict):
        try:
            params = KINDS[kind].params.model_validate(params)
        except ValueError:
            return None
    chosen = params.model_dump(mode="json", include=set(names))
    return hashlib.sha256(json.dumps([kind, chosen], sort_keys=True).encode()).hexdigest()


class UnknownKind(ValueError):
    """A kind string that no :class:`JobKind` declares."""


def get_kind(name: str) -> JobKind:
    """The declared kind; :class:`UnknownKind` otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKind(f"unknown job kind {name!r} (one of {', '.join(KINDS)})") from None


def presentation() -> dict[str, dict]:
    """What the dashboard's JavaScript needs per kind (labels, charts, model param), as JSON-ready data."""
    return {
        name: {
            "label": k.label,
            "model_param": k.model_param,
            "results": k.results,
            "trains_model": k.trains_model,
            "charts": [{"title": c.title, "series": [{"key": a, "label": b} for a, b in c.series]} for c in k.charts],
        }
        for name, k in KINDS.items()
    }
