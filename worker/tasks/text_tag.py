"""``text.tag``: tag many texts with a registry (or hub) token classifier; one result row per text, stored batch by
batch, so a retried job skips the texts already tagged."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared.db import session_scope
from shared.models import ModelKind, TagResult
from shared.schemas.tagger import TextTagParams
from shared.textdata import TextDataError, read_prompts
from worker.celery_app import app
from worker.context import JobContext, UserError
from worker.devices import current_device
from worker.fencing import guard, ride_out
from worker.ml.tagger.infer import Entity, Tagger
from worker.ml.tagger.model import TaggerLoadError, load_tagger
from worker.tasks.common import (
    hub_online,
    kind_of,
    load_dataset_row,
    load_model_row,
    policy_of,
    run_task,
    weights_source,
)

logger = logging.getLogger(__name__)

KIND = kind_of(__name__)
POLICY = policy_of(KIND)


def _texts(ctx: JobContext, p: TextTagParams) -> list[tuple[str, str | None]]:
    """(text, your id) in input order."""
    if p.texts is not None:
        return [(t, None) if isinstance(t, str) else (t.text, t.id) for t in p.texts]
    ds, path = load_dataset_row(ctx, p.dataset_id)
    try:
        return [(q.prompt, None) for q in read_prompts(path, ds.format)]
    except TextDataError as exc:
        raise UserError("invalid_dataset", f"{p.dataset_id}: {exc}") from exc


def _stored(ctx: JobContext) -> set[int]:
    with session_scope() as s:
        return set(s.scalars(select(TagResult.text_index).where(TagResult.job_id == ctx.job_id)))


_INSERT_TAGS = pg_insert(TagResult.__table__).on_conflict_do_nothing()  # run once per row list (executemany)


def _store(ctx: JobContext, rows: list[dict]) -> None:
    """Insert result rows in a fenced transaction (a stale attempt writes nothing); stored rows are skipped."""
    rows = [{"job_id": ctx.job_id, "attempt": ctx.attempt, **r} for r in rows]

    def write() -> None:
        with session_scope() as s:
            guard(s, ctx.job_id, ctx.attempt)
            s.execute(_INSERT_TAGS, rows)

    ride_out(write, f"tag results of {ctx.job_id}")


def handle(ctx: JobContext) -> dict:
    p = TextTagParams.model_validate(ctx.params)
    model = load_model_row(ctx, p.model, ModelKind.TOKEN_CLASSIFIER)
    items = _texts(ctx, p)
    done = _stored(ctx)
    todo = [i for i in range(len(items)) if i not in done]
    if done:
        ctx.log(f"{len(done)} texts already tagged by an earlier attempt")
    device = current_device()
    try:
        net, tokenizer, labels = load_tagger(weights_source(model), device.torch_device, not hub_online())
    except (TaggerLoadError, OSError) as exc:
        raise UserError("model_unavailable", f"cannot load {model.name!r}: {exc}") from exc
    tagger = Tagger(net, tokenizer, labels, device, max_length=p.max_length)
    counts: dict[str, int] = {}

    def on_batch(idx: list[int], found: list[list[Entity]]) -> None:
        rows = []
        for j, ents in zip(idx, found, strict=True):
            i = todo[j]
            for e in ents:
                counts[e.label] = counts.get(e.label, 0) + 1
            rows.append(
                {"text_index": i, "text_id": items[i][1], "text": items[i][0], "entities": [e.as_dict() for e in ents]}
            )
        _store(ctx, rows)

    def report(step: int, total: int, **metrics: float) -> None:
        ctx.report(len(done) + step, len(items), **metrics)

    ctx.log(f"tagging {len(todo)} texts with {model.name} ({len(labels)} labels) on {device.name}")
    tagger.tag([items[i][0] for i in todo], batch_size=p.batch_size, report=report, on_batch=on_batch)
    return {"texts": len(items), "tagged_now": len(todo), "entities": counts, "model": model.name}


@app.task(name=KIND.task, bind=True)
def run(self, job_id: str) -> str:
    return run_task(self.request, job_id, handle, POLICY)
