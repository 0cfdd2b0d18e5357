"""Colours, labels and token display shared by the figures, the GIF and the app.

The palette is Okabe & Ito's colour-blind-safe set, with four colours from Paul Tol's (sand
for cost-cut drafts, wine for the context's drafts, indigo for drafts both the head and the
context proposed, dark olive for drafts from the corpus alone), chosen to stay apart from every
other colour under simulated protanopia, deuteranopia and tritanopia (tests/test_viz.py checks
it). Every status and every source also has a word and a symbol, so nothing relies on colour
alone.
"""

from __future__ import annotations

import html
import re
from collections.abc import Collection
from dataclasses import dataclass, replace

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


@dataclass(frozen=True)
class Style:
    color: str  # hex colour of the status or source, everywhere it is drawn
    label: str  # its words (legends, hovers, the app's highlight labels)
    short: str  # its words where room is short (the GIF's notes and legend, hovers on a cell)
    symbol: str  # its symbol, so that nothing relies on colour alone


# One row per status of a slot (and the anchor): every colour, label and legend derives from here
STATUS_STYLES = {
    ANCHOR: Style("#0072B2", "anchor (backbone)", "anchor", "⚓"),  # blue
    ACCEPTED: Style("#009E73", "accepted draft", "accepted", "✓"),  # bluish green
    EMITTED: Style("#56B4E9", "emitted draft (unverified)", "emitted", "→"),  # sky blue
    REJECTED: Style("#D55E00", "rejected by the backbone", "rejected", "✗"),  # vermillion
    LOW_CONFIDENCE: Style("#E69F00", "low confidence", "low confidence", "?"),  # orange
    DUPLICATE: Style("#CC79A7", "duplicate offset", "duplicate", "="),  # reddish purple
    OUT_OF_RANGE: Style("#999999", "out of range", "out of range", "»"),  # grey
    AFTER_GAP: Style("#8C6D1F", "after a gap", "after gap", "…"),  # dark yellow-brown
    # sand (Tol): in the chain, but not worth the longer pass
    COST_CUT: Style("#DDCC77", "not worth checking (cost)", "not worth it", "✂"),
}
ORDERED_STATUSES = (ANCHOR, *SLOT_STATUSES)

# The context's drafts (an n-gram match in the prompt and the output) have their own style
CONTEXT = FROM_CONTEXT
# wine (Tol); ↩: copied from earlier in the text
CONTEXT_STYLE = Style("#882255", "context draft", "context draft", "↩")

# Where each emitted token came from (viz.explain.token_origins): the output text's styles
HEAD = FROM_HEAD
BOTH = FROM_BOTH
CORPUS = "corpus"  # drafted from the backbone's earlier answers alone (decoding/corpus.py)
ORIGINS = (ANCHOR, HEAD, CONTEXT, BOTH, CORPUS, EMITTED)
ORIGIN_STYLES = {  # the labels are also the output text's highlight labels in the app
    ANCHOR: replace(STATUS_STYLES[ANCHOR], label="anchor"),
    HEAD: replace(STATUS_STYLES[ACCEPTED], label="accepted draft (head)"),
    CONTEXT: replace(CONTEXT_STYLE, label="accepted draft (context)"),
    BOTH: Style(  # indigo (Tol)
        "#332288",
        "accepted draft (head and context)",
        "head and context",
        STATUS_STYLES[ACCEPTED].symbol + CONTEXT_STYLE.symbol,
    ),
    # dark olive (Tol's dark set); §: read in earlier answers
    CORPUS: Style("#666633", "corpus draft", "corpus", "§"),
    EMITTED: replace(STATUS_STYLES[EMITTED], label="emitted draft"),
}

# The same tables by field, for the code that needs one of them
STATUS_COLORS = {key: style.color for key, style in STATUS_STYLES.items()}
STATUS_LABELS = {key: style.label for key, style in STATUS_STYLES.items()}
STATUS_SYMBOLS = {key: style.symbol for key, style in STATUS_STYLES.items()}
CONTEXT_COLOR, CONTEXT_LABEL, CONTEXT_SYMBOL = (
    CONTEXT_STYLE.color,
    CONTEXT_STYLE.label,
    CONTEXT_STYLE.symbol,
)
ORIGIN_COLORS = {key: style.color for key, style in ORIGIN_STYLES.items()}
ORIGIN_LABELS = {key: style.label for key, style in ORIGIN_STYLES.items()}
ORIGIN_SYMBOLS = {key: style.symbol for key, style in ORIGIN_STYLES.items()}
SHORT_LABELS = {  # statuses, and the sources that have no status of their own
    **{key: style.short for key, style in STATUS_STYLES.items()},
    CONTEXT: CONTEXT_STYLE.short,
    BOTH: ORIGIN_STYLES[BOTH].short,
    CORPUS: ORIGIN_STYLES[CORPUS].short,
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


# A draft source by name (a forwarded node's sources joined by '+'): the built-in ones in their
# origin's colour and symbol; a source passed to generate() by name in a neutral grey
OTHER_SOURCE = Style("#777777", "another source", "other", "•")
SOURCE_WORDS = {
    ANCHOR: "anchor",
    HEAD: "head",
    CONTEXT: "context",
    BOTH: "head and context",
    CORPUS: "corpus",
}


def source_style(source: str) -> Style:
    """The colour, words and symbol of a draft source (anchor, head, context, head+context,
    corpus, or any other name, which is its own label)."""
    if source in SOURCE_WORDS:
        return replace(ORIGIN_STYLES[source], label=SOURCE_WORDS[source])
    return replace(OTHER_SOURCE, label=source, short=source)
