"""The vectorised Othello generator against a slow plain-Python reference, state by state."""
from __future__ import annotations

import pytest
import torch

from tests.world.reference import RefOthello
from uncover.data.othello import (Games, legal_moves, parse_moves, play, playable_squares, random_games,
                                  square_name, start_board, tokens_to_moves)
from uncover.errors import UncoverError

pytestmark = pytest.mark.usefixtures("one_thread")


def _check_against_reference(games: Games) -> int:
    """Replay every game in the reference and compare every recorded state; returns states checked."""
    checked = 0
    for g in range(len(games)):
        ref = RefOthello(games.size)
        for t in range(games.moves.shape[1] + 1):
            assert games.boards[g, t].tolist() == ref.flat(), (g, t)
            expected_player = 0 if ref.over else ref.player
            assert int(games.to_move[g, t]) == expected_player, (g, t)
            legal = set(games.legal[g, t].nonzero().flatten().tolist())
            assert legal == (set() if ref.over else ref.legal()), (g, t)
            assert bool(games.passed[g, t]) == (ref.passed and not ref.over), (g, t)
            checked += 1
            if ref.over:
                assert (games.moves[g, t:] == -1).all(), "moves recorded after the game ended"
                break
            move = int(games.moves[g, t])
            assert move in legal, (g, t, move)
            flipped = ref.play(move)
            assert set(games.flips[g, t].nonzero().flatten().tolist()) == flipped, (g, t)
    return checked


@pytest.fixture(scope="module")
def games6() -> Games:
    return random_games(2500, size=6, seed=1)


@pytest.mark.parametrize("size,n", [(6, 2500), (8, 500)])
def test_generator_matches_reference_on_every_state(size, n, games6):
    games = games6 if size == 6 else random_games(n, size=size, seed=1)
    checked = _check_against_reference(games)
    assert checked > n * (size * size - 6)  # nearly full games: every state of each was compared
    assert bool(games.passed.any()), "the sample should include passes"


def test_passes_and_short_games_are_covered(games6):
    games = games6
    # some games end before the board is full (neither player can move)
    assert bool((games.lengths < 32).any())
    assert bool(games.passed.any())


def test_seeded_and_reproducible():
    a, b, c = random_games(50, 6, seed=3), random_games(50, 6, seed=3), random_games(50, 6, seed=4)
    assert torch.equal(a.moves, b.moves) and not torch.equal(a.moves, c.moves)
    fast = random_games(50, 6, seed=3, record=False)
    assert torch.equal(fast.moves, a.moves)


def test_moves_are_uniform_among_legal_ones(games6):
    # black's first move has four legal squares: each should be drawn about a quarter of the time
    counts = torch.bincount(games6.moves[:, 0], minlength=36)
    opening = start_board(6)
    legal = set(legal_moves(opening[None], torch.tensor([1]))[0].nonzero().flatten().tolist())
    assert set(counts.nonzero().flatten().tolist()) == legal == {8, 13, 22, 27}  # c2 b3 e4 d5
    share = counts[sorted(legal)].float() / len(games6)
    assert ((share - 0.25).abs() < 0.035).all()  # 4 standard errors of a binomial share at n=2500
    # and at a later move, each game's choice is spread evenly over its legal squares: the mean of
    # 1 / |legal| (the chance of each drawn move) matches the share a uniform draw implies
    t = 10
    n_legal = games6.legal[:, t].sum(1).float()
    rank = (games6.legal[:, t].cumsum(1) * torch.nn.functional.one_hot(games6.moves[:, t].clamp(min=0), 36)).sum(1)
    live = n_legal > 0
    u = (rank[live].float() - 0.5) / n_legal[live]  # position of the drawn move among the legal ones, in (0, 1)
    assert abs(float(u.mean()) - 0.5) < 0.02


def test_replay_equals_generation_and_tokens_round_trip():
    games = random_games(30, 6, seed=2)
    again = play(games.moves, 6)
    for field in ("moves", "boards", "to_move", "legal", "flips", "passed"):
        assert torch.equal(getattr(again, field), getattr(games, field)), field
    assert torch.equal(tokens_to_moves(games.tokens, 6), games.moves)
    assert len(playable_squares(6)) == 32 and len(playable_squares(8)) == 60
    # a prefix stops the game: its last state has a player to move, no state after it does
    prefix = play(games.moves[:1, :5], 6)
    assert int(prefix.to_move[0, 5]) != 0 and int(prefix.to_move[0, 6]) == 0


def test_labels_mine_theirs_and_colors():
    games = random_games(5, 6, seed=0)
    mine, color = games.labels("mine"), games.labels("color")
    b, p = games.boards.long(), games.to_move.long()
    g, t, q = 1, 7, (games.boards[1, 7] != 0).nonzero()[0, 0]
    expected_color = 1 if b[g, t, q] == 1 else 2
    assert int(color[g, t, q]) == expected_color
    assert int(mine[g, t, q]) == (1 if b[g, t, q] == p[g, t] else 2)
    assert ((mine == 0) == (color == 0)).all()
    with pytest.raises(UncoverError, match="scheme"):
        games.labels("stones")


def test_illegal_sequences_say_which_move_and_why():
    with pytest.raises(UncoverError, match=r"move 1 \(a1\) is illegal: it flips no white stone for black"):
        play(parse_moves("a1", 8), 8)
    with pytest.raises(UncoverError, match=r"move 3 \(d3\) is illegal: d3 is already occupied"):
        play(parse_moves("d3 c5 d3", 8), 8)
    with pytest.raises(UncoverError, match="not a square"):
        parse_moves("z9", 8)
    with pytest.raises(UncoverError, match="board size"):
        random_games(3, size=7)
    assert square_name(19, 8) == "d3"
