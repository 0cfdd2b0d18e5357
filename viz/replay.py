"""What the app shows for a trace and a step: every output of the page, as plain data.
No Gradio here: the app maps these onto components."""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

from shuffle_model.trace import GenerationTrace

from .figures import draft_heatmap, filter_chart, shuffle_heatmap
from .style import visible

SPAN_COLORS = {"anchor": "#0072B2", "accepted draft": "#009E73", "emitted draft": "#56B4E9"}


@dataclass
class StepView:
    index: int
    shuffle: go.Figure
    drafts: go.Figure
    filter: go.Figure
    caption: str


def counters(trace: GenerationTrace, *, running: bool = False) -> str:
    """One line of counters (markdown)."""
    steps = len(trace.steps)
    tokens = sum(s.num_emitted for s in trace.steps)
    passes = 1 + sum(1 for s in trace.steps if s.forwarded_ids)
    seconds = trace.totals.wall_seconds
    rate = f" · **{tokens / seconds:.1f}** tokens/s" if seconds > 0 else ""
    state = "generating…" if running else "done"
    return (
        f"{state} · **{steps}** steps · **{tokens}** tokens · **{passes}** backbone passes · "
        f"**{tokens / passes:.2f}** tokens per pass{rate}"
    )


def last_drafting_step(trace: GenerationTrace) -> int:
    """The last step that drafted anything (the final step usually drafts nothing)."""
    return max((i for i, s in enumerate(trace.steps) if s.slots), default=len(trace.steps) - 1)


def step_view(trace: GenerationTrace, index: int) -> StepView:
    if not trace.steps:
        raise ValueError("the trace has no steps")
    index = max(0, min(int(index), len(trace.steps) - 1))
    step = trace.steps[index]
    threshold = trace.settings.get("keep_threshold")
    emitted = "".join(visible(t.text, limit=24) for t in step.emitted)
    caption = (
        f"Step {index}: anchor {visible(step.anchor.text)}, {len(step.slots)} drafts, "
        f"{step.num_accepted} kept; emitted {emitted}"
    )
    return StepView(
        index,
        shuffle_heatmap(step),
        draft_heatmap(step),
        filter_chart(step, keep_threshold=threshold),
        caption,
    )
