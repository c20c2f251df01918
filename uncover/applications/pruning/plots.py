"""Plotly figures for pruning curves (from plain lists, so cached report data can be drawn)."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

TITLES = {"perplexity": "held-out perplexity (lower is better)", "ioi": "IOI logit difference (nats)",
          "facts": "known facts still right (share)"}
COLORS = {"gradient": "#1f77b4", "attribution": "#2ca02c", "activation": "#9467bd", "magnitude": "#ff7f0e",
          "wanda": "#8c564b", "random": "#7f7f7f"}


def curves_figure(shares: Sequence[float], values: dict[str, dict[str, Sequence[float]]], unit: str,
                  measures: Sequence[str] = ("perplexity", "ioi", "facts")) -> go.Figure:
    """One panel per measure: value against the share of ``unit`` removed, one line per importance method."""
    measures = [m for m in measures if any(v.get(m) and v[m][0] == v[m][0] for v in values.values())]
    fig = make_subplots(rows=1, cols=len(measures), subplot_titles=[TITLES.get(m, m) for m in measures],
                        horizontal_spacing=0.07)
    for c, measure in enumerate(measures, 1):
        for method, v in values.items():
            fig.add_trace(go.Scatter(
                x=[100 * s for s in shares], y=v[measure], mode="lines+markers", name=method,
                legendgroup=method, showlegend=c == 1,
                line=dict(color=COLORS.get(method), dash="dot" if method == "random" else None)), row=1, col=c)
        fig.update_xaxes(title_text=f"% of {unit} removed", row=1, col=c)
        if measure == "perplexity":
            fig.update_yaxes(type="log", row=1, col=c)
    fig.update_layout(height=380, margin=dict(l=50, r=20, t=50, b=50), legend=dict(orientation="h", y=-0.25))
    return fig


def tradeoff_figure(curves: dict[str, tuple[Sequence[float], Sequence[float]]], x_title: str, y_title: str,
                    targets: dict[str, float] | None = None) -> go.Figure:
    """Effect against cost: one line per named curve of (cost x, effect y) points; optional dashed targets."""
    fig = go.Figure()
    for name, (x, y) in curves.items():
        fig.add_trace(go.Scatter(x=list(x), y=list(y), mode="lines+markers", name=name))
    for label, value in (targets or {}).items():
        axis = "x" if label.startswith("x:") else "y"
        kwargs = {"x": value} if axis == "x" else {"y": value}
        # a horizontal target's label at the left end, under its line: at the right end, above it, it ran into a
        # vertical target's label when the line lay near the top
        (fig.add_vline if axis == "x" else fig.add_hline)(**kwargs, line_dash="dash", line_color="#999",
                                                         annotation_text=label[2:],
                                                         annotation_position="top right" if axis == "x" else
                                                         "bottom left")
    fig.update_layout(height=360, xaxis_title=x_title, yaxis_title=y_title,
                      margin=dict(l=60, r=20, t=30, b=50))
    return fig
