"""Drawing with Pillow for the GIF: the fonts, colours, text fitted to a room (smaller type,
then a symbol, then an ellipsis) or wrapped to lines, and the boxes texts are drawn in (the
tests check that no two overlap)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from PIL import ImageDraw, ImageFont

from shuffle_model.resources import ASSETS

FONT_DIR = ASSETS / "fonts"
Box = tuple[float, float, float, float]  # left, top, right, bottom


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


def ease(t: float) -> float:
    """A motion's progress at time t (0 to 1): slow at the start and the end."""
    return t * t * (3 - 2 * t)


@dataclass
class Label:
    """A text drawn in a frame: its box as drawn and the room it must stay in (frame pixels)."""

    text: str
    box: Box
    room: Box


def inside(box: Box, room: Box, tolerance: float = 0.5) -> bool:
    return (
        box[0] >= room[0] - tolerance
        and box[1] >= room[1] - tolerance
        and box[2] <= room[2] + tolerance
        and box[3] <= room[3] + tolerance
    )


def overlap(a: Box, b: Box) -> bool:
    """Whether two boxes share more than a line of pixels."""
    return min(a[2], b[2]) - max(a[0], b[0]) > 0.5 and min(a[3], b[3]) - max(a[1], b[1]) > 0.5


def uncovered(box: Box, cover: Box) -> Box | None:
    """The part of `box` that `cover` leaves visible, as a box: None when it covers it whole,
    `box` itself when the visible part is no box (a corner covered, or a middle). Slivers
    under half a pixel count as covered, as in `overlap`."""
    left, top, right, bottom = box
    edge = 0.5
    if cover[1] <= top + edge and cover[3] >= bottom - edge:  # it spans the box's height
        if cover[0] <= left + edge:
            left = max(left, cover[2])
        if cover[2] >= right - edge:
            right = min(right, cover[0])
    elif cover[0] <= left + edge and cover[2] >= right - edge:  # it spans the box's width
        if cover[1] <= top + edge:
            top = max(top, cover[3])
        if cover[3] >= bottom - edge:
            bottom = min(bottom, cover[1])
    return (left, top, right, bottom) if left < right and top < bottom else None


def fit(
    draw: ImageDraw.ImageDraw,
    text: str,
    room: float,
    candidates: range,
    *,
    bold: bool = False,
    symbol: str | None = None,
) -> tuple[str, ImageFont.FreeTypeFont]:
    """The text and the largest font of `sizes` (pixels) that fit `room`; else the symbol (at
    the largest size that fits), else the text cut short with an ellipsis at the smallest."""
    for size in candidates:
        if draw.textlength(text, font=font(size, bold=bold)) <= room:
            return text, font(size, bold=bold)
    if symbol:
        return fit(draw, symbol, room, candidates, bold=bold)
    small = font(candidates[-1], bold=bold)
    while len(text) > 1 and draw.textlength(text + "…", font=small) > room:
        text = text[:-1]
    return text.rstrip() + "…", small


def font_sizes(largest: float, smallest: float, s: float) -> range:
    """Font sizes in pixels from largest*s down to smallest*s (at least 1)."""
    top, bottom = max(1, round(largest * s)), max(1, round(smallest * s))
    return range(top, bottom - 1, -1)


def wrap(draw: ImageDraw.ImageDraw, text: str, typeface, room: float, lines: int) -> list[str]:
    """Words wrapped to lines that fit `room` pixels; at most `lines`, the last cut with …"""
    out: list[str] = []
    for word in text.split():
        if out and draw.textlength(f"{out[-1]} {word}", font=typeface) <= room:
            out[-1] = f"{out[-1]} {word}"
        else:
            out.append(word)
    if len(out) > lines:
        out = out[:lines]
        last = out[-1]
        while last and draw.textlength(last + "…", font=typeface) > room:
            last = last[:-1]
        out[-1] = last.rstrip() + "…"
    for i, line in enumerate(out):  # a single word longer than the room
        while len(line) > 1 and draw.textlength(line, font=typeface) > room:
            line = line[:-2] + "…"
        out[i] = line
    return out
