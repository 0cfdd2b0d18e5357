"""A real browser on the app: Debian's Chromium driven by Playwright (tiny model).

Without Chromium these tests skip with one line saying how to get it (tests/conftest.py), and
fail under CI=true. Screenshots go to ci-artifacts/screenshots (SHUFFLELM_SCREENSHOTS)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.appserver import running_app
from tests.conftest import missing_chromium_reason, on_ci

pytestmark = pytest.mark.browser
if missing_chromium_reason() and not on_ci():  # one line for the whole module, not one per test
    pytest.skip(missing_chromium_reason(), allow_module_level=True)
SCREENSHOTS = Path(os.environ.get("SHUFFLELM_SCREENSHOTS", "ci-artifacts/screenshots"))
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
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
STATUS = "document.querySelector('#status') ? document.querySelector('#status').innerText : ''"


@pytest.fixture(scope="module")
def browser(chromium):
    """One Playwright and one Chromium for the module (Playwright's sync API cannot be started
    twice in one thread)."""
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def browser_and_url(browser):
    with running_app("tiny") as (url, _):
        yield browser, url


def open_page(browser, url: str, viewport: dict, *, init_script: str | None = None):
    """A page of the app; `init_script`, when given, runs before the page's own scripts."""
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    dialogs, posted = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: posted.append(r.post_data) if "queue/join" in r.url else None)
    page.dialogs, page.posted = dialogs, posted
    page.goto(url)
    page.wait_for_selector("#prompt textarea", timeout=60_000)
    return page


@pytest.fixture(scope="module")
def page(browser_and_url):
    browser, url = browser_and_url
    page = open_page(browser, url, {"width": 1400, "height": 1000})
    yield page
    page.context.close()


EXAMPLES = sorted(Path("assets/examples").glob("*.json"))  # the example traces, in menu order


def choose_example(page, name: str) -> None:
    """Pick an example trace by name in the page's menu."""
    page.locator("#example-trace input").click()
    page.get_by_role("option", name=name).click()


def open_settings(page) -> None:
    """Unfold the settings (folded by default)."""
    if not page.locator("#max-new-tokens").is_visible():
        page.locator("#settings").get_by_text("Settings", exact=True).click()
        page.locator("#max-new-tokens").wait_for(state="visible", timeout=10_000)


def wait_until_done(page, timeout: int = 120_000) -> None:
    page.wait_for_function(f"({STATUS}).includes('done')", timeout=timeout)


def generate(page, prompt: str, *, tokens: int | None = 24) -> None:
    page.posted.clear()
    if tokens is not None:
        open_settings(page)
        page.fill("#max-new-tokens input[type=number]", str(tokens))
    page.fill("#prompt textarea", prompt)
    page.click("#generate")
    wait_until_done(page)


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


def test_a_bad_prompt_gets_a_message_and_the_page_goes_on(page):
    """A run refused at the boundary (an empty prompt) says why in the page, as a message, and
    the page takes the next run (the run shows its progress on no component, so nothing else
    would carry its error)."""
    page.fill("#prompt textarea", "   ")
    page.click("#generate")
    toast = page.locator("[data-testid='toast-body']").filter(has_text="The prompt is empty")
    toast.first.wait_for(state="visible", timeout=30_000)
    assert "Traceback" not in page.text_content("body")
    generate(page, "Hi", tokens=4)
    assert page.evaluate(STATUS).startswith("done")


def test_settings_default_to_the_library_and_the_slider_fits_the_model(page):
    page.wait_for_function(
        "document.querySelector('#max-drafts input[type=number]').value === '14'", timeout=60_000
    )  # the tiny model: K = 4 head slots + 10 context drafts
    assert page.input_value("#keep-threshold input") == "auto"
    generate(page, "the cat sat. the cat sat. the cat")
    sent = [json.loads(p) for p in page.posted if p and '"the cat sat' in p]
    # [0]: the page's Watching state (server-side); [1]: the run's inputs, packed by the page
    data = sent[0]["data"][1] if sent else []
    assert data and data[7] == "auto"  # keep: the library's default, not a number
    assert data[10:12] == ["cost", "head+context"]


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


def test_the_end_of_the_answer_shows_as_a_marker(page):
    choose_example(page, next(p.stem for p in EXAMPLES if "04-" in p.name))
    page.wait_for_function("document.querySelector('#caption textarea').value.startsWith('Step 0')")
    text = page.text_content("#output-text")
    assert "■ end of answer" in text and "<|" not in text and "im_end" not in text
    page.locator("#output-text").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "end-of-answer.png"), full_page=True)


# Draws a figure (its JSON) in a scratch div the way Gradio's Plot does (autosize, margins that may
# grow) and gives back its starting and its drawn margins.
DRAWN_MARGINS = """async (json) => {
  const div = document.createElement('div');
  div.style.width = '900px';
  document.body.appendChild(div);
  const figure = JSON.parse(json);
  figure.layout.autosize = true;
  figure.layout.margin.autoexpand = true;
  await window.Plotly.newPlot(div, figure.data, figure.layout, {responsive: true});
  const size = div._fullLayout._size, start = figure.layout.margin;
  window.Plotly.purge(div);
  div.remove();
  return {start: [start.l, start.r, start.t, start.b], drawn: [size.l, size.r, size.t, size.b]};
}"""


def test_the_step_heatmaps_start_with_room_for_their_labels(page):
    """Plotly widens a margin that its labels need by drawing the figure again, and the live
    view's pictures are fresh plots: the heatmaps start from the room their labels usually take
    (viz.figures.label_room), so that their margins seldom grow, and they still may."""
    from shuffle_model import GenerationTrace
    from viz.figures import draft_heatmap, shuffle_heatmap

    choose_example(page, EXAMPLES[0].stem)
    page.wait_for_function("!!window.Plotly", timeout=30_000)  # the example's pictures load it
    grown = drawn = 0
    for path in EXAMPLES:
        trace = GenerationTrace.from_json(path.read_bytes())
        for step in [s for s in trace.steps if s.slots][:12]:
            for figure in (shuffle_heatmap(step), draft_heatmap(step)):
                margins = page.evaluate(DRAWN_MARGINS, figure.to_json())
                drawn += 1
                grown += any(
                    d > s + 1 for s, d in zip(margins["start"], margins["drawn"], strict=True)
                )
    assert drawn >= 40
    assert grown <= drawn // 10  # 6 of 192 on the example traces; all of them from 10 px


def ready_page(browser, url: str, init_script: str):
    """A desktop page of the app, `init_script` run before the page's own scripts, once the
    model is ready."""
    page = open_page(browser, url, DESKTOP, init_script=init_script)
    page.wait_for_function(f"({STATUS}).startsWith('Ready')", timeout=60_000)
    return page


# Counts, before the page's own scripts run, the animation frames asked of the browser.
COUNT_FRAMES = """(() => {
  const frame = window.requestAnimationFrame.bind(window);
  window.__frames = 0;
  window.requestAnimationFrame = (callback) => { window.__frames++; return frame(callback); };
})();"""
# A frame loop: how many frames it got in a second (waiting no longer than 1.5 s for them). A
# tracker's count is written as Gradio's minified one is (the clock, milliseconds to seconds).
LOOP_FOR_A_SECOND = """async (trackerLike) => {
  let frames = 0, seconds = 0;
  const started = performance.now();
  await new Promise((done) => {
    setTimeout(done, 1500);
    const other = () => {
      frames++;
      if (performance.now() - started < 1000) requestAnimationFrame(other); else done();
    };
    const count = () => {
      seconds=(performance.now()-started)/1e3,frames++,seconds<1?requestAnimationFrame(count):done();
    };
    requestAnimationFrame(trackerLike ? count : other);
  });
  return frames;
}"""
FRAMES_IN = """async (ms) => {
  const [frames, looks] = [window.__frames, window.__shufflelm_looks];
  await new Promise((done) => setTimeout(done, ms));
  return {frames: window.__frames - frames, looks: window.__shufflelm_looks - looks};
}"""
SHOW_A_TRACKER = """() => {
  const tracker = document.createElement("div");  // as Gradio 6.31 marks its status trackers
  tracker.className = "wrap";
  tracker.dataset.testid = "status-tracker";
  document.body.append(tracker);
}"""


def test_unseen_trackers_take_no_frames_and_a_shown_count_ticks_ten_times_a_second(
    browser_and_url,
):
    """Gradio 6.31's page-load status tracker is removed without its teardown: its elapsed-time
    count and its loading animation's springs ask for every animation frame for the page's life
    (shufflers/page_script). The app's first script holds them while no tracker or toast is
    shown, and gives a shown tracker's count a frame every 100 ms; other loops keep theirs."""
    page = ready_page(*browser_and_url, COUNT_FRAMES)
    page.wait_for_timeout(1000)  # loaded and settled
    idle = page.evaluate(FRAMES_IN, 2000)
    unseen_count = page.evaluate(LOOP_FOR_A_SECOND, True)
    other = page.evaluate(LOOP_FOR_A_SECOND, False)
    page.evaluate(SHOW_A_TRACKER)
    shown = page.evaluate(FRAMES_IN, 1000)
    count = page.evaluate(LOOP_FOR_A_SECOND, True)
    page.context.close()
    assert idle["frames"] <= 4  # the idle page asks for none (138 in 2 s with the count alone held)
    assert 10 <= idle["looks"] <= 30  # Gradio's leftover loops were found and wait: a look at
    # the page every 100 ms
    assert unseen_count == 0  # a count no one sees waits
    assert other >= 30  # any other loop keeps its frames (60 a second here)
    assert shown["frames"] >= 20 and shown["looks"] == 0  # a tracker shown: the held loops go on
    assert 5 <= count <= 15  # a shown tracker's count: about 10 a second


# Counts, before the page's own scripts run, the figures Plotly finishes drawing (its
# "plotly_afterplot" event, through the `emit` Plotly gives each plot's div when it first draws).
COUNT_DRAWS = """(() => {
  window.__plot_draws = 0;
  Object.defineProperty(HTMLDivElement.prototype, "emit", {
    configurable: true,
    get: () => undefined,
    set(emit) {
      const counted = (event, data) => {
        if (event === "plotly_afterplot") window.__plot_draws++;
        return emit.call(this, event, data);
      };
      Object.defineProperty(this, "emit", {configurable: true, writable: true, value: counted});
    },
  });
})();"""
SCRUBBED_TO = (
    "(k) => document.querySelector('#caption textarea').value.startsWith(`Step ${k}`) && "
    "(document.querySelector('#shuffle-plot .gtitle')?.textContent ?? '').startsWith(`Step ${k}`)"
)


def test_a_new_picture_is_drawn_once(browser_and_url):
    """Gradio 6.31's Plot draws a new figure on the plot it is replacing, then on a fresh one,
    then again when it checks the fresh one's size (shufflers/page_script): the app's first script
    has each picture update drawn once, and it still shows the step it was sent for."""
    page = ready_page(*browser_and_url, COUNT_DRAWS)
    choose_example(page, EXAMPLES[0].stem)
    page.wait_for_function(SCRUBBED_TO, arg=0, timeout=30_000)
    page.wait_for_timeout(500)  # past Gradio's resize, 100 ms after a draw
    assert page.evaluate("window.__plot_draws") >= 1  # the count sees Plotly's draws
    page.evaluate("window.__plot_draws = 0; window.__shufflelm_skipped_draws = 0")
    slider = page.locator("#step-slider input[type=number]")
    for k in (1, 2, 3):
        slider.fill(str(k))
        slider.press("Enter")
        page.wait_for_function(SCRUBBED_TO, arg=k, timeout=30_000)
        page.wait_for_timeout(500)
    draws = page.evaluate("window.__plot_draws")
    skipped = page.evaluate("window.__shufflelm_skipped_draws")
    plots = page.locator("#shuffle-plot .js-plotly-plot").count()
    page.context.close()
    assert draws == 3  # one per update (9 without the script)
    assert skipped >= 6  # Gradio's extra draws were there, two per update, and were skipped
    assert plots == 1


# --- the first screen ---------------------------------------------------------------------------


def box(page, selector: str) -> dict:
    found = page.locator(selector).first.bounding_box()
    assert found, f"{selector} is not rendered"
    return found


def within(found: dict, viewport: dict) -> bool:
    return (
        found["x"] >= 0
        and found["y"] >= 0
        and found["x"] + found["width"] <= viewport["width"]
        and found["y"] + found["height"] <= viewport["height"]
    )


STORY = ["#prompt", "#generate", "#caption", "#shuffle-plot .js-plotly-plot"]


def test_the_story_fits_the_first_screen_on_a_desktop(browser_and_url):
    browser, url = browser_and_url
    page = open_page(browser, url, DESKTOP)
    try:
        assert not page.locator("#max-new-tokens").is_visible()  # the settings are folded
        page.screenshot(path=str(SCREENSHOTS / "first-screen-1440x900-before.png"))
        page.fill("#prompt textarea", "the cat sat. the cat sat. the cat")
        page.click("#generate")
        wait_until_done(page)
        page.wait_for_selector("#shuffle-plot .js-plotly-plot", timeout=30_000)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(SCREENSHOTS / "first-screen-1440x900.png"))
        for selector in STORY:
            assert within(box(page, selector), DESKTOP), f"{selector} is below the first screen"
        # the explanation sits beside the picture it explains
        how, plot = box(page, "#how-it-works"), box(page, "#shuffle-plot")
        assert how["x"] + how["width"] <= plot["x"]
        assert how["y"] < plot["y"] + plot["height"] and plot["y"] < how["y"] + how["height"]
        # an example trace of the default model (K = 6: a taller heatmap) fits too
        choose_example(page, EXAMPLES[0].stem)
        page.wait_for_function(SCRUBBED_TO, arg=0, timeout=30_000)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(SCREENSHOTS / "first-screen-1440x900-example.png"))
        for selector in STORY:
            assert within(box(page, selector), DESKTOP), f"{selector} is below the first screen"
    finally:
        page.context.close()


def test_the_story_is_reachable_on_a_phone(browser_and_url):
    browser, url = browser_and_url
    page = open_page(browser, url, PHONE)
    try:
        for selector in ("#prompt", "#generate"):
            assert within(box(page, selector), PHONE), f"{selector} is not on the first screen"
        page.screenshot(path=str(SCREENSHOTS / "phone-390x844-first-screen.png"))
        page.fill("#prompt textarea", "hello phone")
        page.click("#generate")
        wait_until_done(page)
        plot = page.locator("#shuffle-plot .js-plotly-plot")
        plot.wait_for(timeout=30_000)
        assert box(page, "#live-view")["y"] < box(page, "#how-it-works")["y"]  # pictures first
        page.locator("#caption").scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / "phone-390x844-live-view.png"))
        for selector in ("#caption", "#shuffle-plot .js-plotly-plot"):
            page.locator(selector).first.scroll_into_view_if_needed()
            found = box(page, selector)
            assert found["width"] <= PHONE["width"], f"{selector} is wider than the phone"
            assert within(found, {"width": PHONE["width"], "height": 10**6})
        page.screenshot(path=str(SCREENSHOTS / "phone-390x844-full.png"), full_page=True)
    finally:
        page.context.close()


# --- Stop ---------------------------------------------------------------------------------------

STEP_SECONDS = 0.05


class SlowRun:
    """A model's stream, one step every STEP_SECONDS, keeping a count of the steps taken."""

    def __init__(self, run, taken: list):
        self.run, self.taken = run, taken

    def __iter__(self):
        for step in self.run:
            self.taken.append(step.index)
            time.sleep(STEP_SECONDS)
            yield step

    def __getattr__(self, name):
        return getattr(self.run, name)


def test_stop_ends_a_generation_started_by_enter_or_by_the_button(browser):
    from shuffle_model.model.runtime import LazyModel
    from shuffle_model.model.tiny import tiny_model

    taken: list[int] = []

    def slow_tiny_model(status):
        model = tiny_model()
        stream = model.stream
        model.stream = lambda *args, **kwargs: SlowRun(stream(*args, **kwargs), taken)
        return model

    runtime = LazyModel(slow_tiny_model, config=lambda: tiny_model().config)
    with running_app("tiny", model=runtime) as (url, _):
        page = open_page(browser, url, DESKTOP)
        open_settings(page)
        page.fill("#max-new-tokens input[type=number]", "256")
        for start in ("Enter", "click"):
            taken.clear()
            page.fill("#prompt textarea", f"stop me ({start})")
            if start == "Enter":
                page.press("#prompt textarea", "Enter")
            else:
                page.click("#generate")
            page.wait_for_function(f"({STATUS}).includes('generating')", timeout=60_000)
            page.click("#stop")
            time.sleep(1.0)
            stopped_at = len(taken)
            time.sleep(2.0)  # an unstopped run would take 20+ more steps meanwhile
            assert len(taken) == stopped_at, f"Stop did not end a generation started by {start}"
            assert "done" not in page.evaluate(STATUS)
            assert 0 < stopped_at < 200
        page.screenshot(path=str(SCREENSHOTS / "stopped.png"))
        page.context.close()
