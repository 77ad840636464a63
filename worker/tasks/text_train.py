"""``text.train``: fine-tune a GPT-2 or train one from scratch; a retried job resumes; the model is registered."""

from __future__ import annotations

import logging

import torch

from shared.defaults import TEXT_TRAIN
from shared.models import ModelKind
from shared.schemas.params import TextTrainParams
from shared.textdata import TextDataError, read_documents
from worker.celery_app import app
from worker.checkpoint_sync import stored_checkpoints
from worker.context import JobContext, UserError
from worker.devices import current_device
from worker.ml.common import Device, config_from_params
from worker.ml.lm.data import DatasetTooSmall
from worker.ml.lm.models import BlockSizeTooLarge
from worker.ml.lm.train import LMTrainConfig, train_lm
from worker.tasks.common import (
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


def _devices(params: dict, device: Device) -> int:
    """GPUs a job holds (worker.tasks.common.holding_devices): one per process."""
    return _num_processes(TextTrainParams.model_validate(params).num_processes, device)


POLICY = policy_of(KIND, devices=_devices)


def _texts(ctx: JobContext, dataset_id: str) -> list[str]:
    ds, path = load_dataset_row(ctx, dataset_id)
    try:
        docs = read_documents(path, ds.format)
    except TextDataError as exc:
        raise UserError("invalid_dataset", f"{dataset_id}: {exc}") from exc
    if not docs:
        raise UserError("invalid_dataset", f"{dataset_id} has no training text")
    return docs


def handle(ctx: JobContext) -> dict:
    p = TextTrainParams.model_validate(ctx.params)
    base_name = base = "scratch"
    if p.base_model != "scratch":
        model = load_model_row(ctx, p.base_model, ModelKind.CAUSAL_LM)
        base_name, base = model.name, weights_source(model)
    train = _texts(ctx, p.dataset_id)
    val = _texts(ctx, p.validation_dataset_id) if p.validation_dataset_id else None
    ctx.log(f"training {base_name} on {len(train)} documents" + (f", {len(val)} for validation" if val else ""))
    device = current_device()
    procs = _num_processes(p.num_processes, device)
    with training_errors(base_name, DatasetTooSmall, BlockSizeTooLarge):
        cfg = config_from_params(
            LMTrainConfig, p.model_dump(), base_model=base, size=p.size or TEXT_TRAIN.size, num_processes=procs
        )
        root = ctx.work_dir / "lm"
        with stored_checkpoints(ctx, root):
            result = train_lm(cfg, train, val, root, device, report=ctx.report, log=ctx.log)
    try:
        return _register(ctx, p, result, base_name)
    finally:
        ctx.drop_work_dir()


def _register(ctx: JobContext, p: TextTrainParams, result, base_name: str) -> dict:
    name = unique_model_name(p.name, f"gpt2-{ctx.job_id[-8:]}")
    model_id = register_model(
        ctx,
        name=name,
        kind=ModelKind.CAUSAL_LM,
        path=result.model_dir,
        dataset_id=p.dataset_id,
        base=base_name,
        metrics=result.metrics,
        config={"context_length": _context(result.model_dir), "n_params": result.n_params},
    )
    ctx.log(f"registered model {name} ({model_id})")
    return {
        "model_id": model_id,
        "model_name": name,
        "steps": result.steps,
        "metrics": result.metrics,
        "resumed_from_step": result.resumed_from_step,
        "n_params": result.n_params,
    }


def _num_processes(asked: int | str, device: Device) -> int:
    """``"auto"``: every GPU of this worker from its device on (1 on a CPU worker); a count it cannot honour is a
    user error, not a job that waits for GPUs that do not exist."""
    gpus = torch.cuda.device_count() - (device.torch_device.index or 0) if device.is_cuda else 0
    if asked == "auto":
        return max(1, gpus)
    if device.is_cuda and asked > gpus:
        raise UserError("invalid_params", f"num_processes {asked}: this worker has {gpus} GPU(s) from {device.name}")
    return int(asked)


def _context(model_dir) -> int:
    from worker.ml.lm.models import context_length

    return context_length(model_dir)


@app.task(name=KIND.task, bind=True)
def run(self, job_id: str) -> str:
    return run_task(self.request, job_id, handle, POLICY)
