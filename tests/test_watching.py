"""What watching a generation costs: the same run through the API (gradio_client, no page)
and watched in Chromium on the same machine, on the default model.

It records, and asserts nothing about time (timings belong in reports, not in unit tests):
the watched run's wall time against the API's (best of RUNS each, in turns), and the CPU the browser
spent per step; it writes them to ci-artifacts/watching.json (SHUFFLELM_ARTIFACTS) and prints
them. It asserts what must hold however fast the machine is: the page shows the same text as
the API, and every step of the run lands in the scrubber."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import psutil
import pytest
from gradio_client import Client

import viz
from shuffle_model import GenerationTrace
from tests.appserver import running_app
from tests.conftest import missing_chromium_reason, on_ci
from tests.test_browser import ARGS, STATUS, open_settings
from viz.style import END_LABEL

pytestmark = [pytest.mark.browser, pytest.mark.default_model]
if missing_chromium_reason() and not on_ci():
    pytest.skip(missing_chromium_reason(), allow_module_level=True)

PROMPT = "Explain how a rainbow forms, in three sentences."
TOKENS = 64
RUNS = 3
VIEWPORT = {"width": 1440, "height": 900}
ARTIFACTS = Path(os.environ.get("SHUFFLELM_ARTIFACTS", "ci-artifacts"))


def browser_cpu_seconds() -> float:
    """CPU time (user + system) of every Chromium process this test started."""
    total = 0.0
    for process in psutil.Process().children(recursive=True):
        try:
            if "chrom" in process.name().lower():
                times = process.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            continue
    return total


def api_run(client: Client) -> tuple[float, list]:
    started = time.perf_counter()
    result = client.predict(prompt=PROMPT, chat=True, max_new_tokens=TOKENS, api_name="/generate")
    return time.perf_counter() - started, result


RATE = re.compile(r"([\d.]+)\**\s*tokens/s of generation")


def generation_rate(status: str) -> float:
    """The model's own tokens/s, as the status line says it."""
    return float(RATE.search(status).group(1))


# The page times its own run: a MutationObserver on the status line notes when it says
# "generating" and then "done" (performance.now(), at the DOM change). Playwright's default
# wait_for_function polls on every animation frame, reading the status's innerText (a style and
# layout pass) 60 times a second: work a visitor's browser never does, which the measurement
# would charge to the page. The test only looks every POLL_MS for the page's own record.
ARM = """() => {
  const status = document.querySelector('#status');
  const run = window.__watched_run = {clicked: null, generating: false, done: null};
  document.querySelector('#generate').addEventListener(
    'click', () => { run.clicked ??= performance.now(); }, {capture: true, once: true});
  const observer = new MutationObserver(() => {
    const text = status.textContent.trim();
    if (!run.generating) { run.generating = text.startsWith('generating'); return; }
    if (text.startsWith('done')) { run.done = performance.now(); observer.disconnect(); }
  });
  observer.observe(status, {subtree: true, childList: true, characterData: true});
}"""
POLL_MS = 250


def watched_run(page) -> tuple[float, float, float]:
    """(wall seconds from the click to 'done', as the page timed them, Chromium's CPU seconds
    meanwhile, the model's tokens/s as the page says)."""
    page.fill("#prompt textarea", PROMPT)
    page.evaluate(ARM)
    cpu = browser_cpu_seconds()
    page.click("#generate")
    page.wait_for_function("window.__watched_run.done !== null", polling=POLL_MS, timeout=300_000)
    cpu = browser_cpu_seconds() - cpu
    run = page.evaluate("window.__watched_run")
    return (run["done"] - run["clicked"]) / 1000, cpu, generation_rate(page.evaluate(STATUS))


def open_app(page, url: str) -> None:
    """The app, loaded, set to TOKENS new tokens, after one untimed run (a fresh page's first run
    also loads the renderers' code)."""
    page.goto(url)
    page.wait_for_function(f"({STATUS}).startsWith('Ready')", timeout=120_000)
    open_settings(page)
    page.fill("#max-new-tokens input[type=number]", str(TOKENS))
    watched_run(page)


def test_watching_a_run_costs_little_and_shows_every_step(chromium):
    from playwright.sync_api import sync_playwright

    with running_app("default") as (url, _), sync_playwright() as p:
        client = Client(url, verbose=False)
        api_run(client)  # loads the model and measures the cost curve, untimed
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        api, watched = [], []
        for _ in range(RUNS):  # in turns, so that the machine's drifting speed hits both alike
            api.append(api_run(client))  # no page open
            page = browser.new_page(viewport=VIEWPORT)  # a fresh page for each watched run
            open_app(page, url)
            watched.append(watched_run(page))
            if len(watched) < RUNS:
                page.close()
        trace = json.loads(Path(api[-1][1][8]).read_text())
        steps = len(trace["steps"])
        text = page.text_content("#output-text")
        page_cost = page.evaluate(STATUS).splitlines()[-1]  # what the page cost the server
        scrubber = page.get_attribute("#step-slider input[type=range]", "max")
        stored = page.evaluate("Object.keys(window.localStorage)")
        browser.close()

    spans = viz.token_spans(GenerationTrace.from_dict(trace))  # the API's run
    expected = "".join(text for text, label in spans if label != END_LABEL)
    squashed = "".join(text.split())  # whitespace aside (the legend's text comes first)
    assert "".join(expected.split())[-40:] in squashed  # it shows the run the API gave
    assert int(scrubber) == steps - 1  # every step can be scrubbed to afterwards
    assert not [key for key in stored if "run-history" in key]  # runs are not copied to the browser
    best_api = min(seconds for seconds, _ in api)
    best_watched = min(seconds for seconds, *_ in watched)
    report = {
        "prompt": PROMPT,
        "max_new_tokens": TOKENS,
        "new_tokens": len(trace["output_ids"]),
        "steps": steps,
        "api_seconds": [round(s, 2) for s, _ in api],
        "watched_seconds": [round(s, 2) for s, *_ in watched],
        "watched_over_api_best_of_3": round(best_watched / best_api, 2),
        "watched_over_api_by_turn": [
            round(w[0] / a[0], 2) for a, w in zip(api, watched, strict=True)
        ],
        "browser_cpu_ms_per_step": [round(cpu * 1000 / steps, 1) for _, cpu, _ in watched],
        # the model's own speed, as the status line says it (the page's time not counted)
        "api_generation_tokens_per_s": [generation_rate(result[0]) for _, result in api],
        "watched_generation_tokens_per_s": [rate for *_, rate in watched],
        "server_page_cost_last_run": page_cost,
        "cpu": psutil.cpu_count(),
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "watching.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\nwatching:", json.dumps(report))
