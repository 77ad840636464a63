"""The first-run demo, server side: one plan that both ``genqueue demo`` and the dashboard's "Run the demo" drive.

``start`` builds a corpus from this machine's standard-library docstrings, stores it as the user's dataset (the same
bytes again are the same dataset) and queues the two training jobs, plus a tiny tagger on a named-entity corpus built
offline (``shared/tagcorpus.py``); its follow-up tags a few sentences. ``followup`` queues, for a training job that
succeeded, the generation job that shows off its model. It is idempotent (a key derived from the training job), so
a client that polls and calls it again — a reloaded page, a second terminal — gets the same job back.

Nothing runs in the web process beyond building the corpus: the jobs go through the queue like any other.
"""

from __future__ import annotations

import io
import time
from typing import Any

from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from shared.corpus import stdlib_corpus_text
from shared.kinds import TRAINING_KINDS
from shared.models import Dataset, Job, JobStatus, User
from shared.schemas.api import DemoRequest, FollowupRequest
from shared.tagcorpus import SAMPLE_TEXTS, conll, sentences
from web.errors import ApiError, Invalid
from web.services.datasets import upload
from web.services.jobs import create_job, get_job

PROMPTS = [
    "Return the",
    "This module provides",
    "The default value is",
    "If the argument is",
    "Raise an exception",
    "The function returns",
    "A list of",
    "Create a new",
    "The path to",
    "When the file",
    "Convert the string",
    "The number of",
    "This class represents",
    "Return True if",
    "The result is",
    "Read the data from",
    "The first argument",
    "If no timeout",
    "The object is",
    "Write the",
    "This method is called",
    "Parse the",
    "The name of the",
    "Return a new",
    "The current thread",
    "Open the file",
    "If the value",
    "The context manager",
    "An iterator over",
    "The encoding of",
    "Set the",
    "The maximum number",
]
CORPUS_NAME = "stdlib-docstrings.txt"
TAGGED_NAME = "demo-entities.conll"
TAGGER_KIND = "text.train_tagger"


def lm_params(dataset_id: str, steps: int, tag: str) -> dict[str, Any]:
    return {
        "base_model": "scratch",
        "size": "tiny",
        "dataset_id": dataset_id,
        "vocab_size": 2048,
        "block_size": 128,
        "batch_size": 16,
        "max_steps": steps,
        "eval_every": max(10, steps // 10),
        "checkpoint_every": max(20, steps // 3),
        "learning_rate": 1e-3,
        "warmup_steps": min(30, steps // 5),
        "name": f"demo-lm-{tag}",
    }


def gan_params(steps: int, tag: str) -> dict[str, Any]:
    return {
        "dataset": "digits",
        "architecture": "dcgan",
        "image_size": 28,
        "max_steps": steps,
        "batch_size": 64,
        "sample_every": max(10, steps // 8),
        "checkpoint_every": max(20, steps // 2),
        "name": f"demo-gan-{tag}",
    }


def tagger_params(dataset_id: str, steps: int, tag: str) -> dict[str, Any]:
    return {
        "base_model": "scratch",
        "size": "tiny",
        "dataset_id": dataset_id,
        "vocab_size": 1000,
        "max_length": 64,
        "batch_size": 16,
        "max_steps": steps,
        "learning_rate": 2e-3,
        "eval_every": max(10, steps // 8),
        "checkpoint_every": max(20, steps // 2),
        "name": f"demo-tagger-{tag}",
    }


def followup_body(train: Job) -> dict[str, Any]:
    if train.kind == TAGGER_KIND:
        texts = [*SAMPLE_TEXTS, *(" ".join(words) for words, _ in sentences(9, seed=99, part="val"))]
        return {"kind": "text.tag", "params": {"model": train.model_id, "texts": texts}}
    if train.kind == "text.train":
        params = {
            "model": train.model_id,
            "prompts": PROMPTS,
            "max_new_tokens": 40,
            "temperature": 0.8,
            "top_k": 40,
            "seed": 1,
        }
        return {"kind": "text.generate", "params": params}
    return {"kind": "image.generate", "params": {"model": train.model_id, "count": 64, "seed": 1, "grid": True}}


def start(s: Session, user: User, req: DemoRequest) -> tuple[Dataset, list[Job]]:
    corpus = stdlib_corpus_text().encode()
    file = FileStorage(stream=io.BytesIO(corpus), filename=CORPUS_NAME, content_type="text/plain")
    dataset, _ = upload(s, user, file, "stdlib docstrings (demo)")
    tag = time.strftime("%Y%m%d-%H%M%S")
    lm, _ = create_job(s, user, {"kind": "text.train", "params": lm_params(dataset.id, req.steps, tag)})
    gan, _ = create_job(s, user, {"kind": "image.train_gan", "params": gan_params(req.gan_steps, tag)})
    jobs = [lm, gan]
    if req.tagger_steps:
        ner = FileStorage(stream=io.BytesIO(conll(sentences(600, seed=0)).encode()), filename=TAGGED_NAME)
        tagged, _ = upload(s, user, ner, "named entities (demo)")
        params = tagger_params(tagged.id, req.tagger_steps, tag)
        jobs.append(create_job(s, user, {"kind": TAGGER_KIND, "params": params})[0])
    return dataset, jobs


def finished_training(s: Session, user: User, req: FollowupRequest) -> Job:
    """The user's succeeded training job named by ``req.after`` (404 / 422 / 409 otherwise)."""
    train = get_job(s, user, req.after)
    if train.kind not in TRAINING_KINDS:
        raise Invalid(f"{train.id} is a {train.kind} job; follow-ups exist for training jobs", code="invalid_params")
    if train.status != JobStatus.SUCCEEDED or not train.model_id:
        raise ApiError(
            f"{train.id} is {train.status}; its follow-up needs it succeeded with a model", code="not_ready", status=409
        )
    return train


def followup(s: Session, user: User, train: Job) -> tuple[Job, bool]:
    """The training job's follow-up generation job; the same one on every call (200 after the first)."""
    return create_job(s, user, followup_body(train), idempotency_key=f"demo-followup:{train.id}")
