"""viz: figures and GIFs from traces, with no model needed once a trace exists."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

import viz
from shuffle_model import GenerationTrace
from tests.tiny import tiny_backbone, tiny_mixer

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "assets" / "examples").glob("*.json"))
REFERENCE = Path(__file__).resolve().parent / "data" / "first_frame.png"


@pytest.fixture(scope="module")
def tiny_trace(tokenizer=None):
    from tests.tiny import char_tokenizer

    tok = char_tokenizer()
    model = tiny_mixer(tiny_backbone(seed=0), seed=1, tokenizer=tok)
    ids = tok("hello <b>there</b>\n", return_tensors="pt")["input_ids"]
    _, trace = model.generate(
        ids, max_new_tokens=40, keep_threshold=0.3, shuffle_strategy="sinkhorn", return_trace=True
    )
    return trace


def example_traces() -> list[GenerationTrace]:
    return [GenerationTrace.load(path) for path in EXAMPLES]


def test_there_are_example_traces_of_every_kind():
    traces = example_traces()
    assert len(traces) >= 5
    settings = [t.settings for t in traces]
    assert {s["verify"] for s in settings} == {True, False}
    assert any(s["temperature"] > 0 for s in settings) and any(
        s["temperature"] == 0 for s in settings
    )
    assert len({s["shuffle_strategy"] for s in settings}) >= 3
    for trace in traces:
        assert trace.model["class"] == "FasterDecodeMixer"
        assert "SmolLM2" in trace.model["backbone"] or "smollm2" in trace.model["backbone"]


def all_traces(tiny_trace):
    return [tiny_trace, *example_traces()]


def test_shuffle_heatmap_shapes_and_marks(tiny_trace):
    for trace in all_traces(tiny_trace):
        step = next(s for s in trace.steps if s.slots)
        fig = viz.shuffle_heatmap(step)
        assert isinstance(fig, go.Figure)
        heatmaps = [t for t in fig.data if t.type == "heatmap"]
        k = len(step.slots)
        assert np.asarray(heatmaps[0].z).shape == (k, k)
        assert len(heatmaps) == (2 if step.sinkhorn is not None else 1)
        marks = [t for t in fig.data if t.type == "scatter"]
        assigned = sum(1 for s in step.slots if s.offset)
        assert sum(len(m.x) for m in marks) == assigned * len(heatmaps)


def test_draft_heatmap_and_filter_chart(tiny_trace):
    for trace in all_traces(tiny_trace):
        step = next(s for s in trace.steps if s.slots)
        drafts = viz.draft_heatmap(step)
        z = np.asarray(drafts.data[0].z)
        assert drafts.data[0].type == "heatmap"
        assert z.shape == (len(step.slots), len(step.slots[0].candidates))
        chart = viz.filter_chart(step, keep_threshold=trace.settings["keep_threshold"])
        bars = [t for t in chart.data if t.type == "bar"]
        assert sum(len(b.y) for b in bars) == len(step.slots)
        assert {b.name for b in bars} <= set(viz.STATUS_LABELS.values())
        assert any(s.y0 == trace.settings["keep_threshold"] for s in chart.layout.shapes)


def test_overview_has_status_map_and_token_curve(tiny_trace):
    for trace in all_traces(tiny_trace):
        fig = viz.overview(trace)
        heatmap = next(t for t in fig.data if t.type == "heatmap")
        k = max(len(s.slots) for s in trace.steps)
        assert np.asarray(heatmap.z).shape == (len(trace.steps), k + 1)
        curve = next(t for t in fig.data if t.name == "ShuffleLM")
        assert curve.y[-1] == trace.totals.new_tokens
        assert curve.x[-1] == trace.totals.backbone_forwards


def test_token_spans_rebuild_the_output(tiny_trace):
    for trace in all_traces(tiny_trace):
        spans = viz.token_spans(trace)
        assert "".join(text for text, _ in spans) == "".join(
            t.text for s in trace.steps for t in s.emitted
        )
        assert {label for _, label in spans} <= {"anchor", "accepted draft", "emitted draft"}
        by_step = viz.token_spans(trace, by="step")
        assert by_step[0][1] == "step 0"


def test_hostile_token_text_is_escaped_in_every_figure(tiny_trace):
    hostile = "<img src=x onerror=alert(1)>"
    trace = GenerationTrace.from_json(tiny_trace.to_json())
    step = next(s for s in trace.steps if s.slots)
    step.slots[0].token.text = hostile
    step.slots[0].candidates[0].text = hostile
    step.anchor.text = hostile
    for fig in (
        viz.shuffle_heatmap(step),
        viz.draft_heatmap(step),
        viz.filter_chart(step),
        viz.overview(trace),
    ):
        payload = json.dumps(fig.to_dict())
        assert "<img" not in payload
        assert "&lt;img" in payload
    assert viz.html_text(hostile, limit=40) == "&lt;img·src=x·onerror=alert(1)&gt;"
    assert viz.visible(" \n\t") == "·⏎⇥"
    assert viz.visible("a\x00b") == "a\\x00b"


def decode_gif(data: bytes) -> list[Image.Image]:
    return [frame for frame, _ in decode_gif_timed(data)]


def decode_gif_timed(data: bytes) -> list[tuple[Image.Image, int]]:
    image = Image.open(io.BytesIO(data))
    frames = []
    for index in range(image.n_frames):
        image.seek(index)
        frames.append((image.convert("RGB"), image.info["duration"]))
    return frames


GIF_TICK_MS = 10  # GIF frame delays are whole centiseconds


def assert_gif_plays_the_planned_frames(data: bytes, planned: list[tuple[Image.Image, int]]):
    """Pillow merges a frame identical to the one before into it (adding the durations), so
    the GIF's frames must be the planned ones with such repeats merged: each GIF frame lasts as
    long as a run of consecutive planned frames (to the GIF's centisecond) and shows it."""
    played = decode_gif_timed(data)
    assert len(played) <= len(planned)
    index = 0
    for frame, duration in played:
        first, elapsed = planned[index][0], 0
        while index < len(planned) and elapsed + planned[index][1] < duration + GIF_TICK_MS:
            elapsed += planned[index][1]
            index += 1
        assert abs(elapsed - duration) < GIF_TICK_MS, "a GIF frame spans no whole planned frames"
        assert frame.size == first.size
        shown = np.abs(np.asarray(frame, dtype=np.int16) - np.asarray(first, dtype=np.int16))
        assert shown.mean() < 8.0, "a GIF frame does not show its planned frame"  # palette error ~4
    assert index == len(planned), "the GIF stops before the planned frames end"


def test_gif_decodes_with_the_planned_frames(tiny_trace):
    data = viz.render_gif(tiny_trace)
    assert data[:6] == b"GIF89a"
    assert_gif_plays_the_planned_frames(data, viz.render_frames(tiny_trace))
    assert len(data) < 3_000_000
    few = decode_gif(viz.render_gif(tiny_trace, max_frames=30))
    assert 2 <= len(few) <= 30


def test_gif_of_example_traces_and_reference_first_frame(tmp_path):
    traces = example_traces()
    for trace in traces:
        path = viz.render_gif(trace, tmp_path / "run.gif")
        assert path.stat().st_size < 3_000_000
        assert_gif_plays_the_planned_frames(path.read_bytes(), viz.render_frames(trace))
    first = decode_gif(viz.render_gif(traces[0], max_frames=10))[0]
    reference = Image.open(REFERENCE).convert("RGB")
    assert first.size == reference.size
    difference = np.abs(np.asarray(first, dtype=int) - np.asarray(reference, dtype=int))
    assert difference.mean() < 2.0, (
        f"first frame drifted from the reference ({difference.mean():.2f})"
    )


def test_render_gif_rejects_bad_options(tiny_trace):
    with pytest.raises(ValueError, match="width"):
        viz.render_gif(tiny_trace, width=50)
    with pytest.raises(ValueError, match="fps"):
        viz.render_gif(tiny_trace, fps=0)


def test_visualize_shuffle_on_a_tiny_model(tmp_path, tokenizer):
    model = tiny_mixer(tiny_backbone(seed=0), seed=1)
    result = viz.visualize_shuffle(
        model,
        tokenizer,
        "abc",
        save_animation=True,
        output_path=tmp_path / "anim.gif",
        max_new_tokens=12,
        keep_threshold=0.0,
    )
    steps = list(result.steps)
    assert steps and all(isinstance(tokens, list) for _, tokens in steps)
    assert "".join(t for _, tokens in steps for t in tokens) == "".join(
        t.text for s in result.trace.steps for t in s.emitted
    )
    assert result.gif_path.read_bytes()[:6] == b"GIF89a"
    assert {"overview", "shuffle", "drafts", "filter"} <= set(result.figures)
    assert isinstance(result.figures["overview"], go.Figure)


def test_cli_renders_a_saved_trace(tmp_path, tiny_trace):
    from viz.__main__ import main

    trace_path = tmp_path / "t.json"
    tiny_trace.save(trace_path)
    assert (
        main(
            [str(trace_path), "--gif", str(tmp_path / "o.gif"), "--html", str(tmp_path / "o.html")]
        )
        == 0
    )
    assert (tmp_path / "o.gif").read_bytes()[:6] == b"GIF89a"
    assert "plotly" in (tmp_path / "o.html").read_text()[:100000].lower()
    (tmp_path / "bad.json").write_text("{not json")
    assert main([str(tmp_path / "bad.json"), "--gif", str(tmp_path / "x.gif")]) == 2


def test_a_saved_trace_draws_the_same_figures(tiny_trace):
    again = GenerationTrace.from_json(tiny_trace.to_json())
    assert viz.overview(again).data[0].z == viz.overview(tiny_trace).data[0].z
    step, saved = tiny_trace.steps[1], again.steps[1]
    original = np.asarray(viz.shuffle_heatmap(step).data[0].z)
    assert np.allclose(np.asarray(viz.shuffle_heatmap(saved).data[0].z), original, atol=1e-5)
    assert viz.token_spans(again) == viz.token_spans(tiny_trace)
