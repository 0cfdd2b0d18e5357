"""Plotly figures of a trace: shuffle heatmap, draft heatmap, filter chart, overview."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from shuffle_model.trace import GenerationTrace, StepTrace

from .style import (
    ANCHOR,
    ORDERED_STATUSES,
    STATUS_COLORS,
    STATUS_LABELS,
    html_text,
)

LAYOUT = dict(template="plotly_white", margin=dict(l=10, r=10, t=50, b=10), font=dict(size=13))


def _slot_labels(step: StepTrace) -> list[str]:
    return [f"slot {s.index}: {html_text(s.token.text)}" for s in step.slots]


def _empty(title: str, message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font=dict(size=15))
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, **LAYOUT)
    return fig


def shuffle_heatmap(step: StepTrace) -> go.Figure:
    """Slots x offsets: softmax of each slot's shuffle scores, the chosen offsets marked.
    With the sinkhorn strategy the doubly-stochastic matrix is shown beside it."""
    title = f"Step {step.index}: where each slot thinks its token goes"
    if not step.slots:
        return _empty(title, "no drafts in this step (the last token, or drafting switched off)")
    k = len(step.slots)
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
    fig = make_subplots(
        rows=1, cols=len(matrices), subplot_titles=[m[0] for m in matrices], horizontal_spacing=0.08
    )
    for col, (_, matrix) in enumerate(matrices, start=1):
        fig.add_trace(
            go.Heatmap(
                z=matrix,
                x=offsets,
                y=labels,
                zmin=0,
                zmax=1,
                colorscale="Blues",
                showscale=col == len(matrices),
                text=hover,
                hovertemplate="%{text}<extra></extra>",
                colorbar=dict(title="prob", len=0.8),
            ),
            row=1,
            col=col,
        )
        assigned = [(offsets[s.offset - 1], labels[s.index]) for s in step.slots if s.offset]
        fig.add_trace(
            go.Scatter(
                x=[a[0] for a in assigned],
                y=[a[1] for a in assigned],
                mode="markers",
                marker=dict(symbol="square-open", size=26, color="#D55E00", line=dict(width=3)),
                name="assigned offset",
                showlegend=col == 1,
                hoverinfo="skip",
            ),
            row=1,
            col=col,
        )
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    fig.update_xaxes(title_text="offset after the anchor")
    fig.update_layout(
        title=title, height=120 + 45 * k, legend=dict(orientation="h", y=-0.15), **LAYOUT
    )
    return fig


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
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"#{i + 1}" for i in range(top)],
            y=_slot_labels(step),
            zmin=0,
            zmax=1,
            colorscale="Greens",
            text=text,
            texttemplate="%{text}",
            hovertemplate="%{y}<br>candidate %{x}: %{text}<extra></extra>",
            colorbar=dict(title="prob"),
        )
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title, height=120 + 45 * len(step.slots), **LAYOUT)
    return fig


def filter_chart(step: StepTrace, *, keep_threshold: float | None = None) -> go.Figure:
    """Each slot's keep probability against the threshold, coloured by what became of it."""
    title = f"Step {step.index}: the filter"
    if not step.slots:
        return _empty(title, "no drafts in this step")
    fig = go.Figure()
    for status in ORDERED_STATUSES:
        slots = [s for s in step.slots if s.status == status]
        if not slots:
            continue
        fig.add_trace(
            go.Bar(
                x=[f"slot {s.index}" for s in slots],
                y=[s.keep_prob for s in slots],
                name=STATUS_LABELS[status],
                marker_color=STATUS_COLORS[status],
                text=[html_text(s.token.text) for s in slots],
                textposition="outside",
                customdata=[[s.offset if s.offset else "—"] for s in slots],
                hovertemplate="%{x}: <b>%{text}</b><br>keep prob %{y:.3f}"
                f"<br>offset %{{customdata[0]}}<br>{STATUS_LABELS[status]}<extra></extra>",
            )
        )
    if keep_threshold is not None:
        fig.add_hline(
            y=keep_threshold, line_dash="dash", line_color="#333", annotation_text="keep threshold"
        )
    fig.update_layout(
        title=title,
        yaxis=dict(range=[0, 1.15], title="keep probability"),
        xaxis=dict(categoryorder="array", categoryarray=[f"slot {s.index}" for s in step.slots]),
        legend=dict(orientation="h", y=-0.2),
        height=380,
        **LAYOUT,
    )
    return fig


def overview(trace: GenerationTrace) -> go.Figure:
    """Left: steps x slots, what became of every draft. Right: tokens vs backbone passes."""
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.55, 0.45],
        subplot_titles=["what became of every draft", "tokens vs backbone passes"],
        horizontal_spacing=0.1,
    )
    codes = {status: i for i, status in enumerate(ORDERED_STATUSES)}
    k = max((len(s.slots) for s in trace.steps), default=0)
    z, text = [], []
    for step in trace.steps:
        row = [codes[s.status] for s in step.slots] + [None] * (k - len(step.slots))
        z.append([codes[ANCHOR], *row])
        labels = [f"anchor {html_text(step.anchor.text)}"]
        labels += [f"{html_text(s.token.text)}: {STATUS_LABELS[s.status]}" for s in step.slots]
        text.append(labels + [""] * (k - len(step.slots)))
    n = len(ORDERED_STATUSES)
    scale = []
    for i, status in enumerate(ORDERED_STATUSES):  # a discrete colour scale, one band per status
        scale += [[i / n, STATUS_COLORS[status]], [(i + 1) / n, STATUS_COLORS[status]]]
    fig.add_trace(
        go.Heatmap(
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
        ),
        row=1,
        col=1,
    )
    for status in ORDERED_STATUSES:  # legend entries for the discrete colours
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=STATUS_LABELS[status],
                marker=dict(size=11, symbol="square", color=STATUS_COLORS[status]),
            ),
            row=1,
            col=1,
        )
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    passes, tokens = [1], [0]  # the prefill pass comes first
    for step in trace.steps:
        passes.append(passes[-1] + (1 if step.forwarded_ids else 0))
        tokens.append(tokens[-1] + step.num_emitted)
    fig.add_trace(
        go.Scatter(
            x=passes,
            y=tokens,
            mode="lines+markers",
            name="ShuffleLM",
            line=dict(color=STATUS_COLORS["accepted"], width=3),
        ),
        row=1,
        col=2,
    )
    fig.add_trace(
        go.Scatter(
            x=[0, passes[-1]],
            y=[0, passes[-1]],
            mode="lines",
            name="ordinary decoding (1 token per pass)",
            line=dict(color="#555", dash="dash"),
        ),
        row=1,
        col=2,
    )
    fig.update_xaxes(title_text="backbone passes", row=1, col=2)
    fig.update_yaxes(title_text="tokens generated", row=1, col=2)
    totals = trace.totals
    fig.update_layout(
        title=f"{totals.new_tokens} tokens in {totals.backbone_forwards} backbone passes "
        f"({totals.compression_ratio:.2f} tokens per pass)",
        height=max(380, 130 + 18 * len(trace.steps)),
        legend=dict(orientation="h", y=-0.12),
        **LAYOUT,
    )
    return fig


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
