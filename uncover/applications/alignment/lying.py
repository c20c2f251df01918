"""Lying heads (Campbell et al. 2023): where an instruction to lie turns true answers into false ones.

1. **Conditions.** Each condition of ``uncover.data.lying`` (chat template with an honest / lying system
   instruction, optionally worked examples; or a plain few-shot prompt) asks ``n`` balanced true/false
   statements twice, honestly and lying. The answer is read at the last position as the logit
   difference d = logit(True) - logit(False) (single tokens, checked). Accuracy is *calibrated*
   (Burns et al. 2022): the half of the statements with the largest d answer True, so a global
   True/False preference does not count as knowledge; the raw accuracy (d > 0) is kept beside it. The
   model *follows* a condition when honest accuracy >= ``HONEST_MIN`` and lying accuracy <= ``LYING_MAX``;
   the first condition that passes is analysed (if none passes, the one with the widest honest - lying
   accuracy gap, ties broken by the metric below, flagged ``followed=False``).
2. **Probes** (``uncover.representations.probes.layer_sweep``) separate honest from lying runs at the
   last position: per layer on ``hook_resid_post`` and per head on ``attn.hook_z``; held-out accuracy.
3. **Patching** (``uncover.core.variants``): the metric is the truth-signed logit difference
   m = mean_i (2 y_i - 1) d_i (a global preference cancels on balanced data), normalised so that 0 is
   the lying run and 1 the honest run. Every head gets an attribution-patching estimate (one forward and
   backward); the ``candidates`` heads with the largest estimates are activation-patched one at a time
   (``hook_z`` of that head from the honest run into the lying run, at all or only the last position);
   then the measured heads, best first, are patched jointly in growing sets (sizes ``SCHEDULE``, then
   every size between the last failing and the first restoring one) until the calibrated accuracy
   recovers ``RESTORE`` of the honest - lying accuracy gap. All heads patched at once is the ceiling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor

from uncover.core import interventions as iv
from uncover.core.results import Progress, Result, no_progress
from uncover.core.variants import attribution, base_run, run_variants
from uncover.data.lying import ANSWERS, CONDITIONS, Condition, lying_prompts, lying_statements
from uncover.errors import UncoverError

if TYPE_CHECKING:
    from uncover.core.model import Model

# cut-offs of the choices; uncover/applications/report.py prints each with the claim it decides
HONEST_MIN = 0.7  # honest accuracy at least
LYING_MAX = 0.3  # lying accuracy at most
RESTORE = 0.8  # share of the honest - lying accuracy gap a head set must restore
READS = 0.9  # probe held-out accuracy that counts as reading the condition
POSITIONS = ("all", "last")
ATTRIBUTION_ROWS = 8  # statements per backward pass: its saved activations are the section's peak memory
# joint head-set sizes tried in turn (then every size between the last failing and the first restoring one)
SCHEDULE = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


# ---- reading answers ---------------------------------------------------------------------------------
def answer_ids(model: "Model", condition: Condition) -> tuple[int, int]:
    """Token ids of the condition's True and False answer words; each must be a single token."""
    words = ANSWERS[condition.format]
    ids = [model.tokenizer.encode(w, add_special_tokens=False) for w in words]
    bad = [f"{w!r} -> {len(i)} tokens" for w, i in zip(words, ids) if len(i) != 1]
    if bad:
        raise UncoverError(f"the answer words of condition {condition.name!r} must be single tokens in "
                           f"{model.name}'s tokenizer: {', '.join(bad)}; use a condition of another format")
    unk = getattr(model.tokenizer, "unk_token_id", None)
    unknown = [w for w, i in zip(words, ids) if unk is not None and i[0] == unk]
    if unknown or ids[0] == ids[1]:
        raise UncoverError(f"the answer words {words} are unknown to {model.name}'s tokenizer or the same token "
                           f"({', '.join(map(repr, unknown)) or 'identical ids'}); the model cannot answer them")
    return ids[0][0], ids[1][0]


def chat_function(model: "Model"):
    """The model's chat template as ``messages -> prompt text`` (ends where the assistant answers)."""
    tok = model.tokenizer
    if not getattr(tok, "chat_template", None):
        raise UncoverError(f"{model.name}'s tokenizer has no chat template; use conditions of format 'plain' "
                           "(uncover.data.lying.Condition(..., format='plain', ...)) or an Instruct model")
    return lambda msgs: tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def pair_tokens(model: "Model", honest: Sequence[str], lying: Sequence[str]) -> tuple[Tensor, Tensor, Tensor | None]:
    """(honest tokens, lying tokens, shared attention mask or None), both [n, pos], left-padded alike.

    Raises naming the pairs whose two prompts differ in token count (patching needs equal lengths).
    """
    if len(honest) != len(lying) or not honest:
        raise UncoverError(f"{len(honest)} honest and {len(lying)} lying prompts; pass one pair per statement")
    lengths = [(len(model.to_tokens(h)[0]), len(model.to_tokens(l)[0])) for h, l in zip(honest, lying)]
    diff = [(i, a, b) for i, (a, b) in enumerate(lengths) if a != b]
    if diff:
        shown = "; ".join(f"pair {i}: honest {a} vs lying {b} tokens" for i, a, b in diff[:4])
        raise UncoverError(f"{len(diff)} honest/lying pairs differ in token count ({shown}); make the honest and "
                           "lying instructions the same number of tokens (uncover.data.lying.SYSTEM / HEADER)")
    h, mask = model.to_tokens(list(honest), return_mask=True)
    l, _ = model.to_tokens(list(lying), return_mask=True)
    return h, l, (None if bool(mask.all()) else mask)


def answer_gap(logits: Tensor, ids: tuple[int, int]) -> Tensor:
    """logit(True) - logit(False) at the last position: logits [n, pos, vocab] -> [n] float32 (CPU)."""
    last = logits[:, -1].float()
    return (last[:, ids[0]] - last[:, ids[1]]).cpu()


def calibrated_accuracy(gap: Tensor, labels: Tensor) -> float:
    """Share correct when the half of the statements with the largest ``gap`` [n] answer True (balanced)."""
    n = len(labels)
    pred = torch.zeros(n, dtype=torch.long)
    pred[gap.argsort(descending=True, stable=True)[: n // 2]] = 1
    return int((pred == labels.cpu()).sum()) / n


def raw_accuracy(gap: Tensor, labels: Tensor) -> float:
    """Share correct when the answer is True exactly where logit(True) > logit(False)."""
    return int(((gap > 0).long() == labels.cpu()).sum()) / len(labels)


def signed_metric(gap: Tensor, labels: Tensor) -> Tensor:
    """mean_i (2 y_i - 1) gap_i: positive when True is preferred on true statements (scalar)."""
    return ((2 * labels.to(gap.device, gap.dtype) - 1) * gap).mean()


def follows(honest_acc: float, lying_acc: float) -> bool:
    """The stated test of following the lying instruction: honest >= HONEST_MIN and lying <= LYING_MAX."""
    return honest_acc >= HONEST_MIN and lying_acc <= LYING_MAX


def _labels(statements) -> Tensor:
    return torch.tensor([s.label for s in statements])


@torch.no_grad()
def measure_condition(model: "Model", condition: Condition, n: int = 32, seed: int = 0) -> dict[str, Any]:
    """Honest and lying accuracy (calibrated and raw) of one condition on ``n`` statements (a dict row)."""
    shots, test = lying_statements(condition, n, seed)
    chat = chat_function(model) if condition.format == "chat" else None
    honest, lying = lying_prompts(condition, test, shots, chat)
    ids = answer_ids(model, condition)
    h, l, mask = pair_tokens(model, honest, lying)
    y = _labels(test)
    row: dict[str, Any] = {"name": condition.name, "format": condition.format, "family": condition.family,
                           "shots": condition.shots, "n": n, "tokens": int(h.shape[1])}
    for mode, t in (("honest", h), ("lying", l)):
        gap = answer_gap(model(t, attention_mask=mask, logits_to_keep=1), ids)
        row[f"{mode}_acc"] = calibrated_accuracy(gap, y)
        row[f"{mode}_raw_acc"] = raw_accuracy(gap, y)
        row[f"{mode}_true_share"] = float((gap > 0).float().mean())
        row[f"{mode}_metric"] = float(signed_metric(gap, y))
    row["follows"] = follows(row["honest_acc"], row["lying_acc"])
    return row


# ---- the result --------------------------------------------------------------------------------------
@dataclass
class LyingResult(Result):
    """Lying heads of one model (see the module doc).

    conditions: one dict per condition tried (name, format, family, shots, n, tokens, honest_acc, lying_acc
    calibrated, *_raw_acc, *_true_share, *_metric, follows). chosen: the analysed condition's name; followed: whether
    it passes the test. honest_acc, lying_acc: its calibrated accuracies; metric_honest, metric_lying: its
    truth-signed logit differences. resid_probe [n_layers], head_probe [n_layers, n_heads]: held-out
    probe accuracy honest vs lying. attribution [n_layers, n_heads]: estimated normalised patching
    effect; patch_effect, patch_accuracy [n_layers, n_heads]: measured normalised effect and calibrated
    accuracy of patching each candidate head alone (NaN where not measured). order: the measured heads,
    best first. set_sizes, set_accuracy, set_effect: the first k of ``order`` patched jointly, for the sizes
    tried (increasing).
    all_heads_accuracy, all_heads_effect: every head patched. restored_k: the smallest k that restores
    (``RESTORE``), or None. meta: n, probe, positions, seed, candidates.
    """

    conditions: list[dict]
    chosen: str
    followed: bool
    honest_acc: float
    lying_acc: float
    metric_honest: float
    metric_lying: float
    resid_probe: Tensor
    head_probe: Tensor
    attribution: Tensor
    patch_effect: Tensor
    patch_accuracy: Tensor
    order: list[tuple[int, int]]
    set_sizes: list[int]
    set_accuracy: list[float]
    set_effect: list[float]
    all_heads_accuracy: float
    all_heads_effect: float
    restored_k: int | None
    meta: dict = field(default_factory=dict)

    def restored_share(self, accuracy: float) -> float:
        """(accuracy - lying) / (honest - lying); NaN when honest is not above lying (nothing to restore).
        Rounded to 12 digits: accuracies are fractions k / n, and 8/24 - 4/24 over 9/24 - 4/24 is 0.8."""
        gap = self.honest_acc - self.lying_acc
        return round((accuracy - self.lying_acc) / gap, 12) if gap > 0 else float("nan")

    def heads(self, k: int | None = None) -> list[tuple[int, int]]:
        """The first k heads of ``order`` (default: the restoring set, or every measured head)."""
        k = self.restored_k if k is None else k
        return list(self.order if k is None else self.order[:k])


def _restores(result_like: LyingResult, accuracy: float) -> bool:
    share = result_like.restored_share(accuracy)
    return not math.isnan(share) and share >= RESTORE


def _head_edits(z_src: dict[str, Tensor], heads: Sequence[tuple[int, int]], positions: Any) -> list:
    """One hook_z patch per head: that head's slice from the honest run (positions: None = all, [-1])."""
    return [(f"blocks.{l}.attn.hook_z", iv.patch(z_src[f"blocks.{l}.attn.hook_z"], heads=[h], positions=positions))
            for l, h in heads]


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _choose(rows: list[dict]) -> int:
    for i, r in enumerate(rows):
        if r["follows"]:
            return i
    return max(range(len(rows)), key=lambda i: (rows[i]["honest_acc"] - rows[i]["lying_acc"],
                                                rows[i]["honest_metric"] - rows[i]["lying_metric"]))


def lying_heads(model: "Model", conditions: Sequence[Condition] = CONDITIONS, n: int = 24, candidates: int | None = 12,
                max_heads: int | None = None, probe: str = "mass_mean", positions: str = "all", seed: int = 0,
                batch_size: int = 256, progress: Progress = no_progress) -> LyingResult:
    """Measure each condition, choose one, probe and patch its heads (see the module doc).

    n: statements per condition (even). candidates: heads activation-patched alone, the top ones by
    attribution (None: every head). max_heads: the largest joint set tried (default: all candidates).
    probe: a kind of ``uncover.representations.probes.PROBES``. positions: patch "all" positions or the
    "last" one. batch_size: rows (prompts x variants) per forward.
    """
    from uncover.representations.probes import layer_sweep

    if not conditions:
        raise UncoverError("no conditions given: pass at least one uncover.data.lying.Condition")
    if positions not in POSITIONS:
        raise UncoverError(f"positions must be one of {POSITIONS}, not {positions!r}")
    if candidates is not None and candidates < 1:
        raise UncoverError(f"candidates must be at least 1 head (or None for every head), got {candidates}")
    rows = [measure_condition(model, c, n, seed) for c in progress(list(conditions), "honest / lying conditions")]
    chosen = list(conditions)[_choose(rows)]
    shots, test = lying_statements(chosen, n, seed)
    honest, lying = lying_prompts(chosen, test, shots, chat_function(model) if chosen.format == "chat" else None)
    ids = answer_ids(model, chosen)
    h_tok, l_tok, mask = pair_tokens(model, honest, lying)
    y = _labels(test)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    z_names = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    r_names = [f"blocks.{l}.hook_resid_post" for l in range(L)]
    with torch.no_grad():
        h_logits, h_cache = model.run_with_cache(h_tok, names=z_names + r_names, attention_mask=mask, logits_to_keep=1)
    base = base_run(model, l_tok, mask, names=z_names + r_names, logits_to_keep=1)
    gap_h, gap_l = answer_gap(h_logits, ids), answer_gap(base.output, ids)
    m_h, m_l = float(signed_metric(gap_h, y)), float(signed_metric(gap_l, y))
    if abs(m_h - m_l) < 1e-9:
        raise UncoverError(f"the honest and lying runs of {chosen.name!r} give the same answers (metric {m_h:.4g}); "
                           "patching has nothing to restore: try another condition")
    acc_h, acc_l = calibrated_accuracy(gap_h, y), calibrated_accuracy(gap_l, y)

    # probes: honest (1) vs lying (0) at the last position
    labels = torch.cat([torch.ones(n), torch.zeros(n)]).long()
    resid = torch.stack([torch.cat([h_cache[r][:, -1], base.cache[r][:, -1]]).float().cpu() for r in r_names])
    zs = torch.stack([torch.cat([h_cache[z][:, -1], base.cache[z][:, -1]]).float().cpu() for z in z_names])
    resid_probe = layer_sweep(resid, labels, probe, seed=seed).test_accuracy
    per_head = zs.permute(0, 2, 1, 3).reshape(L * H, 2 * n, -1)  # [layer * head, 2n, d_head]
    head_probe = layer_sweep(per_head, labels, probe, seed=seed).test_accuracy.reshape(L, H)

    # attribution estimate for every head, then activation patching of the candidates
    pos = None if positions == "all" else [-1]
    z_src = {z: h_cache[z] for z in z_names}
    attr = torch.zeros(L, H)
    for part in _chunks(n, ATTRIBUTION_ROWS):  # the metric is a mean over statements: chunks add up
        share = (part.stop - part.start) / n
        metric = lambda logits, part=part, share=share: share * signed_metric(  # noqa: E731
            logits[:, -1, ids[0]].float() - logits[:, -1, ids[1]].float(), y[part])
        _, eff = attribution(model, l_tok[part], metric, z_names, {z: s[part] for z, s in z_src.items()},
                             attention_mask=None if mask is None else mask[part], logits_to_keep=1)
        attr += torch.stack([(eff[z] if pos is None else eff[z][:, -1:]).sum(dim=(0, 1, 3)).cpu() for z in z_names])
    attr = attr / (m_h - m_l)
    flat = attr.flatten().argsort(descending=True).tolist()
    picked = [divmod(i, H) for i in (flat if candidates is None else flat[:candidates])]

    def read(logits: Tensor, _: dict) -> Tensor:
        return answer_gap(logits, ids)

    gaps = run_variants(model, base, [_head_edits(z_src, [hd], pos) for hd in picked], read, logits_to_keep=1,
                        batch_size=batch_size, progress=progress, description="patching heads honest -> lying")
    effect = torch.full((L, H), float("nan"))
    accuracy = torch.full((L, H), float("nan"))
    for (l, hh), g in zip(picked, gaps):
        effect[l, hh] = (float(signed_metric(g, y)) - m_l) / (m_h - m_l)
        accuracy[l, hh] = calibrated_accuracy(g, y)
    order = sorted(picked, key=lambda hd: -float(effect[hd]))
    result = LyingResult(rows, chosen.name, bool(rows[list(conditions).index(chosen)]["follows"]), acc_h, acc_l,
                         m_h, m_l, resid_probe, head_probe, attr, effect, accuracy, order, [], [], [],
                         float("nan"), float("nan"), None,
                         {"n": n, "probe": probe, "positions": positions, "seed": seed, "candidates": candidates})

    # the all-heads ceiling and growing joint sets, stopping at the first that restores
    every = [(z, iv.patch(z_src[z], positions=pos)) for z in z_names]  # all heads of every layer
    (all_gap,) = run_variants(model, base, [every], read, logits_to_keep=1, batch_size=batch_size)
    result.all_heads_accuracy = calibrated_accuracy(all_gap, y)
    result.all_heads_effect = (float(signed_metric(all_gap, y)) - m_l) / (m_h - m_l)
    top = min(len(order), max_heads or len(order))
    measured: dict[int, tuple[float, float]] = {}

    def measure(ks: list[int]) -> None:
        found = run_variants(model, base, [_head_edits(z_src, order[:k], pos) for k in ks], read,
                             logits_to_keep=1, batch_size=batch_size)
        for k, g in zip(ks, found):
            measured[k] = (calibrated_accuracy(g, y), (float(signed_metric(g, y)) - m_l) / (m_h - m_l))

    sizes = [k for k in SCHEDULE if k < top] + [top]
    steps = progress(sizes, "patching growing head sets")
    for i, k in enumerate(steps):
        measure([k])
        if _restores(result, measured[k][0]):
            below = sizes[i - 1] if i else 0
            if k - below > 1:  # every size between the last failing and the first restoring one
                measure(list(range(below + 1, k)))
            break
    for k in sorted(measured):
        result.set_sizes.append(k)
        result.set_accuracy.append(measured[k][0])
        result.set_effect.append(measured[k][1])
    result.restored_k = next((k for k in sorted(measured) if _restores(result, measured[k][0])), None)
    return result
