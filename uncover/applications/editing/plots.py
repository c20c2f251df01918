"""Plotly figures for causal traces and edit scores (built from plain lists, so cached data can be drawn)."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

_TITLES = {"resid": "single restored residual state", "mlp": "MLP outputs restored (window)",
           "attn": "attention outputs restored (window)"}
_COLORS = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}


def trace_heatmaps(effects: dict[str, Sequence[Sequence[float]]], row_labels: Sequence[str], title: str,
                   highlight_rows: Sequence[int] = (), layers: Sequence[int] | None = None) -> go.Figure:
    """One heatmap per kind: rows (tokens or token categories) x layers, colour = indirect effect.

    effects[kind]: [n_rows][n_layers] (probability change, None/NaN where not traced); layers: draw
    only these columns; highlighted rows get a '*' label.
    """
    kinds = list(effects)
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[_TITLES.get(k, k) for k in kinds],
                        horizontal_spacing=0.1)
    labels = [f"{i}: {t!r}" + (" *" if i in highlight_rows else "") for i, t in enumerate(row_labels)]
    for c, kind in enumerate(kinds, 1):
        x = list(range(len(effects[kind][0]))) if layers is None else list(layers)
        z = [[row[l] for l in x] for row in effects[kind]]
        fig.add_trace(go.Heatmap(
            z=z, x=x, y=labels, colorscale=_COLORS.get(kind, "Viridis"),
            colorbar=dict(x=fig.layout[f"xaxis{c if c > 1 else ''}"].domain[1] + 0.005, xanchor="left", len=0.9,
                          thickness=10),
            hovertemplate="layer %{x}<br>%{y}<br>effect %{z:.3f}<extra>" + kind + "</extra>",
        ), row=1, col=c)
        fig.update_xaxes(title_text="layer", row=1, col=c)
        fig.update_yaxes(autorange="reversed", showticklabels=(c == 1), row=1, col=c)
    # no fixed width: it left one panel (the default run traces MLPs only) in the left half of the page
    fig.update_layout(title=title, height=160 + 28 * len(row_labels), margin=dict(l=10, r=50, t=70, b=40))
    return fig


def score_bars(before: dict, after: dict, title: str) -> go.Figure:
    """Grouped bars of CounterFact-style scores (percent) before and after an edit."""
    keys = [("rewrite", "efficacy"), ("paraphrase", "paraphrase"), ("neighbourhood", "neighbourhood"),
            ("score", "harmonic mean"), ("rewrite_acc", "efficacy acc. (token)"),
            ("paraphrase_acc", "paraphrase acc. (token)"), ("neighbourhood_acc", "neighbourhood acc. (token)")]
    fig = go.Figure()
    for name, s in (("before", before), ("after", after)):
        fig.add_trace(go.Bar(name=name, x=[label for _, label in keys], y=[s[k] for k, _ in keys]))
    fig.update_layout(title=title, barmode="group", yaxis_title="percent", yaxis_range=[0, 105], height=380)
    return fig
