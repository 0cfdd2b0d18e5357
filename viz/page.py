"""What the app's page shows for a trace and a step, as plain data: the counters, the output
text's colours, a step's caption and pictures. The same for a run streaming live and for a trace
replayed or loaded. No Gradio here: the app maps these onto components."""

from __future__ import annotations

import html
from dataclasses import dataclass

import plotly.graph_objects as go

from shuffle_model.decoding.trace import GenerationTrace, StepTrace

from .explain import (
    cost_sentence,
    decision_sentence,
    emitted_with_symbols,
    outcome_sentence,
    typical_pass,
)
from .figures import (
    accepted_summary,
    draft_heatmap,
    draft_tree,
    filter_chart,
    shuffle_heatmap,
    token_spans,
)
from .numbers import per_pass_text
from .style import END_COLOR, END_LABEL, ORIGIN_COLORS, ORIGIN_LABELS, end_ids

# the output text's labels and their colours; the end of the answer a marker
SPAN_COLORS = {ORIGIN_LABELS[origin]: color for origin, color in ORIGIN_COLORS.items()}
SPAN_COLORS[END_LABEL] = END_COLOR
SPAN_TINT = "80"  # a span's background: its colour at half opacity (#rrggbb + alpha), text on top


def span_html(text: str, label: str) -> str:
    """One span of the output: its text, escaped, on its label's colour; the label on hover."""
    color = SPAN_COLORS[label] + SPAN_TINT
    return (
        f'<span class="span" style="background-color:{color}" '
        f'title="{html.escape(label, quote=True)}">{html.escape(text, quote=False)}</span>'
    )


# every origin once, in SPAN_COLORS' order: the same on every page
LEGEND_HTML = '<div class="legend">' + "".join(span_html(label, label) for label in SPAN_COLORS)
LEGEND_HTML += "</div>"


def text_html(trace: GenerationTrace) -> str:
    """The output coloured by origin (token_spans) as the page's HTML: the legend, then the
    text, every token string escaped. One string, cheap for a browser to swap in while a run
    streams (Gradio's HighlightedText redraws its colours on canvases on every update)."""
    spans = "".join(span_html(text, label) for text, label in token_spans(trace))
    return f'{LEGEND_HTML}<div class="spans">{spans}</div>'


@dataclass
class StepView:
    """One step as the page shows it."""

    index: int  # the step's position in trace.steps
    shuffle: go.Figure  # the shuffle heatmap: where each slot thinks its token goes
    drafts: go.Figure  # each slot's top candidates
    filter: go.Figure  # the filter-and-plan chart
    tree: go.Figure  # the tree of drafts the step checked
    caption: str  # the step's decision, its outcome and what it emitted (step_caption)


def counters(trace: GenerationTrace, *, running: bool = False) -> str:
    """The counters (markdown): steps, tokens, passes and rates; the drafts each source got
    accepted; and, once known, what a multi-token pass costs on this machine."""
    steps = len(trace.steps)
    tokens = sum(s.num_emitted for s in trace.steps)
    passes = sum(s.passes for s in trace.steps)  # after the prompt's prefill
    seconds = trace.totals.wall_seconds
    # the model's own time: the steps' time, without the time the page held each step
    rate = f" · **{tokens / seconds:.1f}** tokens/s of generation" if seconds > 0 else ""
    state = "generating…" if running else "done"
    line = (
        f"{state} · **{steps}** steps · **{tokens}** tokens · **{passes}** backbone passes "
        f"after the prefill · **{per_pass_text(tokens, passes)}** tokens per pass{rate}"
    )
    accepted = accepted_summary(trace)
    if accepted:
        line += f"  \n{accepted}"
    cost = cost_sentence(trace.cost_curve, typical_pass(trace))
    if cost:
        line += f"  \nthis machine: {cost}"
    return line


def last_drafting_step(trace: GenerationTrace) -> int:
    """The last step that drafted anything (the final step usually drafts nothing)."""
    drafted = [i for i, s in enumerate(trace.steps) if s.slots or s.context is not None]
    return max(drafted, default=len(trace.steps) - 1)


def verified_setting(trace: GenerationTrace) -> bool | None:
    """The trace's verify setting (None when it does not say)."""
    verified = trace.settings.get("verify")
    return None if verified is None else bool(verified)


def step_caption(trace: GenerationTrace, index: int) -> str:
    """'Step i: <the decision>' then '<the outcome> Emitted: ⚓The ✓·cat ↩·sat'."""
    step = trace.steps[index]
    decision = decision_sentence(step, verified=verified_setting(trace))
    return (
        f"Step {index}: {decision}\n{outcome_sentence(step)} "
        f"Emitted: {emitted_with_symbols(step, eos_ids=end_ids(trace))}"
    )


STEP_FIGURES = ("shuffle", "drafts", "filter", "tree")  # the pictures of one step (StepView)


def step_figure(step: StepTrace, name: str, *, settings: dict) -> go.Figure:
    """One of a step's pictures (STEP_FIGURES), given its run's settings."""
    verified = settings.get("verify")
    verified = None if verified is None else bool(verified)
    if name == "shuffle":
        return shuffle_heatmap(step)
    if name == "drafts":
        return draft_heatmap(step)
    if name == "filter":
        return filter_chart(step, keep_threshold=settings.get("keep_threshold"), verified=verified)
    if name == "tree":
        return draft_tree(step, verified=verified)
    raise ValueError(f"a step's pictures are {list(STEP_FIGURES)}; got {name!r}")


def step_view(trace: GenerationTrace, index: int) -> StepView:
    if not trace.steps:
        raise ValueError("the trace has no steps")
    index = max(0, min(int(index), len(trace.steps) - 1))
    step = trace.steps[index]
    figures = {name: step_figure(step, name, settings=trace.settings) for name in STEP_FIGURES}
    return StepView(index, **figures, caption=step_caption(trace, index))
