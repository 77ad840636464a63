"""shared/provenance.py, the one owner of the AI-generated label: PNG chunks, CSV columns, archive provenance.json."""

from __future__ import annotations

import io
import json
import zipfile

from shared.provenance import AI_LABEL, CSV_COLUMNS, archive_json, csv_columns, label_row, png_text, provenance
from worker.ml.gan.images import zip_pngs
from worker.ml.gan.sample import AI_LABEL as SAMPLE_LABEL


def prov():
    return provenance(model_id="mdl_1", model_name="m", job_id="job_1", seed=None, created_at="2026-01-01T00:00:00Z")


def test_images_and_text_share_one_label():
    assert SAMPLE_LABEL is AI_LABEL
    text = png_text({"job_id": "job_1", "seed": "caller", "Software": "x"}, seed=3, index=2)
    assert text == {"job_id": "job_1", "seed": "3", "ai_generated": "true", "Software": AI_LABEL, "index": "2"}


def test_csv_columns_flatten_the_provenance():
    row = label_row({"index": 0, "text": "hi"}, prov())
    assert row["ai_generated"] is True and row["provenance"]["label"] == AI_LABEL
    flat = csv_columns(row)
    assert set(CSV_COLUMNS) <= set(flat) and flat["provenance_seed"] == "" and flat["provenance_model_id"] == "mdl_1"
    assert "provenance" not in flat


def test_an_image_zip_carries_provenance_json():
    data = zip_pngs(
        [b"png-a", b"png-b"], ["a.png", "b.png"], extra={"provenance.json": archive_json(prov(), ["a.png"])}
    )
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.namelist() == ["a.png", "b.png", "provenance.json"]
        doc = json.loads(z.read("provenance.json"))
    assert doc["ai_generated"] is True and doc["provenance"]["job_id"] == "job_1" and doc["files"] == ["a.png"]
