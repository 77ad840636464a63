"""Weight-safety rules and model-config facts that the web, the registry and the worker all apply.

genqueue loads weights only from safetensors (or ``torch.load(weights_only=True)`` for its own optimizer state):
unpickling a file can run arbitrary code. Plain Python, no torch: the web and the CLI import it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Files a pickle-based checkpoint would use; genqueue never loads them.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
CONTEXT_FIELDS = ("n_positions", "max_position_embeddings", "n_ctx")


class UnsafeWeightsError(ValueError):
    """A model directory offers weights only in a pickle format (``pytorch_model.bin``, ``*.pt``…)."""


def pickle_files(directory: Path) -> list[str]:
    """The names of the pickle-format files directly in ``directory``, sorted."""
    return sorted(p.name for p in Path(directory).iterdir() if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)


def context_length_of(config: Mapping[str, Any] | Any) -> int:
    """The context length (tokens) a model config declares: a ``config.json`` mapping or a ``PretrainedConfig``."""
    for name in CONTEXT_FIELDS:
        value = config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"{type(config).__name__} declares no context length ({', '.join(CONTEXT_FIELDS)})")
