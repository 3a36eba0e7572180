"""Statistics of the comparison: confidence intervals for accuracy and a paired test between methods.

Why these choices (the comparison's statistics, in one place):

* one seed: an accuracy is ``x`` correct of ``n`` test images; its 95% interval is Wilson's score
  interval (well behaved near 0 and 1, unlike the normal/Wald interval);
* several seeds (each a full retrain: init, data order, training and test channel draws): the
  mean of the per-seed accuracies with a Student-t 95% interval over seeds (``df = seeds - 1``),
  which covers training variance as well as test-set sampling;
* RKD-SC vs a baseline: McNemar's test on per-image correctness over the same test images and
  the same channel draws (the sweep seeds every cell's noise identically for every method).
  Over several seeds the discordant counts are pooled (``b = sum b_s``, ``c = sum c_s``) and one
  exact mid-p McNemar test is run on the pooled counts: under "no difference" every discordant
  image is a fair coin in every seed, so the pooled count is Binomial(b + c, 1/2). It conditions
  on the trained models (training variance is in the t interval, not in this p-value); a paired t
  over the seed means is reported beside it for that reason. Mid-p is less conservative than the
  exact p and keeps close to the nominal level.

* the verdict over seeds (``rkd.evaluation.verdicts``): one pre-specified summary per method pair and
  (channel, k), one-sided paired t tests over seeds on its differences (non-inferiority at a margin,
  superiority, inferiority), Holm-adjusted across the family of comparisons. It has training variance
  in it, unlike the per-cell McNemar tests, which stay descriptive.

No scipy: the t quantiles for ``df <= 30`` are tabulated, above that a Cornish-Fisher expansion; the t
distribution function is the exact finite series for integer degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

ALPHA = 0.05
Z95 = NormalDist().inv_cdf(1 - ALPHA / 2)

# Student-t 0.975 quantiles, df = 1..30
_T975 = (
    12.7062,
    4.3027,
    3.1824,
    2.7764,
    2.5706,
    2.4469,
    2.3646,
    2.3060,
    2.2622,
    2.2281,
    2.2010,
    2.1788,
    2.1604,
    2.1448,
    2.1314,
    2.1199,
    2.1098,
    2.1009,
    2.0930,
    2.0860,
    2.0796,
    2.0739,
    2.0687,
    2.0639,
    2.0595,
    2.0555,
    2.0518,
    2.0484,
    2.0452,
    2.0423,
)


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple:
    """Wilson score interval for a proportion ``correct / n``: ``(low, high)``."""
    if n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"arguments 'correct'/'n' = {correct}/{n} are invalid: expected 0 <= correct <= n, n >= 1")
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"argument 'df' = {df} is invalid: expected an integer >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z95  # Cornish-Fisher: error < 1e-4 for df > 30
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_interval(values: Sequence[float]) -> tuple:
    """Mean over seeds and its t-based 95% interval ``(mean, low, high)``; the interval is None for one value."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("argument 'values' is empty: expected one accuracy per seed")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = t_quantile_975(len(values) - 1) * sd / math.sqrt(len(values))
    return mean, mean - half, mean + half


def accuracy_interval(accuracies: Sequence[float], n_test: int) -> dict:
    """Mean accuracy over seeds with its 95% interval: t over seeds when >= 2 seeds, else Wilson."""
    mean, low, high = mean_interval(accuracies)
    how = "t over seeds"
    if low is None:
        low, high = wilson_interval(int(round(mean * n_test)), n_test)
        how = "wilson"
    return {"mean": mean, "low": low, "high": high, "seeds": len(accuracies), "interval": how}


def _log_binom_pmf(k: int, n: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2.0)


def mcnemar(b: int, c: int) -> dict:
    """Exact and mid-p two-sided McNemar test on discordant counts.

    ``b``: images method A got right and B wrong; ``c``: the reverse. Under H0 ``b ~ Bin(b + c, 1/2)``.
    """
    if b < 0 or c < 0:
        raise ValueError(f"arguments 'b'/'c' = {b}/{c} are invalid: expected counts >= 0")
    n, low = b + c, min(b, c)
    if n == 0:
        return {"b": b, "c": c, "p_exact": 1.0, "p_mid": 1.0}
    logs = [_log_binom_pmf(i, n) for i in range(low + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)  # P(X <= low)
    point = math.exp(logs[-1])  # P(X = low)
    exact = min(1.0, 2 * tail)
    mid = min(1.0, 2 * (tail - 0.5 * point))
    return {"b": b, "c": c, "p_exact": exact, "p_mid": mid}


def discordant(a_correct, b_correct) -> tuple:
    """``(b, c)`` from two equally long per-image correctness vectors (bools, same images and draws)."""
    a, b_ = [bool(v) for v in a_correct], [bool(v) for v in b_correct]
    if len(a) != len(b_):
        raise ValueError(f"per-image correctness lengths differ ({len(a)} vs {len(b_)}): expected the same test images")
    return sum(x and not y for x, y in zip(a, b_)), sum(y and not x for x, y in zip(a, b_))


def paired_t(differences: Sequence[float]) -> dict | None:
    """Paired t over seeds of (A - B) accuracy differences; None with fewer than 2 seeds."""
    diffs = [float(d) for d in differences]
    if len(diffs) < 2:
        return None
    mean, low, high = mean_interval(diffs)
    return {"mean_difference": mean, "low": low, "high": high, "significant": low > 0 or high < 0}


def verdict(mean_a: float, mean_b: float, p_value: float, alpha: float = ALPHA) -> str:
    """``win`` (A significantly better), ``loss`` (significantly worse) or ``tie`` (not significant)."""
    if p_value < alpha and mean_a > mean_b:
        return "win"
    if p_value < alpha and mean_a < mean_b:
        return "loss"
    return "tie"


def two_proportion_p(correct_a: int, correct_b: int, n: int) -> float:
    """Unpaired two-sided z-test p-value (the fallback where per-image correctness was not kept)."""
    pooled = (correct_a + correct_b) / (2 * n)
    se = math.sqrt(pooled * (1 - pooled) * 2 / n)
    if se == 0.0:
        return 1.0  # both all right or all wrong: no evidence of a difference
    return 2 * (1 - NormalDist().cdf(abs(correct_a - correct_b) / n / se))


def t_cdf(t: float, df: int) -> float:
    """``P(T <= t)`` for Student's t with an integer ``df``: the finite series in ``theta = atan(t / sqrt(df))``
    (odd ``df``: ``2/pi (theta + sin theta (cos theta + 2/3 cos^3 theta + ...))``; even ``df``:
    ``sin theta (1 + 1/2 cos^2 theta + 3/8 cos^4 theta + ...)``), exact up to rounding."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"argument 'df' = {df!r} is invalid: expected an integer >= 1")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:
        term = series = math.cos(theta)
        for j in range(1, (df - 3) // 2 + 1):
            term *= c2 * (2 * j) / (2 * j + 1)
            series += term
        signed = 2 / math.pi * theta if df == 1 else 2 / math.pi * (theta + s * series)
    else:
        term = series = 1.0
        for j in range(1, (df - 2) // 2 + 1):
            term *= c2 * (2 * j - 1) / (2 * j)
            series += term
        signed = s * series
    return min(1.0, max(0.0, 0.5 + 0.5 * signed))


def holm(p_values: Sequence[float]) -> list:
    """Holm's step-down adjustment: ``p_(i) -> max_{j <= i} min(1, (m - j + 1) p_(j))``, in the input order.

    Rejecting where the adjusted p is below alpha keeps the chance of any false rejection in the family
    at most alpha, whatever the dependence between the tests.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def paired_shift_tests(differences: Sequence[float], margin: float) -> dict | None:
    """One-sided paired t tests over seeds on the differences ``A - B`` (None with fewer than 2 seeds).

    ``p_noninferior``: H0 ``mean <= -margin``; ``p_superior``: H0 ``mean <= 0``; ``p_inferior``: H0 ``mean >= 0``;
    with the mean and its two-sided 95% interval. Zero spread (equal differences, up to rounding): the tests
    decide by the sign alone.
    """
    diffs = [float(d) for d in differences]
    if len(diffs) < 2:
        return None
    n = len(diffs)
    mean, low, high = mean_interval(diffs)
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)
    if se < 1e-12 * max(1.0, abs(mean)):
        se = 0.0  # rounding, not spread: equal differences

    def upper_tail(shift: float) -> float:  # P(T >= (mean + shift) / se) under H0 mean = -shift
        if se == 0.0:
            return 0.0 if mean + shift > 0 else 1.0
        return 1.0 - t_cdf((mean + shift) / se, n - 1)

    return {
        "mean_difference": mean,
        "low": low,
        "high": high,
        "seeds": n,
        "p_noninferior": upper_tail(margin),
        "p_superior": upper_tail(0.0),
        "p_inferior": 1.0 - upper_tail(0.0) if se > 0 else (0.0 if mean < 0 else 1.0),
    }
