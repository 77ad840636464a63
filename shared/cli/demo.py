"""``genqueue demo``: all three uses of genqueue in minutes, offline, on text and images already on the machine.

1. builds a corpus from the Python standard library's docstrings and uploads it as a dataset;
2. queues a ``text.train`` of a tiny GPT-2 from scratch and an ``image.train_gan`` on the built-in digits;
3. as each succeeds, queues a ``text.generate`` of a few dozen prompts with the new language model and an
   ``image.generate`` of 64 images with the new generator; online (or with ``gpt2`` cached), also ``gpt2``.
"""

from __future__ import annotations

import io
import sys
import time

from shared.cli.client import ApiFailure, Client

PROMPTS = [
    "Return the", "This module provides", "The default value is", "If the argument is", "Raise an exception",
    "The function returns", "A list of", "Create a new", "The path to", "When the file", "Convert the string",
    "The number of", "This class represents", "Return True if", "The result is", "Read the data from",
    "The first argument", "If no timeout", "The object is", "Write the", "This method is called", "Parse the",
    "The name of the", "Return a new", "The current thread", "Open the file", "If the value", "The context manager",
    "An iterator over", "The encoding of", "Set the", "The maximum number",
]  # fmt: skip


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


def run_demo(steps: int = 300, gan_steps: int = 400, timeout: float = 1800, client: Client | None = None) -> int:
    from worker.ml.corpus import stdlib_corpus_text

    client = client or Client()
    print("genqueue demo: building a corpus from this machine's Python standard library docstrings…", flush=True)
    corpus = stdlib_corpus_text().encode()
    ds = client.post("/datasets", files={"file": ("stdlib-docstrings.txt", io.BytesIO(corpus))},
                     data={"name": "stdlib docstrings (demo)"})  # fmt: skip
    print(f"  dataset {ds['id']}: {ds['stats']['documents']} documents, {ds['size']} bytes", flush=True)
    tag = time.strftime("%Y%m%d-%H%M%S")
    lm_params = {"base_model": "scratch", "size": "tiny", "dataset_id": ds["id"], "vocab_size": 2048,
                 "block_size": 128, "batch_size": 16, "max_steps": steps, "eval_every": max(10, steps // 10),
                 "checkpoint_every": max(20, steps // 3), "learning_rate": 1e-3, "warmup_steps": min(30, steps // 5),
                 "name": f"demo-lm-{tag}"}  # fmt: skip
    gan_params = {"dataset": "digits", "architecture": "dcgan", "image_size": 28, "max_steps": gan_steps,
                  "batch_size": 64, "sample_every": max(10, gan_steps // 8),
                  "checkpoint_every": max(20, gan_steps // 2), "name": f"demo-gan-{tag}"}  # fmt: skip
    tracker = Tracker(client)
    train = client.submit("text.train", lm_params)
    tracker.add(train, "text.train")
    gan = client.submit("image.train_gan", gan_params)
    tracker.add(gan, "image.train_gan")
    if hub_model_available(client):
        tracker.add(client.submit("text.generate", {"model": "gpt2", "prompts": PROMPTS[:8],
                                                    "max_new_tokens": 32}), "gpt2 generate")  # fmt: skip
    else:
        print("  offline: gpt2 is neither cached nor reachable, skipping the hub model (the rest runs offline)")
    return _follow(client, tracker, train["id"], gan["id"], timeout)


def _follow(client: Client, tracker: Tracker, train_id: str, gan_id: str, timeout: float) -> int:
    followups: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            tracker.poll()
            _queue_followups(client, tracker, train_id, gan_id, followups)
            all_ended = all(j["status"] in ("succeeded", "failed", "cancelled") for j in tracker.jobs.values())
            if (all_ended and len(followups) == 2) or _failed_early(tracker, train_id, gan_id):
                break
            time.sleep(1)
    finally:
        tracker.close()
    return _summary(tracker)


def _queue_followups(client: Client, tracker: Tracker, train_id: str, gan_id: str, followups: dict) -> None:
    lm, gan = tracker.jobs[train_id], tracker.jobs[gan_id]
    if lm["status"] == "succeeded" and "text" not in followups:
        job = client.submit("text.generate", {"model": lm["model_id"], "prompts": PROMPTS, "max_new_tokens": 40,
                                              "temperature": 0.8, "top_k": 40, "seed": 1})  # fmt: skip
        followups["text"] = job["id"]
        tracker.add(job, "text.generate")
    if gan["status"] == "succeeded" and "image" not in followups:
        job = client.submit("image.generate", {"model": gan["model_id"], "count": 64, "seed": 1, "grid": True})
        followups["image"] = job["id"]
        tracker.add(job, "image.generate")


def _failed_early(tracker: Tracker, *ids: str) -> bool:
    return any(tracker.jobs[i]["status"] in ("failed", "cancelled") for i in ids)


def _summary(tracker: Tracker) -> int:
    jobs = list(tracker.jobs.values())
    print()
    for j in jobs:
        extra = f" — {j['error']['message']}" if j.get("error") else ""
        print(f"  {j['kind']:<16} {j['status']:<10} {j['id']}{extra}")
    ok = len(jobs) >= 4 and all(j["status"] == "succeeded" for j in jobs)
    print("demo finished: open the dashboard to see the loss curve, sample grids, texts and images" if ok
          else "demo did not finish cleanly (see above)")  # fmt: skip
    return 0 if ok else 1


__all__ = ["ApiFailure", "run_demo"]
