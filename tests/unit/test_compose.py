"""docker-compose.yml cannot be run here (no Docker engine), so its wiring is checked by reading it."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def load() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def workers(c: dict) -> dict[str, dict]:
    return {name: svc for name, svc in c["services"].items() if name.startswith("worker")}


def test_services_exist_with_health_checks_and_volumes():
    c = load()
    assert {"postgres", "redis", "minio", "minio-init", "web", "worker-gpu0"} <= set(c["services"])
    for name in ("postgres", "redis", "minio", "web", *workers(c)):
        assert c["services"][name]["healthcheck"]["test"], name
    assert c["services"]["postgres"]["image"] == "postgres:18"  # the embedded server's major version
    assert "pgdata:/var/lib/postgresql" in c["services"]["postgres"]["volumes"]  # 18 keeps PGDATA under it
    assert "redisdata:/data" in c["services"]["redis"]["volumes"]
    assert "objects:/data" in c["services"]["minio"]["volumes"]
    assert {"pgdata", "redisdata", "objects", "hfcache"} <= set(c["volumes"])


def test_the_bucket_is_created_before_web_and_workers_start():
    s = load()["services"]
    init = s["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    script = " ".join(init["entrypoint"])
    assert "mc mb --ignore-existing local/genqueue" in script
    for name in ("web", *workers(load())):
        assert s[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully", name


def test_web_and_workers_share_urls_and_the_object_store_but_no_volume():
    c = load()
    s = c["services"]
    seen_volumes = []
    for name in ("web", *workers(c)):
        env = s[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["GENQUEUE_DATA_DIR"] == "/data"
        assert env["GENQUEUE_STORAGE_URL"] == "s3://genqueue/store" and env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
        assert s[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert s[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert s[name]["restart"] == "unless-stopped"
        data = [v for v in s[name]["volumes"] if v.endswith(":/data")]
        assert len(data) == 1, name
        seen_volumes += data
    assert len(set(seen_volumes)) == len(seen_volumes)  # each its own /data: only the object store is shared
    assert "genqueue web" in " ".join(s["web"]["command"]) and "migrate" in " ".join(s["web"]["command"])


def test_one_worker_per_gpu_each_with_its_own_device_name_and_hf_cache():
    ws = workers(load())
    assert len(ws) >= 2
    device_ids, names = [], []
    for name, w in ws.items():
        devices = w["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
        assert "count" not in devices[0] and len(devices[0]["device_ids"]) == 1, name  # one GPU, by id
        device_ids += devices[0]["device_ids"]
        cmd = w["command"]
        assert cmd[:2] == ["genqueue", "worker"]
        names.append(cmd[cmd.index("--name") + 1])
        assert w["environment"]["GENQUEUE_WORKER_NAME"] == names[-1]
        assert "hfcache:/hf-cache" in w["volumes"] and w["environment"]["HF_HOME"] == "/hf-cache"
        assert "$$GENQUEUE_WORKER_NAME@$$HOSTNAME" in " ".join(w["healthcheck"]["test"])  # pings itself
        assert w["stop_grace_period"] == "60s"
    assert len(set(device_ids)) == len(device_ids) and len(set(names)) == len(names)


def test_flower_refuses_to_start_without_basic_auth():
    flower = load()["services"]["flower"]
    script = " ".join(flower["command"])
    assert 'test -n "$$FLOWER_BASIC_AUTH" ||' in script and "exit 1" in script
    assert '--basic-auth="$$FLOWER_BASIC_AUTH"' in script
    assert flower["profiles"] == ["flower"]


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
    assert any("/hf-cache" in ln and "chown genqueue" in ln for ln in lines)  # the HF cache volume is writable
