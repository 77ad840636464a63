"""Soak: N mixed jobs through real workers while they are SIGKILLed at random and Redis restarts in the middle.

Embedded PostgreSQL and Redis (the same code as the tests), ``--workers`` Celery workers kept alive by
``genqueue up``'s :class:`~shared.cli.up.Supervisor`, jobs submitted through the real Flask API. About 85 % of the
jobs are ``text.generate`` on a tiny GPT-2 (5-30 prompts, random batch sizes) and 15 % small ``text.train`` runs
with checkpoints. Half the jobs are submitted at the start; once a quarter of them are done, Redis is stopped, the
other half is submitted while it is down, and Redis is started again. Meanwhile, every few seconds, a random worker
is SIGKILLed: either its whole process group (main process and pool; the supervisor starts a new one) or only its
pool process, usually in the middle of a job (Celery forks a new one). Kills stop when every job is terminal.

At the end it checks, in Postgres:

- **lost**: jobs not terminal when the run ends, plus jobs that ended ``failed``/``cancelled`` (nothing here is
  expected to fail: every job may use 20 attempts), plus succeeded generation jobs missing a prompt's result;
- **duplicated**: result rows beyond one per (prompt, sequence), results for prompts the job does not have, models
  registered more than once by one training job, and jobs that recorded more than one terminal status.

and prints ``jobs N, kills K, lost L, duplicated D`` (all four computed), then the details.

    python -m benchmarks.soak [--jobs 200] [--workers 3] [--kill-every 6] [--seed 0] [--keep]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import text

from tests.stack import Stack, use_isolated_settings

ROOT = Path(tempfile.mkdtemp(prefix="gq-soak-"))
use_isolated_settings(ROOT)  # the fault suite's settings: a lost worker is noticed within seconds

TERMINAL = ("succeeded", "failed", "cancelled")
MAX_ATTEMPTS = 20


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def job_specs(n: int, rng: random.Random, model: str, dataset: str) -> list[dict]:
    specs = []
    for i in range(n):
        if rng.random() < 0.15:
            steps = rng.randint(30, 80)
            params = {
                "base_model": "scratch",
                "size": "tiny",
                "vocab_size": 512,
                "dataset_id": dataset,
                "block_size": 64,
                "batch_size": 8,
                "max_steps": steps,
                "eval_every": 1000,
                "checkpoint_every": rng.choice([10, 15, 20]),
                "learning_rate": 2e-3,
                "warmup_steps": 5,
                "name": f"soak-{i}",
            }
            specs.append({"kind": "text.train", "params": {**params, "max_attempts": MAX_ATTEMPTS}})
        else:
            prompts = [f"soak job {i} prompt {k} says" for k in range(rng.randint(5, 30))]
            params = {
                "model": model,
                "prompts": prompts,
                "max_new_tokens": rng.randint(8, 24),
                "batch_size": rng.choice([1, 2, 4, 8]),
                "seed": i,
                "max_attempts": MAX_ATTEMPTS,
            }
            specs.append({"kind": "text.generate", "params": params})
    return specs


def submit_all(client, specs: list[dict]) -> list[str]:
    ids = []
    for spec in specs:
        resp = client.post("/api/v1/jobs", json=spec)
        if resp.status_code != 201:
            raise SystemExit(f"submission refused: {resp.status_code} {resp.get_json()}")
        ids.append(resp.get_json()["id"])
    return ids


def statuses(stack: Stack) -> dict[str, str]:
    with stack.engine().connect() as c:
        return dict(c.execute(text("SELECT id, status FROM jobs")).all())


class Chaos(threading.Thread):
    """Every ``every`` ± 50 % seconds, SIGKILL a random worker's whole group or just its pool process."""

    def __init__(self, sup, rng: random.Random, every: float):
        super().__init__(daemon=True, name="chaos")
        self.sup, self.rng, self.every = sup, rng, every
        self.stop_event = threading.Event()
        self.kills = {"worker": 0, "pool process": 0}
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop_event.wait(self.every * self.rng.uniform(0.5, 1.5)):
            with self.lock:
                self._kill_one()

    def _kill_one(self) -> None:
        import psutil

        name = self.rng.choice(sorted(self.sup.children))
        proc = self.sup.children[name][1]
        if proc.poll() is not None:
            return
        try:
            children = psutil.Process(proc.pid).children()
        except psutil.NoSuchProcess:
            return
        try:
            children = [c for c in children if c.status() != psutil.STATUS_ZOMBIE]  # killed before, not yet reaped
        except psutil.NoSuchProcess:
            return
        if children and self.rng.random() < 0.5:
            victim = self.rng.choice(children)
            try:
                os.kill(victim.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            self.kills["pool process"] += 1
            log(f"SIGKILL pool process {victim.pid} of {name}")
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            self.kills["worker"] += 1
            log(f"SIGKILL worker {name} (pid {proc.pid}, whole group)")

    @property
    def total(self) -> int:
        return sum(self.kills.values())


def check(stack: Stack, ids: list[str], specs: list[dict]) -> dict:
    """Count lost and duplicated work from what Postgres holds."""
    expected = {job_id: spec for job_id, spec in zip(ids, specs, strict=True)}
    with stack.engine().connect() as c:
        jobs = {r.id: r for r in c.execute(text("SELECT id, kind, status, attempt, error FROM jobs")).all()}
        results = {
            r.job_id: r
            for r in c.execute(
                text(
                    "SELECT job_id, count(*) AS rows, count(DISTINCT (prompt_index, sequence)) AS distinct_rows, "
                    "max(prompt_index) AS max_index, count(DISTINCT prompt_index) AS prompts "
                    "FROM generation_results GROUP BY job_id"
                )
            ).all()
        }
        models = dict(
            c.execute(text("SELECT job_id, count(*) FROM models WHERE job_id IS NOT NULL GROUP BY job_id")).all()
        )
        finals = dict(
            c.execute(
                text(
                    "SELECT job_id, count(*) FROM job_events WHERE type = 'status' "
                    "AND data->>'status' IN ('succeeded', 'failed', 'cancelled') GROUP BY job_id"
                )
            ).all()
        )
    out = {
        "not_terminal": [],
        "failed": [],
        "missing_results": [],
        "dup_rows": 0,
        "stray_rows": 0,
        "dup_models": 0,
        "dup_finals": 0,
        "attempts": {},
    }
    for job_id, spec in expected.items():
        job = jobs.get(job_id)
        if job is None or job.status not in TERMINAL:
            out["not_terminal"].append(job_id)
            continue
        out["attempts"][job.attempt] = out["attempts"].get(job.attempt, 0) + 1
        if job.status != "succeeded":
            out["failed"].append((job_id, job.status, job.error))
        out["dup_finals"] += max(0, finals.get(job_id, 0) - 1)
        if spec["kind"] == "text.generate":
            n = len(spec["params"]["prompts"])
            r = results.get(job_id)
            rows, distinct, max_index, prompts = (
                (r.rows, r.distinct_rows, r.max_index, r.prompts) if r else (0, 0, -1, 0)
            )
            out["dup_rows"] += rows - distinct
            out["stray_rows"] += max(0, max_index - (n - 1))
            if job.status == "succeeded" and prompts != n:
                out["missing_results"].append((job_id, n - prompts))
        else:
            out["dup_models"] += max(0, models.get(job_id, 0) - 1)
            if job.status == "succeeded" and models.get(job_id, 0) != 1:
                out["missing_results"].append((job_id, "no model"))
    lost_ids = set(out["not_terminal"]) | {j for j, *_ in out["failed"]} | {j for j, _ in out["missing_results"]}
    out["lost"] = len(lost_ids)
    out["duplicated"] = out["dup_rows"] + out["stray_rows"] + out["dup_models"] + out["dup_finals"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--kill-every", type=float, default=6.0, help="mean seconds between kills")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=3600, help="give up (and count what is left as lost) after")
    ap.add_argument("--keep", action="store_true", help=f"keep the data and logs ({ROOT})")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()

    stack = Stack(ROOT).start()
    sup = chaos = None
    try:
        from shared.cli.up import Supervisor, worker_command
        from shared.corpus import stdlib_corpus_text
        from shared.registration import register_local_model
        from tests.tiny import make_tiny_gpt2
        from web.app import create_app

        model = register_local_model("soak-tiny", str(make_tiny_gpt2(ROOT / "tiny-gpt2"))).name
        user = stack.make_user("soak")
        client = create_app({"TESTING": True}).test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {user.token}"
        upload = client.post(
            "/api/v1/datasets",
            content_type="multipart/form-data",
            data={"file": (io.BytesIO(stdlib_corpus_text(max_chars=60_000).encode()), "c.txt")},
        )
        dataset = upload.get_json()["id"]
        specs = job_specs(args.jobs, rng, model, dataset)
        kinds = sum(1 for s in specs if s["kind"] == "text.train")
        log(
            f"{args.jobs} jobs ({args.jobs - kinds} text.generate, {kinds} text.train), {args.workers} workers, "
            f"a kill every ~{args.kill_every:g}s; data and logs in {ROOT}"
        )

        sup = Supervisor(stack.env(GENQUEUE_WORKER_CONCURRENCY="1"), log_dir=ROOT)
        for i in range(args.workers):
            sup.start(f"worker{i + 1}", worker_command(f"soak{i + 1}", concurrency=1))
        half = args.jobs // 2
        ids = submit_all(client, specs[:half])
        chaos = Chaos(sup, rng, args.kill_every)
        chaos.start()

        redis_restarted = False
        deadline = started + args.timeout
        while time.monotonic() < deadline:
            with chaos.lock:
                sup.watch_once()
            try:
                st = statuses(stack)
            except Exception as exc:  # noqa: BLE001 - keep going; the database is not restarted here
                log(f"status poll failed: {exc}")
                time.sleep(1)
                continue
            done = sum(1 for j in ids if st.get(j) in TERMINAL)
            if not redis_restarted and done >= args.jobs // 4:
                log(f"{done} jobs done: stopping Redis, submitting {args.jobs - half} jobs while it is down")
                port = stack.redis.port
                stack.redis.stop()
                ids += submit_all(client, specs[half:])
                time.sleep(3)
                stack.redis.port = port
                stack.redis.start()
                redis_restarted = True
                log("Redis is back")
            if redis_restarted and done == len(ids) == args.jobs:
                break
            time.sleep(1)
        chaos.stop_event.set()
        chaos.join()
        result = check(stack, ids, specs[: len(ids)])
        result["not_terminal"] += [None] * (args.jobs - len(ids))  # never submitted: count them as lost
        lost = result["lost"] + (args.jobs - len(ids))
        wall = time.monotonic() - started
        print(f"jobs {args.jobs}, kills {chaos.total}, lost {lost}, duplicated {result['duplicated']}", flush=True)
        print(
            f"  kills: {chaos.kills}; worker restarts by the supervisor: {sup.restarts}; Redis restarted: "
            f"{redis_restarted}; wall {wall:.0f}s",
            flush=True,
        )
        print(
            f"  attempts per job: {dict(sorted(result['attempts'].items()))}; not terminal: "
            f"{len(result['not_terminal'])}; failed: {result['failed'][:5]}; missing results: "
            f"{result['missing_results'][:5]}",
            flush=True,
        )
        print(
            f"  duplicate rows {result['dup_rows']}, stray rows {result['stray_rows']}, duplicate models "
            f"{result['dup_models']}, duplicate terminal statuses {result['dup_finals']}",
            flush=True,
        )
        return 0 if lost == 0 and result["duplicated"] == 0 else 1
    finally:
        if chaos is not None:
            chaos.stop_event.set()
        if sup is not None:
            sup.stop(timeout=20)
        stack.stop()
        if not args.keep:
            shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
