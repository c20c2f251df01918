"""`uncover report A --compare B`: the survey's §3.2 question, how depth and scale shape what a model encodes.

Every model's by-layer report sections (``COMPARED``) are computed, or loaded from their cache, exactly as for
its own report; this page reads them on relative depth, ``layer / n_layers`` with blocks counted from 0 (the
first block is at 0, the last at (n-1)/n), so models with different numbers of layers share one axis:

- truth-probe test accuracy (logistic probe on "cities" statements, the representations section),
- logit-lens agreement with the final output (share of the overview's prompts whose lens top token at that
  layer is the model's answer),
- induction and previous-token head scores (the strongest head of each layer, the components section),
- causal tracing's MLP effect at the last subject token (the editing section),
- the sparse autoencoder's explained variance and CE loss recovered at one depth and matched width
  (``d_sae / d_model`` is the same multiple for every model; the features section).

Each curve's findings sentence locates a point per model (its peak, or for the lens where it first agrees on
half the prompts) and says whether the models agree in depth and in value, by the thresholds below.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from uncover.report import claims as C
from uncover.report import html as H

if TYPE_CHECKING:
    from uncover.report.build import BuiltReport

# the report sections this page reads
COMPARED = ["overview", "components", "features", "representations", "editing"]

DEPTH_AGREE = C.Threshold("depth_agree", 0.15, "spread of relative depth")
LENS_HALF = 0.5  # the lens curve's located point: the first depth where at least half the prompts agree
SAE_AGREE = C.Threshold("sae_agree", 0.05, "spread of explained variance")

Series = tuple[list[int], list[float]]  # (layers, values)


def _truth(d: dict[str, Any]) -> Optional[Series]:
    sweep = d.get("representations", {}).get("truth", {}).get("sweeps", {}).get("logistic")
    return (list(sweep["layers"]), list(sweep["test"])) if sweep else None


def _lens(d: dict[str, Any]) -> Optional[Series]:
    rows = d.get("overview", {}).get("rows")
    if not rows:
        return None
    n_layers = len(rows[0]["answer_rank_by_layer"])
    agree = [sum(r["answer_rank_by_layer"][l] == 0 for r in rows) / len(rows) for l in range(n_layers)]
    return list(range(n_layers)), agree


def _head_score(kind: str) -> Callable[[dict[str, Any]], Optional[Series]]:
    def read(d: dict[str, Any]) -> Optional[Series]:
        scores = d.get("components", {}).get("scores", {}).get(kind)
        return (list(range(len(scores))), [max(row) for row in scores]) if scores else None
    return read


def _tracing(d: dict[str, Any]) -> Optional[Series]:
    """The MLP row of the last subject token: one entry per layer, None where the layer was not traced."""
    trace = d.get("editing", {}).get("trace")
    if not trace:
        return None
    row = trace["effects"]["mlp"][trace["categories"].index("last subject token")]
    kept = [(l, v) for l, v in enumerate(row) if v is not None]
    return ([l for l, _ in kept], [v for _, v in kept]) if kept else None


@dataclass(frozen=True)
class Curve:
    """One by-layer measurement: how to read it from section data, and how to state where it lies."""

    key: str
    title: str
    y_title: str
    what: str                               # its name in a sentence
    read: Callable[[dict[str, Any]], Optional[Series]]
    level: Optional[C.Threshold]            # the spread of the located values within which the models agree
    how_to_read: str
    peak: bool = True                       # locate the peak (else: first depth with value >= LENS_HALF)


CURVES = [
    Curve("truth", "Truth probe: held-out accuracy by relative depth", "test accuracy", "truth-probe accuracy",
          _truth, C.Threshold("truth_agree", 0.05, "spread of peak accuracy"),
          "A logistic probe per layer separates true from false 'cities' statements; 0.5 is chance. Where the "
          "curve rises is where the model has computed truth."),
    Curve("lens", "Logit lens: agreement with the final output by relative depth", "share of prompts",
          "logit-lens agreement with the final output", _lens, None,
          "The share of the overview's prompts whose logit-lens top token at that layer is already the model's "
          "final answer; it is 1 at the last layer by construction.", peak=False),
    Curve("induction", "Induction heads: strongest score per layer", "induction score (attention)",
          "the strongest induction head", _head_score("induction"),
          C.Threshold("induction_agree", 0.1, "spread of peak score"),
          "Each point is the layer's highest attention from a repeated token to the token after its earlier "
          "copy, on repeated random tokens; induction heads sit where it is high."),
    Curve("previous_token", "Previous-token heads: strongest score per layer", "previous-token score (attention)",
          "the strongest previous-token head", _head_score("previous_token"),
          C.Threshold("previous_agree", 0.1, "spread of peak score"),
          "Each point is the layer's highest attention to the immediately preceding token."),
    Curve("tracing", "Causal tracing: MLP effect at the last subject token", "indirect effect (probability)",
          "causal tracing's MLP effect", _tracing, C.Threshold("tracing_agree", 0.05, "spread of peak effect"),
          "Restoring a window of MLP outputs at the last subject token in a run with corrupted subject "
          "embeddings: how much of the correct attribute's probability comes back. ROME edits where it peaks."),
]


@dataclass
class Profile:
    """One model on the compare page: its card (sizes), its curves on relative depth and its SAE metrics."""

    card: dict[str, Any]
    curves: dict[str, tuple[list[float], list[float], list[int]]]  # key -> (relative depth, value, layer)
    sae: Optional[dict[str, Any]]
    link: str
    failed: list[str]


def profile(built: "BuiltReport", link: str) -> Profile:
    """Read a built report's by-layer data onto relative depth (layer / n_layers)."""
    n = built.card["n_layers"]
    curves = {}
    for c in CURVES:
        series = c.read(built.data)
        if series:
            layers, values = series
            curves[c.key] = ([l / n for l in layers], list(values), list(layers))
    sae = None
    feats = built.data.get("features", {}).get("sae")
    if feats:
        m = feats["metrics"]
        sae = {"layer": feats["layer"], "depth": feats["layer"] / n, "width": feats["d_sae"] / built.card["d_model"],
               "d_sae": feats["d_sae"], "explained_variance": m["explained_variance"],
               "ce_loss_recovered": m["ce_loss_recovered"], "dead_fraction": m["dead_fraction"]}
    return Profile(built.card, curves, sae, link, [key for key, _, _ in built.failed])


def locate(curve: Curve, depths: list[float], values: list[float]) -> Optional[tuple[float, float]]:
    """(relative depth, value) of the curve's stated point: its peak (first on ties), or the first depth where
    the value reaches LENS_HALF (None if it never does)."""
    if curve.peak:
        i = max(range(len(values)), key=lambda j: (values[j], -j))
        return depths[i], values[i]
    return next(((d, v) for d, v in zip(depths, values) if v >= LENS_HALF), None)


def _spread(xs: Sequence[float]) -> float:
    return max(xs) - min(xs)


def curve_finding(curve: Curve, profiles: Sequence[Profile]) -> str:
    """One sentence: where each model's point lies, and whether the depths and values agree."""
    points = {p.card["name"]: locate(curve, *p.curves[curve.key][:2]) for p in profiles if curve.key in p.curves}
    missing = [p.card["name"] for p in profiles if curve.key not in p.curves]
    lost = f" (not measured for {', '.join(missing)})" if missing else ""
    found = {name: pt for name, pt in points.items() if pt is not None}
    never = [name for name, pt in points.items() if pt is None]
    where = "peaks at relative depth" if curve.peak else f"first reaches {LENS_HALF:g} at relative depth"
    parts = [f"{d:.2f} in {name} ({v:.2f})" for name, (d, v) in found.items()]
    parts += [f"never in {name}" for name in never]
    what = curve.what[0].upper() + curve.what[1:]
    if len(found) < 2:
        return f"{what} {where} " + ", ".join(parts or ["nowhere"]) + f"{lost}; nothing to compare."
    depth = C.at_most(_spread([d for d, _ in found.values()]), DEPTH_AGREE, "agree in depth", "differ in depth")
    if curve.level is None:  # the located value is a crossing, not a level to compare
        return f"{what} {where} " + ", ".join(parts) + f"{lost}: the models {depth}."
    level = C.at_most(_spread([v for _, v in found.values()]), curve.level, "agree in value", "differ in value")
    return f"{what} {where} " + ", ".join(parts) + f"{lost}: the models {depth} and {level}."


def sae_finding(profiles: Sequence[Profile]) -> str:
    have = [p for p in profiles if p.sae]
    if len(have) < 2:
        return "The SAE was measured on fewer than two models; nothing to compare."
    parts = ", ".join(f"{p.sae['explained_variance']:.3f} in {p.card['name']} (relative depth {p.sae['depth']:.2f}, "
                      f"{p.sae['width']:g} x d_model)" for p in have)
    widths = {p.sae["width"] for p in have}
    same = C.at_most(_spread([p.sae["explained_variance"] for p in have]), SAE_AGREE,
                     "about the same share", "different shares")
    matched = "at matched width" if len(widths) == 1 else "at different widths (not matched)"
    return f"The sparse autoencoder {matched} explains {parts} of the residual variance: {same}."


def scale_finding(profiles: Sequence[Profile]) -> str:
    by_size = sorted(profiles, key=lambda p: p.card["parameters"])
    small = by_size[0].card
    rest = ", ".join(f"{p.card['name']} has {p.card['parameters'] / small['parameters']:.2f} times its parameters "
                     f"in {p.card['n_layers']} layers of width {p.card['d_model']}" for p in by_size[1:])
    return (f"{small['name']} is the smallest ({small['parameters'] / 1e6:.1f} M parameters, {small['n_layers']} "
            f"layers of width {small['d_model']}); {rest}.")


def curve_figure(curve: Curve, profiles: Sequence[Profile]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for p in profiles:
        if curve.key in p.curves:
            depths, values, layers = p.curves[curve.key]
            fig.add_trace(go.Scatter(x=depths, y=values, mode="lines+markers", name=p.card["name"], customdata=layers,
                                     hovertemplate="layer %{customdata}<br>%{y:.3f}<extra>" + p.card["name"] + "</extra>"))
    fig.update_layout(title=curve.title, xaxis_title="relative depth (layer / n_layers)", yaxis_title=curve.y_title,
                      height=340, margin=dict(l=10, r=10, t=40, b=40))
    return fig.update_xaxes(range=[-0.02, 1.0])


def compare_page(profiles: Sequence[Profile]) -> str:
    """The whole compare page (HTML) from the models' profiles."""
    names = " vs ".join(p.card["name"] for p in profiles)
    sizes = H.table([[p.card["name"], f'{p.card["parameters"] / 1e6:.1f}', p.card["n_layers"], p.card["d_model"],
                      p.card["n_heads"], p.card["d_vocab"]] for p in profiles],
                    header=["model", "parameters (M)", "layers", "d_model", "heads", "vocabulary"])
    links = "<p>Each model's own report: " + ", ".join(
        f'<a href="{H.escape(p.link)}">{H.escape(p.card["name"])}</a>' for p in profiles) + ".</p>"
    failed = [f"{p.card['name']}: {', '.join(p.failed)}" for p in profiles if p.failed]
    curve_sentences = [curve_finding(c, profiles) for c in CURVES]
    summary = [scale_finding(profiles)] + curve_sentences + [sae_finding(profiles)]
    body = ("<p>Survey §3.2: how depth and model scale shape what is encoded. Every number comes from the models' "
            "report sections computed in this run (or their cache); the x axis of every figure is relative depth, "
            "layer / n_layers with blocks counted from 0.</p>" + sizes + links)
    if failed:
        body += H.paragraph("Sections that failed (their curves are missing): " + "; ".join(failed))
    body += '<section id="summary" class="summary"><h2>What we found</h2>' + H.findings(summary) + "</section>"
    for c, sentence in zip(CURVES, curve_sentences):
        fig = curve_figure(c, profiles) if any(c.key in p.curves for p in profiles) else None
        body += (f'<section id="{c.key}"><h2>{H.escape(c.title)}</h2>'
                 + (H.plotly_figure(fig, "How to read this: " + c.how_to_read) if fig else "")
                 + H.findings([sentence]) + "</section>")
    rows = [[p.card["name"], p.sae["layer"], f"{p.sae['depth']:.2f}", f"{p.sae['d_sae']} ({p.sae['width']:g} x d_model)",
             f"{p.sae['explained_variance']:.3f}", f"{p.sae['ce_loss_recovered']:.3f}", f"{p.sae['dead_fraction']:.3f}"]
            for p in profiles if p.sae]
    body += ('<section id="sae"><h2>Sparse autoencoder at matched width</h2>'
             + H.table(rows, header=["model", "layer", "relative depth", "latents", "explained variance",
                                     "CE loss recovered", "dead fraction"])
             + H.findings([sae_finding(profiles)]) + "</section>")
    return H.document(f"uncover compare: {names}", f"Depth and scale: {names}", body)


def write_compare(reports: Sequence["BuiltReport"], path: str | Path) -> Path:
    """Write the compare page of ``reports`` (the first is the main model) to ``path``; returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profiles = [profile(r, os.path.relpath(r.path, path.parent)) for r in reports]
    path.write_text(compare_page(profiles))
    return path
