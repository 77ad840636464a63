"""A small REST client for the CLI's client commands (they always go through the API)."""

from __future__ import annotations

from typing import Any

import requests

from shared.settings import get_settings


class ApiFailure(Exception):
    def __init__(self, status: int, body: Any):
        err = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"HTTP {status}: {err.get('code', '')}: {err.get('message', body)}")
        self.status, self.body = status, body


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30):
        settings = get_settings()
        self.url = (url or settings.client_url).rstrip("/") + "/api/v1"
        self.token = token or settings.client_token()
        self.timeout = timeout
        self.http = requests.Session()
        if self.token:
            self.http.headers["Authorization"] = f"Bearer {self.token}"

    def request(self, method: str, path: str, **kw) -> requests.Response:
        resp = self.http.request(method, self.url + path, timeout=self.timeout, **kw)
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

    def submit(self, kind: str, params: dict, priority: int = 0, **kw) -> dict:
        return self.post("/jobs", json={"kind": kind, "params": params, "priority": priority}, **kw)

    def job(self, job_id: str) -> dict:
        return self.get(f"/jobs/{job_id}")
