"""Browser tests: Debian's Chromium (never a downloaded browser) driven by Playwright against a live server.

The server is the real app (werkzeug, threaded) on the session's embedded Postgres and Redis; jobs run on the real
Celery worker of the ``worker`` fixture. Screenshots of each page go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _unavailable() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"Debian Chromium is not installed at {CHROMIUM}: `make test` installs it when run as root "
            "(apt-get install chromium chromium-driver); browser tests never download a browser"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[dev]')"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _unavailable()
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def live_server(stack):
    """The app on a free port, served by werkzeug in a thread (one request per thread, like gunicorn's threads)."""
    from werkzeug.serving import make_server

    from web.app import create_app

    server = make_server("127.0.0.1", 0, create_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # launch() gives each run a fresh, temporary user-data-dir; nothing is read from or left in ~/.config.
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            downloads_path=str(tmp_path_factory.mktemp("downloads")),
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, live_server):
    """A fresh browser context (no cookies) at 1280×800; fails the test on JS errors or CSP violations."""
    context = browser.new_context(viewport=DESKTOP, base_url=live_server, accept_downloads=True)
    context.set_default_timeout(20_000)
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on("console", lambda msg: _console(problems, msg))
    pg.on(
        "response",
        lambda r: problems.append(f"{r.status} for {r.url}") if "/static/" in r.url and r.status >= 400 else None,
    )
    yield pg
    context.close()
    assert not problems, "\n".join(problems)


def _console(problems: list[str], msg) -> None:
    """Console errors fail the test (CSP violations and script errors land there); a page answered with an
    intended 4xx (a 422 form, a 404 page) is logged as "Failed to load resource" and is not a problem."""
    if msg.type == "error" and not msg.text.startswith("Failed to load resource: the server responded with a status"):
        problems.append(f"console {msg.type}: {msg.text}")


def login(page, token: str) -> None:
    page.goto("/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")


def screenshot(page, name: str) -> None:
    """Full-page screenshots at 1280×800 and at a phone's 390×844; the viewport is restored afterwards."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # a sticky header would otherwise be drawn mid-page
    page.screenshot(path=str(SCREENSHOTS / f"{name}-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(200)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOTS / f"{name}-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def nav(page, name: str):
    """A link of the header's main navigation."""
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)
