"""Feature / neuron analysis against brute force: top contexts, polysemanticity, logit effects,
ablation and steering hooks, and neuron vocabulary projections on smollm2."""
from __future__ import annotations

import math

import pytest
import torch

from uncover.components import neurons as nr
from uncover.errors import UncoverError
from uncover.features import analysis as an
from uncover.features.sae import SAE, SAEConfig
from uncover.features.store import harvest

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def llama(tiny_model):
    return tiny_model("llama")


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 1000, (10, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def sae():
    return SAE(SAEConfig(64, 96, "relu", hook_name=HOOK), seed=1)


def test_top_contexts_match_brute_force(llama, tokens, sae):
    latents = [3, 50, 77]
    ctx = an.top_contexts(llama, an.sae_latents(sae, latents), tokens, n_top=4, batch_size=3)
    acts = sae.encode(harvest(llama, [HOOK], tokens)[HOOK]).view(10, 12, -1)[..., latents]
    per_seq = acts.amax(1)                                                   # [seqs, units]
    for u in range(3):
        values, seqs = per_seq[:, u].topk(4)
        assert torch.allclose(ctx.values[u], values)
        assert ctx.seq[u].tolist() == seqs.tolist()
        for r, s in enumerate(seqs.tolist()):
            assert acts[s, ctx.pos[u, r], u] == values[r]
            assert torch.allclose(ctx.acts[u, r], acts[s, :, u])


def test_polysemanticity_closed_form():
    tokens = torch.tensor([[5, 6, 7], [5, 8, 9], [1, 2, 3], [4, 4, 4]])
    ctx = an.TopContexts(values=torch.tensor([[2.0, 2.0, 2.0, 2.0], [3.0, 1.0, 0.0, 0.0]]),
                         seq=torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]]),
                         pos=torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0]]),
                         acts=torch.zeros(2, 4, 3), tokens=tokens)
    poly = an.polysemanticity(ctx)
    # unit 0 peaks on tokens 5, 5, 1, 4 with equal weight: probabilities 1/2, 1/4, 1/4
    assert float(poly[0]) == pytest.approx(math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))))
    assert float(poly[1]) == pytest.approx(1.0)                              # all mass on token 5


def test_peak_tokens_share_the_activation_mass():
    from types import SimpleNamespace

    named = SimpleNamespace(to_str_tokens=lambda ids: [f"t{int(i)}" for i in ids])
    tokens = torch.tensor([[5, 6, 7], [5, 8, 9], [1, 2, 3], [4, 4, 4]])
    ctx = an.TopContexts(values=torch.tensor([[3.0, 1.0, 2.0, 2.0]]), seq=torch.tensor([[0, 1, 2, 3]]),
                         pos=torch.tensor([[0, 0, 0, 0]]), acts=torch.zeros(1, 4, 3), tokens=tokens)
    # peaks on 5 (3 + 1), 1 (2) and 4 (2) of a mass of 8
    got = an.peak_tokens(named, ctx, 0, k=2)
    assert got[0] == ("t5", 0.5) and got[1][1] == 0.25 and got[1][0] in ("t1", "t4")
    empty = an.TopContexts(values=torch.zeros(1, 4), seq=ctx.seq, pos=ctx.pos, acts=ctx.acts, tokens=tokens)
    assert an.peak_tokens(named, empty, 0) == []


def test_logit_effects_are_the_unembedding_projection(llama, sae):
    effects = an.logit_effects(llama, sae.W_dec[:2].detach(), k=5)
    logits = sae.W_dec[:2].detach() @ llama.W_U
    for u in range(2):
        assert effects["top_ids"][u] == logits[u].topk(5).indices.tolist()
        assert effects["bottom_ids"][u] == (-logits[u]).topk(5).indices.tolist()


@torch.no_grad()
def test_ablation_and_steering_hooks(llama, tokens, sae):
    latent = int(sae.encode(harvest(llama, [HOOK], tokens[:2])[HOOK]).sum(0).argmax())
    name, fn = an.ablate_hook(sae, latent)
    _, clean = llama.run_with_cache(tokens[:2], names=[HOOK])
    _, ablated = llama.run_with_cache(tokens[:2], names=[HOOK], fwd_hooks=[(name, fn)])
    x = clean[HOOK]
    expected = x - sae.encode(x)[..., latent, None] * sae.W_dec[latent]
    assert torch.allclose(ablated[HOOK], expected, atol=1e-5)
    assert float(sae.encode(ablated[HOOK])[..., latent].abs().max()) < float(sae.encode(x)[..., latent].max())
    name, fn = an.steer_hook(sae, latent, scale=4.0)
    _, steered = llama.run_with_cache(tokens[:2], names=[HOOK], fwd_hooks=[(name, fn)])
    assert torch.allclose(steered[HOOK], x + 4.0 * sae.W_dec[latent], atol=1e-5)


def test_activation_histogram_counts_nonzero():
    acts = torch.tensor([0.0, 0.0, 1.0, 2.0, 2.0, 4.0])
    h = an.activation_histogram(acts, bins=4)
    assert sum(h["counts"]) == 4 and h["firing_rate"] == pytest.approx(4 / 6)
    assert h["edges"][0] == 0 and h["edges"][-1] == 4


def test_neuron_tools_on_smollm(smollm):
    from uncover.data.corpus import corpus_tokens

    layer, ids = 5, [0, 17, 1000]
    proj = nr.vocab_projection(smollm, layer, ids, k=6)
    value_logits = smollm.W_out(layer)[ids] @ smollm.W_U
    assert proj["top_ids"] == value_logits.topk(6).indices.tolist()
    toks = corpus_tokens(smollm, 6, 24, seed=3)
    report = nr.analyse_neurons(smollm, layer, ids, toks, n_top=3, batch_size=4)
    _, cache = smollm.run_with_cache(toks, names=[f"blocks.{layer}.mlp.hook_post"])
    acts = cache[f"blocks.{layer}.mlp.hook_post"][..., ids]
    assert torch.allclose(report.contexts.values, acts.amax(1).T.topk(3, dim=1).values, atol=1e-4)
    card = report.to_dict(smollm)["cards"][0]
    words, values = card["contexts"][0]
    assert len(words) == len(values) and max(values) == pytest.approx(card["max_activation"], rel=1e-5)
    # polysemanticity from its definition: exp(entropy) of the top-3 contexts' peak tokens, weighted by activation
    values, pos = acts[..., 0].max(1)                                    # per sequence: peak value and position
    top = values.topk(3).indices
    mass: dict[int, float] = {}
    for s in top.tolist():
        token = int(toks[s, pos[s]])
        mass[token] = mass.get(token, 0.0) + max(float(values[s]), 0.0)
    probs = [m / sum(mass.values()) for m in mass.values()]
    assert card["polysemanticity"] == pytest.approx(math.exp(-sum(q * math.log(q) for q in probs if q > 0)), rel=1e-4)
    assert nr.most_active_neurons(smollm, layer, toks[:2], n=2) == \
        cache[f"blocks.{layer}.mlp.hook_post"][:2].amax((0, 1)).topk(2).indices.tolist()
    with pytest.raises(UncoverError, match="out of range"):
        nr.vocab_projection(smollm, layer, [smollm.cfg.d_mlp])
    with pytest.raises(UncoverError, match="layers 0"):
        nr.neuron_activations(smollm, 99, toks)
