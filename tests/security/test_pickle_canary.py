"""Malicious pickle checkpoints: unpickling them would create a canary file. genqueue must refuse every one of them
(registration, the LM and generator loaders, training checkpoints) and the canary must never appear.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch


class Evil:
    """Unpickling this calls ``open(canary, "w")``: any code could run in its place."""

    def __init__(self, canary: Path):
        self.canary = str(canary)

    def __reduce__(self):
        return open, (self.canary, "w")


def write_evil(path: Path, canary: Path, fmt: str = "torch") -> Path:
    """A pickle-based checkpoint at ``path``: torch's zip format, or its legacy (pre-1.6) stream format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": Evil(canary)}, path, _use_new_zipfile_serialization=fmt == "torch")
    return path


@pytest.fixture
def canary(tmp_path) -> Path:
    return tmp_path / "canary-pwned"


def test_the_payload_really_runs_code_when_unpickled(tmp_path):
    """Control: the payload, loaded unsafely, does create its canary (so a missing canary below means something)."""
    control = tmp_path / "control-canary"
    for fmt in ("torch", "legacy"):
        control.unlink(missing_ok=True)
        path = write_evil(tmp_path / f"control.{fmt}.pt", control, fmt)
        torch.load(path, weights_only=False)
        assert control.exists(), fmt


# -- registration: `genqueue models add` / register_local_model -------------------------------------------------------


def hf_dir_with_only_pickle(root: Path, canary: Path, tiny_model_dir: Path | None = None) -> Path:
    d = root / "pickle-model"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 128, "n_embd": 32}))
    if tiny_model_dir is not None:  # a real config and tokenizer, so only the weights are missing
        for f in tiny_model_dir.iterdir():
            if not f.name.endswith(".safetensors"):
                shutil.copy(f, d / f.name)
    write_evil(d / "pytorch_model.bin", canary)
    return d


def model_rows(name: str) -> int:
    from sqlalchemy import func, select

    from shared.db import session_scope
    from shared.models import Model

    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(Model).where(Model.name == name))


def test_register_local_model_refuses_a_pickle_only_directory(clean_db, tmp_path, canary):
    from shared.registration import RegistrationError, register_local_model

    d = hf_dir_with_only_pickle(tmp_path, canary)
    with pytest.raises(RegistrationError, match=r"pytorch_model\.bin.*refuses"):
        register_local_model("evil-lm", str(d))
    assert not canary.exists()
    assert model_rows("evil-lm") == 0


def test_models_add_cli_refuses_it_with_a_clear_error(clean_db, tmp_path, canary, capsys):
    from shared.cli.main import main

    d = hf_dir_with_only_pickle(tmp_path, canary)
    assert main(["models", "add", "evil-cli", str(d)]) == 2
    err = capsys.readouterr().err
    assert "no .safetensors weights" in err and "pytorch_model.bin" in err and "Traceback" not in err
    assert not canary.exists()
    assert model_rows("evil-cli") == 0


def test_register_refuses_a_pickled_generator(clean_db, tmp_path, canary):
    from shared.registration import RegistrationError, register_local_model
    from worker.ml.gan.models import GeneratorSpec

    d = tmp_path / "evil-gen"
    d.mkdir()
    (d / "generator.json").write_text(GeneratorSpec(architecture="mlp").to_json())
    write_evil(d / "generator.pt", canary)
    with pytest.raises(RegistrationError, match="pickle is refused"):
        register_local_model("evil-gen", str(d))
    assert not canary.exists()


# -- the loaders the worker uses --------------------------------------------------------------------------------------


def test_load_causal_lm_refuses_pickle_weights(tmp_path, canary, tiny_model_dir):
    from worker.ml.common import pick_device
    from worker.ml.lm.loading import UnsafeWeightsError, load_causal_lm

    d = hf_dir_with_only_pickle(tmp_path, canary, tiny_model_dir)
    with pytest.raises(UnsafeWeightsError, match="safetensors only"):
        load_causal_lm(str(d), pick_device("cpu"))
    assert not canary.exists()


def test_load_causal_lm_never_reads_a_pickle_beside_safetensors(tmp_path, canary, tiny_model_dir):
    """A directory that also holds a (malicious) pytorch_model.bin loads from its safetensors and ignores the pickle."""
    from worker.ml.common import pick_device
    from worker.ml.lm.loading import load_causal_lm

    d = tmp_path / "mixed"
    shutil.copytree(tiny_model_dir, d)
    write_evil(d / "pytorch_model.bin", canary)
    lm = load_causal_lm(str(d), pick_device("cpu"))
    assert lm.context_length == 128
    assert not canary.exists()


def test_load_generator_refuses_pickle_weights(tmp_path, canary):
    from worker.ml.gan.models import GeneratorSpec, UnsafeWeightsError, load_generator

    d = tmp_path / "gen"
    d.mkdir()
    (d / "generator.json").write_text(GeneratorSpec(architecture="mlp").to_json())
    write_evil(d / "generator.pth", canary, "legacy")
    with pytest.raises(UnsafeWeightsError, match="safetensors"):
        load_generator(d)
    assert not canary.exists()


@pytest.mark.parametrize("fmt", ["torch", "legacy"])
def test_load_checkpoint_refuses_a_malicious_state_pt(tmp_path, canary, fmt):
    """``state.pt`` is read with ``torch.load(weights_only=True)``: a pickle that calls anything is refused."""
    from worker.ml.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint

    net = torch.nn.Linear(4, 2)
    root = tmp_path / "ckpts"
    save_checkpoint(root, 10, {"net": net}, {"optimizer": {}, "extra": [1, 2, 3]})
    ckpt = latest_checkpoint(root)
    assert load_checkpoint(ckpt, {"net": torch.nn.Linear(4, 2)})["step"] == 10  # the honest one loads
    write_evil(ckpt / "state.pt", canary, fmt)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(ckpt, {"net": torch.nn.Linear(4, 2)})
    assert not canary.exists()
