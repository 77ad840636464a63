"""The job-kind registry: every derived table follows it, and an unknown kind never trips the publish breaker."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import get_args

import pytest

from shared import broker
from shared.kinds import KINDS, PARAMS_BY_KIND, TASK_BY_KIND, UnknownKind, get_kind, presentation
from shared.schemas.api import JobCreate, Kind

ROOT = Path(__file__).resolve().parents[2]


def test_every_table_is_derived_from_the_registry():
    assert set(PARAMS_BY_KIND) == set(TASK_BY_KIND) == set(get_args(Kind)) == set(KINDS)
    assert broker.TASK_BY_KIND is TASK_BY_KIND
    assert JobCreate.model_json_schema()["properties"]["kind"]["enum"] == list(KINDS)
    from web.dashboard.format import KIND_LABELS
    from web.services.admission import CHECKS

    assert set(CHECKS) == set(KINDS) and all(CHECKS[n].__name__ == k.admission for n, k in KINDS.items())
    assert KIND_LABELS == {n: k.label for n, k in KINDS.items()}
    assert set(presentation()) == set(KINDS)


@pytest.mark.parametrize("name", list(KINDS))
def test_each_kind_has_its_task_module_and_job_page_part(name):
    """The module the Celery app includes exists and registers the registry's task name (checked on the source:
    importing it would start a Celery app); the template part the job page includes exists."""
    kind = KINDS[name]
    spec = importlib.util.find_spec(kind.module)
    assert spec is not None and spec.origin, kind.module
    source = Path(spec.origin).read_text()
    tree = ast.parse(source)
    assert "KIND = kind_of(__name__)" in source and "@app.task(name=KIND.task" in source
    assert any(isinstance(n, ast.FunctionDef) and n.name == "handle" for n in tree.body)
    if kind.part:
        assert (ROOT / "web" / "templates" / "jobparts" / f"{kind.part}.html").exists()


def test_celery_includes_every_kind_module():
    tree = ast.parse((ROOT / "worker" / "celery_app.py").read_text())
    source = ast.unparse(tree)
    assert "k.module for k in KINDS.values()" in source


def test_unknown_kind_is_not_published_and_does_not_trip_the_breaker(caplog):
    broker._publish_breaker.reset()
    assert broker.publish("job_x", "text.nonexistent", "gpu", 0) is False
    assert not broker._publish_breaker.is_open()  # other kinds' jobs are still published at once
    assert "unknown kind" in caplog.text
    with pytest.raises(UnknownKind, match="text.nonexistent"):
        get_kind("text.nonexistent")


def test_a_broker_failure_still_trips_the_breaker(monkeypatch):
    """The breaker still does its job for a real broker failure (so the test above shows a difference)."""
    broker._publish_breaker.reset()

    class Down:
        def send_task(self, *a, **k):
            raise ConnectionError("redis is down")

    monkeypatch.setattr(broker, "sender", lambda: Down())
    assert broker.publish("job_y", "text.train", "gpu", 0) is False
    assert broker._publish_breaker.is_open()
    broker._publish_breaker.reset()


def test_the_demo_follows_every_training_kind_up():
    """Each kind that trains a model has a demo follow-up whose params its kind's schema accepts."""
    from shared.models import Job
    from web.services.demo import followup_body

    for name in (n for n, k in KINDS.items() if k.trains_model):
        body = followup_body(Job(kind=name, model_id="mdl_x"))
        assert body["kind"] in KINDS and not KINDS[body["kind"]].trains_model
        PARAMS_BY_KIND[body["kind"]].model_validate(body["params"])
    tag = followup_body(Job(kind="text.train_tagger", model_id="mdl_x"))
    assert tag["kind"] == "text.tag" and len(tag["params"]["texts"]) == 12


def test_batch_key_is_the_model_only():
    from shared.kinds import batch_key

    base = {"model": "m", "prompts": ["a"], "temperature": 0.7, "seed": 3}
    key = batch_key("text.generate", base)
    assert key is not None and len(key) == 64
    # what a job asks for, how long and how it samples: not part of the key (per stream and prompt in the engine)
    assert batch_key("text.generate", {**base, "prompts": ["b", "c"], "max_new_tokens": 9, "stop": ["."]}) == key
    for change in ({"seed": 4}, {"temperature": 0}, {"top_p": 0.9}, {"num_return_sequences": 2}, {"batch_size": 4}):
        assert batch_key("text.generate", {**base, **change}) == key, change
    assert batch_key("text.generate", {**base, "model": "n"}) != key
    assert batch_key("image.generate", {"model": "g"}) is None  # a kind whose jobs always run alone
    assert batch_key("text.generate", {**base, "_test_hook": "crash"}) is None  # params the API refuses
    from shared.schemas.params import TextGenerateParams

    assert batch_key("text.generate", TextGenerateParams.model_validate(base)) == key  # validated or raw: the same
