"""A second `genqueue up` on a data dir in use, or on a busy port, refuses before starting anything."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from shared.cli import up as up_mod
from shared.settings import get_settings


@pytest.fixture
def settings_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GENQUEUE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _no_services(monkeypatch):
    def started(*_):
        raise AssertionError("services started")

    monkeypatch.setattr(up_mod, "start_services", started)


def test_data_dir_lock_is_exclusive_and_names_the_holder(tmp_path):
    held = up_mod.claim_data_dir(tmp_path)
    try:
        with pytest.raises(up_mod.AlreadyRunning, match=rf"pid {os.getpid()}"):
            up_mod.claim_data_dir(tmp_path)
    finally:
        held.close()
    up_mod.claim_data_dir(tmp_path).close()  # free again once the holder is gone


def test_lock_is_released_when_its_process_dies(tmp_path):
    # Another process holds the lock, then is killed: the lock goes with it.
    code = (
        "import pathlib, sys, time\n"
        "from shared.cli.up import claim_data_dir\n"
        f"lock = claim_data_dir(pathlib.Path({str(tmp_path)!r}))\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(up_mod.AlreadyRunning, match=rf"pid {proc.pid}"):
            up_mod.claim_data_dir(tmp_path)
    finally:
        proc.kill()
        proc.wait(10)
    up_mod.claim_data_dir(tmp_path).close()


def test_second_up_on_the_same_data_dir_refuses(settings_env, monkeypatch, capsys):
    _no_services(monkeypatch)
    held = up_mod.claim_data_dir(settings_env)
    try:
        assert up_mod.up() == 1
    finally:
        held.close()
    assert "another `genqueue up` is running" in capsys.readouterr().err


def test_up_on_a_busy_port_refuses(settings_env, monkeypatch, capsys):
    _no_services(monkeypatch)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("GENQUEUE_PORT", str(busy.getsockname()[1]))
        get_settings.cache_clear()
        assert up_mod.up() == 1
    assert "already in use" in capsys.readouterr().err
    up_mod.claim_data_dir(settings_env).close()  # the refused run let go of the data dir
