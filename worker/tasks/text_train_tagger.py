"""``text.train_tagger``: fine-tune (or train from scratch) a BERT-style token classifier; a retried job resumes from
its last checkpoint; the model is registered as a ``token-classifier`` with its label list."""

from __future__ import annotations

import logging

from shared.models import ModelKind
from shared.schemas.tagger import TextTrainTaggerParams
from shared.tagdata import Sentence, TagDataError, read_sentences
from worker.celery_app import app
from worker.checkpoint_sync import stored_checkpoints
from worker.context import JobContext, UserError
from worker.devices import current_device
from worker.ml.common import config_from_params
from worker.ml.tagger.model import TaggerLoadError
from worker.ml.tagger.train import TaggerTrainConfig, TooFewSentences, train_tagger
from worker.tasks.common import (
    hub_online,
    kind_of,
    load_dataset_row,
    load_model_row,
    policy_of,
    register_model,
    run_task,
    training_errors,
    unique_model_name,
    weights_source,
)

logger = logging.getLogger(__name__)

KIND = kind_of(__name__)
POLICY = policy_of(KIND)


def _sentences(ctx: JobContext, dataset_id: str) -> list[tuple[list[str], list[str]]]:
    ds, path = load_dataset_row(ctx, dataset_id)
    try:
        found: list[Sentence] = read_sentences(path, ds.format)
    except TagDataError as exc:
        raise UserError("invalid_dataset", f"{dataset_id}: {exc}") from exc
    return [(s.tokens, s.tags) for s in found]


def handle(ctx: JobContext) -> dict:
    p = TextTrainTaggerParams.model_validate(ctx.params)
    base_name = base = "scratch"
    if p.base_model != "scratch":
        model = _base_row(ctx, p.base_model)
        base_name, base = model.name, weights_source(model)
    train = _sentences(ctx, p.dataset_id)
    val = _sentences(ctx, p.validation_dataset_id) if p.validation_dataset_id else None
    ctx.log(
        f"training a tagger from {base_name} on {len(train)} sentences" + (f", {len(val)} to validate" if val else "")
    )
    cfg = config_from_params(TaggerTrainConfig, p.model_dump(), base_model=base, local_files_only=not hub_online())
    root = ctx.work_dir / "tagger"
    with training_errors(base_name, TooFewSentences, TaggerLoadError):
        with stored_checkpoints(ctx, root):  # resumes from the job's stored checkpoint, on any host
            result = train_tagger(cfg, train, val, root, current_device(), ctx.report, ctx.log)
    try:
        return _register(ctx, p, result, base_name)
    finally:
        ctx.drop_work_dir()


def _register(ctx: JobContext, p: TextTrainTaggerParams, result, base_name: str) -> dict:
    name = unique_model_name(p.name, f"tagger-{ctx.job_id[-8:]}")
    model_id = register_model(
        ctx,
        name=name,
        kind=ModelKind.TOKEN_CLASSIFIER,
        path=result.model_dir,
        dataset_id=p.dataset_id,
        base=base_name,
        metrics=result.metrics,
        config={"labels": result.labels, "context_length": result.context_length, "n_params": result.n_params},
    )
    ctx.log(f"registered tagger {name} ({model_id}) with labels {', '.join(result.labels)}")
    return {
        "model_id": model_id,
        "model_name": name,
        "steps": result.steps,
        "labels": result.labels,
        "metrics": result.metrics,
        "report": result.report,
        "resumed_from_step": result.resumed_from_step,
        "n_params": result.n_params,
    }


def _base_row(ctx: JobContext, ref: str):
    """The base's registry row: a tagger to continue from or a hub encoder (admission checked it is one of them)."""
    for kind in (ModelKind.TOKEN_CLASSIFIER, ModelKind.ENCODER):
        try:
            return load_model_row(ctx, ref, kind)
        except UserError:
            continue
    raise UserError("unknown_model", f"model {ref!r} is not a tagger or an encoder in the registry (any more)")


@app.task(name=KIND.task, bind=True)
def run(self, job_id: str) -> str:
    return run_task(self.request, job_id, handle, POLICY)
