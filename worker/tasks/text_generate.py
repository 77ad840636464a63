"""``text.generate``: bulk GPT-2 generation, results stored as prompts finish, done prompts skipped on retry."""

from __future__ import annotations

import logging

from sqlalchemy import func, select

from shared.db import session_scope
from shared.models import GenerationResult, ModelKind
from shared.schemas.params import PromptObject, TextGenerateParams
from shared.textdata import TextDataError, read_prompts
from worker.celery_app import app
from worker.context import JobContext, UserError
from worker.devices import current_device
from worker.ml.generate import Completion, GenerateConfig, GenerationOOM, PromptItem, generate
from worker.model_cache import cache
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
POLICY = policy_of(KIND, transient=(GenerationOOM,))


def _prompts(ctx: JobContext, p: TextGenerateParams) -> list[tuple[PromptItem, str | None]]:
    """Every prompt of the job with its own options, and its caller-given id."""
    if p.dataset_id:
        ds, path = load_dataset_row(ctx, p.dataset_id)
        try:
            return [(PromptItem(q.index, q.prompt), q.id) for q in read_prompts(path, ds.format)]
        except TextDataError as exc:
            raise UserError("invalid_dataset", str(exc)) from exc
    out = []
    for i, q in enumerate(p.prompts or []):
        if isinstance(q, PromptObject):
            stop = None if q.stop is None else tuple(q.stop)
            out.append((PromptItem(i, q.prompt, max_new_tokens=q.max_new_tokens, stop=stop), q.id))
        else:
            out.append((PromptItem(i, q), None))
    return out


def _done_indexes(job_id: str, sequences: int) -> set[int]:
    """Prompts whose every sequence is already stored (by an earlier attempt)."""
    with session_scope() as s:
        rows = s.execute(
            select(GenerationResult.prompt_index)
            .where(GenerationResult.job_id == job_id)
            .group_by(GenerationResult.prompt_index)
            .having(func.count() >= sequences)
        ).scalars()
        return set(rows)


def load_lm(source: str):
    from worker.ml.lm_loading import load_causal_lm

    device = current_device()
    try:
        return load_causal_lm(source, device, local_files_only=True)
    except OSError:
        if not hub_online():
            raise
        return load_causal_lm(source, device, local_files_only=False)


def _config(p: TextGenerateParams) -> GenerateConfig:
    return GenerateConfig(
        max_new_tokens=p.max_new_tokens,
        temperature=p.temperature,
        top_k=p.top_k or None,
        top_p=p.top_p,
        num_return_sequences=p.num_return_sequences,
        repetition_penalty=p.repetition_penalty,
        stop=list(p.stop),
        seed=p.seed,
        batch_size=p.batch_size,
    )


def handle(ctx: JobContext) -> dict:
    p = TextGenerateParams.model_validate(ctx.params)
    model = load_model_row(ctx, p.model, ModelKind.CAUSAL_LM)
    prompts = _prompts(ctx, p)
    done = _done_indexes(ctx.job_id, p.num_return_sequences)
    todo = [item for item, _ in prompts if item.index not in done]
    by_index = {item.index: (item.prompt, pid) for item, pid in prompts}
    ctx.log(f"{len(prompts)} prompts with {p.model}" + (f"; {len(done)} already done" if done else ""))
    source = weights_source(model)
    loads_before = cache.loads
    try:
        lm = cache.get(source, ModelKind.CAUSAL_LM, lambda: load_lm(source))
    except OSError as exc:
        raise UserError("model_unavailable", f"cannot load {p.model!r} (offline and not cached?): {exc}") from exc

    def store(chunk: list[Completion]) -> None:
        ctx.add_results(
            {
                "prompt_index": c.index,
                "sequence": c.sequence,
                "prompt": by_index[c.index][0],
                "prompt_id": by_index[c.index][1],
                "text": c.text,
                "tokens": c.tokens,
                "finish_reason": c.finish_reason,
            }
            for c in chunk
        )

    def report(step: int, total: int, **metrics: float) -> None:
        ctx.report(len(done) + step, len(prompts), **metrics)

    ctx.report(len(done), len(prompts))
    out = generate(lm, todo, _config(p), report=report, on_chunk=store)
    return {
        "prompts": len(prompts),
        "generated_now": len(out),
        "new_tokens": sum(c.tokens for c in out),
        "skipped_done": len(done),
        "model": p.model,
        "model_cache": "miss" if cache.loads > loads_before else "hit",
    }


@app.task(name=KIND.task, bind=True)
def run(self, job_id: str) -> str:
    return run_task(self.request, job_id, handle, POLICY)
