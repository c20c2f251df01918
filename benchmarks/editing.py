"""Knowledge editing on a bundled model (default smollm2-135m; --model gemma3-270m): cost and quality of ROME and MEMIT, side by side in one process.

Cost rows are ratios against anchors measured in the same process: covariance tokens/s against a plain
forward on the same corpus batch, one ROME edit against one forward + backward of its optimisation batch.
Quality rows are CounterFact-style scores on records from the built-in fact table the unedited model
gets right (held out: the subjects used to pick the hyper-parameters are excluded).

Run: .venv/bin/python benchmarks/editing.py [--model gemma3-270m] [--n-rome 20] [--n-memit 100] [--threads 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import uncover as uc
from uncover.applications.editing.covariance import compute_key_covariance
from uncover.applications.editing.evaluate import build_records, evaluate_memit, evaluate_rome
from uncover.applications.editing.memit import MemitConfig
from uncover.applications.editing.rome import RomeConfig, WeightEdit, rome
from uncover.applications.editing.tracing import trace_facts
from uncover.data.corpus import corpus_tokens
from uncover.data.facts import known_facts

TUNING_SUBJECTS = {"Eiffel Tower", "France", "Toyota"}  # used while choosing hyper-parameters


def stage(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m", help="a bundled model name or a local path")
    ap.add_argument("--n-rome", type=int, default=12)
    ap.add_argument("--n-memit", type=int, default=100)
    ap.add_argument("--n-trace", type=int, default=5, help="facts averaged for the causal trace")
    ap.add_argument("--cov-tokens", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--layer", type=int, default=None, help="ROME layer (default: the averaged trace's MLP peak)")
    ap.add_argument("--skip-rome", action="store_true")
    ap.add_argument("--skip-memit", action="store_true")
    ap.add_argument("--memit-prefixes", type=int, default=0, help="context prefixes per MEMIT request")
    ap.add_argument("--memit-steps", type=int, default=15)
    ap.add_argument("--memit-cov-weight", type=float, default=None, help="MEMIT lambda (default d_mlp / 2)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = uc.load(args.model)
    report: dict = {"model": args.model, "threads": torch.get_num_threads()}

    stage("known facts")
    t, known = timed(lambda: known_facts(model))
    known = [f for f in known if f.subject not in TUNING_SUBJECTS]
    report["known_facts"] = {"n": len(known), "seconds": t}

    if args.layer is None:
        stage("causal trace")
        t, avg = timed(lambda: trace_facts(model, known[:: max(1, len(known) // args.n_trace)][: args.n_trace],
                                           kinds=["mlp"], n_samples=3, layers=range(0, model.cfg.n_layers, 2)))
        layer, _ = avg.peak("mlp", "last subject token")
        report["trace"] = {"seconds": t, "n_facts": avg.n_facts, "mlp_peak_layer_last_subject_token": layer,
                           "peak_effect": avg.effects["mlp"][layer, avg.categories.index("last subject token")].item()}
        print(f"causal trace over {avg.n_facts} facts: MLP effect at the last subject token peaks at layer {layer} "
              f"(+{report['trace']['peak_effect']:.3f})")
    else:
        layer = args.layer

    stage("key covariance")
    tokens = corpus_tokens(model, 8, 128)
    with torch.no_grad():
        t_fwd, _ = timed(lambda: model(tokens))
    memit_layers = tuple(range(max(0, layer - 2), layer + 3))
    cov_layers = memit_layers if not args.skip_memit else (layer,)
    t_cov, covs = timed(lambda: compute_key_covariance(model, cov_layers, args.cov_tokens))
    n_cov = covs[layer].n_tokens
    report["covariance"] = {"layers": list(cov_layers), "n_tokens": n_cov, "seconds": t_cov,
                            "tokens_per_s": n_cov / t_cov, "forward_tokens_per_s": tokens.numel() / t_fwd}

    c = report["covariance"]
    print(f"\n{args.model}, {report['threads']} threads; {len(known)} known facts (tuning subjects excluded)")
    print(f"{'cost':<48}{'seconds':>10}{'ratio':>10}")
    print(f"{'key covariance, ' + str(c['n_tokens']) + ' tokens, layers ' + str(c['layers']):<48}{c['seconds']:>10.1f}"
          f"{c['forward_tokens_per_s'] / c['tokens_per_s']:>10.2f}  x plain-forward time per token")
    quality = []
    if not args.skip_rome:
        stage("ROME edits, one at a time")
        records = build_records(model, n=args.n_rome, seed=1, known=known)
        rome_cfg = RomeConfig(layer=layer)
        ev = evaluate_rome(model, records, rome_cfg, covariance=covs[layer].mom2)
        report["rome"] = {"layer": layer, "n_edits": len(records), "seconds_per_edit": ev.seconds_per_edit,
                          "before": ev.before, "after": ev.after}
        W0 = model.W_out(layer).detach().clone()
        edit: WeightEdit = rome(model, records[0].request, rome_cfg, covariance=covs[layer].mom2)
        changed = not torch.equal(W0, model.W_out(layer))
        edit.restore(model)
        report["restore_bitwise_identical"] = bool(changed and torch.equal(W0, model.W_out(layer)))
        print(f"{'ROME edit (layer ' + str(layer) + '), mean of ' + str(len(records)):<48}{ev.seconds_per_edit:>10.1f}"
              f"{ev.seconds_per_edit * c['forward_tokens_per_s'] / 128:>10.1f}  x one 128-token forward")
        quality += [(f"ROME x{len(records)} before", ev.before), (f"ROME x{len(records)} after", ev.after)]
    if not args.skip_memit:
        stage("MEMIT, all edits at once")
        records = build_records(model, n=args.n_memit, seed=2, known=known)
        mcfg = MemitConfig(layers=memit_layers, n_prefixes=args.memit_prefixes, steps=args.memit_steps,
                           cov_weight=args.memit_cov_weight)
        ev_m = evaluate_memit(model, records, mcfg, covariances={l: covs[l].mom2 for l in memit_layers})
        total = ev_m.info["total_seconds"]
        report["memit"] = {"layers": list(memit_layers), "n_edits": len(records), "seconds_total": total,
                           "n_prefixes": args.memit_prefixes, "steps": args.memit_steps,
                           "cov_weight": ev_m.info.get("cov_weight"),
                           "before": ev_m.before, "after": ev_m.after}
        print(f"{'MEMIT, ' + str(len(records)) + ' edits at once, layers ' + str(list(memit_layers)):<48}"
              f"{total:>10.1f}{total * c['forward_tokens_per_s'] / 128 / len(records):>10.1f}"
              "  x one 128-token forward, per edit")
        quality += [(f"MEMIT x{len(records)} before", ev_m.before), (f"MEMIT x{len(records)} after", ev_m.after)]
    print(f"\n{'quality (percent)':<20}{'efficacy':>10}{'paraphr.':>10}{'neighb.':>10}{'score':>8}"
          f"{'eff.acc':>9}{'par.acc':>9}{'nb.acc':>9}{'fluency':>9}")
    for name, s in quality:
        print(f"{name:<20}{s['rewrite']:>10.1f}{s['paraphrase']:>10.1f}{s['neighbourhood']:>10.1f}{s['score']:>8.1f}"
              f"{s['rewrite_acc']:>9.1f}{s['paraphrase_acc']:>9.1f}{s['neighbourhood_acc']:>9.1f}{s['fluency']:>9.2f}")
    if "restore_bitwise_identical" in report:
        print(f"ROME restore gives bitwise-identical weights: {report['restore_bitwise_identical']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
