"""Training tasks for the Trainer: modular arithmetic and induction sequences."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uncover.dynamics.data import ModularData, repeated_sequences
from uncover.dynamics.models import ToyTransformer


def answer_logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Logits at the answer ('=') position, [batch, n_classes], for a ToyTransformer or a ModularMLP."""
    if isinstance(model, ToyTransformer):
        return model(tokens, last_only=True).logits[:, -1]
    return model(tokens)


class ModularTask:
    """Cross-entropy on the answer token of a ``ModularData`` split.

    ``evaluate`` runs one batched forward over every pair and reports train/test loss and accuracy; with
    corrupted labels it adds accuracy on the corrupted training pairs against the noisy labels
    (``corrupt_mem_acc``, memorisation) and against the true labels (``corrupt_true_acc``, inversion).
    """

    def __init__(self, data: ModularData, device: torch.device | str = "cpu"):
        self.data = data
        self.to(device)

    def to(self, device: torch.device | str) -> "ModularTask":
        data = self.data
        self.tokens = data.tokens.to(device)
        self.labels = data.labels.to(device)
        self.clean_labels = data.clean_labels.to(device)
        self.train_idx = data.train_idx.to(device)
        self.test_idx = data.test_idx.to(device)
        self.corrupt_idx = data.corrupted.nonzero().squeeze(1).to(device)
        self.train_tokens, self.train_labels = self.tokens[self.train_idx], self.labels[self.train_idx]
        return self

    def batch(self, step: int, batch_size: int | None, generator: torch.Generator):
        if batch_size is None or batch_size >= len(self.train_idx):
            return self.train_tokens, self.train_labels
        rows = torch.randint(0, len(self.train_idx), (batch_size,), generator=generator).to(self.tokens.device)
        return self.train_tokens[rows], self.train_labels[rows]

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        tokens, labels = batch
        return F.cross_entropy(answer_logits(model, tokens), labels)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        logits = answer_logits(model, self.tokens)
        losses = F.cross_entropy(logits, self.labels, reduction="none")
        correct = (logits.argmax(-1) == self.labels).float()
        row = {
            "train_loss": float(losses[self.train_idx].mean()), "test_loss": float(losses[self.test_idx].mean()),
            "train_acc": float(correct[self.train_idx].mean()), "test_acc": float(correct[self.test_idx].mean()),
        }
        if len(self.corrupt_idx):
            pred = logits[self.corrupt_idx].argmax(-1)
            row["corrupt_mem_acc"] = float((pred == self.labels[self.corrupt_idx]).float().mean())
            row["corrupt_true_acc"] = float((pred == self.clean_labels[self.corrupt_idx]).float().mean())
        return row


class InductionTask:
    """Next-token prediction on sequences ending in a repeated segment (Olsson et al. 2022).

    Training draws fresh sequences each step from the trainer's generator, with the repeat's period
    varying per sequence (so position alone cannot predict it); evaluation uses a fixed batch whose second
    half repeats the first. ``evaluate`` reports the loss,
    the in-context-learning score (mean loss over the last quarter of positions minus the mean over the
    first quarter; negative once the repeat is exploited), and per-head previous-token and induction
    scores on a fixed held-out batch (see ``uncover.dynamics.induction``).
    """

    def __init__(self, d_vocab: int, seq_len: int, n_eval: int = 128, seed: int = 0,
                 device: torch.device | str = "cpu"):
        self.d_vocab, self.seq_len, self.device = d_vocab, seq_len, torch.device(device)
        self.eval_tokens = repeated_sequences(n_eval, seq_len, d_vocab, seed=seed + 10_000).to(self.device)

    def to(self, device: torch.device | str) -> "InductionTask":
        self.device = torch.device(device)
        self.eval_tokens = self.eval_tokens.to(self.device)
        return self

    def batch(self, step: int, batch_size: int | None, generator: torch.Generator) -> torch.Tensor:
        n = batch_size or 64
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return repeated_sequences(n, self.seq_len, self.d_vocab, seed=seed, vary_period=True).to(self.device)

    def loss(self, model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        logits = model(tokens).logits[:, :-1]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        from uncover.dynamics.induction import head_scores, icl_score, per_position_loss

        losses = per_position_loss(model, self.eval_tokens)
        prev, induction = head_scores(model, self.eval_tokens)
        return {
            "loss": float(losses.mean()), "icl_score": icl_score(losses),
            "prev_token_score": float(prev.max()), "induction_score": float(induction.max()),
            "prev_token_scores": prev.flatten().tolist(), "induction_scores": induction.flatten().tolist(),
        }
