"""Many small jobs vs one big one: cross-job batching through the whole platform, and the idle-worker start latency.

Tiny GPT-2, 200 prompts of 16 new tokens, one worker process (warm model cache):

(a) one ``text.generate`` job with all 200 prompts;
(b) 200 one-prompt jobs, submitted concurrently through the HTTP API by 16 client threads; they share the worker's
    running batch (cross-job batching), each with its own results and status.

Both sides are warm: the worker has loaded the model (a 4-prompt job), and the web has served a burst of 32
concurrent one-token jobs (so its threads hold their database connections), before either is timed.

Prints each wall time (first submit → last job seen finished) and ``ratio one-job/many-jobs wall`` (1.00: the small
jobs cost what the big one does). Then 50 sequential one-token jobs on the idle, warm worker (once the broker is
drained of the burst's messages): submit → start (``started_at - created_at``) p50 / p99. Everything it starts is
stopped on success, failure or Ctrl-C.

With ``--own-seeds`` each job of (b) samples with a seed of its own (per-request sampling, as an app sends it): they
still share the batch, each drawing with its own seed.

    python -m benchmarks.small_jobs [--prompts 200] [--tokens 16] [--threads 16] [--sequential 50] [--own-seeds]
"""

from __future__ import annotations

import argparse
import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from benchmarks.live import Platform, pct, seconds
from tests.tiny import make_tiny_gpt2


def prompts(n: int) -> list[str]:
    return [f"Small job {i}: the module's documentation says" for i in range(n)]


def one_job(p: Platform, model: str, n: int, tokens: int) -> float:
    t0 = time.perf_counter()
    body = {"kind": "text.generate", "params": {"model": model, "prompts": prompts(n), "max_new_tokens": tokens}}
    job = p.http.post(f"{p.base}/jobs", json=body, timeout=120).json()
    (done,) = p.wait_jobs([job["id"]])
    assert done["status"] == "succeeded", done
    return time.perf_counter() - t0


def many_jobs(
    p: Platform,
    model: str,
    n: int,
    tokens: int,
    threads: int,
    texts: list[str] | None = None,
    quiet: bool = False,
    own_seeds: bool = False,
) -> tuple[float, int]:
    local = threading.local()  # a requests.Session per client thread (a Session is not thread-safe)

    def submit(text: str) -> str:
        if not hasattr(local, "http"):
            local.http = requests.Session()
            local.http.headers.update(p.http.headers)
        body = {"kind": "text.generate", "params": {"model": model, "prompts": [text], "max_new_tokens": tokens}}
        if own_seeds:
            body["params"]["seed"] = seeds[text]
        key = {"Idempotency-Key": hashlib.sha256(text.encode()).hexdigest()[:32]}  # a retried POST makes no twin
        for attempt in range(3):
            try:
                resp = local.http.post(f"{p.base}/jobs", json=body, headers=key, timeout=120)
                break
            except requests.ConnectionError:  # a keep-alive connection the server closed meanwhile
                if attempt == 2:
                    raise
        resp.raise_for_status()
        return resp.json()["id"]

    seeds = {text: 1000 + k for k, text in enumerate(texts or prompts(n))}
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        ids = list(pool.map(submit, texts or prompts(n)))
    submitted = time.perf_counter() - t0
    jobs = p.wait_jobs(ids)
    wall = time.perf_counter() - t0
    assert all(j["status"] == "succeeded" for j in jobs), [j for j in jobs if j["status"] != "succeeded"][:1]
    if quiet:
        return wall, 0
    first = min(seconds(j["created_at"]) for j in jobs)
    wait = [seconds(j["started_at"]) - seconds(j["created_at"]) for j in jobs]
    run = [seconds(j["finished_at"]) - seconds(j["started_at"]) for j in jobs]
    print(
        f"    (b) all submitted after {submitted:.2f} s; created->started p50 {pct(wait, 0.5):.2f} s, max "
        f"{max(wait):.2f} s; started->finished p50 {pct(run, 0.5):.2f} s, max {max(run):.2f} s; last finished "
        f"{max(seconds(j['finished_at']) for j in jobs) - first:.2f} s after the first submit"
    )
    return wall, sum(1 for j in jobs if j["summary"].get("batched_with"))


def start_latency(p: Platform, model: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        body = {"kind": "text.generate", "params": {"model": model, "prompts": ["hi"], "max_new_tokens": 1}}
        job = p.http.post(f"{p.base}/jobs", json=body, timeout=60).json()
        (done,) = p.wait_jobs([job["id"]])
        out.append(seconds(done["started_at"]) - seconds(done["created_at"]))
        time.sleep(0.2)  # the worker is idle again when the next one comes
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--sequential", type=int, default=50)
    ap.add_argument("--own-seeds", action="store_true", help="each job of (b) samples with a seed of its own")
    args = ap.parse_args()
    with Platform(prefix="gq-small-jobs-") as p:
        from shared.registration import register_local_model

        model = register_local_model("bench-tiny", str(make_tiny_gpt2(p.root / "tiny"))).name
        user = p.stack.make_user("bench")
        p.worker("bench")
        p.web(user.token)
        one_job(p, model, 4, args.tokens)  # warm: the worker loads the model once
        # warm the web too: the first burst of concurrent requests opens each gunicorn thread's database connection
        # (and prepares its statements), which made a cold (b) 10-20 % slower than the bursts after it
        warm = [f"Warm-up {i}: the module's documentation says" for i in range(2 * args.threads)]
        many_jobs(p, model, len(warm), 1, args.threads, texts=warm, quiet=True)
        p.wait_idle()
        big = one_job(p, model, args.prompts, args.tokens)
        small, batched = many_jobs(p, model, args.prompts, args.tokens, args.threads, own_seeds=args.own_seeds)
        p.wait_idle()  # the joined jobs' own Celery messages are still being dropped: drain them first
        lat = start_latency(p, model, args.sequential) if args.sequential else []
    print(f"{args.prompts} prompts of {args.tokens} new tokens, tiny GPT-2, one worker process")
    print(f"(a) one job of {args.prompts} prompts      : {big:6.2f} s")
    how = f"{args.threads} threads" + (", a seed each" if args.own_seeds else "")
    print(f"(b) {args.prompts} one-prompt jobs ({how}): {small:6.2f} s ({batched} joined a batch)")
    print(f"ratio one-job/many-jobs wall: {big / small:.2f}")
    if lat:
        print(
            f"submit->start on an idle warm worker ({len(lat)} sequential jobs): p50 {pct(lat, 0.5) * 1000:.0f} ms, "
            f"p99 {pct(lat, 0.99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
