"""The comparison's statistics: intervals, McNemar (exact and mid-p), verdicts; checked by hand."""

import math

import pytest

from rkd.evaluation.stats import (
    accuracy_interval,
    discordant,
    mcnemar,
    mean_interval,
    paired_t,
    t_quantile_975,
    two_proportion_p,
    verdict,
    wilson_interval,
)


def test_wilson_interval_hand_values():
    # 8 of 10: centre (0.8 + 1.96^2/20) / (1 + 1.96^2/10); textbook value (0.490, 0.943)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 20)[0] == pytest.approx(0.0, abs=1e-12) and wilson_interval(20, 20)[1] == pytest.approx(
        1.0
    )
    # 2000 images at 90%: half-width ~ 1.96 * sqrt(0.09 / 2000) = 1.31 points
    low, high = wilson_interval(1800, 2000)
    assert (high - low) / 2 == pytest.approx(1.96 * math.sqrt(0.09 / 2000), rel=0.02)
    with pytest.raises(ValueError, match="correct"):
        wilson_interval(11, 10)


def test_t_interval_over_seeds():
    assert t_quantile_975(2) == pytest.approx(4.3027) and t_quantile_975(1000) == pytest.approx(1.9623, abs=1e-3)
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=1e-3)
    mean, low, high = mean_interval([0.80, 0.82, 0.84])  # sd 0.02, se 0.02/sqrt(3)
    assert mean == pytest.approx(0.82)
    assert high - mean == pytest.approx(4.3027 * 0.02 / math.sqrt(3))
    assert mean_interval([0.5])[1:] == (None, None)
    one = accuracy_interval([0.9], 2000)
    assert one["interval"] == "wilson" and one["low"] < 0.9 < one["high"]
    assert accuracy_interval([0.8, 0.82, 0.84], 2000)["interval"] == "t over seeds"


def test_mcnemar_hand_computed():
    # b=0, c=5: P(X<=0) = 1/32; exact = 2/32; mid-p = 2 * (1/32 - 1/64) = 1/32
    r = mcnemar(0, 5)
    assert r["p_exact"] == pytest.approx(2 / 32) and r["p_mid"] == pytest.approx(1 / 32)
    # b=2, c=8: P(X<=2) = (1 + 10 + 45) / 1024
    r = mcnemar(8, 2)
    assert r["p_exact"] == pytest.approx(2 * 56 / 1024) and r["p_mid"] == pytest.approx(2 * (56 - 22.5) / 1024)
    assert mcnemar(0, 0)["p_exact"] == 1.0 and mcnemar(5, 5)["p_exact"] == 1.0
    assert mcnemar(5, 5)["p_mid"] < 1.0  # mid-p subtracts half the point mass even at the centre
    big = mcnemar(5000, 5200)  # large counts: no overflow, symmetric-ish difference is not significant
    assert 0.0 < big["p_mid"] < 1.0
    assert mcnemar(100, 160)["p_mid"] < 0.001
    with pytest.raises(ValueError, match="counts"):
        mcnemar(-1, 2)


def test_discordant_pairs_and_verdicts():
    a = [True, True, False, False, True]
    b = [True, False, True, False, False]
    assert discordant(a, b) == (2, 1)
    with pytest.raises(ValueError, match="lengths"):
        discordant(a, b[:3])
    assert verdict(0.9, 0.8, 0.01) == "win" and verdict(0.8, 0.9, 0.01) == "loss" and verdict(0.8, 0.9, 0.2) == "tie"
    assert paired_t([0.01]) is None
    assert paired_t([0.02, 0.03, 0.025])["significant"] and not paired_t([0.02, -0.03, 0.01])["significant"]
    assert two_proportion_p(1000, 1000, 2000) == pytest.approx(1.0)
    assert two_proportion_p(1900, 1700, 2000) < 1e-6 and two_proportion_p(10, 10, 10) == 1.0
