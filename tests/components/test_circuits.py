"""Circuits: the edge graph, exact edge patching against a naive per-edge loop, EAP against its formula by
finite differences, EAP-IG's convergence, ACDC, circuit selection and faithfulness, bad input."""
from __future__ import annotations

import pytest
import torch

import uncover as uc
from tests.conftest import tiny_hf
from uncover.components.circuits.discovery import discover
from uncover.components.circuits.graph import KINDS, Graph
from uncover.components.circuits.patching import EMBED, EdgePatcher, head_contributions, logits_hook
from uncover.data.tasks import Task
from uncover.errors import UncoverError

pytestmark = pytest.mark.usefixtures("one_thread")
ARCHS = ["llama", "gpt2", "gpt_neox", "gemma3", "qwen3"]


def _task(n: int = 3, pos: int = 6, seed: int = 0, vocab: int = 1000) -> Task:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, vocab, (n, pos), generator=g)
    corrupt = clean.clone()
    corrupt[:, 1] = torch.randint(1, vocab, (n,), generator=g)
    corrupt[:, 3] = torch.randint(1, vocab, (n,), generator=g)
    return Task("random", clean, corrupt, torch.randint(1, vocab, (n,), generator=g),
                torch.randint(1, vocab, (n,), generator=g))


def _toy(mlp: bool = True) -> uc.Model:
    from uncover.dynamics.models import ToyConfig, ToyTransformer

    cfg = ToyConfig(d_vocab=1000, n_ctx=32, d_model=32, n_heads=2, d_head=16, d_mlp=64 if mlp else 0, n_layers=2)
    return uc.load(ToyTransformer(cfg, seed=0))


@pytest.fixture(scope="module")
def models():
    made: dict = {}

    def get(arch: str) -> uc.Model:
        if arch not in made:
            made[arch] = _toy(mlp=False) if arch == "toy-attn" else uc.load(tiny_hf(arch))
        return made[arch]
    return get


def test_edge_counts_match_the_published_convention():
    assert Graph(12, 12).n_edges == 32491  # GPT-2 small
    assert Graph(30, 9).n_edges == 123211  # SmolLM2-135M, k/v per query head
    g = Graph(2, 3, parallel=True)
    # a parallel MLP reads the layer's input: no edges from its own layer's heads
    assert not g.allowed[g.head_source(1, 0), g.mlp_receiver(1)]
    assert Graph(2, 3).allowed[Graph(2, 3).head_source(1, 0), Graph(2, 3).mlp_receiver(1)]
    attn_only = Graph(2, 3, mlp=False)
    assert attn_only.n_sources == 7 and attn_only.n_receivers == 19
    with pytest.raises(UncoverError, match="no MLPs"):
        attn_only.mlp_receiver(0)


def _naive(model: uc.Model, patcher: EdgePatcher, removed: list[tuple[int, int]]) -> torch.Tensor:
    """Last-position logits with ``removed`` edges patched by an explicit loop over edges (no masks,
    no einsum, no variant engine): each receiver's input gets ablated_s - current_s of each removed edge."""
    g = patcher.graph
    current: dict[int, torch.Tensor] = {}
    into: dict[int, list[int]] = {}
    for s, r in removed:
        into.setdefault(r, []).append(s)

    def rec_embed(t, hook):
        current[0] = t

    def rec_heads(l):
        def fn(t, hook):
            contrib = head_contributions(model, l, t)
            for h in range(g.n_heads):
                current[g.head_source(l, h)] = contrib[:, :, h]
        return fn

    def rec_mlp(l):
        def fn(t, hook):
            current[g.mlp_source(l)] = t
        return fn

    def head_in(l, kind):
        def fn(t, hook):
            out = t.clone()
            for h in range(g.n_heads):
                for s in into.get(g.head_receiver(l, h, kind), []):
                    out[:, :, h] += patcher.values[s] - current[s]
            return out
        return fn

    def single(r):
        def fn(t, hook):
            out = t.clone()
            for s in into.get(r, []):
                out += patcher.values[s] - current[s]
            return out
        return fn

    hooks = [(EMBED, rec_embed)]
    for l in range(g.n_layers):
        hooks += [(f"blocks.{l}.hook_{k}_input", head_in(l, k)) for k in KINDS]
        hooks.append((f"blocks.{l}.attn.hook_result", rec_heads(l)))
        if g.mlp:
            hooks += [(f"blocks.{l}.hook_mlp_in", single(g.mlp_receiver(l))), (f"blocks.{l}.hook_mlp_out", rec_mlp(l))]
    hooks.append((logits_hook(model), single(g.logits_receiver)))
    with torch.no_grad():
        return model.run_with_hooks(patcher.task.clean, hooks)[:, -1]


@pytest.mark.parametrize("arch", ARCHS + ["toy-attn"])
def test_edge_patching_equals_the_naive_loop(models, arch):
    model = models(arch)
    task = _task()
    patcher = EdgePatcher.build(model, task)
    g = patcher.graph
    allowed = g.allowed.nonzero().tolist()
    gen = torch.Generator().manual_seed(1)
    subsets = [[tuple(allowed[i]) for i in torch.randperm(len(allowed), generator=gen)[:k].tolist()] for k in (1, 7, 40)]
    # only the logits' and the last layer's receivers: the forward starts late
    late = [(s, r) for s, r in map(tuple, allowed) if r >= g.head_receiver(g.n_layers - 1, 0, "q")][:10]
    subsets.append(late)
    keeps = []
    for removed in subsets:
        keep = torch.ones(g.n_sources, g.n_receivers)
        for s, r in removed:
            keep[s, r] = 0
        keeps.append(keep)
    got = patcher.run(keeps)
    for removed, out in zip(subsets, got):
        want = _naive(model, patcher, removed)
        assert (out - want).abs().max() <= 1e-5, (arch, len(removed))
    clean, corrupt = model(task.clean)[:, -1], model(task.corrupt)[:, -1]
    none, everything = patcher.run([torch.zeros_like(keeps[0]), torch.ones_like(keeps[0])])
    assert (none - corrupt).abs().max() <= 1e-5  # every edge removed: the corrupted run
    assert (everything - clean).abs().max() == 0  # nothing removed: the model, bitwise


def test_zero_mean_resample_ablations(models):
    model = models("llama")
    task = _task(n=4)
    for ablation in ("zero", "mean", "resample"):
        p = EdgePatcher.build(model, task, ablation=ablation, seed=3)
        assert p.ablation == ablation
        keep = torch.ones(p.graph.n_sources, p.graph.n_receivers)
        keep[0, p.graph.logits_receiver] = 0
        out = p.run([keep])[0]
        assert (out - _naive(model, p, [(0, p.graph.logits_receiver)])).abs().max() <= 1e-5
    zero = EdgePatcher.build(model, task, ablation="zero")
    assert zero.values.abs().max() == 0
    mean = EdgePatcher.build(model, task, ablation="mean")
    assert torch.allclose(mean.values[:, 0], mean.values[:, 1])


def _eap_by_hand(model, patcher, s: int, r: int) -> float:
    """d metric / d epsilon at 0 of adding epsilon * (ablated_s - clean_s) to receiver r's input alone (the
    EAP score of edge s -> r): one scalar epsilon per edge, differentiated by autograd."""
    g, task = patcher.graph, patcher.task
    diff = patcher.values[s] - patcher.clean[s]
    name, head = None, None
    for l in range(g.n_layers):
        for kind in KINDS:
            for h in range(g.n_heads):
                if g.head_receiver(l, h, kind) == r:
                    name, head = f"blocks.{l}.hook_{kind}_input", h
        if g.mlp and g.mlp_receiver(l) == r:
            name = f"blocks.{l}.hook_mlp_in"
    name = name or logits_hook(model)
    eps = torch.zeros((), dtype=diff.dtype, requires_grad=True)

    def fn(t, hook):
        if head is None:
            return t + eps * diff
        add = torch.zeros_like(t)
        add[:, :, head] = diff
        return t + eps * add

    with torch.enable_grad(), model.hooks([(name, fn)], force_write=True):  # eps = 0 still routes through it
        metric = task.metric(model(task.clean))
        return float(torch.autograd.grad(metric, eps)[0])


def test_eap_equals_its_formula_by_finite_differences(models):
    model = uc.load(tiny_hf("llama").double())
    task = _task()
    patcher = EdgePatcher.build(model, task)
    scores = discover(model, task, "eap", patcher=patcher).scores
    g = patcher.graph
    picks = [(0, g.head_receiver(0, 1, "q")), (g.head_source(0, 2), g.head_receiver(1, 3, "k")),
             (g.mlp_source(0), g.head_receiver(2, 0, "v")), (g.head_source(1, 0), g.mlp_receiver(1)),
             (g.mlp_source(2), g.logits_receiver), (0, g.logits_receiver)]
    for s, r in picks:
        assert scores[s, r].item() == pytest.approx(_eap_by_hand(model, patcher, s, r), rel=1e-5, abs=1e-7)


def test_eap_ig_on_a_linear_readout_is_exact_and_converges_elsewhere():
    from uncover.dynamics.models import ToyConfig, ToyTransformer

    # no final norm: the logit difference is linear in the final residual, so the edges into the logits
    # have the exact patching effect at any number of steps
    model = uc.load(ToyTransformer(ToyConfig(d_vocab=1000, n_ctx=32, d_model=32, n_heads=2, d_head=16, d_mlp=64,
                                             n_layers=2), seed=1).double())
    task = _task(seed=2)
    patcher = EdgePatcher.build(model, task)
    g = patcher.graph
    r = g.logits_receiver
    exact = []
    for s in range(g.n_sources):
        keep = torch.ones(g.n_sources, g.n_receivers)
        keep[s, r] = 0
        exact.append(patcher.metric(patcher.run([keep])[0]) - patcher.metric(patcher.clean_logits))
    for steps in (1, 3):
        ig = discover(model, task, "eap-ig", steps=steps, patcher=patcher).scores
        assert torch.allclose(ig[:, r].double(), torch.tensor(exact, dtype=torch.float64), atol=1e-6)
    # elsewhere the m-step estimate approaches the many-step integral as m grows
    ref = discover(model, task, "eap-ig", steps=64, patcher=patcher).scores
    err = [float((discover(model, task, "eap-ig", steps=m, patcher=patcher).scores - ref).abs().sum())
           for m in (1, 4, 16)]
    assert err[0] > err[1] > err[2]
    for ig in ("activations", "clean-corrupted"):
        s = discover(model, task, "eap-ig", steps=2, ig=ig, patcher=patcher).scores
        assert torch.allclose(s[:, r].double(), torch.tensor(exact, dtype=torch.float64), atol=1e-6)


def test_acdc_keeps_what_matters(models):
    model = models("toy-attn")
    task = _task(n=2, pos=5)
    out = discover(model, task, "acdc", taus=(0.001, 0.05))
    g = out.graph
    kept = out.options["kept"]
    assert kept["0.05"] <= kept["0.001"] <= g.n_edges
    # scores: an edge kept at a tau scores that tau; every other edge scores below the smallest tau
    values = out.scores[g.allowed]
    at_tau = torch.isclose(values, torch.tensor(0.05)) | torch.isclose(values, torch.tensor(0.001))
    assert int(at_tau.sum()) == kept["0.001"]
    assert float(values[~at_tau].max()) < 0.001 and float(values.max()) <= 0.05 + 1e-9


def test_bad_input(models):
    model = models("llama")
    task = _task()
    with pytest.raises(UncoverError, match="eap-ig"):
        discover(model, task, "eap_ig")
    with pytest.raises(UncoverError, match="ablation"):
        EdgePatcher.build(model, task, ablation="noise")
    bad = Task("bad", task.clean, task.corrupt[:, :-1], task.answers, task.wrong)
    with pytest.raises(UncoverError, match="same number of tokens"):
        EdgePatcher.build(model, bad)
    with pytest.raises(UncoverError, match=r"GiB.*node"):
        EdgePatcher.build(model, task, max_bytes=1000)


def _planted():
    """A toy model (no norms, 2 layers x 4 heads, MLPs) whose circuit is known by construction: the heads
    and MLP outside ``LIVE`` write nothing (output weights and biases zero), so the true edges are those
    from the embedding or a live node into a live node or the logits."""
    from uncover.dynamics.models import ToyConfig, ToyTransformer

    hf = ToyTransformer(ToyConfig(d_vocab=1000, n_ctx=32, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_layers=2),
                        seed=4)
    live = {"L0.H1", "L0.H3", "L0.MLP", "L1.H0", "L1.H2"}
    with torch.no_grad():
        for l, block in enumerate(hf.blocks):
            for h in range(4):
                if f"L{l}.H{h}" not in live:
                    block.attn.W_O[h] = 0
            if f"L{l}.MLP" not in live:
                block.mlp.fc_out.weight.zero_()
                block.mlp.fc_out.bias.zero_()
    model = uc.load(hf)
    g = Graph.of(model)
    ok_src = torch.tensor([n == "embed" or n in live for n in g.source_names])
    ok_recv = torch.tensor([g.receiver_node(r) in live | {"logits"} for r in range(g.n_receivers)])
    return model, g, ok_src[:, None] & ok_recv[None, :] & g.allowed


def test_every_method_finds_the_planted_circuit():
    from uncover.components.circuits.evaluate import roc_auc

    model, g, truth = _planted()
    task = _task(n=4, pos=6, seed=5)
    patcher = EdgePatcher.build(model, task)
    aucs = {}
    for method, kw in (("eap", {}), ("eap-ig", {"steps": 3}), ("acdc", {"taus": (1e-4, 1e-3)})):
        aucs[method] = roc_auc(g, discover(model, task, method, patcher=patcher, **kw).scores, truth)
    assert min(aucs.values()) >= 0.95, aucs


def test_roc_auc_against_a_direct_count():
    from uncover.components.circuits.evaluate import roc_auc

    g = Graph(1, 2, mlp=False)
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(g.n_sources, g.n_receivers, generator=gen).round(decimals=1)
    truth = torch.rand(g.n_sources, g.n_receivers, generator=gen) > 0.5
    a, t = scores.abs()[g.allowed].tolist(), truth[g.allowed].tolist()
    pairs = [(x, y) for x, tx in zip(a, t) if tx for y, ty in zip(a, t) if not ty]
    want = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in pairs) / len(pairs)
    assert roc_auc(g, scores, truth) == pytest.approx(want)


def test_select_grow_prune_and_faithfulness(models):
    from uncover.components.circuits.evaluate import evaluate, faithfulness_curve, grow, prune_dangling, select

    model = models("llama")
    task = _task(n=4)
    patcher = EdgePatcher.build(model, task)
    scores = discover(model, task, "eap", patcher=patcher)
    g = patcher.graph
    # a lone edge between two heads that nothing connects to the embedding or the logits is dangling
    keep = torch.zeros_like(g.allowed)
    keep[g.head_source(0, 0), g.head_receiver(1, 0, "q")] = True
    assert not prune_dangling(g, keep).any()
    keep[0, g.head_receiver(0, 0, "v")] = True
    keep[g.head_source(1, 0), g.logits_receiver] = True
    assert int(prune_dangling(g, keep).sum()) == 3  # embed -> L0H0 -> L1H0 -> logits: a path, all kept
    for n in (5, 40):
        for circuit in (select(g, scores.scores, top_n=n), grow(g, scores.scores, n)):
            assert circuit.sum() <= n and torch.equal(prune_dangling(g, circuit), circuit)
    everything = select(g, scores.scores, threshold=0.0)
    curve = faithfulness_curve(model, task, scores, counts=[3, 30, g.n_edges], patcher=patcher)
    assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-5)  # every edge kept: the model
    one = evaluate(model, task, select(g, scores.scores, top_n=30), patcher=patcher)
    assert one.faithfulness == pytest.approx(curve.faithfulness[1], abs=1e-6)
    # faithfulness by its definition, from two plain runs of the same circuit
    m_circuit = patcher.metric(patcher.run([select(g, scores.scores, top_n=30).float()])[0])
    with torch.no_grad():
        m_model, m_ablated = float(task.metric(model(task.clean))), float(task.metric(model(task.corrupt)))
    assert one.faithfulness == pytest.approx((m_circuit - m_ablated) / (m_model - m_ablated), rel=1e-4)
    assert everything.sum() == g.n_edges
    with pytest.raises(UncoverError, match="exactly one"):
        select(g, scores.scores)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_mask_gradients_are_minus_eap_at_the_full_model(models, arch):
    # receiver input = x + (1 - keep) (ablated - current): d metric / d keep at keep = 1 is -EAP
    model = models(arch)
    task = _task()
    patcher = EdgePatcher.build(model, task)
    g = patcher.graph
    keep = torch.ones(g.n_sources, g.n_receivers, requires_grad=True)
    logits = patcher.run_with_grad(keep)
    assert (logits.detach() - model(task.clean)[:, -1].detach()).abs().max() < 1e-5
    grad = torch.autograd.grad(task.metric(logits[:, None]), keep)[0]
    eap = discover(model, task, "eap", patcher=patcher).scores
    assert torch.allclose(-grad * g.allowed, eap, atol=1e-5)
    # fractional masks: half of every edge
    half = torch.full((g.n_sources, g.n_receivers), 0.5, requires_grad=True)
    assert torch.autograd.grad(task.metric(patcher.run_with_grad(half)[:, None]), half)[0].abs().sum() > 0
    with pytest.raises(UncoverError, match="requires grad"):
        patcher.run_with_grad(torch.ones(g.n_sources, g.n_receivers))


def test_signed_ranking_picks_the_helpful_edges():
    from uncover.components.circuits.evaluate import select

    g = Graph(1, 2, mlp=False)
    scores = torch.zeros(g.n_sources, g.n_receivers)
    r = g.logits_receiver
    scores[0, r], scores[g.head_source(0, 0), r], scores[g.head_source(0, 1), r] = -0.5, 2.0, -1.0
    assert select(g, scores, top_n=1, prune=False)[g.head_source(0, 0), r]  # |2.0| is the largest
    signed = select(g, scores, top_n=2, prune=False, by="signed")
    assert signed[g.head_source(0, 1), r] and signed[0, r] and not signed[g.head_source(0, 0), r]
    with pytest.raises(UncoverError, match="signed"):
        select(g, scores, top_n=1, by="sign")


def test_completeness_and_minimality_against_direct_knockouts(models):
    from uncover.components.circuits.evaluate import completeness, select

    model = models("toy-attn")
    task = _task(n=3, pos=5)
    patcher = EdgePatcher.build(model, task)
    g = patcher.graph
    keep = select(g, discover(model, task, "eap", patcher=patcher).scores, top_n=30)
    out = completeness(model, task, keep, patcher=patcher, n_random=2, classes={"layer 0": ["L0.H0", "L0.H1"]},
                       greedy_steps=2, greedy_candidates=3)
    assert out.kinds[:2] == ["random", "random"] and out.kinds[-1] == "greedy" and len(out.subsets[-1]) == 2
    # one K by hand: ablate the K nodes' outputs in the circuit and in the whole model, by explicit masks
    K = out.subsets[0]
    circuit, whole = keep.float().clone(), g.allowed.float().clone()
    for n in K:
        circuit[g.source_names.index(n)] = 0
        whole[g.source_names.index(n)] = 0
    fc, fm = (patcher.metric(lo) for lo in patcher.run([circuit, whole]))
    assert out.f_circuit[0] == pytest.approx(fc, abs=1e-6) and out.f_model[0] == pytest.approx(fm, abs=1e-6)
    assert out.gaps[0] == pytest.approx(abs(fc - fm), abs=1e-6)
    # minimality with K = {} for one node is |F(C without v) - F(C)|, a lower bound of its score
    v = out.nodes[0]
    alone = keep.float().clone()
    alone[g.source_names.index(v)] = 0
    assert out.minimality[v] >= abs(patcher.metric(patcher.run([alone])[0]) - out.metric_circuit) - 1e-6
    with pytest.raises(UncoverError, match="no head or MLP"):
        completeness(model, task, torch.zeros_like(keep), patcher=patcher)
