"""Render a GenerationTrace as an animated GIF, drawn and encoded with Pillow.

Per step: the anchor and K slot cards appear with their tokens and keep probabilities (in slot
order), move into offset order (the shuffle), filtered cards fade with their reason, verified
cards turn green or red, and the emitted tokens join the growing text. A header shows the step,
tokens per pass so far and the strategy.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from shuffle_model.trace import ACCEPTED, EMITTED, REJECTED, GenerationTrace, StepTrace

from .style import ANCHOR, STATUS_COLORS, STATUS_LABELS, STATUS_SYMBOLS, visible

FONT_DIR = Path(__file__).resolve().parent.parent / "assets" / "fonts"
BACKGROUND = (255, 255, 255)
INK = (25, 25, 25)
MUTED = (110, 110, 110)
NEUTRAL = (236, 236, 236)
PENDING = (255, 255, 255)
DEFAULT_WIDTH = 800
MAX_TEXT_LINES = 6
SHORT_LABELS = {
    ANCHOR: "anchor",
    ACCEPTED: "accepted",
    EMITTED: "emitted",
    REJECTED: "rejected",
    "low_confidence": "low confidence",
    "duplicate": "duplicate",
    "out_of_range": "out of range",
    "after_gap": "after gap",
    "cost_cut": "not worth it",
}


@lru_cache(maxsize=16)
def font(size: int, *, bold: bool = False) -> ImageFont.FreeTypeFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(FONT_DIR / name), size)


def rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))


def faded(color: tuple[int, int, int], amount: float = 0.7) -> tuple[int, int, int]:
    return tuple(round(c + (255 - c) * amount) for c in color)


def mix(a: tuple[float, float], b: tuple[float, float], t: float) -> tuple[float, float]:
    t = t * t * (3 - 2 * t)  # ease in and out
    return a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t


@dataclass
class Layout:
    width: int
    columns: int  # anchor + K offsets + one column for slots without an offset

    def __post_init__(self):
        s = self.width / DEFAULT_WIDTH
        self.scale = s
        self.margin = round(20 * s)
        self.header = round(52 * s)
        self.row_a = round(108 * s)  # top of the slot-order row
        self.row_b = round(232 * s)  # top of the offset-order row
        self.text_top = round(345 * s)
        self.line_height = round(24 * s)
        self.height = self.text_top + MAX_TEXT_LINES * self.line_height + round(58 * s)
        self.column = (self.width - 2 * self.margin) / self.columns
        self.card_w = round(self.column * 0.86)
        self.card_h = round(52 * s)

    def x(self, column: int) -> float:
        return self.margin + column * self.column + (self.column - self.card_w) / 2


@dataclass
class Card:
    text: str
    caption: str  # small text above the card
    keep: float | None  # keep prob bar; None for the anchor
    fill: tuple[int, int, int]
    outline: tuple[int, int, int] = INK
    note: str = ""  # small text below the card
    note_color: tuple[int, int, int] = MUTED
    ink: tuple[int, int, int] = INK


def draw_card(draw: ImageDraw.ImageDraw, layout: Layout, xy: tuple[float, float], card: Card):
    s = layout.scale
    x, y = xy
    w, h = layout.card_w, layout.card_h
    draw.rounded_rectangle(
        [x, y, x + w, y + h],
        radius=round(8 * s),
        fill=card.fill,
        outline=card.outline,
        width=max(1, round(2 * s)),
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
        draw.text(
            (x + w / 2, y + h + 5 * s),
            card.note,
            font=font(round(12 * s), bold=True),
            fill=card.note_color,
            anchor="ma",
        )


def text_area(layout: Layout, pieces: list[tuple[str, str]], new_from: int) -> Image.Image:
    """The generated text so far, each token coloured by origin; the newest ones underlined."""
    s = layout.scale
    regular = font(round(17 * s))
    image = Image.new("RGB", (layout.width, MAX_TEXT_LINES * layout.line_height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    x0 = x = layout.margin
    lines: list[list[tuple[float, str, tuple, bool]]] = [[]]
    for index, (text, origin) in enumerate(pieces):
        color = rgb(STATUS_COLORS[origin])
        for part_index, part in enumerate(text.split("\n")):
            if part_index:
                lines.append([])
                x = x0
            shown = part.replace("\t", "    ")
            width = draw.textlength(shown, font=regular)
            if x + width > layout.width - layout.margin and x > x0:
                lines.append([])
                x = x0
            lines[-1].append((x, shown, color, index >= new_from))
            x += width
    for row, line in enumerate(lines[-MAX_TEXT_LINES:]):
        y = row * layout.line_height
        for x, shown, color, new in line:
            draw.text((x, y), shown, font=regular, fill=color)
            if new and shown.strip():
                width = draw.textlength(shown, font=regular)
                draw.line(
                    [x, y + 21 * s, x + width, y + 21 * s], fill=color, width=max(1, round(2 * s))
                )
    return image


class Renderer:
    """Draws the frames of one trace."""

    def __init__(self, trace: GenerationTrace, width: int):
        self.trace = trace
        k = max((len(s.slots) for s in trace.steps), default=0)
        self.k = k
        self.layout = Layout(width, columns=k + 2)
        self.strategy = trace.settings.get("shuffle_strategy", "?")
        self.verified = trace.settings.get("verify", True)
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
        draw.text(
            (layout.margin, layout.row_a - 42 * s),
            "1 · draft: K slots in parallel (slot order)",
            font=font(round(13 * s), bold=drafting),
            fill=INK if drafting else MUTED,
        )
        draw.text(
            (layout.margin, layout.row_b - 42 * s),
            "2 · shuffle into offset order · 3 · filter · 4 · verify",
            font=font(round(13 * s), bold=not drafting),
            fill=MUTED if drafting else INK,
        )
        for p in range(self.k + 1):
            draw.text(
                (layout.x(p) + layout.card_w / 2, layout.row_b + layout.card_h + 26 * s),
                "anchor" if p == 0 else f"+{p}",
                font=font(round(12 * s)),
                fill=MUTED,
                anchor="ma",
            )
        if self.k:
            draw.text(
                (layout.x(self.k + 1) + layout.card_w / 2, layout.row_b + layout.card_h + 26 * s),
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
        self.legend(draw)
        self._static[key] = image
        return image

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
        draw.text(
            (layout.width - layout.margin, layout.header / 2),
            f"{ratio:.2f} tokens/pass · {self.strategy} · {mode}",
            font=font(round(15 * s)),
            fill=INK,
            anchor="rm",
        )
        return image, draw

    def legend(self, draw: ImageDraw.ImageDraw) -> None:
        layout, s = self.layout, self.layout.scale
        x, y = layout.margin, layout.height - 30 * s
        shown = [
            ANCHOR,
            ACCEPTED if self.verified else EMITTED,
            REJECTED,
            "low_confidence",
            "duplicate",
            "out_of_range",
            "after_gap",
        ]
        for status in shown:
            label = f"{STATUS_SYMBOLS[status]} {SHORT_LABELS[status]}"
            draw.rectangle([x, y, x + 12 * s, y + 12 * s], fill=rgb(STATUS_COLORS[status]))
            draw.text(
                (x + 16 * s, y + 6 * s), label, font=font(round(11 * s)), fill=INK, anchor="lm"
            )
            x += 16 * s + draw.textlength(label, font=font(round(11 * s))) + 12 * s

    def anchor_card(self, step: StepTrace) -> Card:
        return Card(
            visible(step.anchor.text, limit=10),
            "anchor",
            None,
            rgb(STATUS_COLORS[ANCHOR]),
            ink=(255, 255, 255),
        )

    def slot_card(self, slot, phase: str) -> Card:
        text = visible(slot.token.text, limit=10)
        caption = f"slot {slot.index}"
        if phase in ("draft", "shuffle"):
            return Card(text, caption, slot.keep_prob, PENDING)
        color = rgb(STATUS_COLORS[slot.status])
        in_block = slot.status in (ACCEPTED, REJECTED, EMITTED)
        if phase == "filter" and in_block:
            return Card(text, caption, slot.keep_prob, PENDING, outline=INK, note="in block")
        if in_block:  # verify / emit
            return Card(
                text,
                caption,
                slot.keep_prob,
                color,
                ink=(255, 255, 255),
                note=f"{STATUS_SYMBOLS[slot.status]} {slot.status}",
                note_color=color,
            )
        return Card(
            text,
            caption,
            slot.keep_prob,
            faded(color),
            outline=faded(color, 0.3),
            ink=MUTED,
            note=f"{STATUS_SYMBOLS[slot.status]} {STATUS_LABELS[slot.status]}",
            note_color=color,
        )

    def target(self, slot) -> int:
        return slot.offset if slot.offset is not None else self.k + 1

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
        new_from = len(self.pieces) - (step.num_emitted if phase == "emit" else 0)
        if new_from not in self._text:
            self._text[new_from] = text_area(layout, self.pieces, new_from)
        image.paste(self._text[new_from], (0, layout.text_top))
        return image

    def step_frames(self, step: StepTrace, motion_frames: int, fps: int):
        """(image, duration ms) for every frame of a step."""
        hold = 1000 // max(fps, 1)
        frames = [(self.frame(step, "draft"), 700)]
        if step.slots:
            for i in range(1, motion_frames + 1):
                frames.append((self.frame(step, "shuffle", i / motion_frames), hold))
            frames.append((self.frame(step, "filter"), 800))
            if any(s.status in (ACCEPTED, REJECTED, EMITTED) for s in step.slots):
                frames.append((self.frame(step, "verify"), 800))
        origin_of_drafts = ACCEPTED if self.verified else EMITTED
        self._text.clear()
        for position, token in enumerate(step.emitted):
            text = token.text if token.text is not None else f"<{token.id}>"
            self.pieces.append((text, ANCHOR if position == 0 else origin_of_drafts))
        self.passes += 1 if step.forwarded_ids else 0
        frames.append((self.frame(step, "emit"), 600))
        return frames


def frames_of(step: StepTrace, motion: int) -> int:
    """How many frames Renderer.step_frames draws for a step."""
    if not step.slots:
        return 2
    verified = any(s.status in (ACCEPTED, REJECTED, EMITTED) for s in step.slots)
    return 3 + motion + int(verified)


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
            renderer.step_frames(step, 0, fps)
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
