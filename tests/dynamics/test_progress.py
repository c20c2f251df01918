"""Progress measures against closed forms and naive loops."""
import math

import pytest
import torch
import torch.nn.functional as F

from uncover.dynamics.progress import (detect_phases, excluded_loss, fourier_basis, frequency_norms, gini, ipr,
                                       key_frequencies, logit_frequency_norms, neuron_frequencies,
                                       one_sided_power, restricted_loss, weight_norms)
from uncover.errors import UncoverError

P = 13


def test_fourier_basis_is_orthonormal():
    basis, labels = fourier_basis(P)
    assert torch.allclose(basis @ basis.T, torch.eye(P, dtype=torch.float64), atol=1e-12)
    assert labels[:3] == ["const", "cos 1", "sin 1"] and len(labels) == P


def test_key_frequencies_of_constructed_embedding():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(P, dtype=torch.float64)
    keys = [2, 5]
    emb = 0.01 * torch.randn(P, 16, generator=gen, dtype=torch.float64)
    for j, k in enumerate(keys):
        emb[:, 2 * j] += 3 * torch.cos(2 * math.pi * k * x / P)
        emb[:, 2 * j + 1] += 2 * torch.sin(2 * math.pi * k * x / P)
    norms = frequency_norms(emb)
    assert key_frequencies(norms) == keys
    # norm of frequency 2: cos column (3*cos) has norm 3*sqrt(P/2), sin column 2*sqrt(P/2)
    assert norms[2].item() == pytest.approx(math.sqrt(13 * P / 2), rel=1e-2)
    # an unstructured embedding has no clear key frequencies
    assert key_frequencies(frequency_norms(torch.randn(P, 16, generator=gen, dtype=torch.float64)), min_gap=3) == []


def test_neuron_frequencies_on_constructed_neurons():
    a, b = torch.meshgrid(torch.arange(P), torch.arange(P), indexing="ij")
    w = 2 * math.pi / P
    acts = torch.stack([
        torch.cos(w * 3 * (a + b)),  # pure frequency 3 product terms
        torch.cos(w * 4 * a) + 0.5 * torch.sin(w * 4 * b),  # pure frequency 4 linear terms
        torch.cos(w * 1 * a) + torch.cos(w * 2 * b),  # half frequency 1, half frequency 2
    ], dim=-1).double()
    freq, fve = neuron_frequencies(acts)
    assert freq[:2].tolist() == [3, 4]
    assert fve[:2].tolist() == pytest.approx([1.0, 1.0], abs=1e-9)
    assert fve[2].item() == pytest.approx(0.5, abs=1e-9)


def _naive_projection(logits, key_freqs):
    """Per output c, project the p*p vector of logits onto cos/sin(w(a+b)) with explicit loops."""
    p = logits.shape[0]
    out = torch.zeros_like(logits)
    for c in range(p):
        for k in key_freqs:
            w = 2 * math.pi * k / p
            for trig in (math.cos, math.sin):
                num, den = 0.0, 0.0
                for a in range(p):
                    for b in range(p):
                        num += logits[a, b, c].item() * trig(w * (a + b))
                        den += trig(w * (a + b)) ** 2
                for a in range(p):
                    for b in range(p):
                        out[a, b, c] += num / den * trig(w * (a + b))
    return out


def test_restricted_and_excluded_loss_match_naive_loops():
    p = 7
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(p, p, p, generator=gen, dtype=torch.float64)
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    labels = (a + b) % p
    train = torch.rand(p, p, generator=gen) < 0.5
    keys = [1, 3]
    proj = _naive_projection(logits, keys)
    mean = logits.mean((0, 1), keepdim=True)
    want_restricted = F.cross_entropy((mean + proj).reshape(-1, p), labels.reshape(-1)).item()
    want_excluded = F.cross_entropy((logits - proj)[train], labels[train]).item()
    assert restricted_loss(logits, labels, keys) == pytest.approx(want_restricted, rel=1e-9)
    assert excluded_loss(logits, labels, keys, train) == pytest.approx(want_excluded, rel=1e-9)


def test_logit_frequency_norms_find_the_generalising_frequencies():
    p = 11
    a, b, c = torch.meshgrid(torch.arange(p), torch.arange(p), torch.arange(p), indexing="ij")
    w = 2 * math.pi / p
    s = (a + b - c).double()
    logits = 4 * torch.cos(w * 2 * s) + 2 * torch.cos(w * 5 * s)
    norms = logit_frequency_norms(logits)
    assert key_frequencies(torch.cat([torch.zeros(1, dtype=torch.float64), norms])) == [2, 5]
    # all of the logit variance is in those two frequencies: the restricted loss equals the full loss
    labels = (a[..., 0] + b[..., 0]) % p
    full = F.cross_entropy(logits.reshape(-1, p), labels.reshape(-1)).item()
    assert restricted_loss(logits, labels, [2, 5]) == pytest.approx(full, rel=1e-9)


def test_gini_closed_forms():
    assert gini(torch.ones(10)) == pytest.approx(0.0, abs=1e-12)
    assert gini(torch.tensor([0.0] * 9 + [5.0])) == pytest.approx(0.9)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    naive = sum(abs(i - j) for i in x.tolist() for j in x.tolist()) / (2 * len(x) * x.sum().item())
    assert gini(x) == pytest.approx(naive)
    with pytest.raises(UncoverError, match="non-negative"):
        gini(torch.tensor([-1.0, 1.0]))


def test_ipr_closed_forms():
    x = torch.arange(P, dtype=torch.float64)
    single = torch.cos(2 * math.pi * 3 * x / P + 0.7)[None]  # one frequency, any phase
    spread = sum(torch.cos(2 * math.pi * k * x / P) for k in (1, 2, 4))[None]  # three equal frequencies
    assert ipr(one_sided_power(single)).item() == pytest.approx(1.0)
    assert ipr(one_sided_power(spread)).item() == pytest.approx(1 / 3)
    assert ipr(one_sided_power(spread), r=3).item() == pytest.approx(1 / 9)


def test_weight_norms_group_by_part():
    model = torch.nn.Sequential()
    model.embed = torch.nn.Embedding(3, 2)
    model.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2, bias=False)])
    with torch.no_grad():
        model.embed.weight.fill_(1.0)
        model.blocks[0].weight.fill_(2.0)
    norms = weight_norms(model)
    assert norms["embed"] == pytest.approx(math.sqrt(6))
    assert norms["blocks.0"] == pytest.approx(4.0)
    assert norms["total"] == pytest.approx(math.sqrt(22))


def test_detect_phases_on_synthetic_curves():
    steps = list(range(0, 10_000, 50))
    sig = lambda s, mid, width: 1 / (1 + math.exp(-(s - mid) / width))  # noqa: E731
    train_acc = [sig(s, 800, 80) for s in steps]  # memorised around step 1170
    test_acc = [0.02 + 0.98 * sig(s, 7000, 150) for s in steps]  # generalises around 7700
    # test loss: rises during memorisation, flat in circuit formation, falls steeply from ~6000
    test_loss = [math.exp(2.5 * sig(s, 800, 80) - 9 * sig(s, 6500, 150)) + 1e-3 for s in steps]
    phases = detect_phases(steps, train_acc, test_acc, test_loss)
    assert 1100 <= phases.memorised <= 1250
    assert 7600 <= phases.generalised <= 7800
    assert 5800 <= phases.cleanup_start <= 6400
    ranges = phases.ranges()
    assert ranges["circuit_formation"] == (phases.memorised, phases.cleanup_start)
    # never generalising: later phases are missing
    none = detect_phases(steps, train_acc, [0.01] * len(steps), test_loss)
    assert none.generalised is None and none.ranges()["cleanup"] is None
    with pytest.raises(UncoverError, match="same length"):
        detect_phases(steps, train_acc[:-1], test_acc, test_loss)
