"""A small REST client for the CLI's client commands (they always go through the API), and their exit codes."""

from __future__ import annotations

from typing import Any

import requests

from shared.settings import get_settings

# Exit codes of the client commands (README, "CLI"); argparse's own usage errors are 2 as well.
EXIT_OK = 0
EXIT_JOB_FAILED = 1  # wait / logs -f: the job ended failed or cancelled
EXIT_USAGE = 2  # bad arguments, unreadable --params(-file), an output directory that exists
EXIT_UNREACHABLE = 3  # no connection, a timeout, or the server answered 5xx (unavailable)
EXIT_AUTH = 4  # 401 (no or unknown token) / 403 (revoked token)
EXIT_NOT_FOUND = 5  # 404: no such object (or someone else's)
EXIT_REJECTED = 6  # 4xx refusals: invalid input (422), conflict (409), too large (413), rate limited (429)


class CliError(Exception):
    """An error the CLI reports as one line on stderr with an exit code (never a traceback)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class ApiFailure(CliError):
    def __init__(self, status: int, body: Any):
        err = body.get("error", {}) if isinstance(body, dict) else {}
        message = err.get("message") or (body if isinstance(body, str) and body else "no message")
        text = f"HTTP {status} {err.get('code') or 'error'}: {str(message).strip()[:500]}".replace("\n", " ")
        if status == 401:
            text += " (set GENQUEUE_TOKEN, or run where `genqueue up` saved the admin token)"
        super().__init__(text, exit_code(status))
        self.status, self.body = status, body


def exit_code(status: int) -> int:
    if status in (401, 403):
        return EXIT_AUTH
    if status == 404:
        return EXIT_NOT_FOUND
    if status >= 500:
        return EXIT_UNREACHABLE
    return EXIT_REJECTED


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30):
        settings = get_settings()  # reading the settings writes nothing: only the web creates its secret
        self.base = (url or settings.client_url).rstrip("/")
        self.url = self.base + "/api/v1"
        self.token = token or settings.client_token()
        self.timeout = timeout
        self.http = requests.Session()
        if self.token:
            self.http.headers["Authorization"] = f"Bearer {self.token}"

    def request(self, method: str, path: str, **kw) -> requests.Response:
        try:
            resp = self.http.request(method, self.url + path, timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise CliError(f"cannot reach the server at {self.base}: {type(exc).__name__}", EXIT_UNREACHABLE) from exc
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = resp.text
            raise ApiFailure(resp.status_code, body)
        return resp

    def get(self, path: str, **kw) -> Any:
        return self.request("GET", path, **kw).json()

    def post(self, path: str, **kw) -> Any:
        return self.request("POST", path, **kw).json()

    def delete(self, path: str, **kw) -> Any:
        return self.request("DELETE", path, **kw).json()

    def submit(self, kind: str, params: dict, priority: int = 0, **kw) -> dict:
        return self.post("/jobs", json={"kind": kind, "params": params, "priority": priority}, **kw)

    def job(self, job_id: str) -> dict:
        return self.get(f"/jobs/{job_id}")
