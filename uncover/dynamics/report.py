"""The report's "Training dynamics" section: toy runs of grokking (with progress measures and phases),
slingshots and the LU weight-norm curves, memorisation with corrupted labels, the induction-head phase
change, and double descent. The quick default fits ~2 minutes on a 2-core CPU; ``ctx.full`` runs Nanda et
al.'s configuration and larger sweeps. A saved grokking run in ``<work_dir>/grok`` (from ``uncover grok
--out <work_dir>``) is used instead of retraining when present.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from uncover.report import claims as C
from uncover.report import html as H
from uncover.report.section import ReportContext

# cut-offs of the findings' and captions' wording (uncover.report.claims); each is printed with its claim
FALLEN = C.Threshold("fallen", 0.5, "fraction of its first measured value")  # a loss "has fallen" below this
EXCLUDED_RISE = C.Threshold("excluded_rise", 0.1, "excluded loss change", "nats")
FOURIER_SPARSE = C.Threshold("fourier_sparse", 0.5, "Gini coefficient of the embedding's Fourier norms")
LOSS_GAP = C.Threshold("loss_gap", 0.1, "loss gap", "nats")  # L / U shapes and "fell"
MEMORISED = C.Threshold("memorised", 0.5, "accuracy on the corrupted labels")  # as classify_phase
MEM_DROP = C.Threshold("mem_drop", 0.2, "drop in accuracy on the corrupted labels")
REMOVED = C.Threshold("removed", 0.05, "accuracy on the corrupted labels after pruning")
INDUCTION_FORMED = C.Threshold("induction_formed", 0.3, "best induction score")
PEAK_RATIO = C.Threshold("peak_ratio", 1.5, "peak / lowest test MSE on each side")
NEAR_N_TRAIN = C.Threshold("near_n_train", 1.2, "peak width / n_train (or its inverse)")


@contextmanager
def _one_thread() -> Iterator[None]:
    """Toy models are many small ops: one intra-op thread is faster than two on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _grokking(ctx: ReportContext) -> dict[str, Any]:
    from uncover.core.results import JSON_FILE
    from uncover.dynamics.grokking import GrokConfig, GrokResult, run_grokking

    saved = Path(ctx.work_dir) / "grok"
    if (saved / JSON_FILE).exists():  # a GrokResult folder
        summary = GrokResult.load(saved).summary()
        summary["source"] = f"saved run in {saved}"
        return summary
    if ctx.full:
        cfg = GrokConfig(steps=20_000, eval_every=100, measure_every=500, seed=ctx.seed)
    else:
        cfg = GrokConfig(p=59, train_frac=0.6, lr=3e-3, steps=500, eval_every=25, measure_every=50, seed=ctx.seed)
    summary = run_grokking(cfg, out_dir=saved if ctx.full else None).summary()
    summary["source"] = "trained for this report"
    return summary


def _quick_or_full(ctx: ReportContext, quick: dict, full: dict) -> dict:
    return full if ctx.full else quick


class DynamicsSection:
    key = "dynamics"
    title = "Training dynamics: grokking, memorisation, induction heads, double descent"
    version = "1"

    def compute(self, model: Any, ctx: ReportContext) -> dict[str, Any]:
        from uncover.dynamics.double_descent import DoubleDescentConfig, run_double_descent
        from uncover.dynamics.induction import InductionConfig, run_induction
        from uncover.dynamics.memorization import MemorizationConfig, phase_diagram, run_memorization
        from uncover.dynamics.norms import init_decay_sweep, norm_sweep, run_slingshots

        experiments = ["grokking", "slingshots", "weight norm", "memorisation", "induction", "double descent"]
        data: dict[str, Any] = {}
        with _one_thread():
            for name in ctx.progress(experiments, "training dynamics"):
                if name == "grokking":
                    data["grok"] = _grokking(ctx)
                elif name == "slingshots":
                    kw = _quick_or_full(ctx, dict(p=31, steps=1500, d_model=64, lr=3e-3),
                                        dict(p=97, steps=20_000, d_model=128, lr=1e-3))
                    data["slingshots"] = run_slingshots(seed=ctx.seed, **kw).summary()
                elif name == "weight norm":
                    kw = _quick_or_full(ctx, dict(p=23, width=64, steps=300), dict(p=31, width=128, steps=1500))
                    data["norm_sweep"] = norm_sweep([2, 4, 8, 16, 32, 64], seed=ctx.seed, **kw)
                    scales, decays = ([0.5, 1.0, 3.0], [0.0, 0.1, 1.0]) if ctx.full else ([0.5, 3.0], [0.0, 1.0])
                    data["init_decay_sweep"] = init_decay_sweep(scales, decays, seed=ctx.seed, **kw)
                elif name == "memorisation":
                    cfg = _quick_or_full(ctx, dict(p=31, width=128, steps=1200, lr=1e-2),
                                         dict(p=61, width=512, steps=5000, lr=5e-3))
                    mem = MemorizationConfig(act_fn="quadratic", seed=ctx.seed, **cfg)
                    data["memorization"] = run_memorization(mem).summary()
                    if ctx.full:
                        data["phase_diagram"] = phase_diagram([0.1, 0.3, 0.5], [0.1, 1.0, 3.0], base=mem)
                elif name == "induction":
                    steps = 2000 if ctx.full else 600
                    data["induction"] = run_induction(InductionConfig(steps=steps, seed=ctx.seed)).summary()
                else:
                    repeats = 10 if ctx.full else 3
                    data["double_descent"] = run_double_descent(DoubleDescentConfig(n_repeats=repeats,
                                                                                    seed=ctx.seed)).summary()
        return data

    # ---- rendering ----------------------------------------------------------------------------
    def render(self, data: dict[str, Any]) -> str:
        from uncover.dynamics import plots

        parts = [H.paragraph(
            "These experiments train small models from scratch (they do not use the report's language model): "
            "how generalisation arises during training (survey section 4).")]
        grok = data["grok"]
        parts += ["<h3>Grokking modular addition</h3>", H.findings(_grok_findings(grok), headline=1),
                  H.plotly_figure(plots.grok_curves(grok), "Loss and accuracy with the detected phases shaded."),
                  H.plotly_figure(plots.grok_measures(grok), _measures_caption(grok)),
                  H.plotly_figure(plots.embed_frequencies(grok), _fourier_caption(grok))]
        sling = data["slingshots"]
        free = data.get("init_decay_sweep", [])
        parts += ["<h3>Slingshots and weight norm</h3>", H.findings(_sling_findings(sling, data["norm_sweep"], free)),
                  H.plotly_figure(plots.slingshots(sling), "Training loss and last-layer norm; spikes marked."),
                  H.plotly_figure(plots.lu_curves(data["norm_sweep"], free), _lu_caption(data["norm_sweep"]))]
        mem = data["memorization"]
        parts += ["<h3>Memorisation with corrupted labels</h3>", H.findings(_mem_findings(mem)),
                  H.plotly_figure(plots.memorization(mem), _pruning_caption(mem))]
        if "phase_diagram" in data:
            rows = data["phase_diagram"]
            parts.append(H.plotly_figure(plots.phase_diagram(rows), "Doshi et al.'s phases over corruption x weight decay."))
            parts.append(H.table([[r["corrupt_frac"], r["weight_decay"], r["phase"], f"{r['test_acc']:.3f}",
                                   f"{r.get('corrupt_mem_acc', 0):.3f}", f"{r['mean_ipr']:.3f}"] for r in rows],
                                 ["corrupted", "weight decay", "phase", "test acc", "corrupted memorised", "mean IPR"]))
        ind = data["induction"]
        parts += ["<h3>Induction heads during training</h3>", H.findings(_induction_findings(ind), headline=1),
                  H.plotly_figure(plots.induction(ind), "ICL score and head scores over training.")]
        dd = data["double_descent"]
        parts += ["<h3>Double descent</h3>", H.findings(_dd_findings(dd)),
                  H.plotly_figure(plots.double_descent(dd), "Test loss against width.")]
        return "\n".join(parts)


def _grok_findings(g: dict[str, Any]) -> list[str]:
    c = g["config"]
    last = g["curves"][-1]
    ph = g["phases"]
    out = [f"A one-layer transformer on (a + b) mod {c['p']} with {c['train_frac']:.0%} of pairs for training "
           f"({g['source']}) reached train accuracy {last['train_acc']:.1%} and test accuracy {last['test_acc']:.1%} "
           f"after {g['steps_done']} steps ({g['train_seconds']:.0f} s of training)."]
    if ph["memorised"] is not None:
        out.append(f"Memorisation: train accuracy reached 99% at step {ph['memorised']}.")
    if ph["generalised"] is not None and ph["memorised"] is not None and ph["cleanup_start"] is not None:
        out.append(f"Circuit formation ran from step {ph['memorised']} to {ph['cleanup_start']}, and cleanup to "
                   f"step {ph['generalised']} where test accuracy reached 99% "
                   f"({ph['generalised'] / max(ph['memorised'], 1):.1f}x the memorisation step).")
    elif ph["generalised"] is not None:
        out.append(f"Test accuracy reached 99% at step {ph['generalised']}.")
    else:
        out.append("Test accuracy did not reach 99% within the run.")
    m0, m1 = g["measures"][0], g["measures"][-1]
    out.append(f"Key frequencies found from the logits: {g['key_freqs']}; restricted loss went from "
               f"{m0['restricted_loss']:.3g} to {m1['restricted_loss']:.3g}, excluded loss from "
               f"{m0['excluded_loss']:.3g} to {m1['excluded_loss']:.3g}; the Gini coefficient of the embedding's "
               f"Fourier norms from {m0['gini_embed']:.2f} to {m1['gini_embed']:.2f} and the total weight norm from "
               f"{m0['norm_total']:.1f} to {m1['norm_total']:.1f}.")
    return out


def _sling_findings(s: dict[str, Any], sweep: list[dict[str, Any]], free: list[dict[str, Any]]) -> list[str]:
    spikes = s["spikes"]
    onset = s["onset"]
    out = [f"With Adam and no weight decay (p={s['config']['p']}, {s['config']['steps']} steps), "
           f"{len(spikes)} training-loss spike(s) were detected (a jump of at least 10x over the previous 50 steps' "
           f"minimum)" + (f"; test accuracy first reached 50% at step {onset}." if onset else
                          "; test accuracy never reached 50%.")]
    for sp in spikes[:5]:
        rel = f", {sp['peak'] - onset:+d} steps from that onset" if onset else ""
        growth = f"; the last-layer norm grew {sp['norm_growth']:.2f}x over the 50 steps before" if sp["norm_growth"] else ""
        out.append(f"Spike at step {sp['peak']}: loss {sp['loss_before']:.2g} -> {sp['loss_peak']:.2g}{rel}{growth}.")
    best = min(sweep, key=lambda r: r["test_loss"])
    fell = C.direction(sweep[0]["train_loss"] - sweep[-1]["train_loss"], LOSS_GAP, "fell", "rose",
                       "did not clearly change")
    out.append(f"Training at fixed weight norms, train loss {fell.word} from {sweep[0]['train_loss']:.2f} (norm "
               f"{sweep[0]['norm']}) to {sweep[-1]['train_loss']:.3f} (norm {sweep[-1]['norm']}; {fell.test}), while "
               f"test loss was lowest ({best['test_loss']:.2f}, test accuracy {best['test_acc']:.1%}) at norm "
               f"{best['norm']}.")
    for r in free:
        out.append(f"Free run with initial scale x{r['init_scale']} and weight decay {r['weight_decay']}: final norm "
                   f"{r['final_norm']:.1f}, train loss {r['train_loss']:.3f}, test loss {r['test_loss']:.2f} "
                   f"(test accuracy {r['test_acc']:.1%}).")
    return out


def _mem_findings(m: dict[str, Any]) -> list[str]:
    c, f = m["config"], m["final"]
    mem = C.at_least(f.get("corrupt_mem_acc", 0.0), MEMORISED, "memorised", "not memorised")
    out = [f"An MLP (width {c['width']}, {c['act_fn']} activation) on (a + b) mod {c['p']} with {c['corrupt_frac']:.0%} "
           f"of training labels corrupted: test accuracy {f['test_acc']:.1%}, accuracy on the corrupted labels "
           f"{f.get('corrupt_mem_acc', 0):.1%} ({mem.word}: {mem.test}) -> phase '{m['phase']}'."]
    ipr = sorted(m["neuron_ipr"])
    out.append(f"Neuron IPR (1 = a single Fourier frequency): median {ipr[len(ipr) // 2]:.2f}, "
               f"10th percentile {ipr[len(ipr) // 10]:.2f}, 90th percentile {ipr[9 * len(ipr) // 10]:.2f}.")
    if m["pruning"]:
        a, b = m["pruning"][0], m["pruning"][-1]
        out.append(f"Pruning the {b['pruned_frac']:.0%} lowest-IPR neurons moved accuracy on the corrupted labels "
                   f"from {a.get('corrupt_mem_acc', 0):.1%} to {b.get('corrupt_mem_acc', 0):.1%} and test accuracy "
                   f"from {a['test_acc']:.1%} to {b['test_acc']:.1%}.")
        best = max(m["pruning"], key=lambda r: r["test_acc"])
        out.append(f"Test accuracy was highest ({best['test_acc']:.1%}) with {best['pruned_frac']:.0%} of neurons "
                   f"pruned, where {best.get('corrupt_mem_acc', 0):.1%} of corrupted labels were still memorised.")
    return out


def _induction_findings(d: dict[str, Any]) -> list[str]:
    first, last = d["curves"][0], d["curves"][-1]
    formed = C.at_least(max(max(row) for row in d["final_induction_scores"]), INDUCTION_FORMED,
                        "Induction heads formed", "No induction head formed")
    window = 2 * d["config"]["eval_every"]
    if formed.holds:
        together = ("the two coincide in one phase change" if _close(d) else "they do not coincide") + \
            f" (same phase change: within {window} steps of each other)"
    else:
        together = "with no induction head formed, there is no phase change to place"
    return [f"A 2-layer attention-only transformer on repeated random sequences: the ICL score (late minus early "
            f"loss) went from {first['icl_score']:.2f} to {last['icl_score']:.2f} nats and the best induction score "
            f"from {first['induction_score']:.2f} to {last['induction_score']:.2f}.",
            f"{formed.word} ({formed.test}): at the end the strongest induction head is "
            f"{_best_head(d['final_induction_scores'])} and the strongest previous-token head is "
            f"{_best_head(d['final_prev_token_scores'])}.",
            f"The ICL score fell fastest at step {d['icl_change_step']} and the induction score rose fastest at step "
            f"{d['induction_change_step']}: {together}."]


def _close(d: dict[str, Any]) -> bool:
    a, b = d["icl_change_step"], d["induction_change_step"]
    return a is not None and b is not None and abs(a - b) <= 2 * d["config"]["eval_every"]


def _best_head(scores: list[list[float]]) -> str:
    layer, head = max(((l, h) for l in range(len(scores)) for h in range(len(scores[l]))),
                      key=lambda lh: scores[lh[0]][lh[1]])
    return f"L{layer}H{head} (score {scores[layer][head]:.2f})"


def _dd_findings(d: dict[str, Any]) -> list[str]:
    c = d["config"]
    w, t = d["widths"], d["test_loss"]
    i = w.index(d["peak_width"])
    head = f"Random-features regression with {c['n_train']} noisy training points (noise std {c['noise']}): "
    if i == 0 or i == len(w) - 1:
        return [head + f"test MSE is highest ({t[i]:.2f}) at the {'smallest' if i == 0 else 'largest'} width "
                f"{w[i]}: no peak between widths, so no double descent in this sweep."]
    low_before, low_after = min(t[:i]), min(t[i + 1:])
    peak = C.at_least(t[i] / max(low_before, low_after, 1e-12), PEAK_RATIO, "peaks", "has no clear peak")
    near = max(w[i] / c["n_train"], c["n_train"] / w[i])
    where = C.at_most(near, NEAR_N_TRAIN, "at the interpolation threshold", "away from the interpolation threshold")
    return [head + f"test MSE falls to {low_before:.2f}, {peak.word} at {t[i]:.2f} at width {d['peak_width']} "
            f"({peak.test}), {where.word} (n_train = {c['n_train']}; {where.test}), and reaches {low_after:.2f} at "
            f"larger widths ({t[-1]:.2f} at width {w[-1]})."]


def _measures_caption(g: dict[str, Any]) -> str:
    """Whether restricted loss falls (below FALLEN of its first value) before the test loss, and whether the
    excluded loss rises, read from the progress-measure snapshots."""
    rows = g["measures"]
    step = {k: _fall_step(rows, k) for k in ("restricted_loss", "test_loss")}
    r, t = step["restricted_loss"], step["test_loss"]
    rule = f"'falls': below {FALLEN.value:g} x its first measured value"
    if r is None:
        order = "Restricted loss does not fall"
    elif t is None:
        order = f"Restricted loss falls at step {r}; the test loss does not fall"
    else:
        order = (f"Restricted loss falls at step {r}, " +
                 ("before" if r < t else "at the same snapshot as" if r == t else "after") + f" the test loss ({t})")
    rise = C.direction(rows[-1]["excluded_loss"] - rows[0]["excluded_loss"], EXCLUDED_RISE, "rises", "falls",
                       "does not clearly change")
    return (f"{order} ({rule}); excluded loss {rise.word} ({rows[0]['excluded_loss']:.3g} -> "
            f"{rows[-1]['excluded_loss']:.3g}; {rise.test}).")


def _fall_step(rows: list[dict[str, Any]], key: str) -> int | None:
    values = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    if not values:
        return None
    first = values[0][1]
    return next((s for s, v in values if v <= FALLEN.value * first), None)


def _fourier_caption(g: dict[str, Any]) -> str:
    gini = g["measures"][-1]["gini_embed"]
    sparse = C.at_least(gini, FOURIER_SPARSE, "is sparse", "is not clearly sparse")
    return f"The final embedding {sparse.word} in the Fourier basis ({sparse.test}: {gini:.2f})."


def _lu_caption(sweep: list[dict[str, Any]]) -> str:
    """L: train loss high at the smallest norm and within LOSS_GAP of its minimum at the largest.
    U: test loss's minimum at an interior norm, at least LOSS_GAP below both ends."""
    rows = sorted(sweep, key=lambda r: r["norm"])
    train, test = [r["train_loss"] for r in rows], [r["test_loss"] for r in rows]
    is_l = train[0] - min(train) >= LOSS_GAP.value and train[-1] - min(train) < LOSS_GAP.value
    j = test.index(min(test))
    is_u = 0 < j < len(test) - 1 and min(test[0], test[-1]) - test[j] >= LOSS_GAP.value
    return (f"Against the weight norm, train loss is {'' if is_l else 'not '}L-shaped and test loss is "
            f"{'' if is_u else 'not '}U-shaped (L: falls by ≥ {LOSS_GAP.fmt()} from the smallest norm and stays "
            f"within {LOSS_GAP.fmt()} of its minimum; U: lowest at an inner norm, ≥ {LOSS_GAP.fmt()} below both ends).")


def _pruning_caption(m: dict[str, Any]) -> str:
    rows = m["pruning"]
    if not rows:
        return "No pruning: without corrupted labels there is no memorisation to remove."
    a, b = rows[0].get("corrupt_mem_acc", 0.0), rows[-1].get("corrupt_mem_acc", 0.0)
    drop = C.direction(a - b, MEM_DROP, "lowers", "raises", "does not clearly change")
    if drop.holds and b <= REMOVED.value:
        word = f"removes memorisation ({drop.test}; {REMOVED.what} ≤ {REMOVED.fmt()})"
    else:
        word = f"{drop.word} memorisation ({drop.test})"
    return (f"Pruning the {rows[-1]['pruned_frac']:.0%} lowest-IPR neurons {word}: accuracy on the corrupted labels "
            f"{a:.1%} -> {b:.1%}.")


SECTION = DynamicsSection()
