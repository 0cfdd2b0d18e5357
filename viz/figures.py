"""Plotly figures of a trace: shuffle heatmap, draft heatmap, filter chart, overview.

Figures are built from plain dicts with Plotly's validation off: validating every attribute
made each figure cost 0.2-0.5 s, too slow to redraw at every streamed step.
"""

from __future__ import annotations

import plotly.graph_objects as go

from shuffle_model.trace import GenerationTrace, StepTrace

from .style import ANCHOR, ORDERED_STATUSES, STATUS_COLORS, STATUS_LABELS, html_text

GRID = "#e5e5e5"
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


def figure(data: list[dict], layout: dict) -> go.Figure:
    return go.Figure(data=data, layout={**BASE_LAYOUT, **layout}, _validate=False)


def side_by_side(count: int, titles: list[str], widths: list[float] | None = None) -> dict:
    """Layout axes for `count` subplots in a row (what make_subplots would make)."""
    widths = widths or [1 / count] * count
    gap = 0.08
    usable = 1 - gap * (count - 1)
    layout, annotations, left = {}, [], 0.0
    for i in range(count):
        right = left + usable * widths[i]
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
    return [f"slot {s.index}: {html_text(s.token.text)}" for s in step.slots]


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


def shuffle_heatmap(step: StepTrace) -> go.Figure:
    """Slots x offsets: softmax of each slot's shuffle scores, the chosen offsets marked.
    With the sinkhorn strategy the doubly-stochastic matrix is shown beside it."""
    title = f"Step {step.index}: where each slot thinks its token goes"
    if not step.slots:
        return _empty(title, "no drafts in this step (the last token, or drafting switched off)")
    offsets = [f"+{p}" for p in range(1, len(step.shuffle_probs[0]) + 1)]
    labels = _slot_labels(step)
    hover = [
        [
            f"slot {s.index} drafted <b>{html_text(s.token.text)}</b> (p={s.token.prob:.2f}, "
            f"keep={s.keep_prob:.2f})<br>offset {offsets[p]}: {row[p]:.3f}"
            for p in range(len(row))
        ]
        for s, row in zip(step.slots, step.shuffle_probs, strict=True)
    ]
    matrices = [("shuffle scores (softmax over offsets)", step.shuffle_probs)]
    if step.sinkhorn is not None:
        matrices.append(("Sinkhorn (doubly stochastic)", step.sinkhorn))
    assigned = [(offsets[s.offset - 1], labels[s.index]) for s in step.slots if s.offset]
    data = []
    for col, (_, matrix) in enumerate(matrices, start=1):
        axes = dict(xaxis="x" if col == 1 else f"x{col}", yaxis="y" if col == 1 else f"y{col}")
        data.append(
            dict(
                type="heatmap",
                z=matrix,
                x=offsets,
                y=labels,
                zmin=0,
                zmax=1,
                colorscale=BLUES,
                showscale=col == len(matrices),
                text=hover,
                hovertemplate="%{text}<extra></extra>",
                colorbar=dict(title=dict(text="prob"), len=0.8),
                **axes,
            )
        )
        data.append(
            dict(
                type="scatter",
                x=[a[0] for a in assigned],
                y=[a[1] for a in assigned],
                mode="markers",
                name="assigned offset",
                showlegend=col == 1,
                hoverinfo="skip",
                marker=dict(symbol="square-open", size=26, color="#D55E00", line=dict(width=3)),
                **axes,
            )
        )
    layout = side_by_side(len(matrices), [m[0] for m in matrices])
    for axis in [k for k in layout if k.startswith("yaxis")]:
        layout[axis]["autorange"] = "reversed"
    for axis in [k for k in layout if k.startswith("xaxis")]:
        layout[axis]["title"] = dict(text="offset after the anchor")
    layout.update(
        title=dict(text=title),
        height=150 + 45 * len(step.slots),
        legend=dict(orientation="h", y=-0.2),
    )
    return figure(data, layout)


def draft_heatmap(step: StepTrace) -> go.Figure:
    """Slots x top-k candidates, each cell labelled with its token and probability."""
    title = f"Step {step.index}: each slot's top candidates"
    if not step.slots:
        return _empty(title, "no drafts in this step")
    top = len(step.slots[0].candidates)
    z = [[c.prob for c in s.candidates] for s in step.slots]
    text = [
        [f"{html_text(c.text, limit=10)}<br>{c.prob:.2f}" for c in s.candidates] for s in step.slots
    ]
    data = [
        dict(
            type="heatmap",
            z=z,
            x=[f"#{i + 1}" for i in range(top)],
            y=_slot_labels(step),
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
            height=130 + 45 * len(step.slots),
            xaxis=dict(title=dict(text="candidate rank"), **AXIS),
            yaxis=dict(autorange="reversed", **AXIS),
        ),
    )


def filter_chart(step: StepTrace, *, keep_threshold: float | None = None) -> go.Figure:
    """Each slot's keep probability against the threshold, coloured by what became of it."""
    title = f"Step {step.index}: the filter"
    if not step.slots:
        return _empty(title, "no drafts in this step")
    data = []
    for status in ORDERED_STATUSES:
        slots = [s for s in step.slots if s.status == status]
        if slots:
            data.append(
                dict(
                    type="bar",
                    x=[f"slot {s.index}" for s in slots],
                    y=[s.keep_prob for s in slots],
                    name=STATUS_LABELS[status],
                    marker=dict(color=STATUS_COLORS[status]),
                    text=[html_text(s.token.text) for s in slots],
                    textposition="outside",
                    customdata=[[s.offset if s.offset else "—"] for s in slots],
                    hovertemplate="%{x}: <b>%{text}</b><br>keep prob %{y:.3f}"
                    f"<br>offset %{{customdata[0]}}<br>{STATUS_LABELS[status]}<extra></extra>",
                )
            )
    layout = dict(
        title=dict(text=title),
        height=380,
        legend=dict(orientation="h", y=-0.2),
        yaxis=dict(range=[0, 1.15], title=dict(text="keep probability"), **AXIS),
        xaxis=dict(
            categoryorder="array", categoryarray=[f"slot {s.index}" for s in step.slots], **AXIS
        ),
    )
    if keep_threshold is not None:
        layout["shapes"] = [
            dict(
                type="line",
                xref="paper",
                x0=0,
                x1=1,
                y0=keep_threshold,
                y1=keep_threshold,
                line=dict(dash="dash", color="#333"),
            )
        ]
        layout["annotations"] = [
            dict(
                text="keep threshold",
                xref="paper",
                x=1,
                y=keep_threshold,
                xanchor="right",
                yanchor="bottom",
                showarrow=False,
            )
        ]
    return figure(data, layout)


def overview(trace: GenerationTrace) -> go.Figure:
    """Left: steps x slots, what became of every draft. Right: tokens vs backbone passes."""
    codes = {status: i for i, status in enumerate(ORDERED_STATUSES)}
    k = max((len(s.slots) for s in trace.steps), default=0)
    z, text = [], []
    for step in trace.steps:
        z.append(
            [codes[ANCHOR]] + [codes[s.status] for s in step.slots] + [None] * (k - len(step.slots))
        )
        labels = [f"anchor {html_text(step.anchor.text)}"]
        labels += [f"{html_text(s.token.text)}: {STATUS_LABELS[s.status]}" for s in step.slots]
        text.append(labels + [""] * (k - len(step.slots)))
    n = len(ORDERED_STATUSES)
    scale = []
    for i, status in enumerate(ORDERED_STATUSES):  # a discrete colour scale, one band per status
        scale += [[i / n, STATUS_COLORS[status]], [(i + 1) / n, STATUS_COLORS[status]]]
    data = [
        dict(
            type="heatmap",
            z=z,
            x=["anchor"] + [f"slot {i}" for i in range(k)],
            y=[f"step {s.index}" for s in trace.steps],
            zmin=-0.5,
            zmax=n - 0.5,
            colorscale=scale,
            showscale=False,
            text=text,
            hovertemplate="%{y}, %{x}: %{text}<extra></extra>",
            xgap=1,
            ygap=1,
            xaxis="x",
            yaxis="y",
        )
    ]
    for status in ORDERED_STATUSES:  # legend entries for the discrete colours
        data.append(
            dict(
                type="scatter",
                x=[None],
                y=[None],
                mode="markers",
                name=STATUS_LABELS[status],
                xaxis="x",
                yaxis="y",
                marker=dict(size=11, symbol="square", color=STATUS_COLORS[status]),
            )
        )
    passes, tokens = [1], [0]  # the prefill pass comes first
    for step in trace.steps:
        passes.append(passes[-1] + (1 if step.forwarded_ids else 0))
        tokens.append(tokens[-1] + step.num_emitted)
    data.append(
        dict(
            type="scatter",
            x=passes,
            y=tokens,
            mode="lines+markers",
            name="ShuffleLM",
            line=dict(color=STATUS_COLORS["accepted"], width=3),
            xaxis="x2",
            yaxis="y2",
        )
    )
    data.append(
        dict(
            type="scatter",
            x=[0, passes[-1]],
            y=[0, passes[-1]],
            mode="lines",
            name="ordinary decoding (1 token per pass)",
            xaxis="x2",
            yaxis="y2",
            line=dict(color="#555", dash="dash"),
        )
    )
    layout = side_by_side(
        2, ["what became of every draft", "tokens vs backbone passes"], [0.55, 0.45]
    )
    layout["yaxis"]["autorange"] = "reversed"
    layout["xaxis2"]["title"] = dict(text="backbone passes")
    layout["yaxis2"]["title"] = dict(text="tokens generated")
    totals = trace.totals
    layout.update(
        title=dict(
            text=f"{totals.new_tokens} tokens in {totals.backbone_forwards} backbone "
            f"passes ({totals.compression_ratio:.2f} tokens per pass)"
        ),
        height=max(380, 130 + 18 * len(trace.steps)),
        legend=dict(orientation="h", y=-0.12),
    )
    return figure(data, layout)


def token_spans(trace: GenerationTrace, *, by: str = "origin") -> list[tuple[str, str]]:
    """The output as (text, label) spans for a highlighted-text component.

    by="origin": "anchor" (the backbone's own token), "accepted draft" or "emitted draft";
    by="step": "step N". Texts are raw (the component escapes them)."""
    if by not in ("origin", "step"):
        raise ValueError(f"by must be 'origin' or 'step'; got {by!r}")
    spans: list[tuple[str, str]] = []
    for step in trace.steps:
        drafted = {"accepted", "emitted"} & {s.status for s in step.slots}
        draft_label = "emitted draft" if "emitted" in drafted else "accepted draft"
        for position, token in enumerate(step.emitted):
            if by == "step":
                label = f"step {step.index}"
            else:
                label = "anchor" if position == 0 else draft_label
            text = token.text if token.text is not None else f"<{token.id}>"
            if spans and spans[-1][1] == label:
                spans[-1] = (spans[-1][0] + text, label)
            else:
                spans.append((text, label))
    return spans
