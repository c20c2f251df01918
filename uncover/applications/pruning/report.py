"""Report section "Applications: pruning and alignment".

Quick default (smollm2, about 60-90 s on 2 idle CPU cores): iterative head pruning by six importance
measures at 10/20/30% with held-out perplexity, IOI logit difference and fact accuracy; the best measure's
20% plan built as a physically smaller model (parameters, forward speed, logits against the masks); bias
heads masked one by one on held-out templates; the negative-sentiment and offensive word lists' value
vectors and probe direction with their interventions; lying heads (honest / lying conditions, probes, head
patching; 24 statements, the 12 heads with the largest attribution patched, 2-3 min); the fine-tuning
wrapper experiment on a toy counting transformer trained here (test size, about 30 s). ``ctx.full``: more
calibration and evaluation data, shares up to 50%, neurons as well as heads, more intervention strengths,
64 lying statements with every head patched, the default-size wrapper experiment.
"""
from __future__ import annotations

from typing import Any

from uncover.report import claims as C
from uncover.report import html as H
from uncover.report.section import ReportContext, run_parts

SIZES = {
    "quick": {"calibration": 8, "heldout": 8, "seq_len": 128, "ioi": 16, "facts": 24, "shares": [0.1, 0.2, 0.3],
              "units": ["heads"], "bias_counts": [1, 2, 4, 8, 16], "vectors": [16, 64], "aligned": [64],
              "alphas": [0.05, 0.15], "lists": ["negative", "offensive"], "wrappers": "test",
              "lying": 24, "lying_candidates": 12},
    "full": {"calibration": 32, "heldout": 32, "seq_len": 256, "ioi": 48, "facts": 64,
             "shares": [0.1, 0.2, 0.3, 0.4, 0.5], "units": ["heads", "neurons"],
             "bias_counts": [1, 2, 4, 8, 16, 24, 32, 48], "vectors": [16, 64, 256], "aligned": [16, 64, 256],
             "alphas": [0.02, 0.05, 0.1, 0.2], "lists": ["negative", "offensive"], "wrappers": "default",
             "lying": 64, "lying_candidates": None},
}
AT_SHARE = 0.2
BEATS = C.Threshold("beats", 0.01, "perplexity margin over the better of random and magnitude")
SAME_LOGITS = C.Threshold("same", 1e-4, "max |logit difference| pruned vs masked")
FASTER = C.Threshold("faster", 1.05, "forward-time ratio original / pruned")
BIAS_HALF = 0.5
PPL_RISE = 0.10


def _pruning(model, ctx, size, cal, held) -> dict[str, Any]:
    import torch

    from uncover.applications.pruning.curves import eval_set, pruning_curves
    from uncover.applications.pruning.physical import forward_seconds, n_params, prune_model

    data = eval_set(model, held, n_ioi=size["ioi"], n_facts=size["facts"], seed=ctx.seed)
    out: dict[str, Any] = {"n_facts": len(data.fact_prompts), "n_heldout_tokens": int(held.numel()), "curves": {}}
    for unit in size["units"]:
        curves = pruning_curves(model, cal, data, unit=unit, shares=size["shares"], seed=ctx.seed,
                                progress=ctx.progress)
        out["curves"][unit] = {"shares": curves.shares, "values": curves.values}
        if unit == "heads":
            learned = [m for m in curves.values if m not in ("random", "magnitude")]
            best = curves.best("perplexity", AT_SHARE, learned)
            i = curves.shares.index(min(curves.shares, key=lambda s: abs(s - AT_SHARE)))
            plan = curves.plans[best][i]
            pruned = prune_model(model, plan)
            with torch.no_grad(), model.hooks(plan.hooks()):
                masked = model(held[:2])
                diff = float((pruned(held[:2]) - masked).abs().max())
            t0, t1 = forward_seconds(model, held[:4]), forward_seconds(pruned, held[:4])
            out["physical"] = {"method": best, "share": curves.shares[i], "removed": plan.count("heads"),
                               "params": [n_params(model), n_params(pruned)], "seconds": [t0, t1],
                               "max_diff": diff}
    return out


def _bias(model, ctx, size, cal, held) -> dict[str, Any]:
    from uncover.applications.alignment.bias import bias_heads

    r = bias_heads(model, held, counts=size["bias_counts"], progress=ctx.progress)
    return {"counts": r.counts, "bias_test": r.bias_test, "bias_train": r.bias_train, "agreement": r.agreement_test,
            "perplexity": r.perplexity, "top": [f"L{l}H{h}" for l, h in r.order[:8]], "crossing": r.crossing()}


def _lying(model, ctx, size, cal, held) -> dict[str, Any]:
    from uncover.applications.alignment.lying import lying_heads

    r = lying_heads(model, n=size["lying"], candidates=size["lying_candidates"], seed=ctx.seed, progress=ctx.progress)
    return {"result": _plain(r.to_fields())}


def _plain(x: Any) -> Any:
    """JSON-able copy of result fields: tensors become {"tensor": nested lists, "dtype": name}."""
    import torch

    if isinstance(x, torch.Tensor):
        return {"tensor": x.tolist(), "dtype": str(x.dtype).removeprefix("torch.")}
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _unplain(x: Any) -> Any:
    """The fields ``_plain`` wrote, with their tensors back."""
    import torch

    if isinstance(x, dict) and set(x) == {"tensor", "dtype"}:
        return torch.tensor(x["tensor"], dtype=getattr(torch, x["dtype"]))
    if isinstance(x, dict):
        return {k: _unplain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_unplain(v) for v in x]
    return x


def _wrappers(model, ctx, size, cal, held) -> dict[str, Any]:
    from uncover.applications.wrappers import WrapperConfig, run_wrappers, test_config

    # a toy transformer trained here (not the report's model): the fine-tuning-wrapper experiment
    cfg = test_config(ctx.seed) if size.get("wrappers") == "test" else WrapperConfig(seed=ctx.seed)
    return {"result": _plain(run_wrappers(cfg, progress=ctx.progress).to_fields())}


def _toxic(model, ctx, size, cal, held) -> dict[str, Any]:
    from uncover.applications.alignment.toxic import unwanted_directions

    out = {}
    for name in size["lists"]:
        r = unwanted_directions(model, name, held, n_vectors=size["vectors"], n_aligned=size["aligned"],
                                alphas=size["alphas"], progress=ctx.progress)
        out[name] = {"words": r.words, "skipped": r.skipped, "top_vectors": r.top_vectors, "rows": r.rows,
                     "probe": {"train": r.probe.train_accuracy, "test": r.probe.test_accuracy,
                               "layer": r.probe.layer},
                     "svd_cosines": r.aligned["svd_cosines"][:3], "aligned_cosines": r.aligned["cosines"][:3],
                     "best": r.best(PPL_RISE)}
    return out


class PruningAlignmentSection:
    key = "pruning_alignment"
    title = "Applications: pruning and alignment"
    version = "2"

    def compute(self, model, ctx: ReportContext, sizes: dict | None = None) -> dict[str, Any]:
        from uncover.applications.pruning.curves import split_corpus

        size = sizes or SIZES["full" if ctx.full else "quick"]
        cal, held = split_corpus(model, size["calibration"], size["heldout"], size["seq_len"], seed=ctx.seed)
        parts = [("pruning", _pruning), ("bias", _bias), ("toxic", _toxic)]
        parts += [("lying", _lying)] if size.get("lying") else []  # sizes may leave these out
        parts += [("wrappers", _wrappers)] if size.get("wrappers") else []
        return run_parts([(name, lambda fn=fn: fn(model, ctx, size, cal, held)) for name, fn in parts])

    def render(self, data: dict[str, Any]) -> str:
        return "".join(f(data.get(k, {})) for k, f in (("pruning", render_pruning), ("bias", render_bias),
                                                        ("toxic", render_toxic), ("lying", render_lying_part),
                                                        ("wrappers", render_wrapper_part))
                       if k in data)


def pruning_findings(data: dict[str, Any]) -> list[str]:
    """Measured sentences on the head-pruning curves and the physically smaller model."""
    c = data["curves"]["heads"]
    shares, values = c["shares"], c["values"]
    i = shares.index(min(shares, key=lambda s: abs(s - AT_SHARE)))
    learned = {m: v["perplexity"][i] for m, v in values.items() if m not in ("random", "magnitude")}
    best = min(learned, key=learned.get)
    baselines = {m: values[m]["perplexity"][i] for m in ("random", "magnitude") if m in values}
    gap = min(baselines.values()) - learned[best] if baselines else float("nan")
    claim = C.at_least(gap, BEATS, "keeps perplexity lower than", "does not keep perplexity lower than")
    base_ppl = values[best]["perplexity"][0]
    all_ppl = ", ".join(f"{m} {v['perplexity'][i]:.1f}" for m, v in values.items())
    out = [f"With {shares[i]:.0%} of heads removed (iterative, re-scored at each step), the best importance measure, "
           f"{best}, {claim} random and magnitude pruning: held-out perplexity {all_ppl} (unpruned {base_ppl:.1f})."]
    for measure, label, better in (("ioi", "IOI logit difference", max), ("facts", "fact accuracy", max)):
        vals = {m: v[measure][i] for m, v in values.items() if v[measure][i] == v[measure][i]}
        if vals:
            top = better(vals, key=vals.get)
            out.append(f"At {shares[i]:.0%}: {label} is highest under {top} ({vals[top]:.2f}; unpruned "
                       f"{values[top][measure][0]:.2f}); " + ", ".join(f"{m} {v:.2f}" for m, v in vals.items()) + ".")
    p = data.get("physical")
    if p:
        same = C.at_most(p["max_diff"], SAME_LOGITS, "equal", "differ from")
        ratio = p["seconds"][0] / p["seconds"][1]
        fast = C.at_least(ratio, FASTER, "runs faster", "shows no clear speed-up")
        out.append(f"The {p['method']} plan at {p['share']:.0%} ({p['removed']} heads) saved as a smaller model has "
                   f"{p['params'][1] / 1e6:.2f} M parameters instead of {p['params'][0] / 1e6:.2f} M; its logits "
                   f"{same} the masked model's (max difference {p['max_diff']:.1e}), and it {fast}: "
                   f"{ratio:.2f}x ({p['seconds'][0] * 1e3:.0f} ms vs {p['seconds'][1] * 1e3:.0f} ms per forward).")
    return out


def render_pruning(data: dict[str, Any]) -> str:
    from uncover.applications.pruning import plots

    if "error" in data or "curves" not in data:
        return H.paragraph(f"Pruning failed: {data.get('error', 'no data')}")
    html = "<h3>Pruning heads by importance</h3>" + H.findings(pruning_findings(data), headline=1)
    for unit, c in data["curves"].items():
        html += H.plotly_figure(plots.curves_figure(c["shares"], c["values"], unit),
                                f"Iterative structured pruning of {unit}: quality against the share removed, one "
                                f"line per importance measure (dotted: random). Perplexity on "
                                f"{data['n_heldout_tokens']} held-out corpus tokens; facts: {data['n_facts']} facts "
                                "the unpruned model knows.")
    return html


def bias_findings(data: dict[str, Any]) -> list[str]:
    b0, p0 = data["bias_test"][0], data["perplexity"][0]
    k = data["crossing"]
    out = [f"Unmasked, the model's he/she preference follows the occupation stereotype by {b0:+.3f} nats on "
           f"held-out templates and occupations ({data['agreement'][0]:.0%} of prompts agree in sign); top heads "
           f"by the bias gradient: {', '.join(data['top'][:5])}."]
    if k is not None:
        j = data["counts"].index(k)
        out.append(f"Masking the top {k} heads halves the held-out bias (test: bias ≤ {BIAS_HALF} x unmasked and "
                   f"perplexity rise < {PPL_RISE:.0%}): bias {data['bias_test'][j]:+.3f} nats, perplexity "
                   f"{data['perplexity'][j]:.1f} vs {p0:.1f} (+{data['perplexity'][j] / p0 - 1:.1%}).")
    else:
        j = min(range(len(data["counts"])), key=lambda i: abs(data["bias_test"][i]))
        out.append(f"No head count tried ({', '.join(map(str, data['counts'][1:]))}) halves the held-out bias with a "
                   f"perplexity rise under {PPL_RISE:.0%}; the lowest bias, {data['bias_test'][j]:+.3f} nats, comes "
                   f"with {data['counts'][j]} heads masked at perplexity {data['perplexity'][j]:.1f} vs {p0:.1f}.")
    return out


def render_bias(data: dict[str, Any]) -> str:
    from uncover.applications.pruning import plots

    if "error" in data or "counts" not in data:
        return H.paragraph(f"Bias heads failed: {data.get('error', 'no data')}")
    p0, b0 = data["perplexity"][0], data["bias_test"][0]
    fig = plots.tradeoff_figure(
        {"held-out templates": ([100 * (p / p0 - 1) for p in data["perplexity"]],
                                [b / b0 if b0 else float("nan") for b in data["bias_test"]])},
        "perplexity rise (%)", "bias / unmasked bias",
        {"y:half the bias": BIAS_HALF, f"x:+{PPL_RISE:.0%} perplexity": 100 * PPL_RISE})
    rows = [[k, f"{b:+.3f}", f"{bt:+.3f}", f"{a:.0%}", f"{p:.2f}"] for k, b, bt, a, p in zip(
        data["counts"], data["bias_test"], data["bias_train"], data["agreement"], data["perplexity"])]
    return ("<h3>Bias heads</h3>" + H.findings(bias_findings(data))
            + H.plotly_figure(fig, "Masking the heads with the largest bias gradient (train split), one more point "
                                   "per head count; bias measured on held-out templates and occupations.")
            + H.table(rows, ["heads masked", "bias (test, nats)", "bias (train)", "stereotype agreement (test)",
                             "perplexity"]))


def toxic_findings(name: str, data: dict[str, Any]) -> list[str]:
    base = next(r for r in data["rows"] if r["kind"] == "none")
    out = [f"'{name}' list: {len(data['words'])} single-token words"
           + (f" ({len(data['skipped'])} skipped as several tokens: {', '.join(data['skipped'][:6])})"
              if data["skipped"] else "")
           + f"; probe accuracy on held-out contrast pairs {data['probe']['test']:.0%} (layer {data['probe']['layer']}); "
           f"the top singular vector of the most aligned value vectors has cosine {data['svd_cosines'][0]:.2f} "
           f"with the probe direction."]
    best = data["best"]
    if best is None:
        out.append(f"No intervention lowers the listed words' probability on provoking prompts with a perplexity "
                   f"rise under {PPL_RISE:.0%} (baseline P = {base['provoking']:.4f}).")
    else:
        label = {"scale": f"zeroing the top {best['strength']} value vectors by vocabulary score",
                 "scale_aligned": f"zeroing the {best['strength']} value vectors most aligned with the probe",
                 "subtract": f"subtracting the probe direction ({best['strength']} x mean residual norm)"}[best["kind"]]
        out.append(f"Best within a {PPL_RISE:.0%} perplexity budget: {label} lowers P(listed words) on provoking "
                   f"prompts by {base['provoking'] / max(best['provoking'], 1e-12):.2f}x "
                   f"({base['provoking']:.4f} -> {best['provoking']:.4f}) and on neutral prompts by "
                   f"{base['neutral'] / max(best['neutral'], 1e-12):.2f}x, at perplexity {best['perplexity']:.1f} vs "
                   f"{base['perplexity']:.1f} (+{best['perplexity'] / base['perplexity'] - 1:.1%}).")
    return out


def render_toxic(data: dict[str, Any]) -> str:
    from uncover.applications.pruning import plots

    if "error" in data:
        return H.paragraph(f"Unwanted directions failed: {data['error']}")
    html = "<h3>Unwanted directions: value vectors and a probe</h3>"
    for name, d in data.items():
        if not isinstance(d, dict):
            continue
        base = next(r for r in d["rows"] if r["kind"] == "none")
        curves: dict[str, tuple[list, list]] = {}
        for r in d["rows"]:
            if r["kind"] == "none":
                continue
            x, y = curves.setdefault(r["kind"], ([0.0], [1.0]))
            x.append(100 * (r["perplexity"] / base["perplexity"] - 1))
            y.append(r["provoking"] / base["provoking"])
        html += H.findings(toxic_findings(name, d))
        html += H.plotly_figure(plots.tradeoff_figure(curves, "perplexity rise (%)",
                                                      "P(listed words) / unchanged, provoking prompts",
                                                      {f"x:+{PPL_RISE:.0%}": 100 * PPL_RISE}),
                                f"'{name}': each intervention at increasing strength (points), effect against cost.")
        html += H.table([[f"L{v['layer']}N{v['neuron']}", f"{v['score']:.1f}", " ".join(v["tokens"][:6])]
                         for v in d["top_vectors"][:5]], ["value vector", "z-score", "top tokens"])
    return html


def render_lying_part(data: dict[str, Any]) -> str:
    from uncover.applications.alignment.lying import LyingResult
    from uncover.applications.report import render_lying

    if "result" not in data:
        return H.paragraph(f"Lying heads failed: {data.get('error', 'no data')}")
    fields = _unplain(data["result"])
    fields["order"] = [tuple(hd) for hd in fields["order"]]  # (layer, head) index tensors as tuples
    return render_lying(LyingResult.from_fields(fields))


def render_wrapper_part(data: dict[str, Any]) -> str:
    from uncover.applications.report import render_wrappers
    from uncover.applications.wrappers import WrapperResult

    if "result" not in data:
        return H.paragraph(f"The fine-tuning wrapper experiment failed: {data.get('error', 'no data')}")
    return render_wrappers(WrapperResult.from_fields(_unplain(data["result"])))


SECTION = PruningAlignmentSection()

