"""Dashboard rendering and security with the Flask test client against the real stack (no browser, no worker).

Hostile strings are escaped by Jinja; forms and session-authenticated API writes need the CSRF token; cookies and
headers are set as the security issue asks.
"""

from __future__ import annotations

import re

import pytest

from shared.kinds import PARAMS_BY_KIND
from shared.users import hash_token

HOSTILE = "<script>alert('pwned')</script>"
HOSTILE_IMG = '<img src=x onerror="alert(1)">'


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(app, token: str, base_url: str = "http://localhost"):
    """A test client logged in through the login form; returns (client, csrf token of the new session)."""
    c = app.test_client()
    page = c.get("/login", base_url=base_url)
    resp = c.post(
        "/login", data={"token": token, "csrf_token": csrf_from(page.get_data(as_text=True))}, base_url=base_url
    )
    assert resp.status_code == 303, resp.get_data(as_text=True)[:500]
    home = c.get("/", base_url=base_url)
    assert home.status_code == 200
    return c, csrf_from(home.get_data(as_text=True))


@pytest.fixture
def browser_client(app, user):
    return login(app, user.token)


def submit_generate(client, prompts: list[str]) -> dict:
    resp = client.post("/api/v1/jobs", json={"kind": "text.generate", "params": {"model": "gpt2", "prompts": prompts}})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


# -- login, session, cookies ----------------------------------------------------------------------------------------


def test_pages_need_login(app):
    c = app.test_client()
    for path in ("/", "/submit", "/models", "/datasets", "/system", "/jobs/job_x"):
        resp = c.get(path)
        assert resp.status_code == 302, path
        assert resp.headers["Location"].startswith("/login?next="), resp.headers["Location"]


def test_login_stores_only_the_token_hash(app, user):
    c = app.test_client()
    page = c.get("/login")
    resp = c.post(
        "/login", data={"token": user.token, "csrf_token": csrf_from(page.get_data(as_text=True)), "next": "/models"}
    )
    assert resp.status_code == 303 and resp.headers["Location"] == "/models"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert user.token not in cookie
    with c.session_transaction() as sess:
        assert sess["token_hash"] == hash_token(user.token)


def test_secure_cookie_over_https(app, user):
    c = app.test_client()
    page = c.get("/login", base_url="https://localhost")
    resp = c.post(
        "/login",
        base_url="https://localhost",
        data={"token": user.token, "csrf_token": csrf_from(page.get_data(as_text=True))},
    )
    assert resp.status_code == 303
    assert "Secure" in resp.headers["Set-Cookie"]


def test_login_refuses_unknown_token_and_open_redirects(app, user):
    c = app.test_client()
    csrf = csrf_from(c.get("/login").get_data(as_text=True))
    bad = c.post("/login", data={"token": "gq_nope", "csrf_token": csrf})
    assert bad.status_code == 401 and "Unknown token" in bad.get_data(as_text=True)
    good = c.post("/login", data={"token": user.token, "csrf_token": csrf, "next": "//evil.example/x"})
    assert good.status_code == 303 and good.headers["Location"] == "/"


def test_login_and_logout_need_csrf(app, user):
    c = app.test_client()
    c.get("/login")
    assert c.post("/login", data={"token": user.token}).status_code == 403
    client, csrf = login(app, user.token)
    assert client.post("/logout").status_code == 403
    assert client.get("/").status_code == 200
    out = client.post("/logout", data={"csrf_token": csrf})
    assert out.status_code == 303
    assert client.get("/").status_code == 302


def test_revoked_token_ends_the_session(app, user, stack):
    from shared.db import session_scope
    from shared.users import revoke_token

    client, _ = login(app, user.token)
    with session_scope() as s:
        revoke_token(s, user.token)
    resp = client.get("/")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


# -- CSRF on the API for session-authenticated writes ---------------------------------------------------------------


def test_session_api_writes_need_csrf_header(browser_client, client):
    c, csrf = browser_client
    body = {"kind": "text.generate", "params": {"model": "gpt2", "prompts": ["hello"]}}
    refused = c.post("/api/v1/jobs", json=body)
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "csrf_failed"
    wrong = c.post("/api/v1/jobs", json=body, headers={"X-CSRF-Token": "not-the-token"})
    assert wrong.status_code == 403
    ok = c.post("/api/v1/jobs", json=body, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201
    job_id = ok.get_json()["id"]
    assert c.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 403
    assert c.post(f"/api/v1/jobs/{job_id}/cancel", headers={"X-CSRF-Token": csrf}).status_code == 202
    assert c.get(f"/api/v1/jobs/{job_id}").status_code == 200  # reads need no token
    # Bearer clients are not affected: a browser cannot send their header cross-site.
    assert client.post("/api/v1/jobs", json=body).status_code == 201


def test_dashboard_forms_need_csrf(browser_client):
    c, csrf = browser_client
    form = {"kind": "text.generate", "model": "gpt2", "prompts": "hi"}
    assert c.post("/submit", data=form).status_code == 403
    assert c.post("/submit", data={**form, "csrf_token": "forged"}).status_code == 403
    assert c.post("/submit", data={**form, "csrf_token": csrf}).status_code == 303


# -- headers --------------------------------------------------------------------------------------------------------


def test_security_headers_and_no_inline_script(browser_client, client):
    c, _ = browser_client
    job = submit_generate(client, ["a prompt"])
    paths = ["/", "/models", "/datasets", "/system", f"/jobs/{job['id']}", f"/submit?clone={job['id']}"]
    paths += [f"/submit?kind={k}" for k in PARAMS_BY_KIND]
    for path in paths:
        resp = c.get(path)
        assert resp.status_code == 200, path
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "same-origin"
        html = resp.get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"inline <script> on {path}"
        assert not re.search(r"\son[a-z]+\s*=", html), f"inline event handler on {path}"
        assert not re.search(r"\sstyle\s*=", html), f"inline style attribute on {path}"
        assert not re.search(r'(src|href)="(https?:)?//', html), f"external asset on {path}"
    assert c.get("/login").headers["X-Content-Type-Options"] == "nosniff"


# -- escaping -------------------------------------------------------------------------------------------------------


def test_hostile_prompts_and_results_are_escaped(browser_client, client, stack):
    from shared.db import session_scope
    from shared.models import GenerationResult

    c, _ = browser_client
    job = submit_generate(client, [HOSTILE, HOSTILE_IMG])
    with session_scope() as s:
        s.add(
            GenerationResult(
                job_id=job["id"],
                prompt_index=0,
                sequence=0,
                prompt=HOSTILE,
                text=HOSTILE_IMG,
                tokens=3,
                finish_reason="length",
                attempt=1,
            )
        )
    pages = {
        "job": c.get(f"/jobs/{job['id']}").get_data(as_text=True),
        "clone": c.get(f"/submit?clone={job['id']}").get_data(as_text=True),
        "search": c.get("/", query_string={"q": HOSTILE}).get_data(as_text=True),
    }
    for name, html in pages.items():
        assert HOSTILE not in html, name
        assert "<img src=x" not in html, name
        assert "&lt;script&gt;alert(" in html, name
    assert "&lt;img src=x onerror=" in pages["job"]


def test_hostile_dataset_name_is_escaped(browser_client):
    import io

    c, csrf = browser_client
    resp = c.post(
        "/datasets",
        data={"csrf_token": csrf, "name": HOSTILE, "file": (io.BytesIO(b"one prompt\nanother prompt\n"), "p.txt")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 303
    html = c.get("/datasets").get_data(as_text=True)
    assert HOSTILE not in html and "&lt;script&gt;" in html


def test_hostile_error_message_is_escaped(browser_client):
    c, _ = browser_client
    resp = c.get(f"/jobs/{HOSTILE}")
    assert resp.status_code == 404
    assert HOSTILE not in resp.get_data(as_text=True)


# -- the submit form follows the params schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(PARAMS_BY_KIND))
def test_submit_form_has_a_field_per_schema_property(browser_client, kind):
    c, _ = browser_client
    html = c.get("/submit", query_string={"kind": kind}).get_data(as_text=True)
    for name in PARAMS_BY_KIND[kind].model_json_schema()["properties"]:
        assert f'name="{name}"' in html, f"{kind}: no field for {name}"
        assert f'for="f-{name}"' in html, f"{kind}: no label for {name}"


def test_submit_form_shows_api_errors_next_to_fields(browser_client):
    c, csrf = browser_client
    resp = c.post(
        "/submit",
        data={
            "csrf_token": csrf,
            "kind": "text.generate",
            "model": "gpt2",
            "prompts": "hi",
            "max_new_tokens": "0",
            "temperature": "warm",
        },
    )
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert re.search(r'id="f-max_new_tokens-error"[^>]*>.*greater than or equal to 1', html)
    assert re.search(r'id="f-temperature-error"[^>]*>.*valid number', html)
    assert 'value="warm"' in html  # what was typed is kept
    empty = c.post("/submit", data={"csrf_token": csrf, "kind": "text.generate", "model": "gpt2"})
    assert empty.status_code == 422
    assert "give exactly one of `prompts` or `dataset_id`" in empty.get_data(as_text=True)


def test_submit_form_creates_the_job_and_clone_prefills(browser_client, client):
    c, csrf = browser_client
    resp = c.post(
        "/submit",
        data={
            "csrf_token": csrf,
            "kind": "text.generate",
            "model": "gpt2",
            "prompts": "first line\n\nsecond line\n",
            "max_new_tokens": "12",
            "stop": "\\n\\n",
            "priority": "5",
            "queue": "cpu",
        },
    )
    assert resp.status_code == 303
    job_id = resp.headers["Location"].rsplit("/", 1)[-1]
    job = client.get(f"/api/v1/jobs/{job_id}").get_json()
    assert job["params"]["prompts"] == ["first line", "second line"]
    assert job["params"]["max_new_tokens"] == 12 and job["params"]["stop"] == ["\\n\\n"]
    assert job["priority"] == 5 and job["queue"] == "cpu"
    assert "grid" not in job["params"]
    clone = c.get(f"/submit?clone={job_id}").get_data(as_text=True)
    assert "first line\nsecond line</textarea>" in clone
    assert re.search(r'id="f-max_new_tokens"[^>]*value="12"', clone)


def test_prompt_file_upload_becomes_the_dataset(browser_client, client):
    import io

    c, csrf = browser_client
    resp = c.post(
        "/submit",
        content_type="multipart/form-data",
        data={
            "csrf_token": csrf,
            "kind": "text.generate",
            "model": "gpt2",
            "prompts_file": (io.BytesIO(b"alpha\nbeta\ngamma\n"), "prompts.txt"),
        },
    )
    assert resp.status_code == 303, resp.get_data(as_text=True)[:2000]
    job = client.get(f"/api/v1/jobs/{resp.headers['Location'].rsplit('/', 1)[-1]}").get_json()
    assert job["params"]["dataset_id"].startswith("ds_") and job["progress"]["total"] == 3


# -- the system endpoint --------------------------------------------------------------------------------------------


def test_system_endpoint(app, client, stack):
    import redis
    from sqlalchemy import text

    # A list named after the queue counts like Celery's priority lists do; no worker consumes this one.
    probe = redis.Redis.from_url(stack.redis.url)
    probe.rpush("gpu:probe", "a", "b", "c")
    with stack.engine().begin() as conn:
        conn.execute(
            text(
                "INSERT INTO workers (id, queues, device, pid, last_seen) "
                "VALUES ('w9@host', 'gpu,cpu', 'cpu', 1, now())"
            )
        )
    data = client.get("/api/v1/system").get_json()
    assert data["db"] == "ok" and data["broker"] == "ok"
    assert [q["name"] for q in data["queues"]] == ["gpu", "cpu"]
    assert data["queues"][0]["depth"] >= 3 and isinstance(data["queues"][1]["depth"], int)
    probe.delete("gpu:probe")
    [w] = [w for w in data["workers"] if w["id"] == "w9@host"]  # the session's worker may be listed too
    assert w["queues"] == ["gpu", "cpu"] and w["alive"] is True
    assert "/system" in client.get("/api/v1/openapi.json").get_json()["paths"]
    assert app.test_client().get("/api/v1/system").status_code == 401


def test_jobs_list_pages_with_a_cursor(browser_client, client):
    c, _ = browser_client
    ids = [submit_generate(client, [f"page test {i}"])["id"] for i in range(27)]
    first = c.get("/").get_data(as_text=True)
    shown = re.findall(r'data-job-id="(job_[0-9a-f]+)"', first)
    assert shown == ids[::-1][:25]  # newest first
    older = re.search(r'href="(/\?cursor=job_[0-9a-f]+)"[^>]*>Older', first)
    assert older, "no link to older jobs"
    second = c.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert re.findall(r'data-job-id="(job_[0-9a-f]+)"', second) == ids[::-1][25:]
    assert "Older" not in second and "← Newest" in second
