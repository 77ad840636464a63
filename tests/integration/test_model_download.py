"""GET /models/{id}/download: a tar of the model's directory that from_pretrained (or the GAN loader) opens as is."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import torch

from shared.db import session_scope
from shared.ids import new_id
from shared.models import Model, ModelKind, ModelSource
from tests.factories import finished_job, trained_model


def extract(resp, into: Path) -> Path:
    """Extract the response's tar (with the safe ``data`` filter) and return its single top directory."""
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    assert resp.mimetype == "application/x-tar"
    body = resp.get_data()
    assert int(resp.headers["Content-Length"]) == len(body)
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        names = tar.getnames()
        tar.extractall(into, filter="data")
    tops = {n.split("/")[0] for n in names}
    assert len(tops) == 1, names
    return into / tops.pop()


def test_a_language_model_downloads_and_loads_with_from_pretrained(client, user, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = shutil.copytree(tiny_model_dir, tmp_path / "src")
    (src / "training_args.bin").write_bytes(b"a pickle never leaves the server")
    (src / ".tmp-partial").write_bytes(b"temp")
    job_id = finished_job(user.id)
    model = trained_model(user.id, job_id, src)  # stored in the object store, as a worker stores what it trained
    out = extract(client.get(f"/api/v1/models/{model.id}/download"), tmp_path / "dl")
    assert out.name == model.name
    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and "config.json" in files
    assert "training_args.bin" not in files and ".tmp-partial" not in files
    loaded = AutoModelForCausalLM.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for (name, a), (_, b) in zip(loaded.state_dict().items(), original.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    tok = AutoTokenizer.from_pretrained(out)
    assert tok("hello world")["input_ids"]


def test_a_gan_generator_downloads_and_loads_with_genqueues_loader(client, user, tmp_path):
    from worker.ml.gan.models import GeneratorSpec, build_generator, load_generator, save_generator

    spec = GeneratorSpec(architecture="dcgan", image_size=28, channels=1, latent_dim=16, features=8)
    gen_dir = save_generator(build_generator(spec), spec, tmp_path / "src" / "generator")
    model_id = new_id("mdl")
    with session_scope() as s:
        s.add(
            Model(
                id=model_id,
                name=f"gan-{model_id[-6:]}",
                kind=ModelKind.GAN_GENERATOR,
                source=ModelSource.TRAINED,
                owner_id=user.id,
                path=str(gen_dir),
                config={},
                metrics={},
                size_bytes=1,
            )
        )
    out = extract(client.get(f"/api/v1/models/{model_id}/download"), tmp_path / "dl")
    assert sorted(p.name for p in out.iterdir()) == ["generator.json", "generator.safetensors"]
    gen, loaded_spec = load_generator(out)
    ref, _ = load_generator(gen_dir)
    z = torch.randn(2, 16, 1, 1)
    assert loaded_spec == spec and torch.equal(gen(z), ref(z))


def test_a_hub_model_has_no_files_to_download(client):
    resp = client.get("/api/v1/models/gpt2/download")
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "not_downloadable"


def test_missing_files_are_409_and_unknown_models_404(client, user, tmp_path):
    model_id = new_id("mdl")
    with session_scope() as s:
        s.add(
            Model(
                id=model_id,
                name=f"gone-{model_id[-6:]}",
                kind=ModelKind.CAUSAL_LM,
                source=ModelSource.TRAINED,
                owner_id=user.id,
                path=str(tmp_path / "nothing"),
                config={},
                metrics={},
                size_bytes=0,
            )
        )
    resp = client.get(f"/api/v1/models/{model_id}/download")
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "model_files_missing"
    assert client.get("/api/v1/models/mdl_nope/download").status_code == 404
