"""Causal scrubbing against independent computations: the trivial hypothesis is the model, the empty one a
model run on random inputs, one scrubbed head by hand-built hooks, a hand-set model whose circuit is known,
and bad input."""
from __future__ import annotations

import pytest
import torch

import uncover as uc
from tests.conftest import tiny_hf
from tests.components.test_circuits import _task
from uncover.components.circuits import Hypothesis, scrub, token_at, whole_input
from uncover.components.circuits.graph import Graph
from uncover.components.circuits.scrubbing import _Classes, _Scrubber
from uncover.data.tasks import Task
from uncover.errors import UncoverError

pytestmark = pytest.mark.usefixtures("one_thread")


def _repeating(n: int, pos: int, vocab: int, seed: int = 0, lo: int = 1) -> Task:
    """A task of random prompts [n, pos] over tokens lo .. vocab - 1 (few, so tokens repeat across prompts);
    answer: the token at position 2, wrong: the next token id."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(lo, vocab, (n, pos), generator=g)
    answers = clean[:, 2].clone()
    return Task("repeating", clean, clean.clone(), answers, lo + (answers - lo + 1) % (vocab - lo))


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3"])
def test_claiming_everything_on_the_whole_input_is_the_model(arch):
    model = uc.load(tiny_hf(arch))
    task = _task(n=4)
    g = Graph.of(model)
    r = scrub(model, task, Hypothesis(g.source_names), n_samples=2)
    with torch.no_grad():
        want = float(task.metric(model(task.clean)[:, -1:]))
    assert r.metric_model == pytest.approx(want, abs=1e-5)
    assert max(abs(m - want) for m in r.scrubbed_samples) <= 1e-5
    assert r.recovered == pytest.approx(1.0, abs=1e-4)
    assert r.runs == [1, 1]  # every node reads its parents on its own input: one forward
    pairs = {(g.source_names[s], g.receiver_node(q)) for s, q in g.allowed.nonzero().tolist()}
    assert {tuple(e) for e in r.edges} == pairs


def test_claiming_nothing_is_the_model_on_random_inputs():
    model = uc.load(tiny_hf("llama"))
    task = _task(n=6)
    r = scrub(model, task, Hypothesis([]), n_samples=3, seed=5)
    gen = torch.Generator().manual_seed(5)  # the baseline's random inputs per sample, then each tree's root's
    draws = [torch.randint(6, (6,), generator=gen) for _ in range(6)]
    with torch.no_grad():
        for idx, got in zip(draws, r.random_samples + r.scrubbed_samples):
            assert got == pytest.approx(float(task.metric(model(task.clean[idx])[:, -1:])), abs=1e-5)
    # a token dataset: the loss of the last token, resampled the same way
    tokens = torch.cat([task.clean, task.answers[:, None]], dim=1)
    d = scrub(model, tokens, Hypothesis([]), n_samples=1, seed=2)
    gen = torch.Generator().manual_seed(2)
    random_idx, scrubbed_idx = torch.randint(6, (6,), generator=gen), torch.randint(6, (6,), generator=gen)
    with torch.no_grad():
        def loss(idx):
            return float(torch.nn.functional.cross_entropy(model(task.clean[idx])[:, -1].float(), task.answers))
        assert d.metric_name == "loss (nats)" and d.metric_scrubbed == pytest.approx(loss(scrubbed_idx), abs=1e-5)
        assert d.metric_random == pytest.approx(loss(random_idx), abs=1e-5)
        assert d.metric_model == pytest.approx(loss(torch.arange(6)), abs=1e-5)


def test_one_scrubbed_head_equals_hooks_by_hand():
    model = uc.load(tiny_hf("llama"))
    task = _repeating(n=8, pos=6, vocab=4)
    feature = token_at(task.clean, 1)
    hyp = Hypothesis(["embed", "L1.H2"], [("embed", "L1.H2"), ("L1.H2", "logits")], {"L1.H2": feature})
    r = scrub(model, task, hyp, n_samples=1, seed=3)
    # the draws in the documented order: the baseline's, the root run's random input (the logits and L1.H2
    # on the prompts themselves: the logits' class is the prompt), then L1.H2's embedding's input in its class
    gen = torch.Generator().manual_seed(3)
    torch.randint(8, (8,), generator=gen)
    r_random = torch.randint(8, (8,), generator=gen)
    x_embed = _Classes([feature(i) for i in range(8)]).draw(torch.arange(8), gen)
    assert all(feature(int(x_embed[i])) == feature(i) for i in range(8))
    assert bool((x_embed != torch.arange(8)).any())  # something was resampled
    with torch.no_grad():
        _, e = model.run_with_cache(task.clean[x_embed], names=["blocks.0.hook_resid_pre"])
        _, c = model.run_with_cache(task.clean[r_random], names=["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"])
        # L1.H2 reads the embedding of x_embed and layer 0's outputs on the random input
        head_in = e["blocks.0.hook_resid_pre"] + c["blocks.1.hook_resid_pre"] - c["blocks.0.hook_resid_pre"]
        got: list[torch.Tensor] = []

        def set_input(t, hook):
            t = t.clone()
            t[:, :, 2] = head_in
            return t
        hooks = [(f"blocks.1.hook_{k}_input", set_input) for k in "qkv"]
        hooks.append(("blocks.1.attn.hook_result", lambda t, hook: got.append(t[:, :, 2].clone())))
        model.run_with_hooks(task.clean[r_random], hooks)
        _, plain = model.run_with_cache(task.clean[r_random], names=["blocks.1.attn.hook_result"])
        swap = got[0] - plain["blocks.1.attn.hook_result"][:, :, 2]  # the logits read the scrubbed head instead
        last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
        logits = model.run_with_hooks(task.clean[r_random], [(last, lambda t, hook: t + swap)])[:, -1]
    gen = torch.Generator().manual_seed(3)
    torch.randint(8, (8,), generator=gen)  # the baseline's draw comes first
    out, runs = _Scrubber(model, task, hyp, max_runs=10).sample(gen)
    assert runs == 1 and (out - logits).abs().max() <= 1e-5
    assert r.metric_scrubbed == pytest.approx(float(task.metric(logits[:, None])), abs=1e-5)


def _copy_model() -> uc.Model:
    """A hand-set 2-layer attention-only toy (no norms) whose circuit is known: L0.H0 attends from every
    position to position 2 and copies its token into subspace A; L1.H0 attends to position 3 and moves A
    into subspace B; the unembedding reads only B. The other heads write nothing. So the logits depend on
    the token at position 2 alone, along embed -> L0.H0 -> L1.H0 -> logits."""
    from uncover.dynamics.models import ToyConfig, ToyTransformer

    V, P = 6, 6
    pos0, tok0, a0, b0 = 1, 1 + P, 1 + P + V, 1 + P + 2 * V  # dims: 0 constant, positions, tokens, A, B
    hf = ToyTransformer(ToyConfig(d_vocab=V, n_ctx=P, d_model=b0 + V, n_heads=2, d_head=8, d_mlp=0, n_layers=2),
                        seed=0)
    with torch.no_grad():
        for p in hf.parameters():
            p.zero_()
        hf.embed.weight[:, tok0: tok0 + V] = torch.eye(V)
        hf.pos_embed.weight[:, 0] = 1.0
        hf.pos_embed.weight[:, pos0: pos0 + P] = torch.eye(P)
        for block, key, src, dst in ((hf.blocks[0], 2, tok0, a0), (hf.blocks[1], 3, a0, b0)):
            block.attn.W_Q[0, 0, 0] = 10.0
            block.attn.W_K[0, pos0 + key, 0] = 10.0
            block.attn.W_V[0, src: src + V, :V] = torch.eye(V)
            block.attn.W_O[0, :V, dst: dst + V] = torch.eye(V)
        hf.unembed.weight[:, b0: b0 + V] = 5 * torch.eye(V)
    return uc.load(hf)


def test_the_true_hypothesis_of_a_known_circuit_recovers_it_and_a_wrong_one_does_not():
    model = _copy_model()
    task = _repeating(n=48, pos=6, vocab=6, seed=1, lo=0)
    at2, at4 = token_at(task.clean, 2), token_at(task.clean, 4)
    nodes, edges = ["embed", "L0.H0", "L1.H0"], [("embed", "L0.H0"), ("L0.H0", "L1.H0"), ("L1.H0", "logits")]
    true = scrub(model, task, Hypothesis(nodes, edges, {"logits": at2, "L1.H0": at2, "L0.H0": at2}), n_samples=3)
    assert true.metric_model > 3 and abs(true.metric_random) < 0.5 * true.metric_model
    assert true.recovered == pytest.approx(1.0, abs=1e-3)
    # L0.H0 claimed to read the token at position 4, which the model ignores: the copied token is lost
    wrong = scrub(model, task, Hypothesis(nodes, edges, {"logits": at2, "L1.H0": at2, "L0.H0": at4}), n_samples=3)
    assert wrong.recovered < 0.5
    # the path cut: L1.H0's input from L0.H0 not claimed, so it is resampled at random
    cut = scrub(model, task, Hypothesis(nodes, edges[:1] + edges[2:], {"logits": at2}), n_samples=3)
    assert cut.recovered < 0.5
    assert true.features == {"L0.H0": "token at position 2", "L1.H0": "token at position 2",
                             "logits": "token at position 2"}


def test_bad_input():
    model = uc.load(tiny_hf("llama"))
    task = _repeating(n=6, pos=6, vocab=4)
    with pytest.raises(UncoverError, match=r"unknown node 'L9.H0'.*L0.H0 .. L2.H3, L0.MLP .. L2.MLP and logits"):
        scrub(model, task, Hypothesis(["L9.H0"]))
    unique = lambda i: ("prompt", i)  # noqa: E731
    with pytest.raises(UncoverError, match="L1.H0 puts each of the 6 inputs in a class of its own.*nothing to resample"):
        scrub(model, task, Hypothesis(["L1.H0"], features={"L1.H0": unique}))
    scrub(model, task, Hypothesis(["L1.H0"], features={"L1.H0": whole_input}), n_samples=1)  # says so explicitly
    with pytest.raises(UncoverError, match="does not claim it"):
        scrub(model, task, Hypothesis(["L1.H0"], features={"L0.H0": whole_input}))
    with pytest.raises(UncoverError, match="add L0.H0 to nodes"):
        scrub(model, task, Hypothesis(["L1.H0"], [("L0.H0", "L1.H0")]))
    with pytest.raises(UncoverError, match="L1.H0 -> L0.H0 is not an edge"):
        scrub(model, task, Hypothesis(["L0.H0", "L1.H0"], [("L1.H0", "L0.H0")]))
    with pytest.raises(UncoverError, match="more than 5 forwards"):
        names = Graph.of(model).source_names
        scrub(model, task, Hypothesis(names, features={v: token_at(task.clean, 1) for v in names[1:] + ["logits"]}),
              max_runs=5)
    padded = Task("pad", task.clean, task.clean, task.answers, task.wrong, attention_mask=torch.ones(6, 6).long())
    padded.attention_mask[0, 0] = 0
    with pytest.raises(UncoverError, match="without padding"):
        scrub(model, padded, Hypothesis([]))
    with pytest.raises(UncoverError, match="last token is the target"):
        scrub(model, task.clean[:, :1], Hypothesis([]))


def test_edge_patcher_adds_inputs_to_the_receivers_named():
    from uncover.components.circuits.patching import EdgePatcher

    model = uc.load(tiny_hf("llama"))
    task = _task(n=3)
    patcher = EdgePatcher.build(model, task)
    g = patcher.graph
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(3, task.clean.shape[1], model.cfg.d_model, generator=gen)
    keep = torch.ones(g.n_sources, g.n_receivers)
    with torch.no_grad():
        got = model.run_with_hooks(task.clean, patcher.hooks(keep, {g.head_receiver(1, 2, "k"): delta}))

        def add(t, hook):
            t = t.clone()
            t[:, :, 2] += delta
            return t
        want = model.run_with_hooks(task.clean, [("blocks.1.hook_k_input", add)])
    assert (got - want).abs().max() <= 1e-5 and (got - model(task.clean)).abs().max() > 1e-3
