"""Plotly figures for superposition toys, SAE training and feature / neuron cards.

Every function takes plain lists or tensors (what report sections cache as JSON) and returns a figure.
"""
from __future__ import annotations

from typing import Any, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

PHASE_COLOURS = ["#d9d9d9", "#4c78a8", "#f58518"]


def feature_directions(W_list: Sequence[Sequence[Sequence[float]]], titles: Sequence[str]) -> go.Figure:
    """n=5, m=2 toys: each feature's column of W [2, n] drawn as an arrow from the origin."""
    fig = make_subplots(rows=1, cols=len(W_list), subplot_titles=list(titles))
    for c, W in enumerate(W_list, start=1):
        xs, ys = W[0], W[1]
        for i, (x, y) in enumerate(zip(xs, ys)):
            fig.add_trace(go.Scatter(x=[0, x], y=[0, y], mode="lines+markers+text", text=["", f"x{i}"],
                                     textposition="top center", showlegend=False, line=dict(width=3)),
                          row=1, col=c)
        fig.update_xaxes(range=[-1.4, 1.4], row=1, col=c)
        fig.update_yaxes(range=[-1.4, 1.4], scaleanchor=f"x{c if c > 1 else ''}", row=1, col=c)
    fig.update_layout(height=330, margin=dict(t=40, b=20))
    return fig


def gram_heatmaps(grams: Sequence[Sequence[Sequence[float]]], norms: Sequence[Sequence[float]],
                  titles: Sequence[str]) -> go.Figure:
    """WᵀW heatmaps (top row) and feature norms (bottom row), one column per sparsity."""
    cols = len(grams)
    fig = make_subplots(rows=2, cols=cols, subplot_titles=list(titles), row_heights=[0.7, 0.3],
                        vertical_spacing=0.08)
    for c, (G, n) in enumerate(zip(grams, norms), start=1):
        fig.add_trace(go.Heatmap(z=G, zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
                                 showscale=c == cols), row=1, col=c)
        fig.update_yaxes(autorange="reversed", row=1, col=c)
        fig.add_trace(go.Bar(y=n, marker_color="#4c78a8", showlegend=False), row=2, col=c)
    fig.update_layout(height=480, margin=dict(t=40, b=20))
    return fig


def phase_diagram(densities: Sequence[float], importances: Sequence[float], phase: Sequence[Sequence[int]],
                  labels: Sequence[str]) -> go.Figure:
    """n=2, m=1 phases over relative importance (x) and feature density (y), log axes."""
    fig = go.Figure(go.Heatmap(
        x=list(importances), y=list(densities), z=phase, zmin=-0.5, zmax=2.5,
        colorscale=[[0, PHASE_COLOURS[0]], [0.33, PHASE_COLOURS[0]], [0.34, PHASE_COLOURS[1]],
                    [0.66, PHASE_COLOURS[1]], [0.67, PHASE_COLOURS[2]], [1, PHASE_COLOURS[2]]],
        colorbar=dict(tickvals=[0, 1, 2], ticktext=list(labels))))
    fig.update_xaxes(type="log", title="relative importance of feature 2")
    fig.update_yaxes(type="log", title="feature density 1 - S", dtick="D2")  # 1, 2, 5: every digit crowded
    fig.update_layout(height=380, margin=dict(t=20, b=40))
    return fig


def dimensionality_scatter(dims_per_feature: Sequence[float], dimensionalities: Sequence[Sequence[float]]
                           ) -> go.Figure:
    """Feature dimensionality D_i of represented features against the model's dimensions per feature."""
    fig = go.Figure()
    xs = [x for x, ds in zip(dims_per_feature, dimensionalities) for _ in ds]
    ys = [d for ds in dimensionalities for d in ds]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", marker=dict(size=5, opacity=0.6), name="features"))
    for frac, label in [(1, "1"), (3 / 4, "3/4"), (2 / 3, "2/3"), (1 / 2, "1/2"), (2 / 5, "2/5"), (1 / 3, "1/3")]:
        # the lower of two close lines (2/3 under 3/4, 1/3 under 2/5) is labelled below it: above, they touched
        fig.add_hline(y=frac, line=dict(dash="dot", width=1, color="grey"), annotation_text=label,
                      annotation_position="bottom right" if label in ("2/3", "1/3") else "top right")
    fig.update_xaxes(title="dimensions per feature m / ||W||_F²")
    fig.update_yaxes(title="feature dimensionality D_i", range=[0, 1.1])
    fig.update_layout(height=380, margin=dict(t=20, b=40), showlegend=False)
    return fig


def training_curves(history: dict[str, list[float]]) -> go.Figure:
    """Explained variance, L0 and dead fraction against training tokens."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=["explained variance", "L0", "dead fraction"])
    for c, key in enumerate(["explained_variance", "l0", "dead_fraction"], start=1):
        fig.add_trace(go.Scatter(x=history["tokens"], y=history[key], mode="lines", showlegend=False), row=1, col=c)
        fig.update_xaxes(title="tokens", row=1, col=c)
    fig.update_layout(height=300, margin=dict(t=40, b=40))
    return fig


def histogram(hist: dict[str, Any], title: str = "") -> go.Figure:
    """Bar chart of a unit's non-zero activation histogram (from analysis.activation_histogram)."""
    edges = hist["edges"]
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    fig = go.Figure(go.Bar(x=centres, y=hist["counts"], marker_color="#f58518"))
    fig.update_layout(height=200, margin=dict(t=30 if title else 10, b=30, l=55, r=10), title=title or None)
    fig.update_xaxes(title="activation")
    fig.update_yaxes(title="count")
    return fig
