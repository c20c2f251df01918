"""Fine-tuning wrappers (Jain et al. 2023) on the toy counting transformer: mechanics checked against
independent computations, the measured claims at test size, findings wording chosen by the data, bad input."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from uncover.applications import report as AR
from uncover.applications import wrappers as W
from uncover.core.results import Result
from uncover.dynamics.models import ToyTransformer, as_model
from uncover.errors import UncoverError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def result() -> W.WrapperResult:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return W.run_wrappers(W.test_config())
    finally:
        torch.set_num_threads(before)


def _tiny_cfg() -> W.WrapperConfig:
    return W.WrapperConfig(d_model=16, d_head=4, d_mlp=32, seq_len=8, n_heads=2)


# ---- mechanics ------------------------------------------------------------------------------------------
def test_running_count_matches_a_loop():
    g = torch.Generator().manual_seed(3)
    x = W.sequences(5, _tiny_cfg(), g)
    assert (x[:, 0] == 0).all() and (x[:, 1:] >= 1).all()
    got = W.running_count(x, 2)
    for b in range(5):
        for t in range(1, x.shape[1]):
            assert got[b, t - 1] == sum(int(x[b, s] == 2) for s in range(1, t + 1))


def test_pruned_forward_equals_zeroed_weights():
    """Zeroing units with hooks equals a forward with their output weights zeroed (fc_out columns for
    neurons, W_O rows for heads), computed on a copy of the model without any hook."""
    cfg = _tiny_cfg()
    toy = ToyTransformer(cfg.toy_config(), seed=1)
    names = W.unit_names(toy.cfg)
    chosen = ["L0N3", "L1N31", "L0H1", "L1H0"]
    units = [names.index(n) for n in chosen]
    tokens = W.sequences(6, cfg, torch.Generator().manual_seed(4))
    hooked = as_model(toy).run_with_hooks(tokens, fwd_hooks=W.prune_hooks(toy.cfg, units))
    manual = ToyTransformer(cfg.toy_config(), seed=1)
    with torch.no_grad():
        manual.blocks[0].mlp.fc_out.weight[:, 3] = 0
        manual.blocks[1].mlp.fc_out.weight[:, 31] = 0
        manual.blocks[0].attn.W_O[1] = 0
        manual.blocks[1].attn.W_O[0] = 0
        expected = manual(tokens).logits
        unpruned = toy(tokens).logits
    assert torch.allclose(hooked, expected, atol=1e-5)
    assert (hooked - unpruned).abs().max() > 1e-3  # the pruning did change something
    acc = W.pruned_accuracy(toy, tokens, 1, units)
    assert acc == W.count_accuracy(expected, tokens, 1)


def _zeroed_copy(toy: ToyTransformer, cfg: W.WrapperConfig, unit: str) -> ToyTransformer:
    """A copy of ``toy`` whose unit (``L{l}N{i}`` or ``L{l}H{h}``) has its output weights zeroed."""
    copy_ = ToyTransformer(cfg.toy_config())
    copy_.load_state_dict(toy.state_dict())
    layer, kind, index = int(unit[1]), unit[2], int(unit[3:])
    with torch.no_grad():
        if kind == "N":
            copy_.blocks[layer].mlp.fc_out.weight[:, index] = 0
        else:
            copy_.blocks[layer].attn.W_O[index] = 0
    return copy_


def test_greedy_first_pick_is_the_best_single_unit():
    """The greedy search's first unit is the one whose zeroed weights give the lowest loss, found by
    scoring every candidate on a weight-zeroed copy (no hooks)."""
    cfg = _tiny_cfg()
    toy = ToyTransformer(cfg.toy_config(), seed=2)
    names = W.unit_names(toy.cfg)
    tokens = W.sequences(16, cfg, torch.Generator().manual_seed(6))
    candidates = [0, 5, 31, 32, 40, 63, 64, 65, 66, 67]
    picked = W.greedy_units(toy, tokens, 1, candidates + [5], 3)
    assert len(picked) == 3 and len(set(picked)) == 3 and set(picked) <= set(candidates)
    with torch.no_grad():
        losses = {c: float(W.count_loss(_zeroed_copy(toy, cfg, names[c])(tokens).logits, tokens, 1))
                  for c in candidates}
    assert picked[0] == min(losses, key=losses.get)
    assert W.pruned_loss(toy, tokens, 1, picked[:1]) == pytest.approx(losses[picked[0]], abs=1e-5)


def test_probe_matches_numpy_least_squares():
    """With no ridge the probe's predictions are those of numpy's least squares on the same design."""
    g = torch.Generator().manual_seed(5)
    X = torch.randn(300, 6, generator=g)
    y = (X[:, 0] * 2 + X[:, 1] > 0).long() + (X[:, 2] > 1).long()
    probe = W.CountProbe.fit(X, y, 3, ridge=0.0)
    Xd = X.double().numpy()
    Z = np.concatenate([(Xd - Xd.mean(0)) / Xd.std(0, ddof=1), np.ones((len(Xd), 1))], axis=1)
    coef = np.linalg.lstsq(Z, np.eye(3)[y.numpy()], rcond=None)[0]
    np.testing.assert_allclose(probe.weight.numpy(), coef, atol=1e-8)
    assert torch.equal(probe.predict(X), torch.from_numpy((Z @ coef).argmax(1)))
    assert probe.score(X, y) == float((torch.from_numpy((Z @ coef).argmax(1)) == y).float().mean())


def test_prune_counts_stay_within_the_share():
    assert W.prune_counts(264, 0.05) == [0, 1, 2, 4, 8, 13]
    assert W.prune_counts(10, 0.05) == [0, 1]
    assert all(k <= 0.05 * 520 for k in W.prune_counts(520, 0.05))


# ---- the claims at test size -------------------------------------------------------------------------------
def test_fine_tuning_hides_the_capability(result):
    assert result.pretrained_acc >= 0.95  # measured 1.00
    assert result.finetuned_finetune_acc >= 0.9  # measured 0.97: the fine-tuning task is learned
    assert result.pretrained_finetune_acc <= 0.5  # measured 0.375: it was not before
    assert result.capability_drop >= AR.DROPS.value  # measured 0.63


def test_probe_still_reads_the_count_after_fine_tuning(result):
    assert result.probe_margin >= AR.PROBE_READS.value + 0.1  # measured 0.865 vs 0.620
    assert result.probe_finetuned > result.finetuned_acc + 0.3  # readable, though no longer output
    assert max(result.probe["pretrained"]) >= 0.95


def test_reverse_fine_tuning_revives_faster_than_scratch(result):
    assert result.revive_steps is not None and result.scratch_steps is not None
    assert result.revive_speedup >= AR.REVIVES.value  # measured 38 / 13 = 2.9
    assert result.revive_curve[result.revive_steps] >= result.config["revive_acc"]
    assert all(a < result.config["revive_acc"] for a in result.scratch_curve[: result.scratch_steps])
    assert result.revive_curve[0] == pytest.approx(result.finetuned_acc)
    assert result.scratch_curve[0] == pytest.approx(result.random_acc)


def test_pruning_is_measured_and_worded_by_the_data(result):
    """Pruning up to 5% of units recovers little of the capability in this toy (measured: at most ~19% of
    what fine-tuning removed): the must-hold "restored by pruning few units" is not reproduced here,
    and the findings say so because the measured share is below the threshold."""
    assert result.prune_counts[-1] <= W.FEW_UNITS * result.n_units
    for ranking in W.RANKINGS:
        d = result.prune[ranking]
        assert d["capability"][0] == pytest.approx(result.finetuned_acc)  # k = 0 is the fine-tuned model
        assert d["finetune"][0] == pytest.approx(result.finetuned_finetune_acc)
        assert min(d["finetune"][1:]) < result.finetuned_finetune_acc  # the top units matter to fine-tuning
        assert len(d["units"]) == result.prune_counts[-1]
    ranking, k, share = result.best_restore()
    restore = AR.wrapper_findings(result)[2]
    assert ("does not restore" in restore) == (share < AR.RESTORES.value)
    assert f"Pruning {k} of {result.n_units}" in restore


def test_findings_state_each_measured_claim(result):
    text = " ".join(AR.wrapper_findings(result))
    assert "drops" in text and "still reads" in text and "revives it faster" in text
    assert f"{result.probe_finetuned:.1%}" in text and f"{result.revive_steps} steps" in text


# ---- wording flips with contrary data -------------------------------------------------------------------
def _contrary(result: W.WrapperResult) -> W.WrapperResult:
    acc = result.pretrained_acc
    ranking = W.RANKINGS[0]
    prune = {r: dict(d) for r, d in result.prune.items()}
    prune[ranking]["capability"] = [acc - 0.5] + [acc - 0.05] * (len(result.prune_counts) - 1)
    return dataclasses.replace(
        result, finetuned_acc=acc - 0.5, probe={**result.probe, "finetuned": list(result.probe["random"])},
        prune=prune, revive_curve=[0.1] * 30 + [0.95], scratch_curve=[0.1] * 20 + [0.95], revive_steps=30,
        scratch_steps=20)


def test_findings_flip_when_the_data_say_otherwise(result):
    flipped = AR.wrapper_findings(_contrary(result))
    assert "no longer reads" in flipped[1]
    assert "does not restore" not in flipped[2] and "restores" in flipped[2]  # 90% of the loss recovered
    assert "does not revive it clearly faster" in flipped[3]
    same = dataclasses.replace(result, finetuned_acc=result.pretrained_acc - 0.01)
    assert "does not clearly drop" in AR.wrapper_findings(same)[0]


def test_render_has_findings_plot_and_tables(result):
    html = AR.render_wrappers(result)
    assert html.count("<table>") == 2 and "Plotly.newPlot" in html and 'class="findings"' in html
    assert "reverse fine-tuning" in html and "from scratch" in html


def test_result_round_trips(result, tmp_path):
    back = Result.load(result.save(tmp_path / "wrappers"))
    assert isinstance(back, W.WrapperResult) and back.to_fields() == result.to_fields()


# ---- bad input and the CLI ----------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, words", [
    ({"capability_token": 0}, "content token"),
    ({"finetune_token": 8}, "content token"),
    ({"finetune_token": 1}, "must differ"),
    ({"prune_share": 1.5}, "prune_share"),
    ({"revive_acc": 0.0}, "revive_acc"),
    ({"pretrain_steps": 0}, "positive"),
    ({"n_tokens": 2}, "n_tokens"),
])
def test_bad_config_is_refused(changes, words):
    with pytest.raises(UncoverError, match=words):
        W.WrapperConfig(**changes)


def test_bad_units_and_probe_shapes_are_refused():
    cfg = _tiny_cfg().toy_config()
    with pytest.raises(UncoverError, match="out of range"):
        W.prune_hooks(cfg, [10_000])
    with pytest.raises(UncoverError, match="X \\[n, d\\]"):
        W.CountProbe.fit(torch.zeros(4, 3), torch.zeros(5).long(), 2)


def test_cli_runs_and_saves(tmp_path):
    from uncover.applications.cli import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps `wrappers` a named sub-command
    out = tmp_path / "res"
    res = CliRunner().invoke(app, ["wrappers", "--quick", "--steps", "20", "--finetune-steps", "10",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "probe accuracy" in res.output and "Reverse fine-tuning" in res.output
    saved = Result.load(out)
    assert saved.config["pretrain_steps"] == 20 and saved.config["finetune_steps"] == 10
    bad = CliRunner().invoke(app, ["wrappers", "--quick", "--steps", "0"])
    assert isinstance(bad.exception, UncoverError)


def test_rendered_numbers_are_the_computed_ones(result):
    from tests.report_numbers import thresholds, unmatched_numbers
    from uncover.applications.pruning.report import _plain

    html = AR.render_wrappers(result)
    # restored shares written out from their definition: (pruned - fine-tuned) / (pre-trained - fine-tuned)
    lost = result.pretrained_acc - result.finetuned_acc
    shares = {(ranking, k): (d["capability"][i] - result.finetuned_acc) / lost
              for ranking, d in result.prune.items() for i, k in enumerate(result.prune_counts) if k}
    (ranking, k), share = max(shares.items(), key=lambda kv: kv[1])
    assert result.best_restore() == (ranking, k, pytest.approx(share))
    derived = [k / result.n_units, *shares.values()]
    constants = thresholds(AR) + [math.floor(W.FEW_UNITS * result.n_units), 100 * W.FEW_UNITS]
    assert unmatched_numbers(html, _plain(result.to_fields()), derived, constants) == []
