"""Othello games of uniformly random legal moves, played many at a time (Li et al. 2022's synthetic data).

Boards are flat ``[..., S*S]`` int8 tensors over squares ``row * S + col`` (row 0 is rank "1", col 0 is file
"a"): 0 empty, 1 black, -1 white. Black moves first from the standard start (d4, e5 white; e4, d5 black on
8x8; the same centre on 6x6). A player with no legal move passes; the game ends when neither can move.
Move sequences hold square indices and -1 after the game (or the given prefix) ends; passes are not
written in the sequence (the player to move is implied, as in Othello-GPT). The model's vocabulary is the
``S*S - 4`` playable squares (``playable_squares``), in square order; ``pad_token`` marks positions after the end.

Every step of every game is computed at once with tensor ops: each square's eight rays are gathered from a
precomputed index table, so the legal moves and the flips of every candidate move come from one pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import torch

from uncover.errors import UncoverError

SIZES = (6, 8)
EMPTY, BLACK, WHITE = 0, 1, -1
DIRECTIONS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
FILES = "abcdefgh"


def _check_size(size: int) -> None:
    if size not in SIZES:
        raise UncoverError(f"board size {size} is not supported; use one of {SIZES} (8 is the papers' Othello)")


@lru_cache(maxsize=None)
def _ray_table(size: int) -> torch.Tensor:
    """[S*S, 8, S-1]: the squares along each direction from each square, nearest first; S*S when off-board."""
    table = torch.full((size * size, 8, size - 1), size * size, dtype=torch.long)
    for r in range(size):
        for c in range(size):
            for d, (dr, dc) in enumerate(DIRECTIONS):
                for k in range(1, size):
                    rr, cc = r + dr * k, c + dc * k
                    if not (0 <= rr < size and 0 <= cc < size):
                        break
                    table[r * size + c, d, k - 1] = rr * size + cc
    return table


def start_board(size: int = 8) -> torch.Tensor:
    """The opening position [S*S] int8: the centre four squares, white on the diagonal."""
    _check_size(size)
    board = torch.zeros(size * size, dtype=torch.int8)
    c = size // 2
    board[(c - 1) * size + c - 1] = board[c * size + c] = WHITE
    board[(c - 1) * size + c] = board[c * size + c - 1] = BLACK
    return board


@lru_cache(maxsize=None)
def playable_squares(size: int = 8) -> torch.Tensor:
    """The squares a move can go to (all but the centre four), ascending: [S*S - 4]; token i is square [i]."""
    return (start_board(size) == EMPTY).nonzero().flatten()


def pad_token(size: int = 8) -> int:
    """The input token after a game's last move (one past the playable squares)."""
    return size * size - 4


def square_name(square: int, size: int = 8) -> str:
    """'c4'-style name of a square index (file letter, then rank number from 1)."""
    return f"{FILES[square % size]}{square // size + 1}"


def parse_square(name: str, size: int = 8) -> int:
    """Square index of a name like 'c4' (case-insensitive)."""
    text = name.strip().lower()
    files = FILES[:size]
    if len(text) < 2 or text[0] not in files or not text[1:].isdigit() or not 1 <= int(text[1:]) <= size:
        raise UncoverError(f"{name!r} is not a square of the {size}x{size} board; write a file {files[0]}-{files[-1]} "
                           f"and a rank 1-{size}, e.g. '{files[2]}{size // 2}'")
    return (int(text[1:]) - 1) * size + files.index(text[0])


def parse_moves(text: str | Sequence[str], size: int = 8) -> torch.Tensor:
    """Squares [n_moves] of a move list such as 'd3 c5 f6' (spaces or commas) or ['d3', 'c5']."""
    names = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    if not names:
        raise UncoverError("no moves given; write them like 'd3 c5 f6'")
    return torch.tensor([parse_square(n, size) for n in names], dtype=torch.long)


def flip_table(boards: torch.Tensor, player: torch.Tensor) -> torch.Tensor:
    """What each move would flip: boards [n, S*S] int8, player [n] (1 or -1) -> [n, S-1, S*S, 8] bool.

    Entry [g, k, q, d] is True when a move by ``player`` on square q flips the (k+1)-th square along
    direction d. Occupied squares flip nothing.
    """
    n, squares = boards.shape
    size = int(round(squares**0.5))
    table = _ray_table(size).to(boards.device).permute(2, 0, 1)  # [K, Q, 8]
    padded = torch.cat([boards, boards.new_zeros(n, 1)], dim=1)
    rays = padded[:, table]  # [n, K, Q, 8]
    mine = player.to(boards.dtype).view(n, 1, 1, 1)
    run = rays == -mine
    length = run[:, :1].to(torch.int64)  # [n, 1, Q, 8]: how many opponent stones lead the ray
    for k in range(1, size - 1):  # keep only the leading run of opponent stones
        run[:, k] &= run[:, k - 1]
        length += run[:, k : k + 1]
    closed = (rays == mine).gather(1, length.clamp(max=size - 2)) & (length >= 1) & (length <= size - 2)
    empty = (boards == EMPTY).view(n, 1, squares, 1)
    return run & closed & empty


def legal_moves(boards: torch.Tensor, player: torch.Tensor) -> torch.Tensor:
    """Legal squares for ``player`` [n] (1 black, -1 white) on ``boards`` [n, S*S] -> [n, S*S] bool."""
    return flip_table(boards, player).any(-1).any(1)


@dataclass
class Games:
    """A batch of games and every state along them. T = S*S - 4 (the longest possible game).

    moves [n, T] long: square of move t, -1 after the end. States t = 0..T are before move t (state T is
    after the last possible move): boards [n, T+1, S*S] int8; to_move [n, T+1] int8 (1 black, -1 white, 0 game
    over or prefix ended), the player to move after any passes; legal [n, T+1, S*S] bool, that player's legal
    squares; flips [n, T, S*S] bool, the squares move t flipped; passed [n, T+1] bool, a pass came just before.
    """

    size: int
    moves: torch.Tensor
    boards: torch.Tensor
    to_move: torch.Tensor
    legal: torch.Tensor
    flips: torch.Tensor
    passed: torch.Tensor

    def __len__(self) -> int:
        return self.moves.shape[0]

    @property
    def lengths(self) -> torch.Tensor:
        """Moves played in each game [n]."""
        return (self.moves >= 0).sum(1)

    @property
    def tokens(self) -> torch.Tensor:
        """Model tokens [n, T]: the index of each move among ``playable_squares``; ``pad_token`` after the end."""
        return moves_to_tokens(self.moves, self.size)

    def legal_tokens(self) -> torch.Tensor:
        """legal restricted to playable squares, in token order: [n, T+1, S*S - 4] bool."""
        return self.legal[..., playable_squares(self.size).to(self.legal.device)]

    def labels(self, scheme: str = "mine") -> torch.Tensor:
        """Per-square classes of every state [n, T+1, S*S] long.

        scheme "mine": 0 empty, 1 the player to move's stone ("mine"), 2 the opponent's ("theirs");
        scheme "color": 0 empty, 1 black, 2 white. Where no one is to move, "mine" counts black as mine.
        """
        boards = self.boards.long()
        if scheme == "color":
            return torch.where(boards == 0, 0, torch.where(boards == BLACK, 1, 2))
        if scheme != "mine":
            raise UncoverError(f"unknown label scheme {scheme!r}; use 'mine' (mine/theirs) or 'color' (black/white)")
        player = torch.where(self.to_move == 0, 1, self.to_move.long()).unsqueeze(-1)
        return torch.where(boards == 0, 0, torch.where(boards == player, 1, 2))


def moves_to_tokens(moves: torch.Tensor, size: int) -> torch.Tensor:
    """Square indices (-1 = none) [...] -> model tokens [...] (pad_token for -1)."""
    lookup = torch.full((size * size,), -1, dtype=torch.long)
    lookup[playable_squares(size)] = torch.arange(size * size - 4)
    lookup = lookup.to(moves.device)
    return torch.where(moves >= 0, lookup[moves.clamp(min=0)], pad_token(size))


def tokens_to_moves(tokens: torch.Tensor, size: int) -> torch.Tensor:
    """Model tokens [...] -> square indices (-1 for the pad token)."""
    squares = playable_squares(size).to(tokens.device)
    return torch.where(tokens < size * size - 4, squares[tokens.clamp(max=size * size - 5)], -1)


Picker = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _simulate(size: int, n: int, pick: Picker, device: torch.device, record: bool) -> Games:
    """Play n games; ``pick(t, boards [n, Q], legal [n, Q], live [n], to_move [n])`` returns move t's squares [n] (-1 to stop)."""
    T, Q = size * size - 4, size * size
    boards = start_board(size).to(device).repeat(n, 1)
    player = torch.ones(n, dtype=torch.int8, device=device)
    live = torch.ones(n, dtype=torch.bool, device=device)
    moves = torch.full((n, T), -1, dtype=torch.long, device=device)
    shape = (n, T + 1) if record else (n, 1)
    hist_boards = torch.zeros(*shape, Q, dtype=torch.int8, device=device)
    hist_legal = torch.zeros(*shape, Q, dtype=torch.bool, device=device)
    hist_flips = torch.zeros(n, T if record else 1, Q, dtype=torch.bool, device=device)
    hist_player = torch.zeros(shape, dtype=torch.int8, device=device)
    hist_passed = torch.zeros(shape, dtype=torch.bool, device=device)
    rows = torch.arange(n, device=device)
    table = _ray_table(size).to(device)
    for t in range(T + 1):
        table_now = flip_table(boards, player)
        legal = table_now.any(-1).any(1)
        stuck = live & ~legal.any(1)
        if bool(stuck.any()):  # pass: the other player moves if they can
            player = torch.where(stuck, -player, player)
            other = flip_table(boards[stuck], player[stuck])
            table_now[stuck], legal[stuck] = other, other.any(-1).any(1)
        live = live & legal.any(1)
        legal &= live[:, None]
        i = t if record else 0
        hist_boards[:, i], hist_legal[:, i] = boards, legal
        hist_player[:, i] = torch.where(live, player, torch.zeros_like(player))
        hist_passed[:, i] = stuck & live
        if t == T:
            break
        move = pick(t, boards, legal, live, player)
        go = move >= 0
        live = live & go
        if not bool(live.any()):
            break
        square = move.clamp(min=0)
        flipped = table_now[rows, :, square] & live[:, None, None]  # [n, K, 8]
        padded = torch.cat([boards, boards.new_zeros(n, 1)], dim=1)
        cells = torch.where(flipped, table[square].transpose(1, 2), Q)  # squares to flip, Q where none
        stone = player.view(n, 1, 1).expand_as(cells)
        padded.scatter_(1, cells.flatten(1), stone.flatten(1))
        padded[rows[live], square[live]] = player[live]
        boards = padded[:, :Q].contiguous()
        changed = torch.zeros(n, Q + 1, dtype=torch.bool, device=device)
        changed.scatter_(1, cells.flatten(1), True)
        hist_flips[:, t if record else 0] = changed[:, :Q]
        moves[:, t] = torch.where(live, move, -1)
        player = torch.where(live, -player, player)
    if record and t < T:  # every game ended early: later states repeat the final board
        hist_boards[:, t + 1:] = boards[:, None]
    return Games(size, moves, hist_boards, hist_player, hist_legal, hist_flips, hist_passed)


def random_games(n: int, size: int = 8, seed: int = 0, device: str | torch.device = "cpu",
                 record: bool = True, generator: torch.Generator | None = None) -> Games:
    """n games of uniformly random legal moves (each legal move equally likely), reproducible from ``seed``.

    record=False keeps only ``moves`` (the state fields hold the final state), for fast training batches.
    generator: a torch.Generator on ``device`` to draw from instead of a fresh one seeded with ``seed``.
    """
    _check_size(size)
    if n < 1:
        raise UncoverError(f"n={n}: ask for at least one game")
    device = torch.device(device)
    gen = generator if generator is not None else torch.Generator(device=device).manual_seed(seed)

    def pick(t: int, boards: torch.Tensor, legal: torch.Tensor, live: torch.Tensor, player: torch.Tensor):
        scores = torch.rand(legal.shape, generator=gen, device=device).masked_fill(~legal, -1.0)
        return torch.where(live, scores.argmax(1), -1)

    return _simulate(size, n, pick, device, record)


def play(moves: torch.Tensor | Sequence[Sequence[int]], size: int = 8) -> Games:
    """Replay given games: moves [n, L] square indices (-1 ends a game early; L <= S*S - 4) -> Games.

    Raises UncoverError naming the game, the move number, the square and why it is illegal (occupied,
    flips nothing, or played after the game ended).
    """
    _check_size(size)
    moves = torch.as_tensor(moves, dtype=torch.long)
    if moves.ndim == 1:
        moves = moves[None]
    T = size * size - 4
    if moves.ndim != 2 or moves.shape[1] > T:
        raise UncoverError(f"moves must be [n_games, n_moves] with at most {T} moves, got {tuple(moves.shape)}")
    if bool(((moves < -1) | (moves >= size * size)).any()):
        bad = moves[(moves < -1) | (moves >= size * size)][0]
        raise UncoverError(f"square index {int(bad)} is off the {size}x{size} board (0..{size * size - 1})")
    given = torch.full((moves.shape[0], T), -1, dtype=torch.long)
    given[:, : moves.shape[1]] = moves
    ended = torch.zeros(moves.shape[0], dtype=torch.bool)

    def pick(t: int, boards: torch.Tensor, legal: torch.Tensor, live: torch.Tensor, player: torch.Tensor):
        move = given[:, t]
        wants = move >= 0
        after_stop = ended & wants
        over = wants & ~live & ~ended
        bad = wants & live & ~legal[torch.arange(len(move)), move.clamp(min=0)]
        for g in (after_stop | over | bad).nonzero().flatten().tolist():
            square = int(move[g])
            if after_stop[g]:
                why = "it comes after the sequence had ended (-1)"
            elif over[g]:
                why = "the game was already over (neither player can move)"
            elif int(boards[g, square]) != EMPTY:
                why = f"{square_name(square, size)} is already occupied"
            else:
                who, other = ("black", "white") if int(player[g]) == BLACK else ("white", "black")
                why = f"it flips no {other} stone for {who}, the player to move"
            _illegal(g, t, square, size, why)
        ended.logical_or_(~wants)
        return move

    return _simulate(size, moves.shape[0], pick, torch.device("cpu"), record=True)


def _illegal(game: int, t: int, square: int, size: int, why: str) -> None:
    raise UncoverError(f"game {game}, move {t + 1} ({square_name(square, size)}) is illegal: {why}. "
                       "Give moves that are legal in order (a pass is implied when a player cannot move).")
