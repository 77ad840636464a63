"""``genqueue up --no-worker`` on a host that points at existing Postgres and Redis: migrations and the web, no
embedded server and no worker; and worker names that are unique per process by default."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import requests

from shared.embedded import free_port
from tests.faults.helpers import wait_for
from tests.faults.test_up_lifeline import processes_of


def test_up_no_worker_serves_the_web_and_starts_no_worker(stack, tmp_path):
    data_dir, port = tmp_path / "web-host", free_port()
    env = stack.env(GENQUEUE_DATA_DIR=str(data_dir), GENQUEUE_PORT=str(port), GENQUEUE_LOG_LEVEL="INFO")
    log = open(tmp_path / "up.log", "wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "shared.cli.main", "up", "--no-worker"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:

        def healthy():
            assert up.poll() is None, (tmp_path / "up.log").read_text()[-2000:]
            try:
                return requests.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code in (200, 503)
            except requests.ConnectionError:
                return False

        wait_for(healthy, 90, "the web of `genqueue up --no-worker`")
        commands = " ".join(processes_of(data_dir).values())
        assert "gunicorn" in commands and "celery" not in commands, commands
        assert not (data_dir / "pg").exists() and not (data_dir / "redis").exists()  # the URLs were set: not embedded
        assert "--no-worker" in (tmp_path / "up.log").read_text()  # the banner says where the workers are
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
    assert not processes_of(Path(data_dir))


def test_default_worker_names_are_unique_per_process():
    from shared.cli.up import worker_command

    def name(cmd: list[str]) -> str:
        return cmd[cmd.index("-n") + 1]

    a, b = name(worker_command()), name(worker_command())
    assert a != b and a.startswith("worker-") and a.endswith("@%h")
    assert name(worker_command("gpu0")) == "gpu0@%h"  # a name given is kept
