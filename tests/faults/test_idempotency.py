"""Item 10: 50 concurrent POSTs with one Idempotency-Key to a real gunicorn (several processes and threads) make
one job; the unique index decides the race."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import text

from shared.embedded import free_port
from tests.faults.helpers import gen_params, train_params, upload_corpus, wait_for

pytestmark = pytest.mark.faults


@pytest.fixture
def web(fstack, workers):
    from shared.cli.up import web_command

    port = free_port()
    log = open(fstack.root / f"web-{port}.log", "ab")
    proc = subprocess.Popen(
        web_command("127.0.0.1", port, workers=3),
        env=fstack.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/api/v1/health", timeout=2).status_code in (200, 503), 60, "gunicorn")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_concurrent_posts_with_one_idempotency_key_make_one_job(fstack, web, fclient, fuser):
    # A training job: its admission reads only the database (the text.generate admission race is the test below).
    dataset = upload_corpus(fclient, max_chars=20_000)
    body = {"kind": "text.train", "params": train_params(dataset, steps=10, checkpoint_every=10)}
    headers = {"Authorization": f"Bearer {fuser.token}", "Idempotency-Key": f"key-{time.time()}"}

    def post(_):
        r = requests.post(f"{web}/api/v1/jobs", json=body, headers=headers, timeout=60)
        return r.status_code, r.json()

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(post, range(50)))
    codes = sorted(code for code, _ in answers)
    assert codes == [200] * 49 + [201], codes
    assert len({a["id"] for _, a in answers}) == 1
    with fstack.engine().connect() as c:
        count = c.execute(
            text("SELECT count(*) FROM jobs WHERE owner_id = :o AND idempotency_key = :k"),
            {"o": fuser.id, "k": headers["Idempotency-Key"]},
        ).scalar()
        assert count == 1
        assert c.execute(text("SELECT count(*) FROM jobs WHERE owner_id = :o"), {"o": fuser.id}).scalar() == 1

    other = {**body, "params": {**body["params"], "max_steps": 11}}
    r = requests.post(f"{web}/api/v1/jobs", json=other, headers=headers, timeout=30)
    assert r.status_code == 422 and r.json()["error"]["code"] == "idempotency_mismatch"


def test_concurrent_first_generation_admissions_in_a_fresh_web_process(fstack, web, fuser, fmodel):
    # The first text.generate admissions of a fresh web process load the model's tokenizer to count prompt tokens.
    # Concurrent first loads once raced in transformers' lazy imports (500: cannot import name 'AutoTokenizer'),
    # and a fast tokenizer shared by threads can fail with "Already borrowed"; every request must be admitted.
    body = {"kind": "text.generate", "params": gen_params(fmodel.name, 3, tokens=4)}
    headers = {"Authorization": f"Bearer {fuser.token}"}

    def post(i):
        r = requests.post(
            f"{web}/api/v1/jobs", json={**body, "params": {**body["params"], "seed": i}}, headers=headers, timeout=120
        )
        return r.status_code, r.text[:300]

    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(post, range(24)))
    assert [code for code, _ in answers] == [201] * 24, [a for a in answers if a[0] != 201][:3]
