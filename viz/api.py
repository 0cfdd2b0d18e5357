"""visualize_shuffle: the original release's one-call API (generate, then figures and a GIF)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go

from shuffle_model.decoding.trace import GenerationTrace, StepTrace

from .figures import cost_curve_chart, draft_heatmap, filter_chart, overview, shuffle_heatmap
from .gif import render_gif


@dataclass
class ShuffleVisualization:
    trace: GenerationTrace
    figures: dict[str, go.Figure] = field(default_factory=dict)  # overview, cost curve and
    # the first drafting step's shuffle, drafts and filter (the filter-and-plan chart)
    gif_path: Path | None = None

    @property
    def steps(self) -> Iterator[tuple[StepTrace, list[str]]]:
        """(step, the texts of the tokens it emitted) for every step."""
        for step in self.trace.steps:
            yield step, [t.text if t.text is not None else str(t.id) for t in step.emitted]

    def step_figures(self, index: int) -> dict[str, go.Figure]:
        step = self.trace.steps[index]
        settings = self.trace.settings
        verified = settings.get("verify")
        return {
            "shuffle": shuffle_heatmap(step),
            "drafts": draft_heatmap(step),
            "filter": filter_chart(
                step,
                keep_threshold=settings.get("keep_threshold"),
                verified=None if verified is None else bool(verified),
            ),
        }


def visualize_shuffle(
    model,
    tokenizer,
    prompt: str,
    save_animation: bool = True,
    output_path: str | Path = "shuffle_animation.gif",
    *,
    chat: bool | None = None,
    **generation_kwargs,
) -> ShuffleVisualization:
    """Generate from `prompt`, and return its trace, figures and (optionally) a GIF.

    `chat=None` applies the tokenizer's chat template when it has one."""
    from shuffle_model.model.chat import encode_prompt

    if tokenizer is not None and getattr(model, "tokenizer", None) is None:
        model.tokenizer = tokenizer
    tokenizer = tokenizer or model.tokenizer
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    ids = encode_prompt(tokenizer, prompt, chat=use_chat)
    _, trace = model.generate([ids], return_trace=True, **generation_kwargs)
    figures = {"overview": overview(trace), "cost": cost_curve_chart(trace)}
    result = ShuffleVisualization(trace=trace, figures=figures)
    first_drafting = next(
        (i for i, s in enumerate(trace.steps) if s.slots or s.context is not None), None
    )
    if first_drafting is not None:
        result.figures.update(result.step_figures(first_drafting))
    if save_animation:
        result.gif_path = Path(render_gif(trace, output_path))
    return result
