"""A multi-GPU text.train holds its GPUs exclusively; one-GPU jobs share theirs (flock files, no GPU needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from worker.devices import reserve_devices
from worker.ml.common import Device


class Busy(Exception):
    pass


def busy() -> None:
    raise Busy


def gpu(index: int) -> Device:
    return Device(torch.device("cuda", index), torch.bfloat16)  # never touches CUDA itself


def test_exclusive_reservation_excludes_sharers_and_others(tmp_path):
    with reserve_devices(gpu(0), 2, root=tmp_path):
        with pytest.raises(Busy):
            with reserve_devices(gpu(1), 1, wait=busy, root=tmp_path):
                pass
        with pytest.raises(Busy):
            with reserve_devices(gpu(0), 2, wait=busy, root=tmp_path):
                pass
        with reserve_devices(gpu(2), 1, wait=busy, root=tmp_path):  # a GPU outside it is free
            pass
    with reserve_devices(gpu(1), 2, wait=busy, root=tmp_path):  # released on exit
        pass


def test_one_gpu_jobs_share_and_a_cpu_reserves_nothing(tmp_path):
    with reserve_devices(gpu(0), 1, root=tmp_path), reserve_devices(gpu(0), 1, wait=busy, root=tmp_path):
        with pytest.raises(Busy):
            with reserve_devices(gpu(0), 2, wait=busy, root=tmp_path):
                pass
    with reserve_devices(Device(torch.device("cpu"), None), 4, wait=busy, root=tmp_path / "none"):
        assert not (tmp_path / "none").exists()


class Ctx:
    """The two things holding_devices reads from a JobContext."""

    def __init__(self, params: dict):
        self.params = params

    def check_stop(self) -> None:
        raise Busy


# Each task module's POLICY through holding_devices, in a fresh process: importing the task modules builds the Celery
# app, which wants a broker URL (never connected to here).
_KINDS_PROBE = """
import importlib, json, sys
from pathlib import Path
import torch
from worker.devices import reserve_devices
from worker.ml.common import Device
from worker.tasks.common import holding_devices

root = Path(sys.argv[1])
gpu0 = Device(torch.device("cuda", 0), torch.bfloat16)

class Busy(Exception):
    pass

def busy():
    raise Busy

class Ctx:
    params = {"dataset_id": "d", "num_processes": "auto"}  # text.train: "auto" on a host without GPUs is 1
    def check_stop(self):
        raise Busy

def free_for_exclusive():
    try:
        with reserve_devices(gpu0, 2, wait=busy, root=root):
            return True
    except Busy:
        return False

out = {}
for module in ("text_generate", "text_train", "image_train_gan", "image_generate"):
    policy = importlib.import_module("worker.tasks." + module).POLICY
    seen = {}
    def handler(ctx):
        seen["exclusive_while_running"] = free_for_exclusive()
        with reserve_devices(gpu0, 1, wait=busy, root=root):  # another one-GPU job may share it
            seen["shared"] = True
    holding_devices(handler, policy, device=lambda: gpu0, root=root)(Ctx())
    out[module] = {**seen, "exclusive_after": free_for_exclusive()}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_every_kind_holds_its_gpu_while_it_runs(tmp_path):
    """A job of any kind takes its GPU (shared): a multi-GPU job cannot take that GPU until the job is done."""
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:9/0", "GENQUEUE_DATA_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", _KINDS_PROBE, str(tmp_path / "locks")],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(got) == {"text_generate", "text_train", "image_train_gan", "image_generate"}
    for module, seen in got.items():
        assert seen == {"exclusive_while_running": False, "shared": True, "exclusive_after": True}, module


def test_a_multi_gpu_policy_holds_them_exclusively(tmp_path):
    from worker.runtime import KindPolicy
    from worker.tasks.common import holding_devices

    policy = KindPolicy(default_timeout_seconds=60, devices=lambda params, device: params["n"])

    def handler(ctx):
        for index in (0, 1):
            with pytest.raises(Busy):
                with reserve_devices(gpu(index), 1, wait=busy, root=tmp_path / "locks"):
                    pass
        with reserve_devices(gpu(2), 1, wait=busy, root=tmp_path / "locks"):
            pass

    holding_devices(handler, policy, device=lambda: gpu(0), root=tmp_path / "locks")(Ctx({"n": 2}))
