"""Board-state probes for Othello-GPT: read every square's state from the residual stream, layer by layer.

Two label schemes (Nanda et al. 2023): "mine" = {empty, mine, theirs} relative to the player to move, and
"color" = {empty, black, white}. Two probe kinds: "linear" (Nanda's: one 3-way softmax per square over a
linear map of the residual) and "mlp" (Li et al. 2022's nonlinear probe; here one ReLU hidden layer shared by
the squares, then a 3-way softmax per square). Both are trained on standardised features with AdamW,
full batch, on the positions of training games and scored on held-out games.

``representations.probes`` fits one binary probe per (layer, square, class) with scikit-learn; that is
~1000 fits for one sweep here, so the world probes fit all squares' classes in one model per layer.

Shapes: acts [layer, n_positions, d_model]; labels [n_positions, S*S] in {0, 1, 2}; accuracy by layer and
square [layer, S*S].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from uncover.core.results import Progress, no_progress
from uncover.data.othello import Games
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

SCHEMES = {"mine": ("empty", "mine", "theirs"), "color": ("empty", "black", "white")}
KINDS = ("linear", "mlp")


@dataclass
class BoardData:
    """Residuals after each block at every scored position, with the board there.

    acts [layer, n, d_model] float32 (layer l = ``blocks.{l}.hook_resid_post``); labels: scheme -> [n, S*S];
    game [n] and position [n]: which game and which input position (the state after moves 0..position).
    """

    size: int
    layers: list[int]
    acts: torch.Tensor
    labels: dict[str, torch.Tensor]
    game: torch.Tensor
    position: torch.Tensor


def as_model(model) -> "Model":
    """An uncover Model (``uc.load`` of a toy transformer when given the bare module)."""
    from uncover.core.model import Model

    if isinstance(model, Model):
        return model
    import uncover as uc

    return uc.load(model)


@torch.no_grad()
def board_activations(model, games: Games, layers: Sequence[int] | None = None, batch_size: int = 128,
                      progress: Progress = no_progress) -> BoardData:
    """Residuals [layer, n, d_model] at every position where a move was just played and someone is to move."""
    m = as_model(model)
    layers = list(range(m.cfg.n_layers)) if layers is None else list(layers)
    T = games.moves.shape[1]
    tokens = games.tokens[:, : T - 1]
    valid = (games.moves[:, : T - 1] >= 0) & (games.to_move[:, 1:T] != 0)
    names = [f"blocks.{l}.hook_resid_post" for l in layers]
    chunks = []
    for start in progress(range(0, len(games), batch_size), "board activations"):
        _, cache = m.run_with_cache(tokens[start:start + batch_size], names=names, device="cpu")
        keep = valid[start:start + batch_size]
        chunks.append(torch.stack([cache[n][keep] for n in names]).float())
    game, position = valid.nonzero(as_tuple=True)
    labels = {s: games.labels(s)[:, 1:T][valid] for s in SCHEMES}
    return BoardData(games.size, layers, torch.cat(chunks, 1), labels, game, position)


class BoardProbe(nn.Module):
    """Reads all squares at once: features [n, d] -> logits [n, S*S, 3].

    kind "linear": standardise, then one linear map to 3 logits per square. kind "mlp": standardise, one
    ReLU hidden layer of ``hidden`` units, then 3 logits per square. ``fit`` trains with AdamW full batch.
    """

    def __init__(self, d_model: int, n_squares: int, kind: str = "linear", hidden: int = 256, seed: int = 0):
        super().__init__()
        if kind not in KINDS:
            raise UncoverError(f"unknown probe kind {kind!r}; use one of {KINDS}")
        torch.manual_seed(seed)
        self.kind, self.n_squares = kind, n_squares
        self.register_buffer("mean", torch.zeros(d_model))
        self.register_buffer("std", torch.ones(d_model))
        self.net = (nn.Linear(d_model, n_squares * 3) if kind == "linear" else
                    nn.Sequential(nn.Linear(d_model, hidden), nn.ReLU(), nn.Linear(hidden, n_squares * 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., d_model] -> logits [..., S*S, 3]."""
        z = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.net(z).unflatten(-1, (self.n_squares, 3))

    def fit(self, X: torch.Tensor, y: torch.Tensor, steps: int = 300, lr: float = 1e-2,
            weight_decay: float = 1e-3) -> "BoardProbe":
        """X [n, d_model]; y [n, S*S] in {0, 1, 2}."""
        if X.ndim != 2 or y.shape != (len(X), self.n_squares):
            raise UncoverError(f"need X [n, d] and y [n, {self.n_squares}]; got {tuple(X.shape)} and {tuple(y.shape)}")
        X = X.float()
        self.mean.copy_(X.mean(0))
        self.std.copy_(X.std(0).clamp_min(1e-6))
        opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=weight_decay)
        with torch.enable_grad():
            for _ in range(steps):
                loss = F.cross_entropy(self(X).reshape(-1, 3), y.reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return self.eval()

    @torch.no_grad()
    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Classes [n, S*S]."""
        return self(X.float()).argmax(-1)

    def square_accuracy(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Accuracy of each square over the rows of X: [S*S]."""
        return (self.predict(X) == y).float().mean(0)

    def class_directions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A linear probe in residual space: (weight [S*S, 3, d_model], bias [S*S, 3]) with
        logits = resid @ weight[q].T + bias[q] (the standardisation folded in)."""
        if self.kind != "linear":
            raise UncoverError("class directions exist for linear probes only; fit one with kind='linear'")
        w = self.net.weight.detach().view(self.n_squares, 3, -1) / self.std
        b = self.net.bias.detach().view(self.n_squares, 3) - w @ self.mean
        return w, b


@dataclass
class ProbeSweep:
    """Held-out accuracy [layer, S*S] per (scheme, kind) and the fitted probes (probes[(scheme, kind)][i]
    is layer ``layers[i]``'s). baseline [S*S]: accuracy of always guessing each square's commonest class
    in the training games (per scheme). test_games: the held-out game of every test row."""

    layers: list[int]
    accuracy: dict[tuple[str, str], torch.Tensor]
    baseline: dict[str, torch.Tensor]
    probes: dict[tuple[str, str], list[BoardProbe]]
    test_rows: torch.Tensor

    def by_layer(self, scheme: str, kind: str) -> torch.Tensor:
        """Mean accuracy over squares per layer [layer]."""
        return self.accuracy[(scheme, kind)].mean(1)

    def best_layer(self, scheme: str = "mine", kind: str = "linear") -> int:
        """Index (into ``layers``) of the layer where the probe is most accurate."""
        return int(self.by_layer(scheme, kind).argmax())


def split_games(data: BoardData, test_frac: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (train, test) with whole games held out: the last ``test_frac`` of the games."""
    n_games = int(data.game.max()) + 1
    if n_games < 2:
        raise UncoverError("probes need at least two games (one to train on, one held out)")
    cut = max(1, min(n_games - 1, math.floor(n_games * (1 - test_frac))))
    rows = torch.arange(len(data.game))
    return rows[data.game < cut], rows[data.game >= cut]


def probe_sweep(data: BoardData, kinds: Sequence[str] = KINDS, schemes: Sequence[str] = tuple(SCHEMES),
                test_frac: float = 0.3, steps: int = 300, hidden: int = 256, seed: int = 0,
                progress: Progress = no_progress) -> ProbeSweep:
    """Fit a probe per layer for every (scheme, kind) on training games; score per square on held-out games."""
    train, test = split_games(data, test_frac)
    n_sq = data.size * data.size
    accuracy, probes, baseline = {}, {}, {}
    jobs = [(s, k, i) for s in schemes for k in kinds for i in range(len(data.layers))]
    for scheme, kind, i in progress(jobs, "board probes"):
        y = data.labels[scheme]
        probe = BoardProbe(data.acts.shape[-1], n_sq, kind, hidden=hidden, seed=seed)
        probe.fit(data.acts[i, train], y[train], steps=steps, lr=1e-2 if kind == "linear" else 3e-3)
        probes.setdefault((scheme, kind), []).append(probe)
        acc = probe.square_accuracy(data.acts[i, test], y[test])
        accuracy[(scheme, kind)] = torch.cat([accuracy.get((scheme, kind), torch.zeros(0, n_sq)), acc[None]])
    for scheme in schemes:
        y = data.labels[scheme]
        common = F.one_hot(y[train], 3).sum(0).argmax(-1)  # [S*S]
        baseline[scheme] = (y[test] == common).float().mean(0)
    return ProbeSweep(data.layers, accuracy, baseline, probes, test)


def paired_gap(data: BoardData, sweep: ProbeSweep, layer_index: int, kind: str = "linear",
               a: str = "mine", b: str = "color") -> tuple[float, float, int]:
    """Accuracy of scheme ``a`` minus scheme ``b`` at one layer on held-out games, with a 95% interval.

    Each held-out game contributes its mean (over positions and squares) difference; returns
    (mean gap, half-width of the normal 95% interval over games, number of games).
    """
    rows = sweep.test_rows
    X = data.acts[layer_index, rows]
    right = {s: (sweep.probes[(s, kind)][layer_index].predict(X) == data.labels[s][rows]).float().mean(1)
             for s in (a, b)}
    diff = right[a] - right[b]
    games = data.game[rows]
    per_game = torch.stack([diff[games == g].mean() for g in games.unique()])
    n = len(per_game)
    half = 1.96 * float(per_game.std()) / math.sqrt(n) if n > 1 else float("inf")
    return float(per_game.mean()), half, n
