"""Fine-tuning "wrappers" (Jain et al. 2023) on a toy counting transformer.

Jain et al. ("Mechanistically analyzing the effects of fine-tuning on procedurally defined tasks") find
that fine-tuning rarely deletes a pre-trained capability: a thin "wrapper" on top hides it, a probe still
reads it, pruning a few units brings the old behaviour back, and fine-tuning back on the old task revives
it in a few steps. This module measures each of those claims on a ``uncover.dynamics`` toy transformer:

* **Pre-training** (the capability): token sequences ``[BOS, x_1 .. x_{n-1}]`` over ``n_tokens - 1``
  content tokens; at every position the answer is how many times ``capability_token`` (A) occurred so far.
* **Fine-tuning** (a related task that no longer uses the count of A): the same sequences, answer = the
  count of ``finetune_token`` (B), from the same answer tokens, at a smaller learning rate.
* **Probe**: a linear least-squares classifier (one-hot targets, closed form) reads the count of A from the
  residual stream after each layer, of the pre-trained, the fine-tuned and a randomly initialised model
  (the baseline: what the architecture gives with no training). The count has ``seq_len`` classes, so the
  binary probes of ``uncover.representations.probes`` do not fit; this one is closed form and fast.
* **Pruning**: every MLP neuron (``blocks.{l}.mlp.hook_post``) and attention head (``blocks.{l}.attn.hook_z``)
  is a unit; units are ranked on a calibration set by attribution (``uncover.core.variants.attribution``,
  first-order effect of zeroing), either by how much the fine-tuned task loses ("fine-tune importance")
  or how much the pre-training loss gains ("capability gain"), and by a greedy search among the top units
  of both that zeroes, step by step, the unit that lowers the pre-training loss most ("greedy search");
  the top k are zero-ablated in the fine-tuned model and its capability accuracy measured on held-out
  sequences.
* **Reverse fine-tuning**: the fine-tuned model trained on the pre-training task again, against the same
  training from the pre-training initialisation (same optimiser, learning rate and batches): steps until
  capability accuracy reaches ``revive_acc``.

What this toy shows (``uncover wrappers``; numbers in the findings, never here): the capability stays
linearly readable and is revived by reverse fine-tuning in a fraction of the from-scratch steps, at the
default fine-tuning learning rate; at 10x that rate (a test-size sweep) the probe margin shrinks and
revival is no faster than scratch. Zero-ablating up to ``prune_share`` of the units, by any of the three
rankings, recovers little of the lost accuracy here (nor did mean ablation in a trial): Adam fine-tuning
spreads the change over every weight rather than into a prunable wrapper, and the findings then say
"does not restore".

Every run goes through the one ``Trainer`` (``uncover.dynamics.trainer``); activations are read through
``uc.load(toy)`` (``Model.run_with_cache`` / ``run_with_hooks``). Randomness comes from seeded
``torch.Generator`` objects only (the global RNG is never touched). ``uncover.applications.report`` words
each claim by a named threshold and renders the report fragment.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from uncover.core.results import Progress, Result, no_progress
from uncover.dynamics.models import ToyConfig, ToyTransformer, as_model
from uncover.dynamics.trainer import TrainConfig, Trainer
from uncover.errors import UncoverError

FEW_UNITS = 0.05  # "a few units": at most this share of all neurons and heads (the claims: applications/report.py)
RANKINGS = ("fine-tune importance", "capability gain", "greedy search")
GREEDY_CANDIDATES = 16  # the greedy search picks among the top units of each attribution ranking


@dataclass
class WrapperConfig:
    """The experiment. Sizes: sequences ``[batch, seq_len]``; answers are counts ``0 .. seq_len - 1``."""

    n_tokens: int = 8  # token 0 is BOS; content tokens are 1 .. n_tokens - 1
    seq_len: int = 16
    capability_token: int = 1  # A: its running count is the pre-training capability
    finetune_token: int = 2  # B: its running count is the fine-tuning task
    d_model: int = 64
    n_heads: int = 4
    d_head: int = 16
    d_mlp: int = 256
    n_layers: int = 2
    pretrain_steps: int = 400
    finetune_steps: int = 300
    lr: float = 1e-3  # pre-training, reverse fine-tuning and from-scratch training
    finetune_lr: float = 1e-4
    weight_decay: float = 0.01
    batch_size: int = 128
    max_revive_steps: int = 400  # cap on reverse fine-tuning and on training from scratch
    revive_acc: float = 0.9  # capability accuracy that counts as "revived" / "learned"
    n_eval: int = 512  # held-out sequences for accuracies and probe testing
    n_probe_train: int = 1024  # sequences the probes are fitted on
    n_calibration: int = 256  # sequences units are ranked on
    probe_ridge: float = 1e-3
    prune_share: float = FEW_UNITS  # the largest share of units pruned
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_tokens < 3:
            raise UncoverError(f"n_tokens={self.n_tokens}: need BOS and at least two content tokens")
        if self.seq_len < 3:
            raise UncoverError(f"seq_len={self.seq_len}: need at least 3 positions")
        for name in ("capability_token", "finetune_token"):
            tok = getattr(self, name)
            if not 1 <= tok < self.n_tokens:
                raise UncoverError(f"{name}={tok} must be a content token in [1, {self.n_tokens - 1}] (0 is BOS)")
        if self.capability_token == self.finetune_token:
            raise UncoverError("capability_token and finetune_token must differ: fine-tuning counts another token")
        for name in ("pretrain_steps", "finetune_steps", "max_revive_steps", "batch_size", "n_eval",
                     "n_probe_train", "n_calibration", "d_model", "n_heads", "d_head", "d_mlp", "n_layers"):
            if getattr(self, name) < 1:
                raise UncoverError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0.0 < self.prune_share < 1.0:
            raise UncoverError(f"prune_share={self.prune_share} must be in (0, 1)")
        if not 0.0 < self.revive_acc <= 1.0:
            raise UncoverError(f"revive_acc={self.revive_acc} must be in (0, 1]")

    def toy_config(self) -> ToyConfig:
        return ToyConfig(d_vocab=self.n_tokens, n_ctx=self.seq_len, d_vocab_out=self.seq_len, d_model=self.d_model,
                         n_heads=self.n_heads, d_head=self.d_head, d_mlp=self.d_mlp, n_layers=self.n_layers,
                         layer_norm=True)


def test_config(seed: int = 0) -> WrapperConfig:
    """The test-size experiment (about 20-30 s on one CPU thread)."""
    return WrapperConfig(d_model=48, d_head=12, d_mlp=128, seq_len=12, pretrain_steps=250, finetune_steps=300,
                         batch_size=64, max_revive_steps=250, n_eval=256, n_probe_train=512, n_calibration=128,
                         seed=seed)


# ---- data and tasks ------------------------------------------------------------------------------------
def sequences(n: int, cfg: WrapperConfig, generator: torch.Generator) -> torch.Tensor:
    """[n, seq_len] LongTensor: BOS (0) then uniform content tokens 1 .. n_tokens - 1."""
    x = torch.randint(1, cfg.n_tokens, (n, cfg.seq_len), generator=generator)
    x[:, 0] = 0
    return x


def running_count(tokens: torch.Tensor, token: int) -> torch.Tensor:
    """[batch, pos] -> [batch, pos - 1]: occurrences of ``token`` in positions 1..t, for t = 1 .. pos - 1."""
    return (tokens[:, 1:] == token).long().cumsum(1)


class CountingTask:
    """A ``TrainingTask``: at every position after BOS, predict the running count of ``token``.

    Training batches are fresh sequences from the trainer's generator; ``evaluate`` reports loss and
    accuracy on the held-out ``eval_tokens`` [n, seq_len] for this task (``loss``, ``acc``) and the count of
    every token in ``watch`` (``acc_{token}``).
    """

    def __init__(self, cfg: WrapperConfig, token: int, eval_tokens: torch.Tensor, watch: Sequence[int] = ()):
        self.cfg, self.token, self.watch = cfg, token, tuple(watch)
        self.eval_tokens = eval_tokens

    def to(self, device: torch.device | str) -> "CountingTask":
        self.eval_tokens = self.eval_tokens.to(device)
        return self

    def batch(self, step: int, batch_size: int | None, generator: torch.Generator) -> torch.Tensor:
        return sequences(batch_size or self.cfg.batch_size, self.cfg, generator).to(self.eval_tokens.device)

    def loss(self, model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return count_loss(model(tokens).logits, tokens, self.token)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        logits = model(self.eval_tokens).logits
        row = {"loss": float(count_loss(logits, self.eval_tokens, self.token)),
               "acc": count_accuracy(logits, self.eval_tokens, self.token)}
        for tok in self.watch:
            row[f"acc_{tok}"] = count_accuracy(logits, self.eval_tokens, tok)
        return row


def count_loss(logits: torch.Tensor, tokens: torch.Tensor, token: int) -> torch.Tensor:
    """Mean cross-entropy of logits [batch, pos, n_answers] against the running count of ``token``."""
    target = running_count(tokens, token)
    return F.cross_entropy(logits[:, 1:].reshape(-1, logits.shape[-1]), target.reshape(-1))


def count_accuracy(logits: torch.Tensor, tokens: torch.Tensor, token: int) -> float:
    """Share of positions 1..pos-1 whose argmax answer is the running count of ``token``."""
    return float((logits[:, 1:].argmax(-1) == running_count(tokens, token)).float().mean())


# ---- the linear probe ------------------------------------------------------------------------------------
@dataclass
class CountProbe:
    """A linear classifier fitted in closed form: ridge least squares onto one-hot labels, on standardised
    features. ``weight`` [d + 1, n_classes] (last row: bias), ``mean`` / ``std`` [d]. Predicts the argmax."""

    weight: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, X: torch.Tensor, y: torch.Tensor, n_classes: int, ridge: float = 1e-3) -> "CountProbe":
        """X [n, d] float, y [n] long in [0, n_classes)."""
        if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
            raise UncoverError(f"probe needs X [n, d] and y [n]; got {tuple(X.shape)} and {tuple(y.shape)}")
        X = X.double()
        mean, std = X.mean(0), X.std(0).clamp_min(1e-6)
        Z = cls._design(X, mean, std)
        Y = F.one_hot(y, n_classes).double()
        gram = Z.T @ Z + ridge * len(Z) * torch.eye(Z.shape[1], dtype=Z.dtype)
        return cls(torch.linalg.solve(gram, Z.T @ Y), mean, std)

    @staticmethod
    def _design(X: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        Z = (X.double() - mean) / std
        return torch.cat([Z, torch.ones(len(Z), 1, dtype=Z.dtype)], dim=1)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Class indices [n]."""
        return (self._design(X, self.mean, self.std) @ self.weight).argmax(-1)

    def score(self, X: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(X) == y).float().mean())


def residual_features(model: ToyTransformer, tokens: torch.Tensor, site: str) -> torch.Tensor:
    """Activations at ``site`` for positions 1..pos-1, flattened: [batch * (pos - 1), d_model]."""
    _, cache = as_model(model).run_with_cache(tokens, names=[site])
    act = cache[site][:, 1:]
    return act.reshape(-1, act.shape[-1]).float()


def probe_accuracy(model: ToyTransformer, site: str, train: torch.Tensor, test: torch.Tensor, token: int,
                   n_classes: int, ridge: float = 1e-3) -> float:
    """Held-out accuracy of a CountProbe reading the running count of ``token`` at ``site``."""
    X_train, X_test = residual_features(model, train, site), residual_features(model, test, site)
    y_train, y_test = running_count(train, token).reshape(-1), running_count(test, token).reshape(-1)
    return CountProbe.fit(X_train, y_train, n_classes, ridge).score(X_test, y_test)


# ---- units and pruning -----------------------------------------------------------------------------------
def unit_sites(cfg: ToyConfig) -> list[tuple[str, int]]:
    """(hook name, number of units) per site: MLP neurons then heads, layer by layer."""
    sites = []
    for l in range(cfg.n_layers):
        if cfg.d_mlp:
            sites.append((f"blocks.{l}.mlp.hook_post", cfg.d_mlp))
        sites.append((f"blocks.{l}.attn.hook_z", cfg.n_heads))
    return sites


def unit_names(cfg: ToyConfig) -> list[str]:
    """Readable unit names in global order: ``L{layer}N{neuron}`` and ``L{layer}H{head}``."""
    out = []
    for name, n in unit_sites(cfg):
        layer = name.split(".")[1]
        out += [f"L{layer}{'H' if name.endswith('hook_z') else 'N'}{i}" for i in range(n)]
    return out


def prune_hooks(cfg: ToyConfig, units: Sequence[int]) -> list[tuple[str, Callable]]:
    """Forward hooks zeroing the given global unit indices (neurons: last axis of hook_post
    [batch, pos, d_mlp]; heads: axis 2 of hook_z [batch, pos, head, d_head])."""
    hooks, offset, total = [], 0, sum(n for _, n in unit_sites(cfg))
    bad = [u for u in units if not 0 <= int(u) < total]
    if bad:
        raise UncoverError(f"unit indices {bad[:5]} out of range: this model has {total} units")
    for name, n in unit_sites(cfg):
        local = sorted({int(u) - offset for u in units if offset <= int(u) < offset + n})
        offset += n
        if not local:
            continue
        head = name.endswith("hook_z")

        def zero(act: torch.Tensor, hook: Any, local: list[int] = local, head: bool = head) -> torch.Tensor:
            act = act.clone()
            if head:
                act[:, :, local] = 0
            else:
                act[..., local] = 0
            return act

        hooks.append((name, zero))
    return hooks


def unit_attribution(model: ToyTransformer, tokens: torch.Tensor, token: int) -> torch.Tensor:
    """First-order change [n_units] of the count-``token`` loss when each unit is zeroed (one forward and
    one backward through ``uncover.core.variants.attribution``), summed over sequences and positions."""
    from uncover.core.variants import attribution

    cfg = model.cfg
    names = [name for name, _ in unit_sites(cfg)]
    _, effects = attribution(as_model(model), tokens, lambda logits: count_loss(logits, tokens, token), names,
                             lambda name, act: torch.zeros_like(act))
    out = []
    for name in names:
        e = effects[name]
        out.append(e.sum((0, 1, 3)) if name.endswith("hook_z") else e.sum((0, 1)))
    return torch.cat(out)


@torch.no_grad()
def pruned_loss(model: ToyTransformer, tokens: torch.Tensor, token: int, units: Sequence[int]) -> float:
    """Count-``token`` cross-entropy of ``model`` with ``units`` zeroed, on tokens [n, seq_len]."""
    logits = as_model(model).run_with_hooks(tokens, fwd_hooks=prune_hooks(model.cfg, units))
    return float(count_loss(logits, tokens, token))


def greedy_units(model: ToyTransformer, tokens: torch.Tensor, token: int, candidates: Sequence[int],
                 k: int) -> list[int]:
    """Greedy forward selection of ``k`` units among ``candidates``: each step adds the unit whose zeroing,
    together with those already chosen, gives the lowest count-``token`` loss on ``tokens``. Nested: the
    first j entries are the greedy choice of j units."""
    chosen: list[int] = []
    pool = list(dict.fromkeys(int(c) for c in candidates))
    for _ in range(min(k, len(pool))):
        best = min((c for c in pool if c not in chosen), key=lambda c: pruned_loss(model, tokens, token, chosen + [c]))
        chosen.append(best)
    return chosen


@torch.no_grad()
def pruned_accuracy(model: ToyTransformer, tokens: torch.Tensor, token: int, units: Sequence[int]) -> float:
    """Count-``token`` accuracy of ``model`` with ``units`` zeroed, on tokens [n, seq_len]."""
    logits = as_model(model).run_with_hooks(tokens, fwd_hooks=prune_hooks(model.cfg, units))
    return count_accuracy(logits, tokens, token)


def prune_counts(n_units: int, share: float) -> list[int]:
    """0, 1, 2, 4, ... up to (and including) the largest count within ``share`` of ``n_units``."""
    top = max(1, int(math.floor(share * n_units)))
    counts = [0] + [2**i for i in range(int(math.log2(top)) + 1) if 2**i < top]
    return counts + [top]


# ---- the result ----------------------------------------------------------------------------------------
@dataclass
class WrapperResult(Result):
    """Every number of one wrapper experiment.

    Accuracies are shares of positions in [0, 1] on ``n_eval`` held-out sequences. ``probe`` maps
    "pretrained" / "finetuned" / "random" to per-layer probe accuracies [n_layers] (``probe_sites``).
    ``prune[ranking]`` holds "capability" and "finetune" accuracies [len(prune_counts)] and "units" (the
    ranked unit names, best first, as many as the largest count). ``revive_curve`` / ``scratch_curve``: capability
    accuracy after each step (index 0 = before training) of reverse fine-tuning / training from scratch;
    ``revive_steps`` / ``scratch_steps``: first step reaching ``config['revive_acc']`` (None: not within the cap).
    """

    config: dict[str, Any]
    pretrained_acc: float  # capability (count A) accuracy of the pre-trained model
    pretrained_finetune_acc: float  # its accuracy on the fine-tuning task (count B) before fine-tuning
    finetuned_acc: float  # capability accuracy of the fine-tuned model
    finetuned_finetune_acc: float  # fine-tuning task accuracy of the fine-tuned model
    random_acc: float  # capability accuracy of the untrained model
    probe_sites: list[str]
    probe: dict[str, list[float]]
    n_units: int
    prune_counts: list[int]
    prune: dict[str, dict[str, Any]]
    revive_curve: list[float]
    scratch_curve: list[float]
    revive_steps: int | None
    scratch_steps: int | None
    seconds: dict[str, float] = field(default_factory=dict)

    # ---- derived numbers the findings use ----
    @property
    def probe_finetuned(self) -> float:
        """Best per-layer probe accuracy of the fine-tuned model."""
        return max(self.probe["finetuned"])

    @property
    def probe_random(self) -> float:
        """Best per-layer probe accuracy of the random model (the baseline)."""
        return max(self.probe["random"])

    @property
    def probe_margin(self) -> float:
        return self.probe_finetuned - self.probe_random

    @property
    def capability_drop(self) -> float:
        return self.pretrained_acc - self.finetuned_acc

    def restored_share(self, ranking: str, i: int) -> float:
        """Share of the lost capability accuracy recovered by pruning ``prune_counts[i]`` units."""
        drop = self.capability_drop
        if drop <= 0:
            return float("nan")
        return (self.prune[ranking]["capability"][i] - self.finetuned_acc) / drop

    def best_restore(self) -> tuple[str, int, float]:
        """(ranking, units pruned, restored share) of the pruning that recovers the most capability."""
        best = ("", 0, float("-inf"))
        for ranking, d in self.prune.items():
            for i, k in enumerate(self.prune_counts):
                share = self.restored_share(ranking, i)
                if k and share == share and share > best[2]:
                    best = (ranking, k, share)
        return best

    @property
    def revive_speedup(self) -> float:
        """Scratch steps / reverse fine-tuning steps (a lower bound with the cap when scratch did not reach
        the threshold; NaN when reverse fine-tuning did not)."""
        if self.revive_steps is None:
            return float("nan")
        scratch = self.scratch_steps if self.scratch_steps is not None else len(self.scratch_curve) - 1
        return scratch / max(self.revive_steps, 1)


# ---- the experiment ------------------------------------------------------------------------------------
def _train(model: ToyTransformer, task: CountingTask, cfg: WrapperConfig, steps: int, lr: float, seed: int,
           stop_at: dict[str, float] | None = None, progress: Progress = no_progress):
    tc = TrainConfig(steps=steps, lr=lr, weight_decay=cfg.weight_decay, warmup_steps=1, batch_size=cfg.batch_size,
                     eval_every=1 if stop_at is not None else steps, checkpoints="none", seed=seed,
                     stop_at=stop_at or {}, device="cpu")
    return Trainer(model, task, tc, progress=progress).fit(resume=False)


def _first_reaching(curve: Sequence[float], level: float) -> int | None:
    return next((i for i, a in enumerate(curve) if a >= level), None)


def run_wrappers(cfg: WrapperConfig | None = None, progress: Progress = no_progress) -> WrapperResult:
    """Pre-train, fine-tune, probe, prune and reverse-fine-tune (see the module doc); about 1-2 minutes at
    the default size on one CPU thread, ``test_config()`` in about half a minute."""
    cfg = cfg or WrapperConfig()
    toy = cfg.toy_config()
    A, B = cfg.capability_token, cfg.finetune_token
    gen = torch.Generator().manual_seed(cfg.seed + 1_000)
    eval_tokens = sequences(cfg.n_eval, cfg, gen)
    probe_tokens = sequences(cfg.n_probe_train, cfg, gen)
    calibration = sequences(cfg.n_calibration, cfg, gen)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    init = ToyTransformer(toy, seed=cfg.seed)
    random_model = copy.deepcopy(init)
    pretrained = copy.deepcopy(init)
    _train(pretrained, CountingTask(cfg, A, eval_tokens), cfg, cfg.pretrain_steps, cfg.lr, cfg.seed, progress=progress)
    finetuned = copy.deepcopy(pretrained)
    _train(finetuned, CountingTask(cfg, B, eval_tokens), cfg, cfg.finetune_steps, cfg.finetune_lr, cfg.seed + 1,
           progress=progress)
    seconds["train"] = time.perf_counter() - t0

    def accs(model: ToyTransformer) -> tuple[float, float]:
        with torch.no_grad():
            logits = model(eval_tokens).logits
        return count_accuracy(logits, eval_tokens, A), count_accuracy(logits, eval_tokens, B)

    pre_a, pre_b = accs(pretrained)
    ft_a, ft_b = accs(finetuned)
    rand_a, _ = accs(random_model)

    t0 = time.perf_counter()
    sites = [f"blocks.{l}.hook_resid_post" for l in range(toy.n_layers)]
    probe = {name: [probe_accuracy(m, s, probe_tokens, eval_tokens, A, cfg.seq_len, cfg.probe_ridge) for s in sites]
             for name, m in (("pretrained", pretrained), ("finetuned", finetuned), ("random", random_model))}
    seconds["probe"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    names = unit_names(toy)
    counts = prune_counts(len(names), cfg.prune_share)
    scores = {"fine-tune importance": unit_attribution(finetuned, calibration, B),
              "capability gain": -unit_attribution(finetuned, calibration, A)}
    orders = {ranking: torch.argsort(score, descending=True).tolist() for ranking, score in scores.items()}
    candidates = [u for order in orders.values() for u in order[:GREEDY_CANDIDATES]]
    orders["greedy search"] = greedy_units(finetuned, calibration, A, candidates, counts[-1])
    prune: dict[str, dict[str, Any]] = {}
    for ranking, order in orders.items():
        prune[ranking] = {
            "capability": [pruned_accuracy(finetuned, eval_tokens, A, order[:k]) for k in counts],
            "finetune": [pruned_accuracy(finetuned, eval_tokens, B, order[:k]) for k in counts],
            "units": [names[i] for i in order[: counts[-1]]],
        }
    seconds["prune"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    curves = {}
    for label, start in (("revive", finetuned), ("scratch", init)):
        model = copy.deepcopy(start)
        run = _train(model, CountingTask(cfg, A, eval_tokens), cfg, cfg.max_revive_steps, cfg.lr, cfg.seed + 2,
                     stop_at={"acc": cfg.revive_acc}, progress=progress)
        curves[label] = run.column("acc")
    seconds["revive"] = time.perf_counter() - t0

    return WrapperResult(
        config=asdict(cfg), pretrained_acc=pre_a, pretrained_finetune_acc=pre_b, finetuned_acc=ft_a,
        finetuned_finetune_acc=ft_b, random_acc=rand_a, probe_sites=sites, probe=probe, n_units=len(names),
        prune_counts=counts, prune=prune, revive_curve=curves["revive"], scratch_curve=curves["scratch"],
        revive_steps=_first_reaching(curves["revive"], cfg.revive_acc),
        scratch_steps=_first_reaching(curves["scratch"], cfg.revive_acc), seconds=seconds)


# ---- findings and the report fragment --------------------------------------------------------------------
