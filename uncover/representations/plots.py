"""Plotly figures for representation results (kept apart from the algorithms).

Each function takes plain lists/tensors so the report can draw from cached JSON too.
"""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def accuracy_by_layer(layers: Sequence[int], test: Sequence[float], train: Sequence[float] | None = None,
                      transfer: dict[str, Sequence[float]] | None = None, title: str = "Probe accuracy by layer") -> go.Figure:
    """Held-out (and train / transfer) accuracy against layer."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(layers), y=list(test), mode="lines+markers", name="held-out"))
    if train is not None:
        fig.add_trace(go.Scatter(x=list(layers), y=list(train), mode="lines", name="train", line={"dash": "dot"}))
    for name, acc in (transfer or {}).items():
        fig.add_trace(go.Scatter(x=list(layers), y=list(acc), mode="lines", name=f"transfer: {name}"))
    fig.add_hline(y=0.5, line={"color": "grey", "dash": "dash"})
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="accuracy", yaxis_range=[0, 1.02])
    return fig


def pca_scatter(coords: Sequence[Sequence[float]], labels: Sequence[int], texts: Sequence[str] | None = None,
                names: tuple[str, str] = ("false", "true"), title: str = "PCA of representations") -> go.Figure:
    """2-D scatter of PCA coordinates [n, 2] coloured by label."""
    fig = go.Figure()
    for value, name in enumerate(names):
        idx = [i for i, y in enumerate(labels) if y == value]
        fig.add_trace(go.Scatter(x=[coords[i][0] for i in idx], y=[coords[i][1] for i in idx], mode="markers",
                                 name=name, text=[texts[i] for i in idx] if texts else None))
    fig.update_layout(title=title, xaxis_title="PC 1", yaxis_title="PC 2")
    return fig


def steering_curve(coefficients: Sequence[float], behaviour: Sequence[float], perplexity: Sequence[float],
                   title: str = "Steering: effect and cost") -> go.Figure:
    """Behaviour (left axis) and perplexity (right axis, log) against the steering coefficient."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=list(coefficients), y=list(behaviour), mode="lines+markers",
                             name="concept log-odds (nats)"), secondary_y=False)
    fig.add_trace(go.Scatter(x=list(coefficients), y=list(perplexity), mode="lines+markers",
                             name="perplexity on neutral text"), secondary_y=True)
    fig.update_yaxes(title_text="log-odds", secondary_y=False)
    # its own ticks, no grid: plotly's default for an overlaying axis ("sync") labels the left axis's grid lines
    # with values like 74.9 and 87.2
    fig.update_yaxes(title_text="perplexity", type="log", tickmode="auto", showgrid=False, secondary_y=True)
    fig.update_layout(title=title, xaxis_title="coefficient")
    return fig


def head_heatmap(values: Sequence[Sequence[float]], title: str = "Average indirect effect per head") -> go.Figure:
    """[n_layers, n_heads] heatmap (layers on the y axis)."""
    fig = go.Figure(go.Heatmap(z=[list(r) for r in values], colorscale="RdBu", zmid=0))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer")
    return fig


def loss_curve(losses: Sequence[float], title: str = "Training loss") -> go.Figure:
    """Loss per step."""
    fig = go.Figure(go.Scatter(y=list(losses), mode="lines"))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="loss (nats)")
    return fig
