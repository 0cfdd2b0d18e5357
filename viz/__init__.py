"""Traces in, figures and GIFs out: no Gradio here, and no model maths."""

from .api import ShuffleVisualization, visualize_shuffle
from .explain import decision_sentence, outcome_sentence, token_origins
from .figures import (
    cost_curve_chart,
    draft_heatmap,
    draft_tree,
    filter_chart,
    overview,
    shuffle_heatmap,
    token_spans,
)
from .gif import render_frames, render_gif
from .style import (
    CONTEXT_COLOR,
    ORIGIN_COLORS,
    ORIGIN_LABELS,
    STATUS_COLORS,
    STATUS_LABELS,
    html_text,
    visible,
)

__all__ = [
    "CONTEXT_COLOR",
    "ORIGIN_COLORS",
    "ORIGIN_LABELS",
    "STATUS_COLORS",
    "STATUS_LABELS",
    "ShuffleVisualization",
    "cost_curve_chart",
    "decision_sentence",
    "draft_heatmap",
    "draft_tree",
    "filter_chart",
    "html_text",
    "outcome_sentence",
    "overview",
    "render_frames",
    "render_gif",
    "shuffle_heatmap",
    "token_origins",
    "token_spans",
    "visible",
    "visualize_shuffle",
]
