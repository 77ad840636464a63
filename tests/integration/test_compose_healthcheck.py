"""The compose worker healthcheck, run for real against a live worker and the embedded broker (no Docker here):
the command each ``worker-gpuN`` service runs succeeds for a worker that answers and fails for one that does not."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_compose import load, workers


def healthcheck_script(service: str) -> str:
    test = load()["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    return test[1].replace("$$", "$")  # compose's escape for a literal $, expanded by the container's shell


@pytest.mark.slow
def test_the_worker_healthcheck_pings_the_worker_by_its_name(stack, worker):
    scripts = {healthcheck_script(service) for service in workers(load())}
    assert len(scripts) == 1  # every worker service runs the same check (with its own GENQUEUE_WORKER_NAME)
    script = scripts.pop()
    name, host = worker.name, socket.gethostname()  # the session worker is `w-session@<host>`
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"  # `celery` on PATH, as in the image
    ok = subprocess.run(
        ["sh", "-c", script],
        env=stack.env(GENQUEUE_WORKER_NAME=name, HOSTNAME=host, PATH=path),
        capture_output=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stdout.decode()[-2000:] + ok.stderr.decode()[-2000:]
    gone = subprocess.run(
        ["sh", "-c", script],
        env=stack.env(GENQUEUE_WORKER_NAME="nobody", HOSTNAME=host, PATH=path),
        capture_output=True,
        timeout=120,
    )
    assert gone.returncode != 0
