"""Flip one square of Othello-GPT's board representation and see whether its legal moves follow.

For a position (a game after some moves) and an occupied square, the *edited* board is the real board with
that stone's owner swapped (mine <-> theirs). Two ways to write it into the residual stream at that position,
both as hook functions on ``blocks.{l}.hook_resid_post`` over a range of layers:

* ``"linear"`` (Nanda et al. 2023): move the residual along the linear probe's (new class - old class)
  direction for that square, so the probe's logit gap between the two classes is mirrored
  (``strength`` times its size, at least ``margin``).
* ``"gradient"`` (Li et al. 2022): gradient steps on the residual, layer after layer, until the probe reads
  the edited board on every square (cross-entropy to the edited labels, Adam in standardised units).

Measure: the share of top-1 predictions legal for the edited board against the share legal for the
original board, over many positions (and the same shares without any edit).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from uncover.core.results import Progress, no_progress
from uncover.data.othello import Games, legal_moves, playable_squares, square_name
from uncover.errors import UncoverError
from uncover.representations.world.probes import BoardProbe, as_model

METHODS = ("linear", "gradient")


@dataclass
class Flips:
    """Positions to edit: game [n], position [n] (input position; the state after moves 0..position),
    square [n]; original / edited legal moves in token order [n, S*S - 4] bool; edited mine/theirs labels
    [n, S*S]; the game tokens [n, T-1]."""

    size: int
    game: torch.Tensor
    position: torch.Tensor
    square: torch.Tensor
    legal_original: torch.Tensor
    legal_edited: torch.Tensor
    labels_edited: torch.Tensor
    tokens: torch.Tensor

    def __len__(self) -> int:
        return len(self.game)


def edited_position(games: Games, game: int, position: int, square: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor]:
    """(original legal [S*S - 4], edited legal [S*S - 4], edited mine/theirs labels [S*S]) when the stone on
    ``square`` changes owner in the state after moves 0..position of ``game``."""
    state = position + 1
    board = games.boards[game, state].clone()
    player = games.to_move[game, state]
    if int(player) == 0:
        raise UncoverError(f"no one is to move after move {position + 1} of game {game}: the game is over")
    if int(board[square]) == 0:
        raise UncoverError(f"{square_name(square, games.size)} is empty after move {position + 1}; "
                           "flip an occupied square")
    playable = playable_squares(games.size)
    original = games.legal[game, state][playable]
    board[square] = -board[square]
    edited = legal_moves(board[None], player.view(1))[0][playable]
    labels = torch.where(board == 0, 0, torch.where(board == player, 1, 2)).long()
    return original, edited, labels


def choose_flips(games: Games, n: int, seed: int = 0, min_position: int = 2) -> Flips:
    """Up to ``n`` random (game, position, square) edits whose flip changes the set of legal moves."""
    gen = torch.Generator().manual_seed(seed)
    T = games.moves.shape[1]
    valid = (games.moves[:, : T - 1] >= 0) & (games.to_move[:, 1:T] != 0)
    valid[:, :min_position] = False
    candidates = valid.nonzero()
    order = torch.randperm(len(candidates), generator=gen)
    rows: list[tuple[int, int, int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for g, p in candidates[order].tolist():
        occupied = (games.boards[g, p + 1] != 0).nonzero().flatten()
        for q in occupied[torch.randperm(len(occupied), generator=gen)].tolist():
            original, edited, labels = edited_position(games, g, p, q)
            if not torch.equal(original, edited):
                rows.append((g, p, q, original, edited, labels))
                break
        if len(rows) == n:
            break
    if not rows:
        raise UncoverError("no position where flipping a stone changes the legal moves; give more or longer games")
    g, p, q, original, edited, labels = zip(*rows)
    return Flips(games.size, torch.tensor(g), torch.tensor(p), torch.tensor(q), torch.stack(original),
                 torch.stack(edited), torch.stack(labels), games.tokens[torch.tensor(g), : T - 1])


def _set_rows(values: torch.Tensor, positions: torch.Tensor):
    """A hook writing values [b, d_model] into the residual at one position per row."""

    def fn(t: torch.Tensor, hook) -> torch.Tensor:
        out = t.clone()
        out[torch.arange(len(t), device=t.device), positions.to(t.device)] = values.to(t.dtype)
        return out

    return fn


def linear_flip_hook(probe: BoardProbe, square: torch.Tensor, old: torch.Tensor, new: torch.Tensor,
                     positions: torch.Tensor, strength: float = 1.0, margin: float = 2.0):
    """Nanda et al.'s edit as a hook: at each row's position move the residual along
    w[new] - w[old] of its square so the (new - old) logit gap becomes ``strength * |gap|`` (at least ``margin``)."""
    w, b = probe.class_directions()  # [Q, 3, d], [Q, 3]

    def fn(t: torch.Tensor, hook) -> torch.Tensor:
        rows = torch.arange(len(t), device=t.device)
        pos = positions.to(t.device)
        r = t[rows, pos].float()  # [b, d]
        u = (w[square, new] - w[square, old]).to(t.device)  # [b, d]
        gap = (r * u).sum(-1) + (b[square, new] - b[square, old]).to(t.device)
        target = torch.maximum(strength * gap.abs(), torch.full_like(gap, margin))
        edited = r + ((target - gap) / u.pow(2).sum(-1))[:, None] * u
        out = t.clone()
        out[rows, pos] = edited.to(t.dtype)
        return out

    return fn


def gradient_edit(probe: BoardProbe, resid: torch.Tensor, labels: torch.Tensor, steps: int = 100, lr: float = 0.05,
                  max_steps_check: int = 10) -> torch.Tensor:
    """Li et al.'s edit: residuals [b, d] moved by Adam (in standardised units) until the probe reads
    ``labels`` [b, S*S] on every square (checked every ``max_steps_check`` steps) or ``steps`` run out."""
    delta = torch.zeros_like(resid, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    std = probe.std.to(resid.dtype)
    with torch.enable_grad():
        for step in range(steps):
            logits = probe(resid + delta * std)
            if step % max_steps_check == 0 and bool((logits.argmax(-1) == labels).all()):
                break
            loss = F.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return (resid + delta * std).detach()


@dataclass
class InterventionResult:
    """Top-1 predictions after the edit, scored against both boards, over ``n`` positions.

    legal_edited / legal_original: [n] bool, was the edited run's top-1 move legal for that board;
    base_edited / base_original: the same without the edit. flips: the edits (for drawing boards)."""

    method: str
    layers: list[int]
    legal_edited: torch.Tensor
    legal_original: torch.Tensor
    base_edited: torch.Tensor
    base_original: torch.Tensor
    predictions: torch.Tensor
    base_predictions: torch.Tensor
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.legal_edited)

    def gap(self) -> tuple[float, float]:
        """(share legal for the edited board - share legal for the original, 95% half-width) over positions."""
        d = self.legal_edited.float() - self.legal_original.float()
        half = 1.96 * float(d.std()) / math.sqrt(self.n) if self.n > 1 else float("inf")
        return float(d.mean()), half

    def summary(self) -> dict[str, Any]:
        gap, half = self.gap()
        return {"method": self.method, "layers": self.layers, "n": self.n, "params": self.params,
                "share_edited": float(self.legal_edited.float().mean()),
                "share_original": float(self.legal_original.float().mean()),
                "base_share_edited": float(self.base_edited.float().mean()),
                "base_share_original": float(self.base_original.float().mean()),
                "gap": gap, "gap_half_width": half}


def _top1(model, tokens: torch.Tensor, positions: torch.Tensor, hooks: Sequence = ()) -> torch.Tensor:
    logits = model.run_with_hooks(tokens, fwd_hooks=list(hooks))
    return logits[torch.arange(len(tokens)), positions.to(logits.device)].argmax(-1).cpu()


@torch.no_grad()
def intervene(model, flips: Flips, probes: Sequence[BoardProbe], layers: Sequence[int], method: str = "linear",
              strength: float = 1.0, margin: float = 2.0, steps: int = 100, lr: float = 0.05, batch_size: int = 128,
              progress: Progress = no_progress) -> InterventionResult:
    """Apply the flip of every row of ``flips`` at ``layers`` (probes[l] reads layer l's resid_post,
    mine/theirs scheme; linear probes for ``method="linear"``) and score the top-1 predictions."""
    if method not in METHODS:
        raise UncoverError(f"unknown intervention {method!r}; use one of {METHODS}")
    m = as_model(model)
    layers = sorted(layers)
    if not layers or layers[0] < 0 or layers[-1] >= m.cfg.n_layers:
        raise UncoverError(f"layers {layers} must be within 0..{m.cfg.n_layers - 1}")
    base, edited = [], []
    for start in progress(range(0, len(flips), batch_size), f"{method} flips"):
        rows = slice(start, start + batch_size)
        tokens, pos, sq = flips.tokens[rows].to(m.device), flips.position[rows], flips.square[rows]
        labels = flips.labels_edited[rows]
        base.append(_top1(m, tokens, pos))
        hooks = []
        for l in layers:
            name = f"blocks.{l}.hook_resid_post"
            if method == "linear":
                new = labels[torch.arange(len(sq)), sq]
                hooks.append((name, linear_flip_hook(probes[l], sq, 3 - new, new, pos, strength, margin)))
            else:
                _, cache = m.run_with_cache(tokens, names=[name], fwd_hooks=hooks)
                resid = cache[name][torch.arange(len(sq)), pos.to(m.device)].float().cpu()
                hooks.append((name, _set_rows(gradient_edit(probes[l], resid, labels, steps, lr), pos)))
        edited.append(_top1(m, tokens, pos, hooks))
    base_pred, pred = torch.cat(base), torch.cat(edited)
    pick = lambda legal, p: legal[torch.arange(len(p)), p]  # noqa: E731
    params = {"strength": strength, "margin": margin} if method == "linear" else {"steps": steps, "lr": lr}
    return InterventionResult(method, list(layers), pick(flips.legal_edited, pred), pick(flips.legal_original, pred),
                              pick(flips.legal_edited, base_pred), pick(flips.legal_original, base_pred), pred,
                              base_pred, params)


def flips_for(games: Games, square: int, game: int = 0, position: int | None = None) -> Flips:
    """One edit: the stone on ``square`` after moves 0..position of ``game`` (default: its last given move)."""
    if position is None:
        position = int((games.moves[game] >= 0).sum()) - 1
    if position < 0:
        raise UncoverError("no moves given: play at least one move before flipping a square")
    original, edited, labels = edited_position(games, game, position, square)
    T = games.moves.shape[1]
    return Flips(games.size, torch.tensor([game]), torch.tensor([position]), torch.tensor([square]), original[None],
                 edited[None], labels[None], games.tokens[[game], : T - 1])
