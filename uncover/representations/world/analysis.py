"""One world-model study of a trained Othello-GPT: probes at every layer, a board picture, flip interventions.

``study(run)`` returns a JSON-able summary that the report section, the CLI and the plots read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from uncover.core.results import Progress, no_progress
from uncover.data.othello import random_games, square_name
from uncover.representations.world.interventions import choose_flips, intervene
from uncover.representations.world.model import OthelloRun
from uncover.representations.world.probes import (BoardData, ProbeSweep, board_activations, paired_gap,
                                                   probe_sweep)


@dataclass
class StudyConfig:
    """Sizes of the study. probe_games: held-out games whose positions train (70%) and test (30%) the probes;
    flips: positions edited per method; flip_layers: layers edited ("from_best": the best probe layer to the last)."""

    probe_games: int = 600
    probe_steps: int = 200
    probe_hidden: int = 128
    flips: int = 300
    gradient_steps: int = 100
    seed: int = 0


def board_picture(data: BoardData, sweep: ProbeSweep, games, layer_index: int, game: int | None = None,
                  position: int | None = None) -> dict[str, Any]:
    """What the linear mine/theirs probe reads at one held-out position against the real board.

    Returns size, game, position (the state after moves 0..position), moves played (names), the player to
    move, real [S*S] and read [S*S] classes (0 empty, 1 mine, 2 theirs), and the probe's probability of the
    real class per square.
    """
    rows = sweep.test_rows
    if game is None:
        game = int(data.game[rows[0]])
    candidates = rows[data.game[rows] == game]
    if position is None:
        position = int(data.position[candidates[len(candidates) // 2]])
    row = int(candidates[data.position[candidates] == position][0])
    probe = sweep.probes[("mine", "linear")][layer_index]
    with torch.no_grad():
        probs = probe(data.acts[layer_index, row][None]).softmax(-1)[0]  # [S*S, 3]
    real = data.labels["mine"][row]
    moves = games.moves[game, : position + 1].tolist()
    player = int(games.to_move[game, position + 1])
    return {"size": data.size, "game": game, "position": position, "layer": data.layers[layer_index],
            "moves": [square_name(m, data.size) for m in moves], "to_move": "black" if player == 1 else "white",
            "real": real.tolist(), "read": probs.argmax(-1).tolist(),
            "p_real": probs.gather(-1, real[:, None])[:, 0].tolist()}


def study(run: OthelloRun, cfg: StudyConfig = StudyConfig(), progress: Progress = no_progress) -> dict[str, Any]:
    """Probe every layer, draw one board, and run both flip interventions; a JSON-able summary."""
    size = run.config.size
    games = random_games(cfg.probe_games, size, seed=cfg.seed + 7_777)
    data = board_activations(run.model, games, progress=progress)
    sweep = probe_sweep(data, steps=cfg.probe_steps, hidden=cfg.probe_hidden, seed=cfg.seed, progress=progress)
    best = sweep.best_layer("mine", "linear")
    gap, half, n_games = paired_gap(data, sweep, best)
    flips = choose_flips(games, cfg.flips, seed=cfg.seed)
    layers = list(range(best, len(data.layers)))
    linear_probes = sweep.probes[("mine", "linear")]
    interventions = {}
    for method in ("linear", "gradient"):
        result = intervene(run.model, flips, linear_probes, layers, method=method, steps=cfg.gradient_steps,
                           progress=progress)
        interventions[method] = result.summary()
    accuracy = {f"{s}/{k}": {"by_layer": v.mean(1).tolist(), "by_square": v.tolist()}
                for (s, k), v in sweep.accuracy.items()}
    return {
        "training": run.summary(),
        "probes": {"layers": data.layers, "accuracy": accuracy, "baseline": {s: v.mean().item() for s, v in
                                                                              sweep.baseline.items()},
                   "best_layer": data.layers[best], "n_train_positions": len(data.game) - len(sweep.test_rows),
                   "n_test_positions": len(sweep.test_rows), "gap": gap, "gap_half_width": half,
                   "gap_games": n_games, "size": size},
        "board": board_picture(data, sweep, games, best),
        "interventions": interventions,
        "study_config": cfg.__dict__,
    }
