"""Interactive circuit pictures (plotly). Inputs are JSON-able data, so the report redraws them from its
cache: ``circuit_dict`` (export.py: a circuit graph) for the circuit, lists for the faithfulness curves."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import plotly.graph_objects as go

KIND_DASH = {"q": "solid", "k": "dash", "v": "dot", "": "solid"}
LABELLED = 12  # nodes named on the picture (the strongest); hover shows every node


def _position(node: str, n_layers: int, n_heads: int) -> tuple[float, float]:
    """x: layer (embedding at -1, logits at n_layers); y: head index, the MLP one row above the heads."""
    if node == "embed":
        return -1.0, (n_heads - 1) / 2
    if node == "logits":
        return float(n_layers), (n_heads - 1) / 2
    layer, rest = node[1:].split(".", 1)
    if rest == "MLP":
        return int(layer) + 0.4, float(n_heads)
    return float(layer), float(rest[1:])


def circuit_figure(data: Mapping[str, Any], title: str, max_edges: int = 300) -> go.Figure:
    """Nodes by layer (x) and head (y; MLPs on the top row), edges as lines whose width follows |score|
    (blue: removing the edge lowers the metric, red: raises it); hover a node or an edge for its scores."""
    L, H = data["n_layers"], data["n_heads"]
    edges = data["edges"][:max_edges]
    top = max((abs(e["score"]) for e in edges), default=1.0) or 1.0
    fig = go.Figure()
    for e in reversed(edges):  # strongest drawn last, on top
        (x0, y0), (x1, y1) = _position(e["source"], L, H), _position(e["target"], L, H)
        kind = e.get("input", "")
        receiver = f"{e['target']}.{kind}" if kind else e["target"]
        fig.add_trace(go.Scatter(
            x=[x0, (x0 + x1) / 2, x1], y=[y0, (y0 + y1) / 2, y1], mode="lines",
            line=dict(width=0.5 + 5.5 * abs(e["score"]) / top, dash=KIND_DASH[kind],
                      color="rgba(31,119,180,0.6)" if e["score"] < 0 else "rgba(214,39,40,0.6)"),
            hoverinfo="text", text=f"{e['source']} -> {receiver}: {e['score']:.4g}", showlegend=False,
        ))
    strength: dict[str, float] = {}
    for e in data["edges"]:
        for n in (e["source"], e["target"]):
            strength[n] = strength.get(n, 0.0) + abs(e["score"])
    nodes = [n["id"] for n in data["nodes"]]
    xy = [_position(n, L, H) for n in nodes]
    strongest = max((strength.get(n, 0.0) for n in nodes), default=1.0) or 1.0
    named = set(sorted(nodes, key=lambda n: -strength.get(n, 0.0))[:LABELLED]) | {"embed", "logits"}
    fig.add_trace(go.Scatter(
        x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers+text",
        text=[n if n in named else "" for n in nodes], textposition="top center", textfont=dict(size=10),
        marker=dict(size=[6 + 10 * strength.get(n, 0.0) / strongest for n in nodes], color="black"), showlegend=False,
        hovertext=[f"{n}: sum |score| of its edges {strength.get(n, 0.0):.4g}" for n in nodes], hoverinfo="text",
    ))
    fig.update_layout(title=title, height=max(380, 28 * (H + 2)), margin=dict(l=50, r=20, t=50, b=50),
                      xaxis=dict(title="layer (embedding left, logits right)", range=[-1.6, L + 0.6], dtick=1 if L <= 32 else 4),
                      yaxis=dict(title="head (MLP on the top row)", range=[-1, H + 1], dtick=1 if H <= 16 else 4))
    return fig


def faithfulness_figure(curves: Mapping[str, Mapping[str, Sequence[float]]], n_total: int, target: float,
                        title: str) -> go.Figure:
    """Faithfulness against edges kept (log x, as a share of all edges in the hover), one line per method,
    with the target as a dashed line."""
    fig = go.Figure()
    for method, c in curves.items():
        fig.add_trace(go.Scatter(
            x=list(c["edges"]), y=list(c["faithfulness"]), mode="lines+markers", name=method,
            customdata=[100 * e / n_total for e in c["edges"]],
            hovertemplate="%{x} edges (%{customdata:.2f}% of all): faithfulness %{y:.3f}<extra>" + method + "</extra>",
        ))
    fig.add_hline(y=target, line_dash="dash", line_color="gray", annotation_text=f"target {target:g}")
    fig.add_hline(y=1.0, line_dash="dot", line_color="lightgray")
    fig.update_xaxes(type="log", title=f"edges kept (of {n_total:,})")
    fig.update_yaxes(title="faithfulness (0 ablated .. 1 model)")
    fig.update_layout(title=title, height=420, margin=dict(l=60, r=20, t=50, b=50))
    return fig
