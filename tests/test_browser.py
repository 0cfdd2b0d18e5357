"""A real browser on the app: Debian's Chromium driven by Playwright (tiny model)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.appserver import running_app

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(os.environ.get("SHUFFLELM_SCREENSHOTS", "ci-artifacts/screenshots"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: .ci/run installs it with apt-get install chromium")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with running_app("tiny") as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(
            viewport={"width": 1400, "height": 1000}, accept_downloads=True
        )
        page = context.new_page()
        dialogs, posted = [], []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda r: posted.append(r.post_data) if "queue/join" in r.url else None)
        page.dialogs, page.posted = dialogs, posted
        page.goto(url)
        page.wait_for_selector("#prompt textarea", timeout=60_000)
        yield page
        browser.close()


def generate(page, prompt: str) -> None:
    page.posted.clear()
    page.fill("#prompt textarea", prompt)
    page.fill("#max-new-tokens input[type=number]", "24")
    page.click("#generate")
    page.wait_for_function(
        "document.querySelector('#status') && document.querySelector('#status').innerText"
        ".includes('done')",
        timeout=120_000,
    )


def test_generate_renders_heatmaps_and_the_slider_moves(page):
    generate(page, "hello there")
    page.wait_for_selector("#shuffle-plot .js-plotly-plot", timeout=30_000)
    title = page.text_content("#shuffle-plot .gtitle")
    assert "Step" in title
    page.screenshot(path=str(SCREENSHOTS / "after-generate.png"), full_page=True)
    slider = page.locator("#step-slider input[type=number]")
    slider.fill("0")
    slider.press("Enter")
    page.wait_for_function(
        "document.querySelector('#caption textarea').value.startsWith('Step 0')", timeout=30_000
    )
    assert page.text_content("#shuffle-plot .gtitle").startswith("Step 0")
    page.screenshot(path=str(SCREENSHOTS / "step-0.png"), full_page=True)


def test_gif_downloads_and_starts_with_gif89a(page, tmp_path):
    generate(page, "gif please")
    page.click("#make-gif")
    link = page.locator('#gif-file a[href$="shufflelm.gif"]')
    link.wait_for(timeout=120_000)
    with page.expect_download() as info:
        link.click()
    target = tmp_path / "download.gif"
    info.value.save_as(target)
    assert target.read_bytes()[:6] == b"GIF89a"
    page.screenshot(path=str(SCREENSHOTS / "gif-exported.png"), full_page=True)


def test_hostile_text_is_shown_literally(page):
    hostile = '<img src=x onerror=alert(1)><script>alert("x")</script>'
    generate(page, hostile)
    assert page.dialogs == []
    assert page.locator("#output-text img").count() == 0
    assert page.locator("#output-text script").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "hostile.png"), full_page=True)


def test_settings_default_to_the_library_and_the_slider_fits_the_model(page):
    import json

    page.wait_for_function(
        "document.querySelector('#max-drafts input[type=number]').value === '14'", timeout=60_000
    )  # the tiny model: K = 4 head slots + 10 context drafts
    assert page.input_value("#keep-threshold input") == "auto"
    generate(page, "the cat sat. the cat sat. the cat")
    sent = [json.loads(p) for p in page.posted if p and '"the cat sat' in p]
    assert sent and sent[0]["data"][7] == "auto"  # keep: the library's default, not a number
    assert sent[0]["data"][10:12] == ["cost", "head+context"]


def test_the_decision_and_the_plan_are_on_the_page(page):
    generate(page, "the cat sat. the cat sat. the cat")
    caption = page.input_value("#caption textarea")
    assert caption.startswith("Step ") and "this step" in caption  # decision, then outcome
    legend = page.text_content("#output-text")
    assert "accepted draft (context)" in legend and "accepted draft (head)" in legend
    page.get_by_role("tab", name="Filter and plan").click()
    page.wait_for_selector("#filter-plot .js-plotly-plot", timeout=30_000)
    assert "the filter and the plan" in page.text_content("#filter-plot .gtitle")
    page.screenshot(path=str(SCREENSHOTS / "filter-and-plan.png"), full_page=True)
    page.get_by_role("tab", name="Cost curve").click()
    page.wait_for_selector("#cost-plot .js-plotly-plot", timeout=30_000)
    assert "This machine" in page.text_content("#cost-plot .gtitle")
    page.screenshot(path=str(SCREENSHOTS / "cost-curve.png"), full_page=True)
    page.get_by_role("tab", name="Shuffle").click()
