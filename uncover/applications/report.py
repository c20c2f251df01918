"""Report fragments of the applications experiments: lying heads and fine-tuning wrappers (findings whose
every qualitative word is chosen by a named threshold, tables and figures). The section that shows them is
``uncover.applications.pruning.report``; the CLIs print the same findings."""
from __future__ import annotations

import math
from typing import Sequence

from uncover.applications.alignment import lying as L
from uncover.applications.alignment.lying import LyingResult
from uncover.applications.wrappers import FEW_UNITS, WrapperResult
from uncover.report import claims as C

# lying heads: the algorithm's cut-offs, as the claims that print them
HONEST_MIN = C.Threshold("honest", L.HONEST_MIN, "honest accuracy")
LYING_MAX = C.Threshold("lying", L.LYING_MAX, "lying accuracy")
RESTORE = C.Threshold("restore", L.RESTORE, "share of the honest - lying accuracy gap restored")
READS = C.Threshold("reads", L.READS, "probe held-out accuracy")
# fine-tuning wrappers: the three claims
PROBE_READS = C.Threshold("still reads", 0.1, "probe accuracy of the fine-tuned model minus that of a random model")
DROPS = C.Threshold("drops", 0.2, "capability accuracy lost by fine-tuning")
RESTORES = C.Threshold("restores", 0.5, "share of the capability accuracy lost by fine-tuning that pruning recovers")
REVIVES = C.Threshold("revives faster", 2.0, "steps from scratch / steps of reverse fine-tuning", "x")


# ---- findings and rendering --------------------------------------------------------------------------
def _label(hd: Sequence[int]) -> str:
    return f"L{hd[0]}H{hd[1]}"


def condition_claims(row: dict) -> tuple[C.Claim, C.Claim]:
    """(honest claim, lying claim) of one condition row: answers correctly / follows the lie."""
    honest = C.at_least(row["honest_acc"], HONEST_MIN, "answers correctly", "does not reliably answer correctly")
    lying = C.at_most(row["lying_acc"], LYING_MAX, "lies", "does not reliably lie")
    return honest, lying


def lying_findings(result: LyingResult) -> list[str]:
    """A few sentences of measured findings; every qualitative word is chosen by a stated test."""
    out = []
    first = result.conditions[0]
    honest, lying = condition_claims(first)
    out.append(f"In the first condition ({first['name']}, {first['n']} statements, calibrated accuracy: the half "
               f"with the larger logit(True) - logit(False) answer True) the model {honest} when told to be honest "
               f"({first['honest_acc']:.0%}) and {lying} when told to lie ({first['lying_acc']:.0%}); at the raw "
               f"threshold it answers True on {first['honest_true_share']:.0%} / {first['lying_true_share']:.0%} "
               f"of statements (raw accuracy {first['honest_raw_acc']:.0%} / {first['lying_raw_acc']:.0%}).")
    passing = [r["name"] for r in result.conditions if r["follows"]]
    tried = "; ".join(f"{r['name']}: honest {r['honest_acc']:.0%}, lying {r['lying_acc']:.0%}" for r in result.conditions)
    test = f"{HONEST_MIN.what} ≥ {HONEST_MIN.fmt()} and {LYING_MAX.what} ≤ {LYING_MAX.fmt()}"
    if result.followed:
        out.append(f"Conditions tried ({tried}); the model follows the lying instruction (test: {test}) in "
                   f"{', '.join(passing)}; the analysis below uses {result.chosen}.")
    else:
        out.append(f"Conditions tried ({tried}); the model follows the lying instruction (test: {test}) in none "
                   f"of them; the analysis below uses the widest honest - lying gap, {result.chosen} "
                   f"({result.honest_acc:.0%} vs {result.lying_acc:.0%}), and it fails the test, so the heads below carry a partial lie.")
    best = int(result.resid_probe.argmax())
    reads = C.at_least(float(result.resid_probe[best]), READS, "separates", "does not reliably separate")
    n_heads = int((result.head_probe >= READS.value).sum())
    hb = divmod(int(result.head_probe.flatten().argmax()), result.head_probe.shape[1])
    out.append(f"A {result.meta.get('probe', 'linear')} probe on the last position's residual {reads} honest from "
               f"lying runs, best at layer {best} ({float(result.resid_probe[best]):.0%} held out); "
               f"{n_heads} of {result.head_probe.numel()} heads' outputs reach {READS.fmt()} (best "
               f"{_label(hb)}, {float(result.head_probe[hb]):.0%}).")
    top = ", ".join(f"{_label(hd)} ({float(result.patch_effect[hd]):+.2f})" for hd in result.order[:4])
    ceiling = C.at_least(result.restored_share(result.all_heads_accuracy), RESTORE, "restores", "does not restore")
    out.append(f"Patching single heads from the honest into the lying run (normalised effect: 0 lying, 1 honest), "
               f"strongest: {top}; patching every head at once {ceiling} honest answers "
               f"({result.all_heads_accuracy:.0%}).")
    if result.restored_k is not None:
        j = result.set_sizes.index(result.restored_k)
        out.append(f"The smallest set of heads, best first, whose joint patching restores honest answers (test: "
                   f"{RESTORE.what} ≥ {RESTORE.fmt()}): {result.restored_k} heads "
                   f"({', '.join(_label(hd) for hd in result.heads())}), accuracy {result.set_accuracy[j]:.0%} "
                   f"against {result.honest_acc:.0%} honest and {result.lying_acc:.0%} lying.")
    elif result.set_sizes:
        j = max(range(len(result.set_sizes)), key=lambda i: result.set_accuracy[i])
        out.append(f"No set of up to {result.set_sizes[-1]} heads (best first) restores honest answers (test: "
                   f"{RESTORE.what} ≥ {RESTORE.fmt()}); the best, {result.set_sizes[j]} heads, reaches "
                   f"{result.set_accuracy[j]:.0%} against {result.honest_acc:.0%} honest and "
                   f"{result.lying_acc:.0%} lying.")
    return out


def lying_figure(result: LyingResult):
    """Plotly heatmaps [n_layers, n_heads]: measured patching effect and head probe accuracy."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("patching effect (0 lying, 1 honest)",
                                                        "probe accuracy honest vs lying"), horizontal_spacing=0.14)
    # each with its colour key, beside its own panel (without one the colours could not be read)
    fig.add_trace(go.Heatmap(z=result.patch_effect.tolist(), colorscale="RdBu", zmid=0,
                             colorbar=dict(x=fig.layout.xaxis.domain[1] + 0.01, xanchor="left", thickness=12,
                                           title="effect")), 1, 1)
    fig.add_trace(go.Heatmap(z=result.head_probe.tolist(), colorscale="Viridis",
                             colorbar=dict(x=fig.layout.xaxis2.domain[1] + 0.01, xanchor="left", thickness=12,
                                           title="accuracy")), 1, 2)
    for col in (1, 2):
        fig.update_xaxes(title_text="head", row=1, col=col)
        fig.update_yaxes(title_text="layer", row=1, col=col)
    fig.update_layout(height=420, margin=dict(l=40, r=70, t=40, b=40))
    return fig


def render_lying(result: LyingResult) -> str:
    """An HTML fragment: findings, the conditions table, the head-set table and the heatmaps."""
    from uncover.report import html as H

    cond = [[r["name"], r["tokens"], f"{r['honest_acc']:.0%}", f"{r['lying_acc']:.0%}",
             f"{r['honest_raw_acc']:.0%}", f"{r['lying_raw_acc']:.0%}", "yes" if r["follows"] else "no"]
            for r in result.conditions]
    sets = [[k, ", ".join(_label(hd) for hd in result.order[:k]), f"{a:.0%}", f"{e:+.2f}"]
            for k, a, e in zip(result.set_sizes, result.set_accuracy, result.set_effect)]
    sets.append(["all", "every head", f"{result.all_heads_accuracy:.0%}", f"{result.all_heads_effect:+.2f}"])
    return ("<h3>Lying heads</h3>" + H.findings(lying_findings(result), headline=1)
            + H.table(cond, ["condition", "tokens", "honest acc", "lying acc", "honest raw", "lying raw",
                             "follows"])
            + H.plotly_figure(lying_figure(result), f"Chosen condition: {result.chosen}. Left: each candidate head's "
                                                     "hook_z patched from the honest run (grey: not measured). "
                                                     "Right: held-out probe accuracy per head.")
            + H.table(sets, ["heads patched", "heads", "accuracy", "normalised effect"]))


def wrapper_findings(r: WrapperResult) -> list[str]:
    """One sentence per claim, its wording chosen by the named threshold on the data."""
    cfg = r.config
    A, B = cfg["capability_token"], cfg["finetune_token"]
    drop = C.at_least(r.capability_drop, DROPS, "drops", "does not clearly drop")
    out = [f"Pre-training teaches the count of token {A} ({r.pretrained_acc:.1%} of positions right, "
           f"{r.random_acc:.1%} untrained); fine-tuning on the count of token {B} ({r.finetuned_finetune_acc:.1%} "
           f"right after, {r.pretrained_finetune_acc:.1%} before) the capability's accuracy {drop} to "
           f"{r.finetuned_acc:.1%}."]
    reads = C.at_least(r.probe_margin, PROBE_READS, "still reads", "no longer reads")
    out.append(f"After fine-tuning a linear probe {reads} the count of token {A}: {r.probe_finetuned:.1%} held-out "
               f"accuracy (best layer) against {r.probe_random:.1%} on a randomly initialised model and "
               f"{max(r.probe['pretrained']):.1%} on the pre-trained one.")
    ranking, k, share = r.best_restore()
    few = int(math.floor(FEW_UNITS * r.n_units))
    if ranking:
        i = r.prune_counts.index(k)
        restores = C.at_least(share if k <= few else float("nan"), RESTORES, "restores", "does not restore")
        out.append(f"Pruning {k} of {r.n_units} units ({k / r.n_units:.1%}; ranked by {ranking}) {restores} the "
                   f"pre-training behaviour: capability accuracy {r.finetuned_acc:.1%} -> "
                   f"{r.prune[ranking]['capability'][i]:.1%}, {share:.0%} of what fine-tuning removed "
                   f"(top units: {', '.join(r.prune[ranking]['units'][:5])}).")
    else:
        out.append(f"Pruning does not restore the pre-training behaviour: fine-tuning removed no capability "
                   f"accuracy to recover ({r.capability_drop:+.1%}).")
    speed = C.at_least(r.revive_speedup, REVIVES, "revives it faster", "does not revive it clearly faster")
    rev = f"{r.revive_steps} steps" if r.revive_steps is not None else f"not within {len(r.revive_curve) - 1} steps"
    scr = (f"{r.scratch_steps} steps" if r.scratch_steps is not None
           else f"not within {len(r.scratch_curve) - 1} steps")
    out.append(f"Reverse fine-tuning on the count of token {A} {speed} than learning it from scratch (same "
               f"optimiser and batches): {cfg['revive_acc']:.0%} accuracy after {rev} against {scr}.")
    return out


def revive_figure(r: WrapperResult):
    """Capability accuracy against training steps: reverse fine-tuning vs from scratch, with the threshold."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, curve in (("reverse fine-tuning", r.revive_curve), ("from scratch", r.scratch_curve)):
        fig.add_trace(go.Scatter(x=list(range(len(curve))), y=list(curve), mode="lines", name=name))
    fig.add_hline(y=r.config["revive_acc"], line_dash="dash", line_color="#999",
                  annotation_text=f"{r.config['revive_acc']:.0%}")
    fig.update_layout(height=320, xaxis_title="training steps on the pre-training task",
                      yaxis_title="capability accuracy", yaxis_range=[0, 1.02], margin=dict(l=60, r=20, t=30, b=50))
    return fig


def render_wrappers(r: WrapperResult) -> str:
    """HTML fragment: findings, the revival plot, the pruning table."""
    from uncover.report import html as H

    rows = []
    for ranking, d in r.prune.items():
        for i, k in enumerate(r.prune_counts):
            rows.append([ranking, k, f"{d['capability'][i]:.1%}", f"{d['finetune'][i]:.1%}"])
    probe_rows = [[site] + [f"{r.probe[m][i]:.1%}" for m in ("pretrained", "finetuned", "random")]
                  for i, site in enumerate(r.probe_sites)]
    return ("<h3>Fine-tuning wrappers (toy counting transformer)</h3>" + H.findings(wrapper_findings(r))
            + H.plotly_figure(revive_figure(r), "Capability accuracy on held-out sequences after each step: the "
                                                "fine-tuned model trained back on the pre-training task, against "
                                                "the same training from the pre-training initialisation.")
            + H.table(probe_rows, ["probe site", "pre-trained", "fine-tuned", "random init"])
            + H.table(rows, ["ranking", "units pruned", "capability accuracy", "fine-tune task accuracy"]))
