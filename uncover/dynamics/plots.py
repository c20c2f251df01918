"""Plotly figures for training-dynamics results (used by the CLI and the report). Each takes a result's
JSON summary (``result.summary()``), so figures can be drawn from saved runs."""
from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

PHASE_COLOURS = {"memorisation": "rgba(255,160,0,0.12)", "circuit_formation": "rgba(0,120,255,0.10)",
                 "cleanup": "rgba(0,180,80,0.12)"}


def _layout(fig: go.Figure, title: str, height: int = 380) -> go.Figure:
    """Title, size and a legend in a row at the foot of the figure, below the x-axis title (a legend in paper
    coordinates ran into it); a figure with subplot titles gets room between them and its title. Secondary
    y axes get their own round ticks and no grid (plotly's default "sync" ticks read 0.276, 74.9, ...)."""
    subplot_titles = any(a.yref == "paper" and a.y is not None and a.y >= 1 for a in fig.layout.annotations)
    fig.update_layout(title=title, height=height + (20 if subplot_titles else 0),
                      margin=dict(l=50, r=20, t=70 if subplot_titles else 50, b=40),
                      legend=dict(orientation="h", yref="container", yanchor="bottom", y=0))
    fig.for_each_yaxis(lambda ax: ax.update(tickmode="auto", showgrid=False) if ax.overlaying else None)
    return fig


def grok_curves(summary: dict[str, Any]) -> go.Figure:
    """Train/test loss (log scale) and accuracy over steps, with the detected phases shaded."""
    curves = summary["curves"]
    steps = [r["step"] for r in curves]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for key, colour in (("train_loss", "#1f77b4"), ("test_loss", "#d62728")):
        fig.add_trace(go.Scatter(x=steps, y=[r[key] for r in curves], name=key, line=dict(color=colour)))
    for key, colour in (("train_acc", "#1f77b4"), ("test_acc", "#d62728")):
        fig.add_trace(go.Scatter(x=steps, y=[r[key] for r in curves], name=key, line=dict(color=colour, dash="dot")),
                      secondary_y=True)
    for phase, span in (summary["phases"].get("ranges") or {}).items():
        if span:
            fig.add_vrect(x0=span[0], x1=span[1], fillcolor=PHASE_COLOURS[phase], line_width=0,
                          annotation_text=phase.replace("_", " "), annotation_position="top left")
    fig.update_yaxes(type="log", title="loss", secondary_y=False)
    fig.update_yaxes(title="accuracy", range=[0, 1.02], secondary_y=True)
    fig.update_xaxes(title="step")
    return _layout(fig, "Grokking: loss and accuracy")


def grok_measures(summary: dict[str, Any]) -> go.Figure:
    """Restricted / excluded / test loss, Gini of Fourier norms and total weight norm over training."""
    rows = summary["measures"]
    steps = [r["step"] for r in rows]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("progress losses", "Fourier sparsity (Gini)", "weight norm"))
    for key in ("restricted_loss", "excluded_loss", "test_loss", "train_loss"):
        if all(key in r for r in rows):
            fig.add_trace(go.Scatter(x=steps, y=[r[key] for r in rows], name=key), row=1, col=1)
    for key in ("gini_embed", "gini_logit"):
        fig.add_trace(go.Scatter(x=steps, y=[r[key] for r in rows], name=key), row=1, col=2)
    fig.add_trace(go.Scatter(x=steps, y=[r["norm_total"] for r in rows], name="total weight norm"), row=1, col=3)
    fig.update_yaxes(type="log", row=1, col=1)
    return _layout(fig, f"Progress measures (key frequencies {summary['key_freqs']})", height=360)


def embed_frequencies(summary: dict[str, Any]) -> go.Figure:
    """Final embedding norm per Fourier frequency; key frequencies highlighted."""
    norms = summary["embed_freq_norms"][1:]
    keys = set(summary["key_freqs"])
    freqs = list(range(1, len(norms) + 1))
    colours = ["#d62728" if k in keys else "#9aa5b1" for k in freqs]
    fig = go.Figure(go.Bar(x=freqs, y=norms, marker_color=colours))
    fig.update_xaxes(title="frequency k")
    fig.update_yaxes(title="||W_E component||")
    return _layout(fig, "Embedding in the Fourier basis (red: key frequencies)", height=300)


def slingshots(summary: dict[str, Any]) -> go.Figure:
    """Per-step training loss (log) and last-layer weight norm, spikes marked."""
    losses, norms = summary["train_losses"], summary["last_layer_norms"]
    steps = list(range(1, len(losses) + 1))
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=steps, y=losses, name="train loss", line=dict(width=1)))
    fig.add_trace(go.Scatter(x=steps, y=norms, name="last-layer norm", line=dict(color="#2ca02c")), secondary_y=True)
    peaks = [s["peak"] for s in summary["spikes"]]
    fig.add_trace(go.Scatter(x=peaks, y=[losses[p - 1] for p in peaks], mode="markers", name="slingshot",
                             marker=dict(color="red", size=9, symbol="x")))
    if summary.get("onset"):
        fig.add_vline(x=summary["onset"], line_dash="dash", annotation_text="test acc 50%")
    fig.update_yaxes(type="log", title="train loss", secondary_y=False)
    fig.update_yaxes(title="||W_U||", secondary_y=True)
    return _layout(fig, "Slingshots: Adam without weight decay")


def lu_curves(rows: list[dict[str, Any]], sweep: list[dict[str, Any]] | None = None) -> go.Figure:
    """Train and test loss against the (fixed) weight norm: L and U. ``sweep`` (from ``init_decay_sweep``)
    adds each free run as a point at its final weight norm."""
    norms = [r["norm"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=norms, y=[r["train_loss"] for r in rows], name="train loss", mode="lines+markers"))
    fig.add_trace(go.Scatter(x=norms, y=[r["test_loss"] for r in rows], name="test loss", mode="lines+markers"))
    if sweep:
        labels = [f"init x{r['init_scale']}, wd {r['weight_decay']}" for r in sweep]
        for key, symbol in (("train_loss", "circle-open"), ("test_loss", "diamond-open")):
            fig.add_trace(go.Scatter(x=[r["final_norm"] for r in sweep], y=[r[key] for r in sweep], text=labels,
                                     mode="markers", marker=dict(symbol=symbol, size=9),
                                     name=f"{key.split('_')[0]} loss, free runs (init scale x weight decay)"))
    fig.update_xaxes(type="log", title="weight norm (held fixed)")
    fig.update_yaxes(title="loss")
    return _layout(fig, "Loss against weight norm (Liu et al.'s LU)", height=320)


def loss_floor(values: list[float], decades: float = 3.0) -> float:
    """The lowest loss a log axis shows: ``decades`` below the smallest test-scale value, rounded down to a power
    of 10. Past the interpolation threshold the train loss is 0 up to rounding (1e-28); drawn as it is, it
    stretched the axis over 35 decades."""
    positive = [v for v in values if v is not None and v > 0]
    return 10.0 ** math.floor(math.log10(min(positive)) - decades) if positive else 1e-3


def double_descent(summary: dict[str, Any]) -> go.Figure:
    """Test and train MSE against width (both log). Train losses below ``loss_floor`` (test losses and train losses
    before the threshold set it) are drawn on the floor as open triangles, the value in their hover."""
    widths, test, train = summary["widths"], summary["test_loss"], summary["train_loss"]
    n_train = summary["config"]["n_train"]
    floor = loss_floor(list(test) + [v for w, v in zip(widths, train) if w < n_train])
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=widths, y=test, name="test loss", mode="lines+markers"))
    below = [v is not None and v < floor for v in train]
    fig.add_trace(go.Scatter(x=widths, y=[max(v, floor) if v is not None else None for v in train],
                             name=f"train loss (▽: below 1e{round(math.log10(floor))}, i.e. ~0)",
                             mode="lines+markers",
                             customdata=train, hovertemplate="width %{x}: train MSE %{customdata:.3g}<extra></extra>",
                             marker=dict(symbol=["triangle-down-open" if b else "circle" for b in below],
                                         size=[9 if b else 6 for b in below])))
    # a shape's x on a log axis is data, an annotation's is log10: the label goes on with log10(n_train)
    fig.add_vline(x=n_train, line_dash="dash")
    fig.add_annotation(x=math.log10(n_train), y=1, yref="paper", text="width = n_train", showarrow=False,
                       xanchor="left", yanchor="top")
    fig.update_xaxes(type="log", title="width (random features)")
    fig.update_yaxes(type="log", title="MSE")
    return _layout(fig, "Model-wise double descent with label noise", height=320)


def memorization(summary: dict[str, Any]) -> go.Figure:
    """Neuron IPR histogram and accuracies as the lowest-IPR neurons are pruned."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("neuron IPR", "pruning lowest-IPR neurons"))
    fig.add_trace(go.Histogram(x=summary["neuron_ipr"], nbinsx=30, name="IPR"), row=1, col=1)
    rows = summary["pruning"]
    frac = [r["pruned_frac"] for r in rows]
    for key, label in (("test_acc", "test"), ("corrupt_mem_acc", "corrupted labels (memorised)"),
                       ("corrupt_true_acc", "corrupted examples, true label")):
        if rows and key in rows[0]:
            fig.add_trace(go.Scatter(x=frac, y=[r[key] for r in rows], name=label, mode="lines+markers"), row=1, col=2)
    fig.update_xaxes(title="fraction of neurons pruned", row=1, col=2)
    fig.update_yaxes(title="accuracy", range=[0, 1.02], row=1, col=2)
    return _layout(fig, "Memorisation with corrupted labels", height=340)


def phase_diagram(rows: list[dict[str, Any]]) -> go.Figure:
    """Phase of each (corruption fraction, weight decay) run."""
    from uncover.dynamics.memorization import PHASES

    xs = sorted({r["weight_decay"] for r in rows})
    ys = sorted({r["corrupt_frac"] for r in rows})
    code = {p: i for i, p in enumerate(PHASES)}
    z = [[None] * len(xs) for _ in ys]
    text = [[""] * len(xs) for _ in ys]
    for r in rows:
        i, j = ys.index(r["corrupt_frac"]), xs.index(r["weight_decay"])
        z[i][j], text[i][j] = code[r["phase"]], f"{r['phase']}<br>test {r['test_acc']:.2f}"
    fig = go.Figure(go.Heatmap(x=[str(x) for x in xs], y=[str(y) for y in ys], z=z, text=text,
                               texttemplate="%{text}", zmin=0, zmax=len(PHASES) - 1, showscale=False,
                               colorscale="Viridis"))
    fig.update_xaxes(title="weight decay")
    fig.update_yaxes(title="corrupted fraction")
    return _layout(fig, "Phases over corruption and weight decay", height=320)


def induction(summary: dict[str, Any]) -> go.Figure:
    curves = summary["curves"]
    steps = [r["step"] for r in curves]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=steps, y=[r["icl_score"] for r in curves], name="ICL score (nats)"))
    fig.add_trace(go.Scatter(x=steps, y=[r["induction_score"] for r in curves], name="best induction score"),
                  secondary_y=True)
    fig.add_trace(go.Scatter(x=steps, y=[r["prev_token_score"] for r in curves], name="best previous-token score"),
                  secondary_y=True)
    if summary.get("icl_change_step") is not None:
        fig.add_vline(x=summary["icl_change_step"], line_dash="dash", annotation_text="phase change")
    fig.update_yaxes(title="late - early loss", secondary_y=False)
    fig.update_yaxes(title="attention score", range=[0, 1.02], secondary_y=True)
    fig.update_xaxes(title="step")
    return _layout(fig, "Induction heads form in a phase change")
