"""viz: figures and GIFs from traces, with no model needed once a trace exists."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

import viz
from shuffle_model import GenerationTrace
from shuffle_model.decoding.cost import CostCurve
from shuffle_model.decoding.trace import (
    ACCEPTED,
    COST_CUT,
    FROM_FILLER,
    ContextTrace,
    PlanTrace,
    SlotTrace,
    StepTrace,
    TokenInfo,
)
from tests.tiny import char_tokenizer, tiny_backbone, tiny_mixer
from viz import drawing, gif
from viz.__main__ import main as cli_main
from viz.drawing import inside, overlap
from viz.explain import RESTED
from viz.frame_plan import (
    ORDINARY,
    ORDINARY_MOST_MS,
    Frame,
    frames_of,
    is_ordinary,
    plan_frames,
    step_units,
)
from viz.gif import DEFAULT_WIDTH, Renderer
from viz.page import SPAN_COLORS, counters, step_caption, step_view, text_html
from viz.style import (
    BOTH,
    CONTEXT,
    CONTEXT_COLOR,
    END_COLOR,
    END_LABEL,
    END_SHORT,
    ORIGIN_COLORS,
    ORIGIN_LABELS,
    ORIGIN_SYMBOLS,
    STATUS_COLORS,
    STATUS_LABELS,
    STATUS_SYMBOLS,
    end_ids,
    is_end,
    is_special,
    source_style,
    token_label,
)
from viz.tree import forwarded_tree

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "assets" / "examples").glob("*.json"))
# Traces recorded before sources, plans and cost curves existed (trace version 1): old files
# must keep loading and drawing.
V1_TRACES = sorted((Path(__file__).resolve().parent / "data" / "v1_traces").glob("*.json"))
REFERENCE = Path(__file__).resolve().parent / "data" / "first_frame.png"
# a cheap hand-made cost curve, so that plans are the same on every machine
CHEAP_PASSES = CostCurve.from_ratios([1.0 + 0.05 * i for i in range(15)], draft_cost=0.1)


def tiny_generate(prompt: str, **settings) -> GenerationTrace:
    tok = char_tokenizer()
    model = tiny_mixer(tiny_backbone(seed=0), seed=1, tokenizer=tok)
    model.cost_curve = CHEAP_PASSES
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    settings = dict(max_new_tokens=40, keep_threshold=0.3, shuffle_strategy="sinkhorn", **settings)
    return model.generate(ids, return_trace=True, **settings)[1]


@pytest.fixture(scope="module")
def tiny_trace():
    return tiny_generate("hello <b>there</b>\n")


@pytest.fixture(scope="module")
def rich_trace():
    """A prompt that repeats itself: context drafts, trees, shared drafts, cost cuts."""
    trace = tiny_generate("the cat sat. the cat sat. the cat")
    sources = [source for step in trace.steps for source in step.emitted_sources]
    plans = [s.plan for s in trace.steps if s.plan is not None]
    assert "context" in sources and "head+context" in sources
    assert any(p.head_drafts > p.shared and p.context_drafts > p.shared for p in plans)
    assert any(slot.status == COST_CUT for step in trace.steps for slot in step.slots)
    assert any(COST_CUT in s.context.statuses for s in trace.steps if s.context)
    return trace


def example_traces() -> list[GenerationTrace]:
    return [GenerationTrace.load(path) for path in EXAMPLES]


def v1_traces() -> list[GenerationTrace]:
    return [GenerationTrace.load(path) for path in V1_TRACES]


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


def all_traces(tiny_trace, *more):
    return [tiny_trace, *more, *example_traces(), *v1_traces()]


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
        threshold = trace.settings["keep_threshold"]
        chart = viz.filter_chart(step, keep_threshold=threshold)
        bars = [t for t in chart.data if t.type == "bar" and t.legendgroup == "head"]
        assert sum(len(b.y) for b in bars) == len(step.slots)
        assert {b.name for b in bars} <= set(viz.STATUS_LABELS.values())
        assert sorted(y for b in bars for y in b.y) == sorted(s.keep_prob for s in step.slots)
        if threshold:
            assert any(s.y0 == threshold for s in chart.layout.shapes)


def test_overview_has_status_map_and_token_curve(tiny_trace, rich_trace):
    for trace in all_traces(tiny_trace, rich_trace):
        fig = viz.overview(trace)
        heatmap = next(t for t in fig.data if t.type == "heatmap")
        k = max(len(s.slots) for s in trace.steps)
        m = max((len(s.context.tokens) for s in trace.steps if s.context), default=0)
        assert np.asarray(heatmap.z).shape == (len(trace.steps), k + 1 + m)
        curve = next(t for t in fig.data if t.name == "ShuffleLM")
        assert curve.y[-1] == trace.totals.new_tokens
        assert curve.x[0] == 0 and curve.x[-1] == trace.totals.backbone_forwards - 1


def test_token_spans_rebuild_the_output(tiny_trace, rich_trace):
    for trace in all_traces(tiny_trace, rich_trace):
        spans = viz.token_spans(trace)
        ends = end_ids(trace)
        assert "".join(text for text, _ in spans) == "".join(
            END_LABEL if is_end(t, ends) else t.text for s in trace.steps for t in s.emitted
        )
        assert {label for _, label in spans} <= {*ORIGIN_LABELS.values(), END_LABEL}
        by_step = viz.token_spans(trace, by="step")
        assert by_step[0][1] == "step 0"
    for trace in v1_traces():  # version 1: no sources recorded, every draft from the head
        labels = {label for _, label in viz.token_spans(trace)}
        assert labels <= {"anchor", "accepted draft (head)", "emitted draft", END_LABEL}
        assert labels - {"anchor"}, "the examples emit drafts"


class SpanReader(HTMLParser):
    """The (text, label, colour) of every span in text_html's output, legend and text apart."""

    def __init__(self, page: str):
        super().__init__()
        self.parts = {"legend": [], "spans": []}
        self.part, self.span = None, None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div":
            self.part = attrs["class"]
        elif tag == "span":
            color = attrs["style"].removeprefix("background-color:")
            self.span = ["", attrs["title"], color]
        else:
            raise AssertionError(f"unexpected element <{tag}> in the output text")

    def handle_data(self, data):
        assert self.span is not None, f"text outside a span: {data!r}"
        self.span[0] += data

    def handle_endtag(self, tag):
        if tag == "span":
            self.parts[self.part].append(tuple(self.span))
            self.span = None


def read_spans(page: str) -> list[tuple[str, str]]:
    """text_html's text as (text, label) spans."""
    return [(text, label) for text, label, _ in SpanReader(page).parts["spans"]]


def test_the_output_text_is_html_with_every_token_escaped(rich_trace):
    hostile = '<img src=x onerror=alert(1)>&amp; "quoted" <script>'
    steps = list(rich_trace.steps)
    first = steps[0]
    token = replace(first.emitted[0], text=hostile)
    steps[0] = replace(first, emitted=[token, *first.emitted[1:]])
    trace = replace(rich_trace, steps=steps)
    page = text_html(trace)
    assert "<img" not in page and "<script" not in page  # escaped, so only text
    reader = SpanReader(page)
    assert read_spans(page) == viz.token_spans(trace)  # the same text, the same labels
    assert read_spans(page)[0][0].startswith(hostile)
    assert [label for _, label, _ in reader.parts["legend"]] == list(SPAN_COLORS)
    for _, label, color in reader.parts["legend"] + reader.parts["spans"]:
        assert color == SPAN_COLORS[label] + "80"  # the label's colour, half opaque


def test_token_spans_colour_context_drafts_by_their_source(rich_trace):
    """Each emitted token is labelled by the source the trace records, not by its position."""
    expected = {"anchor": "anchor", "head": "accepted draft (head)"}
    expected |= {"context": "accepted draft (context)"}
    expected |= {"head+context": "accepted draft (head and context)"}
    labelled = []
    for step in rich_trace.steps:
        for token, source in zip(step.emitted, step.emitted_sources, strict=True):
            labelled.append((token.text, expected[source]))
    spans = viz.token_spans(rich_trace)
    per_char = [(char, label) for text, label in spans for char in text]
    assert per_char == [(c, label) for text, label in labelled for c in text]
    assert "accepted draft (context)" in {label for _, label in spans}


def test_hostile_token_text_is_escaped_in_every_figure(rich_trace):
    hostile = "<img src=x onerror=alert(1)>"
    trace = GenerationTrace.from_json(rich_trace.to_json())
    step = next(s for s in trace.steps if s.slots and s.context)
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
    other = GenerationTrace.from_json(rich_trace.to_json())  # hostile text in a context draft
    step = other.steps[step.index]
    step.context.tokens[0].text = hostile
    for fig in (viz.filter_chart(step), viz.overview(other), viz.cost_curve_chart(other)):
        payload = json.dumps(fig.to_dict())
        assert "<img" not in payload
    assert "&lt;img" in json.dumps(viz.filter_chart(step).to_dict())
    assert "&lt;img" in json.dumps(viz.overview(other).to_dict())
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
        frames = viz.render_frames(trace)
        # shareable: under 5 MB (chat apps and issue trackers take 10), and each frame after
        # the first stores only what changed, not a whole 800-pixel picture
        assert path.stat().st_size < 5_000_000
        assert path.stat().st_size / len(frames) < 20_000
        assert_gif_plays_the_planned_frames(path.read_bytes(), frames)
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
    assert model.tokenizer is None  # the library generated with the tokenizer given: unchanged


def test_cli_renders_a_saved_trace(tmp_path, tiny_trace):
    trace_path = tmp_path / "t.json"
    tiny_trace.save(trace_path)
    assert (
        cli_main(
            [str(trace_path), "--gif", str(tmp_path / "o.gif"), "--html", str(tmp_path / "o.html")]
        )
        == 0
    )
    assert (tmp_path / "o.gif").read_bytes()[:6] == b"GIF89a"
    assert "plotly" in (tmp_path / "o.html").read_text()[:100000].lower()
    (tmp_path / "bad.json").write_text("{not json")
    assert cli_main([str(tmp_path / "bad.json"), "--gif", str(tmp_path / "x.gif")]) == 2


def test_a_saved_trace_draws_the_same_figures(tiny_trace):
    again = GenerationTrace.from_json(tiny_trace.to_json())
    assert viz.overview(again).data[0].z == viz.overview(tiny_trace).data[0].z
    step, saved = tiny_trace.steps[1], again.steps[1]
    original = np.asarray(viz.shuffle_heatmap(step).data[0].z)
    assert np.allclose(np.asarray(viz.shuffle_heatmap(saved).data[0].z), original, atol=1e-5)
    assert viz.token_spans(again) == viz.token_spans(tiny_trace)


# --- colours ------------------------------------------------------------------------------------

# Machado, Oliveira & Fernandes (2009), full severity, on linear RGB
COLOUR_VISION = {
    "normal": np.eye(3),
    "protanopia": np.array(
        [
            [0.152286, 1.052583, -0.204868],
            [0.114503, 0.786281, 0.099216],
            [-0.003882, -0.048116, 1.051998],
        ]
    ),
    "deuteranopia": np.array(
        [
            [0.367322, 0.860646, -0.227968],
            [0.280085, 0.672501, 0.047413],
            [-0.011820, 0.042940, 0.968881],
        ]
    ),
    "tritanopia": np.array(
        [
            [1.255528, -0.076749, -0.178779],
            [-0.078411, 0.930809, 0.147602],
            [0.004733, 0.691367, 0.303900],
        ]
    ),
}


def lab(color: str, vision: np.ndarray) -> np.ndarray:
    """CIELAB of a hex colour as seen with the given colour vision."""
    srgb = np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    linear = np.clip(vision @ linear, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    t = (xyz @ linear) / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def closest(color: str, others: list[str]) -> float:
    """The smallest colour difference (CIE76) to any of the others, under any colour vision."""
    return min(
        float(np.linalg.norm(lab(color, vision) - lab(other, vision)))
        for vision in COLOUR_VISION.values()
        for other in others
    )


def test_context_and_cost_cut_colours_stand_apart_for_colour_blind_eyes():
    everything = {*STATUS_COLORS.values(), *ORIGIN_COLORS.values()}
    for color in (CONTEXT_COLOR, ORIGIN_COLORS[BOTH], STATUS_COLORS[COST_CUT]):
        assert closest(color, sorted(everything - {color})) > 15, color
    text = list(ORIGIN_COLORS.values())  # the output text's colours, among themselves
    for color in text:
        assert closest(color, [c for c in text if c != color]) > 15, color


def test_every_status_and_origin_has_a_word_and_a_distinct_symbol():
    assert set(STATUS_LABELS) == set(STATUS_COLORS) == set(STATUS_SYMBOLS)
    assert len(set(STATUS_SYMBOLS.values())) == len(STATUS_SYMBOLS)
    assert set(ORIGIN_LABELS) == set(ORIGIN_COLORS) == set(ORIGIN_SYMBOLS)
    assert len(set(ORIGIN_SYMBOLS.values())) == len(ORIGIN_SYMBOLS)
    assert len(set(ORIGIN_LABELS.values())) == len(ORIGIN_LABELS)


# --- the decision, in a sentence ----------------------------------------------------------------


def token(text: str = "x") -> TokenInfo:
    return TokenInfo(id=5, text=text, prob=0.5)


def made_step(plan=None, *, drafts=0, emitted=1, sources=None, slots=(), context=None):
    """A hand-made step: `drafts` forwarded after the anchor, `emitted` tokens out."""
    return StepTrace(
        index=3,
        anchor=token("a"),
        slots=list(slots),
        shuffle_probs=[],
        sinkhorn=None,
        block_order=[],
        emitted=[token() for _ in range(emitted)],
        forwarded_ids=[1] * (drafts + 1),
        context=context,
        plan=plan,
        emitted_sources=["anchor"] + ["head"] * (emitted - 1) if sources is None else sources,
    )


def made_plan(head=0, context=0, shared=0, *, rule="cost", expected=1.0, cost=1.5, nxt=None):
    return PlanTrace(rule, head, context, shared, expected, cost, 1 / 1.5, nxt)


def made_slot(index: int, status: str) -> SlotTrace:
    return SlotTrace(index, token(), [token()], keep_prob=0.4, offset=index + 1, status=status)


def test_decision_sentence_explains_a_cost_aware_choice():
    step = made_step(made_plan(2, 1, 0, expected=2.4, cost=1.3, nxt=1.5), drafts=3, emitted=2)
    sentence = viz.decision_sentence(step)
    assert sentence.startswith("Checked 3 drafts (2 from the head, 1 from the context)")
    assert "expected 2.40 tokens for 1.30 passes' time" in sentence
    assert "the two chains are checked side by side in one pass" in sentence
    assert "a 4th would cost more than it is likely to give" in sentence  # 1.5 < 2.4 / 1.3
    one_chain = viz.decision_sentence(made_step(made_plan(2, expected=1.8, nxt=1.0), drafts=2))
    assert one_chain.startswith("Checked 2 drafts from the head:")
    assert "side by side" not in one_chain and "a 3rd would" in one_chain
    context = viz.decision_sentence(made_step(made_plan(0, 11, expected=5, nxt=None), drafts=11))
    assert context.startswith("Checked 11 drafts from the context:")
    assert context.endswith("no other draft was on offer.")


def test_decision_sentence_explains_a_tree_after_shared_drafts():
    plan = made_plan(3, 2, 1, expected=2.1, cost=1.4, nxt=1.2)
    sentence = viz.decision_sentence(made_step(plan, drafts=4, emitted=3))
    assert sentence.startswith(
        "Checked 4 drafts (1 proposed by both, 2 from the head, 1 from the context)"
    )
    assert "the two chains part after 1 shared draft and are checked side by side" in sentence
    merged = viz.decision_sentence(made_step(made_plan(3, 1, 1, expected=2, nxt=1), drafts=3))
    assert "(1 proposed by both, 2 from the head)" in merged and "side by side" not in merged


def test_decision_sentence_explains_ordinary_steps():
    slots = [made_slot(0, "low_confidence")]
    worthless = made_step(made_plan(expected=1.0, cost=1.6, nxt=0.55), slots=slots)
    sentence = viz.decision_sentence(worthless)
    assert sentence.startswith("No draft was worth checking: an ordinary step (1 token)")
    assert "0.55" in sentence and "0.67" in sentence  # the best draft's rate vs an ordinary step
    close = made_step(made_plan(expected=1.0, cost=1.5, nxt=1 / 1.5 - 0.001), slots=slots)
    assert "0.666 tokens per pass' time, an ordinary step 0.667" in viz.decision_sentence(close)
    nothing = viz.decision_sentence(made_step(made_plan(nxt=None), slots=slots))
    assert nothing.startswith("Nothing to check (no draft passed the filter")
    fixed = viz.decision_sentence(made_step(made_plan(rule="fixed", nxt=None), slots=slots))
    assert fixed.startswith("Fixed rule: no draft passed the filter")


def test_decision_sentence_says_when_the_head_rested():
    rested = made_plan(0, 3, expected=2.5, nxt=None)
    rested.head_rested = True
    sentence = viz.decision_sentence(made_step(rested, drafts=3))
    assert sentence.startswith("The head rested this step")
    assert "Checked 3 drafts from the context" in sentence
    idle = made_plan(nxt=None)
    idle.head_rested = True
    sentence = viz.decision_sentence(made_step(idle))
    assert sentence.startswith("The head rested") and "context offered no draft" in sentence


def test_decision_sentence_under_the_fixed_rule_and_in_pure_mode():
    fixed = made_step(made_plan(4, rule="fixed", expected=2, nxt=None), drafts=4)
    assert viz.decision_sentence(fixed) == "Fixed rule: checked every draft the filter kept (4)."
    context = ContextTrace([token()] * 3, [0.5] * 3, [COST_CUT] * 3, 2, 10)
    sampled = made_step(made_plan(2, rule="fixed", nxt=None), drafts=2, context=context)
    assert viz.decision_sentence(sampled).endswith("(2); 3 context drafts left out.")
    pure = made_step(made_plan(2, rule="fixed"), drafts=2, slots=[made_slot(0, "emitted")])
    pure.block_order = [0, 1]
    assert viz.decision_sentence(pure).startswith("Pure parallel mode: emitted every draft")
    none_kept = made_step(made_plan(rule="fixed"), slots=[made_slot(0, "low_confidence")])
    assert viz.decision_sentence(none_kept, verified=False).startswith(
        "Pure parallel mode: the filter kept no draft"
    )


def test_decision_sentence_without_a_plan_says_only_what_the_trace_records():
    last = made_step(None, drafts=0)
    last.forwarded_ids = []
    assert viz.decision_sentence(last).startswith("The last step")
    nothing = viz.decision_sentence(made_step(None, drafts=0))
    assert nothing.startswith("No draft was on offer")
    old = made_step(None, drafts=3, emitted=2, sources=[], slots=[made_slot(0, ACCEPTED)])
    sentence = viz.decision_sentence(old)  # a version-1 step: no plan, no sources
    assert sentence == "Checked the 3 drafts the filter kept."
    for example in v1_traces():
        for step in example.steps:
            words = viz.decision_sentence(step, verified=example.settings["verify"])
            assert not {"expected", "worth", "cost", "context"} & set(words.split()), words


def test_ordinals_in_sentences():
    for n, word in [(2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (22, "22nd")]:
        plan = made_plan(n - 1, expected=2, nxt=0.1)
        assert f"a {word} would" in viz.decision_sentence(made_step(plan, drafts=n - 1))


def test_decision_sentences_of_real_steps_match_their_plans(tiny_trace, rich_trace):
    for trace in (tiny_trace, rich_trace):
        for step in trace.steps:
            sentence = viz.decision_sentence(step)
            assert sentence.endswith(".") and len(sentence) < 300
            plan = step.plan
            if plan is not None and plan.rule == "cost" and plan.drafts:
                if plan.head_rested:  # the sentence opens by saying so
                    sentence = sentence.removeprefix(f"{RESTED} ")
                assert sentence.startswith(f"Checked {plan.drafts} draft")
                assert f"{plan.expected_tokens:.2f} tokens for {plan.cost:.2f}" in sentence
                assert plan.drafts == len(step.forwarded_ids) - 1


def test_the_decision_reaches_the_caption_and_the_plan_chart(rich_trace):
    for index, step in enumerate(rich_trace.steps):
        view = step_view(rich_trace, index)
        sentence = viz.decision_sentence(step, verified=True)
        assert view.caption.startswith(f"Step {index}: {sentence}")
        if step.slots or step.context:
            subtitle = view.filter.layout.title.subtitle.text.replace("<br>", " ")
            assert subtitle == sentence.replace("'", "&#x27;")


def test_plan_chart_shows_the_context_chain_and_the_calibrated_chain(rich_trace):
    step = next(
        s for s in rich_trace.steps if s.context and COST_CUT in s.context.statuses and s.slots
    )
    chart = viz.filter_chart(step, keep_threshold=0.3)
    context = [t for t in chart.data if t.type == "bar" and t.legendgroup == "context"]
    assert sum(len(t.y) for t in context) == len(step.context.tokens)
    assert sorted(y for t in context for y in t.y) == sorted(step.context.accept_probs)
    for bars in context:
        assert bars.marker.line.color == CONTEXT_COLOR  # every context draft in its colour
        assert bars.xaxis == "x2" and bars.name.startswith("context draft")
    accepted = [t for t in context if t.name.endswith("accepted")]
    assert all(t.marker.color == CONTEXT_COLOR for t in accepted)
    cut = next(t for t in context if "not worth" in t.name)
    assert cut.marker.pattern.shape == "/" and all(x.startswith("✂") for x in cut.text)
    diamonds = next(t for t in chart.data if t.name and "calibrated" in t.name)
    assert len(diamonds.y) == sum(1 for s in step.slots if s.accept_prob is not None)


def test_overview_counts_accepted_drafts_per_step_and_source(rich_trace):
    fig = viz.overview(rich_trace)
    per_step = {t.name: t.x for t in fig.data if t.type == "bar"}
    for i, step in enumerate(rich_trace.steps):
        total = sum(values[i] for values in per_step.values())
        assert total == step.num_emitted
        from_context = step.emitted_sources.count("context")
        assert per_step.get(ORIGIN_LABELS[CONTEXT], [0] * (i + 1))[i] == from_context
    assert "from the context" in fig.layout.title.text
    heatmap = fig.data[0]
    k = max(len(s.slots) for s in rich_trace.steps)
    step = next(s for s in rich_trace.steps if s.context)
    row = heatmap.z[step.index]
    colors = [heatmap.colorscale[2 * code][1] for code in row[k + 1 :] if code is not None]
    expected = [
        CONTEXT_COLOR if status == ACCEPTED else STATUS_COLORS[status]
        for status in step.context.statuses
    ]
    assert [c.upper() for c in colors] == [c.upper() for c in expected]


def header_rate(renderer: Renderer, frame: Frame) -> str:
    """The tokens per pass a GIF frame's header reads."""
    renderer.draw(frame)
    header = next(label.text for label in renderer.labels if "tokens/pass" in label.text)
    return header.split(" tokens/pass")[0]


def counters_rate(trace: GenerationTrace) -> str:
    """The tokens per pass the app's counters read."""
    return counters(trace).split("** tokens per pass")[0].rsplit("**", 1)[1]


def test_ordinary_steps_read_one_token_per_pass_in_the_gif_and_the_app():
    """Tokens per pass count the passes after the prompt's prefill: steps that wrote one token
    a pass read 1.00, in the GIF's header as in the app's counters."""
    plain = tiny_generate("hello there", max_parallel_tokens=0)
    steps = [step for step in plain.steps if step.passes == 1]
    assert len(steps) >= 5 and all(step.num_emitted == 1 for step in steps)
    ordinary = GenerationTrace.from_json(plain.to_json())
    ordinary.steps = ordinary.steps[: len(steps)]
    (frame,) = plan_frames(ordinary)  # one run of ordinary steps
    assert frame.passes == frame.shown == len(steps)
    assert header_rate(Renderer(ordinary, 800, record=True), frame) == "1.00"
    assert counters_rate(ordinary) == "1.00"


def test_the_gif_the_overview_and_the_app_agree_on_tokens_per_pass(rich_trace):
    for trace in [rich_trace, *example_traces()]:
        run = viz.api.run_numbers(trace)
        rate = f"{run['tokens_per_pass']:.2f}"
        assert header_rate(Renderer(trace, 800, record=True), plan_frames(trace)[-1]) == rate
        assert counters_rate(trace) == rate
        assert f"({rate} tokens per pass)" in viz.overview(trace).layout.title.text
    renderer = Renderer(rich_trace, 800, record=True)  # before the first pass after the prefill
    assert header_rate(renderer, plan_frames(rich_trace)[0]) == "–"


def test_cost_curve_chart_and_counters(rich_trace):
    fig = viz.cost_curve_chart(rich_trace)
    line = next(t for t in fig.data if t.name.startswith("c(n)"))
    assert list(line.y) == rich_trace.cost_curve["ratios"]
    used = next(t for t in fig.data if t.name.startswith("passes this run"))
    sizes = {len(s.forwarded_ids) for s in rich_trace.steps if s.forwarded_ids}
    assert set(used.x) == sizes
    text = counters(rich_trace)
    assert "this machine: a pass over" in text and "one-token passes" in text
    assert "from the context" in text
    old = v1_traces()[0]  # version 1: no curve, and nothing to say about one
    assert "cost curve" in viz.cost_curve_chart(old).layout.annotations[0].text
    assert "this machine" not in counters(old)


# --- the GIF shows the context and the decision ------------------------------------------------


def colour_pixels(image: Image.Image, color: str, box=None) -> int:
    """How many pixels of `image` (within box) have exactly this colour."""
    pixels = np.asarray(image.crop(box) if box else image).reshape(-1, 3)
    target = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])
    return int((pixels == target).all(axis=1).sum())


def test_gif_draws_a_context_row_and_the_decision(rich_trace, monkeypatch):
    renderer = Renderer(rich_trace, 800)
    layout = renderer.layout
    assert layout.context_row
    step = next(s for s in rich_trace.steps if s.context and ACCEPTED in s.context.statuses)
    row = (0, layout.row_c, layout.width, layout.row_c + layout.card_h)
    verify = renderer.draw(frame_at(rich_trace, step.index, "verify"))
    assert colour_pixels(verify, CONTEXT_COLOR, row) > 500  # accepted: filled with wine
    draft = renderer.draw(frame_at(rich_trace, step.index, "draft"))
    assert colour_pixels(draft, CONTEXT_COLOR, row) > 100  # outlines
    band = (0, layout.header + 1, layout.width, layout.row_a - 60)
    drawn = np.asarray(verify.crop(band))
    monkeypatch.setattr(gif, "decision_sentence", lambda step, verified=None: "")
    blank = gif.Renderer(rich_trace, 800).draw(frame_at(rich_trace, step.index, "verify"))
    blank = np.asarray(blank.crop(band))
    assert (blank == 255).all() and (drawn < 128).any()  # the sentence is in that band


def test_gif_text_colours_tokens_by_source(rich_trace):
    frames = viz.render_frames(rich_trace)
    layout = Renderer(rich_trace, 800).layout
    text = (0, layout.text_top, 800, layout.legend_top - 10)
    last = frames[-1][0]
    assert colour_pixels(last, CONTEXT_COLOR, text) > 20
    assert colour_pixels(last, ORIGIN_COLORS[BOTH], text) > 5
    for trace in v1_traces():  # version 1: no context anywhere
        assert not Renderer(trace, 800).layout.context_row
        last = viz.render_frames(trace, max_frames=40)[-1][0]
        assert colour_pixels(last, CONTEXT_COLOR) == 0


def every_frame(trace: GenerationTrace) -> list[Frame]:
    """The plan with every step drawn (three shuffle frames each)."""
    return plan_frames(trace, max_frames=10**6)


def frame_at(trace: GenerationTrace, position: int, phase: str) -> Frame:
    """The planned frame of the step at `position` in that phase (the shuffle's last)."""
    return [f for f in every_frame(trace) if f.step == position and f.phase == phase][-1]


def test_gif_frame_plan_follows_the_trace(rich_trace):
    frames = every_frame(rich_trace)
    for position, count in step_units(rich_trace):
        steps = rich_trace.steps[position : position + count]
        own = [f for f in frames if f.step == position]
        assert len(own) == frames_of(steps[0], 3)
        emit = own[-1]
        if is_ordinary(steps[0]):  # a run of ordinary steps: one frame for all of them
            assert len(own) == 1 and emit.phase == ORDINARY and emit.run == count
        else:
            assert count == 1 and emit.phase == "emit"
        assert emit.shown - emit.new_from == sum(len(s.emitted) for s in steps)
        assert all(f.shown == f.new_from == emit.new_from for f in own[:-1])  # nothing new yet
    ends = [f for f in frames if f.phase in ("emit", ORDINARY)]
    covered = [p for f in ends for p in range(f.step, f.step + f.run)]
    assert covered == list(range(len(rich_trace.steps)))  # every step, once, in order
    last = frames[-1]
    assert last.shown == sum(len(s.emitted) for s in rich_trace.steps)
    assert last.passes == sum(s.passes for s in rich_trace.steps)  # after the prefill
    assert last.duration_ms >= 2500  # the finished text rests
    thinned = plan_frames(rich_trace, max_frames=20)
    last_unit = step_units(rich_trace)[-1][0]
    assert len(thinned) <= 20 and {f.step for f in thinned} >= {0, last_unit}
    assert thinned[-1].shown == last.shown and thinned[-1].passes == last.passes


def test_gif_frames_depend_on_nothing_but_their_plan(rich_trace):
    """Drawing a frame needs no earlier frame: drawn backwards, or alone by a fresh renderer,
    each frame is the image the forward pass drew."""
    frames = plan_frames(rich_trace, max_frames=40)
    forward = [np.asarray(image) for image, _ in viz.render_frames(rich_trace, max_frames=40)]
    renderer = Renderer(rich_trace, DEFAULT_WIDTH)
    for index in reversed(range(len(frames))):
        assert (np.asarray(renderer.draw(frames[index])) == forward[index]).all()
    middle = len(frames) // 2
    alone = Renderer(rich_trace, DEFAULT_WIDTH).draw(frames[middle])
    assert (np.asarray(alone) == forward[middle]).all()


# --- the end of the answer ----------------------------------------------------------------------

END_TEXT = "<|im_end|>"


def with_special_tokens(trace: GenerationTrace, *, marked: bool = True) -> GenerationTrace:
    """A copy whose last token, one drafted slot, one candidate and one context draft are
    <|im_end|> (marked special as the library does now, or only by their text, as in older
    traces), and one candidate is <|im_start|>."""
    copy = GenerationTrace.from_json(trace.to_json())
    if not marked:  # nor do older traces list the end tokens' ids
        copy.model.pop("eos_token_ids", None)
    last = copy.steps[-1]
    last.emitted[-1] = TokenInfo(2, END_TEXT, 0.9, special=marked)
    last.anchor = last.emitted[0] if len(last.emitted) == 1 else last.anchor
    step = next(s for s in copy.steps if s.slots and s.context is not None)
    step.slots[0].token = TokenInfo(2, END_TEXT, 0.3, special=marked)
    step.slots[0].candidates[0] = TokenInfo(2, END_TEXT, 0.3, special=marked)
    step.slots[1].candidates[-1] = TokenInfo(1, "<|im_start|>", 0.01, special=marked)
    step.context.tokens[0] = TokenInfo(2, END_TEXT, 0.2, special=marked)
    return copy


def test_special_tokens_are_recognised_and_labelled():
    marked = TokenInfo(7, "<|whatever|>", 0.5, special=True)
    assert is_special(marked) and not is_end(marked)
    assert is_special(TokenInfo(2, "<|im_end|>", 0.5)) and is_end(TokenInfo(2, "<|im_end|>", 0.5))
    assert is_end(TokenInfo(0, "<|endoftext|>", 0.5)) and is_end(TokenInfo(2, "</s>", 0.5))
    assert is_end(TokenInfo(9, "<|eot_id|>", 0.5))
    assert is_end(TokenInfo(42, "anything", 0.5), eos_ids={42})  # the trace's own end ids
    assert not is_special(TokenInfo(5, "<b>", 0.5)) and not is_special(TokenInfo(5, "end", 0.5))
    assert not is_special(TokenInfo(5, "<|im_end|> and more", 0.5))
    assert token_label(TokenInfo(2, "<|im_end|>", 0.5)) == END_LABEL == "■ end of answer"
    assert token_label(TokenInfo(2, "<|im_end|>", 0.5), limit=10) == END_SHORT == "■ end"
    assert token_label(TokenInfo(1, "<|im_start|>", 0.5)) == "◇ im_start"
    assert token_label(TokenInfo(5, " cat", 0.5)) == "·cat"


@pytest.mark.parametrize("marked", [True, False], ids=["marked", "old-trace"])
def test_the_end_of_the_answer_is_a_marker_in_spans_captions_and_figures(rich_trace, marked):
    trace = with_special_tokens(rich_trace, marked=marked)
    spans = viz.token_spans(trace)
    assert spans[-1] == (END_LABEL, END_LABEL) and END_LABEL in SPAN_COLORS
    assert not any("<|" in text for text, _ in spans)
    assert not any("<|" in text for text, _ in viz.token_spans(trace, by="step"))
    caption = step_caption(trace, len(trace.steps) - 1)
    assert "■ end of answer" in caption and "<|" not in caption
    step = next(s for s in trace.steps if s.slots and s.context is not None)
    threshold = trace.settings.get("keep_threshold")
    figures = {
        "shuffle": viz.shuffle_heatmap(step),
        "drafts": viz.draft_heatmap(step),
        "filter": viz.filter_chart(step, keep_threshold=threshold),
        "overview": viz.overview(trace),
    }
    for name, fig in figures.items():
        payload = json.dumps(fig.to_dict(), ensure_ascii=False)
        assert "im_end" not in payload and "&lt;|" not in payload, name
        assert "■ end" in payload, name
    shuffle = figures["shuffle"]
    assert shuffle.data[0].y[0] == "slot 0: ■ end of answer"  # the heatmap's row label
    assert "■ end" in shuffle.data[0].text[0][0]  # its hover
    assert figures["drafts"].data[0].text[0][0].startswith("■ end<br>")  # the cell
    assert "◇ im_start" in figures["drafts"].data[0].text[1][-1]
    bars = [t for t in figures["filter"].data if t.type == "bar"]
    assert any("■ end of answer" in text for bar in bars for text in bar.text)


def test_the_end_of_the_answer_is_a_marker_in_the_gif(rich_trace):
    trace = with_special_tokens(rich_trace, marked=False)
    renderer = Renderer(trace, 800, record=True)
    assert END_LABEL in [label for row in renderer.legend for label, _ in row]
    frame = renderer.draw(every_frame(trace)[-1])  # the last step's (or run's) frame
    texts = [label.text for label in renderer.labels]
    assert END_LABEL in texts and not any("im_end" in text or "<|" in text for text in texts)
    layout = renderer.layout
    box = (0, layout.text_top, layout.width, layout.legend_top)
    assert colour_pixels(frame, END_COLOR, box) > 20  # the marker's grey box and text
    renderer = Renderer(trace, 800, record=True)
    step = next(s for s in trace.steps if s.slots and s.context is not None)
    renderer.draw(frame_at(trace, step.index, "draft"))
    cards = [label.text for label in renderer.labels]
    assert cards.count("■ end") == 2  # the slot's card and the context draft's card
    assert not any("<|" in text for text in cards)


# --- GIF labels never overlap -------------------------------------------------------------------


def varied_steps(trace: GenerationTrace, most: int = 40) -> set[int]:
    """Steps that look different in a frame (slot statuses, offsets, context statuses, how many
    tokens), up to `most`, always with the first and the last."""
    seen, chosen = set(), {0, len(trace.steps) - 1}
    for step in trace.steps:
        look = (
            tuple((s.status, s.offset is None) for s in step.slots),
            tuple(step.context.statuses) if step.context else None,
            step.num_emitted,
        )
        if look not in seen and len(chosen) < most:
            seen.add(look)
            chosen.add(step.index)
    return chosen


def overlapping_labels(trace: GenerationTrace, width: int) -> list[str]:
    """Every frame of the chosen steps, the shuffle's frames in motion too: pairs of visible
    labels whose boxes overlap, labels outside their room (a card's column, a moving card's
    own box, the text area, the frame), and texts covered by a card other than a card's own
    text under a card drawn after it (cards in motion may slide over cards; nothing else may
    be covered: not a title, a caption or the text)."""
    renderer = Renderer(trace, width, record=True)
    chosen = varied_steps(trace)
    problems = []
    planned_frames = every_frame(trace)  # three shuffle frames a step: 1/3, 2/3 and 1
    halfway = [replace(f, motion=0.5) for f in planned_frames if f.phase == "shuffle"]
    for planned in planned_frames + halfway[::3]:  # and halfway, as with two shuffle frames
        if planned.step not in chosen:
            continue
        frame = renderer.draw(planned)
        labels = renderer.labels
        where = f"{width}px step {planned.step} {planned.phase} {planned.motion:.2f}"
        for label in labels:
            if not inside(label.box, label.room) or not inside(label.box, (0, 0, *frame.size)):
                problems.append(f"{where}: {label.text!r} {label.box} outside {label.room}")
        for i, a in enumerate(labels):
            for b in labels[i + 1 :]:
                if overlap(a.box, b.box):
                    problems.append(f"{where}: {a.text!r} {a.box} overlaps {b.text!r} {b.box}")
        for label, by in renderer.covered:
            if not any(inside(label.box, card) for card in renderer.cards[:by]):
                problems.append(f"{where}: {label.text!r} {label.box} covered by a card")
    return problems


@pytest.mark.parametrize("width", [320, 800, 1600])
def test_gif_labels_never_overlap_and_fit_their_columns(width, rich_trace):
    for trace in [rich_trace, with_special_tokens(rich_trace), *example_traces(), *v1_traces()]:
        problems = overlapping_labels(trace, width)
        assert not problems, "\n".join(problems[:10])


def test_the_label_check_sees_an_overlap(rich_trace):
    """The check itself: two labels drawn on top of each other are caught."""
    renderer = Renderer(rich_trace, 800, record=True)
    image, draw = renderer.base(every_frame(rich_trace)[0])
    big = drawing.font(20)
    renderer.write(draw, (100, 100), "? low confidence", big, gif.INK)
    renderer.write(draw, (150, 100), "? low confidence", big, gif.INK)
    a, b = renderer.labels[-2:]
    assert drawing.overlap(a.box, b.box)
    assert not drawing.inside(a.box, renderer.layout.column_room(0))


# --- the tree of drafts a step checked ----------------------------------------------------------


def tree_nodes_drawn(fig: go.Figure) -> list[dict]:
    """Every node the tree figure draws: its index, symbol, opacity, outline and label."""
    nodes = []
    for trace in fig.data:
        if trace.mode != "markers+text":
            continue
        marker = trace.marker
        for i, (index, hover) in enumerate(trace.customdata):
            nodes.append(
                dict(
                    index=index,
                    hover=hover,
                    text=trace.text[i],
                    symbol=marker.symbol[i],
                    opacity=marker.opacity[i],
                    outline=marker.line.width[i],
                    color=marker.color,
                    name=trace.name,
                )
            )
    return nodes


def test_the_draft_tree_draws_every_forwarded_node_and_the_accepted_path(rich_trace):
    trees = [s for s in rich_trace.steps if any(s.forwarded_ranks) and s.accepted_path]
    assert trees, "the rich trace has no tree with an accepted draft"
    for step in trees:
        fig = viz.draft_tree(step)
        nodes = tree_nodes_drawn(fig)
        assert sorted(n["index"] for n in nodes) == list(range(len(step.forwarded_ids)))
        on_path = {0, *step.accepted_path}
        for node in nodes:
            i = node["index"]
            assert node["color"] == source_style(step.forwarded_sources[i]).color
            if i in on_path:  # highlighted: opaque and outlined
                assert node["opacity"] == 1.0 and node["outline"] == 3
            else:  # rejected: faded
                assert node["opacity"] < 0.5 and node["outline"] < 1
            rank = step.forwarded_ranks[i]
            assert (node["symbol"] == "diamond") == (rank > 0)
            assert (f"{rank + 1}nd" in node["text"] or f"{rank + 1}rd" in node["text"]) == (
                rank > 0
            )
            if i:
                assert f"path chance {step.forwarded_chances[i]:.3f}" in node["hover"]
        path = [t for t in fig.data if t.mode == "lines" and t.line.width == 5]
        assert len(path) == 1 and len(path[0].x) == 3 * len(step.accepted_path)  # one per edge
        others = [t for t in fig.data if t.mode == "lines" and t.line.width != 5]
        rejected = len(step.forwarded_ids) - 1 - len(step.accepted_path)
        assert sum(len(t.x) for t in others) == 3 * rejected
        assert f"accepted {len(step.accepted_path)}" in fig.layout.title.subtitle.text


def hand_made_tree(hostile: str) -> StepTrace:
    """anchor -> a -> c (accepted), anchor -> b (the head's 2nd choice) -> d (the context's)."""
    anchor = TokenInfo(1, hostile, 0.9)
    step = made_step(made_plan(2, 2, 0, expected=1.8, cost=1.3, nxt=0.9), drafts=4, emitted=3)
    step.anchor = anchor
    step.emitted = [anchor, TokenInfo(10, "a", 0.5), TokenInfo(12, "c", 0.5)]
    step.emitted_sources = ["anchor", "head", "head"]
    step.context = ContextTrace([TokenInfo(13, hostile, 0.3)], [0.3], ["rejected"], 2, 5)
    step.forwarded_ids = [1, 10, 11, 12, 13]
    step.forwarded_parents = [-1, 0, 0, 1, 2]
    step.forwarded_sources = ["anchor", "head", "head", "head", "context"]
    step.forwarded_ranks = [0, 0, 1, 0, 0]
    step.forwarded_chances = [1.0, 0.6, 0.3, 0.4, 0.1]
    step.accepted_path = [1, 3]
    return step


def test_the_draft_tree_escapes_token_text_and_names_unknown_tokens():
    hostile = "<img src=x onerror=alert(1)>"
    step = hand_made_tree(hostile)
    fig = viz.draft_tree(step)
    payload = json.dumps(fig.to_dict())
    assert "<img" not in payload and "&lt;img" in payload
    nodes = {n["index"]: n for n in tree_nodes_drawn(fig)}
    assert nodes[2]["text"].startswith("&lt;11&gt;")  # no text recorded: its id, escaped
    assert "2nd" in nodes[2]["text"] and "its 2nd choice" in nodes[2]["hover"]
    assert nodes[4]["color"] == CONTEXT_COLOR and "from context" in nodes[4]["hover"]
    assert [n["opacity"] for _, n in sorted(nodes.items())] == [1.0, 1.0, 0.35, 1.0, 0.35]
    sentence = viz.decision_sentence(step)
    assert sentence.startswith(
        "Checked 4 drafts (2 from the head, 2 from the context) in 2 branches "
        "(1 alternative of the head):"
    )
    assert "the 2 branches are checked side by side in one pass" in sentence


def test_a_step_without_drafts_gets_an_empty_tree_with_a_message(rich_trace):
    for step in (made_step(made_plan(nxt=0.5)), rich_trace.steps[-1]):
        fig = viz.draft_tree(step)
        assert not fig.data
        assert fig.layout.annotations[0].text.startswith("no drafts were checked in this step")


def test_older_traces_draw_their_blocks_as_trees():
    """Version 1 records no parents: a chain. Version 2 records parents (the head's and the
    context's chains side by side) but no sources, ranks or accepted path: inferred."""
    for trace in [*v1_traces(), *example_traces()]:
        for step in trace.steps:
            fig = viz.draft_tree(step, verified=trace.settings["verify"])
            if is_ordinary(step):
                assert not fig.data
                continue
            nodes = tree_nodes_drawn(fig)
            sources = step.forwarded_sources  # version 3: filler, if any, recorded as such
            if len(sources) == len(step.forwarded_ids):
                filler = sources.count(FROM_FILLER)
            else:  # older versions forwarded the plan's padding at the end of the block
                filler = step.plan.padding if step.plan is not None else 0
            assert len(nodes) == len(step.forwarded_ids) - filler
            bold = [n for n in nodes if n["opacity"] == 1.0]
            assert len(bold) == step.num_emitted  # the anchor and the accepted drafts
            if not step.forwarded_parents:  # version 1: a chain, one node per depth
                depths = [x for t in fig.data if t.mode == "markers+text" for x in t.x]
                assert sorted(depths) == list(range(len(nodes)))


def test_the_decision_sentence_counts_the_branches_of_a_tree(rich_trace):
    counted = 0
    for step in rich_trace.steps:
        tree = forwarded_tree(step)
        sentence = viz.decision_sentence(step)
        alternatives = sum(tree.alternatives().values())
        if alternatives:
            counted += 1
            words = "alternative" if alternatives == 1 else "alternatives"
            assert f" in {tree.branches} branches ({alternatives} {words} of the head)" in sentence
        elif tree.branches <= 2:
            assert "branches" not in sentence  # chains read as before
    assert counted


# --- ordinary steps in the GIF -------------------------------------------------------------------


def old_frames_of(step: StepTrace, motion: int = 3) -> int:
    """Frames a step would draw if ordinary steps were drawn one by one too: draft, the
    shuffle's motion, filter, verify and emit, as far as the step had them."""
    drafted = bool(step.slots) or step.context is not None
    checked = len(step.forwarded_ids) > 1
    return 1 + motion * bool(step.slots) + drafted + (drafted and checked) + 1


def test_a_run_of_ordinary_steps_is_one_short_frame_with_a_caption():
    # the longest run of ordinary steps among the verified example traces
    runs = [
        (count, position, trace)
        for trace in example_traces()
        if trace.settings["verify"]
        for position, count in step_units(trace)
        if is_ordinary(trace.steps[position])
    ]
    run, position, trace = max(runs, key=lambda item: item[0])
    assert run >= 3
    frames = every_frame(trace)
    first = next(f for f in frames if f.step == position)
    assert first.phase == ORDINARY and first.run == run
    assert first.duration_ms <= ORDINARY_MOST_MS
    ordinary = trace.steps[position : position + run]
    assert first.shown - first.new_from == sum(s.num_emitted for s in ordinary)
    before = sum(old_frames_of(step) for step in ordinary)
    assert before >= 2 * run  # every ordinary step drew at least draft and emit
    assert len(frames) < sum(old_frames_of(step) for step in trace.steps)
    renderer = Renderer(trace, 800, record=True)
    renderer.draw(first)
    drawn = " ".join(label.text for label in renderer.labels)
    assert f"{run} ordinary steps: nothing worth checking" in drawn
    assert f"steps {position + 1}–{position + run}/" in drawn
    steps = [label.text for label in renderer.labels if label.text.startswith("step ")]
    numbers = [f"step {position + i + 1}" for i in range(run)]
    assert steps == numbers[-renderer.layout.columns :]
