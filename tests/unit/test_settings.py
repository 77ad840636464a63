"""Settings are declared once (``shared.settings.Settings``); the README's configuration table must match them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.settings import Settings, env_name, load_settings

README = Path(__file__).resolve().parents[2] / "README.md"
# documented there, read by Hugging Face / OpenMP, not genqueue
NOT_SETTINGS = {"HF_HUB_OFFLINE", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"}


def readme_variables() -> set[str]:
    text = README.read_text()
    table = text[text.index("## Configuration") :]
    table = table[: table.index("\n## ", 5)]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_readme_configuration_table_lists_exactly_the_settings():
    declared = {env_name(name) for name in Settings.model_fields}
    documented = readme_variables() - NOT_SETTINGS
    assert declared - documented == set(), "settings missing from README's configuration table"
    assert documented - declared == set(), "README documents variables that Settings does not declare"


def test_defaults_and_parsing(monkeypatch, tmp_path):
    monkeypatch.setenv("GENQUEUE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GENQUEUE_PORT", "")  # empty counts as unset
    monkeypatch.setenv("GENQUEUE_WORKER_QUEUES", "cpu, gpu,")
    monkeypatch.setenv("GENQUEUE_GAN_CPU_BF16", "0")
    monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
    monkeypatch.delenv("REDIS_URL", raising=False)
    s = load_settings()
    assert s.port == 5000 and s.client_url == "http://127.0.0.1:5000"
    assert s.worker_queues == ("cpu", "gpu") and s.gan_cpu_bf16 is False
    assert s.database_url == "postgresql://x/y" and s.redis_url is None and s.embedded
    assert s.data_dir == tmp_path.resolve()


def test_a_malformed_variable_stops_with_its_name(monkeypatch, tmp_path):
    monkeypatch.setenv("GENQUEUE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GENQUEUE_LEASE_SECONDS", "soon")
    with pytest.raises(SystemExit, match="GENQUEUE_LEASE_SECONDS"):
        load_settings()


def test_reading_settings_creates_no_files(monkeypatch, tmp_path):
    """Client commands read the settings; only the web's session secret is ever written to the data dir."""
    monkeypatch.setenv("GENQUEUE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("GENQUEUE_SECRET_KEY", raising=False)
    s = load_settings()
    assert s.client_token() is None and not (tmp_path / "data").exists()
    secret = s.session_secret()
    assert len(secret) > 40 and s.session_secret() == secret
    assert (tmp_path / "data" / "secret_key").stat().st_mode & 0o077 == 0
