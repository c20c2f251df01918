"""Slingshot detection, memorisation pruning, induction scores and double descent against independent
computations (synthetic curves, closed forms, constructed attention patterns)."""
import math

import pytest
import torch

from uncover.dynamics.data import modular_data, repeated_sequences
from uncover.dynamics.double_descent import DoubleDescentConfig, min_norm_readout, run_double_descent
from uncover.dynamics.induction import InductionConfig, head_scores, icl_score, per_position_loss, steepest_change
from uncover.dynamics.memorization import classify_phase, evaluate_with_mask, neuron_ipr, prune_by_ipr
from uncover.dynamics.models import ModularMLP, ToyTransformer
from uncover.dynamics.norms import detect_slingshots
from uncover.dynamics.tasks import ModularTask
from uncover.errors import UncoverError


def test_detect_slingshots_on_a_synthetic_curve():
    losses = [1.0 * math.exp(-s / 30) + 1e-6 for s in range(300)]
    for s in range(200, 210):  # a spike back up to ~0.5 at steps 200-209, peaking at 204
        losses[s] = 0.5 - 0.01 * abs(s - 204)
    norms = [10.0 + 0.01 * s for s in range(300)]
    spikes = detect_slingshots(losses, norms, factor=10, window=50)
    assert len(spikes) == 1
    spike = spikes[0]
    assert spike.start == 201 and spike.peak == 205  # 1-based step numbers
    assert spike.loss_peak == pytest.approx(0.5)
    assert spike.loss_before == pytest.approx(min(losses[150:200]))
    assert spike.norm_growth == pytest.approx(norms[200] / norms[150])
    assert detect_slingshots([1.0 / (s + 1) for s in range(300)]) == []
    with pytest.raises(UncoverError, match="one entry per training step"):
        detect_slingshots(losses, norms[:-1])


def test_ipr_pruning_removes_lowest_ipr_neurons_first():
    p = 11
    model = ModularMLP(p, width=6, act_fn="relu", seed=0)
    x = torch.arange(p, dtype=torch.float32)
    with torch.no_grad():  # neurons 0-2: single frequency (IPR 1); neurons 3-5: random (low IPR)
        for i, k in enumerate((1, 2, 3)):
            model.fc_in.weight[i, :p] = torch.cos(2 * math.pi * k * x / p)
            model.fc_in.weight[i, p:] = torch.sin(2 * math.pi * k * x / p)
    scores = neuron_ipr(model)
    assert scores[:3].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert (scores[3:] < 0.6).all()
    task = ModularTask(modular_data(p, "add", 0.5, corrupt_frac=0.2))
    keep = torch.tensor([True, True, True, False, False, False])
    masked = evaluate_with_mask(model, task, keep)
    with torch.no_grad():  # independent computation: zero the pruned neurons' output weights
        model.fc_out.weight[:, 3:] = 0
    assert masked == pytest.approx(task.evaluate(model))
    model2 = ModularMLP(p, width=6, act_fn="relu", seed=0)
    with torch.no_grad():
        model2.fc_in.weight.copy_(model.fc_in.weight)
    rows = prune_by_ipr(model2, task, [0.0, 0.5])
    with torch.no_grad():
        model2.fc_out.weight[:, 3:] = 0
    assert rows[1]["test_acc"] == pytest.approx(task.evaluate(model2)["test_acc"])


@pytest.mark.parametrize("metrics, phase", [
    ({"test_acc": 0.99, "train_acc": 1.0, "corrupt_mem_acc": 0.9, "corrupt_true_acc": 0.1}, "coexistence"),
    ({"test_acc": 0.99, "train_acc": 0.8, "corrupt_mem_acc": 0.1, "corrupt_true_acc": 0.5}, "partial inversion"),
    ({"test_acc": 0.99, "train_acc": 0.8, "corrupt_mem_acc": 0.0, "corrupt_true_acc": 0.97}, "full inversion"),
    ({"test_acc": 0.10, "train_acc": 1.0, "corrupt_mem_acc": 1.0, "corrupt_true_acc": 0.0}, "memorisation"),
    ({"test_acc": 0.10, "train_acc": 0.3, "corrupt_mem_acc": 0.1, "corrupt_true_acc": 0.0}, "forgetting"),
])
def test_classify_phase(metrics, phase):
    assert classify_phase(metrics) == phase


def _force_pattern(model, make):
    return [b.attn.hook_pattern.register_forward_hook(lambda m, i, o: make(o)) for b in model.blocks]


def test_head_scores_on_constructed_patterns():
    cfg = InductionConfig(d_vocab=20, seq_len=12, d_model=16, n_heads=2)
    model = ToyTransformer(cfg.model_config(), seed=0)
    tokens = repeated_sequences(4, 12, 20, seed=0)
    period = 12 // 2

    def prev_then_induction(o):
        out = torch.zeros_like(o)
        q = torch.arange(1, 12)
        out[:, 0, q, q - 1] = 1.0  # head 0: previous token
        out[:, :, 0, 0] = 1.0
        qi = torch.arange(period + 1, 12)
        out[:, 1, :, 0] = 1.0  # head 1: BOS everywhere, except induction targets in the repeat
        out[:, 1, qi, 0] = 0.0
        out[:, 1, qi, qi - period + 1] = 1.0
        return out

    handles = _force_pattern(model, prev_then_induction)
    try:
        prev, induction = head_scores(model, tokens)
    finally:
        for h in handles:
            h.remove()
    assert prev[:, 0].tolist() == pytest.approx([1.0, 1.0])
    assert induction[:, 1].tolist() == pytest.approx([1.0, 1.0])
    # head 1 attends to the previous token only at query 1 (its key 0 is the BOS): 1 of 11 queries
    assert prev[:, 1].tolist() == pytest.approx([1 / 11, 1 / 11])


def test_icl_score_and_per_position_loss():
    losses = torch.tensor([9.0, 4.0, 4.0, 3.0, 2.0, 1.0, 1.0, 1.0])
    assert icl_score(losses) == pytest.approx(1.0 - 4.0)  # last quarter mean 1, positions 1-2 mean 4
    cfg = InductionConfig(d_vocab=10, seq_len=8, d_model=8, n_heads=2)
    model = ToyTransformer(cfg.model_config(), seed=0)
    tokens = repeated_sequences(3, 8, 10, seed=1)
    logits = model(tokens).logits
    naive = torch.stack([torch.stack([-logits[b, i].log_softmax(-1)[tokens[b, i + 1]] for b in range(3)]).mean()
                         for i in range(7)])
    assert torch.allclose(per_position_loss(model, tokens), naive, atol=1e-5)


def test_steepest_change():
    steps = [0, 10, 20, 30, 40]
    assert steepest_change(steps, [5.0, 4.9, 2.0, 1.9, 1.8], rising=False) == 15
    assert steepest_change(steps, [0.0, 0.1, 0.2, 0.9, 1.0], rising=True) == 25
    assert steepest_change([0], [1.0], rising=True) is None


def test_min_norm_readout_matches_closed_forms():
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(6, generator=gen, dtype=torch.float64)
    tall = torch.randn(6, 3, generator=gen, dtype=torch.float64)  # under-parameterised: normal equations
    assert torch.allclose(min_norm_readout(tall, y), torch.linalg.solve(tall.T @ tall, tall.T @ y))
    wide = torch.randn(6, 10, generator=gen, dtype=torch.float64)  # over-parameterised: minimum norm
    assert torch.allclose(min_norm_readout(wide, y), wide.T @ torch.linalg.solve(wide @ wide.T, y))


def test_double_descent_peaks_at_the_interpolation_threshold():
    cfg = DoubleDescentConfig(n_train=40, n_test=200, d_input=8, widths=(4, 10, 20, 40, 80, 400), n_repeats=3)
    result = run_double_descent(cfg)
    test = result.test_loss
    assert result.peak_width == 40
    assert test[1] < test[3] > test[-1]  # down, up, down
    assert result.train_loss[-1] == pytest.approx(0.0, abs=1e-8)  # interpolates beyond the threshold


def test_run_grokking_end_to_end_small(tmp_path):
    from uncover.dynamics.grokking import GrokConfig, GrokResult, progress_measures, run_grokking

    cfg = GrokConfig(p=11, train_frac=0.5, d_model=16, n_heads=2, d_mlp=32, steps=40, eval_every=10,
                     measure_every=20, lr=1e-2)
    result = run_grokking(cfg, out_dir=tmp_path)
    assert [m["step"] for m in result.measures] == [0, 20, 40]
    assert [c["step"] for c in result.curves] == [0, 10, 20, 30, 40]
    # with no key frequencies removed, the excluded loss is the plain training loss of the evaluation
    from uncover.dynamics.data import modular_data
    from uncover.dynamics.models import ToyTransformer

    model = ToyTransformer(cfg.model_config())
    model.load_state_dict(result.final_state)
    measures = progress_measures(model, modular_data(11, "add", 0.5), key_freqs=[])
    assert measures["excluded_loss"] == pytest.approx(result.curves[-1]["train_loss"], rel=1e-4)
    loaded = GrokResult.load(tmp_path)
    assert loaded.key_freqs == result.key_freqs and loaded.phases == json_roundtrip(result.phases)
    assert (tmp_path / "checkpoints" / "step_0000020.safetensors").exists()


def json_roundtrip(x):
    import json

    return json.loads(json.dumps(x))


def test_grok_config_rejects_snapshots_between_evaluations():
    from uncover.dynamics.grokking import GrokConfig

    with pytest.raises(UncoverError, match="multiple of eval_every"):
        GrokConfig(eval_every=100, measure_every=250)
    with pytest.raises(UncoverError, match="divisible"):
        GrokConfig(d_model=30, n_heads=4)


def test_phase_diagram_runs_one_classified_run_per_cell():
    from uncover.dynamics import plots
    from uncover.dynamics.memorization import MemorizationConfig, phase_diagram

    base = MemorizationConfig(p=7, width=8, steps=10, eval_every=5)
    rows = phase_diagram([0.0, 0.3], [0.1, 1.0], base=base)
    assert [(r["corrupt_frac"], r["weight_decay"]) for r in rows] == [(0.0, 0.1), (0.0, 1.0), (0.3, 0.1), (0.3, 1.0)]
    assert "corrupt_mem_acc" in rows[2] and "corrupt_mem_acc" not in rows[0]
    assert plots.phase_diagram(rows).data[0].z is not None


# final accuracies of constructed runs, by (corrupted fraction, weight decay), with the phase Doshi et al.'s
# definitions give them, read off by hand: fits train but not test -> memorisation; fits neither ->
# forgetting; generalises and keeps the corrupted labels -> coexistence; generalises and predicts the true
# label on (nearly) all corrupted examples -> full inversion, on some -> partial inversion
CONSTRUCTED = {
    (0.0, 0.1): ({"train_acc": 1.0, "test_acc": 0.05}, "memorisation"),
    (0.0, 1.0): ({"train_acc": 0.2, "test_acc": 0.05}, "forgetting"),
    (0.3, 0.1): ({"train_acc": 1.0, "test_acc": 0.97, "corrupt_mem_acc": 0.95, "corrupt_true_acc": 0.0}, "coexistence"),
    (0.3, 1.0): ({"train_acc": 0.7, "test_acc": 1.0, "corrupt_mem_acc": 0.0, "corrupt_true_acc": 0.98}, "full inversion"),
    (0.3, 3.0): ({"train_acc": 0.8, "test_acc": 0.95, "corrupt_mem_acc": 0.2, "corrupt_true_acc": 0.6}, "partial inversion"),
}


def test_phase_diagram_phases_match_hand_classified_runs(monkeypatch):
    """The training is replaced by runs with constructed final accuracies; the phase diagram must label each
    cell with the phase read off by hand."""
    import uncover.dynamics.memorization as M

    class ConstructedTrainer:
        def __init__(self, model, task, train, progress=None):
            self.key = (0.3 if bool(task.data.corrupted.any()) else 0.0, train.weight_decay)

        def fit(self):
            return type("Run", (), {"metrics": [dict(CONSTRUCTED[self.key][0], step=1)]})()

    monkeypatch.setattr(M, "Trainer", ConstructedTrainer)
    base = M.MemorizationConfig(p=7, width=8, steps=10, eval_every=5)
    rows = M.phase_diagram([0.0], [0.1, 1.0], base=base) + M.phase_diagram([0.3], [0.1, 1.0, 3.0], base=base)
    assert {(r["corrupt_frac"], r["weight_decay"]): r["phase"] for r in rows} == \
        {k: phase for k, (_, phase) in CONSTRUCTED.items()}
