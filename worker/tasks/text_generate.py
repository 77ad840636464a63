"""``text.generate``: bulk GPT-2 generation, results stored as prompts finish, done prompts skipped on retry."""

from __future__ import annotations

import logging
import time

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from shared.db import session_scope
from shared.kinds import batch_key
from shared.models import GenerationResult, Job, ModelKind
from shared.schemas.params import PromptObject, TextGenerateParams
from shared.settings import get_settings
from shared.textdata import TextDataError, read_prompts
from worker.celery_app import app
from worker.context import JobContext, UserError
from worker.devices import current_device
from worker.ml.lm.continuous import JOIN_SECONDS, generate_streams
from worker.ml.lm.gen_base import Stream
from worker.ml.lm.generate import (
    CONTINUOUS_MODEL_TYPES,
    Completion,
    GenerateConfig,
    GenerationOOM,
    PromptItem,
    generate,
)
from worker.model_cache import cache
from worker.runtime import TransientError, claim_more, process, settle, settle_succeeded
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
    from worker.ml.lm.loading import load_causal_lm

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


MAX_JOIN = 64  # jobs claimed by one join call at most
WATCH_SECONDS = 0.5  # how often the cancel flags of the jobs that joined a batch are read


class _Run:
    """One job's part of a (possibly shared) generation: its prompts, what was stored before, its callbacks."""

    def __init__(self, ctx: JobContext, p: TextGenerateParams, joiner: _Joiner | None = None):
        self.ctx, self.p, self.joiner = ctx, p, joiner
        self.batch_of = joiner.first.ctx.job_id if joiner else None
        self.batch = joiner  # the batch whose ``ended`` writes this job's success (the first job's is set by it)
        self.reported = -1
        # The model is loaded and the engine reports every REPORT_SECONDS from now on: this job's first log line
        # and progress go out with its first flush (or, for a short job, with its final commit): one commit fewer.
        ctx.defer_flush()
        self.prompts = _prompts(ctx, p)
        # only an earlier attempt can have stored results
        self.done = _done_indexes(ctx.job_id, p.num_return_sequences) if ctx.attempt > 1 else set()
        # a prompt's own max_new_tokens / stop, else the job's: the job's config goes with its stream (or, alone, to
        # ``generate``), so a prompt left at None takes the job's value in the engine, shared batch or not
        self.todo = [item for item, _ in self.prompts if item.index not in self.done]
        self.by_index = {item.index: (item.prompt, pid) for item, pid in self.prompts}
        self.generated = self.new_tokens = 0
        self.model_cache = "hit"
        ctx.log(
            f"{len(self.prompts)} prompts with {p.model}"
            + (f"; {len(self.done)} already done" if self.done else "")
            + (f"; in the batch of {self.batch_of}" if self.batch_of else "")
        )

    def store(self, chunk: list[Completion]) -> None:
        """Results of finished prompts; the job's last ones wait for its final status write (one commit)."""
        last = self.generated + len(chunk) == len(self.todo) * self.p.num_return_sequences
        self.ctx.add_results(
            (
                {
                    "prompt_index": c.index,
                    "sequence": c.sequence,
                    "prompt": self.by_index[c.index][0],
                    "prompt_id": self.by_index[c.index][1],
                    "text": c.text,
                    "tokens": c.tokens,
                    "finish_reason": c.finish_reason,
                }
                for c in chunk
            ),
            defer=last,
        )
        self.generated += len(chunk)
        self.new_tokens += sum(c.tokens for c in chunk)

    def report(self, step: int, total: int, **metrics: float) -> None:
        """Progress to the job row; a joined job writes only when it moved (dozens of them share a batch), and
        its cancel flag is read with every other joined job's in one query (:meth:`_Joiner.watch`)."""
        if self.joiner is None or step != self.reported:
            self.reported = step
            self.ctx.report(len(self.done) + step, len(self.prompts), **metrics)
        else:
            self.joiner.watch()
            self.ctx.check_stop()

    def summary(self) -> dict:
        out = {
            "prompts": len(self.prompts),
            "generated_now": self.generated,
            "new_tokens": self.new_tokens,
            "skipped_done": len(self.done),
            "model": self.p.model,
            "model_cache": self.model_cache,
        }
        if self.batch_of:
            out["batched_with"] = self.batch_of
        return out

    def stream(self) -> Stream:
        self.report(0, len(self.todo))
        return Stream(self.todo, self.report, self.store, self.end, _config(self.p))

    def end(self, error: BaseException | None) -> None:
        if error is None and self.batch is not None:
            self.batch.succeeded.append(self)  # written with the others that ended in this flush (_Joiner.ended)
            return
        settle(self.ctx, POLICY, summary=None if error else self.summary(), error=error)


def _load(ctx: JobContext, p: TextGenerateParams):
    model = load_model_row(ctx, p.model, ModelKind.CAUSAL_LM)
    source = weights_source(model)
    loads_before = cache.loads
    try:
        lm = cache.get(source, ModelKind.CAUSAL_LM, lambda: load_lm(source))
    except OSError as exc:
        raise UserError("model_unavailable", f"cannot load {p.model!r} (offline and not cached?): {exc}") from exc
    return source, lm, "miss" if cache.loads > loads_before else "hit"


def handle(ctx: JobContext) -> dict | None:
    p = TextGenerateParams.model_validate(ctx.params)
    source, lm, cached = _load(ctx, p)
    cfg = _config(p)
    if get_settings().coalesce_seconds <= 0 or lm.model.config.model_type not in CONTINUOUS_MODEL_TYPES:
        run = _Run(ctx, p)
        run.model_cache = cached
        run.ctx.report(len(run.done), len(run.prompts))
        generate(lm, run.todo, cfg, report=run.report, on_chunk=run.store)
        return run.summary()
    joiner = _Joiner(ctx, p, source, lm)
    joiner.first.model_cache = cached
    try:
        generate_streams(lm, [joiner.first.stream()], cfg, joiner, ended=joiner.ended)
    except Exception as exc:  # engine-wide (out of memory with one row, a bug): every job of the batch ends with it
        logger.warning("batch of %s failed: %s", ctx.job_id, exc)
        joiner.ended()  # those that finished before it did succeed
        for other in joiner.unsettled():
            other.end(exc)
        if not ctx.settled:
            raise
    return None  # every job of the batch, this one included, was ended by its stream's on_end


class _Joiner:
    """The engine's ``join`` callback: claims queued jobs that can share this batch, while coalescing is open."""

    def __init__(self, ctx: JobContext, p: TextGenerateParams, source: str, lm):
        self.source, self.lm = source, lm
        self.succeeded: list[_Run] = []  # runs whose streams ended well in the engine's current flush
        self.first = _Run(ctx, p)
        self.first.batch = self
        self.key = batch_key(KIND.name, p)  # the jobs that may join: the same model ref (shared/kinds.py)
        self.until = time.monotonic() + get_settings().coalesce_seconds
        # A batch that began with no other job of its key waiting does not look for some during its first join
        # interval: a short job alone (the common tiny job) then costs no join query at its end; one that runs on
        # looks as usual (the engine asks at most every JOIN_SECONDS anyway).
        self.quiet_until = time.monotonic() + JOIN_SECONDS
        self.runs: list[_Run] = [self.first]
        self.sources = {ctx.owner_id: source}
        self.last_watch = 0.0

    def __call__(self, free_rows: int) -> list[Stream]:
        now = time.monotonic()
        if now > self.until or process.shutdown_pending:
            return []
        if not self.first.ctx.others_waiting and now < self.quiet_until:
            return []  # nobody was waiting to join when this batch began, a moment ago: not worth a claim query
        limit = min(MAX_JOIN, max(1, free_rows // self.first.p.num_return_sequences))
        try:
            joined = claim_more(self.first.ctx, POLICY, self.key, limit)
        except OperationalError as exc:  # the database is briefly away: the batch goes on without new jobs
            logger.warning("could not claim jobs into the batch of %s: %s", self.first.ctx.job_id, exc)
            return []
        streams = []
        for ctx in joined:
            try:
                run = self._prepare(ctx)
                streams.append(run.stream())  # its first report may already see a cancel
            except Exception as exc:  # noqa: BLE001 - its params, model or dataset: that job alone ends with it
                settle(ctx, POLICY, error=exc)
                continue
            self.runs.append(run)
        return streams

    def _prepare(self, ctx: JobContext) -> _Run:
        p = TextGenerateParams.model_validate(ctx.params)
        if ctx.owner_id not in self.sources:  # the same ref may be another model (or none) for another user
            self.sources[ctx.owner_id] = weights_source(load_model_row(ctx, p.model, ModelKind.CAUSAL_LM))
        if self.sources[ctx.owner_id] != self.source:
            raise TransientError(f"{p.model!r} resolves to other weights than its batch's; retried alone")
        return _Run(ctx, p, joiner=self)

    def watch(self) -> None:
        """Notice cancel requests of the joined jobs (one query, at most every ``WATCH_SECONDS``)."""
        now = time.monotonic()
        if now - self.last_watch < WATCH_SECONDS:
            return
        self.last_watch = now
        joined = {run.ctx.job_id: run.ctx for run in self.runs[1:] if not run.ctx.settled}
        if not joined:
            return
        try:
            with session_scope() as s:
                asked = s.scalars(select(Job.id).where(Job.id.in_(list(joined)), Job.cancel_requested.is_(True)))
                for job_id in asked:
                    joined[job_id].stop_reason = joined[job_id].stop_reason or "cancelled"
        except OperationalError as exc:  # the database is briefly away: the heartbeat notices the cancel later
            logger.warning("could not read the cancel flags of the batch of %s: %s", self.first.ctx.job_id, exc)

    def ended(self) -> None:
        """The engine's ``ended`` callback: the jobs whose streams ended well in this flush end ``succeeded``
        together (:func:`worker.runtime.settle_succeeded`: one transaction for all of them)."""
        done, self.succeeded = self.succeeded, []
        if done:
            settle_succeeded([(run.ctx, run.summary()) for run in done], POLICY)

    def unsettled(self) -> list[_Run]:
        return [run for run in self.runs if not run.ctx.settled and run not in self.succeeded]


@app.task(name=KIND.task, bind=True)
def run(self, job_id: str) -> str:
    return run_task(self.request, job_id, handle, POLICY)
