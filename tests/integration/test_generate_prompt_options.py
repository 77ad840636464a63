"""A prompt object's own ``max_new_tokens`` and ``stop`` are validated like the job's: a clear 422, never a 500."""

from __future__ import annotations

import pytest

from tests.integration.test_api_validation import assert_error, job_count


def body(model: str, *prompts, **params) -> dict:
    return {"kind": "text.generate", "params": {"model": model, "prompts": list(prompts), **params}}


@pytest.mark.parametrize(
    "prompt",
    [
        {"prompt": "a", "max_new_tokens": 0},
        {"prompt": "a", "max_new_tokens": -1},
        {"prompt": "a", "max_new_tokens": "ten"},
        {"prompt": "a", "max_new_tokens": 1.5},
        {"prompt": "a", "max_new_tokens": 100_000},
        {"prompt": "a", "stop": [""]},
        {"prompt": "a", "stop": ["x" * 101]},
        {"prompt": "a", "stop": ["s"] * 9},
        {"prompt": "a", "stop": 5},
        {"prompt": "a", "temperature": 0.5},  # only max_new_tokens and stop are per prompt
    ],
)
def test_bad_per_prompt_options_are_422(client, tiny_model, prompt):
    err = assert_error(client.post("/api/v1/jobs", json=body(tiny_model.name, "ok", prompt)), 422, "invalid_params")
    assert err["message"]
    assert job_count() == 0


def test_per_prompt_max_new_tokens_must_fit_the_context(client, tiny_model):
    # the tiny model's context is 128 tokens; the job's own limit is fine, the prompt's is not
    resp = client.post("/api/v1/jobs", json=body(tiny_model.name, "ok", {"prompt": "b", "max_new_tokens": 128}))
    err = assert_error(resp, 422, "invalid_params")
    assert "context" in err["message"]
    assert err["details"][0]["loc"] == ["params", "prompts", 1, "max_new_tokens"]
    long_prompt = "word " * 100  # fits with the job's 8 new tokens, not with this prompt's 100
    resp = client.post("/api/v1/jobs", json=body(tiny_model.name, {"prompt": long_prompt, "max_new_tokens": 100}))
    assert assert_error(resp, 422)["details"][0]["loc"] == ["params", "prompts", 0]
    assert job_count() == 0


def test_good_per_prompt_options_are_accepted(client, tiny_model):
    prompts = ["plain", {"prompt": "own", "max_new_tokens": 3, "stop": "x"}, {"prompt": "none", "stop": []}]
    resp = client.post("/api/v1/jobs", json=body(tiny_model.name, *prompts, max_new_tokens=8))
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["params"]["prompts"][1]["max_new_tokens"] == 3
