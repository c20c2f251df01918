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
                    out[:, :, h] += patcher.values[:, :, s] - current[s]
            return out
        return fn

    def single(r):
        def fn(t, hook):
            out = t.clone()
            for s in into.get(r, []):
                out += patcher.values[:, :, s] - current[s]
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
    assert torch.allclose(mean.values[0], mean.values[1])


def _eap_by_hand(model, patcher, s: int, r: int) -> float:
    """d metric / d epsilon at 0 of adding epsilon * (ablated_s - clean_s) to receiver r's input alone (the
    EAP score of edge s -> r): one scalar epsilon per edge, differentiated by autograd."""
    g, task = patcher.graph, patcher.task
    diff = patcher.values[:, :, s] - patcher.clean[:, :, s]
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
