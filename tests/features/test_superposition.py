"""Toy models of superposition: the paper's claims as numbers, and the metrics against closed forms."""
from __future__ import annotations

import math

import pytest
import torch

from uncover.errors import UncoverError
from uncover.features import superposition as sp


pytestmark = pytest.mark.usefixtures("one_thread")


def regular_polygon(n: int, radius: float = 1.0) -> torch.Tensor:
    angles = torch.arange(n) * 2 * math.pi / n
    return radius * torch.stack([angles.cos(), angles.sin()])   # [2, n]


def test_metrics_match_closed_forms_and_naive_loops():
    pentagon = regular_polygon(5)
    assert torch.allclose(sp.feature_dimensionality(pentagon), torch.full((5,), 0.4), atol=1e-5)
    antipodal = torch.tensor([[1.0, -1.0]])
    assert torch.allclose(sp.feature_dimensionality(antipodal), torch.full((2,), 0.5))
    dedicated = torch.eye(3)[:, :3]
    assert torch.allclose(sp.feature_dimensionality(dedicated), torch.ones(3))
    W = torch.randn(4, 7, generator=torch.Generator().manual_seed(1))
    D, interference = sp.feature_dimensionality(W), sp.superposition_interference(W)
    for i in range(7):
        unit = W[:, i] / W[:, i].norm()
        overlaps = [float(unit @ W[:, j]) ** 2 for j in range(7)]
        assert D[i] == pytest.approx(float(W[:, i].norm()) ** 2 / sum(overlaps), rel=1e-5)
        assert interference[i] == pytest.approx(sum(overlaps) - overlaps[i], rel=1e-5, abs=1e-6)
    assert sp.dimensions_per_feature(pentagon) == pytest.approx(2 / 5)


@pytest.fixture(scope="module")
def five_in_two():
    """n=5, m=2: 3 seeds dense with importance 0.8^i, 3 seeds sparse (p=0.03) with equal importance."""
    p = torch.tensor([1.0] * 3 + [0.03] * 3)
    importance = torch.stack([0.8 ** torch.arange(5.0)] * 3 + [torch.ones(5)] * 3)
    result = sp.train_toy_models(sp.SuperpositionConfig(5, 2, p, importance, steps=1000, lr=3e-2))
    return result, sp.best_instances(result, 2)


def test_dense_features_get_two_orthogonal_dimensions(five_in_two):
    result, best = five_in_two
    W = result.W[best[0]]
    norms = sp.feature_norms(W)
    assert torch.allclose(norms[:2], torch.ones(2), atol=0.05)      # the two most important features
    assert (norms[2:] < 0.1).all()                                   # the rest are dropped
    assert abs(float(W[:, 0] @ W[:, 1])) < 0.05                      # orthogonal
    assert torch.allclose(sp.feature_dimensionality(W)[:2], torch.ones(2), atol=0.02)


def test_sparse_features_form_a_pentagon(five_in_two):
    result, best = five_in_two
    W = result.W[best[1]]
    norms = sp.feature_norms(W)
    assert (norms > 0.9).all() and (norms.max() - norms.min()) < 0.1   # all five represented, equal norm
    angles = torch.atan2(W[1], W[0]).sort().values
    gaps = torch.rad2deg(torch.cat([angles.diff(), angles[:1] + 2 * math.pi - angles[-1:]]))
    assert torch.allclose(gaps, torch.full((5,), 72.0), atol=4.0)
    assert torch.allclose(sp.feature_dimensionality(W), torch.full((5,), 0.4), atol=0.03)


@pytest.fixture(scope="module")
def twenty_in_five():
    """n=20, m=5, importance 0.7^i, dense and sparse (p=0.01), linear and ReLU, 2 seeds each
    (the report's --full run sweeps more sparsities with more steps)."""
    p = torch.tensor([1.0, 1.0, 0.01, 0.01])
    importance = 0.7 ** torch.arange(20.0)
    out = {}
    for nonlinear, steps, lr in ((False, 1000, 3e-2), (True, 1500, 1e-2)):
        r = sp.train_toy_models(sp.SuperpositionConfig(20, 5, p, importance, nonlinear=nonlinear, steps=steps,
                                                         batch_size=256, lr=lr))
        out[nonlinear] = r.W[sp.best_instances(r, 2)]
    return out


def test_linear_model_never_superposes(twenty_in_five):
    for W in twenty_in_five[False]:                                  # dense and sparse alike
        norms = sp.feature_norms(W)
        assert torch.allclose(norms[:5], torch.ones(5), atol=0.05)   # top-m features by importance
        assert (norms[5:] < 0.1).all()
        G = sp.gram(W)[:5, :5]
        assert torch.allclose(G, torch.eye(5), atol=0.05)            # orthogonal: WᵀW is a projection


def test_relu_model_superposes_only_when_sparse(twenty_in_five):
    dense, sparse = twenty_in_five[True]
    assert int((sp.feature_norms(dense) > 0.5).sum()) == 5
    assert float(sp.superposition_interference(dense)[:5].max()) < 0.05
    represented = sp.feature_norms(sparse) > 0.5
    assert int(represented.sum()) >= 9                               # far more features than dimensions
    assert float(sp.superposition_interference(sparse)[represented].mean()) > 0.3


def test_phase_diagram_corners():
    pd = sp.phase_diagram(torch.tensor([1.0, 0.05]), torch.tensor([0.3, 1.0, 3.0]), seeds=4, steps=1500)
    not_represented, dedicated, superposed = range(3)
    assert pd.phase[0, 0] == not_represented      # dense, feature 2 less important
    assert pd.phase[0, 2] == dedicated            # dense, feature 2 more important
    assert pd.phase[1, 1] == superposed           # sparse, equal importance: antipodal pair
    w = pd.W[1, 1, 0]
    assert float(w[0] * w[1]) < 0 and abs(float(w[0].abs() - w[1].abs())) < 0.2


def test_dimensionality_sticks_to_simple_fractions():
    """n=40 features in m=4 dimensions at two intermediate sparsities: represented features sit at
    geometric fractions (1/2 antipodal pairs, 1/3 triples ...), unlike a random matrix's."""
    fractions = torch.tensor([1, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8, 1 / 3])
    p = torch.tensor([0.33, 0.33, 0.17, 0.17])
    r = sp.train_toy_models(sp.SuperpositionConfig(40, 4, p, steps=1500, batch_size=512, lr=1e-2))
    W = r.W[sp.best_instances(r, 2)]

    def near_fraction(D: torch.Tensor) -> float:
        rep = D > 0.1
        return float(((D[rep, None] - fractions).abs().min(-1).values < 0.05).float().mean())

    for w in W:
        D = sp.feature_dimensionality(w)
        assert int((D > 0.1).sum()) >= 4
        assert near_fraction(D) >= 0.8
    random_w = torch.randn(4, 40, generator=torch.Generator().manual_seed(0))
    assert near_fraction(sp.feature_dimensionality(random_w)) < 0.5


def test_bad_configs_say_what_to_do():
    with pytest.raises(UncoverError, match="feature_probability"):
        sp.SuperpositionConfig(5, 2, torch.tensor([1.5]))
    with pytest.raises(UncoverError, match=r"\[instances\]"):
        sp.SuperpositionConfig(5, 2, torch.ones(3, 4))
