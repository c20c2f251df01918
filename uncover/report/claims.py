"""Wording chosen by the data: every qualitative word a report prints as a finding comes from here.

A report sentence that states a result ("agrees", "raises", "forms", "peaks at the interpolation
threshold") must follow from the computed numbers, and say the opposite or "no clear effect" when they
don't. The rule for a section author:

1. Name the cut-off next to the claim, as a module constant: ``AGREE = Threshold("agree", 0.7, "Pearson r")``.
2. Pick the words with one of the functions below, never with an f-string alone. Each returns a
   :class:`Claim`: ``.holds`` (True / False / None for "no clear effect"), ``.word`` (the chosen words)
   and ``.test`` (the test in words, e.g. "Pearson r ≥ 0.7"); ``str(claim)`` is ``"word (test)"``, so the
   threshold is printed where the reader needs it.

   - ``at_least(value, thr, yes, no)``: a level (correlation, accuracy, Gini ...) against a cut-off.
   - ``at_most(value, thr, yes, no)``: the same for quantities that must be small (an error, a gap).
   - ``direction(delta, thr, up, down, flat)``: a change with a minimum size; ``flat`` in between.
   - ``ci_direction(samples, up, down, flat)``: a noisy change over seeds or prompts: up / down only when
     the 95% confidence interval of the mean excludes 0.
3. Test it: feed the render step data for which the claim fails and check the words change; and compute the
   section on a tiny model (``tests/report_models.py``: a tiny random Llama whose tokenizer knows the report's
   words) and check every rendered number against the data (``tests/report_numbers.py``:
   ``unmatched_numbers(page, data, derived, thresholds(module))`` must be empty).
4. A section that raises fails the ``uncover report`` command (exit 1, listed on the terminal) after the page
   is written; don't catch an error to print a finding instead.

Thresholds are conventions of this library (stated with each claim), not results.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

NO_CLEAR_EFFECT = "no clear effect"


@dataclass(frozen=True)
class Threshold:
    """A named cut-off: ``value`` of the quantity ``what`` (with its ``unit``, if any)."""

    name: str
    value: float
    what: str
    unit: str = ""

    def fmt(self) -> str:
        sep = "" if self.unit in ("", "%") else " "
        return f"{self.value:g}{sep}{self.unit}"


@dataclass(frozen=True)
class Claim:
    """A chosen wording: ``holds`` is True (the claim), False (its opposite) or None (no clear effect)."""

    holds: bool | None
    word: str
    test: str

    def __str__(self) -> str:
        return f"{self.word} ({self.test})"


def _finite(value: float) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def at_least(value: float, thr: Threshold, yes: str, no: str) -> Claim:
    """``yes`` when ``value >= thr.value``, else ``no`` (also for NaN / None: nothing was shown)."""
    if not _finite(value):
        return Claim(False, no, f"{thr.what} not measured")
    ok = value >= thr.value
    return Claim(ok, yes if ok else no, f"{thr.what} {'≥' if ok else '<'} {thr.fmt()}")


def at_most(value: float, thr: Threshold, yes: str, no: str) -> Claim:
    """``yes`` when ``value <= thr.value``, else ``no`` (also for NaN / None)."""
    if not _finite(value):
        return Claim(False, no, f"{thr.what} not measured")
    ok = value <= thr.value
    return Claim(ok, yes if ok else no, f"{thr.what} {'≤' if ok else '>'} {thr.fmt()}")


def direction(delta: float, thr: Threshold, up: str, down: str, flat: str = NO_CLEAR_EFFECT) -> Claim:
    """``up`` when ``delta >= thr.value``, ``down`` when ``delta <= -thr.value``, else ``flat`` (holds=None).
    ``thr.value`` is the smallest change the section counts as an effect; ``holds`` is True for ``up``."""
    if not _finite(delta):
        return Claim(None, flat, f"{thr.what} not measured")
    if delta >= thr.value:
        return Claim(True, up, f"{thr.what} ≥ +{thr.fmt()}")
    if delta <= -thr.value:
        return Claim(False, down, f"{thr.what} ≤ -{thr.fmt()}")
    return Claim(None, flat, f"|{thr.what}| < {thr.fmt()}")


def mean_ci(samples: Sequence[float], z: float = 1.96) -> tuple[float, float, float]:
    """(mean, low, high): the normal-approximation 95% confidence interval of the mean (z=1.96).
    One sample gives an infinitely wide interval: a single draw cannot show an effect."""
    xs = [float(x) for x in samples if _finite(x)]
    if not xs:
        return float("nan"), float("-inf"), float("inf")
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, float("-inf"), float("inf")
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    half = z * sd / math.sqrt(len(xs))
    return mean, mean - half, mean + half


def ci_direction(samples: Sequence[float], what: str, up: str, down: str, flat: str = NO_CLEAR_EFFECT) -> Claim:
    """``up`` when the 95% CI of the mean of ``samples`` lies above 0, ``down`` when below, else ``flat``."""
    mean, lo, hi = mean_ci(samples)
    n = sum(1 for x in samples if _finite(x))
    ci = f"95% CI of the mean {what} over {n}: [{lo:.3g}, {hi:.3g}]"
    if lo > 0:
        return Claim(True, up, ci)
    if hi < 0:
        return Claim(False, down, ci)
    return Claim(None, flat, ci + " includes 0")
