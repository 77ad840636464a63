"""text.train_tagger and text.tag end to end through the API with a real worker process, and their bad input."""

from __future__ import annotations

import csv
import io
import json

import pytest

from shared.tagcorpus import conll, jsonl, sentences
from tests.integration.test_api_validation import assert_error
from tests.integration.test_generate_flow import wait_status
from tests.integration.test_training_flow import metric_series, upload
from tests.unit.test_templates import login

pytestmark = pytest.mark.usefixtures("worker")

PARAMS = {
    "base_model": "scratch",
    "size": "tiny",
    "vocab_size": 400,
    "max_steps": 60,
    "batch_size": 16,
    "learning_rate": 2e-3,
    "eval_every": 20,
    "checkpoint_every": 30,
    "max_length": 64,
}


def submit(client, kind: str, params: dict):
    return client.post("/api/v1/jobs", json={"kind": kind, "params": params})


def test_train_a_tagger_then_tag_texts(client, app, user):
    ds = upload(client, "ner.conll", conll(sentences(240, seed=0)).encode())
    assert ds.status_code == 201, ds.get_json()
    body = ds.get_json()
    assert body["kind"] == "tagged" and body["stats"]["sentences"] == 240
    assert body["stats"]["label_counts"]["B-PER"] > 0 and body["stats"]["scheme"] == "BIO"
    val = upload(client, "ner-val.jsonl", jsonl(sentences(40, seed=1)).encode()).get_json()
    assert val["kind"] == "tagged" and val["format"] == "jsonl"
    params = {**PARAMS, "dataset_id": body["id"], "validation_dataset_id": val["id"], "name": "ner-tiny"}
    job = submit(client, "text.train_tagger", params).get_json()
    done = wait_status(client, job["id"], ("succeeded", "failed"), timeout=300)
    assert done["status"] == "succeeded", done["error"]
    f1 = metric_series(client, job["id"], "f1")
    assert len(f1) == 3 and f1[-1][1] > f1[0][1], f1
    for name in ("train_loss", "val_loss", "precision", "recall", "accuracy"):
        assert metric_series(client, job["id"], name), name
    report = done["summary"]["report"]
    assert set(report) == {"PER", "LOC", "ORG"} and all(
        set(r) == {"precision", "recall", "f1", "support"} for r in report.values()
    )
    model = client.get(f"/api/v1/models/{done['model_id']}").get_json()
    assert model["kind"] == "token-classifier" and model["name"] == "ner-tiny"
    assert model["metrics"]["f1"] == pytest.approx(f1[-1][1])

    texts = [
        "Yesterday Ada Lovelace met Wei Chen at the Red Cross .",
        {"id": "t2", "text": "Flights from Oslo to Lima were cancelled ."},
    ]
    tag = submit(client, "text.tag", {"model": "ner-tiny", "texts": texts, "batch_size": 1}).get_json()
    tagged = wait_status(client, tag["id"], ("succeeded", "failed"))
    assert tagged["status"] == "succeeded", tagged
    rows = client.get(f"/api/v1/jobs/{tag['id']}/results?format=json").get_json()["items"]
    assert [r["index"] for r in rows] == [0, 1] and rows[1]["id"] == "t2"
    for r in rows:
        for e in r["entities"]:
            assert r["text"][e["start"] : e["end"]] == e["text"] and set(e) == {
                "label",
                "text",
                "start",
                "end",
                "score",
            }
    assert any(e["label"] == "PER" for e in rows[0]["entities"])
    lines = client.get(f"/api/v1/jobs/{tag['id']}/results").get_data(as_text=True).splitlines()
    assert [json.loads(line)["text"] for line in lines] == [texts[0], texts[1]["text"]]
    table = list(
        csv.DictReader(io.StringIO(client.get(f"/api/v1/jobs/{tag['id']}/results?format=csv").get_data(as_text=True)))
    )
    assert len(table) == 2 and json.loads(table[0]["entities"]) == rows[0]["entities"]
    more = {**PARAMS, "base_model": "ner-tiny", "dataset_id": val["id"], "max_steps": 10, "eval_every": 10}
    cont = submit(client, "text.train_tagger", {**more, "learning_rate": 1e-4}).get_json()  # continue from it
    cont_done = wait_status(client, cont["id"], ("succeeded", "failed"), timeout=300)
    assert cont_done["status"] == "succeeded", cont_done["error"]
    assert client.get(f"/api/v1/models/{cont_done['model_id']}").get_json()["base"] == "ner-tiny"
    dashboard, _ = login(app, user.token)
    page = dashboard.get(f"/jobs/{tag['id']}").get_data(as_text=True)
    assert 'class="entity"' in page and "Tagged texts" in page
    train_page = dashboard.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert "Per-entity scores" in train_page and '<th scope="row">PER</th>' in train_page


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("bad.conll", b"Ada B-PER\nLovelace\n", "line 2"),
        ("bad.conll", b"Ada B-PER\nLovelace NNP PER\n", "line 2: 'PER' mixes IO tags"),
        ("bad.conll", b"-DOCSTART- -X- O\n\nAda B-PER\n\nx <script>\n", "line 5"),
        ("bad.jsonl", b'{"tokens": ["a", "b"], "tags": ["O"]}\n', "line 1: 2 tokens but 1 tags"),
        ("bad.jsonl", b'{"tokens": ["a"], "tags": ["O"]}\n{"tokens": "ab", "tags": ["O"]}\n', "line 2"),
        ("many.conll", "\n\n".join(f"w{i} B-T{i}" for i in range(300)).encode(), "over the limit of 256"),
    ],
)
def test_bad_tagged_uploads_are_422_with_the_line(client, name, data, message):
    err = assert_error(upload(client, name, data), 422, "invalid_dataset")
    assert message in err["message"], err


def test_bad_tagger_submissions_are_4xx(client):
    tagged = upload(client, "ner.conll", conll(sentences(20, seed=0)).encode()).get_json()
    text = upload(client, "plain.txt", b"one line\nanother line\n").get_json()
    cases = [
        ("text.train_tagger", {"dataset_id": text["id"]}, "holds text, not tagged"),
        ("text.train_tagger", {"dataset_id": "ds_nope"}, "unknown dataset"),
        ("text.train_tagger", {"dataset_id": tagged["id"], "base_model": "gpt2"}, "is a causal-lm"),
        ("text.train_tagger", {"dataset_id": tagged["id"], "size": "huge"}, "size"),
        ("text.train_tagger", {"dataset_id": tagged["id"], "max_steps": 5, "epochs": 1}, "not both"),
        ("text.train_tagger", {"dataset_id": tagged["id"], "max_length": 4}, "max_length"),
        ("text.train_tagger", {"dataset_id": tagged["id"], "lr_schedule": "cosine"}, "lr_schedule"),
        ("text.tag", {"model": "gpt2", "texts": ["hi"]}, "is a causal-lm"),
        ("text.tag", {"model": "dslim/bert-base-NER"}, "exactly one of"),
        ("text.tag", {"model": "dslim/bert-base-NER", "texts": []}, "must not be empty"),
        ("text.tag", {"model": "dslim/bert-base-NER", "texts": ["  "]}, "text 0 is empty"),
        ("text.tag", {"model": "dslim/bert-base-NER", "dataset_id": tagged["id"]}, "holds tagged, not text"),
        ("text.tag", {"model": "no-such-tagger", "texts": ["hi"]}, "unknown model"),
    ]
    for kind, params, message in cases:
        err = assert_error(submit(client, kind, params), 422)
        assert message in json.dumps(err), (kind, params, err)
