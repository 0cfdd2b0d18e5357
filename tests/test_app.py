"""The web app through its API (gradio_client), on the tiny model and once on the default."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

import viz
from shuffle_model import GenerationSettings, GenerationTrace
from shuffle_model.decoding.settings import max_drafts
from shuffle_model.model.tiny import tiny_model
from tests.appserver import running_app
from tests.test_viz import read_spans

SETTINGS = dict(
    chat=False,
    max_new_tokens=24,
    max_parallel=4,
    strategy="rotary",
    temperature=0.0,
    top_p=1.0,
    keep=0.0,
    verify=True,
    seed=0,
    block_length="cost",
    draft_source="head+context",
)
API_SETTINGS = [  # /generate's settings, by generate()'s names
    "max_new_tokens",
    "max_parallel_tokens",
    "shuffle_strategy",
    "temperature",
    "top_p",
    "keep_threshold",
    "verify",
    "seed",
    "block_length",
    "draft_source",
]
TINY_SLOTS = 4  # shuffle_model.model.tiny.tiny_model's K
CONFIG = tiny_model().config
README = Path(__file__).resolve().parent.parent / "README.md"
TRACE_FILE = 8  # /generate's outputs: status, text, caption, 4 plots, step, then the trace file


def generate(client: Client, prompt: str, **overrides):
    return client.predict(prompt, *{**SETTINGS, **overrides}.values(), api_name="/generate")


@pytest.fixture(scope="module")
def app_url():
    with running_app("tiny") as (url, _):
        yield url


@pytest.fixture
def client(app_url):
    return Client(app_url, verbose=False)


def documented_endpoints() -> list[str]:
    """The endpoints the README lists: 'Endpoints for `gradio_client`: `/a`, `/b`, ...'."""
    text = " ".join(README.read_text().split())
    listed = re.search(r"Endpoints for `gradio_client`: (.*?)\.(?:\s|$)", text)
    assert listed, "the README lists no endpoints for gradio_client"
    return re.findall(r"`(/\w+)`", listed.group(1))


def test_build_demo_wires_the_documented_endpoints():
    import app

    demo = app.build_demo()
    names = {d.api_name for d in demo.fns.values() if d.api_name}
    assert {"generate", "export_gif", "load_trace", "load_example", "show_step", "compare"} <= names
    loaders = [d.fn.__name__ for d in demo.fns.values() if d.api_name == "load_example"]
    assert loaders == ["load_example"]  # the example traces' loader, not gr.Examples' own
    assert demo._queue is not None


def readme_predict_call() -> dict:
    """The keyword arguments of the README's `client.predict(...)` example."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(block for block in blocks if "client.predict(" in block)
    call = next(
        node
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "predict"
    )
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords}


def test_the_api_names_the_settings_as_the_library_does(client):
    """/generate's parameters carry generate()'s names (not param_2 ... param_11), so a client
    can pass them by name; the README's call is one such call."""
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = [p["parameter_name"] for p in api["/generate"]["parameters"]]
    assert names == ["prompt", "chat", *API_SETTINGS]
    assert set(API_SETTINGS) <= {f.name for f in dataclasses.fields(GenerationSettings)}
    documented = readme_predict_call()
    assert documented.pop("api_name") == "/generate" and set(documented) <= set(names)
    assert {"prompt", "max_new_tokens", "draft_source"} <= set(documented)
    status, *_, trace_file, _, _ = client.predict(
        **{**documented, "chat": False, "max_new_tokens": 12}, api_name="/generate"
    )
    assert status.startswith("done")
    settings = json.loads(Path(trace_file).read_text())["settings"]
    assert settings["max_new_tokens"] == 12
    assert settings["draft_source"] == documented["draft_source"]


def test_the_readme_lists_exactly_the_served_endpoints(client):
    served = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    documented = documented_endpoints()
    assert len(documented) == len(set(documented))
    assert set(documented) == set(served)


def test_stop_cancels_a_generation_started_either_way():
    import app

    demo = app.build_demo()
    config = demo.get_config_file()
    dependencies = config["dependencies"]
    run = component(demo, "generate")
    prompt = component(demo, "prompt")
    started = {  # the page packs the run's inputs (in the browser), then runs it on the server
        d["id"]
        for d in dependencies
        if d["targets"] and tuple(d["targets"][0]) in ((run._id, "click"), (prompt._id, "submit"))
    }
    generating = {d["id"] for d in dependencies if d["trigger_after"] in started}
    stop = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "stop")
    cancelling = [d for d in dependencies if d["targets"] and d["targets"][0][0] == stop._id]
    assert len(started) == len(generating) == 2  # the button's click and Enter
    # Gradio 6 wires a click with `cancels` as two dependencies, one of them carrying the cancels
    cancelled = {i for d in cancelling for i in d["cancels"]}
    assert cancelled == generating


def component(demo, elem_id: str):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def test_the_drafts_slider_spans_the_models_drafts_before_it_loads():
    import app
    from shuffle_model.model.runtime import LazyModel
    from shuffle_model.model.tiny import tiny_model

    loads = []
    runtime = LazyModel(lambda status: loads.append(1) or tiny_model(), config=lambda: CONFIG)
    demo = app.build_demo(runtime)
    slider = component(demo, "max-drafts")  # from the model's config: exact before it loads
    assert slider.maximum == slider.value == max_drafts(TINY_SLOTS) == TINY_SLOTS + 10
    assert not loads
    updates = list(app.fit_to_model(runtime))  # the page-load handler loads the model
    ready = "Ready: the model runs in float32 (as given)."  # the dtype, and why
    assert updates == ["Loading the model (first use only)…", ready] and loads == [1]
    assert list(app.fit_to_model(runtime)) == [ready]  # loaded once
    default = component(app.build_demo(), "max-drafts")  # the shipped head, still not loaded
    assert default.maximum == max_drafts(LazyModel().config.num_slots)


def test_keep_threshold_defaults_to_the_librarys_auto():
    import app

    demo = app.build_demo()
    keep = component(demo, "keep-threshold")
    assert keep.value == "auto"  # the library's default: the app never picks one of its own
    assert component(demo, "block-length").value == "cost"
    assert component(demo, "draft-source").value == "head+context"
    settings = app.generation_settings(
        24.0, 14, "rotary", 0.0, 1.0, "auto", True, 0, "fixed", "head", config=CONFIG
    )
    assert settings["max_parallel_tokens"] == 14 and settings["max_new_tokens"] == 24
    # auto: the library fills in the head's own threshold under the fixed rule, 0 under the cost
    assert settings["keep_threshold"] == CONFIG.default_keep_threshold
    cost = app.generation_settings(24, 14, "rotary", 0, 1, "auto", True, 0, "cost", config=CONFIG)
    assert cost["keep_threshold"] == 0.0
    assert app.keep_setting(None) is None and app.keep_setting(" Auto ") is None
    assert app.keep_setting("0.35") == 0.35 and app.keep_setting(0.0) == 0.0
    assert app.keep_setting("lots") == "lots"  # for the library to refuse by name
    assert settings["block_length"] == "fixed" and settings["draft_source"] == "head"


def test_the_cost_curve_is_measured_before_a_planned_run_only():
    import app
    from shuffle_model.decoding.cost import CostCurve
    from shuffle_model.model.tiny import tiny_model

    model = tiny_model()
    planned = dict(verify=True, max_parallel_tokens=4)
    assert app.needs_cost_curve(model, planned)
    assert not app.needs_cost_curve(model, {**planned, "verify": False})
    assert not app.needs_cost_curve(model, {**planned, "max_parallel_tokens": 0})
    model.cost_curve = CostCurve.from_ratios([1.0, 1.2])
    assert not app.needs_cost_curve(model, planned)


def test_generate_streams_steps_and_returns_a_trace(client):
    job = client.submit("hello world", *SETTINGS.values(), api_name="/generate")
    updates = list(job)
    result = job.result()
    status, spans, caption, shuffle, drafts, filt, tree, slider, trace_file, overview, cost = result
    assert len(updates) >= 2  # streamed: several updates before the last
    assert status.startswith("done")
    assert "this machine: a pass over" in status  # the cost curve the run planned with
    trace = json.loads(Path(trace_file).read_text())
    assert trace["prompt_ids"] and trace["settings"]["max_new_tokens"] == 24
    assert read_spans(spans) == viz.token_spans(GenerationTrace.load(trace_file))
    plot = json.loads(shuffle["plot"])
    index = slider["value"] if isinstance(slider, dict) else slider
    shown = GenerationTrace.load(trace_file).steps[index]
    if shown.slots:  # the head drafted at the step shown: its shuffle scores
        assert plot["data"][0]["type"] == "heatmap"
    else:  # the head rested there: the panel says so instead of drawing nothing
        assert not plot["data"] and plot["layout"]["annotations"][0]["text"]
    curve = json.loads(cost["plot"])["data"]
    assert any(line["y"] == trace["cost_curve"]["ratios"] for line in curve)


def test_the_caption_gives_the_steps_decision_and_the_text_its_sources(client):
    from viz.page import SPAN_COLORS, last_drafting_step, step_caption

    result = generate(client, "abcabcabcabc abcabcabc", max_new_tokens=40)
    caption, trace_file = result[2], result[TRACE_FILE]
    trace = GenerationTrace.load(trace_file)
    index = last_drafting_step(trace)
    assert caption == step_caption(trace, index)
    assert caption.startswith(f"Step {index}: {viz.decision_sentence(trace.steps[index])}")
    labels = {label for _, label in read_spans(result[1])}
    assert labels <= set(SPAN_COLORS)
    expected = {label for _, label in viz.token_spans(trace)}
    assert labels == expected


def test_new_settings_reach_the_library(client):
    result = generate(client, "fixed rule please", block_length="fixed", draft_source="head")
    settings = json.loads(Path(result[TRACE_FILE]).read_text())["settings"]
    assert settings["block_length"] == "fixed" and settings["draft_source"] == "head"
    assert settings["max_parallel_tokens"] == 4
    resolved = GenerationSettings(block_length="fixed").resolved(
        num_slots=TINY_SLOTS, default_keep_threshold=0.5
    )
    auto = generate(client, "auto keep", keep="auto", block_length="fixed", draft_source="head")
    assert json.loads(Path(auto[TRACE_FILE]).read_text())["settings"]["keep_threshold"] == (
        resolved.keep_threshold
    )
    context = generate(client, "abab abab abab", draft_source="context", max_new_tokens=12)
    sources = {
        source
        for step in json.loads(Path(context[TRACE_FILE]).read_text())["steps"]
        for source in step["emitted_sources"]
    }
    assert sources <= {"anchor", "context"}


def test_export_gif_and_replay_the_trace(client):
    trace_file = generate(client, "abc")[TRACE_FILE]
    preview, download = client.predict(480, api_name="/export_gif")
    assert Path(download).read_bytes()[:6] == b"GIF89a"
    assert Path(preview).read_bytes()[:6] == b"GIF89a"
    replayed = client.predict(handle_file(trace_file), api_name="/load_trace")
    assert replayed[0].startswith("done")
    caption, *_ = client.predict(1, api_name="/show_step")
    assert caption.startswith("Step 1")


def test_version_1_example_traces_still_load_and_draw(client):
    names = sorted(p.stem for p in Path("assets/examples").glob("*.json"))
    for name in names[:2]:
        status, spans, caption, *_, cost = client.predict(name, api_name="/load_example")
        assert status.startswith("done") and caption.startswith("Step 0")
        trace = GenerationTrace.load(Path("assets/examples") / f"{name}.json")
        if not trace.cost_curve:
            assert "no cost curve" in json.dumps(json.loads(cost["plot"]))


def test_the_end_of_the_answer_is_a_marker_not_a_special_token(client):
    from viz.style import END_LABEL, end_ids, is_end

    for path in sorted(Path("assets/examples").glob("*.json")):
        trace = GenerationTrace.load(path)
        if is_end(trace.steps[-1].emitted[-1], end_ids(trace)):
            break
    else:
        pytest.skip("no example trace ends its answer")
    last = len(trace.steps) - 1
    result = client.predict(path.stem, api_name="/load_example")
    spans = read_spans(result[1])
    assert spans[-1] == (END_LABEL, END_LABEL)
    assert not any("<|" in text or "</s>" in text for text, _ in spans)
    caption, shuffle, drafts, plan, tree = client.predict(last, api_name="/show_step")
    assert "■ end of answer" in caption and "<|" not in caption
    for plot in (shuffle, drafts, plan, tree):
        assert "<|" not in plot["plot"] and "&lt;|" not in plot["plot"]


def test_comparison_with_ordinary_decoding(client):
    generate(client, "compare me")
    table, fast, plain = client.predict(api_name="/compare")
    assert "identical" in table and fast == plain


@pytest.mark.parametrize(
    ("prompt", "overrides", "message"),
    [
        ("", {}, "prompt is empty"),
        ("   \n\t", {}, "prompt is empty"),
        ("x" * 20_001, {}, "limit is 20,000"),
        # Gradio's sliders check their own ranges first, with their own clear message
        ("hi", {"max_new_tokens": 100_000}, "greater than maximum value 256"),
        ("hi", {"temperature": -1}, "less than minimum value"),
        # the library's own checks, with its messages
        ("hi", {"keep": 2.0}, r"keep_threshold must be a number in \[0, 1\]; got 2.0"),
        ("hi", {"keep": "lots"}, r"keep_threshold must be a number in \[0, 1\]; got 'lots'"),
        ("hi", {"seed": -5}, r"seed must be an integer in \[0, "),
        # the slider's range is this model's drafts from the start
        ("hi", {"max_parallel": 15}, f"greater than maximum value {max_drafts(TINY_SLOTS)}"),
        ("hi", {"verify": False, "draft_source": "context"}, "draft_source must include the head"),
        ("hi", {"block_length": "longest"}, "not in the list of choices"),
    ],
)
def test_bad_input_gets_a_clear_message(client, prompt, overrides, message):
    with pytest.raises(Exception, match=message):
        generate(client, prompt, **overrides)
    assert generate(client, "still serving")[0].startswith("done")


def test_bad_trace_uploads_are_refused(client, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"steps": "nope"}')
    with pytest.raises(Exception, match="not a ShuffleLM trace"):
        client.predict(handle_file(str(broken)), api_name="/load_trace")
    with pytest.raises(Exception, match="Nothing to export"):
        Client(client.src, verbose=False).predict(480, api_name="/export_gif")


@pytest.mark.default_model
def test_generate_on_the_default_model():
    with running_app("default") as (url, _):
        client = Client(url, verbose=False)
        status, spans, *_, trace_file, _, _ = client.predict(
            "What is the capital of France?",
            True,
            24,
            16,
            "rotary",
            0.0,
            1.0,
            "auto",
            True,
            0,
            "cost",
            "head+context",
            api_name="/generate",
        )
        assert status.startswith("done")
        trace = json.loads(Path(trace_file).read_text())
        assert "Paris" in "".join(t["text"] for s in trace["steps"] for t in s["emitted"])
        assert trace["totals"]["compression_ratio"] > 1.0


# --- watching a run: updates at a person's pace, the open tab's picture only ---------------------


def test_the_pacer_sends_before_a_step_would_wait_too_long():
    import app

    pacer = app.Pacer()
    late, every = app.TEXT_LATE, app.PICTURE_EVERY
    step = late / 4.5  # steps this long: the text can wait for a few of them
    assert pacer.due(0.0) == (True, True)  # the first step: everything
    for k in range(1, 5):  # the steps from `step` on can wait...
        assert pacer.due(k * step) == (False, False)
    # ...until waiting one step more would leave the oldest unsent one more than `late` behind
    assert pacer.due(5 * step) == (True, False)
    assert pacer.due(5 * step + late) == (True, False)  # a slow step is sent at once
    assert pacer.due(every - late / 2) == (True, True)  # the next would make the picture stale


def test_the_pacer_keeps_a_step_at_most_text_late_behind_whatever_the_steps_take():
    import random

    import app

    rng = random.Random(0)
    for mean in (0.01, 0.05, 0.1, 0.2, 0.4):  # the model's pace, steady within a run
        pacer, now, waiting, worst, pictures = app.Pacer(), 0.0, [], 0.0, []
        for _ in range(200):
            now += mean * rng.uniform(0.9, 1.1)
            waiting.append(now)
            text, picture = pacer.due(now)
            if text:
                worst, waiting = max(worst, now - waiting[0]), []
            if picture:
                pictures.append(now)
        assert worst <= app.TEXT_LATE * 1.25  # steady steps: the guess of the next one holds
        gaps = [b - a for a, b in zip(pictures, pictures[1:], strict=False)]
        assert max(gaps) <= app.PICTURE_EVERY * 1.25 or mean > app.PICTURE_EVERY


def streamed(monkeypatch, *, text_late: float, picture_every: float, watching=None, steer=None):
    """The pages app.generate yields on the tiny model with these paces; `steer(i, watching)`
    acts between pages (a visitor opening another tab)."""
    import app
    from shuffle_model.decoding.cost import CostCurve
    from shuffle_model.model.runtime import LazyModel

    monkeypatch.setattr(app, "TEXT_LATE", text_late)
    monkeypatch.setattr(app, "PICTURE_EVERY", picture_every)
    runtime = LazyModel.from_spec("tiny")
    runtime.get().cost_curve = CostCurve.from_ratios([1.0] * 16)  # no measuring here
    watching = watching or app.Watching()
    settings = dict(
        zip(
            API_SETTINGS,
            [40, 14, "rotary", 0.0, 1.0, "auto", True, 0, "cost", "head+context"],
            strict=True,
        )
    )
    pages = []
    for page in app.generate(runtime, watching, "abcabcabc abcabc", False, **settings):
        pages.append(page)
        if steer:
            steer(len(pages), watching)
    return pages, watching


def test_a_watched_run_sends_what_changed_and_lands_every_step_at_the_end(monkeypatch):
    import app

    pages, watching = streamed(monkeypatch, text_late=0.0, picture_every=1e9)
    *running, final = pages
    trace = final.trace
    assert len(running) == len(trace.steps) >= 3  # text paced at 0 s: one page per step
    for page in running:
        assert page.trace is app.SKIP  # the trace lands at the end
        # the closed tabs, the run's charts and the last run's trace file: cleared, not skipped
        # (Gradio builds a component for each skip; a value sent as it was costs nothing)
        assert page.drafts is page.filter is page.tree is None
        assert page.overview is page.cost is page.trace_file is None
        assert page.status.startswith("generating") and page.text
    pictured = [page for page in running if page.shuffle is not app.SKIP]
    assert pictured == running[:1]  # the open tab's picture: once a second at most (here: once)
    # the caption and the slider move with the picture: all three show the same step, and the
    # pages between pictures send them as they are
    assert pictured[0].caption.startswith("Step 0") and pictured[0].step.value == 0
    assert pictured[0].step.maximum == 1  # the slider grows with the run
    assert all(page.caption == pictured[0].caption and page.step == 0 for page in running[1:])
    assert final.overview is not app.SKIP and final.cost is not app.SKIP
    assert final.status.startswith("done") and "page updates while generating" in final.status
    assert "tokens/s of generation" in final.status
    assert not watching.running


def test_a_paced_run_skips_updates_but_not_steps(monkeypatch):
    pages, _ = streamed(monkeypatch, text_late=1e9, picture_every=1e9)
    *running, final = pages
    assert len(running) == 1 < len(final.trace.steps)  # only the first step was sent...
    assert final.step.maximum == len(final.trace.steps) - 1  # ...every step lands at the end


def test_the_open_tab_gets_the_running_pictures(monkeypatch):
    import app

    def open_filter(count, watching):
        if count == 2:
            assert app.open_tab(watching, "filter") is not app.SKIP  # drawn at once, mid-run

    pages, watching = streamed(monkeypatch, text_late=0.0, picture_every=0.0, steer=open_filter)
    *running, _ = pages
    assert all(page.shuffle is not app.SKIP and page.filter is None for page in running[:2])
    assert all(page.filter is not app.SKIP and page.shuffle is None for page in running[2:])
    assert watching.tab == "filter" and app.open_tab(watching, "drafts") is app.SKIP  # idle now


def test_the_draft_tree_tab_follows_a_run_and_the_scrubber(monkeypatch):
    import app
    from viz.page import STEP_FIGURES, step_view

    assert "tree" in STEP_FIGURES and "tree" in app.VIEW
    assert "tree" in [name for name, _, _ in app.PLOT_TABS]

    def open_tree(count, watching):
        if count == 2:
            assert app.open_tab(watching, "tree") is not app.SKIP  # drawn at once, mid-run

    pages, watching = streamed(monkeypatch, text_late=0.0, picture_every=0.0, steer=open_tree)
    *running, final = pages
    assert all(page.tree is not app.SKIP and page.shuffle is None for page in running[2:])
    assert watching.tab == "tree" and final.tree is not app.SKIP
    trace = final.trace
    index = next(i for i, s in enumerate(trace.steps) if len(s.forwarded_ids) > 1)
    shown = dict(zip(app.VIEW, app.show_step(trace, index), strict=True))
    assert shown["tree"].to_dict() == step_view(trace, index).tree.to_dict()
    nodes = [t for t in shown["tree"].data if t.mode == "markers+text"]
    assert sum(len(t.x) for t in nodes) == len(trace.steps[index].forwarded_ids) - (
        trace.steps[index].plan.padding if trace.steps[index].plan else 0
    )


def test_the_page_starts_with_the_page_script_and_nothing_else_changes(app_url):
    from urllib.request import urlopen

    from shufflers.page_script import PAGE_SCRIPT, script_tag

    with urlopen(app_url) as response:
        page = response.read()
        length = int(response.headers["Content-Length"])
    assert length == len(page)  # the length follows the added script
    head = page.split(b"<head>", 1)[1]
    assert head.startswith(script_tag(PAGE_SCRIPT))  # before any of Gradio's scripts
    assert page.count(script_tag(PAGE_SCRIPT)) == 1
    with urlopen(app_url + "config") as response:
        assert b"__shufflelm" not in response.read()  # other responses pass untouched
    with pytest.raises(ValueError, match="script"):
        script_tag("alert(1)</script><script>")


def test_the_queue_looks_for_work_at_a_calm_pace():
    """Gradio's queue, idle, looks for an event every QUEUE_LOOK seconds and for progress every
    PROGRESS_LOOK (Gradio's own on Linux: every 1 and 10 ms, 66-80 ms of CPU a second here); the
    knobs set are the ones its loops read."""
    import inspect

    from gradio.queueing import Queue

    import app

    queue = app.build_demo()._queue
    assert (queue.sleep_when_free, queue.progress_update_sleep_when_free) == (
        app.QUEUE_LOOK,
        app.PROGRESS_LOOK,
    )
    assert app.QUEUE_LOOK <= 0.05 and app.PROGRESS_LOOK <= 0.1  # events still start promptly
    assert "asyncio.sleep(self.sleep_when_free)" in inspect.getsource(Queue.start_processing)
    assert "asyncio.sleep(self.progress_update_sleep_when_free)" in inspect.getsource(
        Queue.start_progress_updates
    )


def test_the_pages_packed_run_reads_each_value_as_gradio_reads_an_input():
    """The page's Generate sends its inputs as one list; each value is read with its component's
    own preprocess (its checks, its types), then the run is /generate's."""
    import gradio as gr

    import app
    from shuffle_model.decoding.cost import CostCurve
    from shuffle_model.model.runtime import LazyModel

    runtime = LazyModel.from_spec("tiny")
    runtime.get().cost_curve = CostCurve.from_ratios([1.0] * 16)  # no measuring here
    with gr.Blocks():
        control = app.controls(runtime.config.num_slots)
    inputs = app.run_inputs(control)
    values = ["abcabc abc", False, 6, 14, "rotary", 0, 1, "auto", True, 3.0, "cost", "context"]

    def run(values):
        return list(app.generate_from_page(runtime, app.Watching(), values, inputs=inputs))

    final = run(values)[-1]
    assert final.status.startswith("done")
    assert final.trace.settings["seed"] == 3 and isinstance(final.trace.settings["seed"], int)
    assert final.trace.settings["draft_source"] == "context"
    with pytest.raises(gr.Error, match="not in the list of choices"):
        run([*values[:4], "longest", *values[5:]])  # the Radio's own check
    with pytest.raises(app.UserError, match="reload"):
        run(values[:-1])


def test_the_pages_runs_and_the_apis_share_one_limit():
    """Generate, Enter and /generate are separate events (the page packs its inputs); they share
    one concurrency limit, so the machine runs at most CONCURRENCY generations at once."""
    import app

    demo = app.build_demo()
    runs = [fn for fn in demo.fns.values() if fn.outputs and fn.name == "generate"]
    runs += [fn for fn in demo.fns.values() if fn.name == "generate_from_page"]
    assert len(runs) == 3  # /generate, and the page's run after a click and after Enter
    assert {(fn.concurrency_id, fn.concurrency_limit) for fn in runs} == {
        ("generate", app.CONCURRENCY)
    }
