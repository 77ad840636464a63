"""text.train and the GAN kinds end to end through the API with a real worker process."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from PIL import Image

from shared.corpus import stdlib_corpus_text
from tests.integration.test_generate_flow import wait_status

pytestmark = pytest.mark.usefixtures("worker")


def upload(client, name: str, data: bytes):
    return client.post("/api/v1/datasets", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def metric_series(client, job_id: str, name: str) -> list[tuple[int, float]]:
    items = client.get(f"/api/v1/jobs/{job_id}/events?type=metric&limit=5000").get_json()["items"]
    return [(e["step"], e["data"][name]) for e in items if name in (e["data"] or {})]


def test_train_from_scratch_registers_a_model_that_generates(client):
    corpus = stdlib_corpus_text(max_chars=80_000).encode()
    ds = upload(client, "stdlib.txt", corpus)
    assert ds.status_code == 201, ds.get_json()
    again = upload(client, "same-again.txt", corpus)
    assert again.status_code == 200 and again.get_json()["id"] == ds.get_json()["id"]  # same sha256
    stats = ds.get_json()["stats"]
    assert stats["documents"] > 10 and stats["approx_tokens"] > 1000
    params = {
        "base_model": "scratch",
        "size": "tiny",
        "vocab_size": 512,
        "dataset_id": ds.get_json()["id"],
        "block_size": 64,
        "batch_size": 8,
        "max_steps": 60,
        "eval_every": 20,
        "checkpoint_every": 30,
        "learning_rate": 2e-3,
        "warmup_steps": 5,
        "name": "stdlib-tiny",
    }
    job = client.post("/api/v1/jobs", json={"kind": "text.train", "params": params}).get_json()
    done = wait_status(client, job["id"], ("succeeded", "failed"), timeout=300)
    assert done["status"] == "succeeded", done
    assert done["progress"]["done"] == 60 and done["model_id"]
    val = metric_series(client, job["id"], "val_loss")
    assert len(val) >= 2 and val[-1][1] < val[0][1], val
    assert len(metric_series(client, job["id"], "train_loss")) >= 30
    model = client.get(f"/api/v1/models/{done['model_id']}").get_json()
    assert model["name"] == "stdlib-tiny" and model["source"] == "trained" and model["job_id"] == job["id"]
    assert model["metrics"]["val_loss"] > 0 and model["dataset_id"] == ds.get_json()["id"]
    gen = client.post(
        "/api/v1/jobs",
        json={
            "kind": "text.generate",
            "params": {"model": model["id"], "prompts": ["Return the", "This module"], "max_new_tokens": 12},
        },
    ).get_json()
    gen_done = wait_status(client, gen["id"], ("succeeded", "failed"))
    assert gen_done["status"] == "succeeded", gen_done
    rows = client.get(f"/api/v1/jobs/{gen['id']}/results?format=json").get_json()["items"]
    assert len(rows) == 2 and all(r["text"] for r in rows)


@pytest.mark.slow
def test_gan_on_digits_then_generate_images(client):
    params = {
        "dataset": "digits",
        "architecture": "dcgan",
        "image_size": 28,
        "max_steps": 60,
        "batch_size": 32,
        "sample_every": 20,
        "checkpoint_every": 30,
        "name": "digits-gan",
    }
    job = client.post("/api/v1/jobs", json={"kind": "image.train_gan", "params": params}).get_json()
    done = wait_status(client, job["id"], ("succeeded", "failed"), timeout=300)
    assert done["status"] == "succeeded", done
    samples = client.get(f"/api/v1/jobs/{job['id']}/artifacts?role=sample").get_json()["items"]
    steps = [a["step"] for a in samples]
    assert steps == sorted(steps) and steps[-1] == 60 and len(steps) >= 3
    png = client.get(f"/api/v1/artifacts/{samples[-1]['id']}")
    assert png.status_code == 200 and png.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert metric_series(client, job["id"], "d_loss") and metric_series(client, job["id"], "fd")
    gen_model = client.get(f"/api/v1/models/{done['model_id']}").get_json()
    assert gen_model["kind"] == "gan-generator" and gen_model["name"] == "digits-gan"

    img = client.post(
        "/api/v1/jobs", json={"kind": "image.generate", "params": {"model": "digits-gan", "count": 10, "seed": 5}}
    ).get_json()
    img_done = wait_status(client, img["id"], ("succeeded", "failed"))
    assert img_done["status"] == "succeeded", img_done
    arts = client.get(f"/api/v1/jobs/{img['id']}/artifacts").get_json()["items"]
    images = [a for a in arts if a["role"] == "image"]
    assert len(images) == 10 and {a["role"] for a in arts} == {"image", "grid", "archive"}
    first = Image.open(io.BytesIO(client.get(f"/api/v1/artifacts/{images[0]['id']}").data))
    assert first.size == (28, 28)
    assert first.text["job_id"] == img["id"] and first.text["model_id"] == gen_model["id"]
    assert "AI-generated" in first.text["Software"]
    archive = next(a for a in arts if a["role"] == "archive")
    with zipfile.ZipFile(io.BytesIO(client.get(f"/api/v1/artifacts/{archive['id']}").data)) as z:
        assert len([n for n in z.namelist() if n.endswith(".png")]) == 10
        label = json.loads(z.read("provenance.json"))  # the zip's provenance (shared/provenance.py)
    assert label["ai_generated"] is True and label["files"] == [f"image-{i:04d}.png" for i in range(10)]
    assert label["provenance"]["job_id"] == img["id"] and label["provenance"]["seed"] == 5
    assert label["provenance"]["model_id"] == gen_model["id"] and label["provenance"]["model_name"] == "digits-gan"
    assert first.text["genqueue_version"] == label["provenance"]["genqueue_version"]
