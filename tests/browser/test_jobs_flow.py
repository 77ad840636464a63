"""Submit, watch, cancel, retry and filter jobs in a real browser, with jobs run by a real worker."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, nav, screenshot
from tests.browser.helpers import Api

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("worker")]

JOB_URL = re.compile(r".*/jobs/job_[0-9a-f]+$")
# Greedy decoding: the randomly initialised tiny GPT-2 samples byte tokens such as NUL, which Postgres text refuses
# (a worker-side bug reported separately); greedy output from it has none, so these jobs succeed deterministically.
GREEDY = {"temperature": 0.0}


def test_submit_generation_watch_progress_and_results(page, live_server, user, tiny_model):
    login(page, user.token)
    nav(page, "Submit").click()
    expect(page.get_by_role("heading", name="Submit a job")).to_be_visible()
    page.get_by_label("Model", exact=True).select_option(tiny_model.name)
    prompts = [f"Prompt number {i} <b>not bold</b> says" for i in range(40)]
    page.get_by_label("Prompts").fill("\n".join(prompts))
    expect(page.locator("#prompt-count")).to_have_text("· 40 prompts")
    page.get_by_label("Max new tokens").fill("48")
    page.get_by_label("Temperature").fill("0")
    page.get_by_text("Advanced settings").click()
    page.get_by_label("Batch size", exact=True).fill("1")  # one prompt per batch: the job lasts long enough to watch
    screenshot(page, "submit-text-generate")
    page.get_by_role("button", name=re.compile("^Submit")).click()

    page.wait_for_url(JOB_URL)
    seen = set()
    progress = page.locator("#job-progress .progress")
    for _ in range(600):
        finished = page.locator("#job-status").inner_text().strip().endswith("succeeded")
        seen.add(progress.get_attribute("value"))
        if finished:
            break
        page.wait_for_timeout(100)
    expect(page.locator("#job-status")).to_contain_text("succeeded", timeout=60_000)
    expect(page.locator("#job-progress .progress-text")).to_contain_text("40 / 40 · 100 %")
    expect(progress).to_have_attribute("value", "100")
    assert seen - {"0", "100"}, f"the bar never showed partial progress while polling: {seen}"

    rows = page.locator("#results-body tr")
    expect(rows).to_have_count(25)
    expect(rows.first.locator(".cell-prompt")).to_have_text(prompts[0])  # markup shown as text, not rendered
    expect(page.locator("#results-body b")).to_have_count(0)
    page.get_by_role("button", name="Next →").click()
    expect(page.locator("#results-range")).to_have_text("Rows 26–40")
    expect(rows).to_have_count(15)
    expect(page.get_by_role("link", name="Download CSV")).to_have_attribute("href", re.compile(r"format=csv"))
    with page.expect_download() as download:
        page.get_by_role("link", name="Download JSONL").click()
    assert download.value.suggested_filename.endswith(".jsonl")
    expect(page.locator("#timeline li")).to_have_count(3)  # queued, running, succeeded
    expect(page.locator("#log li").first).to_be_visible()
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    screenshot(page, "job-text-generate")

    nav(page, "Jobs").click()
    row = page.locator("#jobs-body tr").first
    expect(row.locator(".cell-status")).to_contain_text("succeeded")
    expect(row.locator(".progress-text")).to_have_text("100 %")
    screenshot(page, "jobs")


def test_cancel_a_running_job_from_its_page(page, live_server, user, tiny_model):
    api = Api(live_server, user.token)
    job = api.submit_generate(
        tiny_model.name, [f"long run {i}" for i in range(3000)], batch_size=1, max_new_tokens=16, **GREEDY
    )
    login(page, user.token)
    page.goto(f"/jobs/{job['id']}")
    expect(page.locator("#job-status")).to_contain_text("running", timeout=60_000)
    expect(page.locator("#job-progress .progress-text")).not_to_contain_text(" 0 / ", timeout=30_000)
    expect(page.locator("#job-progress .progress-text")).to_contain_text("ETA")
    screenshot(page, "job-running")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#job-status")).to_contain_text(re.compile("cancelling|cancelled"))
    expect(page.locator("#job-status")).to_contain_text("cancelled", timeout=30_000)
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    expect(page.locator("#timeline")).to_contain_text("cancel requested")
    done = api.get(f"/jobs/{job['id']}")
    assert done["status"] == "cancelled" and 0 < done["progress"]["done"] < 3000
    screenshot(page, "job-cancelled")


def test_retry_and_clone(page, live_server, user, tiny_model):
    api = Api(live_server, user.token)
    first = api.submit_generate(tiny_model.name, ["retry me", "and me"], max_new_tokens=8, **GREEDY)
    api.wait(first["id"])
    login(page, user.token)
    page.goto(f"/jobs/{first['id']}")
    page.get_by_role("button", name="Retry").click()
    page.wait_for_url(lambda url: JOB_URL.match(url) is not None and first["id"] not in url)
    expect(page.locator("#details")).to_contain_text("Retry of")
    expect(page.locator(f'#details a[href="/jobs/{first["id"]}"]')).to_be_visible()
    expect(page.locator("#job-status")).to_contain_text("succeeded", timeout=60_000)
    expect(page.locator("#results-body tr")).to_have_count(2)

    page.get_by_role("link", name="Clone & edit").click()
    expect(page.get_by_label("Prompts")).to_have_value("retry me\nand me")
    expect(page.get_by_label("Max new tokens")).to_have_value("8")
    expect(page.get_by_label("Model", exact=True)).to_have_value(tiny_model.name)
    page.get_by_label("Prompts").fill("cloned prompt")
    page.get_by_role("button", name=re.compile("^Submit")).click()
    page.wait_for_url(JOB_URL)
    expect(page.locator("#job-status")).to_contain_text("succeeded", timeout=60_000)
    expect(page.locator("#results-body .cell-prompt")).to_have_text(["cloned prompt"])


def test_filter_and_search_the_list(page, live_server, user, tiny_model):
    api = Api(live_server, user.token)
    kept = api.submit_generate(tiny_model.name, ["zebra crossing"], max_new_tokens=4, **GREEDY)
    dropped = api.submit_generate(tiny_model.name, [f"walrus {i}" for i in range(2000)], batch_size=1, **GREEDY)
    api.post(f"/jobs/{dropped['id']}/cancel")
    api.wait(kept["id"])
    api.wait(dropped["id"])
    login(page, user.token)
    expect(page.locator("#jobs-body tr")).to_have_count(2)

    page.get_by_label("Status").select_option("cancelled")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"status=cancelled"))
    expect(page.locator("#jobs-body tr")).to_have_count(1)
    expect(page.locator("#jobs-body tr").first).to_have_attribute("data-job-id", dropped["id"])

    page.get_by_label("Status").select_option("")
    page.get_by_label("Kind").select_option("text.train")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("No jobs match these filters.")).to_be_visible()

    page.get_by_label("Kind").select_option("text.generate")
    page.get_by_label("Search").fill("zebra")
    page.get_by_label("Search").press("Enter")
    page.wait_for_url(re.compile(r"q=zebra"))
    expect(page.locator("#jobs-body tr")).to_have_count(1)
    expect(page.locator("#jobs-body tr").first).to_have_attribute("data-job-id", kept["id"])
    screenshot(page, "jobs-filtered")
    page.get_by_role("link", name="Clear").click()
    expect(page.locator("#jobs-body tr")).to_have_count(2)


def test_list_polls_while_a_job_is_active_and_stops_after(page, live_server, user, tiny_model):
    login(page, user.token)
    api = Api(live_server, user.token)
    # Long enough to be still running whatever the machine's speed (a 30-prompt job once finished before the page
    # had reloaded); the API's cancel then ends it, and the list must see that and stop polling.
    job = api.submit_generate(
        tiny_model.name, [f"poll {i}" for i in range(3000)], batch_size=1, max_new_tokens=16, **GREEDY
    )
    page.reload()
    row = page.locator(f'#jobs-body tr[data-job-id="{job["id"]}"]')
    expect(page.locator("#jobs")).to_have_attribute("data-polling", "1")
    expect(row.locator(".cell-status")).to_contain_text(re.compile("queued|running"))
    api.post(f"/jobs/{job['id']}/cancel")
    expect(row.locator(".cell-status")).to_contain_text("cancelled", timeout=60_000)
    expect(page.locator("#jobs")).to_have_attribute("data-polling", "0")
    requests_seen: list[str] = []
    page.on("request", lambda r: requests_seen.append(r.url) if "/api/v1/jobs" in r.url else None)
    page.wait_for_timeout(4500)
    assert requests_seen == [], "the list kept polling with no active job"
