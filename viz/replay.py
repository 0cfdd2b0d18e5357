"""viz.replay is viz.page under the name the app imports it by."""

from .page import (
    SPAN_COLORS,
    STEP_FIGURES,
    StepView,
    counters,
    last_drafting_step,
    step_caption,
    step_figure,
    step_view,
    verified_setting,
)

__all__ = [
    "SPAN_COLORS",
    "STEP_FIGURES",
    "StepView",
    "counters",
    "last_drafting_step",
    "step_caption",
    "step_figure",
    "step_view",
    "verified_setting",
]
