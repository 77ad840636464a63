"""docker-compose.yml cannot be run here (no Docker engine), so its wiring is checked by reading it."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def load() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_exist_with_health_checks_and_volumes():
    c = load()
    assert {"postgres", "redis", "web", "worker"} <= set(c["services"])
    for name in ("postgres", "redis", "web"):
        assert c["services"][name]["healthcheck"]["test"], name
    assert "pgdata:/var/lib/postgresql/data" in c["services"]["postgres"]["volumes"]
    assert "redisdata:/data" in c["services"]["redis"]["volumes"]
    assert {"pgdata", "redisdata", "artifacts"} <= set(c["volumes"])


def test_web_and_worker_share_urls_and_the_artifact_volume():
    s = load()["services"]
    for name in ("web", "worker"):
        env = s[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["GENQUEUE_DATA_DIR"] == "/data"
        assert "artifacts:/data" in s[name]["volumes"]
        assert s[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert s[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert s[name]["restart"] == "unless-stopped"
    assert "genqueue web" in " ".join(s["web"]["command"]) and "migrate" in " ".join(s["web"]["command"])


def test_worker_reserves_an_nvidia_gpu():
    worker = load()["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert worker["command"][:2] == ["genqueue", "worker"]


def test_web_runs_under_gunicorn():
    """`genqueue web` execs gunicorn (the command the compose file runs)."""
    from shared.cli.up import web_command

    cmd = web_command("0.0.0.0", 5000)
    assert cmd[1:4] == ["-m", "gunicorn", "web.wsgi:app"]


def test_dockerfile_pins_torch_first():
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    torch_line = next(i for i, ln in enumerate(lines) if "torch==2.13.0" in ln)
    install_line = next(i for i, ln in enumerate(lines) if ln.strip() == "RUN pip install .")
    assert torch_line < install_line
