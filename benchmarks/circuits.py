"""Circuit discovery speed, side by side in one process.

On smollm2-135m IOI (``--n`` prompt pairs, 123,211 edges), medians of ``--repeats``:

1. EAP (2 forwards + 1 backward over every edge) against one plain forward + backward of the clean prompts
   (the gradient of the metric with respect to the embeddings). Target: <= 3x.
2. EAP-IG with 5 steps against the same. Target: <= 6x.
3. Evaluating one circuit (exact edge patching in one forward) against one plain forward. Target: <= 1.2x.

On a tiny random GPT-2-config model (``--tiny-layers`` x 4 heads):

4. ACDC edges tested per second against a naive loop (one forward per tested edge that patches by an
   explicit Python loop over the removed edges), and against auto-circuit's ACDC when it is installed
   (PyPI ``auto-circuit``; it runs on TransformerLens models: the same weights are loaded into both).

    .venv/bin/python benchmarks/circuits.py
    .venv/bin/python benchmarks/circuits.py --n 8 --repeats 1     # a quick look
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import uncover as uc
from uncover.components.circuits import discover, select
from uncover.components.circuits.patching import EdgePatcher
from uncover.data.tasks import make_task


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def plain_forward_backward(model, task) -> None:
    emb = {}

    def leaf(t, hook):
        emb["x"] = t.detach().requires_grad_(True)
        return emb["x"]

    with torch.enable_grad(), model.hooks([("hook_embed", leaf)]):
        metric = task.metric(model(task.clean, attention_mask=task.attention_mask))
    torch.autograd.grad(metric, emb["x"])


def smollm_rows(args) -> list[tuple[str, float, float, str]]:
    model = uc.load(args.model)
    task = make_task(model, "ioi", n=args.n, seed=0)
    patcher = EdgePatcher.build(model, task)
    g = patcher.graph
    with torch.no_grad():
        fwd = median_time(lambda: model(task.clean, attention_mask=task.attention_mask), args.repeats)
    fb = median_time(lambda: plain_forward_backward(model, task), args.repeats)
    # EAP's own 2 forwards: the clean and corrupted source caches are part of its cost
    eap = median_time(lambda: discover(model, task, "eap", patcher=EdgePatcher.build(model, task)), args.repeats)
    ig = median_time(lambda: discover(model, task, "eap-ig", steps=5, patcher=patcher), args.repeats)
    scores = discover(model, task, "eap", patcher=patcher)
    keep = select(g, scores.scores, top_n=int(0.05 * g.n_edges)).float()
    one = median_time(lambda: patcher.run([keep]), args.repeats)
    print(f"smollm2 IOI: {len(task)} pairs x {task.clean.shape[1]} tokens, {g.n_edges:,} edges; forward {fwd:.3f} s, "
          f"forward + backward {fb:.3f} s")
    return [("EAP vs forward + backward", eap, eap / fb, "<= 3x"),
            ("EAP-IG (5 steps) vs forward + backward", ig, ig / fb, "<= 6x"),
            ("one circuit (5% of edges) vs forward", one, one / fwd, "<= 1.2x")]


def tiny_gpt2(layers: int):
    import transformers as T

    torch.manual_seed(0)
    return T.GPT2LMHeadModel(T.GPT2Config(vocab_size=500, n_embd=64, n_layer=layers, n_head=4, n_positions=64)).eval()


def naive_edge_test(model, patcher, removed: list[tuple[int, int]]) -> torch.Tensor:
    """One forward that patches ``removed`` edges by a Python loop over them (the naive baseline)."""
    from uncover.components.circuits.graph import KINDS
    from uncover.components.circuits.patching import EMBED, head_contributions, logits_hook

    g, current, into = patcher.graph, {}, {}
    for s, r in removed:
        into.setdefault(r, []).append(s)

    def rec(kind, l=None):
        def fn(t, hook):
            if kind == "embed":
                current[0] = t
            elif kind == "mlp":
                current[g.mlp_source(l)] = t
            else:
                c = head_contributions(model, l, t)
                for h in range(g.n_heads):
                    current[g.head_source(l, h)] = c[:, :, h]
        return fn

    def recv(rs, per_head):
        def fn(t, hook):
            out = t.clone()
            for h, r in enumerate(rs):
                for s in into.get(r, []):
                    if per_head:
                        out[:, :, h] += patcher.values[s] - current[s]
                    else:
                        out += patcher.values[s] - current[s]
            return out
        return fn

    hooks = [(EMBED, rec("embed"))]
    for l in range(g.n_layers):
        for k in KINDS:
            hooks.append((f"blocks.{l}.hook_{k}_input", recv([g.head_receiver(l, h, k) for h in range(g.n_heads)], True)))
        hooks += [(f"blocks.{l}.attn.hook_result", rec("heads", l)),
                  (f"blocks.{l}.hook_mlp_in", recv([g.mlp_receiver(l)], False)), (f"blocks.{l}.hook_mlp_out", rec("mlp", l))]
    hooks.append((logits_hook(model), recv([g.logits_receiver], False)))
    with torch.no_grad():
        return model.run_with_hooks(patcher.task.clean, hooks)[:, -1]


def acdc_rows(args) -> list[tuple[str, float, float, str]]:
    from uncover.data.tasks import Task

    hf = tiny_gpt2(args.tiny_layers)
    model = uc.load(hf)
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(1, 500, (8, 12), generator=gen)
    corrupt = clean.clone()
    corrupt[:, 3] = torch.randint(1, 500, (8,), generator=gen)
    task = Task("random", clean, corrupt, torch.randint(1, 500, (8,), generator=gen), torch.randint(1, 500, (8,), generator=gen))
    patcher = EdgePatcher.build(model, task)
    g = patcher.graph
    t0 = time.perf_counter()
    out = discover(model, task, "acdc", taus=(0.01,), patcher=patcher)
    ours = time.perf_counter() - t0
    tests = out.options["tests"]
    edges = g.allowed.nonzero().tolist()[: args.naive_tests]
    t0 = time.perf_counter()
    for s, r in edges:
        naive_edge_test(model, patcher, [(s, r)])
    naive = (time.perf_counter() - t0) / len(edges)
    per_sec = tests / ours
    print(f"tiny GPT-2 ({args.tiny_layers} layers x 4 heads, {g.n_edges} edges): uncover ACDC {ours:.2f} s for {tests} "
          f"edge tests ({per_sec:.1f} / s); naive loop {1 / naive:.1f} edge tests / s")
    rows = [("ACDC (tau 0.01): edge tests / s, ratio to the naive loop", ours, per_sec * naive, ">= 1x")]
    peer = auto_circuit_peer(hf, task)
    if peer is not None:
        rows.append(("auto-circuit ACDC, same weights: ratio of uncover's edge tests / s", peer["acdc_seconds"],
                     per_sec / (peer["acdc_tests"] / peer["acdc_seconds"]), "> 1x"))
        t0 = time.perf_counter()
        mine = discover(model, task, "eap", patcher=EdgePatcher.build(model, task)).scores
        eap = time.perf_counter() - t0
        ours_v, theirs_v = [], []
        for name, v in peer["eap"].items():
            key = _our_edge(name)
            if key is not None:
                s_, r_ = g.source_names.index(key[0]), g.receiver_names.index(key[1])
                ours_v.append(float(mine[s_, r_]))
                theirs_v.append(v)
        r = float(torch.corrcoef(torch.tensor([ours_v, theirs_v]).abs())[0, 1])
        print(f"EAP agreement with auto-circuit on {len(ours_v)} shared edges: Pearson r of |scores| {r:.4f}")
        rows.append(("EAP vs auto-circuit's EAP (mask gradient), same weights: speed-up", eap,
                     peer["eap_seconds"] / eap, "> 1x"))
        rows.append(("EAP |scores| Pearson r with auto-circuit", r, r, ">= 0.99"))
    return rows


def _our_edge(name: str) -> tuple[str, str] | None:
    """auto-circuit's edge name ('A0.3->A1.0.Q', 'MLP 0->Resid End') as uncover's (source, receiver)."""
    src, dst = name.split("->")

    def node(x: str) -> str | None:
        x = x.strip()
        if x == "Resid Start":
            return "embed"
        if x == "Resid End":
            return "logits"
        if x.startswith("MLP "):
            return f"L{int(x[4:])}.MLP"
        if x.startswith("A"):
            parts = x[1:].split(".")
            head = f"L{int(parts[0])}.H{int(parts[1])}"
            return head + (f".{parts[2].lower()}" if len(parts) > 2 else "")
        return None

    a, b = node(src), node(dst)
    return None if a is None or b is None else (a, b)


def auto_circuit_peer(hf, task) -> dict | None:
    """auto-circuit's ACDC time and edge tests, and its EAP scores by edge name and time, on the same weights
    (None, with the reason printed, when it can't run)."""
    try:
        import auto_circuit  # noqa: F401
    except ImportError:
        print("auto-circuit is not installed (pip install auto-circuit --no-deps): peer rows skipped")
        return None
    try:
        return _auto_circuit(hf, task)
    except Exception as e:  # the peer library's API or its TransformerLens pin may not match
        print(f"auto-circuit could not run here: {type(e).__name__}: {str(e)[:200]}")
        return None


def _auto_circuit(hf, task) -> dict:
    import sys
    import types

    import transformer_lens as tl
    from transformer_lens.cache import key_value_cache as kv

    # auto-circuit 1.0.1 imports names TransformerLens 3 moved
    cache_cls = next(getattr(kv, n) for n in dir(kv) if "Cache" in n)
    tl.HookedTransformerKeyValueCache = cache_cls
    shim = types.ModuleType("transformer_lens.past_key_value_caching")
    shim.HookedTransformerKeyValueCache = cache_cls
    sys.modules.setdefault("transformer_lens.past_key_value_caching", shim)
    from auto_circuit.data import PromptDataLoader, PromptDataset
    from auto_circuit.prune_algos.ACDC import acdc_prune_scores
    from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
    from auto_circuit.utils.graph_utils import patchable_model
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    c = hf.config
    cfg = HookedTransformerConfig(n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head,
                                  d_mlp=4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions, act_fn="gelu_new",
                                  normalization_type="LN", default_prepend_bos=False)
    tlm = HookedTransformer(cfg)
    tlm.load_state_dict(convert_gpt2_weights(hf, cfg), strict=False)
    tlm.set_use_attn_result(True)
    tlm.set_use_split_qkv_input(True)
    tlm.set_use_hook_mlp_in(True)
    tlm.eval()
    with torch.no_grad():
        gap = (tlm(task.clean)[:, -1] - hf(task.clean).logits[:, -1]).abs().max().item()
    print(f"auto-circuit's TransformerLens copy of the weights: max |logit difference| to uncover's model {gap:.2e}")
    model = patchable_model(tlm, factorized=True, slice_output="last_seq", separate_qkv=True, device=torch.device("cpu"))
    ds = PromptDataset(task.clean, task.corrupt, task.answers[:, None], task.wrong[:, None])
    loader = PromptDataLoader(ds, seq_len=None, diverge_idx=0, batch_size=len(task))
    t0 = time.perf_counter()
    acdc_prune_scores(model, loader, model.edges, tao_exps=[-2], tao_bases=[1])
    acdc = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = mask_gradient_prune_scores(model, loader, model.edges, grad_function="logit", answer_function="avg_diff",
                                        mask_val=0.0)
    eap = time.perf_counter() - t0
    return {"acdc_seconds": acdc, "acdc_tests": len(model.edges), "eap_seconds": eap,
            "eap": {e.name: float(e.prune_score(scores)) for e in model.edges}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=32, help="IOI prompt pairs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiny-layers", type=int, default=2)
    ap.add_argument("--naive-tests", type=int, default=40, help="edge tests timed for the naive loop")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    rows = smollm_rows(args) + acdc_rows(args)
    print(f"\n{'measure':<72} {'seconds':>9} {'ratio':>8}  target")
    for name, seconds, ratio, target in rows:
        print(f"{name:<72} {seconds:>9.3f} {ratio:>7.2f}x  {target}")


if __name__ == "__main__":
    main()
