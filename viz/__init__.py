"""Traces in, figures and GIFs out: no Gradio here, and no model maths."""

from .api import ShuffleVisualization, visualize_shuffle
from .figures import draft_heatmap, filter_chart, overview, shuffle_heatmap, token_spans
from .gif import render_frames, render_gif
from .style import STATUS_COLORS, STATUS_LABELS, html_text, visible

__all__ = [
    "STATUS_COLORS",
    "STATUS_LABELS",
    "ShuffleVisualization",
    "draft_heatmap",
    "filter_chart",
    "html_text",
    "overview",
    "render_frames",
    "render_gif",
    "shuffle_heatmap",
    "token_spans",
    "visible",
    "visualize_shuffle",
]
