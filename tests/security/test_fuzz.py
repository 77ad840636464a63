"""API fuzzing: schemathesis generates requests from ``/api/v1/openapi.json`` and sends them with a valid token.

Every response must be a documented status (never a 5xx), with a documented content type and a body that matches
the documented schema; schema-valid requests must be accepted and schema-invalid ones refused. One pytest test per
operation, each a bounded Hypothesis run (``MAX_EXAMPLES``, no deadline, derandomized so CI is reproducible), so
the whole run takes well under a minute on two CPU cores.

Random ids only ever reach the 404 branch, so positive cases are also generated with the ids of real objects the
token's user owns (a job with events, results and an artifact, a dataset, a model): the code behind the 404 runs too.

(schemathesis' own ``from_fixture`` runner needs pytest internals that pytest 9 no longer has, so the operations are
parametrized here and each one is driven with ``operation.as_strategy()`` and ``case.call_and_validate()``.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from web.api.openapi import document

# Fuzzed jobs (the demo's training jobs among them) are for checking answers, not for a session worker to run.
pytestmark = pytest.mark.usefixtures("held_queue")

MAX_EXAMPLES = 25
NEGATIVE_EXAMPLES = 15
PATHS = document()["paths"]
OPERATIONS = [(method.upper(), path) for path, ops in PATHS.items() for method in ops]
# Operations with something to get wrong (parameters or a body): the only ones negative cases exist for.
WITH_INPUT = [(m, p) for m, p in OPERATIONS if {"parameters", "requestBody"} & set(PATHS[p][m.lower()])]
# Schema-valid is not always acceptable: a job must name a model and dataset the user can see, that fit together;
# an upload must hold a supported file; a demo follow-up needs a training job; a webhook URL must resolve to a public
# address. Those answers are 422 by design; every other check still applies.
SEMANTIC_422 = {("POST", "/jobs"), ("POST", "/datasets"), ("POST", "/demo/followup"), ("PUT", "/webhooks/settings")}
# The API ignores query parameters it does not know, as HTTP APIs commonly do. Schemathesis counts adding one as
# invalid input; for these lists the only other thing to get wrong is the `kind` enum, so that is nearly all it sends.
# Their status codes, content types and bodies are still checked; a bad `kind` is tested in test_authz_matrix and a
# bad `status` on the jobs list in test_jobs_api.
UNKNOWN_QUERY_IGNORED = {("GET", "/datasets"), ("GET", "/models"), ("GET", "/jobs")}


@pytest.fixture
def api_schema(app, user, stack, monkeypatch):
    """The document as the running app serves it; the rate limit is off (the fuzzer is one very busy user)."""
    from shared.settings import get_settings

    relaxed = get_settings().model_copy(update={"rate_limit_per_minute": 0})
    monkeypatch.setattr("web.services.limits.get_settings", lambda: relaxed)
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


def strategy(operation, mode: GenerationMode, ids: dict[str, str]):
    """Generated cases; positive ones half the time with real ids in the path."""
    generated = operation.as_strategy(generation_mode=mode)
    names = {p.name for p in operation.path_parameters}
    if mode is GenerationMode.NEGATIVE or not names or not names <= set(ids):
        return generated
    real = operation.as_strategy(generation_mode=mode, path_parameters={n: ids[n] for n in names})
    return st.one_of(generated, real)


def run(operation, token: str, cases, examples: int, excluded: list | None = None) -> None:
    @given(case=cases)
    @settings(
        max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
    )
    def check(case):
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, excluded_checks=excluded or [])

    check()


# POST /demo builds a corpus per example: tens of seconds, so it runs with the slow suites.
SLOW = {("POST", "/demo")}
VALID_CASES = [
    pytest.param(m, p, id=f"{m} {p}", marks=[pytest.mark.slow] if (m, p) in SLOW else []) for m, p in OPERATIONS
]


@pytest.mark.parametrize(("method", "path"), VALID_CASES)
def test_valid_requests_conform(api_schema, user, world, method, path):
    operation = api_schema[path][method]
    excluded = [positive_data_acceptance] if (method, path) in SEMANTIC_422 else []
    run(operation, user.token, strategy(operation, GenerationMode.POSITIVE, world), MAX_EXAMPLES, excluded)


@pytest.mark.parametrize(("method", "path"), WITH_INPUT, ids=[f"{m} {p}" for m, p in WITH_INPUT])
def test_invalid_requests_are_refused_never_5xx(api_schema, user, world, method, path):
    operation = api_schema[path][method]
    excluded = [negative_data_rejection] if (method, path) in UNKNOWN_QUERY_IGNORED else []
    run(operation, user.token, strategy(operation, GenerationMode.NEGATIVE, world), NEGATIVE_EXAMPLES, excluded)
