"""Activation stores and SAE evaluation on a tiny random Llama, against the core's cache and hooks."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from uncover.core.interventions import ablate
from uncover.errors import UncoverError
from uncover.features.evals import evaluate_sae
from uncover.features.sae import SAE, SAEConfig
from uncover.features.store import DiskActivations, ShuffleBuffer, harvest, harvest_to_disk

NAMES = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]


@pytest.fixture(scope="module")
def llama(tiny_model):
    return tiny_model("llama")


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 1000, (12, 16), generator=torch.Generator().manual_seed(0))


def test_harvest_matches_run_with_cache(llama, tokens):
    got = harvest(llama, NAMES, tokens[:4], skip_positions=1)
    _, cache = llama.run_with_cache(tokens[:4], names=NAMES)
    for n in NAMES:
        assert torch.equal(got[n], cache[n][:, 1:].reshape(-1, cache[n].shape[-1]).float())


@pytest.mark.parametrize("names, stop", [(["hook_embed"], 0), (NAMES, 2), (["blocks.2.hook_resid_post"], 3),
                                         (["blocks.0.hook_mlp_out", "ln_final.hook_normalized"], None)])
def test_harvest_stops_after_the_deepest_layer_and_matches_a_full_run(llama, tokens, names, stop):
    from uncover.features.store import stop_layer

    assert stop_layer(names) == stop
    ran = []
    with llama.hooks([(f"blocks.{l}.hook_resid_pre", lambda t, h: ran.append(h.layer)) for l in range(3)]):
        got = harvest(llama, names, tokens[:2])
    assert ran == list(range(min(stop if stop is not None else 3, 3)))  # no layer after the deepest one ran
    _, cache = llama.run_with_cache(tokens[:2], names=names)
    for n in names:
        assert torch.equal(got[n], cache[n].reshape(-1, cache[n].shape[-1]).float())


def test_shuffle_buffer_yields_every_token_once(llama, tokens):
    stream = ShuffleBuffer(llama, NAMES[:1], tokens, batch_size=16, buffer_tokens=64, model_batch_size=3, seed=1)
    rows = torch.cat([b[NAMES[0]] for b in stream])
    everything = harvest(llama, NAMES[:1], tokens)[NAMES[0]]
    assert rows.shape == everything.shape                      # 192 tokens = 12 batches, nothing dropped
    assert not torch.equal(rows, everything)                   # shuffled
    key = lambda t: t[torch.argsort(t[:, 0])]  # noqa: E731
    assert torch.allclose(key(rows), key(everything))


def test_disk_store_resumes_and_checks_sums(llama, tokens, tmp_path):
    full = harvest_to_disk(llama, NAMES, tokens, tmp_path / "a", seqs_per_shard=4, skip_positions=1)
    assert len(full) == 12 * 15 and full.verify() == []
    reference = harvest(llama, NAMES, tokens, skip_positions=1)
    for n in NAMES:
        assert torch.equal(full.load(n), reference[n])

    def die_after_one(items, description=""):
        for i, x in enumerate(items):
            if i == 1:
                raise KeyboardInterrupt
            yield x

    with pytest.raises(KeyboardInterrupt):
        harvest_to_disk(llama, NAMES, tokens, tmp_path / "b", seqs_per_shard=4, skip_positions=1,
                        progress=die_after_one)
    partial = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert len(partial["shards"]) == 1
    seen = []

    def count(items, description=""):
        for x in items:
            seen.append(x)
            yield x

    resumed = harvest_to_disk(llama, NAMES, tokens, tmp_path / "b", seqs_per_shard=4, skip_positions=1,
                              progress=count)
    assert seen == [4, 8]                                        # only the missing shards were computed
    for n in NAMES:
        assert torch.equal(resumed.load(n), reference[n])
    batches = list(resumed.batches(32, shuffle=True, seed=0))
    assert sum(len(b[NAMES[0]]) for b in batches) == 160         # 180 rows, whole batches only
    shard = tmp_path / "b" / resumed.manifest["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-8] + b"corrupt!")
    assert resumed.verify() == [shard.name]
    with pytest.raises(UncoverError, match="different harvest"):
        harvest_to_disk(llama, NAMES, tokens[:8], tmp_path / "b", seqs_per_shard=4, skip_positions=1)


def lossless_sae(d: int, hook: str) -> SAE:
    """relu(x) - relu(-x) = x: a 2d-latent ReLU SAE that reconstructs exactly."""
    sae = SAE(SAEConfig(d, 2 * d, "relu", hook_name=hook))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def next_token_loss(logits, tokens):
    return float(F.cross_entropy(logits[:, :-1].flatten(0, 1).detach(), tokens[:, 1:].flatten()))


def test_eval_of_a_lossless_sae(llama, tokens):
    hook = "blocks.1.hook_resid_post"
    r = evaluate_sae(llama, lossless_sae(64, hook), tokens, batch_size=5)
    assert r.explained_variance == pytest.approx(1.0, abs=1e-6)
    assert r.cosine_similarity == pytest.approx(1.0, abs=1e-5) and r.l2_ratio == pytest.approx(1.0, abs=1e-5)
    assert r.ce_loss_with_sae == pytest.approx(r.ce_loss_clean, abs=1e-5)
    assert r.kl_div == pytest.approx(0.0, abs=1e-5) and r.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert r.ce_loss_clean == pytest.approx(next_token_loss(llama(tokens), tokens), abs=1e-5)
    zero = llama.run_with_hooks(tokens, fwd_hooks=[(hook, ablate("zero"))])
    assert r.ce_loss_zero_ablation == pytest.approx(next_token_loss(zero, tokens), abs=1e-5)
    assert r.l0 == pytest.approx(64, abs=0.5)                    # every coordinate is non-zero


def test_eval_of_a_random_sae_matches_naive_sums(llama, tokens):
    hook = "blocks.1.hook_resid_post"
    sae = SAE(SAEConfig(64, 128, "topk", k=8, hook_name=hook), seed=3)
    r = evaluate_sae(llama, sae, tokens, batch_size=4)
    x = harvest(llama, [hook], tokens)[hook]
    recon = sae(x)
    ev = 1 - float((recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert r.explained_variance == pytest.approx(ev, rel=1e-4, abs=1e-5)
    assert r.l0 == pytest.approx(float((sae.encode(x) > 0).sum(-1).float().mean()), abs=1e-4)
    spliced = llama.run_with_hooks(tokens, fwd_hooks=[(hook, lambda t, h: sae(t))])
    assert r.ce_loss_with_sae == pytest.approx(next_token_loss(spliced, tokens), abs=1e-4)
    p, q = llama(tokens)[:, :-1].log_softmax(-1), spliced[:, :-1].log_softmax(-1)
    assert r.kl_div == pytest.approx(float((p.exp() * (p - q)).sum(-1).mean()), abs=1e-4)
    assert r.dead_fraction == pytest.approx(float(((sae.encode(x) > 0).sum(0) == 0).float().mean()))


def test_eval_in_vocabulary_chunks_equals_the_full_logits(llama, tokens, monkeypatch):
    """Losses and KL from chunks of 7 positions (uncover.core.vocab) against whole [batch, pos, d_vocab] logits."""
    import uncover.core.vocab as V

    hook = "blocks.1.hook_resid_post"
    sae = SAE(SAEConfig(64, 128, "topk", k=8, hook_name=hook), seed=3)
    monkeypatch.setattr(V, "VOCAB_BUDGET", 7 * llama.cfg.d_vocab)
    r = evaluate_sae(llama, sae, tokens, batch_size=5, skip_positions=1)

    def splice(t, h):
        return torch.cat([t[:, :1], sae(t)[:, 1:]], 1)

    clean = llama(tokens)
    spliced = llama.run_with_hooks(tokens, fwd_hooks=[(hook, splice)])
    zeroed = llama.run_with_hooks(tokens, fwd_hooks=[(hook, lambda t, h: torch.cat([t[:, :1], 0 * t[:, 1:]], 1))])
    p, q = clean[:, :-1].log_softmax(-1), spliced[:, :-1].log_softmax(-1)
    for got, want in ((r.ce_loss_clean, next_token_loss(clean, tokens)), (r.ce_loss_with_sae, next_token_loss(spliced, tokens)),
                      (r.ce_loss_zero_ablation, next_token_loss(zeroed, tokens)),
                      (r.kl_div, float((p.exp() * (p - q)).sum(-1).mean()))):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_eval_skipping_the_first_position_keeps_it_clean(llama, tokens):
    hook = "blocks.1.hook_resid_post"
    sae = SAE(SAEConfig(64, 128, "topk", k=8, hook_name=hook), seed=3)
    r = evaluate_sae(llama, sae, tokens, batch_size=4, skip_positions=1)

    def splice(t, h):  # written out here: position 0 clean, the rest reconstructed / zeroed
        out = sae(t)
        out[:, 0] = t[:, 0]
        return out

    def zero(t, h):
        out = torch.zeros_like(t)
        out[:, 0] = t[:, 0]
        return out

    spliced = llama.run_with_hooks(tokens, fwd_hooks=[(hook, splice)])
    zeroed = llama.run_with_hooks(tokens, fwd_hooks=[(hook, zero)])
    assert r.ce_loss_with_sae == pytest.approx(next_token_loss(spliced, tokens), abs=1e-4)
    assert r.ce_loss_zero_ablation == pytest.approx(next_token_loss(zeroed, tokens), abs=1e-4)
    assert r.n_tokens == tokens.shape[0] * (tokens.shape[1] - 1)
    x = harvest(llama, [hook], tokens)[hook].view(*tokens.shape, -1)[:, 1:].reshape(-1, 64)
    assert r.l0 == pytest.approx(float((sae.encode(x) > 0).sum(-1).float().mean()), abs=1e-4)


def test_transcoder_eval_splices_output_hook(llama, tokens):
    sae = SAE(SAEConfig(64, 128, "relu", d_out=64, hook_name="blocks.1.hook_resid_mid",
                        hook_name_out="blocks.1.hook_mlp_out"), seed=0)
    r = evaluate_sae(llama, sae, tokens[:4])
    acts = harvest(llama, ["blocks.1.hook_resid_mid", "blocks.1.hook_mlp_out"], tokens[:4])
    pred, target = sae(acts["blocks.1.hook_resid_mid"]), acts["blocks.1.hook_mlp_out"]
    ev = 1 - float((pred - target).pow(2).sum() / (target - target.mean(0)).pow(2).sum())
    assert r.explained_variance == pytest.approx(ev, rel=1e-4, abs=1e-5)


def test_bad_store_input(llama, tokens, tmp_path):
    with pytest.raises(UncoverError, match="buffer_tokens"):
        ShuffleBuffer(llama, NAMES, tokens, batch_size=64, buffer_tokens=64)
    with pytest.raises(UncoverError, match="manifest"):
        DiskActivations(tmp_path)
