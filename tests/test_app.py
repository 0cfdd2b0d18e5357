"""The web app through its API (gradio_client), on the tiny model and once on the default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from tests.appserver import running_app

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
)


def generate(client: Client, prompt: str, **overrides):
    return client.predict(prompt, *{**SETTINGS, **overrides}.values(), api_name="/generate")


@pytest.fixture(scope="module")
def app_url():
    with running_app("tiny") as (url, _):
        yield url


@pytest.fixture
def client(app_url):
    return Client(app_url, verbose=False)


def test_build_demo_wires_the_documented_endpoints():
    import app

    demo = app.build_demo()
    names = {d.api_name for d in demo.fns.values() if d.api_name}
    assert {"generate", "export_gif", "load_trace", "show_step", "compare"} <= names
    assert demo._queue is not None


def test_generate_streams_steps_and_returns_a_trace(client):
    job = client.submit("hello world", *SETTINGS.values(), api_name="/generate")
    updates = list(job)
    status, spans, caption, shuffle, drafts, filt, slider, trace_file, overview = job.result()
    assert len(updates) >= 2  # streamed: several updates before the last
    assert status.startswith("done")
    trace = json.loads(Path(trace_file).read_text())
    assert trace["prompt_ids"] and trace["settings"]["max_new_tokens"] == 24
    text = (
        "".join(s["token"] for s in spans["value"])
        if isinstance(spans, dict)
        else "".join(s["token"] for s in spans)
    )
    assert text == "".join(t["text"] for step in trace["steps"] for t in step["emitted"])
    plot = json.loads(shuffle["plot"])
    assert plot["data"][0]["type"] == "heatmap"


def test_export_gif_and_replay_the_trace(client):
    _, _, _, _, _, _, _, trace_file, _ = generate(client, "abc")
    preview, download = client.predict(480, api_name="/export_gif")
    assert Path(download).read_bytes()[:6] == b"GIF89a"
    assert Path(preview).read_bytes()[:6] == b"GIF89a"
    replayed = client.predict(handle_file(trace_file), api_name="/load_trace")
    assert replayed[0].startswith("done")
    caption, *_ = client.predict(1, api_name="/show_step")
    assert caption.startswith("Step 1")


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
        ("hi", {"keep": 2.0}, "greater than maximum value 1"),
        ("hi", {"max_parallel": 99}, "greater than maximum value 8"),
        ("hi", {"seed": -5}, "seed must be a whole number"),
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
        status, spans, *_, trace_file, _ = client.predict(
            "What is the capital of France?",
            True,
            24,
            6,
            "rotary",
            0.0,
            1.0,
            0.3,
            True,
            0,
            api_name="/generate",
        )
        assert status.startswith("done")
        trace = json.loads(Path(trace_file).read_text())
        assert "Paris" in "".join(t["text"] for s in trace["steps"] for t in s["emitted"])
        assert trace["totals"]["compression_ratio"] > 1.0
