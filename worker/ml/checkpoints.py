"""Atomic, prunable, pickle-free training checkpoints.

Layout under a job's checkpoint root::

    step-00000100/
        <module>.safetensors     one per network (weights, via safetensors' save_model: tied weights are fine)
        state.pt                 optimizer/scheduler state dicts, RNG states, step, data position, extra meta
                                 (tensors and plain containers only: loaded with ``weights_only=True``)

A checkpoint is written into a temporary sibling directory, fsynced, then renamed into place; a directory
named ``step-*`` is therefore always complete. The newest ``keep`` are kept, older ones pruned.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

logger = logging.getLogger(__name__)

PREFIX = "step-"


def rng_state() -> dict[str, Any]:
    """Every RNG a training loop touches, as tensors and plain values (safe for ``weights_only`` loading)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(_as_tuple(state["python"]))
    np_s = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_s["keys"].cpu().numpy().astype(np.uint32),
            np_s["pos"],
            np_s["has_gauss"],
            np_s["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())  # the state may have been mapped to the training device
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` wants nested tuples; a round trip may hand back lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value


def save_checkpoint(
    root: Path, step: int, modules: dict[str, torch.nn.Module], state: dict[str, Any], keep: int = 3
) -> Path:
    """Write modules' weights (safetensors) and ``state`` (torch.save) atomically; prune to ``keep``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, module in modules.items():
        save_model(module, str(tmp / f"{name}.safetensors"))
    torch.save({**state, "step": step}, tmp / "state.pt")
    for f in tmp.iterdir():
        _fsync(f)
    if final.exists():  # the same step saved again (e.g. cancel right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(root)
    prune(root, keep)
    logger.info("checkpoint saved: %s", final)
    return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.pt").exists()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and stale temporary directories."""
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in Path(root).glob(".tmp-*"):
        if not tmp.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(tmp, ignore_errors=True)


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module], device: torch.device | str = "cpu") -> dict:
    """Load weights into ``modules`` in place and return the saved ``state`` dict (no pickle code runs)."""
    path = Path(path)
    for name, module in modules.items():
        missing, unexpected = load_model(module, str(path / f"{name}.safetensors"), strict=True, device=str(device))
        if missing or unexpected:  # strict=True raises first; kept for clarity
            raise ValueError(f"checkpoint {path} does not match module {name}")
    return torch.load(path / "state.pt", map_location=device, weights_only=True)
