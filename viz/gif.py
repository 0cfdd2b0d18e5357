"""Render a GenerationTrace as an animated GIF, drawn and encoded with Pillow.

Per step: the anchor and K slot cards appear with their tokens and keep probabilities (in slot
order), and the context's drafts (copied from what followed an earlier match) in a row of their
own at their offsets; the slots move into offset order (the shuffle); filtered cards fade with
their reason, and so do drafts the plan found not worth checking; checked cards turn green (or
the context's wine) or red; the emitted tokens join the growing text, coloured by origin. A
header shows the step, tokens per pass so far and the settings; below it, the step's decision
in a sentence.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from shuffle_model.trace import (
    ACCEPTED,
    AFTER_GAP,
    COST_CUT,
    DUPLICATE,
    EMITTED,
    LOW_CONFIDENCE,
    OUT_OF_RANGE,
    REJECTED,
    GenerationTrace,
    StepTrace,
)

from .explain import decision_sentence, token_origins
from .style import (
    ANCHOR,
    BOTH,
    CONTEXT,
    CONTEXT_COLOR,
    CONTEXT_SYMBOL,
    ORIGIN_COLORS,
    ORIGIN_SYMBOLS,
    STATUS_COLORS,
    STATUS_SYMBOLS,
    visible,
)

FONT_DIR = Path(__file__).resolve().parent.parent / "assets" / "fonts"
BACKGROUND = (255, 255, 255)
INK = (25, 25, 25)
MUTED = (110, 110, 110)
NEUTRAL = (236, 236, 236)
PENDING = (255, 255, 255)
WHITE = (255, 255, 255)
DEFAULT_WIDTH = 800
MAX_TEXT_LINES = 6
DECISION_LINES = 2
SHORT_LABELS = {
    ANCHOR: "anchor",
    ACCEPTED: "accepted",
    EMITTED: "emitted",
    REJECTED: "rejected",
    LOW_CONFIDENCE: "low confidence",
    DUPLICATE: "duplicate",
    OUT_OF_RANGE: "out of range",
    AFTER_GAP: "after gap",
    COST_CUT: "not worth it",
    CONTEXT: "context draft",
    BOTH: "head and context",
}
CHECKED = (ACCEPTED, REJECTED, EMITTED)  # statuses of drafts that went into the block
DURATIONS_MS = {"draft": 700, "filter": 1000, "verify": 800, "emit": 600}


@lru_cache(maxsize=16)
def font(size: int, *, bold: bool = False) -> ImageFont.FreeTypeFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(FONT_DIR / name), size)


def rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))


def faded(color: tuple[int, int, int], amount: float = 0.7) -> tuple[int, int, int]:
    return tuple(round(c + (255 - c) * amount) for c in color)


def readable(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """The colour, darkened where it is too light to read as text on white (e.g. sand)."""
    luminance = (0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]) / 255
    return tuple(round(c * 0.55) for c in color) if luminance > 0.7 else color


def mix(a: tuple[float, float], b: tuple[float, float], t: float) -> tuple[float, float]:
    t = t * t * (3 - 2 * t)  # ease in and out
    return a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t


@dataclass
class Layout:
    width: int
    columns: int  # anchor + offsets + one column for slots without an offset
    context_row: bool = False  # a row for the context's drafts
    legend_rows: int = 1

    def __post_init__(self):
        s = self.width / DEFAULT_WIDTH
        self.scale = s
        self.margin = round(20 * s)
        self.header = round(52 * s)
        self.decision_top = self.header + round(7 * s)
        self.decision_line = round(17 * s)
        self.row_a = round(152 * s)  # top of the slot-order row
        self.row_b = round(276 * s)  # top of the offset-order row
        self.row_c = round(426 * s)  # top of the context row (when there is one)
        bottom = self.row_c + round(92 * s) if self.context_row else round(389 * s)
        self.text_top = bottom
        self.line_height = round(24 * s)
        self.legend_top = self.text_top + MAX_TEXT_LINES * self.line_height + round(18 * s)
        self.legend_line = round(20 * s)
        self.height = self.legend_top + self.legend_rows * self.legend_line + round(12 * s)
        self.column = (self.width - 2 * self.margin) / self.columns
        self.card_w = round(self.column * 0.86)
        self.card_h = round(52 * s)

    def x(self, column: int) -> float:
        return self.margin + column * self.column + (self.column - self.card_w) / 2


@dataclass
class Card:
    text: str
    caption: str  # small text above the card
    keep: float | None  # a probability bar (keep prob, or estimated acceptance); None: none
    fill: tuple[int, int, int]
    outline: tuple[int, int, int] = INK
    note: str = ""  # small text below the card
    note_color: tuple[int, int, int] = MUTED
    ink: tuple[int, int, int] = INK
    outline_width: float = 2


def draw_card(draw: ImageDraw.ImageDraw, layout: Layout, xy: tuple[float, float], card: Card):
    s = layout.scale
    x, y = xy
    w, h = layout.card_w, layout.card_h
    draw.rounded_rectangle(
        [x, y, x + w, y + h],
        radius=round(8 * s),
        fill=card.fill,
        outline=card.outline,
        width=max(1, round(card.outline_width * s)),
    )
    label = card.text
    size = 19
    while size > 10 and draw.textlength(label, font=font(round(size * s), bold=True)) > w - 8 * s:
        size -= 1
    draw.text(
        (x + w / 2, y + h * 0.42),
        label,
        font=font(round(size * s), bold=True),
        fill=card.ink,
        anchor="mm",
    )
    draw.text(
        (x + w / 2, y - 4 * s), card.caption, font=font(round(12 * s)), fill=MUTED, anchor="md"
    )
    if card.keep is not None:
        bar_y = y + h - 11 * s
        draw.rectangle(
            [x + 6 * s, bar_y, x + w - 6 * s, bar_y + 5 * s], fill=(255, 255, 255), outline=MUTED
        )
        draw.rectangle(
            [x + 6 * s, bar_y, x + 6 * s + (w - 12 * s) * card.keep, bar_y + 5 * s], fill=INK
        )
    if card.note:
        note, size = fitted(draw, card.note, layout.column - 4 * s, s)
        draw.text(
            (x + w / 2, y + h + 5 * s),
            note,
            font=font(round(size * s), bold=True),
            fill=card.note_color,
            anchor="ma",
        )


def fitted(draw: ImageDraw.ImageDraw, note: str, room: float, s: float) -> tuple[str, int]:
    """The note and a font size (12 down to 8) that fit the room; else just its symbol."""
    for size in range(12, 7, -1):
        if draw.textlength(note, font=font(round(size * s), bold=True)) <= room:
            return note, size
    return note.split(" ")[0], 12


def text_area(layout: Layout, pieces: list[tuple[str, str]], new_from: int) -> Image.Image:
    """The generated text so far, each token coloured by origin; the newest ones underlined,
    tokens copied from the context dotted underneath (a cue besides the colour)."""
    s = layout.scale
    regular = font(round(17 * s))
    image = Image.new("RGB", (layout.width, MAX_TEXT_LINES * layout.line_height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    x0 = x = layout.margin
    lines: list[list[tuple[float, str, tuple, bool, bool]]] = [[]]
    for index, (text, origin) in enumerate(pieces):
        color = rgb(ORIGIN_COLORS[origin])
        copied = origin in (CONTEXT, BOTH)
        for part_index, part in enumerate(text.split("\n")):
            if part_index:
                lines.append([])
                x = x0
            shown = part.replace("\t", "    ")
            width = draw.textlength(shown, font=regular)
            if x + width > layout.width - layout.margin and x > x0:
                lines.append([])
                x = x0
            lines[-1].append((x, shown, color, index >= new_from, copied))
            x += width
    for row, line in enumerate(lines[-MAX_TEXT_LINES:]):
        y = row * layout.line_height
        for x, shown, color, new, copied in line:
            draw.text((x, y), shown, font=regular, fill=color)
            width = draw.textlength(shown, font=regular)
            if new and shown.strip():
                draw.line(
                    [x, y + 21 * s, x + width, y + 21 * s], fill=color, width=max(1, round(2 * s))
                )
            if copied and shown.strip():
                for dot in range(int(width // (4 * s)) + 1):
                    dx = x + dot * 4 * s
                    draw.point([(dx, y + 23 * s), (dx + 1, y + 23 * s)], fill=color)
    return image


def legend_items(trace: GenerationTrace, verified: bool) -> list[tuple[str, str]]:
    """(symbol and word, colour) of everything the frames may show, in reading order."""
    statuses = [
        ANCHOR,
        ACCEPTED if verified else EMITTED,
        REJECTED,
        LOW_CONFIDENCE,
        DUPLICATE,
        OUT_OF_RANGE,
        AFTER_GAP,
    ]
    if any(s.plan is not None for s in trace.steps):
        statuses.append(COST_CUT)
    items = [(f"{STATUS_SYMBOLS[s]} {SHORT_LABELS[s]}", STATUS_COLORS[s]) for s in statuses]
    if any(s.context is not None for s in trace.steps):
        items.append((f"{CONTEXT_SYMBOL} {SHORT_LABELS[CONTEXT]}", CONTEXT_COLOR))
    if any(BOTH in token_origins(s) for s in trace.steps):
        items.append((f"{ORIGIN_SYMBOLS[BOTH]} {SHORT_LABELS[BOTH]}", ORIGIN_COLORS[BOTH]))
    return items


def legend_rows(items: list[tuple[str, str]], width: int) -> list[list[tuple[str, str]]]:
    """The legend items wrapped into rows that fit the width."""
    s = width / DEFAULT_WIDTH
    small = font(round(11 * s))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows: list[list[tuple[str, str]]] = [[]]
    x = 20 * s
    for label, color in items:
        advance = 16 * s + measure.textlength(label, font=small) + 12 * s
        if rows[-1] and x + advance > width - 20 * s:
            rows.append([])
            x = 20 * s
        rows[-1].append((label, color))
        x += advance
    return rows


def is_checked(step: StepTrace) -> bool:
    """Whether any draft of the step went into the backbone's block."""
    context = step.context.statuses if step.context else []
    return any(s.status in CHECKED for s in step.slots) or any(s in CHECKED for s in context)


def phases(step: StepTrace, motion: int) -> list[tuple[str, float]]:
    """(phase, motion fraction) of every frame a step draws."""
    out = [("draft", 0.0)]
    if step.slots:
        out += [("shuffle", i / motion) for i in range(1, motion + 1)]
    if step.slots or step.context is not None:
        out.append(("filter", 0.0))
        if is_checked(step):
            out.append(("verify", 0.0))
    out.append(("emit", 0.0))
    return out


class Renderer:
    """Draws the frames of one trace."""

    def __init__(self, trace: GenerationTrace, width: int):
        self.trace = trace
        k = max((len(s.slots) for s in trace.steps), default=0)
        m = max((len(s.context.tokens) for s in trace.steps if s.context), default=0)
        self.k, self.m = k, m
        self.offsets = max(k, m)
        self.no_offset = self.offsets + 1  # the column of slots without an offset
        settings = trace.settings
        self.strategy = settings.get("shuffle_strategy", "?")
        self.verified = settings.get("verify", True)
        self.legend = legend_rows(legend_items(trace, self.verified), width)
        self.layout = Layout(
            width,
            columns=self.offsets + 1 + (1 if k else 0),
            context_row=m > 0,
            legend_rows=len(self.legend),
        )
        self.pieces: list[tuple[str, str]] = []  # (token text, origin) emitted so far
        self.passes = 1  # the prompt's prefill
        self._static: dict[str, Image.Image] = {}
        self._text: dict[int, Image.Image] = {}  # new_from -> text area, for the current pieces

    # --- the parts of a frame -------------------------------------------------------------
    def static(self, drafting: bool) -> Image.Image:
        """Everything that never changes within a run: captions, guides, legend."""
        key = "draft" if drafting else "rest"
        if key in self._static:
            return self._static[key]
        layout, s = self.layout, self.layout.scale
        image = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
        draw = ImageDraw.Draw(image)
        draw.rectangle([0, 0, layout.width, layout.header], fill=(245, 247, 250))
        self.section(draw, layout.row_a, "1 · draft: K slots in parallel (slot order)", drafting)
        self.section(
            draw,
            layout.row_b,
            "2 · shuffle into offset order · 3 · filter and plan · 4 · verify",
            not drafting,
        )
        if layout.context_row:
            self.section(
                draw,
                layout.row_c,
                f"{CONTEXT_SYMBOL} context: the tokens that followed an earlier match",
                True,
            )
        for p in range(self.offsets + 1):
            draw.text(
                (layout.x(p) + layout.card_w / 2, layout.row_b + layout.card_h + 26 * s),
                "anchor" if p == 0 else f"+{p}",
                font=font(round(12 * s)),
                fill=MUTED,
                anchor="ma",
            )
        if self.k:
            draw.text(
                (
                    layout.x(self.no_offset) + layout.card_w / 2,
                    layout.row_b + layout.card_h + 26 * s,
                ),
                "no offset",
                font=font(round(12 * s)),
                fill=MUTED,
                anchor="ma",
            )
        draw.line(
            [
                layout.margin,
                layout.text_top - 12 * s,
                layout.width - layout.margin,
                layout.text_top - 12 * s,
            ],
            fill=NEUTRAL,
            width=max(1, round(2 * s)),
        )
        self.draw_legend(draw)
        self._static[key] = image
        return image

    def section(self, draw: ImageDraw.ImageDraw, row: int, text: str, active: bool) -> None:
        layout, s = self.layout, self.layout.scale
        draw.text(
            (layout.margin, row - 42 * s),
            text,
            font=font(round(13 * s), bold=active),
            fill=INK if active else MUTED,
        )

    def base(self, step: StepTrace, phase: str) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        layout, s = self.layout, self.layout.scale
        image = self.static(phase == "draft").copy()
        draw = ImageDraw.Draw(image)
        ratio = len(self.pieces) / self.passes if self.passes else 0.0
        mode = "verified" if self.verified else "pure parallel"
        draw.text(
            (layout.margin, layout.header / 2),
            f"ShuffleLM · step {step.index + 1}/{len(self.trace.steps)}",
            font=font(round(20 * s), bold=True),
            fill=INK,
            anchor="lm",
        )
        settings = [f"{ratio:.2f} tokens/pass", self.strategy, mode]
        source = self.trace.settings.get("draft_source")
        if source and self.verified:
            settings.append(source)
        draw.text(
            (layout.width - layout.margin, layout.header / 2),
            " · ".join(settings),
            font=font(round(15 * s)),
            fill=INK,
            anchor="rm",
        )
        self.draw_decision(draw, step, decided=phase not in ("draft", "shuffle"))
        return image, draw

    def draw_decision(self, draw: ImageDraw.ImageDraw, step: StepTrace, decided: bool) -> None:
        """The step's decision in a sentence (muted until the plan is made)."""
        layout, s = self.layout, self.layout.scale
        small = font(round(13 * s))
        sentence = decision_sentence(step, verified=self.verified)
        per_line = max(20, int((layout.width - 2 * layout.margin) / (7.2 * s)))
        lines = textwrap.wrap(sentence, per_line)
        if len(lines) > DECISION_LINES:
            lines = lines[:DECISION_LINES]
            lines[-1] = lines[-1][: per_line - 1].rstrip() + "…"
        for i, line in enumerate(lines):
            draw.text(
                (layout.margin, layout.decision_top + i * layout.decision_line),
                line,
                font=small,
                fill=INK if decided else MUTED,
            )

    def draw_legend(self, draw: ImageDraw.ImageDraw) -> None:
        layout, s = self.layout, self.layout.scale
        small = font(round(11 * s))
        for row, items in enumerate(self.legend):
            x, y = layout.margin, layout.legend_top + row * layout.legend_line
            for label, color in items:
                draw.rectangle([x, y, x + 12 * s, y + 12 * s], fill=rgb(color))
                draw.text((x + 16 * s, y + 6 * s), label, font=small, fill=INK, anchor="lm")
                x += 16 * s + draw.textlength(label, font=small) + 12 * s

    def anchor_card(self, step: StepTrace) -> Card:
        return Card(
            visible(step.anchor.text, limit=10),
            "anchor",
            None,
            rgb(STATUS_COLORS[ANCHOR]),
            ink=WHITE,
        )

    def slot_card(self, slot, phase: str) -> Card:
        text = visible(slot.token.text, limit=10)
        caption = f"slot {slot.index}"
        if phase in ("draft", "shuffle"):
            return Card(text, caption, slot.keep_prob, PENDING)
        return self.status_card(text, caption, slot.keep_prob, slot.status, phase)

    def context_card(self, offset: int, token, prob: float, status: str, phase: str) -> Card:
        """A context draft: outlined in the context's colour, filled with it when accepted."""
        text = visible(token.text, limit=10)
        caption = f"{CONTEXT_SYMBOL} +{offset}"
        context = rgb(CONTEXT_COLOR)
        if phase in ("draft", "shuffle"):
            return Card(text, caption, prob, PENDING, outline=context, outline_width=3)
        card = self.status_card(text, caption, prob, status, phase)
        card.outline, card.outline_width = context, 3
        if status == ACCEPTED and phase in ("verify", "emit"):
            card.fill, card.note_color = context, context
        return card

    def status_card(self, text: str, caption: str, prob: float, status: str, phase: str) -> Card:
        """A draft after the filter and the plan: in the block (pending, then its verdict) or
        faded with the reason it was left out."""
        color = rgb(STATUS_COLORS[status])
        note = f"{STATUS_SYMBOLS[status]} {SHORT_LABELS[status]}"
        if status in CHECKED:
            if phase == "filter":
                return Card(text, caption, prob, PENDING, outline=INK, note="in block")
            return Card(text, caption, prob, color, ink=WHITE, note=note, note_color=color)
        return Card(
            text,
            caption,
            prob,
            faded(color),
            outline=faded(color, 0.3),
            ink=MUTED,
            note=note,
            note_color=readable(color),
        )

    def target(self, slot) -> int:
        return slot.offset if slot.offset is not None else self.no_offset

    # --- frames -------------------------------------------------------------------------------
    def frame(self, step: StepTrace, phase: str, motion: float = 0.0) -> Image.Image:
        layout = self.layout
        image, draw = self.base(step, phase)
        row_a, row_b = float(layout.row_a), float(layout.row_b)
        if phase == "draft":
            anchor_xy = (layout.x(0), row_a)
        elif phase == "shuffle":
            anchor_xy = mix((layout.x(0), row_a), (layout.x(0), row_b), motion)
        else:
            anchor_xy = (layout.x(0), row_b)
        draw_card(draw, layout, anchor_xy, self.anchor_card(step))
        stacked: dict[int, int] = {}
        for slot in step.slots:
            start = (layout.x(slot.index + 1), row_a)
            column = self.target(slot)
            depth = stacked.get(column, 0)  # slots without an offset stack up
            stacked[column] = depth + 1
            end = (layout.x(column) + depth * 6 * layout.scale, row_b + depth * 6 * layout.scale)
            if phase == "draft":
                xy = start
            elif phase == "shuffle":
                xy = mix(start, end, motion)
            else:
                xy = end
            draw_card(draw, layout, xy, self.slot_card(slot, phase))
        if step.context is not None and layout.context_row:
            context = step.context
            drafts = zip(context.tokens, context.accept_probs, context.statuses, strict=True)
            for offset, (token, prob, status) in enumerate(drafts, 1):
                card = self.context_card(offset, token, prob, status, phase)
                draw_card(draw, layout, (layout.x(offset), float(layout.row_c)), card)
        new_from = len(self.pieces) - (step.num_emitted if phase == "emit" else 0)
        if new_from not in self._text:
            self._text[new_from] = text_area(layout, self.pieces, new_from)
        image.paste(self._text[new_from], (0, layout.text_top))
        return image

    def advance(self, step: StepTrace) -> None:
        """Add the step's tokens to the text and count its pass."""
        self._text.clear()
        for token, origin in zip(step.emitted, token_origins(step), strict=True):
            text = token.text if token.text is not None else f"<{token.id}>"
            self.pieces.append((text, origin))
        self.passes += 1 if step.forwarded_ids else 0

    def step_frames(self, step: StepTrace, motion_frames: int, fps: int):
        """(image, duration ms) for every frame of a step."""
        hold = 1000 // max(fps, 1)
        frames = []
        for phase, motion in phases(step, motion_frames):
            if phase == "emit":
                self.advance(step)
            duration = hold if phase == "shuffle" else DURATIONS_MS[phase]
            frames.append((self.frame(step, phase, motion), duration))
        return frames


def frames_of(step: StepTrace, motion: int) -> int:
    """How many frames Renderer.step_frames draws for a step."""
    return len(phases(step, motion))


def plan(trace: GenerationTrace, max_frames: int) -> tuple[list[int], int]:
    """Which steps get drawn and how many motion frames each, to stay within max_frames."""
    everything = list(range(len(trace.steps)))
    for motion in (3, 2, 1):
        if sum(frames_of(s, motion) for s in trace.steps) <= max_frames:
            return everything, motion
    chosen = everything
    while len(chosen) > 2 and sum(frames_of(trace.steps[i], 1) for i in chosen) > max_frames:
        keep = max(2, len(chosen) * 3 // 4)  # thin the steps out evenly; keep first and last
        chosen = sorted({round(i * (len(everything) - 1) / (keep - 1)) for i in range(keep)})
    return chosen, 1


def render_frames(
    trace: GenerationTrace,
    *,
    fps: int = 12,
    max_frames: int = 360,
    width: int = DEFAULT_WIDTH,
    progress: Callable[[float], None] | None = None,
):
    """All frames as (PIL image, duration ms)."""
    if not trace.steps:
        raise ValueError("the trace has no steps to animate")
    renderer = Renderer(trace, width)
    chosen, motion = plan(trace, max_frames)
    frames = []
    for n, index in enumerate(range(len(trace.steps))):
        step = trace.steps[index]
        if index in chosen:
            frames += renderer.step_frames(step, motion, fps)
        else:  # skipped steps still add their tokens to the text
            renderer.advance(step)
        if progress:
            progress((n + 1) / len(trace.steps))
    last, duration = frames[-1]
    frames[-1] = (last, max(duration, 2500))  # rest on the finished text
    return frames


def render_gif(
    trace: GenerationTrace,
    path: str | Path | None = None,
    *,
    fps: int = 12,
    max_frames: int = 360,
    width: int = DEFAULT_WIDTH,
    progress: Callable[[float], None] | None = None,
) -> Path | bytes:
    """Write the animation to `path` (returns the path), or return the GIF bytes."""
    if not 200 <= width <= 2000:
        raise ValueError(f"width must be in [200, 2000] pixels; got {width}")
    if not 1 <= fps <= 60:
        raise ValueError(f"fps must be in [1, 60]; got {fps}")
    if max_frames < 2:
        raise ValueError(f"max_frames must be >= 2; got {max_frames}")
    frames = render_frames(trace, fps=fps, max_frames=max_frames, width=width, progress=progress)
    sample = Image.new("RGB", (width, frames[0][0].height * 2))
    sample.paste(frames[0][0], (0, 0))
    sample.paste(frames[len(frames) // 2][0], (0, frames[0][0].height))
    palette = sample.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    paletted = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f, _ in frames]
    # Pillow's GIF writer, given frames that already share one palette: imageio's writer
    # remaps every frame's palette again and took 25 s for 360 frames where this takes 0.5 s.
    target = io.BytesIO() if path is None else Path(path)
    paletted[0].save(
        target,
        format="GIF",
        save_all=True,
        append_images=paletted[1:],
        duration=[d for _, d in frames],
        loop=0,
        optimize=False,
    )
    return target.getvalue() if path is None else target
