"""Render a GenerationTrace as an animated GIF, drawn and encoded with Pillow.

Per step: the anchor and K slot cards appear with their tokens and keep probabilities (in slot
order), and the context's drafts (copied from what followed an earlier match) in a row of their
own at their offsets; the slots move into offset order (the shuffle: a card in motion shows its
token alone and slides over the others like a card in a deck, jumping over the section's title;
a slot left without an offset stays where it was drafted); filtered cards fade with their
reason, and so do drafts the plan found not worth checking; checked cards turn green (or the
context's wine) or red; the emitted tokens join the growing text, coloured by origin, and the
end of the answer shows as a marker. A header shows the step, tokens per pass so far (over the
passes after the prompt's prefill, viz.numbers) and the settings; below it, the step's decision
in a sentence. A run of ordinary steps (nothing checked: the anchor alone, one token per pass)
is one short frame, its anchors in a row and a caption that says so, so the animation spends
its time on the steps that checked drafts.

Every text is fitted to its room: a card's texts to the card's column (smaller type, then the
status's symbol, which the legend explains, then an ellipsis), the sentence wrapped to the
frame.

Two steps: `frame_plan.plan_frames` decides every frame (step, phase, shuffle motion, duration,
how much of the text shows and the passes so far) from the trace alone; `Renderer.draw` here
turns one `Frame` into an image, depending on nothing but the trace and that frame.
`Renderer(trace, width, record=True)` keeps the last drawn frame's texts and their boxes in
`renderer.labels`, so the tests can check that no two overlap at any width.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageDraw, ImageFont

from shuffle_model.decoding.trace import (
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

from .drawing import (
    Box,
    Label,
    ease,
    faded,
    fit,
    font,
    font_sizes,
    overlap,
    readable,
    rgb,
    uncovered,
    wrap,
)
from .explain import answer_pieces, decision_sentence, ordinary_run_sentence, token_origins
from .frame_plan import CHECKED, ORDINARY, Frame, plan_frames
from .numbers import per_pass_text
from .style import (
    ANCHOR,
    BOTH,
    CONTEXT,
    CONTEXT_COLOR,
    CONTEXT_SYMBOL,
    CORPUS,
    END,
    END_COLOR,
    END_LABEL,
    ORIGIN_COLORS,
    ORIGIN_SYMBOLS,
    SHORT_LABELS,
    SPECIAL_SYMBOL,
    STATUS_COLORS,
    STATUS_SYMBOLS,
    end_ids,
    is_end,
    is_special,
    token_label,
)

BACKGROUND = (255, 255, 255)
INK = (25, 25, 25)
MUTED = (110, 110, 110)
NEUTRAL = (236, 236, 236)
PENDING = (255, 255, 255)
WHITE = (255, 255, 255)
DEFAULT_WIDTH = 800
MAX_TEXT_LINES = 6
DECISION_LINES = 2
CARD_TEXT = 10  # characters of a token on a card


def render_frames(
    trace: GenerationTrace,
    *,
    fps: int = 12,
    max_frames: int = 360,
    width: int = DEFAULT_WIDTH,
    progress: Callable[[float], None] | None = None,
):
    """All frames as (PIL image, duration ms): the plan, then each frame drawn."""
    frames = plan_frames(trace, fps=fps, max_frames=max_frames)
    renderer = Renderer(trace, width)
    images = []
    for n, frame in enumerate(frames):
        images.append((renderer.draw(frame), frame.duration_ms))
        if progress:
            progress((n + 1) / len(frames))
    return images


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
    # Pillow's GIF writer keeps the one palette the frames share: 0.5 s for 360 frames, where
    # a writer that remaps each frame's palette (imageio's) takes 25 s.
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


@dataclass
class Layout:
    """Where everything goes in a frame `width` pixels wide: the numbers are the design at
    DEFAULT_WIDTH (800 px), scaled by width / 800 and rounded to whole pixels."""

    width: int
    columns: int  # anchor + offsets
    context_row: bool = False  # a row for the context's drafts
    legend_rows: int = 1
    scale: float = field(init=False)  # width / DEFAULT_WIDTH
    margin: int = field(init=False)  # left and right: 20 px
    header: int = field(init=False)  # height of the title band: 52 px
    decision_top: int = field(init=False)  # the decision's first line, 7 px under the header
    decision_line: int = field(init=False)  # between the decision's lines: 17 px
    row_a: int = field(init=False)  # top of the slot-order row's cards: 152 px
    row_b: int = field(init=False)  # top of the offset-order row's cards: 276 px
    row_c: int = field(init=False)  # top of the context row's cards (when there is one): 426 px
    text_top: int = field(init=False)  # top of the answer: 92 px under row c, else at 389 px
    line_height: int = field(init=False)  # of the answer's lines: 24 px
    legend_top: int = field(init=False)  # MAX_TEXT_LINES lines under text_top, then 18 px
    legend_line: int = field(init=False)  # between the legend's rows: 20 px
    height: int = field(init=False)  # the frame's: the legend's rows, then 12 px
    column: float = field(init=False)  # width of a column: the room between the margins / columns
    card_w: int = field(init=False)  # a card's width: 86 % of its column
    card_h: int = field(init=False)  # a card's height: 52 px

    def __post_init__(self):
        s = self.scale = self.width / DEFAULT_WIDTH
        self.margin = round(20 * s)
        self.header = round(52 * s)
        self.decision_top = self.header + round(7 * s)
        self.decision_line = round(17 * s)
        self.row_a = round(152 * s)
        self.row_b = round(276 * s)
        self.row_c = round(426 * s)
        self.text_top = self.row_c + round(92 * s) if self.context_row else round(389 * s)
        self.line_height = round(24 * s)
        self.legend_top = self.text_top + MAX_TEXT_LINES * self.line_height + round(18 * s)
        self.legend_line = round(20 * s)
        self.height = self.legend_top + self.legend_rows * self.legend_line + round(12 * s)
        self.column = (self.width - 2 * self.margin) / self.columns
        self.card_w = round(self.column * 0.86)
        self.card_h = round(52 * s)

    def shuffle_y(self, progress: float) -> float:
        """The top of a card the shuffle has moved `progress` (eased, 0 to 1) of the way down
        from the slot-order row to the offset-order row. The cards pass the second section's
        title (13 px type, 42 px above row b) in a jump instead of covering it: the first half
        of the way ends with their bottoms 4 px above it, the second starts 18 px under its top."""
        s = self.scale
        above, below = self.row_b - 46 * s - self.card_h, self.row_b - 24 * s
        if progress < 0.5:
            return self.row_a + (above - self.row_a) * progress * 2
        return below + (self.row_b - below) * (progress - 0.5) * 2

    def x(self, column: int) -> float:
        return self.margin + column * self.column + (self.column - self.card_w) / 2

    def column_room(self, column: int) -> Box:
        """Where a card's texts in this column may go: the column, the frame's height."""
        left = self.margin + column * self.column
        return (left, 0, left + self.column, self.height)

    def frame_room(self) -> Box:
        return (0, 0, self.width, self.height)


@dataclass
class Card:
    text: str
    caption: str  # small text above the card
    keep: float | None  # a probability bar (keep prob, or estimated acceptance); None: none
    fill: tuple[int, int, int]
    outline: tuple[int, int, int] = INK
    note: str = ""  # small text below the card
    note_color: tuple[int, int, int] = MUTED
    note_symbol: str | None = None  # what the note shrinks to where it does not fit
    ink: tuple[int, int, int] = INK
    outline_width: float = 2


class Place(NamedTuple):
    """Where a card is drawn."""

    xy: tuple[float, float]  # its top left corner
    column: int | None  # the column its texts stay in; None: in motion (its texts in its box)


class Covered(NamedTuple):
    """A text that a card drawn after it covers, whole or in part (recorded for the tests)."""

    label: Label  # the text as drawn
    by: int  # the covering card's position in Renderer.cards


def text_area(
    layout: Layout, pieces: list[tuple[str, str]], new_from: int
) -> tuple[Image.Image, list[Label]]:
    """The generated text so far, each token coloured by origin; the newest ones underlined,
    tokens copied from the context dotted underneath (a cue besides the colour); the end of
    the answer (origin END) as a small boxed marker. Also the labels drawn, in the area's
    pixels (a token's box is the room the line gives it: its advance, the line's height)."""
    s = layout.scale
    regular = font(round(17 * s))
    small = font(max(1, round(12 * s)))
    image = Image.new("RGB", (layout.width, MAX_TEXT_LINES * layout.line_height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    x0 = x = layout.margin
    right = layout.width - layout.margin
    pad = 4 * s
    lines: list[list[tuple[float, str, str, bool]]] = [[]]
    for index, (text, origin) in enumerate(pieces):
        new = index >= new_from
        if origin == END:
            width = draw.textlength(END_LABEL, font=small) + 2 * pad
            if x + width > right and x > x0:
                lines.append([])
                x = x0
            lines[-1].append((x, END_LABEL, END, new))
            x += width + pad
            continue
        for part_index, part in enumerate(text.split("\n")):
            if part_index:
                lines.append([])
                x = x0
            shown = part.replace("\t", "    ")
            width = draw.textlength(shown, font=regular)
            if x + width > right and x > x0:
                lines.append([])
                x = x0
            while len(shown) > 1 and x0 + draw.textlength(shown, font=regular) > right:
                shown = shown[:-2] + "…"  # one token longer than a line: cut short
            lines[-1].append((x, shown, origin, new))
            x += draw.textlength(shown, font=regular)
    labels = []
    for row, line in enumerate(lines[-MAX_TEXT_LINES:]):
        y = row * layout.line_height
        for x, shown, origin, new in line:
            if origin == END:
                labels.append(end_marker(draw, (x, y), layout, new))
                continue
            color = rgb(ORIGIN_COLORS[origin])
            draw.text((x, y), shown, font=regular, fill=color)
            width = draw.textlength(shown, font=regular)
            if shown.strip():
                labels.append(Label(shown, (x, y, x + width, y + layout.line_height), (0, 0, 0, 0)))
            if new and shown.strip():
                draw.line(
                    [x, y + 21 * s, x + width, y + 21 * s], fill=color, width=max(1, round(2 * s))
                )
            if origin in (CONTEXT, BOTH) and shown.strip():
                for dot in range(int(width // (4 * s)) + 1):
                    dx = x + dot * 4 * s
                    draw.point([(dx, y + 23 * s), (dx + 1, y + 23 * s)], fill=color)
    return image, labels


def end_marker(draw: ImageDraw.ImageDraw, xy: tuple[float, float], layout: Layout, new: bool):
    """■ end of answer in a small grey box on the text's line (underlined when new)."""
    s = layout.scale
    small = font(max(1, round(12 * s)))
    x, y = xy
    pad = 4 * s
    width = draw.textlength(END_LABEL, font=small) + 2 * pad
    box = (x, y + 3 * s, x + width, y + layout.line_height - 3 * s)
    ink = rgb(END_COLOR)
    draw.rounded_rectangle(box, radius=round(4 * s), fill=NEUTRAL, outline=ink, width=1)
    draw.text((x + width / 2, (box[1] + box[3]) / 2), END_LABEL, font=small, fill=ink, anchor="mm")
    if new:
        draw.line([x, y + 23 * s, x + width, y + 23 * s], fill=ink, width=max(1, round(2 * s)))
    middle = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    return Label(END_LABEL, draw.textbbox(middle, END_LABEL, font=small, anchor="mm"), box)


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
    for origin in (BOTH, CORPUS):
        if any(origin in token_origins(s) for s in trace.steps):
            items.append(
                (f"{ORIGIN_SYMBOLS[origin]} {SHORT_LABELS[origin]}", ORIGIN_COLORS[origin])
            )
    ends = end_ids(trace)
    shown = [token for step in trace.steps for token in shown_tokens(step)]
    if any(is_end(token, ends) for token in shown):
        items.append((END_LABEL, END_COLOR))
    if any(is_special(token, ends) and not is_end(token, ends) for token in shown):
        items.append((f"{SPECIAL_SYMBOL} special token", END_COLOR))
    return items


def shown_tokens(step: StepTrace) -> list:
    """Every token a frame of the step shows: the anchor, the slots', the context's, and the
    emitted ones (the text)."""
    context = step.context.tokens if step.context else []
    return [step.anchor, *(slot.token for slot in step.slots), *context, *step.emitted]


def legend_rows(items: list[tuple[str, str]], width: int) -> list[list[tuple[str, str]]]:
    """The legend items wrapped into rows that fit the width."""
    s = width / DEFAULT_WIDTH
    small = font(max(1, round(11 * s)))
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


class Renderer:
    """Draws the frames of one trace."""

    def __init__(self, trace: GenerationTrace, width: int, *, record: bool = False):
        self.trace = trace
        self.ends = end_ids(trace)
        self.record = record  # keep every frame's labels (tests)
        self.labels: list[Label] = []  # the last frame's visible labels, when recording
        self.cards: list[Box] = []  # the last frame's card bodies in drawing order, recording
        self.covered: list[Covered] = []  # the last frame's texts that cards cover, recording
        k = max((len(s.slots) for s in trace.steps), default=0)
        m = max((len(s.context.tokens) for s in trace.steps if s.context), default=0)
        self.k, self.m = k, m
        self.offsets = max(k, m)
        settings = trace.settings
        self.strategy = settings.get("shuffle_strategy", "?")
        self.verified = settings.get("verify", True)
        self.legend = legend_rows(legend_items(trace, self.verified), width)
        self.layout = Layout(
            width, columns=self.offsets + 1, context_row=m > 0, legend_rows=len(self.legend)
        )
        self.pieces = [(p.text, p.origin) for p in answer_pieces(trace)]  # origin or END
        self._static: dict[str, tuple[Image.Image, list[Label]]] = {}
        # (shown, new_from) -> the text area and its labels
        self._text: dict[tuple[int, int], tuple[Image.Image, list[Label]]] = {}

    # --- drawing texts --------------------------------------------------------------------
    def write(
        self,
        draw: ImageDraw.ImageDraw,
        xy: tuple[float, float],
        text: str,
        typeface: ImageFont.FreeTypeFont,
        fill,
        *,
        anchor: str = "la",
        room: Box | None = None,
    ) -> None:
        """Draw a text; when recording, keep its box and the room it must stay in."""
        draw.text(xy, text, font=typeface, fill=fill, anchor=anchor)
        if self.record:
            box = draw.textbbox(xy, text, font=typeface, anchor=anchor)
            self.labels.append(Label(text, box, room or self.layout.frame_room()))

    def cover(self, body: Box) -> None:
        """A card is about to be drawn over `body`: the texts it hides keep only the part left
        visible (the tests check the texts a reader sees), and are noted in `covered`."""
        visible = []
        for label in self.labels:
            if overlap(label.box, body):
                self.covered.append(Covered(label, len(self.cards)))
                box = uncovered(label.box, body)
                if box is not None:
                    visible.append(replace(label, box=box))
            else:
                visible.append(label)
        self.labels = visible
        self.cards.append(body)

    def draw_card(self, draw: ImageDraw.ImageDraw, place: Place, card: Card) -> None:
        """A card at its place: its token, the caption above it and the note below it (a card
        in motion: its token alone), the probability bar."""
        layout, s = self.layout, self.layout.scale
        x, y = place.xy
        w, h = layout.card_w, layout.card_h
        body = (x, y, x + w, y + h)
        moving = place.column is None
        room = body if moving else layout.column_room(place.column)
        if self.record:
            self.cover(body)
        draw.rounded_rectangle(
            [x, y, x + w, y + h],
            radius=round(8 * s),
            fill=card.fill,
            outline=card.outline,
            width=max(1, round(card.outline_width * s)),
        )
        label, typeface = fit(draw, card.text, w - 8 * s, font_sizes(19, 10, s), bold=True)
        self.write(
            draw, (x + w / 2, y + h * 0.42), label, typeface, card.ink, anchor="mm", room=room
        )
        if not moving:  # a moving card's caption would run into its neighbours' and the titles
            caption, typeface = fit(draw, card.caption, layout.column - 4 * s, font_sizes(12, 8, s))
            self.write(
                draw, (x + w / 2, y - 4 * s), caption, typeface, MUTED, anchor="md", room=room
            )
        if card.keep is not None:
            bar_y = y + h - 11 * s
            draw.rectangle(
                [x + 6 * s, bar_y, x + w - 6 * s, bar_y + 5 * s], fill=WHITE, outline=MUTED
            )
            draw.rectangle(
                [x + 6 * s, bar_y, x + 6 * s + (w - 12 * s) * card.keep, bar_y + 5 * s], fill=INK
            )
        if card.note and not moving:  # no wider than the card and a little: notes stay apart
            note, typeface = fit(
                draw,
                card.note,
                min(layout.column - 4 * s, w + 6 * s),
                font_sizes(12, 8, s),
                bold=True,
                symbol=card.note_symbol,
            )
            self.write(
                draw,
                (x + w / 2, y + h + 5 * s),
                note,
                typeface,
                card.note_color,
                anchor="ma",
                room=room,
            )

    # --- the parts of a frame -------------------------------------------------------------
    def static(self, drafting: bool) -> tuple[Image.Image, list[Label]]:
        """Everything that never changes within a run: captions, guides, legend (and the
        labels drawn, when recording)."""
        key = "draft" if drafting else "rest"
        if key in self._static:
            return self._static[key]
        self.labels = []
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
            text, typeface = fit(
                draw, "anchor" if p == 0 else f"+{p}", layout.column - 4 * s, font_sizes(12, 8, s)
            )
            self.write(
                draw,
                (layout.x(p) + layout.card_w / 2, layout.row_b + layout.card_h + 26 * s),
                text,
                typeface,
                MUTED,
                anchor="ma",
                room=layout.column_room(p),
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
        self._static[key] = image, self.labels
        return self._static[key]

    def section(self, draw: ImageDraw.ImageDraw, row: int, text: str, active: bool) -> None:
        layout, s = self.layout, self.layout.scale
        room = layout.width - 2 * layout.margin
        text, typeface = fit(draw, text, room, font_sizes(13, 8, s), bold=active)
        self.write(draw, (layout.margin, row - 42 * s), text, typeface, INK if active else MUTED)

    def base(self, frame: Frame) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        layout, s = self.layout, self.layout.scale
        step, phase = self.trace.steps[frame.step], frame.phase
        run = self.trace.steps[frame.step : frame.step + frame.run]
        static, labels = self.static(phase == "draft")
        image = static.copy()
        self.labels, self.cards, self.covered = list(labels), [], []
        draw = ImageDraw.Draw(image)
        mode = "verified" if self.verified else "pure parallel"
        steps = f" {step.index + 1}" if len(run) == 1 else f"s {step.index + 1}–{run[-1].index + 1}"
        title = f"ShuffleLM · step{steps}/{len(self.trace.steps)}"
        bold = font(round(20 * s), bold=True)
        self.write(draw, (layout.margin, layout.header / 2), title, bold, INK, anchor="lm")
        per_pass = per_pass_text(frame.shown, frame.passes)
        settings = [f"{per_pass} tokens/pass", self.strategy, mode]
        source = self.trace.settings.get("draft_source")
        if source and self.verified:
            settings.append(source)
        regular = font(round(15 * s))
        room = layout.width - 2 * layout.margin - draw.textlength(title, font=bold) - 12 * s
        while len(settings) > 1 and draw.textlength(" · ".join(settings), font=regular) > room:
            settings.pop()  # the least important setting first
        self.write(
            draw,
            (layout.width - layout.margin, layout.header / 2),
            " · ".join(settings),
            regular,
            INK,
            anchor="rm",
        )
        if phase == ORDINARY:
            sentence = ordinary_run_sentence(run, verified=bool(self.verified))
        else:
            sentence = decision_sentence(step, verified=self.verified)
        self.draw_decision(draw, sentence, decided=phase not in ("draft", "shuffle"))
        return image, draw

    def draw_decision(self, draw: ImageDraw.ImageDraw, sentence: str, decided: bool) -> None:
        """The step's decision in a sentence (muted until the plan is made)."""
        layout, s = self.layout, self.layout.scale
        small = font(round(13 * s))
        lines = wrap(draw, sentence, small, layout.width - 2 * layout.margin, DECISION_LINES)
        for i, line in enumerate(lines):
            self.write(
                draw,
                (layout.margin, layout.decision_top + i * layout.decision_line),
                line,
                small,
                INK if decided else MUTED,
            )

    def draw_legend(self, draw: ImageDraw.ImageDraw) -> None:
        layout, s = self.layout, self.layout.scale
        small = font(max(1, round(11 * s)))
        for row, items in enumerate(self.legend):
            x, y = layout.margin, layout.legend_top + row * layout.legend_line
            for label, color in items:
                draw.rectangle([x, y, x + 12 * s, y + 12 * s], fill=rgb(color))
                self.write(draw, (x + 16 * s, y + 6 * s), label, small, INK, anchor="lm")
                x += 16 * s + draw.textlength(label, font=small) + 12 * s

    def shown(self, token) -> str:
        """A token on a card: its visible text, or ■ end (the end of the answer)."""
        return token_label(token, limit=CARD_TEXT, eos_ids=self.ends)

    def anchor_card(self, step: StepTrace) -> Card:
        return Card(self.shown(step.anchor), "anchor", None, rgb(STATUS_COLORS[ANCHOR]), ink=WHITE)

    def slot_card(self, slot, phase: str) -> Card:
        text = self.shown(slot.token)
        caption = f"slot {slot.index}"
        if phase in ("draft", "shuffle"):
            return Card(text, caption, slot.keep_prob, PENDING)
        return self.status_card(text, caption, slot.keep_prob, slot.status, phase)

    def context_card(self, offset: int, token, prob: float, status: str, phase: str) -> Card:
        """A context draft: outlined in the context's colour, filled with it when accepted."""
        text = self.shown(token)
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
        symbol = STATUS_SYMBOLS[status]
        note = f"{symbol} {SHORT_LABELS[status]}"
        if status in CHECKED:
            if phase == "filter":
                return Card(text, caption, prob, PENDING, outline=INK, note="in block")
            return Card(
                text,
                caption,
                prob,
                color,
                ink=WHITE,
                note=note,
                note_color=color,
                note_symbol=symbol,
            )
        return Card(
            text,
            caption,
            prob,
            faded(color),
            outline=faded(color, 0.3),
            ink=MUTED,
            note=note,
            note_color=readable(color),
            note_symbol=symbol,
        )

    # --- frames -------------------------------------------------------------------------------
    def draw(self, frame: Frame) -> Image.Image:
        """The frame's image; it depends on nothing but the trace and the frame."""
        layout = self.layout
        step, phase, motion = self.trace.steps[frame.step], frame.phase, frame.motion
        if phase == ORDINARY:
            return self.draw_run(frame)
        image, draw = self.base(frame)
        self.draw_card(draw, self.place(0, 0, phase, motion), self.anchor_card(step))
        for slot in step.slots:
            place = self.place(slot.index + 1, slot.offset, phase, motion)
            self.draw_card(draw, place, self.slot_card(slot, phase))
        if step.context is not None and layout.context_row:
            context = step.context
            drafts = zip(context.tokens, context.accept_probs, context.statuses, strict=True)
            for offset, (token, prob, status) in enumerate(drafts, 1):
                card = self.context_card(offset, token, prob, status, phase)
                self.draw_card(draw, Place((layout.x(offset), float(layout.row_c)), offset), card)
        self.paste_text(image, frame)
        return image

    def place(self, start: int, end: int | None, phase: str, motion: float) -> Place:
        """Where the card drafted in column `start` of the slot-order row is: the shuffle moves
        it to column `end` of the offset-order row (None: it stays where it was drafted, with
        the reason below it)."""
        layout = self.layout
        if phase == "draft" or end is None:
            return Place((layout.x(start), float(layout.row_a)), start)
        if phase == "shuffle" and motion < 1:
            progress = ease(motion)
            x = layout.x(start) + (layout.x(end) - layout.x(start)) * progress
            return Place((x, layout.shuffle_y(progress)), None)
        return Place((layout.x(end), float(layout.row_b)), end)

    def draw_run(self, frame: Frame) -> Image.Image:
        """A run of ordinary steps in one frame: their anchors in a row (the last ones where
        there are more than columns), the caption above, their tokens new in the text."""
        layout = self.layout
        image, draw = self.base(frame)
        run = self.trace.steps[frame.step : frame.step + frame.run]
        for column, step in enumerate(run[-layout.columns :]):
            card = replace(self.anchor_card(step), caption=f"step {step.index + 1}")
            self.draw_card(draw, Place((layout.x(column), float(layout.row_a)), column), card)
        self.paste_text(image, frame)
        return image

    def paste_text(self, image: Image.Image, frame: Frame) -> None:
        """The answer so far below the cards (the newest tokens underlined)."""
        layout = self.layout
        key = (frame.shown, frame.new_from)
        if key not in self._text:
            self._text = {key: text_area(layout, self.pieces[: frame.shown], frame.new_from)}
        text, labels = self._text[key]
        image.paste(text, (0, layout.text_top))
        if self.record:
            top = layout.text_top
            room = (layout.margin, top, layout.width - layout.margin, top + text.height)
            for label in labels:
                x0, y0, x1, y1 = label.box
                self.labels.append(Label(label.text, (x0, y0 + top, x1, y1 + top), room))
