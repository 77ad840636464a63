"""The device of this worker process, picked once (in the pool child, after fork)."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

import torch

from shared.settings import get_settings
from worker.ml.common import Device, cpu_has_native_bf16, pick_device

__all__ = ["cpu_has_native_bf16", "current_device", "gan_device", "reserve_devices"]


@lru_cache(maxsize=1)
def current_device() -> Device:
    return pick_device(get_settings().device)


def gan_device() -> Device:
    """GAN training also autocasts to bf16 on a CPU with native bf16 (about 1.7x faster per step there, same
    Fréchet distance in our runs); ``GENQUEUE_GAN_CPU_BF16=0`` keeps it in fp32."""
    device = current_device()
    if device.is_cuda or not get_settings().gan_cpu_bf16 or not cpu_has_native_bf16():
        return device
    return Device(device.torch_device, torch.bfloat16)


@contextlib.contextmanager
def reserve_devices(
    device: Device, n: int, wait: Callable[[], None] = lambda: None, root: Path | None = None
) -> Iterator[None]:
    """Hold this worker host's GPUs ``device .. device + n - 1`` for a job: exclusively when ``n > 1`` (a multi-GPU
    job never shares a GPU with another reserving job), shared when ``n == 1``. ``flock`` files under the data dir,
    released when the job's process ends however it ends; ``wait()`` runs between tries (it may raise Stopped).
    A CPU device reserves nothing."""
    if not device.is_cuda:
        yield
        return
    base = device.torch_device.index or 0
    root = root or get_settings().data_dir / "locks"
    root.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_EX if n > 1 else fcntl.LOCK_SH
    with contextlib.ExitStack() as held:
        for index in range(base, base + n):
            f = held.enter_context(open(root / f"gpu-{index}.lock", "a+"))
            while True:
                try:
                    fcntl.flock(f, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    wait()
                    time.sleep(1.0)
        yield
