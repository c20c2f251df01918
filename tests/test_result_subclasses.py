"""Every technique result of components (lens, heads, neurons), features, representations, dynamics, editing
(ROME/MEMIT/covariance/evaluation) and data saves and loads back equal through the one folder format."""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import numpy as np
import pytest
import torch

from uncover.core.results import Result

pytestmark = pytest.mark.usefixtures("one_thread")

MODULES = [
    "uncover.components.lens", "uncover.components.neurons", "uncover.features.analysis", "uncover.features.evals",
    "uncover.features.superposition", "uncover.features.training", "uncover.representations.directions",
    "uncover.representations.iti", "uncover.representations.probes", "uncover.representations.reft",
    "uncover.representations.steering", "uncover.dynamics.double_descent", "uncover.dynamics.grokking",
    "uncover.dynamics.induction", "uncover.dynamics.memorization", "uncover.dynamics.norms",
    "uncover.dynamics.trainer", "uncover.applications.editing.covariance", "uncover.applications.editing.evaluate",
    "uncover.applications.editing.rome", "uncover.applications.wrappers", "uncover.data.tasks", "uncover.applications.alignment.lying",
    "uncover.components.circuits.discovery", "uncover.components.circuits.evaluate",
    "uncover.components.circuits.scrubbing",
]
G = torch.Generator().manual_seed(0)


def _t(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=G)


def _top_contexts():
    from uncover.features.analysis import TopContexts

    return TopContexts(_t(2, 3), torch.tensor([[0, 1, 2]] * 2), torch.tensor([[1, 0, 3]] * 2), _t(2, 3, 5),
                       torch.randint(0, 50, (4, 5), generator=G))


def _request():
    from uncover.applications.editing.rome import EditRequest

    return EditRequest("France", "The capital of {} is", " Rome")


def _wrapper_result():
    from dataclasses import asdict

    from uncover.applications.wrappers import WrapperConfig, WrapperResult

    return WrapperResult(asdict(WrapperConfig()), 1.0, 0.375, 0.4, 0.97, 0.18, ["blocks.0.hook_resid_post"],
                         {"pretrained": [0.99], "finetuned": [0.86], "random": [0.62]}, 264, [0, 1],
                         {"fine-tune importance": {"capability": [0.4, 0.45], "finetune": [0.97, 0.7],
                                                   "units": ["L0H3"]}},
                         [0.4, 0.95], [0.18, 0.5, 0.93], 1, 2, {"train": 1.5})


def _run_dir(tmp: Path):
    from uncover.dynamics.data import modular_data
    from uncover.dynamics.models import ModularMLP
    from uncover.dynamics.tasks import ModularTask
    from uncover.dynamics.trainer import TrainConfig, Trainer

    cfg = TrainConfig(steps=4, eval_every=2, checkpoints="fixed", checkpoint_every=2, device="cpu")
    return Trainer(ModularMLP(5, width=4, seed=0), ModularTask(modular_data(5, "add", 0.5)), cfg, out_dir=tmp).fit()


def factories(tmp: Path) -> dict[str, callable]:
    from uncover.applications.alignment import lying
    from uncover.applications.editing import covariance, evaluate

    rome = importlib.import_module("uncover.applications.editing.rome")  # the package exports the function rome
    from uncover.components import lens, neurons
    from uncover.components.circuits import discovery as cd
    ce = importlib.import_module("uncover.components.circuits.evaluate")  # the package exports the function
    from uncover.components.circuits import scrubbing
    from uncover.data import tasks
    from uncover.dynamics import double_descent as dd, grokking, induction, memorization, norms
    from uncover.features import evals, superposition as sp, training
    from uncover.representations import directions, iti, probes, reft, steering

    X, y = _t(40, 4), (torch.arange(40) % 2)
    X[:, 0] += 2 * y
    record = evaluate.EditRecord(_request(), " Paris", ["Paris is"], [("Berlin is in", " Germany")], ["Tell me"])
    return {
        "LensResult": lambda: lens.LensResult(["0_pre", "final_post"], _t(2, 1, 3, 7), torch.zeros(2, 1, 3, 2).long(),
                                              _t(2, 1, 3, 2), torch.tensor([4]), _t(2, 1, 3), torch.ones(2, 1, 3).long()),
        "DLAResult": lambda: lens.DLAResult(_t(3, 2), ["embed", "L0 attn", "L0 mlp"], _t(2), {"pos": -1}),
        "TunedLens": lambda: _tuned(lens),
        "NeuronReport": lambda: neurons.NeuronReport(1, [3, 5], _top_contexts(), _t(2), [{"bins": [0.0, 1.0]}] * 2,
                                                     {"top_tokens": [["a"], ["b"]], "top_logits": [[1.0], [2.0]]}),
        "TopContexts": _top_contexts,
        "SAEEvalResult": lambda: evals.SAEEvalResult(10, 2.0, 0.9, 0.1, 0.95, 1.0, 3.0, 3.1, 5.0, 0.1, 0.95, 0.02,
                                                     0.0, 0.0, _t(8)),
        "ToyResult": lambda: sp.train_toy_models(sp.SuperpositionConfig(3, 2, torch.tensor([0.5]), steps=3)),
        "PhaseDiagram": lambda: sp.PhaseDiagram(_t(2), _t(3), torch.zeros(2, 3).long(), _t(2, 3, 1, 2)),
        "TrainHistory": lambda: training.TrainHistory([1, 2], [64, 128], [0.5, 0.4], [0.3, 0.2], [0.8, 0.9],
                                                      [3.0, 2.5], [0.0, 0.1], [1e-3, 1e-3]),
        "Direction": lambda: directions.Direction(_t(2, 4), [1, 3], "pca", "love", {"pairs": 8}),
        "ITI": lambda: iti.ITI(_t(2, 3), [(0, 1), (1, 2)], _t(2, 5), {"alpha": 5.0}),
        "Probe": lambda: probes.make_probe("mlp", hidden=3, epochs=5).fit(X, y),
        "Selectivity": lambda: probes.Selectivity(0.9, 0.6),
        "LayerSweep": lambda: probes.LayerSweep([0, 1], "logistic", _t(2), _t(2), {"cities": _t(2)}),
        "PCAView": lambda: probes.pca_view(X, y),
        "Reft": lambda: reft.Reft(8, [0, 2], "loreft", rank=2, positions=[-1, 0], seed=1),
        "ReftResult": lambda: reft.ReftResult("red", "antonyms", 0.1, 0.8, 0.9, 16, 100, [1.0, 0.5],
                                              reft.Reft(8, [1], "red", seed=2)),
        "ActAddVector": lambda: steering.ActAddVector(_t(3, 4), 2, " Love", " Hate"),
        "SteeringResult": lambda: steering.SteeringResult("actadd", "love", _t(3), _t(3), _t(3), ["a", "b", "c"], {}),
        "DoubleDescentResult": lambda: dd.run_double_descent(dd.DoubleDescentConfig(n_train=6, n_test=8, d_input=3,
                                                                                    widths=(2, 6, 12), n_repeats=1)),
        "GrokResult": lambda: grokking.run_grokking(grokking.GrokConfig(p=5, train_frac=0.5, d_model=8, n_heads=2,
                                                                        d_mlp=8, steps=4, eval_every=2,
                                                                        measure_every=2, device="cpu")),
        "InductionResult": lambda: induction.run_induction(induction.InductionConfig(
            d_vocab=8, seq_len=8, d_model=8, n_heads=2, steps=2, eval_every=1)),
        "MemorizationResult": lambda: memorization.run_memorization(memorization.MemorizationConfig(
            p=5, width=4, steps=4, eval_every=2), prune_fractions=(0.0, 0.5)),
        "SlingshotResult": lambda: norms.SlingshotResult({"p": 5}, [1.0, 9.0], [1.0, 2.0], [{"step": 1}],
                                                         [norms.Slingshot(1, 2, 1.0, 9.0, None)], None),
        "TrainResult": lambda: _run_dir(tmp / "run"),
        "LyingResult": lambda: lying.LyingResult(
            [{"name": "plain", "honest_acc": 0.9, "lying_acc": 0.1, "follows": True}], "plain", True, 0.9, 0.1, 2.0,
            -1.5, _t(2), _t(2, 3), _t(2, 3), _t(2, 3), _t(2, 3),
            [(0, 0), (1, 2)], [1, 2], [0.6, 0.9], [0.4, 0.8], 0.95, 1.1, 2, {"n": 8, "candidates": None}),
        "KeyCovariance": lambda: covariance.KeyCovariance(2, _t(4, 4).double(), 128, "offline corpus"),
        "EditRecord": lambda: record,
        "EditEvaluation": lambda: evaluate.EditEvaluation("rome", {"efficacy": 100.0}, {"efficacy": 50.0},
                                                          [{"ok": True}], [{"ok": False}], 1.5, {"layer": 1}),
        "WeightEdit": lambda: rome.WeightEdit({1: _t(6, 4)}, [_request()], "rome", {"nll": [2.0, 1.0]},
                                              {"key": _t(6)}),
        "WrapperResult": _wrapper_result,
        "EdgeScores": lambda: cd.EdgeScores(1, 2, False, False, _t(3, 7), "eap-ig", "corrupt", "ioi", "nats", 3.0,
                                            -0.5, {"steps": 5, "ig": "inputs"}, 1.5),
        "FaithfulnessCurve": lambda: ce.FaithfulnessCurve([10, 20], [8, 19], [0.5, 0.9], [1.0, 2.0], [0.3, 0.1], 100,
                                                          3.0, -0.5, "corrupt", "eap", "signed", 0.8, 0.2,
                                                          {"10": ["embed", "L0.H1", "logits"]}),
        "CircuitEval": lambda: ce.CircuitEval(torch.rand(3, 7, generator=G) > 0.5, 9, 17, 0.85, 2.1, 0.05, 3.0, -0.5,
                                              "zero", ["embed", "L0.H0", "logits"]),
        "Completeness": lambda: ce.Completeness(["L0.H0", "L0.H1"], [["L0.H0"]], ["random"], [1.0], [1.1], [0.1],
                                                {"L0.H0": 0.4, "L0.H1": 0.2}, 2.0, 3.0),
        "ScrubResult": lambda: scrubbing.ScrubResult(3.0, 2.5, -0.5, 6 / 7, [2.4, 2.6], [-0.4, -0.6],
                                                     "logit difference (nats)", ["embed", "L0.H1", "logits"],
                                                     [["embed", "L0.H1"], ["L0.H1", "logits"]],
                                                     {"L0.H1": "token at position 2", "logits": "whole_input"}, 0, 2,
                                                     [2, 2]),
        "Task": lambda: tasks.Task("ioi", torch.ones(2, 3).long(), torch.zeros(2, 3).long(), torch.tensor([1, 2]),
                                   torch.tensor([[3, -1], [4, 5]]), "prob_diff", torch.ones(2, 3).long(),
                                   ["a b", "c d"], ["e f", "g h"], {"seed": 0}),
    }


def _tuned(lens):
    t = lens.TunedLens(2, 4, "tiny")
    with torch.no_grad():
        t.weight.copy_(_t(2, 4, 4))
        t.bias.copy_(_t(2, 4))
    return t


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a.detach(), b.detach())
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, Result):
        return type(a) is type(b) and _equal(a.to_fields(), b.to_fields())
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and _equal(vars(a), vars(b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    return a == b


def _subclasses(cls) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def test_every_result_class_of_these_areas_has_a_round_trip_case(tmp_path):
    for name in MODULES:
        importlib.import_module(name)
    ours = {c.__name__ for c in _subclasses(Result) if c.__module__ in MODULES}
    probe_kinds = {c.__name__ for c in _subclasses(importlib.import_module("uncover.representations.probes").Probe)}
    assert ours - probe_kinds - set(factories(tmp_path)) == set()


@pytest.mark.parametrize("name", sorted(factories(Path("."))))
def test_result_round_trip(name, tmp_path):
    result = factories(tmp_path)[name]()
    back = type(result).load(result.save(tmp_path / "saved"))
    assert type(back) is type(result) and _equal(result.to_fields(), back.to_fields())
    assert _equal(Result.load(tmp_path / "saved").to_fields(), result.to_fields())
