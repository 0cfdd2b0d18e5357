"""Colours, labels and token display shared by the figures, the GIF and the app.

The palette is Okabe & Ito's colour-blind-safe set, with three colours from Paul Tol's
(sand for cost-cut drafts, wine for the context's drafts, indigo for drafts both sources
proposed), chosen to stay apart from every other colour under simulated protanopia,
deuteranopia and tritanopia (tests/test_viz.py checks it). Every status and every source also
has a word and a symbol, so nothing relies on colour alone.
"""

from __future__ import annotations

import html

from shuffle_model.trace import (
    ACCEPTED,
    AFTER_GAP,
    COST_CUT,
    DUPLICATE,
    EMITTED,
    FROM_BOTH,
    FROM_CONTEXT,
    FROM_HEAD,
    LOW_CONFIDENCE,
    OUT_OF_RANGE,
    REJECTED,
    SLOT_STATUSES,
)

ANCHOR = "anchor"
STATUS_COLORS = {
    ANCHOR: "#0072B2",  # blue
    ACCEPTED: "#009E73",  # bluish green
    EMITTED: "#56B4E9",  # sky blue
    REJECTED: "#D55E00",  # vermillion
    LOW_CONFIDENCE: "#E69F00",  # orange
    DUPLICATE: "#CC79A7",  # reddish purple
    OUT_OF_RANGE: "#999999",  # grey
    AFTER_GAP: "#8C6D1F",  # dark yellow-brown
    COST_CUT: "#DDCC77",  # sand (Tol): in the chain, but not worth the longer pass
}
STATUS_LABELS = {
    ANCHOR: "anchor (backbone)",
    ACCEPTED: "accepted draft",
    EMITTED: "emitted draft (unverified)",
    REJECTED: "rejected by the backbone",
    LOW_CONFIDENCE: "low confidence",
    DUPLICATE: "duplicate offset",
    OUT_OF_RANGE: "out of range",
    AFTER_GAP: "after a gap",
    COST_CUT: "not worth checking (cost)",
}
STATUS_SYMBOLS = {
    ANCHOR: "⚓",
    ACCEPTED: "✓",
    EMITTED: "→",
    REJECTED: "✗",
    LOW_CONFIDENCE: "?",
    DUPLICATE: "=",
    OUT_OF_RANGE: "»",
    AFTER_GAP: "…",
    COST_CUT: "✂",
}
ORDERED_STATUSES = (ANCHOR, *SLOT_STATUSES)

# The context's drafts (an n-gram match in the prompt and the output) have their own colour
CONTEXT = FROM_CONTEXT
CONTEXT_COLOR = "#882255"  # wine (Tol)
CONTEXT_SYMBOL = "↩"  # copied from earlier in the text
CONTEXT_LABEL = "context draft"

# Where each emitted token came from (viz.explain.token_origins): the output text's colours
HEAD = FROM_HEAD
BOTH = FROM_BOTH
ORIGINS = (ANCHOR, HEAD, CONTEXT, BOTH, EMITTED)
ORIGIN_COLORS = {
    ANCHOR: STATUS_COLORS[ANCHOR],
    HEAD: STATUS_COLORS[ACCEPTED],
    CONTEXT: CONTEXT_COLOR,
    BOTH: "#332288",  # indigo (Tol)
    EMITTED: STATUS_COLORS[EMITTED],
}
ORIGIN_LABELS = {  # also the output text's highlight labels in the app
    ANCHOR: "anchor",
    HEAD: "accepted draft (head)",
    CONTEXT: "accepted draft (context)",
    BOTH: "accepted draft (head and context)",
    EMITTED: "emitted draft",
}
ORIGIN_SYMBOLS = {
    ANCHOR: STATUS_SYMBOLS[ANCHOR],
    HEAD: STATUS_SYMBOLS[ACCEPTED],
    CONTEXT: CONTEXT_SYMBOL,
    BOTH: f"{STATUS_SYMBOLS[ACCEPTED]}{CONTEXT_SYMBOL}",
    EMITTED: STATUS_SYMBOLS[EMITTED],
}

VISIBLE_WHITESPACE = {" ": "·", "\n": "⏎", "\t": "⇥", "\r": "␍"}


def visible(text: str | None, *, limit: int = 16) -> str:
    """A token's text with whitespace made visible and control characters shown as codes."""
    if text is None:
        return "?"
    if text == "":
        return "∅"
    shown = []
    for char in text:
        if char in VISIBLE_WHITESPACE:
            shown.append(VISIBLE_WHITESPACE[char])
        elif ord(char) < 32 or ord(char) == 127:
            shown.append(f"\\x{ord(char):02x}")
        elif 0xD800 <= ord(char) <= 0xDFFF:  # lone surrogate
            shown.append("�")
        else:
            shown.append(char)
    out = "".join(shown)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def html_text(text: str | None, *, limit: int = 16) -> str:
    """visible() escaped for places that render HTML (Plotly hovers and labels)."""
    return html.escape(visible(text, limit=limit), quote=True)
