"""``genqueue demo``: all three uses of genqueue in minutes, offline, on text and images already on the machine.

The plan lives on the server (``web/services/demo.py``), shared with the dashboard's "Run the demo" button:

1. ``POST /demo``: the server builds a corpus from its Python standard library's docstrings, stores it as a dataset,
   and queues a ``text.train`` of a tiny GPT-2 from scratch, an ``image.train_gan`` on the built-in digits and a
   ``text.train_tagger`` of a tiny BERT tagger on a named-entity corpus it builds offline;
2. as each succeeds, ``POST /demo/followup`` queues a ``text.generate`` of a few dozen prompts with the new language
   model, an ``image.generate`` of 64 images with the new generator and a ``text.tag`` of a dozen sentences;
   online (or with ``gpt2`` cached), this command also queues a ``text.generate`` with ``gpt2``.
"""

from __future__ import annotations

import sys
import time

from shared.cli.client import ApiFailure, Client

HUB_PROMPTS = [
    "Once upon a time",
    "The weather today",
    "In the beginning",
    "My favourite recipe",
    "The future of computing",
    "A letter to a friend",
    "Breaking news:",
    "The secret of",
]


def hub_model_available(client: Client, name: str = "gpt2") -> bool:
    """True when ``gpt2`` is in the local Hugging Face cache or the hub answers quickly."""
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return True
    except Exception:  # noqa: BLE001 - no cache support: ask the network below
        pass
    import os

    if os.environ.get("HF_HUB_OFFLINE", "0") in ("1", "true", "True"):
        return False
    import requests

    try:
        return requests.head(f"https://huggingface.co/{name}/resolve/main/config.json", timeout=3).status_code < 400
    except requests.RequestException:
        return False


class Tracker:
    """Progress bars for several jobs, polled through the API."""

    def __init__(self, client: Client):
        from tqdm import tqdm

        self.client, self.tqdm, self.bars, self.jobs = client, tqdm, {}, {}

    def add(self, job: dict, label: str) -> None:
        self.jobs[job["id"]] = job
        self.bars[job["id"]] = self.tqdm(
            total=1,
            desc=f"{label:<16}",
            unit="step",
            leave=True,
            file=sys.stderr,
            bar_format="{desc} {percentage:3.0f}%|{bar:30}| {n_fmt}/{total_fmt} {postfix}",
        )
        print(f"  queued {label}: {job['id']}  {self.client.url.rsplit('/api/', 1)[0]}/jobs/{job['id']}", flush=True)

    def poll(self) -> None:
        for job_id, bar in self.bars.items():
            if self.jobs[job_id]["status"] in ("succeeded", "failed", "cancelled"):
                continue
            job = self.jobs[job_id] = self.client.job(job_id)
            bar.total = max(job["progress"]["total"], 1)
            bar.n = job["progress"]["done"]
            bar.set_postfix_str(job["status"])
            bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def run_demo(
    steps: int = 300, gan_steps: int = 400, timeout: float = 1800, client: Client | None = None, tagger_steps: int = 200
) -> int:
    """Drive the server's demo plan (``POST /demo``, then ``POST /demo/followup``) and show the jobs' progress."""
    client = client or Client()
    print("genqueue demo: the server builds a corpus from its Python standard library docstrings…", flush=True)
    started = client.post("/demo", json={"steps": steps, "gan_steps": gan_steps, "tagger_steps": tagger_steps})
    ds = started["dataset"]
    print(f"  dataset {ds['id']}: {ds['stats']['documents']} documents, {ds['size']} bytes", flush=True)
    tracker = Tracker(client)
    trainings = started["jobs"]  # text.train, image.train_gan and (unless tagger_steps is 0) text.train_tagger
    for job in trainings:
        tracker.add(job, job["kind"])
    if hub_model_available(client):
        tracker.add(
            client.submit("text.generate", {"model": "gpt2", "prompts": HUB_PROMPTS, "max_new_tokens": 32}),
            "gpt2 generate",
        )
    else:
        print("  offline: gpt2 is neither cached nor reachable, skipping the hub model (the rest runs offline)")
    return _follow(client, tracker, [j["id"] for j in trainings], timeout)


def _follow(client: Client, tracker: Tracker, training_ids: list[str], timeout: float) -> int:
    followups: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            tracker.poll()
            _queue_followups(client, tracker, training_ids, followups)
            all_ended = all(j["status"] in ("succeeded", "failed", "cancelled") for j in tracker.jobs.values())
            if (all_ended and len(followups) == len(training_ids)) or _failed_early(tracker, *training_ids):
                break
            time.sleep(1)
    finally:
        tracker.close()
    return _summary(tracker, 2 * len(training_ids))


def _queue_followups(client: Client, tracker: Tracker, training_ids: list[str], followups: dict) -> None:
    """For each training job that succeeded, its follow-up (generation or tagging) job, once."""
    for job_id in training_ids:
        if tracker.jobs[job_id]["status"] == "succeeded" and job_id not in followups:
            job = client.post("/demo/followup", json={"after": job_id})
            followups[job_id] = job["id"]
            tracker.add(job, job["kind"])


def _failed_early(tracker: Tracker, *ids: str) -> bool:
    return any(tracker.jobs[i]["status"] in ("failed", "cancelled") for i in ids)


def _summary(tracker: Tracker, expected: int) -> int:
    jobs = list(tracker.jobs.values())
    print()
    for j in jobs:
        extra = f" — {j['error']['message']}" if j.get("error") else ""
        print(f"  {j['kind']:<16} {j['status']:<10} {j['id']}{extra}")
    ok = len(jobs) >= expected and all(j["status"] == "succeeded" for j in jobs)
    print(
        "demo finished: open the dashboard to see the loss curve, sample grids, texts, images and tagged sentences"
        if ok
        else "demo did not finish cleanly (see above)"
    )
    return 0 if ok else 1


__all__ = ["ApiFailure", "run_demo"]
