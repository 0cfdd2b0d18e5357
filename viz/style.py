"""Colours, labels and token display shared by the figures, the GIF and the app.

The palette is Okabe & Ito's colour-blind-safe set, with three colours from Paul Tol's
(sand for cost-cut drafts, wine for the context's drafts, indigo for drafts both sources
proposed), chosen to stay apart from every other colour under simulated protanopia,
deuteranopia and tritanopia (tests/test_viz.py checks it). Every status and every source also
has a word and a symbol, so nothing relies on colour alone.
"""

from __future__ import annotations

import html
import re
from collections.abc import Collection

from shuffle_model.decoding.trace import (
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
    TokenInfo,
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


# Special tokens (the end of the answer, a turn's start, ...) are never shown as their raw text:
# the end of the answer is a marker, any other special token a symbol and its name.
END = "end"  # the end-of-answer marker's label key (the output text, the GIF's text)
END_SYMBOL = "■"  # DejaVu Sans has it (the GIF's font); ⏹ it has not
END_LABEL = f"{END_SYMBOL} end of answer"
END_SHORT = f"{END_SYMBOL} end"  # on cards and in cells, where room is short
END_COLOR = "#4D4D4D"  # dark grey: ink, not a source's colour
SPECIAL_SYMBOL = "◇"
# what a special token's text looks like, for traces written before TokenInfo.special
SPECIAL_TEXT = re.compile(r"<\|[^<>|]{1,64}\|>|</s>|<s>|<(?:eos|bos|pad|unk|eot|mask)>", re.I)
END_TEXT = re.compile(r"end|eos|eot|</s>", re.I)  # which special tokens end a text


def is_special(token: TokenInfo, eos_ids: Collection[int] = ()) -> bool:
    """Whether a token is a special token: marked so by the trace, one of the trace's end
    tokens (`eos_ids`, trace.model["eos_token_ids"]), or with a text like <|im_end|> or </s>."""
    if getattr(token, "special", False) or token.id in eos_ids:
        return True
    return isinstance(token.text, str) and SPECIAL_TEXT.fullmatch(token.text) is not None


def is_end(token: TokenInfo, eos_ids: Collection[int] = ()) -> bool:
    """Whether a token ends the answer: one of the trace's end tokens, or a special token whose
    name says end (<|im_end|>, <|endoftext|>, </s>, <|eot_id|>, ...)."""
    if token.id in eos_ids:
        return True
    return is_special(token) and END_TEXT.search(token.text or "") is not None


def token_label(token: TokenInfo, *, limit: int = 16, eos_ids: Collection[int] = ()) -> str:
    """A token as shown anywhere: visible() text, or ■ end of answer (■ end where `limit` is
    short), or ◇ and the name of another special token (◇ im_start)."""
    if is_end(token, eos_ids):
        return END_LABEL if limit >= len(END_LABEL) else END_SHORT
    if is_special(token, eos_ids):
        name = re.sub(r"[<>|/]", "", token.text or "") or str(token.id)
        return f"{SPECIAL_SYMBOL} {visible(name, limit=max(limit - 2, 1))}"
    return visible(token.text, limit=limit)


def html_token(token: TokenInfo, *, limit: int = 16, eos_ids: Collection[int] = ()) -> str:
    """token_label() escaped for places that render HTML (Plotly hovers and labels)."""
    return html.escape(token_label(token, limit=limit, eos_ids=eos_ids), quote=True)


def end_ids(trace) -> frozenset[int]:
    """The trace's end-of-answer token ids (traces before version 2 record none)."""
    ids = (getattr(trace, "model", None) or {}).get("eos_token_ids") or ()
    return frozenset(i for i in ids if isinstance(i, int) and not isinstance(i, bool))
