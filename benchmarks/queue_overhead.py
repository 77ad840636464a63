"""Queue overhead: tiny jobs through the full path vs a bare Celery round trip on the same Redis.

Full path: HTTP POST → Postgres row → Celery message → worker claims in Postgres, generates one token with a tiny
model (warm cache), stores the result and status → HTTP poll sees ``succeeded``. Every job names a model of its own
(registered names for the same weights, so the worker's model cache serves them all): jobs of other models cannot
share a batch (cross-job batching is measured by ``benchmarks.small_jobs``), so this is the per-job cost.
Baseline: a no-op Celery task with a Redis result backend, same broker, one worker process each. Prints p50/p95
latency, jobs/s, and ratios. Everything it starts is stopped on success, failure or Ctrl-C.

    python -m benchmarks.queue_overhead [--jobs 200]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from benchmarks.live import Platform, pct, seconds
from tests.tiny import make_tiny_gpt2


def run_full_path(p: Platform, n: int) -> dict:
    from shared.registration import register_local_model

    weights = str(make_tiny_gpt2(p.root / "tiny"))
    models = [register_local_model(f"bench-tiny-{i}", weights).name for i in range(n + 1)]
    user = p.stack.make_user("bench")
    p.worker("bench")
    base = p.web(user.token)

    def body(i: int) -> dict:
        params = {"model": models[i], "prompts": ["hi"], "max_new_tokens": 1}
        return {"kind": "text.generate", "params": params}

    warm = p.http.post(f"{base}/jobs", json=body(0), timeout=60).json()  # loads the model into the worker's cache
    p.wait_jobs([warm["id"]])
    t0 = time.perf_counter()
    ids = [p.http.post(f"{base}/jobs", json=body(1 + i), timeout=60).json()["id"] for i in range(n)]
    jobs = p.wait_jobs(ids)
    wall = time.perf_counter() - t0
    assert all(j["status"] == "succeeded" for j in jobs), [j for j in jobs if j["status"] != "succeeded"][:1]
    assert not any(j["summary"].get("batched_with") for j in jobs)  # every job ran alone
    lat = [seconds(j["finished_at"]) - seconds(j["created_at"]) for j in jobs]
    return {"p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "per_s": n / wall}


def run_bare_celery(p: Platform, n: int) -> dict:
    cmd = [sys.executable, "-m", "celery", "-A", "benchmarks.celery_echo", "worker", "-Q", "echo", "-c", "1"]
    cmd += ["--loglevel", "WARNING", "-n", "echo@%h", "--without-gossip", "--without-mingle"]
    proc = subprocess.Popen(cmd, env=p.stack.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p.webs.append(proc)  # stopped with the rest, whatever happens
    from benchmarks.celery_echo import echo

    echo.delay("warm").get(timeout=180)  # tolerates a slow start
    t0 = time.perf_counter()
    sent = [(time.perf_counter(), echo.delay(str(i))) for i in range(n)]
    lat = []
    for started, res in sent:
        res.get(timeout=120)
        lat.append(time.perf_counter() - started)
    wall = time.perf_counter() - t0
    return {"p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "per_s": n / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200)
    args = ap.parse_args()
    with Platform(prefix="gq-queue-bench-") as p:
        full = run_full_path(p, args.jobs)
        for w in p.workers:
            w.stop()  # the genqueue worker must not compete with the bare one
        bare = run_bare_celery(p, args.jobs)
    print(f"jobs: {args.jobs}, one worker process each, same Redis")
    print(
        f"genqueue full path : p50 {full['p50'] * 1000:7.1f} ms  p95 {full['p95'] * 1000:7.1f} ms  "
        f"{full['per_s']:6.1f} jobs/s"
    )
    print(
        f"bare Celery noop   : p50 {bare['p50'] * 1000:7.1f} ms  p95 {bare['p95'] * 1000:7.1f} ms  "
        f"{bare['per_s']:6.1f} tasks/s"
    )
    print(f"ratio genqueue/bare throughput: {full['per_s'] / bare['per_s']:.2f}")
    print(f"ratio per-job service time genqueue/bare: {bare['per_s'] / full['per_s']:.2f}")


if __name__ == "__main__":
    main()
