"""The verdict over seeds: is RKD-SC non-inferior to each comparator, per (channel, CSI, k)?

Pre-specified, for every comparator and every (channel label, k) both were swept at:

* summary: a method's accuracy averaged over every SNR both were swept at (in ``snr_range``), one number
  per training seed;
* test: the per-seed differences RKD-SC - comparator (seeds both have), one-sided paired t tests over
  seeds (``rkd.evaluation.stats.paired_shift_tests``): non-inferiority at ``margin`` (H0: the
  difference <= -margin), superiority (H0: <= 0), inferiority (H0: >= 0), with a two-sided 95% interval;
* family: one comparator's (channel, k) pairs of one kind share a Holm adjustment; the kinds are ``target``
  (channels both methods were trained or designed for), ``outside`` (the other channels) and ``ablations``.
  A family per comparator keeps its verdicts independent of which other methods a report holds; the claim
  "non-inferior to every comparator" needs no adjustment across comparators (it holds only if each does);
* verdict at ``alpha`` on the Holm-adjusted p-values: ``superior``, else ``non-inferior``, else ``inferior``,
  else ``inconclusive``; ``n/a`` with fewer than two shared seeds.

Per-cell McNemar tests (``rkd.evaluation.paired``) condition on the trained models and stay descriptive.
"""

from __future__ import annotations

from rkd.evaluation.stats import ALPHA, holm, paired_shift_tests

SUMMARY = "mean accuracy over every SNR both methods were swept at"
FAMILIES = ("target", "outside", "ablations")
TESTS = ("p_noninferior", "p_superior", "p_inferior")


def per_seed_summary(cells: dict, method: str, label: str, k: int, snrs: list) -> dict:
    """``{seed: mean accuracy over snrs}`` for the seeds that have every one of ``snrs``."""
    by_seed: dict = {}
    for snr in snrs:
        for seed, record, _ in cells.get((method, label, k, snr), []):
            by_seed.setdefault(seed, []).append(record["accuracy"])
    return {seed: sum(v) / len(v) for seed, v in by_seed.items() if len(v) == len(snrs)}


def shared_snrs(cells: dict, a: str, b: str, label: str, k: int, snr_range: tuple) -> list:
    found = {m: {key[3] for key in cells if key[:3] == (m, label, k) and key[3] is not None} for m in (a, b)}
    return sorted(s for s in found[a] & found[b] if snr_range[0] <= s <= snr_range[1])


def pair_row(cells: dict, ours: str, theirs: str, label: str, k: int, margin: float, snr_range: tuple) -> dict | None:
    """One comparison: the summaries per seed, the mean difference with its interval, the raw one-sided p-values."""
    snrs = shared_snrs(cells, ours, theirs, label, k, snr_range)
    if not snrs:
        return None
    mine = per_seed_summary(cells, ours, label, k, snrs)
    other = per_seed_summary(cells, theirs, label, k, snrs)
    seeds = sorted(set(mine) & set(other))
    if not seeds:
        return None
    tests = paired_shift_tests([mine[s] - other[s] for s in seeds], margin)
    return {
        "method": theirs,
        "channel_label": label,
        "k": k,
        "snrs": snrs,
        "seeds": seeds,
        "rkd_sc": sum(mine[s] for s in seeds) / len(seeds),
        "baseline": sum(other[s] for s in seeds) / len(seeds),
        "mean_difference": sum(mine[s] - other[s] for s in seeds) / len(seeds),
        "low": None if tests is None else tests["low"],
        "high": None if tests is None else tests["high"],
        **{name: None if tests is None else tests[name] for name in TESTS},
    }


def _decide(row: dict, alpha: float) -> str:
    if row["p_noninferior"] is None:
        return "n/a"
    if row["p_superior_holm"] < alpha:
        return "superior"
    if row["p_noninferior_holm"] < alpha:
        return "non-inferior"
    return "inferior" if row["p_inferior_holm"] < alpha else "inconclusive"


def adjust_family(rows: list, alpha: float) -> list:
    """Holm-adjust each test's p-values across ``rows`` (those with >= 2 seeds) and add the verdicts."""
    tested = [r for r in rows if r["p_noninferior"] is not None]
    for name in TESTS:
        for row, adjusted in zip(tested, holm([r[name] for r in tested])):
            row[f"{name}_holm"] = adjusted
    for row in rows:
        for name in TESTS:
            row.setdefault(f"{name}_holm", None)
        row["verdict"] = _decide(row, alpha)
    return rows


def seed_verdicts(
    cells: dict,
    trained: dict,
    rkd: str,
    comparators: list,
    margin: float,
    alpha: float = ALPHA,
    snr_range: tuple = (-10.0, 20.0),
) -> dict:
    """Every comparison of RKD-SC with ``comparators`` (a method named ``ablation:*`` is an ablation), by family.

    ``trained``: ``{method: [channel labels it was trained or designed for]}``.
    """
    families: dict = {name: [] for name in FAMILIES}
    pairs = sorted({(key[1], key[2]) for key in cells if key[0] == rkd and key[3] is not None}, key=str)
    mine = set(trained.get(rkd) or [])
    for method in comparators:
        for label, k in pairs:
            row = pair_row(cells, rkd, method, label, k, margin, snr_range)
            if row is None:
                continue
            both = label in mine and label in set(trained.get(method) or [])
            family = "ablations" if method.startswith("ablation:") else ("target" if both else "outside")
            families[family].append(row)
    for rows in families.values():
        for method in comparators:
            adjust_family([r for r in rows if r["method"] == method], alpha)
    target = families["target"]
    return {
        "summary": SUMMARY,
        "margin": margin,
        "alpha": alpha,
        "test": "one-sided paired t over seeds, Holm-adjusted over each comparator's pairs of one kind",
        "families": families,
        "noninferior_everywhere": bool(target) and all(r["verdict"] in ("superior", "non-inferior") for r in target),
        "not_noninferior": [r for r in target if r["verdict"] not in ("superior", "non-inferior")],
    }
