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
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.dialogs = dialogs
        page.goto(url)
        page.wait_for_selector("#prompt textarea", timeout=60_000)
        yield page
        browser.close()


def generate(page, prompt: str) -> None:
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
