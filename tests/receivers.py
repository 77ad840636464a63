"""Real HTTP servers on 127.0.0.1 that receive webhooks in the tests: one that answers 204, one 500, one that hangs."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """``mode``: ``ok`` (204), ``error`` (500), ``hang`` (answers after ``hang_seconds``), ``redirect`` (302)."""

    mode: str = "ok"
    hang_seconds: float = 6.0
    requests: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?src=test"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.mode == "hang":
                    time.sleep(receiver.hang_seconds)
                code = {"ok": 204, "error": 500, "hang": 200, "redirect": 302}[receiver.mode]
                self.send_response(code)
                if receiver.mode == "redirect":
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.requests) < count:
            time.sleep(0.1)
        assert len(self.requests) >= count, f"{len(self.requests)} of {count} webhook requests after {timeout}s"
        return self.requests
