"""Patching speed on IOI (smollm2-135m), side by side in one process.

1. The head grid (hook_z, layer x head) by batched activation patching (``patch_task``: many heads per
   forward, each forward starting at its first patched layer, last-position logits only) vs the naive loop
   (one patched head per full forward, all prompts in that forward, the core's ``patch``). Target: >= 3x.
2. Attribution patching of the same grid (``patch_task``, last-position logits) vs one plain forward pass of
   the corrupted prompts (medians of 3). Target: < 3x.
3. Agreement: max |batched - naive| (target <= 1e-4) and Pearson r of attribution vs activation patching.

    .venv/bin/python benchmarks/patching.py                 # full grid, 32 prompt pairs
    .venv/bin/python benchmarks/patching.py --layers 8      # time the first 8 layers' heads only
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import uncover as uc
from uncover.components import patching as P
from uncover.core.interventions import patch
from uncover.data.ioi import ioi_task


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=32, help="IOI prompt pairs")
    ap.add_argument("--layers", type=int, default=None, help="time only the heads of the first LAYERS layers")
    ap.add_argument("--batch-size", type=int, default=128, help="rows per forward for batched patching")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = uc.load(args.model)
    task = ioi_task(model, n=args.n, templates=("When {A} and {B} went to the {place}, {S} gave a {object} to",))
    L = args.layers or model.cfg.n_layers
    heads = [(l, h) for l in range(L) for h in range(model.cfg.n_heads)]
    names = [P.SITES["z"].format(l) for l in range(model.cfg.n_layers)]
    clean, corrupt, metric = task.clean, task.corrupt, task.metric

    with torch.no_grad():
        model(corrupt)  # warm-up
        one_forward = statistics.median(timed(lambda: model(corrupt))[1] for _ in range(3))
        _, clean_cache = model.run_with_cache(clean, names=names, attention_mask=task.attention_mask)

    def naive():
        out = torch.zeros(L, model.cfg.n_heads)
        with torch.no_grad():
            for l, h in heads:
                out[l, h] = float(metric(model.run_with_hooks(corrupt, [(names[l], patch(clean_cache, heads=[h]))],
                                                                attention_mask=task.attention_mask)))
        return out

    def batched():  # what `uncover patch --task ioi` runs: clean cache, base run and every patched head
        only = heads if args.layers else None
        r = P.patch_task(model, task, site="z", by="head", normalize=False, batch_size=args.batch_size, only=only)
        return r.values[:L]

    naive_vals, t_naive = timed(naive)
    batched_vals, t_batched = timed(batched)
    attr_runs = [timed(lambda: P.patch_task(model, task, "z", "head", "attribution", normalize=False)) for _ in range(3)]
    attr, t_attr = attr_runs[0][0], statistics.median(t for _, t in attr_runs)
    a = attr.values[:L].flatten().double() - attr.corrupt_metric
    b = batched_vals.flatten().double() - attr.corrupt_metric
    r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    print(f"model {args.model}, IOI {args.n} prompt pairs x {clean.shape[1]} tokens, {len(heads)} heads "
          f"(layers 0-{L - 1}), batch {args.batch_size} rows, torch threads {torch.get_num_threads()}")
    print(f"{'measure':<48}{'seconds':>10}{'ratio':>10}{'target':>10}")
    print(f"{'naive loop (1 head per forward)':<48}{t_naive:>10.2f}{'':>10}")
    print(f"{'batched activation patching':<48}{t_batched:>10.2f}{t_naive / t_batched:>9.2f}x{'>= 3x':>10}")
    print(f"{'one forward pass (corrupted prompts)':<48}{one_forward:>10.2f}")
    print(f"{'attribution patching (2 fwd + 1 bwd)':<48}{t_attr:>10.2f}{t_attr / one_forward:>9.2f}x{'< 3x':>10}")
    print(f"max |batched - naive| = {float((batched_vals - naive_vals).abs().max()):.2e} (target <= 1e-4)")
    print(f"Pearson r, attribution vs activation patching over {len(heads)} heads = {r:.3f}")
    print(f"clean logit diff {attr.clean_metric:.3f}, corrupted {attr.corrupt_metric:.3f}")


if __name__ == "__main__":
    main()
