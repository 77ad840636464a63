"""Comparing runs in a real browser: pick jobs on the jobs page, overlaid curves (zoom, log scale) and the params
diff; 100k-point runs; and the API reference at /api/docs under the dashboard's CSP.

With ``GENQUEUE_DOCS_SCREENSHOTS=1`` the compare page's screenshot is also written to docs/screenshots/compare.png
(the README's); otherwise screenshots only go to test-artifacts/.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot
from tests.browser.helpers import add_metrics, insert_job, set_job
from tests.factories import metric_points

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def lm_curve(lr: float, seed: int):
    """Loss curves that fall faster with a larger learning rate (and one run that overfits)."""

    def point(i: int) -> dict:
        speed = lr / 3e-4
        train = 1.4 + 5.2 * math.exp(-i * speed / 180) + 0.08 * math.sin(i / 3 + seed) + 0.04 * math.sin(i * 1.7)
        data = {
            "train_loss": train,
            "lr": lr * min(1, i / 50) * (0.5 + 0.5 * math.cos(math.pi * i / 600)),
            "tokens_per_s": 5200 + 300 * math.sin(i / 40 + seed),
        }
        if i % 25 == 0 and i:
            data["val_loss"] = 1.7 + 5.0 * math.exp(-i * speed / 200) + (0.0006 * i if speed > 2 else 0)
            data["perplexity"] = math.exp(data["val_loss"])
        return data

    return point


def training_job(user_id: str, name: str, lr: float, seed: int, steps: int = 600) -> str:
    params = {
        "base_model": "scratch",
        "size": "tiny",
        "dataset_id": "ds_stdlib",
        "max_steps": steps,
        "learning_rate": lr,
        "batch_size": 8,
        "block_size": 128,
        "name": name,
        "seed": seed,
    }
    job_id = insert_job(user_id, "text.train", params, "succeeded", steps, steps)
    add_metrics(job_id, range(1, steps + 1), lm_curve(lr, seed))
    final = lm_curve(lr, seed)(steps)
    set_job(
        job_id,
        summary={"metrics": {"train_loss": final["train_loss"], "val_loss": final["val_loss"]}},
        finished_at=None,
    )
    return job_id


def drag(page, locator, x0: float, x1: float) -> None:
    box = locator.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * x0, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * (x0 + x1) / 2, y, steps=4)
    page.mouse.move(box["x"] + box["width"] * x1, y, steps=4)
    page.mouse.up()


def test_pick_runs_on_the_jobs_page_and_compare_them(page, user):
    runs = [
        training_job(user.id, "lm-lr-1e-4", 1e-4, 1),
        training_job(user.id, "lm-lr-3e-4", 3e-4, 2),
        training_job(user.id, "lm-lr-1e-3", 1e-3, 3),
    ]
    gan = insert_job(user.id, "image.train_gan", {"dataset": "digits", "max_steps": 10}, "succeeded", 10, 10)
    login(page, user.token)
    button = page.locator("#compare-button")
    expect(button).to_be_disabled()
    for job_id in runs:
        page.get_by_label(f"Select job {job_id} to compare").check()
    expect(button).to_be_enabled()
    expect(page.locator("#compare-hint")).to_have_text("Compare 3 × LM training.")
    page.get_by_label(f"Select job {gan} to compare").check()
    expect(button).to_be_disabled()
    expect(page.locator("#compare-hint")).to_contain_text("one kind")
    page.get_by_label(f"Select job {gan} to compare").uncheck()
    button.click()
    page.wait_for_url(re.compile(r"/compare\?"))
    assert set(re.findall(r"job_[0-9a-f]+", page.url)) == set(runs)
    expect(page.locator("#compare[data-ready='1']")).to_have_count(1)

    loss = page.locator('figure[data-metric="train_loss"]')
    expect(loss.locator("path.series")).to_have_count(3)
    expect(loss.locator(".legend")).to_contain_text("lm-lr-1e-3")
    names = page.locator("#compare-charts figure").evaluate_all("fs => fs.map(f => f.dataset.metric)")
    assert names[:3] == ["train_loss", "val_loss", "perplexity"], names

    diff = page.locator("#params-diff")
    expect(diff.locator('tr[data-key="learning_rate"]')).to_have_class(re.compile(r"\bdiffers\b"))
    expect(diff.locator('tr[data-key="batch_size"]')).to_have_class(re.compile(r"\bsame\b"))
    page.get_by_label("only differences").check()
    expect(diff.locator('tr[data-key="batch_size"]')).to_be_hidden()
    expect(diff.locator('tr[data-key="learning_rate"]')).to_be_visible()
    page.get_by_label("only differences").uncheck()
    screenshot(page, "compare")
    if os.environ.get("GENQUEUE_DOCS_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS / "compare.png"), full_page=True)

    # Zoom: drag across one chart, every chart follows; double-click zooms out again.
    before = loss.locator("path.series").first.get_attribute("d")
    drag(page, loss.locator("svg").first, 0.15, 0.45)
    expect(page.locator("#compare-charts .chart-reset:visible")).to_have_count(len(names))
    assert loss.locator("path.series").first.get_attribute("d") != before
    loss.locator("svg").first.dblclick()
    expect(page.locator("#compare-charts .chart-reset:visible")).to_have_count(0)
    # the whole series again: the same points and heights (the chart's width may differ from the first layout)
    assert path_ys(loss.locator("path.series").first.get_attribute("d")) == path_ys(before)

    # Log scale redraws the y axis in decades.
    loss.get_by_label("log scale").check()
    expect(loss.locator(".axis text").filter(has_text=re.compile(r"^10$"))).to_have_count(1)


def path_ys(d: str) -> list[float]:
    return [float(y) for y in re.findall(r"[ML][\d.]+ ([\d.]+)", d)]


def test_100k_point_runs_draw_fast_and_keep_their_spike(page, user):
    big = insert_job(user.id, "text.train", {"dataset_id": "ds_x", "max_steps": 100_000}, "succeeded", 1, 1)
    small = insert_job(user.id, "text.train", {"dataset_id": "ds_x", "max_steps": 20_000}, "succeeded", 1, 1)
    metric_points(big, 100_000, spike_at=77_777)
    metric_points(small, 20_000)
    login(page, user.token)
    started = time.monotonic()
    page.goto(f"/compare?jobs={big},{small}")
    expect(page.locator("#compare[data-ready='1']")).to_have_count(1, timeout=30_000)
    elapsed = time.monotonic() - started
    loss = page.locator('figure[data-metric="train_loss"]')
    assert loss.get_attribute("data-points") == str(120_000)
    paths = loss.locator("path.series")
    expect(paths).to_have_count(2)
    ys = path_ys(paths.first.get_attribute("d"))
    assert len(ys) <= 2600  # downsampled on the server and per pixel column here
    assert min(ys) < 15  # the one-step spike to 100 reaches the top of the plot
    assert elapsed < 20, elapsed


def test_bad_compare_links_say_why(page, user):
    login(page, user.token)
    resp = page.goto("/compare?jobs=job_only_one")
    assert resp.status == 422
    expect(page.locator("main")).to_contain_text("pick 2 to 6 jobs")


def test_api_docs_render_under_the_csp(page):
    resp = page.goto("/api/docs")
    assert resp.ok and "script-src 'self'" in resp.headers["content-security-policy"]
    expect(page.locator(".opblock").first).to_be_visible(timeout=20_000)
    from web.api.openapi import document

    operations = sum(len(ops) for ops in document()["paths"].values())
    expect(page.locator(".opblock")).to_have_count(operations)  # every operation listed
    expect(page.locator("#swagger-ui")).to_contain_text("/jobs/{job_id}/metrics")
    page.locator(".opblock-summary-path", has_text=re.compile(r"^/models/\{model_id\}/download$")).first.click()
    expect(page.locator(".opblock.is-open")).to_contain_text("application/x-tar")
    screenshot(page, "api-docs")
