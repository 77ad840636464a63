"""``image.train_gan``: train a DCGAN or MLP GAN; sample grids per step as artifacts; registers the generator."""

from __future__ import annotations

import logging

from shared.imagedata import BUILTIN_SOURCES
from shared.models import ModelKind
from shared.schemas.params import GanTrainParams
from worker.celery_app import app
from worker.checkpoint_sync import stored_checkpoints
from worker.context import JobContext, UserError
from worker.devices import gan_device
from worker.ml.common import config_from_params
from worker.ml.gan import GanTrainConfig, ImageDatasetError, load_images, train_gan
from worker.tasks.common import kind_of, load_dataset_row, policy_of, register_model, run_task, unique_model_name

logger = logging.getLogger(__name__)

KIND = kind_of(__name__)
POLICY = policy_of(KIND)


def _images(ctx: JobContext, p: GanTrainParams):
    source = p.dataset
    if p.dataset not in BUILTIN_SOURCES:
        _, path = load_dataset_row(ctx, p.dataset)
        source = str(path)
    try:
        return load_images(source, p.image_size, p.channels)
    except ImageDatasetError as exc:
        raise UserError("invalid_dataset", str(exc)) from exc


def handle(ctx: JobContext) -> dict:
    p = GanTrainParams.model_validate(ctx.params)
    images = _images(ctx, p)
    device = gan_device()
    ctx.log(
        f"{p.architecture} on {len(images)} images of {p.channels}×{p.image_size}² ({p.dataset}), "
        f"device {device.name}{' bf16' if device.autocast_dtype is not None else ''}"
    )
    cfg = config_from_params(GanTrainConfig, p.model_dump())

    def on_sample(step: int, png: bytes) -> None:
        ctx.add_artifact(f"samples-step{step:07d}.png", png, role="sample", step=step, content_type="image/png")

    root = ctx.work_dir / "gan"
    with stored_checkpoints(ctx, root):
        result = train_gan(cfg, images, root, device, report=ctx.report, on_sample=on_sample, log=ctx.log)
    try:
        return _register(ctx, p, cfg, result)
    finally:
        ctx.drop_work_dir()


def _register(ctx: JobContext, p: GanTrainParams, cfg: GanTrainConfig, result) -> dict:
    name = unique_model_name(p.name, f"{p.architecture}-{ctx.job_id[-8:]}")
    dataset_id = None if p.dataset in BUILTIN_SOURCES else p.dataset
    model_id = register_model(
        ctx,
        name=name,
        kind=ModelKind.GAN_GENERATOR,
        path=result.generator_dir,
        dataset_id=dataset_id,
        base=p.dataset,
        metrics=result.metrics,
        config=cfg.spec().__dict__ | {"dataset": p.dataset},
    )
    ctx.log(f"registered generator {name} ({model_id})")
    return {
        "model_id": model_id,
        "model_name": name,
        "steps": result.steps,
        "metrics": result.metrics,
        "resumed_from_step": result.resumed_from_step,
    }


@app.task(name=KIND.task, bind=True)
def run(self, job_id: str) -> str:
    return run_task(self.request, job_id, handle, POLICY)
