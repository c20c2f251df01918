"""Logit lens, tuned lens and direct logit attribution against the model's own output and closed forms."""
import pytest
import torch

from uncover.components import lens as L
from uncover.errors import UncoverError


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3"])
def test_logit_lens_last_layer_is_the_output_and_dla_sums(tiny_model, arch):
    model = tiny_model(arch)
    tokens = torch.randint(0, 1000, (2, 6), generator=torch.Generator().manual_seed(0))
    r = L.logit_lens(model, tokens, target=torch.tensor([5, 9]), k=3)
    with torch.no_grad():
        out = model(tokens).float().log_softmax(-1)
    assert r.log_probs.shape == (model.cfg.n_layers + 1, 2, 6, 1000)
    assert float((r.log_probs[-1] - out).abs().max()) < 1e-5
    # target rank and probability against a direct count
    lp = r.log_probs[1, 1, 3]
    assert int(r.target_rank[1, 1, 3]) == int((lp > lp[9]).sum())
    assert float(r.target_prob[1, 1, 3]) == pytest.approx(float(lp[9].exp()), rel=1e-5)
    assert torch.equal(r.top_ids[:, :, :, 0], r.log_probs.argmax(-1))
    d = L.direct_logit_attribution(model, tokens, 5, 7, per_head=True)
    expected_error = 0.0
    if model.cfg.normalization == "ln":  # the final LayerNorm's bias belongs to no component
        norm = model.adapter.final_norm(model.hf)
        expected_error = float(norm.bias.detach().float() @ (model.W_U[:, 5] - model.W_U[:, 7]).detach().float())
    assert torch.allclose(d.actual - d.values.sum(0), torch.full((2,), expected_error), atol=1e-4)
    assert len(d.labels) == 1 + model.cfg.n_layers * (model.cfg.n_heads + 2)
    coarse = L.direct_logit_attribution(model, tokens, 5, 7)
    assert torch.allclose(coarse.values.sum(0), d.values.sum(0), atol=1e-4)


def test_dla_on_smollm_ioi_sums_to_the_logit_difference(smollm):
    from uncover.data.ioi import ioi_task

    task = ioi_task(smollm, n=4)
    d = L.direct_logit_attribution(smollm, task.clean, task.answers, task.wrong, attention_mask=task.attention_mask)
    with torch.no_grad():
        real = task.metric(smollm(task.clean, attention_mask=task.attention_mask), per_prompt=True)
    assert torch.allclose(d.actual, real, atol=1e-3)
    assert torch.allclose(d.values.sum(0), real, atol=1e-2)  # float32 rounding over 61 parts
    assert float(real.mean()) > 2  # smollm2 does IOI
    lens = L.logit_lens(smollm, "The Eiffel Tower is located in the city of", target=smollm.to_single_token(" Paris"))
    with torch.no_grad():
        out = smollm(smollm.to_tokens("The Eiffel Tower is located in the city of")).float().log_softmax(-1)
    assert float((lens.log_probs[-1] - out).abs().max()) < 1e-4
    assert int(lens.target_rank[-1, 0, -1]) == 0 and int(lens.target_rank[0, 0, -1]) > 0


def test_tuned_lens_starts_as_logit_lens_and_training_lowers_kl(tiny_model, tmp_path):
    model = tiny_model("gpt2")
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, 1000, (24, 12), generator=g)
    lens = L.TunedLens(model.cfg.n_layers, model.cfg.d_model, model.name)
    tuned = L.tuned_lens(model, lens, data[:2], target=3)
    assert torch.allclose(tuned.log_probs, L.logit_lens(model, data[:2]).log_probs, atol=1e-6)
    before = L.lens_kl(model, data[16:], lens)
    assert torch.allclose(before["tuned"], before["logit"])
    # the KL against a direct computation for one layer
    _, cache = model.run_with_cache(data[16:], names=["blocks.1.hook_resid_pre"])
    with torch.no_grad():
        final = model(data[16:]).float().log_softmax(-1)
        mid = model.unembed(model.apply_final_norm(cache["blocks.1.hook_resid_pre"])).float().log_softmax(-1)
    assert float(before["logit"][1]) == pytest.approx(float((final.exp() * (final - mid)).sum(-1).mean()), rel=1e-4)
    lens = L.train_tuned_lens(model, data[:16], steps=25, lr=5e-3, batch_size=4, positions_per_seq=6)
    after = L.lens_kl(model, data[16:], lens)
    assert float(after["tuned"].mean()) < 0.8 * float(after["logit"].mean())
    lens.save(tmp_path / "tl")
    back = L.TunedLens.load(tmp_path / "tl")
    assert torch.equal(back.weight, lens.weight.detach()) and back.model_name == model.name
    with pytest.raises(UncoverError, match="not a saved uncover result"):
        L.TunedLens.load(tmp_path / "missing")


def test_lens_target_count_error(tiny_model):
    with pytest.raises(UncoverError, match="one per prompt"):
        L.logit_lens(tiny_model("llama"), torch.zeros(2, 3, dtype=torch.long), target=torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("keep", [True, False])
def test_logit_lens_in_vocabulary_chunks_equals_the_whole_unembedding(tiny_model, monkeypatch, keep):
    """Chunks of 7 rows (uncover.core.vocab) against one unembedding of every layer's residual."""
    import uncover.core.vocab as V

    model = tiny_model("gemma3")
    tokens = torch.randint(0, 1000, (2, 6), generator=torch.Generator().manual_seed(1))
    target = torch.tensor([5, 9])
    monkeypatch.setattr(V, "VOCAB_BUDGET", 7 * model.cfg.d_vocab)
    r = L.logit_lens(model, tokens, target=target, k=3, keep_log_probs=keep)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=L._resid_names(model))
        lp = model.unembed(model.apply_final_norm(cache.accumulated_resid())).float().log_softmax(-1)
    top = lp.topk(3, dim=-1)
    want = lp.gather(-1, target[None, :, None, None].expand(*lp.shape[:3], 1))
    assert (r.log_probs is None) != keep
    if keep:
        torch.testing.assert_close(r.log_probs, lp, rtol=1e-6, atol=1e-6)
    assert torch.equal(r.top_ids, top.indices)
    torch.testing.assert_close(r.top_probs, top.values.exp(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(r.target_prob, want.squeeze(-1).exp(), rtol=1e-6, atol=1e-6)
    assert torch.equal(r.target_rank, (lp > want).sum(-1))
