"""A multi-GPU text.train holds its GPUs exclusively; one-GPU jobs share theirs (flock files, no GPU needed)."""

from __future__ import annotations

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
