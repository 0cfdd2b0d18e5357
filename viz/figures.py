"""Plotly figures of a trace: shuffle heatmap, draft heatmap, filter-and-plan chart, the tree of
drafts a step checked, overview, and the machine's cost curve.

Figures are built from plain dicts with Plotly's validation off: validating every attribute
costs 0.2-0.5 s a figure, too slow to redraw at every streamed step.
"""

from __future__ import annotations

import html
import textwrap
from collections import Counter
from typing import NamedTuple

import plotly.graph_objects as go

from shuffle_model.decoding.trace import (
    ACCEPTED,
    COST_CUT,
    REJECTED,
    GenerationTrace,
    StepTrace,
    cumulative_passes,
)

from .explain import (
    accepted_by_origin,
    answer_pieces,
    cost_sentence,
    decision_sentence,
    is_pure,
    ordinal,
    token_origins,
    tree_sentence,
)
from .numbers import per_pass_text, run_numbers
from .style import (
    ANCHOR,
    BOTH,
    CONTEXT,
    CONTEXT_COLOR,
    CONTEXT_LABEL,
    CONTEXT_SYMBOL,
    CORPUS,
    END,
    END_LABEL,
    HEAD,
    ORDERED_STATUSES,
    ORIGIN_COLORS,
    ORIGIN_LABELS,
    ORIGIN_SYMBOLS,
    ORIGINS,
    SHORT_LABELS,
    STATUS_COLORS,
    STATUS_LABELS,
    STATUS_SYMBOLS,
    end_ids,
    html_token,
    source_style,
)
from .tree import ForwardedTree, Node, forwarded_tree

GRID = "#e5e5e5"
INK_TEXT = "#222"
BLUES = [[0.0, "#f7fbff"], [0.5, "#6baed6"], [1.0, "#08306b"]]  # light (0) to dark (1)
GREENS = [[0.0, "#f7fcf5"], [0.5, "#74c476"], [1.0, "#00441b"]]
AXIS = dict(gridcolor=GRID, zerolinecolor=GRID, automargin=True)
BASE_LAYOUT = dict(
    template=None,
    paper_bgcolor="white",
    plot_bgcolor="white",
    font=dict(family="DejaVu Sans, Arial, sans-serif", size=13, color="#222"),
    margin=dict(l=10, r=10, t=60, b=10),
    hoverlabel=dict(bgcolor="white", font_size=13),
)


# Plotly's automargin widens a margin to fit its labels by drawing the whole figure again, and
# every picture of the live view is a fresh plot (Gradio's Plot re-creates it on each update): the
# step pictures start from the room their labels usually take, so that it rarely has to.
CHAR_PX = 7  # about one character of a tick label (13 px DejaVu Sans), in pixels
COLORBAR_ROOM = 100  # a heatmap's colour bar and its title, right of the plot


def label_room(labels: list[str]) -> int:
    """Pixels a column of tick labels (HTML-escaped text) usually takes beside its axis."""
    return 8 + CHAR_PX * max((len(html.unescape(label)) for label in labels), default=0)


def figure(data: list[dict], layout: dict) -> go.Figure:
    return go.Figure(data=data, layout={**BASE_LAYOUT, **layout}, _validate=False)


def side_by_side(count: int, titles: list[str], widths: list[float] | None = None) -> dict:
    """Layout axes for `count` subplots in a row (what make_subplots would make)."""
    widths = widths or [1 / count] * count
    gap = 0.08
    usable = 1 - gap * (count - 1)
    layout, annotations, left = {}, [], 0.0
    for i in range(count):
        right = min(left + usable * widths[i], 1.0)  # no rounding past the edge
        suffix = "" if i == 0 else str(i + 1)
        layout[f"xaxis{suffix}"] = dict(domain=[left, right], anchor=f"y{suffix}", **AXIS)
        layout[f"yaxis{suffix}"] = dict(anchor=f"x{suffix}", **AXIS)
        annotations.append(
            dict(
                text=titles[i],
                x=(left + right) / 2,
                y=1.0,
                xref="paper",
                yref="paper",
                xanchor="center",
                yanchor="bottom",
                showarrow=False,
                font=dict(size=13),
            )
        )
        left = right + gap
    layout["annotations"] = annotations
    return layout


def _slot_labels(step: StepTrace) -> list[str]:
    return [f"slot {s.index}: {html_token(s.token)}" for s in step.slots]


def _empty(title: str, message: str) -> go.Figure:
    return figure(
        [],
        dict(
            title=dict(text=title),
            xaxis=dict(visible=False),
            yaxis=dict(visible=False),
            height=260,
            annotations=[
                dict(
                    text=message,
                    showarrow=False,
                    font=dict(size=15),
                    x=0.5,
                    y=0.5,
                    xref="paper",
                    yref="paper",
                )
            ],
        ),
    )


def _no_head_drafts(step: StepTrace) -> str:
    if step.context is not None:
        return "no head drafts in this step: only the context drafted (see the plan chart)"
    return "no drafts in this step (the last token, or drafting switched off)"


def _shuffle_hover(step: StepTrace, offsets: list[str]) -> list[list[str]]:
    """Per slot and offset: the slot's drafted token and its score at that offset."""
    return [
        [
            f"slot {s.index} drafted <b>{html_token(s.token)}</b> (p={s.token.prob:.2f}, "
            f"keep={s.keep_prob:.2f})<br>offset {offsets[p]}: {row[p]:.3f}"
            for p in range(len(row))
        ]
        for s, row in zip(step.slots, step.shuffle_probs, strict=True)
    ]


def _matrix_panel(matrix, *, col: int, panels: int, offsets, labels, hover, assigned) -> list[dict]:
    """Panel `col` of `panels`: the matrix as a heatmap, the assigned offsets marked on it."""
    axes = dict(xaxis="x" if col == 1 else f"x{col}", yaxis="y" if col == 1 else f"y{col}")
    heatmap = dict(
        type="heatmap",
        z=matrix,
        x=offsets,
        y=labels,
        zmin=0,
        zmax=1,
        colorscale=BLUES,
        showscale=col == panels,
        text=hover,
        hovertemplate="%{text}<extra></extra>",
        colorbar=dict(title=dict(text="prob"), len=0.8),
        **axes,
    )
    marks = dict(
        type="scatter",
        x=[a[0] for a in assigned],
        y=[a[1] for a in assigned],
        mode="markers",
        name="assigned offset",
        showlegend=col == 1,
        hoverinfo="skip",
        marker=dict(symbol="square-open", size=22, color="#D55E00", line=dict(width=3)),
        **axes,
    )
    return [heatmap, marks]


def _matrices_layout(titles: list[str], title: str, labels: list[str]) -> dict:
    """Side-by-side panels, slots (`labels`) top to bottom, offsets along the x axis."""
    layout = side_by_side(len(titles), titles)
    for axis in [k for k in layout if k.startswith("yaxis")]:
        layout[axis]["autorange"] = "reversed"
    for axis in [k for k in layout if k.startswith("xaxis")]:
        layout[axis]["title"] = dict(text="offset after the anchor")
    layout.update(
        title=dict(text=title),
        height=100 + 32 * len(labels),  # one screen at 1440x900 up to K = 6
        legend=dict(orientation="h", y=-0.2),
        margin=dict(l=label_room(labels), r=COLORBAR_ROOM, t=60, b=75),  # b: axis title, legend
    )
    return layout


def shuffle_heatmap(step: StepTrace) -> go.Figure:
    """Slots x offsets: softmax of each slot's shuffle scores, the chosen offsets marked.
    With the sinkhorn strategy the doubly-stochastic matrix is shown beside it."""
    title = f"Step {step.index}: where each slot thinks its token goes"
    if not step.slots:
        return _empty(title, _no_head_drafts(step))
    offsets = [f"+{p}" for p in range(1, len(step.shuffle_probs[0]) + 1)]
    labels = _slot_labels(step)
    hover = _shuffle_hover(step, offsets)
    matrices = [("shuffle scores (softmax over offsets)", step.shuffle_probs)]
    if step.sinkhorn is not None:
        matrices.append(("Sinkhorn (doubly stochastic)", step.sinkhorn))
    assigned = [(offsets[s.offset - 1], labels[s.index]) for s in step.slots if s.offset]
    data = []
    for col, (_, matrix) in enumerate(matrices, start=1):
        data += _matrix_panel(
            matrix,
            col=col,
            panels=len(matrices),
            offsets=offsets,
            labels=labels,
            hover=hover,
            assigned=assigned,
        )
    layout = _matrices_layout([m[0] for m in matrices], title, labels)
    return figure(data, layout)


def draft_heatmap(step: StepTrace) -> go.Figure:
    """Slots x top-k candidates, each cell labelled with its token and probability."""
    title = f"Step {step.index}: each slot's top candidates"
    if not step.slots:
        return _empty(title, _no_head_drafts(step))
    top = len(step.slots[0].candidates)
    labels = _slot_labels(step)
    z = [[c.prob for c in s.candidates] for s in step.slots]
    text = [
        [f"{html_token(c, limit=10)}<br>{c.prob:.2f}" for c in s.candidates] for s in step.slots
    ]
    data = [
        dict(
            type="heatmap",
            z=z,
            x=[f"#{i + 1}" for i in range(top)],
            y=labels,
            zmin=0,
            zmax=1,
            colorscale=GREENS,
            text=text,
            texttemplate="%{text}",
            hovertemplate="%{y}<br>candidate %{x}: %{text}<extra></extra>",
            colorbar=dict(title=dict(text="prob")),
        )
    ]
    return figure(
        data,
        dict(
            title=dict(text=title),
            height=100 + 34 * len(step.slots),
            margin=dict(l=label_room(labels), r=COLORBAR_ROOM, t=60, b=55),  # b: the axis title
            xaxis=dict(title=dict(text="candidate rank"), **AXIS),
            yaxis=dict(autorange="reversed", **AXIS),
        ),
    )


def titled(title: str, sentence: str, *, width: int = 90) -> dict:
    """A figure title with a sentence below it as the subtitle, wrapped (the sentence holds
    no token text, but it is escaped all the same)."""
    lines = textwrap.wrap(sentence, width)
    subtitle = "<br>".join(html.escape(line) for line in lines)
    return dict(
        text=title,
        subtitle=dict(text=subtitle, font=dict(size=12)),
        automargin=True,
        yref="container",
        y=0.98,
        yanchor="top",
    )


def top_margin(title: dict) -> int:
    """Room above the plot for a title, its subtitle lines (titled) and the panels' titles."""
    return 70 + 16 * (title["subtitle"]["text"].count("<br>") + 1)


PATTERNS = {REJECTED: "x", COST_CUT: "/"}  # a second cue beside the colour


def _chain_order(step: StepTrace) -> list:
    """Head slots in the order the chain reads them: by offset, slots without one last."""
    return sorted(step.slots, key=lambda s: (s.offset is None, s.offset or 0, s.index))


def _slot_tick(slot) -> str:
    return f"+{slot.offset}<br>slot {slot.index}" if slot.offset else f"—<br>slot {slot.index}"


def _head_bars(step: StepTrace, axes: dict) -> list[dict]:
    """The head's slots: keep-probability bars coloured by status, and the calibrated chance
    of acceptance (◆) of the drafts in the chain."""
    data = []
    for status in ORDERED_STATUSES:
        slots = [s for s in _chain_order(step) if s.status == status]
        if not slots:
            continue
        marker = dict(color=STATUS_COLORS[status])
        if status in PATTERNS:
            marker["pattern"] = dict(shape=PATTERNS[status], fgcolor="#333", size=6)
        data.append(
            dict(
                type="bar",
                x=[_slot_tick(s) for s in slots],
                y=[s.keep_prob for s in slots],
                name=STATUS_LABELS[status],
                legendgroup="head",
                marker=marker,
                text=[f"{STATUS_SYMBOLS[status]} {html_token(s.token)}" for s in slots],
                textposition="outside",
                customdata=[[s.offset if s.offset else "—"] for s in slots],
                hovertemplate="%{x}: <b>%{text}</b><br>keep prob %{y:.3f}"
                f"<br>offset %{{customdata[0]}}<br>{STATUS_LABELS[status]}<extra></extra>",
                **axes,
            )
        )
    chained = [s for s in _chain_order(step) if s.accept_prob is not None]
    if chained:
        data.append(
            dict(
                type="scatter",
                x=[_slot_tick(s) for s in chained],
                y=[s.accept_prob for s in chained],
                mode="markers",
                name="◆ calibrated chance of acceptance",
                legendgroup="head",
                marker=dict(symbol="diamond", size=13, color="#222", line=dict(color="white")),
                hovertemplate="%{x}: P(accepted | the drafts before it were) = %{y:.3f}"
                "<extra></extra>",
                **axes,
            )
        )
    return data


def _context_bars(step: StepTrace, axes: dict) -> list[dict]:
    """The context's drafts at their offsets: estimated acceptance, outlined in the context's
    colour; filled with it when accepted, else with the status's colour and pattern."""
    context = step.context
    data = []
    for status in (ACCEPTED, REJECTED, COST_CUT):
        drafts = [
            (p, token, prob)
            for p, (token, prob, s) in enumerate(
                zip(context.tokens, context.accept_probs, context.statuses, strict=True), 1
            )
            if s == status
        ]
        if not drafts:
            continue
        fill = CONTEXT_COLOR if status == ACCEPTED else STATUS_COLORS[status]
        marker = dict(color=fill, line=dict(color=CONTEXT_COLOR, width=3))
        if status in PATTERNS:
            marker["pattern"] = dict(shape=PATTERNS[status], fgcolor="#333", size=6)
        words = SHORT_LABELS[status]
        data.append(
            dict(
                type="bar",
                x=[f"+{p}" for p, _, _ in drafts],
                y=[prob for _, _, prob in drafts],
                name=f"{CONTEXT_LABEL}, {words}",
                legendgroup="context",
                marker=marker,
                text=[f"{STATUS_SYMBOLS[status]} {html_token(t)}" for _, t, _ in drafts],
                textposition="outside",
                hovertemplate="context draft %{x}: <b>%{text}</b><br>estimated chance of "
                f"acceptance %{{y:.3f}}<br>{words}<extra></extra>",
                **axes,
            )
        )
    return data


class Panel(NamedTuple):
    """One panel of the filter-and-plan chart: one source's drafts."""

    source: str  # HEAD (the head's slots) or CONTEXT (the context's drafts)
    title: str  # the panel's title
    drafts: int  # how many drafts it shows (its share of the width)


def _filter_panels(step: StepTrace) -> list[Panel]:
    """The head's panel (when it drafted), then the context's (when it drafted)."""
    panels = []
    if step.slots:
        panels.append(Panel(HEAD, "head slots (◆ calibrated acceptance)", len(step.slots)))
    if step.context is not None:
        match = step.context.match_length
        title = f"{CONTEXT_SYMBOL} context (match of {match} token{'s' * (match != 1)})"
        panels.append(Panel(CONTEXT, title, len(step.context.tokens)))
    return panels


def filter_chart(
    step: StepTrace, *, keep_threshold: float | None = None, verified: bool | None = None
) -> go.Figure:
    """The filter and the plan. Head slots in chain order: keep probability (bars, coloured
    by what became of them) against the threshold, and the calibrated chance of acceptance (◆)
    of the drafts in the chain; beside them the context's drafts with their estimated chance.
    The title gives the step's decision in a sentence (`verified`: the trace's setting)."""
    sentence = decision_sentence(step, verified=verified)
    title = titled(f"Step {step.index}: the filter and the plan", sentence)
    if not step.slots and step.context is None:
        return _empty(title["text"], "no drafts in this step")
    panels = _filter_panels(step)
    total = sum(panel.drafts for panel in panels)
    widths = [max(panel.drafts / total, 0.4) for panel in panels]
    titles = [panel.title for panel in panels]
    layout = side_by_side(len(panels), titles, [w / sum(widths) for w in widths])
    data = []
    for column, panel in enumerate(panels):
        suffix = "" if column == 0 else str(column + 1)
        axes = dict(xaxis=f"x{suffix}", yaxis=f"y{suffix}")
        is_head = panel.source == HEAD
        data += _head_bars(step, axes) if is_head else _context_bars(step, axes)
        layout[f"yaxis{suffix}"]["range"] = [0, 1.18]
        if is_head:
            order = [_slot_tick(s) for s in _chain_order(step)]
            layout[f"xaxis{suffix}"].update(
                categoryorder="array", categoryarray=order, tickangle=0, tickfont=dict(size=11)
            )
    layout["yaxis"]["title"] = dict(text="probability")
    layout.update(
        title=title,
        height=420 + top_margin(title),
        margin=dict(l=60, r=10, t=top_margin(title), b=125),  # l: the y axis; b: ticks, legend
        barmode="group",
        legend=dict(orientation="h", y=-0.15, yanchor="top"),
    )
    if keep_threshold and step.slots:  # a threshold of 0 keeps everything: no line to draw
        data.append(  # the line's legend entry
            dict(
                type="scatter",
                x=[None],
                y=[None],
                mode="lines",
                name=f"keep threshold ({keep_threshold:.2f})",
                line=dict(dash="dash", color="#333"),
            )
        )
        layout["shapes"] = [
            dict(
                type="line",
                xref="x domain",
                yref="y",
                x0=0,
                x1=1,
                y0=keep_threshold,
                y1=keep_threshold,
                line=dict(dash="dash", color="#333"),
            )
        ]
    return figure(data, layout)


# --- the whole generation -----------------------------------------------------------------------

MAP_KEYS = (*ORDERED_STATUSES, CONTEXT)  # the status map's colours; CONTEXT: accepted there
MAP_COLORS = {**STATUS_COLORS, CONTEXT: CONTEXT_COLOR}
MAP_LABELS = {**STATUS_LABELS, ACCEPTED: ORIGIN_LABELS[HEAD], CONTEXT: ORIGIN_LABELS[CONTEXT]}


def _status_rows(trace: GenerationTrace, k: int, m: int) -> tuple[list, list, list]:
    """Per step: colour codes, symbols and hover texts for anchor, K slots and m context
    drafts (None where a step has fewer)."""
    codes = {key: i for i, key in enumerate(MAP_KEYS)}
    ends = end_ids(trace)
    z, symbols, hover = [], [], []
    for step in trace.steps:
        row = [codes[ANCHOR]]
        marks = [STATUS_SYMBOLS[ANCHOR]]
        texts = [f"anchor {html_token(step.anchor, eos_ids=ends)}"]
        for slot in step.slots:
            row.append(codes[slot.status])
            marks.append(STATUS_SYMBOLS[slot.status])
            texts.append(f"{html_token(slot.token, eos_ids=ends)}: {STATUS_LABELS[slot.status]}")
        pad = k - len(step.slots)
        row, marks, texts = row + [None] * pad, marks + [""] * pad, texts + [""] * pad
        context = step.context
        drafts = list(zip(context.tokens, context.statuses, strict=True)) if context else []
        for token, status in drafts:
            row.append(codes[CONTEXT if status == ACCEPTED else status])
            marks.append(STATUS_SYMBOLS[status])
            word = SHORT_LABELS[status]
            texts.append(f"context draft {html_token(token, eos_ids=ends)}: {word}")
        pad = m - len(drafts)
        z.append(row + [None] * pad)
        symbols.append(marks + [""] * pad)
        hover.append(texts + [""] * pad)
    return z, symbols, hover


def _status_map(trace: GenerationTrace) -> list[dict]:
    """Steps x (anchor, head slots, context drafts): what became of every draft."""
    k = max((len(s.slots) for s in trace.steps), default=0)
    m = max((len(s.context.tokens) for s in trace.steps if s.context), default=0)
    z, symbols, hover = _status_rows(trace, k, m)
    n = len(MAP_KEYS)
    scale = []
    for i, key in enumerate(MAP_KEYS):  # a discrete colour scale, one band per key
        scale += [[i / n, MAP_COLORS[key]], [(i + 1) / n, MAP_COLORS[key]]]
    columns = ["anchor", *(f"slot {i}" for i in range(k))]
    columns += [f"{CONTEXT_SYMBOL}+{p}" for p in range(1, m + 1)]
    data = [
        dict(
            type="heatmap",
            z=z,
            x=columns,
            y=[f"step {s.index}" for s in trace.steps],
            zmin=-0.5,
            zmax=n - 0.5,
            colorscale=scale,
            showscale=False,
            text=symbols,
            texttemplate="%{text}",
            textfont=dict(size=10, color="#222"),
            customdata=hover,
            hovertemplate="%{y}, %{x}: %{customdata}<extra></extra>",
            xgap=1,
            ygap=1,
            xaxis="x",
            yaxis="y",
        )
    ]
    present = {code for row in z for code in row if code is not None}
    for i, key in enumerate(MAP_KEYS):  # legend entries for the colours this map uses
        if i in present:
            symbol = CONTEXT_SYMBOL if key == CONTEXT else STATUS_SYMBOLS[key]
            data.append(
                dict(
                    type="scatter",
                    x=[None],
                    y=[None],
                    mode="markers",
                    name=f"{symbol} {MAP_LABELS[key]}",
                    xaxis="x",
                    yaxis="y",
                    marker=dict(size=11, symbol="square", color=MAP_COLORS[key]),
                )
            )
    return data


def _tokens_per_step(trace: GenerationTrace) -> list[dict]:
    """Per step, the tokens it wrote stacked by origin (anchor, head, context, ...)."""
    counts = [Counter(token_origins(step)) for step in trace.steps]
    steps = [f"step {s.index}" for s in trace.steps]
    data = []
    for origin in ORIGINS:
        values = [c[origin] for c in counts]
        if not any(values):
            continue
        data.append(
            dict(
                type="bar",
                orientation="h",
                x=values,
                y=steps,
                name=ORIGIN_LABELS[origin],
                showlegend=origin in (BOTH, CORPUS),  # the others: the map's colours and names
                marker=dict(color=ORIGIN_COLORS[origin]),
                text=[f"{ORIGIN_SYMBOLS[origin]}{v}" if v else "" for v in values],
                textposition="inside",
                insidetextanchor="middle",
                hovertemplate=f"%{{y}}: %{{x}} × {ORIGIN_LABELS[origin]}<extra></extra>",
                xaxis="x2",
                yaxis="y2",
            )
        )
    return data


def _token_curve(trace: GenerationTrace) -> list[dict]:
    passes = [p - 1 for p in cumulative_passes(trace.steps)]  # after the prompt's prefill
    tokens = [0]
    for step in trace.steps:
        tokens.append(tokens[-1] + step.num_emitted)
    return [
        dict(
            type="scatter",
            x=passes,
            y=tokens,
            mode="lines+markers",
            name="ShuffleLM",
            line=dict(color=STATUS_COLORS["accepted"], width=3),
            xaxis="x3",
            yaxis="y3",
        ),
        dict(
            type="scatter",
            x=[0, passes[-1]],
            y=[0, passes[-1]],
            mode="lines",
            name="ordinary decoding (1 token per pass)",
            xaxis="x3",
            yaxis="y3",
            line=dict(color="#555", dash="dash"),
        ),
    ]


def accepted_summary(trace: GenerationTrace) -> str:
    """'drafts accepted: 12 from the head, 5 from the context' (empty when none were)."""
    totals = Counter()
    for step in trace.steps:
        totals += accepted_by_origin(step)
    names = {
        HEAD: "from the head",
        CONTEXT: "from the context",
        BOTH: "proposed by both",
        CORPUS: "from the corpus",
        "emitted": "emitted unchecked",
    }
    parts = [f"{totals[o]} {name}" for o, name in names.items() if totals[o]]
    return f"drafts accepted: {', '.join(parts)}" if parts else ""


def overview(trace: GenerationTrace) -> go.Figure:
    """Left: steps x (slots, context drafts), what became of every draft. Middle: the tokens
    each step wrote, by origin. Right: tokens vs backbone passes."""
    data = _status_map(trace) + _tokens_per_step(trace) + _token_curve(trace)
    layout = side_by_side(
        3,
        ["what became of every draft", "tokens per step, by origin", "tokens vs backbone passes"],
        [0.47, 0.18, 0.35],
    )
    layout["yaxis"]["autorange"] = "reversed"
    layout["yaxis2"].update(autorange="reversed", showticklabels=False)
    layout["xaxis2"]["title"] = dict(text="tokens")
    layout["xaxis3"]["title"] = dict(text="backbone passes after the prompt's prefill")
    layout["yaxis3"]["title"] = dict(text="tokens generated")
    run = run_numbers(trace)
    tokens, passes = run["new_tokens"], run["backbone_passes"]
    summary = accepted_summary(trace)
    layout.update(
        title=dict(
            text=f"{tokens} tokens in {passes} backbone passes after the prompt's prefill "
            f"({per_pass_text(tokens, passes)} tokens per pass)"
            + (f"<br><sup>{summary}</sup>" if summary else "")
        ),
        barmode="stack",
        height=max(400, 150 + 18 * len(trace.steps)),
        margin=dict(l=10, r=10, t=80, b=10),
        legend=dict(orientation="h", y=-0.12),
    )
    return figure(data, layout)


def _cost_lines(ratios: list[float]) -> list[dict]:
    """c(n) against the diagonal of n separate one-token passes."""
    sizes = list(range(1, len(ratios) + 1))
    return [
        dict(
            type="scatter",
            x=sizes,
            y=sizes,
            mode="lines",
            name="n separate one-token passes",
            line=dict(color="#777", dash="dash"),
        ),
        dict(
            type="scatter",
            x=sizes,
            y=ratios,
            mode="lines+markers",
            name="c(n): one pass over n tokens",
            line=dict(color=STATUS_COLORS[ANCHOR], width=3),
            hovertemplate="a pass over %{x} tokens costs %{y:.2f} one-token passes<extra></extra>",
        ),
    ]


def _passes_made(trace: GenerationTrace, ratios: list[float]) -> list[dict]:
    """The sizes of the passes this run made, on the curve, marked by how many (none: [])."""
    used = Counter(len(s.forwarded_ids) for s in trace.steps if s.forwarded_ids)
    used_sizes = sorted(n for n in used if n <= len(ratios))
    if not used_sizes:
        return []
    marks = dict(
        type="scatter",
        x=used_sizes,
        y=[ratios[n - 1] for n in used_sizes],
        mode="markers",
        name="passes this run made (size: how many)",
        marker=dict(
            symbol="circle-open",
            color="#222",
            line=dict(width=3),
            size=[10 + 4 * min(used[n], 10) for n in used_sizes],
        ),
        customdata=[used[n] for n in used_sizes],
        hovertemplate="%{customdata} passes over %{x} tokens<extra></extra>",
    )
    return [marks]


def cost_curve_chart(trace: GenerationTrace) -> go.Figure:
    """The machine's cost curve the run planned with: c(n), a pass over n tokens in one-token
    passes, beside n separate passes; the sizes of the passes this run made are marked."""
    title = "This machine: a pass over n tokens costs c(n) one-token passes"
    curve = trace.cost_curve or {}
    ratios = [float(r) for r in curve.get("ratios") or []]
    if not ratios:
        return _empty(
            title,
            "this trace has no cost curve (made before ShuffleLM planned with one, "
            "in pure parallel mode, or with drafting off)",
        )
    top = max(max(ratios) * 1.3, 2.5)
    heading = titled(title, cost_sentence(curve))
    layout = dict(
        title=heading,
        height=400,
        margin=dict(l=10, r=10, t=top_margin(heading), b=10),
        xaxis=dict(title=dict(text="tokens in the pass (anchor + drafts)"), dtick=1, **AXIS),
        yaxis=dict(title=dict(text="cost, in one-token passes"), range=[0, top], **AXIS),
        legend=dict(orientation="h", y=-0.25),
    )
    return figure(_cost_lines(ratios) + _passes_made(trace, ratios), layout)


def token_spans(trace: GenerationTrace, *, by: str = "origin") -> list[tuple[str, str]]:
    """The output as (text, label) spans for a highlighted-text component.

    by="origin": where each token came from (ORIGIN_LABELS: "anchor", "accepted draft (head)",
    "accepted draft (context)", ...); by="step": "step N". Texts are raw (the component
    escapes them). The end of the answer is its own span, ("■ end of answer", END_LABEL),
    never the raw special token; another special token reads "◇ name"."""
    if by not in ("origin", "step"):
        raise ValueError(f"by must be 'origin' or 'step'; got {by!r}")
    spans: list[tuple[str, str]] = []
    for piece in answer_pieces(trace):
        if piece.origin == END:
            spans.append((END_LABEL, END_LABEL))
            continue
        label = f"step {piece.step}" if by == "step" else ORIGIN_LABELS[piece.origin]
        if spans and spans[-1][1] == label:
            spans[-1] = (spans[-1][0] + piece.text, label)
        else:
            spans.append((piece.text, label))
    return spans


# --- the tree of drafts a step checked -----------------------------------------------------------

FIRST_CHOICE, ALTERNATIVE = "circle", "diamond"  # marker symbols: a source's 1st choice, others
PATH_INK = "#222222"  # the accepted path's edges and its nodes' outlines
EDGE_GREY = "#BBBBBB"
FADED_TEXT = "#9A9A9A"
DIM = 0.35  # opacity of the nodes off the accepted path


def _tree_positions(tree: ForwardedTree) -> dict[int, tuple[float, float]]:
    """Node -> (depth, row): leaves on consecutive rows in depth-first order (first choices
    first), each parent midway between its first and its last child."""
    positions: dict[int, tuple[float, float]] = {}
    leaves = 0

    def place(node: Node) -> float:
        nonlocal leaves
        rows = [place(child) for child in tree.children(node.index)]
        if rows:
            row = (rows[0] + rows[-1]) / 2
        else:
            row, leaves = float(leaves), leaves + 1
        positions[node.index] = (float(node.depth), row)
        return row

    place(tree.nodes[0])
    return positions


def _tree_edges(tree: ForwardedTree, positions: dict, *, pure: bool) -> list[dict]:
    """Parent -> child lines: thin and grey, thick and dark along the accepted path."""
    lines: dict[bool, tuple[list, list]] = {False: ([], []), True: ([], [])}
    for node in tree.nodes[1:]:
        xs, ys = lines[node.accepted]
        (x0, y0), (x1, y1) = positions[node.parent], positions[node.index]
        xs += [x0, x1, None]
        ys += [y0, y1, None]
    path = "the emitted path (unchecked)" if pure else "━ the accepted path"
    return [
        dict(
            type="scatter",
            x=xs,
            y=ys,
            mode="lines",
            name=path if accepted else "a checked branch",
            showlegend=accepted,
            hoverinfo="skip",
            line=dict(color=PATH_INK if accepted else EDGE_GREY, width=5 if accepted else 1.5),
        )
        for accepted, (xs, ys) in lines.items()
        if xs
    ]


def _node_label(node: Node) -> str:
    """The token on the chart (escaped); an alternative says which choice it was ('2nd')."""
    text = html_token(node.token, limit=10)
    return f"{text} <i>{ordinal(node.rank + 1)}</i>" if node.rank else text


def _node_hover(node: Node, *, pure: bool) -> str:
    """Source, rank, path chance and verdict of a node (escaped)."""
    token = html_token(node.token, limit=24)
    if node.index == 0:
        return f"anchor <b>{token}</b>: the backbone's own token, where every branch starts"
    source = html.escape(source_style(node.source).label)
    choice = "its first choice" if not node.rank else f"its {ordinal(node.rank + 1)} choice"
    if node.chance is None:
        chance = "path chance not recorded (an older trace)"
    else:
        chance = f"path chance {node.chance:.3f} (the chance it is accepted)"
    if pure:
        verdict = "emitted unchecked" if node.accepted else "not emitted"
    else:
        verdict = "✓ accepted" if node.accepted else "✗ rejected"
    return (
        f"node {node.index}, +{node.depth}: <b>{token}</b><br>from {source}, {choice}"
        f"<br>{chance}<br>{verdict}"
    )


def _tree_nodes(tree: ForwardedTree, positions: dict, *, pure: bool) -> list[dict]:
    """One trace per source, in its colour: accepted nodes large, outlined and opaque, the
    others faded; a source's 2nd or 3rd choice a diamond, labelled so."""
    data = []
    for source in dict.fromkeys(node.source for node in tree.nodes):
        nodes = [node for node in tree.nodes if node.source == source]
        style = source_style(source)
        data.append(
            dict(
                type="scatter",
                mode="markers+text",
                x=[positions[n.index][0] for n in nodes],
                y=[positions[n.index][1] for n in nodes],
                name=f"{style.symbol} {html.escape(style.label)}",
                text=[_node_label(n) for n in nodes],
                textposition="top center",
                textfont=dict(color=[INK_TEXT if n.accepted else FADED_TEXT for n in nodes]),
                customdata=[[n.index, _node_hover(n, pure=pure)] for n in nodes],
                hovertemplate="%{customdata[1]}<extra></extra>",
                marker=dict(
                    color=style.color,
                    symbol=[ALTERNATIVE if n.rank else FIRST_CHOICE for n in nodes],
                    size=[20 if n.accepted else 14 for n in nodes],
                    opacity=[1.0 if n.accepted else DIM for n in nodes],
                    line=dict(color=PATH_INK, width=[3 if n.accepted else 0.5 for n in nodes]),
                ),
            )
        )
    return data


def _tree_key(tree: ForwardedTree, *, pure: bool) -> list[dict]:
    """Legend entries for the marks that are not a source: alternatives, faded nodes."""
    keys = []
    if tree.alternatives():
        keys.append(("◆ a source's 2nd or 3rd choice (an alternative)", ALTERNATIVE, 1.0))
    if any(not node.accepted for node in tree.nodes):
        keys.append(("faded: not emitted" if pure else "faded: rejected", FIRST_CHOICE, DIM))
    return [
        dict(
            type="scatter",
            x=[None],
            y=[None],
            mode="markers",
            name=name,
            marker=dict(symbol=symbol, size=12, color="#777777", opacity=opacity),
        )
        for name, symbol, opacity in keys
    ]


def _tree_layout(positions: dict, title: dict) -> dict:
    depth = round(max(x for x, _ in positions.values()))
    rows = max(y for _, y in positions.values()) + 1
    ticks = ["anchor", *(f"+{d}" for d in range(1, depth + 1))]
    height = max(360, top_margin(title) + 150 + 46 * rows)
    plot = height - top_margin(title) - LEGEND_ROOM  # the plot area's height in pixels
    return dict(
        title=title,
        height=height,
        margin=dict(l=10, r=10, t=top_margin(title), b=LEGEND_ROOM),
        xaxis=dict(
            title=dict(text="tokens after the anchor"),
            tickmode="array",
            tickvals=list(range(depth + 1)),
            ticktext=ticks,
            range=[-0.5, depth + 0.5],
            **AXIS,
        ),
        yaxis=dict(visible=False, range=[rows - 0.4, -0.9]),  # row 0 on top, room for labels
        legend=dict(orientation="h", y=-56 / plot, yanchor="top"),  # below the axis title
        showlegend=True,
    )


LEGEND_ROOM = 90  # pixels under the tree's plot area: tick labels, axis title, legend


def draft_tree(step: StepTrace, *, verified: bool | None = None) -> go.Figure:
    """The block the step forwarded, as a tree: the anchor at the left, each draft at its depth
    after its parent, coloured by its source; the accepted path bold, the rest faded; a
    source's 2nd or 3rd choice a diamond. Hover: source, rank and path chance. Traces before
    version 3 draw what they recorded (a chain, or two chains side by side)."""
    title = f"Step {step.index}: the tree of drafts it checked"
    tree = forwarded_tree(step)
    if not tree.drafts:
        return _empty(title, "no drafts were checked in this step: an ordinary step (1 token)")
    pure = is_pure(step) if verified is None else not verified
    heading = titled(title, tree_sentence(step, verified=verified))
    positions = _tree_positions(tree)
    data = _tree_edges(tree, positions, pure=pure)
    data += _tree_nodes(tree, positions, pure=pure) + _tree_key(tree, pure=pure)
    return figure(data, _tree_layout(positions, heading))
