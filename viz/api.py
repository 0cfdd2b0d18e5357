"""The original release's visualisation API over a trace: ShuffleVisualization (its steps,
statistics, JSON, figures and GIF) and visualize_shuffle, a thin wrapper that lets the library
generate and hands the trace to viz."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import plotly.graph_objects as go

from shuffle_model.decoding.text import trace_text
from shuffle_model.decoding.trace import GenerationTrace, StepTrace

from .explain import decision_sentence, outcome_sentence
from .figures import cost_curve_chart, draft_heatmap, filter_chart, overview, shuffle_heatmap
from .gif import render_gif
from .numbers import run_numbers

DEFAULT_ANIMATION = "shuffle_animation.gif"


@dataclass
class ShuffleStep:
    """One decoding step as the original release's visualisation lists it. Unpacks as
    (index, tokens): `for step, tokens in visualization.steps` reads the tokens written."""

    index: int  # step number, 0-based
    step_type: str  # "parallel" (wrote drafts too), "ordinary" (one token) or "unchecked"
    tokens: list[str]  # the texts of the tokens this step wrote, in order
    scores: list[float] | None  # the head's keep probability of each drafted slot (None: none)
    positions: list[int | None] | None  # the offset the shuffle gave each slot
    metadata: dict = field(default_factory=dict)  # drafts, passes, the decision in words

    def __iter__(self):
        return iter((self.index, self.tokens))


def shuffle_step(step: StepTrace, *, verified: bool | None) -> ShuffleStep:
    drafted = step.slots or step.context is not None
    kind = "unchecked" if verified is False and step.num_accepted else None
    return ShuffleStep(
        index=step.index,
        step_type=kind or ("parallel" if step.num_accepted else "ordinary"),
        tokens=[_text(t) for t in step.emitted],
        scores=[s.keep_prob for s in step.slots] or None,
        positions=[s.offset for s in step.slots] or None,
        metadata={
            "slot_drafts": [_text(s.token) for s in step.slots],
            "context_drafts": [_text(t) for t in step.context.tokens] if step.context else [],
            "accepted": step.num_accepted,
            "passes": step.passes,
            "decision": decision_sentence(step, verified=verified) if drafted else "",
            "outcome": outcome_sentence(step),
        },
    )


def _text(token) -> str:
    return token.text if token.text is not None else str(token.id)


@dataclass
class ShuffleVisualization:
    """A generation's trace with what the original's visualisation offered: `steps`,
    `print_steps()`, `to_json()`, `get_statistics()`, `save_animation(path)`, plus Plotly
    `figures` (overview, cost curve, and the first drafting step's shuffle, drafts and filter)."""

    trace: GenerationTrace
    figures: dict[str, go.Figure] = field(default_factory=dict)
    gif_path: Path | None = None  # where save_animation wrote the GIF

    @classmethod
    def from_trace(cls, trace: GenerationTrace) -> ShuffleVisualization:
        result = cls(
            trace=trace, figures={"overview": overview(trace), "cost": cost_curve_chart(trace)}
        )
        first_drafting = next(
            (i for i, s in enumerate(trace.steps) if s.slots or s.context is not None), None
        )
        if first_drafting is not None:
            result.figures.update(result.step_figures(first_drafting))
        return result

    @property
    def verified(self) -> bool | None:
        verify = self.trace.settings.get("verify")
        return None if verify is None else bool(verify)

    @property
    def steps(self) -> list[ShuffleStep]:
        return [shuffle_step(step, verified=self.verified) for step in self.trace.steps]

    def step_figures(self, index: int) -> dict[str, go.Figure]:
        step = self.trace.steps[index]
        return {
            "shuffle": shuffle_heatmap(step),
            "drafts": draft_heatmap(step),
            "filter": filter_chart(
                step,
                keep_threshold=self.trace.settings.get("keep_threshold"),
                verified=self.verified,
            ),
        }

    def print_steps(self) -> None:
        for step in self.steps:
            print(f"\n=== Step {step.index + 1}: {step.step_type.upper()} ===")
            print(f"Tokens: {step.tokens}")
            if step.scores is not None:
                print(f"Slot drafts: {step.metadata['slot_drafts']}")
                print(f"Offsets: {step.positions}")
                print(f"Keep probabilities: {[round(s, 3) for s in step.scores]}")
            if step.metadata["context_drafts"]:
                print(f"Context drafts: {step.metadata['context_drafts']}")
            if step.metadata["decision"]:
                print(step.metadata["decision"])
            print(step.metadata["outcome"])

    def get_statistics(self) -> dict:
        """Totals of the run, and per step type: steps, tokens written, mean keep probability."""
        by_type: dict[str, dict] = {}
        for step in self.steps:
            entry = by_type.setdefault(step.step_type, {"steps": 0, "tokens": 0, "scores": []})
            entry["steps"] += 1
            entry["tokens"] += len(step.tokens)
            entry["scores"] += step.scores or []
        for entry in by_type.values():
            scores = entry.pop("scores")
            entry["avg_score"] = sum(scores) / len(scores) if scores else None
        return {
            **run_numbers(self.trace),
            "tokens_per_second": self.trace.totals.tokens_per_second,
            "drafts_accepted": sum(s.num_accepted for s in self.trace.steps),
            "step_types": by_type,
        }

    def to_json(self) -> str:
        """The steps and statistics as JSON (the whole trace: `trace.to_json()`)."""
        data = {"steps": [asdict(s) for s in self.steps], "statistics": self.get_statistics()}
        return json.dumps(data, indent=2)

    def save_animation(self, output_path: str | Path = DEFAULT_ANIMATION, **gif_options) -> Path:
        """Write the run as an animated GIF (viz.render_gif's options) and return its path."""
        self.gif_path = Path(render_gif(self.trace, output_path, **gif_options))
        return self.gif_path


def visualize_shuffle(
    model,
    tokenizer=None,
    prompt: str = "",
    max_parallel_tokens: int | None = None,
    save_animation: bool = False,
    output_path: str | Path | None = None,
    *,
    chat: bool | None = None,
    **generation_kwargs,
) -> ShuffleVisualization:
    """Generate from `prompt` (the library's loop; the model is not changed) and return the
    run's ShuffleVisualization; with save_animation=True also write its GIF to `output_path`
    (default shuffle_animation.gif). `chat=None` applies the tokenizer's chat template when it
    has one; other keywords are generate()'s settings."""
    trace = trace_text(
        model,
        prompt,
        tokenizer=tokenizer,
        chat=chat,
        max_parallel_tokens=max_parallel_tokens,
        **generation_kwargs,
    )
    result = ShuffleVisualization.from_trace(trace)
    if save_animation:
        result.save_animation(output_path or DEFAULT_ANIMATION)
    return result
