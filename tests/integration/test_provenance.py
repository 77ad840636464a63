"""Labelled outputs: every text result carries ``ai_generated`` and its provenance in JSONL, JSON, CSV and the zip."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest

from shared.provenance import AI_LABEL, genqueue_version
from tests.integration.test_generate_flow import wait_status

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def done_job(client, tiny_model):
    resp = client.post(
        "/api/v1/jobs",
        json={
            "kind": "text.generate",
            "params": {"model": tiny_model.name, "prompts": ["a", "b", "c"], "max_new_tokens": 3, "seed": 11},
        },
    )
    assert resp.status_code == 201, resp.get_json()
    job = wait_status(client, resp.get_json()["id"], ("succeeded", "failed"))
    assert job["status"] == "succeeded", job
    return job, tiny_model


def test_every_format_carries_the_label_and_the_provenance(client, done_job):
    job, model = done_job
    want = {
        "model_id": model.id,
        "model_name": model.name,
        "job_id": job["id"],
        "seed": 11,
        "genqueue_version": genqueue_version(),
        "label": AI_LABEL,
    }
    lines = [json.loads(x) for x in client.get(f"/api/v1/jobs/{job['id']}/results").get_data(as_text=True).splitlines()]
    assert len(lines) == 3
    for row in lines:
        assert row["ai_generated"] is True
        assert {k: row["provenance"][k] for k in want} == want
        assert row["provenance"]["created_at"].endswith("Z")
    items = client.get(f"/api/v1/jobs/{job['id']}/results?format=json").get_json()["items"]
    assert items == lines
    table = list(
        csv.DictReader(io.StringIO(client.get(f"/api/v1/jobs/{job['id']}/results?format=csv").get_data(as_text=True)))
    )
    assert [r["text"] for r in table] == [r["text"] for r in lines]
    for r in table:
        assert r["ai_generated"] == "true" and r["provenance_job_id"] == job["id"] and r["provenance_seed"] == "11"
        assert r["provenance_model_id"] == model.id and r["provenance_genqueue_version"] == genqueue_version()
    resp = client.get(f"/api/v1/jobs/{job['id']}/results?format=zip")
    assert resp.status_code == 200 and resp.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(resp.data)) as z:
        assert sorted(z.namelist()) == ["provenance.json", "results.jsonl"]
        assert [json.loads(x) for x in z.read("results.jsonl").decode().splitlines()] == lines
        label = json.loads(z.read("provenance.json"))
    assert label["ai_generated"] is True and label["files"] == ["results.jsonl"]
    assert label["provenance"]["job_id"] == job["id"] and label["provenance"]["model_name"] == model.name


def test_a_bad_format_is_422(client, done_job):
    job, _ = done_job
    assert client.get(f"/api/v1/jobs/{job['id']}/results?format=xml").status_code == 422
