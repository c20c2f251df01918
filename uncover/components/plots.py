"""Interactive plotly figures for component results. Inputs are plain lists (JSON-able), so the report
can redraw them from cached data; results convert with ``.tolist()``."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 420) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=height, margin=dict(l=60, r=20, t=50, b=50))
    return fig


def head_heatmap(values: Sequence[Sequence[float]], title: str, colorbar: str = "score",
                 top: Sequence[Sequence] = (), diverging: bool = False) -> go.Figure:
    """[n_layers][n_heads] as a heatmap (layer down, head across), with ``top`` heads (layer, head, value)
    circled and named."""
    n_layers = len(values)
    fig = go.Figure(go.Heatmap(
        z=values, x=list(range(len(values[0]))), y=list(range(n_layers)),
        colorscale="RdBu" if diverging else "Viridis", zmid=0 if diverging else None,
        colorbar=dict(title=colorbar), hovertemplate="layer %{y}, head %{x}: %{z:.3f}<extra></extra>",
    ))
    if top:
        fig.add_trace(go.Scatter(
            x=[h for _, h, _ in top], y=[l for l, _, _ in top], mode="markers+text",
            marker=dict(symbol="circle-open", size=16, color="red", line=dict(width=2)),
            text=[f"L{l}H{h}" for l, h, _ in top], textposition="middle right", textfont=dict(color="red"),
            hovertemplate="%{text}<extra></extra>", showlegend=False, cliponaxis=False,
        ))
    # the cells fill the axes: autorange padded them by the circles' size (an empty strip past the last layer)
    fig.update_xaxes(range=[-0.5, len(values[0]) - 0.5])
    fig.update_yaxes(range=[n_layers - 0.5, -0.5])
    return _layout(fig, title, "head", "layer", height=max(320, 14 * n_layers + 120))


def layer_pos_heatmap(values: Sequence[Sequence[float]], tokens: Sequence[str], title: str,
                      colorbar: str = "patched / clean") -> go.Figure:
    """[n_layers][pos] (e.g. residual patching by layer x position) with the prompt's tokens on x."""
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    fig = go.Figure(go.Heatmap(
        z=values, x=labels, y=list(range(len(values))), colorscale="RdBu", zmid=0, colorbar=dict(title=colorbar),
        hovertemplate="layer %{y}, %{x}: %{z:.3f}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, "position: token", "layer", height=max(320, 14 * len(values) + 120))


def dla_bars(labels: Sequence[str], values: Sequence[float], title: str, unit: str = "logit difference") -> go.Figure:
    """Direct logit attribution per component: attention and MLP bars per layer, the embedding apart."""
    attn = [(l, v) for l, v in zip(labels, values) if l.endswith(" attn")]
    mlp = [(l, v) for l, v in zip(labels, values) if l.endswith(" mlp")]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=[l.split()[0] for l, _ in attn], y=[v for _, v in attn], name="attention"))
    fig.add_trace(go.Bar(x=[l.split()[0] for l, _ in mlp], y=[v for _, v in mlp], name="MLP"))
    emb = [v for l, v in zip(labels, values) if l == "embed"]
    if emb:
        fig.add_trace(go.Bar(x=["embed"], y=emb, name="embedding"))
    fig.update_layout(barmode="group")
    return _layout(fig, title, "component", f"direct effect ({unit})")


def knockout_lines(targets: Sequence[str], centres: Sequence[int], values: Sequence[Sequence[float]],
                   window: int, title: str) -> go.Figure:
    """Relative change of the attribute probability (%) per knocked-out target, by window centre layer."""
    fig = go.Figure()
    for t, row in zip(targets, values):
        fig.add_trace(go.Scatter(x=list(centres), y=row, mode="lines+markers", name=f"last -> {t}"))
    fig.add_hline(y=0, line=dict(color="gray", dash="dot"))
    return _layout(fig, title, f"layer (window of {window} layers centred here)", "change of attribute probability (%)")


def lens_heatmap(top_tokens: Sequence[Sequence[str]], top_probs: Sequence[Sequence[float]], layer_labels: Sequence[str],
                 tokens: Sequence[str], title: str) -> go.Figure:
    """Logit lens: the top token at every layer (rows) and position (columns), coloured by its probability."""
    fig = go.Figure(go.Heatmap(
        z=top_probs, x=[f"{i}:{t}" for i, t in enumerate(tokens)], y=list(layer_labels), text=top_tokens,
        texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1, colorbar=dict(title="p(top token)"),
        hovertemplate="%{y}, %{x}: %{text} (p=%{z:.2f})<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, "position: input token", "layer", height=max(360, 16 * len(layer_labels) + 120))


def lines(x: Sequence, series: dict[str, Sequence[float]], title: str, x_title: str, y_title: str,
          log_y: bool = False) -> go.Figure:
    """A few named curves over the same x."""
    fig = go.Figure([go.Scatter(x=list(x), y=list(v), mode="lines+markers", name=k) for k, v in series.items()])
    if log_y:
        fig.update_yaxes(type="log")
    return _layout(fig, title, x_title, y_title)


def scatter(x: Sequence[float], y: Sequence[float], labels: Sequence[str], title: str, x_title: str,
            y_title: str) -> go.Figure:
    """Points with hover labels and the y = x line."""
    lo, hi = min(min(x), min(y)), max(max(x), max(y))
    fig = go.Figure([
        go.Scatter(x=list(x), y=list(y), mode="markers", text=list(labels), hovertemplate="%{text}: (%{x:.3f}, %{y:.3f})<extra></extra>", showlegend=False),
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="gray", dash="dot"), showlegend=False),
    ])
    return _layout(fig, title, x_title, y_title)
