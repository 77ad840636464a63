"""``image.generate``: sample PNGs (with provenance metadata) from a registry generator, plus a grid and a zip."""

from __future__ import annotations

import logging

from shared.models import ModelKind
from shared.provenance import archive_json, provenance
from shared.schemas.params import ImageGenerateParams
from shared.timeutil import iso, utcnow
from worker.celery_app import app
from worker.context import JobContext
from worker.devices import current_device
from worker.ml.gan import generate_images, zip_pngs
from worker.tasks.common import kind_of, load_model_row, policy_of, run_task, weights_source

logger = logging.getLogger(__name__)

KIND = kind_of(__name__)
POLICY = policy_of(KIND)


def handle(ctx: JobContext) -> dict:
    p = ImageGenerateParams.model_validate(ctx.params)
    model = load_model_row(ctx, p.model, ModelKind.GAN_GENERATOR)
    prov = provenance(
        model_id=model.id, model_name=model.name, job_id=ctx.job_id, seed=p.seed, created_at=iso(utcnow())
    )
    meta = {k: prov[k] for k in ("job_id", "model_id", "model_name", "genqueue_version", "created_at")}
    out = generate_images(weights_source(model), p.count, p.seed, current_device(), meta)
    names = [f"image-{i:04d}.png" for i in range(p.count)]
    for i, (name, png) in enumerate(zip(names, out.pngs, strict=True)):
        ctx.add_artifact(name, png, role="image", content_type="image/png")
        ctx.report(i + 1, p.count)
    if p.grid:
        ctx.add_artifact("grid.png", out.grid_png, role="grid", content_type="image/png")
    archive = zip_pngs(out.pngs, names, extra={"provenance.json": archive_json(prov, names)})
    ctx.add_artifact(f"images-{ctx.job_id}.zip", archive, role="archive", content_type="application/zip")
    return {"images": p.count, "seed": p.seed, "model": model.name}


@app.task(name=KIND.task, bind=True)
def run(self, job_id: str) -> str:
    return run_task(self.request, job_id, handle, POLICY)
