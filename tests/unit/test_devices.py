"""GENQUEUE_DEVICE names the device the worker must use, or the worker refuses to start: never silently another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from worker.ml.common import DeviceUnavailable, pick_device, resolve_device

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_and_the_default():
    assert resolve_device("cpu") == torch.device("cpu")
    assert pick_device("cpu").autocast_dtype is None
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected and resolve_device("").type == expected


@pytest.mark.parametrize("name", ["tpu", "not a device", "mps"])
def test_unknown_or_unsupported_devices_are_refused(name):
    with pytest.raises(DeviceUnavailable):
        resolve_device(name)


def test_a_cuda_index_the_machine_lacks_is_refused():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(DeviceUnavailable, match=f"has {count} CUDA device"):
        resolve_device(f"cuda:{count}")
    if count:
        assert resolve_device(f"cuda:{count - 1}") == torch.device("cuda", count - 1)


def test_the_worker_stops_at_start_on_a_device_it_cannot_honour(tmp_path):
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    env = {
        "PATH": "/usr/bin:/bin",
        "GENQUEUE_DATA_DIR": str(tmp_path),
        "GENQUEUE_DEVICE": f"cuda:{count}",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "DATABASE_URL": "postgresql://127.0.0.1:1/x",
    }
    run = subprocess.run(
        [sys.executable, "-c", "import worker.celery_app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0 and f"GENQUEUE_DEVICE: device 'cuda:{count}'" in run.stderr, run.stderr[-2000:]
