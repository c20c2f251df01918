"""Structured pruning on smollm2-135m: what a physically smaller model buys against masks that cost the same.

For each share of query heads (and, separately, MLP neurons) removed by a random plan (the cost does not
depend on which units go), the table prints parameters and the forward-time ratio of the masked model
(the peer: mask-based pruning such as ``torch.nn.utils.prune`` keeps every weight) and of the original
against the physically pruned model, plus the max logit difference pruned vs masked (must be <= 1e-4).

Run: .venv/bin/python benchmarks/pruning.py [--model smollm2-135m] [--batch 4] [--seq 128] [--threads 2]
"""
from __future__ import annotations

import argparse

import torch

import uncover as uc
from uncover.applications.pruning import PruningPlan, forward_seconds, importance, n_params, prune_model, select
from uncover.data.corpus import corpus_tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = uc.load(args.model)
    tokens = corpus_tokens(model, args.batch, args.seq)
    base_t = forward_seconds(model, tokens, args.repeats)
    print(f"{model.name}: {n_params(model) / 1e6:.2f} M parameters, forward {base_t * 1e3:.1f} ms "
          f"({args.batch} x {args.seq} tokens, median of {args.repeats})")
    print(f"{'unit':8} {'share':>6} {'params (M)':>11} {'masked/pruned time':>19} {'original/pruned time':>21} "
          f"{'max |dlogit|':>13}")
    for unit in ("heads", "neurons"):
        for share in (0.1, 0.2, 0.3, 0.5):
            scores = importance(model, None, "random", unit, seed=int(share * 100)).scores
            k = round(share * scores.numel())
            removed = select(scores, k)
            plan = PruningPlan.empty(model).extended(unit, removed)
            pruned = prune_model(model, plan)
            with torch.no_grad():
                with model.hooks(plan.hooks()):
                    masked_logits = model(tokens)
                    masked_t = forward_seconds(model, tokens, args.repeats)
                diff = float((pruned(tokens) - masked_logits).abs().max())
            pruned_t = forward_seconds(pruned, tokens, args.repeats)
            print(f"{unit:8} {share:6.0%} {n_params(pruned) / 1e6:11.2f} {masked_t / pruned_t:19.2f} "
                  f"{base_t / pruned_t:21.2f} {diff:13.1e}")


if __name__ == "__main__":
    main()
