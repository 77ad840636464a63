"""openapi.json and the Flask app agree: every /api/v1 route (method and path) is documented with the query
parameters its view reads, and everything documented exists. Query parameters are found in each view's source
(``request.args.get("x")``, ``_int_arg("x", …)``, ``page_limit(…)`` for ``limit``), so a new one that is not
documented fails here, and so the schemathesis fuzz and the authorization matrix (driven by the document) see it."""

from __future__ import annotations

import inspect
import re

import pytest

from web.api.openapi import document

ARG_PATTERNS = [
    re.compile(r"request\.args\.get(?:list)?\(\s*\"(\w+)\""),
    re.compile(r"_int_arg\(\s*\"(\w+)\""),
]


@pytest.fixture(scope="module")
def flask_app(tmp_path_factory):
    """The app without a database (nothing here sends a request)."""
    from web.app import create_app

    return create_app({"TESTING": True})


def app_operations(app) -> dict[tuple[str, str], object]:
    """(METHOD, /path/{param}) → view function, for every rule under /api/v1."""
    ops = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule.removeprefix("/api/v1"))
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            ops[(method, path)] = app.view_functions[rule.endpoint]
    return ops


def documented_operations() -> dict[tuple[str, str], dict]:
    return {(m.upper(), p): op for p, ops in document()["paths"].items() for m, op in ops.items()}


def query_params_read(view) -> set[str]:
    source = inspect.getsource(view)
    found = {name for pattern in ARG_PATTERNS for name in pattern.findall(source)}
    if "page_limit(" in source:
        found.add("limit")
    return found


def test_every_route_is_documented_and_nothing_else(flask_app):
    app_ops, doc_ops = set(app_operations(flask_app)), set(documented_operations())
    assert app_ops - doc_ops == set(), "routes missing from openapi.json"
    assert doc_ops - app_ops == set(), "documented operations the app does not serve"


def test_documented_query_parameters_are_the_ones_each_view_reads(flask_app):
    doc = documented_operations()
    mismatched = {}
    for key, view in app_operations(flask_app).items():
        documented = {p["name"] for p in doc[key].get("parameters", []) if p["in"] == "query"}
        read = query_params_read(view)
        if documented != read:
            mismatched[key] = {"documented": sorted(documented), "read": sorted(read)}
    assert mismatched == {}


def test_the_new_endpoints_and_parameters_are_there():
    doc = documented_operations()
    names = lambda key: {p["name"] for p in doc[key].get("parameters", []) if p["in"] == "query"}  # noqa: E731
    assert "role" in names(("GET", "/jobs/{job_id}/artifacts"))
    assert "kind" in names(("GET", "/models")) and "kind" in names(("GET", "/datasets"))
    assert "with_model" in names(("DELETE", "/jobs/{job_id}"))
    for key in [
        ("DELETE", "/datasets/{dataset_id}"),
        ("GET", "/models/{model_id}/download"),
        ("GET", "/jobs/{job_id}/metrics"),
    ]:
        assert key in doc
