"""Which frames the GIF shows, decided from the trace alone, before any is drawn.

A step that checked drafts draws its phases: draft, the shuffle's motion frames, filter and
plan, verify, emit (as far as the step had them). A run of ordinary steps (nothing checked:
the anchor alone, one token per pass) is one short frame. When the frames would pass
`max_frames`, the shuffle gets fewer motion frames, then units are thinned out evenly (the
steps left out still add their tokens and passes to the text and the count).

`plan_frames(trace)` returns every `Frame`; `gif.Renderer.draw` turns one into pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from shuffle_model.decoding.trace import ACCEPTED, EMITTED, REJECTED, GenerationTrace, StepTrace

CHECKED = (ACCEPTED, REJECTED, EMITTED)  # statuses of drafts that went into the block
DURATIONS_MS = {"draft": 700, "filter": 1000, "verify": 800, "emit": 600}  # a phase's frame
ORDINARY = "ordinary"  # the phase of a frame that stands for a run of ordinary steps
ORDINARY_MS, ORDINARY_STEP_MS, ORDINARY_MOST_MS = 400, 150, 1200  # its duration: base + per step
LAST_FRAME_MS = 2500  # the finished text rests at least this long
MOTION_FRAMES = (3, 2, 1)  # shuffle frames per step, tried in turn to stay within max_frames


@dataclass(frozen=True)
class Frame:
    """One frame of the animation, everything about it but its pixels."""

    step: int  # position of the step in trace.steps
    phase: str  # draft, shuffle, filter, verify, emit, or ORDINARY (a run of ordinary steps)
    motion: float  # how far the shuffle has moved the cards, 0 to 1
    duration_ms: int  # how long the frame shows
    shown: int  # tokens of the answer the text shows
    new_from: int  # the first of them drawn as new (== shown: none)
    passes: int  # backbone passes so far after the prompt's prefill
    run: int = 1  # steps the frame stands for, from `step` (a run of ordinary steps: several)


class Unit(NamedTuple):
    """What the animation draws as one: a step that checked drafts, or a run of ordinary steps."""

    first: int  # position of its first step in trace.steps
    steps: int  # how many steps, from `first`


def is_checked(step: StepTrace) -> bool:
    """Whether any draft of the step went into the backbone's block."""
    context = step.context.statuses if step.context else []
    return any(s.status in CHECKED for s in step.slots) or any(s in CHECKED for s in context)


def is_ordinary(step: StepTrace) -> bool:
    """Whether the step forwarded no draft: the anchor alone (or nothing, the last step)."""
    return len(step.forwarded_ids) <= 1


def phases(step: StepTrace, motion: int) -> list[tuple[str, float]]:
    """(phase, motion fraction) of every frame a step draws; an ordinary step one frame."""
    if is_ordinary(step):
        return [(ORDINARY, 0.0)]
    out = [("draft", 0.0)]
    if step.slots:
        out += [("shuffle", i / motion) for i in range(1, motion + 1)]
    if step.slots or step.context is not None:
        out.append(("filter", 0.0))
        if is_checked(step):
            out.append(("verify", 0.0))
    out.append(("emit", 0.0))
    return out


def frames_of(step: StepTrace, motion: int) -> int:
    """How many frames a step draws with `motion` shuffle frames (an ordinary step: 1)."""
    return len(phases(step, motion))


def step_units(trace: GenerationTrace) -> list[Unit]:
    """The units in order: a step that checked drafts alone, consecutive ordinary steps
    together."""
    units: list[Unit] = []
    for position, step in enumerate(trace.steps):
        if units and is_ordinary(step) and is_ordinary(trace.steps[units[-1].first]):
            units[-1] = units[-1]._replace(steps=units[-1].steps + 1)
        else:
            units.append(Unit(position, 1))
    return units


def unit_frames(trace: GenerationTrace, unit: Unit, motion: int) -> int:
    """Frames a unit draws: a run of ordinary steps one, a step its phases."""
    return frames_of(trace.steps[unit.first], motion)


def choose_steps(trace: GenerationTrace, max_frames: int) -> tuple[set[int], int]:
    """Which units get drawn (by their first step's position) and how many motion frames
    each, to stay within max_frames."""
    units = step_units(trace)
    for motion in MOTION_FRAMES:
        if sum(unit_frames(trace, u, motion) for u in units) <= max_frames:
            return {u.first for u in units}, motion
    chosen = units
    while len(chosen) > 2 and sum(unit_frames(trace, u, 1) for u in chosen) > max_frames:
        keep = max(2, len(chosen) * 3 // 4)  # thin the units out evenly; keep first and last
        picks = sorted({round(i * (len(units) - 1) / (keep - 1)) for i in range(keep)})
        chosen = [units[i] for i in picks]
    return {u.first for u in chosen}, 1


def step_frames(
    step: StepTrace, position: int, *, shown: int, passes: int, motion: int, fps: int
) -> list[Frame]:
    """The frames of the step at `position`, given the text and the passes before it: its
    tokens join the text, and its passes the count, at the emit frame."""
    frames = []
    for phase, fraction in phases(step, motion):
        new_from = shown
        if phase == "emit":
            shown, passes = shown + len(step.emitted), passes + step.passes
        duration = 1000 // fps if phase == "shuffle" else DURATIONS_MS[phase]
        frames.append(Frame(position, phase, fraction, duration, shown, new_from, passes))
    return frames


def run_frame(steps: list[StepTrace], position: int, *, shown: int, passes: int) -> Frame:
    """The one frame of a run of ordinary steps: their tokens join the text, and their
    passes the count; short, a little longer for a longer run."""
    duration = min(ORDINARY_MS + ORDINARY_STEP_MS * len(steps), ORDINARY_MOST_MS)
    tokens = sum(len(step.emitted) for step in steps)
    more = sum(step.passes for step in steps)
    return Frame(
        position, ORDINARY, 0.0, duration, shown + tokens, shown, passes + more, run=len(steps)
    )


def plan_frames(trace: GenerationTrace, *, fps: int = 12, max_frames: int = 360) -> list[Frame]:
    """Every frame of the animation. Steps left out still add their tokens and passes."""
    if not trace.steps:
        raise ValueError("the trace has no steps to animate")
    drawn, motion = choose_steps(trace, max_frames)
    frames, shown, passes = [], 0, 0
    for position, count in step_units(trace):
        steps = trace.steps[position : position + count]
        if position in drawn and is_ordinary(steps[0]):
            frames.append(run_frame(steps, position, shown=shown, passes=passes))
        elif position in drawn:
            frames += step_frames(
                steps[0], position, shown=shown, passes=passes, motion=motion, fps=fps
            )
        shown += sum(len(step.emitted) for step in steps)
        passes += sum(step.passes for step in steps)
    last = frames[-1]
    frames[-1] = replace(last, duration_ms=max(last.duration_ms, LAST_FRAME_MS))
    return frames
