"""Plotly figures of a world-model study (``analysis.study``'s summary): training curve, probe accuracy by
layer, a board read by the probe, and the flip interventions."""
from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

FILES = "abcdefgh"
CLASS_NAMES = ("empty", "mine", "theirs")
CLASS_COLOURS = ("#e8e8e8", "#1f4e9c", "#f08c28")


def _layout(fig: go.Figure, title: str, height: int = 380, top: int = 60) -> go.Figure:
    fig.update_layout(title=title, height=height, margin=dict(l=60, r=20, t=top, b=50),
                      legend=dict(orientation="h", y=-0.22, yanchor="top"))
    return fig


def training_curve(training: dict[str, Any], target: float = 0.95) -> go.Figure:
    """Top-1 legal-move rate and legal-set F1 on held-out games over training steps."""
    rows = training["curves"]
    steps = [r["step"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=[r["legal_acc"] for r in rows], name="top-1 legal rate", mode="lines+markers"))
    fig.add_trace(go.Scatter(x=steps, y=[r["legal_f1"] for r in rows], name="legal-set F1", mode="lines+markers",
                             line=dict(dash="dot")))
    fig.add_hline(y=target, line_dash="dash", line_color="#888", annotation_text=f"{target:.0%}")
    fig.update_yaxes(title="share of held-out positions", range=[0, 1.02])
    fig.update_xaxes(title="training step")
    return _layout(fig, "Othello-GPT: legal moves on held-out games")


def probe_accuracy(probes: dict[str, Any]) -> go.Figure:
    """Mean per-square accuracy by layer for both label schemes and both probe kinds, with the
    commonest-class baselines."""
    layers = probes["layers"]
    fig = go.Figure()
    styles = {"mine/linear": ("#1f4e9c", "solid"), "color/linear": ("#d62728", "solid"),
              "mine/mlp": ("#1f4e9c", "dot"), "color/mlp": ("#d62728", "dot")}
    names = {"mine": "empty/mine/theirs", "color": "empty/black/white"}
    lows = []
    for key, (colour, dash) in styles.items():
        if key not in probes["accuracy"]:
            continue
        scheme, kind = key.split("/")
        ys = probes["accuracy"][key]["by_layer"]
        lows.append(min(ys))
        fig.add_trace(go.Scatter(x=layers, y=ys, name=f"{kind} {names[scheme]}", mode="lines+markers",
                                 line=dict(color=colour, dash=dash)))
    for scheme, colour, where in (("mine", "#1f4e9c", "top left"), ("color", "#d62728", "bottom right")):
        if scheme in probes["baseline"]:
            base = probes["baseline"][scheme]
            lows.append(base)
            fig.add_hline(y=base, line_dash="dash", line_color=colour, opacity=0.5,
                          annotation_text=f"commonest class ({names[scheme]})", annotation_position=where)
    low = max(0.0, math.floor(min(lows) * 10) / 10 - 0.05)
    fig.update_yaxes(title="held-out accuracy (mean over squares)", range=[low, 1.01])
    fig.update_xaxes(title="layer (residual after block)", tickmode="array", tickvals=layers)
    return _layout(fig, "Board-state probes by layer", height=420)


def board(picture: dict[str, Any]) -> go.Figure:
    """The real board and what the linear mine/theirs probe reads, side by side (wrong squares marked x)."""
    size = picture["size"]
    ranks = [str(r + 1) for r in range(size)]
    files = list(FILES[:size])
    scale = [[0.0, CLASS_COLOURS[0]], [1 / 3, CLASS_COLOURS[0]], [1 / 3, CLASS_COLOURS[1]], [2 / 3, CLASS_COLOURS[1]],
             [2 / 3, CLASS_COLOURS[2]], [1.0, CLASS_COLOURS[2]]]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("real board", f"linear probe, layer {picture['layer']}"),
                        horizontal_spacing=0.08)
    real, read, p = picture["real"], picture["read"], picture["p_real"]
    for col, values in ((1, real), (2, read)):
        grid = [values[r * size:(r + 1) * size] for r in range(size)]
        text = [[("x " if col == 2 and read[r * size + c] != real[r * size + c] else "")
                 + (f"{p[r * size + c]:.2f}" if col == 2 else CLASS_NAMES[grid[r][c]][0].upper() if grid[r][c] else "")
                 for c in range(size)] for r in range(size)]
        fig.add_trace(go.Heatmap(z=grid, x=files, y=ranks, zmin=-0.5, zmax=2.5, colorscale=scale, showscale=False,
                                 text=text, texttemplate="%{text}", xgap=2, ygap=2,
                                 hovertemplate="%{x}%{y}: %{text}<extra></extra>"), row=1, col=col)
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain")
    fig.update_yaxes(autorange="reversed", scaleanchor="x2", constrain="domain", row=1, col=2)
    last = picture["moves"][-1]
    title = (f"After {len(picture['moves'])} moves (last {last}), {picture['to_move']} to move<br>"
             "<sup>blue = mine, orange = theirs; right: the probe's probability of the real class, x = misread</sup>")
    return _layout(fig, title, height=460, top=100)


def interventions(results: dict[str, Any]) -> go.Figure:
    """Share of top-1 predictions legal for the edited vs the original board, with and without the edit."""
    fig = go.Figure()
    methods = list(results)
    labels = {"linear": "probe-direction flip (Nanda)", "gradient": "gradient flip (Li)"}
    for key, name, colour in (("share_edited", "after edit: legal on edited board", "#2ca02c"),
                              ("share_original", "after edit: legal on original board", "#9467bd"),
                              ("base_share_edited", "no edit: legal on edited board", "#98df8a"),
                              ("base_share_original", "no edit: legal on original board", "#c5b0d5")):
        ys = [results[m][key] for m in methods]
        errs = [1.96 * math.sqrt(max(y * (1 - y), 1e-9) / results[m]["n"]) for y, m in zip(ys, methods)]
        fig.add_trace(go.Bar(x=[labels.get(m, m) for m in methods], y=ys, name=name, marker_color=colour,
                             error_y=dict(type="data", array=errs)))
    n = results[methods[0]]["n"] if methods else 0
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="share of top-1 predictions", range=[0, 1.05])
    return _layout(fig, f"Flipping one square in the residual stream ({n} positions)", height=420)
