"""Adding models to the registry: local directories (operator), hub ids (operator), trained models (worker)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.orm import Session

from shared.db import session_scope
from shared.ids import new_id
from shared.models import Model, ModelKind, ModelSource
from shared.weights import context_length_of, pickle_files


class RegistrationError(ValueError):
    pass


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def describe_model_dir(path: Path) -> tuple[str, dict]:
    """(kind, config) of a local model directory; refuses pickle weights (only safetensors load)."""
    path = Path(path)
    if not path.is_dir():
        raise RegistrationError(f"{path} is not a directory")
    if (path / "generator.json").exists():
        if not (path / "generator.safetensors").exists():
            raise RegistrationError(f"{path}: generator weights must be generator.safetensors (pickle is refused)")
        return ModelKind.GAN_GENERATOR, json.loads((path / "generator.json").read_text())
    if not (path / "config.json").exists():
        raise RegistrationError(f"{path}: neither a Hugging Face model (config.json) nor a generator (generator.json)")
    if not list(path.glob("*.safetensors")):
        pickles = pickle_files(path)
        hint = f" (found pickle files {pickles}, which genqueue refuses to load)" if pickles else ""
        raise RegistrationError(f"{path}: no .safetensors weights{hint}")
    cfg = json.loads((path / "config.json").read_text())
    try:
        ctx = context_length_of(cfg)
    except ValueError:
        ctx = 1024  # what GPT-2 takes; a config that declares none is checked again when the model loads
    return ModelKind.CAUSAL_LM, {
        "context_length": ctx,
        "model_type": cfg.get("model_type"),
        "n_layer": cfg.get("n_layer"),
        "n_embd": cfg.get("n_embd"),
    }


def register_local_model(name: str, path: str | None, hub_id: str | None = None, owner_id: str | None = None) -> Model:
    """Register a local directory (or a hub id) under ``name``; visible to everyone unless ``owner_id``."""
    if hub_id:
        kind, config, source, size, abspath = ModelKind.CAUSAL_LM, {"context_length": 1024}, ModelSource.HUB, 0, None
    elif path:
        abspath = str(Path(path).resolve())
        kind, config = describe_model_dir(Path(abspath))
        source, size = ModelSource.REGISTERED, dir_size(Path(abspath))
    else:
        raise RegistrationError("give a directory PATH or --hub ID")
    with session_scope() as s:
        model = Model(
            id=new_id("mdl"),
            name=name,
            kind=kind,
            source=source,
            owner_id=owner_id,
            path=abspath,
            hub_id=hub_id,
            config=config,
            metrics={},
            size_bytes=size,
        )
        s.add(model)
    return model


def register_trained(
    s: Session,
    *,
    model_id: str,
    object_key: str,
    name: str,
    kind: str,
    path: Path,
    owner_id: str,
    job_id: str,
    dataset_id: str | None,
    base: str | None,
    metrics: dict,
    config: dict,
) -> Model:
    """Record a model a job produced, stored under ``object_key`` (inside the job's fenced transaction); ``path`` is
    the local directory it was uploaded from (for its size)."""
    model = Model(
        id=model_id,
        name=name,
        kind=kind,
        source=ModelSource.TRAINED,
        owner_id=owner_id,
        object_key=object_key,
        base=base,
        job_id=job_id,
        dataset_id=dataset_id,
        config=config,
        metrics=metrics,
        size_bytes=dir_size(path),
    )
    s.add(model)
    s.flush()
    return model
