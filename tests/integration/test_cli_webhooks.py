"""The CLI's webhook and metadata options against the real API served over HTTP (werkzeug, in a thread)."""

from __future__ import annotations

import json
import os
import threading

import pytest
from werkzeug.serving import make_server

from shared.cli.main import main
from shared.settings import get_settings


@pytest.fixture
def served(app, user, monkeypatch, held_queue):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("GENQUEUE_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("GENQUEUE_TOKEN", user.token)
    get_settings.cache_clear()
    yield
    server.shutdown()
    get_settings.cache_clear()


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out.strip()


def test_webhooks_secret_and_rotate(served, capsys, client):
    code, first = run(capsys, "webhooks", "secret")
    assert code == 0 and first.startswith("whsec_")
    assert run(capsys, "webhooks", "secret")[1] == first
    code, rotated = run(capsys, "webhooks", "secret", "--rotate")
    assert code == 0 and rotated.startswith("whsec_") and rotated != first
    assert client.get("/api/v1/webhooks/secret").get_json()["secret"] == rotated


def test_submit_with_metadata(served, capsys, client):
    code, job_id = run(
        capsys,
        "submit",
        "text.generate",
        "--params",
        '{"model": "gpt2", "prompts": ["x"]}',
        "--metadata",
        "campaign=spring",
        "--metadata",
        "note=a=b",
    )
    assert code == 0
    assert client.get(f"/api/v1/jobs/{job_id}").get_json()["metadata"] == {"campaign": "spring", "note": "a=b"}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        main(["submit", "text.generate", "--metadata", "novalue"])


def test_a_refused_webhook_url_is_a_clear_cli_error(served, capsys):
    saved = os.environ.pop("GENQUEUE_WEBHOOK_ALLOW_NETS")
    get_settings.cache_clear()
    try:
        code = main(
            [
                "submit",
                "text.generate",
                "--params",
                '{"model": "gpt2", "prompts": ["x"]}',
                "--webhook-url",
                "http://127.0.0.1:9/hook",
            ]
        )
    finally:  # put back before any teardown reads the settings again
        os.environ["GENQUEUE_WEBHOOK_ALLOW_NETS"] = saved
        get_settings.cache_clear()
    assert code == 6 and "GENQUEUE_WEBHOOK_ALLOW_NETS" in capsys.readouterr().err  # 6: rejected input (422)


def test_list_filters_by_metadata(served, capsys):
    ids = {}
    for tag in ("a", "b"):
        code, ids[tag] = run(
            capsys,
            "submit",
            "text.generate",
            "--params",
            '{"model": "gpt2", "prompts": ["x"]}',
            "--metadata",
            f"batch={tag}",
            "--metadata",
            "team=t",
        )
        assert code == 0
    code, out = run(capsys, "list", "--metadata", "batch=a", "--metadata", "team=t", "--json")
    assert code == 0 and [j["id"] for j in json.loads(out)["items"]] == [ids["a"]]
    code, out = run(capsys, "list", "--metadata", "team=t", "--json")
    assert {j["id"] for j in json.loads(out)["items"]} == set(ids.values())
