"""Queue overhead: tiny jobs through the full path vs a bare Celery round trip on the same Redis.

Full path: HTTP POST → Postgres row → Celery message → worker claims in Postgres, generates one token with a tiny
model (warm cache), stores the result and status → HTTP poll sees ``succeeded``. Baseline: a no-op Celery task
with a Redis result backend, same broker, one worker process each. Prints p50/p95 latency, jobs/s, and ratios.

    python -m benchmarks.queue [--jobs 200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GENQUEUE_DATA_DIR", tempfile.mkdtemp(prefix="gq-bench-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import requests

from tests.stack import Stack, WorkerProcess
from tests.tiny import make_tiny_gpt2


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def start_web(stack: Stack, port: int) -> subprocess.Popen:
    from shared.cli.up import web_command

    proc = subprocess.Popen(
        web_command("127.0.0.1", port, workers=2), env=stack.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(200):
        try:
            requests.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1)
            return proc
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("web did not start")


def run_full_path(stack: Stack, n: int, root: Path) -> dict:
    from shared.embedded import free_port
    from shared.registration import register_local_model

    model = register_local_model("bench-tiny", str(make_tiny_gpt2(root / "tiny")))
    user = stack.make_user("bench")
    port = free_port()
    web = start_web(stack, port)
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {user.token}"
    base = f"http://127.0.0.1:{port}/api/v1"
    body = {"kind": "text.generate", "params": {"model": model.name, "prompts": ["hi"], "max_new_tokens": 1}}
    try:
        warm = http.post(f"{base}/jobs", json=body).json()  # loads the model into the worker's cache
        _wait(http, base, [warm["id"]])
        t0 = time.perf_counter()
        ids = [http.post(f"{base}/jobs", json=body).json()["id"] for _ in range(n)]
        jobs = _wait(http, base, ids)
        wall = time.perf_counter() - t0
    finally:
        web.terminate()
        web.wait()
    lat = [_seconds(j["finished_at"]) - _seconds(j["created_at"]) for j in jobs]
    assert all(j["status"] == "succeeded" for j in jobs)
    return {"p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "per_s": n / wall}


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _wait(http, base: str, ids: list[str], timeout: float = 600) -> list[dict]:
    pending, done, deadline = set(ids), {}, time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        page = http.get(f"{base}/jobs", params={"limit": 200, "status": "succeeded,failed,cancelled"}).json()
        for j in page["items"]:
            if j["id"] in pending:
                done[j["id"]] = j
                pending.discard(j["id"])
        if pending:
            time.sleep(0.2)
    if pending:
        raise TimeoutError(f"{len(pending)} jobs unfinished")
    return [done[i] for i in ids]


def run_bare_celery(stack: Stack, n: int) -> dict:
    env = stack.env()
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "benchmarks.celery_echo",
        "worker",
        "-Q",
        "echo",
        "-c",
        "1",
        "--loglevel",
        "WARNING",
        "-n",
        "echo@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from benchmarks.celery_echo import echo

        echo.delay("warm").get(timeout=60)
        t0 = time.perf_counter()
        sent = [(time.perf_counter(), echo.delay(str(i))) for i in range(n)]
        lat = []
        for started, res in sent:
            res.get(timeout=120)
            lat.append(time.perf_counter() - started)
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait()
    return {"p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "per_s": n / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gq-queue-bench-"))
    stack = Stack(root).start()
    worker = WorkerProcess(stack, name="bench").start()
    try:
        full = run_full_path(stack, args.jobs, root)
    finally:
        worker.stop()
    try:
        bare = run_bare_celery(stack, args.jobs)
    finally:
        stack.stop()
    print(f"jobs: {args.jobs}, one worker process each, same Redis")
    print(
        f"genqueue full path : p50 {full['p50'] * 1000:7.1f} ms  p95 {full['p95'] * 1000:7.1f} ms  "
        f"{full['per_s']:6.1f} jobs/s"
    )
    print(
        f"bare Celery noop   : p50 {bare['p50'] * 1000:7.1f} ms  p95 {bare['p95'] * 1000:7.1f} ms  "
        f"{bare['per_s']:6.1f} tasks/s"
    )
    print(
        f"ratio (genqueue/bare): throughput {full['per_s'] / bare['per_s']:.2f}x, "
        f"per-job service time {bare['per_s'] / full['per_s']:.1f}x"
    )


if __name__ == "__main__":
    main()
