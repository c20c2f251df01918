"""Othello-GPT training/metrics and the board probes, each checked against a direct computation."""
from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression

import uncover as uc
from tests.world.reference import RefOthello
from uncover.data.othello import playable_squares, random_games
from uncover.errors import UncoverError
from uncover.representations.world.model import (F1_THRESHOLD, OthelloTask, legal_metrics, load_run, named_config,
                                                 position_targets, train_othello)
from uncover.representations.world.probes import (BoardData, BoardProbe, board_activations, paired_gap,
                                                   probe_sweep)


def test_legal_metrics_match_a_loop():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, 10, generator=gen) * 3
    legal = torch.rand(5, 7, 10, generator=gen) < 0.4
    legal[..., 0] = True
    valid = torch.rand(5, 7, generator=gen) < 0.7
    got = legal_metrics(logits, legal, valid)
    hits, f1s = [], []
    for b in range(5):
        for i in range(7):
            if not valid[b, i]:
                continue
            probs = logits[b, i].softmax(-1).tolist()
            hits.append(bool(legal[b, i, max(range(10), key=lambda k: probs[k])]))
            pred = {k for k in range(10) if probs[k] >= F1_THRESHOLD}
            true = {k for k in range(10) if legal[b, i, k]}
            f1s.append(2 * len(pred & true) / (len(pred) + len(true)))
    assert got["legal_acc"] == pytest.approx(sum(hits) / len(hits))
    assert got["legal_f1"] == pytest.approx(sum(f1s) / len(f1s), abs=1e-6)


def test_position_targets_are_the_legal_moves_after_each_move():
    games = random_games(4, 6, seed=3)
    legal, valid = position_targets(games)
    playable = playable_squares(6).tolist()
    for g in range(4):
        ref = RefOthello(6)
        for i in range(games.moves.shape[1] - 1):
            move = int(games.moves[g, i])
            if move < 0:
                assert not valid[g, i]
                continue
            ref.play(move)
            assert bool(valid[g, i]) == (not ref.over)
            if not ref.over:
                assert {playable[k] for k in legal[g, i].nonzero().flatten().tolist()} == ref.legal()


def test_training_saves_a_run_that_reloads(tiny_run):
    cfg = tiny_run.config
    assert [r["step"] for r in tiny_run.metrics] == [0, 20, 40]
    assert all(0 <= r["legal_acc"] <= 1 and 0 <= r["legal_f1"] <= 1 for r in tiny_run.metrics)
    again = load_run(tiny_run.out_dir)
    task = OthelloTask(named_config("tiny", n_games=2))
    assert task.evaluate(again.model) == pytest.approx(task.evaluate(tiny_run.model))
    assert again.config == cfg and (tiny_run.out_dir / "metrics.jsonl").exists()
    # the model is an uncover toy model: uc.load gives it the standard hook names
    m = uc.load(again.model)
    assert "blocks.1.hook_resid_post" in m.hook_names()
    with pytest.raises(UncoverError, match="othello train"):
        load_run(tiny_run.out_dir / "missing")


def test_training_beats_chance_on_held_out_games():
    # chance: a uniformly random playable square is legal on ~1/4 of positions; 80 steps already do better
    run = train_othello(named_config("tiny", steps=80, eval_every=80))
    first, last = run.metrics[0], run.metrics[-1]
    assert last["legal_acc"] > first["legal_acc"] + 0.1 and last["loss"] < first["loss"]


def test_board_activations_are_the_residuals_at_each_position(tiny_run):
    games = random_games(6, 6, seed=11)
    data = board_activations(tiny_run.model, games, batch_size=4)
    m = uc.load(tiny_run.model)
    _, cache = m.run_with_cache(games.tokens[:, :31], names=["blocks.1.hook_resid_post"])
    for row in (0, 17, len(data.game) - 1):
        g, p = int(data.game[row]), int(data.position[row])
        assert torch.allclose(data.acts[1, row], cache["blocks.1.hook_resid_post"][g, p], atol=1e-6)
        assert torch.equal(data.labels["mine"][row], games.labels("mine")[g, p + 1])
        assert int(games.to_move[g, p + 1]) != 0


def _synthetic(n: int = 3000, d: int = 16, squares: int = 4, seed: int = 0) -> BoardData:
    """Layer 0: mine/theirs labels written linearly; black/white = mine/theirs swapped on odd positions,
    which no linear read of the features recovers. Layer 1: noise."""
    gen = torch.Generator().manual_seed(seed)
    mine = torch.randint(0, 3, (n, squares), generator=gen)
    position = torch.arange(n) % 30
    odd = (position % 2 == 1)[:, None]
    color = torch.where((mine > 0) & odd, 3 - mine, mine)
    basis = torch.randn(squares, 3, d, generator=gen)
    x = basis[torch.arange(squares), mine].sum(1) + 0.1 * torch.randn(n, d, generator=gen)
    noise = torch.randn(n, d, generator=gen)
    size = int(squares**0.5)
    return BoardData(size, [0, 1], torch.stack([x, noise]), {"mine": mine, "color": color},
                     torch.arange(n) // 30, position)


def test_linear_probe_matches_scikit_learn_and_folds_into_directions():
    data = _synthetic()
    X, y = data.acts[0], data.labels["mine"]
    probe = BoardProbe(16, 4, "linear").fit(X[:2000], y[:2000], steps=300)
    ours = probe.square_accuracy(X[2000:], y[2000:])
    for q in range(4):
        ref = LogisticRegression(max_iter=2000).fit(X[:2000].numpy(), y[:2000, q].numpy())
        theirs = float((torch.from_numpy(ref.predict(X[2000:].numpy())) == y[2000:, q]).float().mean())
        assert abs(float(ours[q]) - theirs) < 0.02
    w, b = probe.class_directions()
    direct = torch.einsum("nd,qcd->nqc", X[:50], w) + b
    assert torch.allclose(direct, probe(X[:50]), atol=1e-4)
    with pytest.raises(UncoverError, match="linear"):
        BoardProbe(16, 4, "mlp").class_directions()
    with pytest.raises(UncoverError, match="kind"):
        BoardProbe(16, 4, "quadratic")


def test_sweep_finds_the_linear_scheme_and_the_noise_layer():
    data = _synthetic()
    sweep = probe_sweep(data, steps=200, hidden=64)
    mine, color = sweep.by_layer("mine", "linear"), sweep.by_layer("color", "linear")
    assert sweep.best_layer() == 0 and float(mine[0]) > 0.97
    assert float(mine[1]) < 0.5  # layer 1 is noise: near the commonest-class rate
    assert float(color[0]) < float(mine[0]) - 0.2
    gap, half, n = paired_gap(data, sweep, 0)
    assert gap > 0.2 and half < 0.1 and n == 30
    assert sweep.accuracy[("mine", "mlp")].shape == (2, 4)
    # a held-out game's rows never train the probe
    assert set(data.game[sweep.test_rows].tolist()).isdisjoint(set(range(70)))
