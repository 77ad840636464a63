"""Three "hosts" that share only PostgreSQL, Redis and an S3 endpoint (moto's S3 API server): a web (gunicorn) and two
workers, B and C, each with its own data dir. A GAN trained on B is sampled on C; a text.train SIGKILLed on B resumes
on C from its stored checkpoint; every artifact downloads from the web, byte for byte."""

from __future__ import annotations

import hashlib
import io
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from shared.corpus import stdlib_corpus_text
from tests.faults.helpers import checkpoint_steps, job, metric_steps, progress, train_params, wait_for, wait_job
from tests.stack import free_port

pytestmark = pytest.mark.faults


class Web:
    """``genqueue web`` (gunicorn) as its own process with its own data dir."""

    def __init__(self, stack, data_dir: Path, env: dict[str, str]):
        from shared.cli.up import web_command

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True)
        log = open(data_dir.parent / "web.log", "ab")
        env = stack.env(GENQUEUE_DATA_DIR=str(data_dir), **env)
        self.proc = subprocess.Popen(
            web_command("127.0.0.1", self.port, workers=1), env=env, stdout=log, stderr=subprocess.STDOUT
        )
        wait_for(self._up, 90, "the web to answer /api/v1/health")

    def _up(self) -> bool:
        assert self.proc.poll() is None, "the web exited"
        try:
            return requests.get(f"{self.url}/api/v1/health", timeout=2).status_code in (200, 503)
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def hosts(fstack, workers, s3_server, tmp_path):
    env = s3_server.env(f"multihost-{time.time_ns()}")
    dirs = {name: tmp_path / name / "data" for name in ("web", "b", "c")}
    web = Web(fstack, dirs["web"], env)
    try:
        yield web, env, dirs
    finally:
        web.stop()


def api(web: Web, token: str):
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    return s, web.url + "/api/v1"


def submit(session, base: str, kind: str, params: dict) -> str:
    resp = session.post(f"{base}/jobs", json={"kind": kind, "params": params}, timeout=30)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def test_train_on_b_sample_on_c_resume_on_c_download_from_the_web(fstack, workers, fuser, hosts, s3_server):
    web, env, dirs = hosts
    s, base = api(web, fuser.token)
    corpus = stdlib_corpus_text(max_chars=60_000).encode()
    ds = s.post(f"{base}/datasets", files={"file": ("stdlib.txt", io.BytesIO(corpus))}, timeout=60)
    assert ds.status_code == 201, ds.text

    b = workers.start("host-b", GENQUEUE_DATA_DIR=str(dirs["b"]), **env)
    gan_params = {"dataset": "digits", "architecture": "dcgan", "image_size": 28, "max_steps": 20, "batch_size": 32}
    gan_params |= {"sample_every": 10, "checkpoint_every": 10}
    gan = submit(s, base, "image.train_gan", gan_params)
    gan_done = wait_job(fstack, gan, ("succeeded", "failed"), timeout=300)
    assert gan_done["status"] == "succeeded" and gan_done["worker"] == b.hostname, gan_done

    lm = submit(s, base, "text.train", train_params(ds.json()["id"], 80, 10))
    wait_for(
        lambda: (checkpoint_steps(fstack, lm) or [0])[-1] >= 20, 240, "a second checkpoint of the text.train stored"
    )
    wait_for(lambda: progress(fstack, lm) >= checkpoint_steps(fstack, lm)[-1] + 3, 60, "steps past it")
    b.kill(signal.SIGKILL)  # host B is gone, with its local data dir's working files
    saved = checkpoint_steps(fstack, lm)[-1]

    c = workers.start("host-c", GENQUEUE_DATA_DIR=str(dirs["c"]), **env)
    img = submit(s, base, "image.generate", {"model": gan_done["model_id"], "count": 4, "seed": 3})
    img_done = wait_job(fstack, img, ("succeeded", "failed"), timeout=180)
    assert img_done["status"] == "succeeded" and img_done["worker"] == c.hostname, img_done
    lm_done = wait_job(fstack, lm, ("succeeded", "failed"), timeout=300)
    assert lm_done["status"] == "succeeded" and lm_done["worker"] == c.hostname, lm_done
    assert lm_done["attempt"] == 2 and lm_done["summary"]["resumed_from_step"] == saved
    assert metric_steps(fstack, lm)[2][0] == saved + 1  # C went on from B's checkpoint, not from step 1

    downloaded = 0
    for job_id in (gan, img, lm):
        for art in s.get(f"{base}/jobs/{job_id}/artifacts", timeout=30).json()["items"]:
            resp = s.get(f"{base}/artifacts/{art['id']}", timeout=60)
            assert resp.status_code == 200, (art, resp.status_code)
            assert hashlib.sha256(resp.content).hexdigest() == art["sha256"]
            downloaded += 1
    assert downloaded >= 2 + 4 + 2  # B's sample grids, C's images, grid and zip
    tar = s.get(f"{base}/models/{lm_done['model_id']}/download", timeout=60)
    assert tar.status_code == 200 and len(tar.content) > 10_000  # trained on C, served by the web from S3

    # Nothing went through a local disk another host could see: the web's data dir holds no artifact store, and
    # every job's objects are in the bucket.
    assert not (dirs["web"] / "artifacts").exists() and not (dirs["b"] / "artifacts").exists()
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_server.bucket).get("Contents", [])]
    for job_id in (gan, img):
        assert any(f"/jobs/{job_id}/artifacts/" in k for k in keys)
    assert job(fstack, lm)["checkpoint_key"] is not None
