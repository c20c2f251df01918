"""The claim helpers every report section words its findings with: each branch, the stated test, NaN."""
import math

import pytest

from uncover.report import claims as C

THR = C.Threshold("t", 0.5, "score")
DROP = C.Threshold("d", 5, "change", "%")


def test_levels_pick_the_words_and_state_the_test():
    assert str(C.at_least(0.7, THR, "agrees", "does not agree")) == "agrees (score ≥ 0.5)"
    assert str(C.at_least(0.3, THR, "agrees", "does not agree")) == "does not agree (score < 0.5)"
    assert C.at_least(0.5, THR, "y", "n").holds is True                       # the cut-off itself counts
    assert str(C.at_most(0.3, THR, "equals", "differs")) == "equals (score ≤ 0.5)"
    assert str(C.at_most(0.7, THR, "equals", "differs")) == "differs (score > 0.5)"
    for claim in (C.at_least(float("nan"), THR, "y", "n"), C.at_most(None, THR, "y", "n")):
        assert claim.holds is False and claim.word == "n" and claim.test == "score not measured"
    assert DROP.fmt() == "5%" and C.Threshold("x", 0.1, "loss", "nats").fmt() == "0.1 nats"


def test_direction_has_a_dead_band():
    assert (C.direction(6, DROP, "up", "down").word, C.direction(6, DROP, "up", "down").test) == ("up", "change ≥ +5%")
    assert C.direction(-6, DROP, "up", "down").holds is False and C.direction(-6, DROP, "up", "down").word == "down"
    flat = C.direction(4.9, DROP, "up", "down")
    assert flat.holds is None and flat.word == C.NO_CLEAR_EFFECT and flat.test == "|change| < 5%"
    assert C.direction(float("nan"), DROP, "up", "down", "flat").word == "flat"


def test_confidence_interval_by_hand():
    mean, lo, hi = C.mean_ci([1.0, 2.0, 3.0])
    half = 1.96 * 1.0 / math.sqrt(3)                                           # sample sd of 1, 2, 3 is 1
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert C.mean_ci([4.0])[1:] == (float("-inf"), float("inf"))            # one draw shows no effect
    up = C.ci_direction([1.0, 2.0, 3.0], "gain", "raises", "lowers")
    assert up.holds is True and up.word == "raises" and "over 3: [0.868, 3.13]" in up.test
    assert C.ci_direction([-1.0, -2.0, -3.0], "gain", "raises", "lowers").word == "lowers"
    noisy = C.ci_direction([-1.0, 2.0, 0.5, float("nan")], "gain", "raises", "lowers")
    assert noisy.holds is None and noisy.word == C.NO_CLEAR_EFFECT and noisy.test.endswith("includes 0")
    assert "over 3:" in noisy.test                                             # NaN draws are left out
