"""Flip interventions (edited legal sets against the reference game, the probe reads the flip after each edit),
the report's findings wording, and the CLI's bad-input messages."""
from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from tests.report_numbers import thresholds, unmatched_numbers
from tests.world.reference import RefOthello
from uncover.data.othello import play, parse_moves, playable_squares, random_games
from uncover.errors import UncoverError
from uncover.representations.world import report as R
from uncover.representations.world.analysis import StudyConfig, study
from uncover.representations.world.cli import register
from uncover.representations.world.interventions import (choose_flips, edited_position, flips_for, gradient_edit,
                                                         intervene, linear_flip_hook)
from uncover.representations.world.probes import BoardProbe


def test_edited_legal_moves_match_the_reference_on_the_edited_board():
    games = random_games(20, 6, seed=4)
    flips = choose_flips(games, 15, seed=1)
    playable = playable_squares(6).tolist()
    for i in range(len(flips)):
        g, p, q = int(flips.game[i]), int(flips.position[i]), int(flips.square[i])
        ref = RefOthello(6)
        for move in games.moves[g, : p + 1].tolist():
            ref.play(move)
        before = ref.legal()
        r, c = divmod(q, 6)
        ref.board[r][c] = -ref.board[r][c]
        ref._legal = None
        after = ref.legal()
        as_set = lambda row: {playable[k] for k in row.nonzero().flatten().tolist()}  # noqa: E731
        assert as_set(flips.legal_original[i]) == before and as_set(flips.legal_edited[i]) == after != before
        mine = flips.labels_edited[i]
        assert int(mine[q]) == (1 if ref.board[r][c] == ref.player else 2)
    with pytest.raises(UncoverError, match="empty"):
        edited_position(games, 0, 3, int((games.boards[0, 4] == 0).nonzero()[0]))


def _probe(d: int = 12, squares: int = 4) -> tuple[BoardProbe, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (1500, squares), generator=gen)
    basis = torch.randn(squares, 3, d, generator=gen)
    X = basis[torch.arange(squares), y].sum(1) + 0.1 * torch.randn(1500, d, generator=gen)
    return BoardProbe(d, squares, "linear").fit(X, y, steps=300), X, y


def test_linear_flip_mirrors_the_probe_gap_and_only_moves_along_it():
    probe, X, y = _probe()
    rows = (y[:, 2] > 0).nonzero().flatten()[:20]
    resid = X[rows][:, None, :].repeat(1, 3, 1)  # [b, pos=3, d]; edit position 1
    old = y[rows, 2]
    new = 3 - old
    square = torch.full((len(rows),), 2)
    positions = torch.ones(len(rows), dtype=torch.long)
    hook = type("H", (), {"name": "blocks.0.hook_resid_post"})()
    out = linear_flip_hook(probe, square, old, new, positions, strength=1.0, margin=2.0)(resid, hook)
    assert torch.equal(out[:, 0], resid[:, 0]) and torch.equal(out[:, 2], resid[:, 2])
    w, b = probe.class_directions()
    gap = lambda r: (r * (w[2, new] - w[2, old])).sum(-1) + b[2, new] - b[2, old]  # noqa: E731
    before, after = gap(resid[:, 1]), gap(out[:, 1])
    assert torch.allclose(after, torch.maximum(before.abs(), torch.full_like(before, 2.0)), atol=1e-3)
    assert (probe.predict(out[:, 1])[:, 2] == new).all()
    move = out[:, 1] - resid[:, 1]
    direction = w[2, new] - w[2, old]
    cos = torch.nn.functional.cosine_similarity(move, direction, dim=-1)
    assert torch.allclose(cos.abs(), torch.ones_like(cos), atol=1e-4)


def test_gradient_edit_makes_the_probe_read_the_target_board():
    probe, X, y = _probe()
    target = y[:10].clone()
    target[:, 1] = torch.where(target[:, 1] == 1, 2, 1)
    edited = gradient_edit(probe, X[:10], target, steps=200, lr=0.05)
    assert (probe.predict(edited) == target).all()


def test_intervene_scores_predictions_against_both_boards(tiny_run):
    games = random_games(30, 6, seed=2)
    from uncover.representations.world.probes import board_activations, probe_sweep

    sweep = probe_sweep(board_activations(tiny_run.model, games), kinds=("linear",), schemes=("mine",), steps=50)
    flips = choose_flips(games, 20)
    probes = sweep.probes[("mine", "linear")]
    for method in ("linear", "gradient"):
        res = intervene(tiny_run.model, flips, probes, [0, 1], method=method, steps=20, batch_size=8)
        assert res.n == 20
        legal = lambda board, pred: board[torch.arange(20), pred]  # noqa: E731
        assert torch.equal(res.legal_edited, legal(flips.legal_edited, res.predictions))
        assert torch.equal(res.base_original, legal(flips.legal_original, res.base_predictions))
        d = res.legal_edited.float() - res.legal_original.float()
        assert res.summary()["gap"] == pytest.approx(float(d.mean()))
    # the unedited predictions are the model's own top-1 moves
    logits = tiny_run.model(flips.tokens).logits
    assert torch.equal(res.base_predictions, logits[torch.arange(20), flips.position].argmax(-1))
    with pytest.raises(UncoverError, match="layers"):
        intervene(tiny_run.model, flips, probes, [5])
    with pytest.raises(UncoverError, match="intervention"):
        intervene(tiny_run.model, flips, probes, [0], method="swap")


def test_flips_for_one_given_game():
    given = play(parse_moves("c2 b2 b3", 6), 6)
    one = flips_for(given, 14)  # c3
    assert one.position.tolist() == [2] and len(one) == 1
    with pytest.raises(UncoverError, match="empty"):
        flips_for(given, 0)


# ---- findings wording: each claim follows its stated test -------------------------------------------
def _probes(gap: float, half: float, mine: float) -> dict:
    return {"layers": [0, 1], "best_layer": 1, "gap": gap, "gap_half_width": half, "gap_games": 50,
            "baseline": {"mine": 0.5, "color": 0.5},
            "accuracy": {"mine/linear": {"by_layer": [0.6, mine]}, "color/linear": {"by_layer": [0.6, mine - gap]}}}


def test_probe_findings_change_with_the_data():
    strong = " ".join(R.probe_findings(_probes(0.2, 0.02, 0.95)))
    assert "clearly more accurate than" in strong and "reads the board (95.0%; mean per-square held-out accuracy ≥ 0.9)" in strong
    weak = " ".join(R.probe_findings(_probes(0.04, 0.02, 0.85)))
    assert "not clearly different from" in weak and "does not reach 90%" in weak
    wide = " ".join(R.probe_findings(_probes(0.08, 0.05, 0.93)))  # the interval reaches below 5 points
    assert "not clearly different from" in wide
    reverse = " ".join(R.probe_findings(_probes(-0.2, 0.02, 0.7)))
    assert "clearly less accurate than" in reverse


def _interventions(gap: float, half: float) -> dict:
    return {"linear": {"layers": [1, 2], "n": 200, "share_edited": 0.5 + gap, "share_original": 0.5, "gap": gap,
                       "gap_half_width": half, "base_share_edited": 0.4, "base_share_original": 0.9}}


def test_intervention_findings_change_with_the_data():
    assert "clearly more often legal for the edited board" in R.intervention_findings(_interventions(0.3, 0.05))[0]
    assert "not clearly more often" in R.intervention_findings(_interventions(0.06, 0.05))[0]
    assert "clearly less often" in R.intervention_findings(_interventions(-0.3, 0.05))[0]


def test_training_findings_name_the_target():
    t = {"config": {"n_layers": 2, "d_model": 32, "n_heads": 2, "size": 6, "n_games": 10}, "wall_seconds": 5,
         "cpu_seconds": 4, "curves": [{"step": 0, "seconds": 0, "legal_acc": 0.3, "legal_f1": 0.2},
                                      {"step": 10, "seconds": 3, "legal_acc": 0.96, "legal_f1": 0.8}]}
    assert "reached the 95% legal-move target (top-1 legal-move rate ≥ 0.95); first at step 10" in " ".join(R.training_findings(t))
    t["curves"][-1]["legal_acc"] = 0.9
    assert "did not reach the 95%" in " ".join(R.training_findings(t))


def test_study_and_section_render(tiny_run):
    data = study(tiny_run, StudyConfig(probe_games=40, probe_steps=30, probe_hidden=16, flips=20, gradient_steps=10))
    data["source"] = "test"
    json.dumps(data)  # JSON-able, as the report cache needs
    html = R.SECTION.render(data)
    assert html.count("Plotly.newPlot") == 4 and "<script src=" not in html  # offline: no external scripts
    assert "mine/theirs" in html and "edited board" in html
    # every printed number is a computed one or a stated threshold (also as a percentage), the 95% of the
    # intervals, or the citation (survey section 3.1; Li et al. 2022, Nanda et al. 2023)
    stated = thresholds(R)
    constants = stated + [round(100 * t, 6) for t in stated] + [95, 3.1, 2022, 2023]
    assert unmatched_numbers(html, data, [], constants) == []


# ---- CLI ------------------------------------------------------------------------------------------------
def _app():
    app = typer.Typer()
    register(app)
    return app


def test_cli_rejects_illegal_moves_naming_the_move(tiny_run, tmp_path):
    run = str(tiny_run.out_dir)
    result = CliRunner().invoke(_app(), ["othello", "probe", "--run", run, "--moves", "c2 b2 c2", "--out", str(tmp_path)])
    assert isinstance(result.exception, UncoverError)
    assert "move 3 (c2) is illegal: c2 is already occupied" in str(result.exception)
    result = CliRunner().invoke(_app(), ["othello", "intervene", "--run", run, "--moves", "a1", "--square", "c3",
                                         "--out", str(tmp_path)])
    assert isinstance(result.exception, UncoverError) and "move 1 (a1) is illegal" in str(result.exception)
    result = CliRunner().invoke(_app(), ["othello", "intervene", "--run", run, "--moves", "c2"])
    assert result.exit_code != 0 and "--square" in result.output


def test_cli_intervene_one_position(tiny_run, tmp_path):
    args = ["othello", "intervene", "--run", str(tiny_run.out_dir), "--moves", "c2 b2 b3", "--square", "c3",
            "--games", "30", "--out", str(tmp_path)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "legal after flipping c3" in result.output
    assert json.loads((tmp_path / "intervene_linear.json").read_text())["n"] == 1
