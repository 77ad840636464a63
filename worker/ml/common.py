"""What every ML function in genqueue shares: the report callback, cancellation, device choice.

The ML code knows nothing of Celery, Flask or the database. A task hands it plain arguments and a
``report(step, total, **metrics)`` callback; the callback stores progress and metrics, and is also
where cancellation (or a lost lease) is noticed: it raises :class:`Stopped` and the ML function lets
that propagate after saving what it has.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol, TypeVar

import torch

logger = logging.getLogger(__name__)


class Stopped(Exception):
    """Raised by a report callback to stop an ML loop cooperatively.

    ``reason`` is ``"cancelled"`` (the user asked), ``"shutdown"`` (the worker is going away and hands the job
    back), ``"timeout"`` or ``"fenced"`` (a newer attempt owns the job). Loops catch nothing: they save a
    checkpoint in a ``try/except Stopped`` only where the issue asks for one, then re-raise.
    """

    def __init__(self, reason: str = "cancelled"):
        super().__init__(reason)
        self.reason = reason


class Report(Protocol):
    """``report(step, total, **metrics)``: progress ``step`` of ``total`` plus named float metrics.

    May raise :class:`Stopped`.
    """

    def __call__(self, step: int, total: int, **metrics: float) -> None: ...


def no_report(step: int, total: int, **metrics: float) -> None:
    """A report callback that does nothing (tests, benchmarks)."""


C = TypeVar("C")


def config_from_params(config_cls: type[C], params: Mapping[str, Any], **overrides: Any) -> C:
    """A job's ML config: every field of ``config_cls`` that its validated ``params`` set, then ``overrides``.

    Params and configs share their defaults (``shared/defaults.py``); fields the API does not expose (dropout,
    gradient clipping, …) keep the config's own.
    """
    names = {f.name for f in fields(config_cls)}
    return config_cls(**{**{k: v for k, v in params.items() if k in names}, **overrides})


@dataclass(frozen=True)
class Device:
    """Where to run and in which precision."""

    torch_device: torch.device
    autocast_dtype: torch.dtype | None  # bf16 on CUDA when supported, else None (fp32)

    @property
    def is_cuda(self) -> bool:
        return self.torch_device.type == "cuda"

    @property
    def name(self) -> str:
        if self.is_cuda:
            return torch.cuda.get_device_name(self.torch_device)
        return "cpu"


class DeviceUnavailable(ValueError):
    """The device asked for does not exist on this machine (or is not a device at all)."""


def pick_device(prefer: str | None = None) -> Device:
    """The device ``prefer`` names (``"cpu"``, ``"cuda"``, ``"cuda:N"``), or by default CUDA where present, else CPU.

    CUDA runs with bf16 autocast where the GPU supports it; the CPU in fp32. A device that cannot be honoured (a
    CUDA index this machine does not have, CUDA on a machine without it, an unknown name) raises
    :class:`DeviceUnavailable` rather than quietly running somewhere else.
    """
    dev = resolve_device(prefer)
    if dev.type == "cpu":
        return Device(dev, None)
    return Device(dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else None)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 autocast roughly halves a
    training step's time; elsewhere oneDNN emulates it and fp32 is faster."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


PRECISIONS = ("auto", "fp32", "bf16")


def with_precision(device: Device, precision: str) -> Device:
    """``device`` with the autocast a training job asked for: ``fp32`` (none), ``bf16``, or ``auto`` — bf16 on CUDA
    where the GPU supports it and on a CPU with native bf16, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "fp32":
        return Device(device.torch_device, None)
    if precision == "bf16":
        return Device(device.torch_device, torch.bfloat16)
    if device.is_cuda:
        return device
    return Device(device.torch_device, torch.bfloat16 if cpu_has_native_bf16() else None)


def resolve_device(prefer: str | None = None) -> torch.device:
    """The ``torch.device`` that :func:`pick_device` would use, checked without initialising CUDA (safe before a
    fork); raises :class:`DeviceUnavailable` for one this machine cannot honour."""
    if prefer in (None, ""):
        prefer = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(prefer)
    except RuntimeError as exc:
        raise DeviceUnavailable(f"unknown device {prefer!r}") from exc
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise DeviceUnavailable(f"device {prefer!r}: only cpu and cuda[:N] are supported")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = 0 if dev.index is None else dev.index
    if index >= count:
        raise DeviceUnavailable(f"device {prefer!r}: this machine has {count} CUDA device(s)")
    return torch.device("cuda", index)
