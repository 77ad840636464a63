"""The CLI's client commands as a user runs them: a real ``genqueue`` process against a live server, from an empty
working directory that must stay empty; errors are one line on stderr with the documented exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from shared.cli.client import (
    EXIT_AUTH,
    EXIT_JOB_FAILED,
    EXIT_NOT_FOUND,
    EXIT_REJECTED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from shared.db import get_engine
from tests.factories import finished_job, trained_model
from tests.security.conftest import held_job

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("held_queue")


@pytest.fixture(scope="module")
def server(stack):
    from werkzeug.serving import make_server

    from web.app import create_app

    srv = make_server("127.0.0.1", 0, create_app(), threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    thread.join(10)


@pytest.fixture
def cli(server, user, tmp_path):
    """Run ``genqueue ARGS`` in an empty directory, as a user would: no data dir, no database settings."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("GENQUEUE_DATA_DIR", "DATABASE_URL", "REDIS_URL")}
    env.update({"GENQUEUE_URL": server, "GENQUEUE_TOKEN": user.token, "PYTHONPATH": str(REPO)})

    def run(*args: str, token: str | None = None, url: str | None = None) -> subprocess.CompletedProcess:
        e = dict(
            env, **({"GENQUEUE_TOKEN": token} if token is not None else {}), **({"GENQUEUE_URL": url} if url else {})
        )
        proc = subprocess.run(
            [sys.executable, "-m", "shared.cli.main", *args],
            cwd=cwd,
            env=e,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    yield run
    assert list(cwd.iterdir()) == [], "a client command created files in the working directory"


def one_line_error(proc, code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genqueue: "), proc.stderr
    return lines[0]


def set_status(job_id: str, status: str) -> None:
    with get_engine().begin() as conn:
        conn.execute(text("UPDATE jobs SET status = :s, finished_at = now() WHERE id = :j"), {"s": status, "j": job_id})
        conn.execute(
            text(
                "INSERT INTO job_events (job_id, attempt, type, message, data) "
                "VALUES (:j, 1, 'status', CAST(:s AS text), jsonb_build_object('status', CAST(:s AS text)))"
            ),
            {"s": status, "j": job_id},
        )


def test_version(cli):
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("genqueue ")


def test_submit_list_status_retry_cancel(cli, tiny_model):
    params = json.dumps({"model": tiny_model.name, "prompts": ["hello"]})
    job_id = cli("submit", "text.generate", "--params", params).stdout.strip()
    assert job_id.startswith("job_")
    listed = cli("list", "--status", "queued", "--kind", "text.generate", "--json")
    assert listed.returncode == 0 and [j["id"] for j in json.loads(listed.stdout)["items"]] == [job_id]
    table = cli("list").stdout
    assert job_id in table and "text.generate" in table and table.splitlines()[0].startswith("ID")
    assert json.loads(cli("status", job_id, "--json").stdout)["status"] == "queued"
    retried = cli("retry", job_id).stdout.strip()
    assert retried.startswith("job_") and retried != job_id
    assert json.loads(cli("status", retried, "--json").stdout)["retry_of"] == job_id
    cancelled = json.loads(cli("cancel", job_id, "--json").stdout)
    assert cancelled["status"] == "cancelled"
    assert len(json.loads(cli("list", "--limit", "1", "--json").stdout)["items"]) == 1


def test_logs_follow_until_the_job_ends(cli, user):
    job_id = held_job(user.id)
    with get_engine().begin() as conn:
        conn.execute(
            text("INSERT INTO job_events (job_id, attempt, type, message) VALUES (:j, 1, 'log', 'hello')"),
            {"j": job_id},
        )
    timer = threading.Timer(2.0, set_status, (job_id, "succeeded"))
    timer.start()
    started = time.monotonic()
    proc = cli("logs", job_id, "-f", "--interval", "0.3")
    timer.join()
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started >= 2.0  # it followed, then stopped at the end
    lines = proc.stdout.splitlines()
    assert any("hello" in line for line in lines) and "succeeded" in lines[-1]
    assert json.loads(cli("logs", job_id, "--json").stdout)["items"][-1]["data"]["status"] == "succeeded"


def test_logs_follow_of_a_failed_job_exits_1(cli, user):
    job_id = held_job(user.id)
    set_status(job_id, "failed")
    one = cli("logs", job_id, "-f")
    assert one.returncode == EXIT_JOB_FAILED and "failed" in one.stdout


def test_delete_and_download(cli, user, tiny_model_dir, tmp_path):
    job_id = finished_job(user.id)
    model = trained_model(user.id, job_id, tiny_model_dir)
    out = tmp_path / "models"
    path = Path(cli("models", "download", model.id, "-o", str(out)).stdout.strip())
    assert path == out / model.name and (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    again = cli("models", "download", model.id, "-o", str(out))
    assert "already exists" in one_line_error(again, EXIT_USAGE)
    gone = json.loads(cli("delete", job_id, "--json").stdout)
    assert gone["deleted"] and gone["model_ids"] == [model.id] and not gone["models_deleted"]
    one_line_error(cli("status", job_id), EXIT_NOT_FOUND)
    assert model.name in cli("models", "list").stdout  # kept


def test_exit_codes(cli, user):
    assert "cannot reach the server" in one_line_error(cli("list", url="http://127.0.0.1:9"), EXIT_UNREACHABLE)
    assert "401" in one_line_error(cli("list", token="gq_wrong"), EXIT_AUTH)
    assert "404" in one_line_error(cli("status", "job_nope"), EXIT_NOT_FOUND)
    one_line_error(cli("submit", "text.generate", "--params", '{"model": "gpt2"}'), EXIT_REJECTED)  # 422
    active = held_job(user.id)
    assert "409" in one_line_error(cli("delete", active), EXIT_REJECTED)
    one_line_error(cli("submit", "text.generate", "--params", "{not json"), EXIT_USAGE)
    one_line_error(cli("submit", "text.generate", "--params-file", "missing.json"), EXIT_USAGE)
    assert cli("list", "--limit", "0").returncode == EXIT_USAGE  # argparse
    assert cli("no-such-command").returncode == EXIT_USAGE
