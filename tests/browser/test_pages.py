"""The other pages in a real browser: training charts, GAN samples, generated images, models, datasets, system,
login, and validation errors from the API shown next to the fields."""

from __future__ import annotations

import math
import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, nav, screenshot
from tests.browser.helpers import add_artifact, add_log, add_metrics, add_model, insert_job, png, set_job

pytestmark = pytest.mark.browser


def lm_point(i: int) -> dict:
    data = {
        "train_loss": 6.0 * math.exp(-i / 40) + 1.5 + 0.1 * math.sin(i),
        "lr": 3e-4 * min(1, i / 20),
        "tokens_per_s": 5000 + 100 * math.sin(i / 5),
    }
    if i % 10 == 0:
        data["val_loss"] = 6.2 * math.exp(-i / 45) + 1.7
        data["perplexity"] = math.exp(data["val_loss"])
    return data


def test_training_chart_grows_while_the_job_runs(page, user):
    job_id = insert_job(
        user.id,
        "text.train",
        {"base_model": "scratch", "size": "tiny", "dataset_id": "ds_x", "max_steps": 200},
        "running",
        60,
        200,
    )
    add_metrics(job_id, range(0, 61), lm_point)
    add_log(job_id, "tokenizer trained: 4096 tokens; 812 training blocks")
    login(page, user.token)
    page.goto(f"/jobs/{job_id}")
    loss = page.locator('figure[data-chart="Loss"]')
    expect(loss.locator("path.series")).to_have_count(2)  # train and validation
    expect(loss.locator(".legend")).to_contain_text("train")
    expect(loss.locator(".legend")).to_contain_text("validation")
    expect(loss.locator(".chart-readout")).to_have_text("latest at step 60")
    expect(page.locator("#charts figure")).to_have_count(4)
    d_before = loss.locator("path.series").first.get_attribute("d")

    add_metrics(job_id, range(61, 121), lm_point)
    set_job(job_id, progress_done=120)
    expect(loss.locator(".chart-readout")).to_have_text("latest at step 120", timeout=10_000)
    assert loss.locator("path.series").first.get_attribute("d").count("L") > d_before.count("L")
    expect(page.locator("#job-progress .progress-text")).to_contain_text("120 / 200 · 60 %")
    box = loss.get_by_role("img").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    expect(loss.locator(".chart-readout")).to_contain_text(re.compile(r"step \d+ · train \d"))
    page.mouse.move(0, 0)
    screenshot(page, "job-text-train")

    from sqlalchemy import func

    add_log(job_id, "succeeded", status="succeeded")
    set_job(
        job_id,
        status="succeeded",
        progress_done=200,
        finished_at=func.now(),
        summary={"final_train_loss": 1.62, "final_val_loss": 1.81, "steps": 200},
    )
    expect(page.locator("#job-status")).to_contain_text("succeeded", timeout=10_000)
    expect(page.locator("#summary")).to_contain_text("final_val_loss")


def test_gan_samples_slider(page, user):
    job_id = insert_job(
        user.id,
        "image.train_gan",
        {"architecture": "dcgan", "dataset": "digits", "max_steps": 200},
        "running",
        200,
        200,
    )
    add_metrics(
        job_id,
        range(0, 201, 5),
        lambda i: {
            "d_loss": 1.4 - i / 400,
            "g_loss": 0.7 + i / 300,
            "d_real": 0.5 + i / 1000,
            "d_fake": 0.5 - i / 1000,
        },
    )
    for step in range(0, 201, 50):
        add_artifact(job_id, user.id, f"samples-{step:06d}.png", "sample", png(step, 96), step=step)
    add_artifact(job_id, user.id, "generator.safetensors.zip", "output", b"PK\x05\x06" + b"\0" * 18)
    login(page, user.token)
    page.goto(f"/jobs/{job_id}")
    slider = page.get_by_label("Step", exact=True)
    expect(slider).to_have_attribute("max", "4")
    expect(page.locator("#sample-caption")).to_have_text("Sample grid at step 200 (5 of 5)")
    expect(page.locator("#sample-img")).to_have_js_property("complete", True)
    assert page.locator("#sample-img").evaluate("img => img.naturalWidth") == 96
    slider.focus()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#sample-caption")).to_have_text("Sample grid at step 100 (3 of 5)")
    expect(page.locator("#artifacts")).to_contain_text("5 sample grids")
    expect(page.locator('figure[data-chart="Losses"] path.series')).to_have_count(2)
    screenshot(page, "job-image-train-gan")


def test_generated_images_gallery(page, user):
    job_id = insert_job(user.id, "image.generate", {"model": "digits-gan", "count": 16}, "succeeded", 16, 16)
    add_artifact(job_id, user.id, "grid.png", "grid", png(99, 256))
    for i in range(16):
        add_artifact(job_id, user.id, f"image-{i:04d}.png", "image", png(i, 28))
    add_artifact(job_id, user.id, "images.zip", "archive", b"PK\x05\x06" + b"\0" * 18)
    login(page, user.token)
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("#images .gallery img")).to_have_count(16)
    expect(page.get_by_role("img", name="Grid of the generated images")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("Download all"))).to_be_visible()
    screenshot(page, "job-image-generate")


def test_models_datasets_and_system(page, user, tiny_model, worker, tmp_path):
    job_id = insert_job(user.id, "text.train", {"base_model": "scratch", "size": "tiny"}, "succeeded", 200, 200)
    add_model(
        "stdlib-gpt-tiny",
        "causal-lm",
        job_id,
        user.id,
        {"val_loss": 1.81, "perplexity": 6.1, "steps": 200},
        base="scratch",
    )
    add_model("digits-gan", "gan-generator", None, user.id, {"fd": 12.4})
    login(page, user.token)

    nav(page, "Models").click()
    expect(page.get_by_role("cell", name=re.compile(tiny_model.name))).to_be_visible()
    expect(page.locator("tr", has_text="stdlib-gpt-tiny")).to_contain_text("perplexity")
    screenshot(page, "models")
    page.locator("tr", has_text=tiny_model.name).get_by_role("link", name="Generate with this model").click()
    expect(page.get_by_label("Model", exact=True)).to_have_value(tiny_model.name)
    page.goto("/models")
    page.locator("tr", has_text="digits-gan").get_by_role("link", name="Generate with this model").click()
    expect(page.locator('.tabs a[aria-current="page"]')).to_have_text("Image generation")
    expect(page.get_by_label("Model", exact=True)).to_have_value("digits-gan")
    screenshot(page, "submit-image-generate")

    corpus = tmp_path / "stdlib-corpus.txt"
    corpus.write_text("\n".join(f"Line {i} of a tiny corpus for the dashboard test." for i in range(200)))
    nav(page, "Datasets").click()
    page.get_by_label("File").set_input_files(str(corpus))
    page.get_by_label("Name").fill("tiny corpus")
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("status")).to_contain_text("Uploaded tiny corpus")
    expect(page.locator("tr", has_text="tiny corpus")).to_contain_text("text")
    screenshot(page, "datasets")
    page.locator("tr", has_text="tiny corpus").get_by_role("link", name="Train on this").click()
    expect(page.get_by_label("Dataset", exact=True)).to_contain_text("tiny corpus")
    screenshot(page, "submit-text-train")
    page.get_by_role("link", name="GAN training").click()
    screenshot(page, "submit-image-train-gan")

    nav(page, "System").click()
    expect(page.locator("#h-db")).to_contain_text("ok")
    expect(page.locator("#h-broker")).to_contain_text("ok")
    expect(page.locator("#workers-body")).to_contain_text("alive", timeout=10_000)
    expect(page.locator("#workers-body")).to_contain_text("gpu")
    screenshot(page, "system")


def test_validation_errors_from_the_api_next_to_fields(page, user, tiny_model):
    login(page, user.token)
    page.goto("/submit")
    page.get_by_label("Model", exact=True).select_option(tiny_model.name)
    page.get_by_label("Prompts").fill("a prompt")
    page.get_by_label("Max new tokens").fill("400")  # within the schema's range, over the tiny model's context
    page.get_by_role("button", name=re.compile("^Submit")).click()
    error = page.locator('[data-field="max_new_tokens"] .field-error')
    expect(error).to_contain_text("must be below the model's context of 128 tokens")
    expect(page.get_by_label("Max new tokens")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Max new tokens")).to_be_focused()
    expect(page.get_by_label("Prompts")).to_have_value("a prompt")
    screenshot(page, "submit-errors")

    page.get_by_label("Max new tokens").fill("8")
    page.get_by_label("Prompts").fill("")
    page.get_by_role("button", name=re.compile("^Submit")).click()
    expect(page.locator("#form-errors")).to_contain_text("give exactly one of `prompts` or `dataset_id`")


def test_login_page_and_logout(page, user):
    page.goto("/jobs/job_nothing")
    page.wait_for_url(re.compile(r"/login\?next="))
    screenshot(page, "login")
    page.get_by_label("API token").fill("gq_wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("Unknown token")
    page.get_by_label("API token").fill(user.token)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()  # back where it was going
    cookies = page.context.cookies()
    session = next(c for c in cookies if c["name"] == "session")
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    nav(page, "Jobs").click()
    expect(page.get_by_role("heading", name="No jobs yet")).to_be_visible()
    screenshot(page, "jobs-empty")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/login$"))
    page.goto("/")
    page.wait_for_url(re.compile(r"/login"))


def test_run_the_demo_from_the_empty_jobs_page(held_queue, stack, page, user, tiny_model):
    """The button queues the three training jobs; when one succeeds, the demo page queues its generation job."""
    login(page, user.token)
    expect(page.get_by_role("heading", name="No jobs yet")).to_be_visible()
    page.get_by_role("button", name="Run the demo").click()
    page.wait_for_url(re.compile(r"/demo\?jobs=job_"))
    rows = page.locator("#demo-jobs tr[data-job-id]")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("LM training")
    expect(rows.nth(1)).to_contain_text("GAN training")
    expect(rows.nth(2)).to_contain_text("Tagger training")
    screenshot(page, "demo")
    lm_id = rows.nth(0).get_attribute("data-job-id")
    set_job(lm_id, status="succeeded", model_id=tiny_model.id)  # as the worker leaves a training job that ended well
    expect(rows).to_have_count(4, timeout=15_000)
    expect(rows.nth(3)).to_contain_text("Text generation")
    page.reload()  # the follow-up is idempotent: a reload finds the same job, queues no other
    page.wait_for_timeout(3000)
    with stack.engine().connect() as conn:
        from sqlalchemy import text

        kinds = conn.execute(text("SELECT kind FROM jobs ORDER BY id")).scalars().all()
    assert sorted(kinds) == ["image.train_gan", "text.generate", "text.train", "text.train_tagger"]
