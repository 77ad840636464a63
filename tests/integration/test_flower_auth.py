"""Flower as docker-compose runs it (the command of its ``flower`` service), against the embedded broker: without
``FLOWER_BASIC_AUTH`` it refuses to start; with it, the UI and API answer 401 without the password and list the
live workers with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from tests.faults.helpers import wait_for
from tests.stack import free_port
from tests.unit.test_compose import load


def flower_script(broker: str, port: int) -> str:
    script = load()["services"]["flower"]["command"][2].replace("$$", "$")
    script = script.replace("redis://redis:6379/0", broker).replace("--port=5555", f"--port={port}")
    return script.replace("exec celery", f"exec {Path(sys.executable).parent}/celery")


def test_flower_needs_a_password_and_enforces_it(stack, worker, tmp_path):
    port = free_port()
    script = flower_script(stack.redis.url, port)
    refused = subprocess.run(["sh", "-c", script], env=stack.env(FLOWER_BASIC_AUTH=""), capture_output=True, timeout=30)
    assert refused.returncode == 1 and b"set FLOWER_BASIC_AUTH" in refused.stderr

    log = open(tmp_path / "flower.log", "wb")
    env = stack.env(FLOWER_BASIC_AUTH="ops:s3cret-pass")
    proc = subprocess.Popen(["sh", "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def up():
            assert proc.poll() is None, (tmp_path / "flower.log").read_text()[-2000:]
            try:
                return requests.get(url, timeout=2).status_code  # (a 401 Response is falsy)
            except requests.ConnectionError:
                return None

        assert wait_for(up, 60, "flower to listen") == 401
        assert requests.get(f"{url}/api/workers", timeout=10).status_code == 401
        assert requests.get(url, auth=("ops", "wrong"), timeout=10).status_code == 401

        def sees_worker():
            resp = requests.get(f"{url}/api/workers?refresh=1", auth=("ops", "s3cret-pass"), timeout=30)
            assert resp.status_code == 200
            return worker.hostname in resp.json()

        wait_for(sees_worker, 60, "flower to list the session worker", interval=2)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(20)
