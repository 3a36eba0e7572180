"""The verdicts over seeds: the t distribution, Holm's adjustment, and verdicts on synthetic results whose
answer is known by construction."""

import math

import pytest

from rkd.evaluation.stats import _T975, holm, paired_shift_tests, t_cdf, t_quantile_975
from rkd.evaluation.verdicts import adjust_family, per_seed_summary, seed_verdicts

SNRS = [-10.0, 0.0, 10.0, 20.0]


def test_t_cdf_against_the_tabulated_quantiles():
    for df, q in enumerate(_T975, start=1):  # the table of 0.975 quantiles, independent of the series
        assert t_cdf(q, df) == pytest.approx(0.975, abs=2e-5), df
        assert t_cdf(-q, df) == pytest.approx(0.025, abs=2e-5), df
    assert t_cdf(0.0, 7) == 0.5 and t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi
    assert t_cdf(t_quantile_975(200), 200) == pytest.approx(0.975, abs=1e-4)
    assert t_cdf(1.96, 10_000) == pytest.approx(0.975, abs=2e-4)  # -> the normal
    with pytest.raises(ValueError, match="df"):
        t_cdf(1.0, 0)


def test_holm_hand_values():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm([]) == []


def test_paired_shift_tests_hand_values():
    diffs = [0.01, 0.02, 0.03]  # mean 0.02, sd 0.01, se 0.01/sqrt(3)
    tests = paired_shift_tests(diffs, 0.005)
    se = 0.01 / math.sqrt(3)
    assert tests["mean_difference"] == pytest.approx(0.02)
    assert tests["p_superior"] == pytest.approx(1 - t_cdf(0.02 / se, 2))
    assert tests["p_noninferior"] == pytest.approx(1 - t_cdf(0.025 / se, 2))
    assert tests["p_inferior"] == pytest.approx(t_cdf(0.02 / se, 2))
    assert tests["low"] == pytest.approx(0.02 - 4.3027 * se, abs=1e-6)
    assert paired_shift_tests([0.1], 0.005) is None
    rounded = paired_shift_tests([0.1025 - 0.1008, 0.1025 - 0.1008 + 1e-17], 0.005)  # rounding is no spread
    assert rounded["p_superior"] == 0.0 and rounded["p_noninferior"] == 0.0
    flat = paired_shift_tests([-0.001, -0.001], 0.005)  # no spread: decided by the sign
    assert flat["p_noninferior"] == 0.0 and flat["p_superior"] == 1.0 and flat["p_inferior"] == 0.0


def cell_table(methods: dict, label="awgn", k=8) -> dict:
    """``{method: [per-seed accuracy at every SNR]}`` -> cells as ``rkd.evaluation.paired.index_cells`` builds them."""
    cells: dict = {}
    for method, per_seed in methods.items():
        for seed, accuracy in enumerate(per_seed):
            for snr in SNRS:
                record = {
                    "method": method,
                    "channel_label": label,
                    "channel_uses": k,
                    "snr_db": snr,
                    "accuracy": accuracy,
                }
                cells.setdefault((method, label, k, snr), []).append((seed, record, None))
    return cells


def test_verdicts_on_synthetic_results():
    noise = [0.004, -0.003, 0.001, -0.002, 0.0]  # per-seed wobble shared by RKD-SC's runs
    rkd = [0.80 + e for e in noise]
    cells = cell_table(
        {
            "rkd-sc": rkd,
            "worse": [a - 0.02 + 0.001 * (i % 2) for i, a in enumerate(rkd)],  # 2 points below: RKD-SC superior
            "slightly-better": [a + 0.001 + 0.0005 * (i % 2) for i, a in enumerate(rkd)],  # within the margin
            "much-better": [a + 0.03 + 0.001 * (i % 2) for i, a in enumerate(rkd)],  # RKD-SC inferior
            "noisy": [a + d for a, d in zip(rkd, (0.05, -0.06, 0.04, -0.05, 0.02))],  # can't tell
            "ablation:x": [a - 0.01 + 0.001 * (i % 2) for i, a in enumerate(rkd)],
        }
    )
    assert per_seed_summary(cells, "rkd-sc", "awgn", 8, SNRS) == pytest.approx(dict(enumerate(rkd)))
    trained = {m: ["awgn"] for m in ("rkd-sc", "worse", "slightly-better", "much-better", "noisy", "ablation:x")}
    out = seed_verdicts(
        cells, trained, "rkd-sc", ["worse", "slightly-better", "much-better", "noisy", "ablation:x"], 0.005
    )
    rows = {r["method"]: r for family in out["families"].values() for r in family}
    assert rows["worse"]["verdict"] == "superior"
    assert rows["slightly-better"]["verdict"] == "non-inferior"
    assert rows["much-better"]["verdict"] == "inferior"
    assert rows["noisy"]["verdict"] == "inconclusive"
    assert [r["method"] for r in out["families"]["ablations"]] == ["ablation:x"]
    assert rows["slightly-better"]["mean_difference"] == pytest.approx(-0.0012, abs=1e-9)
    assert 0.015 < rows["worse"]["low"] < rows["worse"]["mean_difference"] < rows["worse"]["high"] < 0.025
    assert not out["noninferior_everywhere"]
    assert {r["method"] for r in out["not_noninferior"]} == {"much-better", "noisy"}
    # one (channel, k) pair per comparator: each comparator's family holds one test, left as it is
    for r in out["families"]["target"]:
        assert r["p_noninferior_holm"] == r["p_noninferior"]


def test_a_comparators_family_is_its_own_pairs_so_other_comparators_leave_its_verdicts_alone():
    rkd = [0.8, 0.81, 0.79]
    close = [0.797, 0.806, 0.788]  # differences +0.003, +0.004, +0.002: superior alone
    wide = [0.7, 0.9, 0.8]
    table = {**cell_table({"rkd-sc": rkd, "b": close}), **cell_table({"rkd-sc": rkd, "b": close}, k=32)}
    trained = {m: ["awgn"] for m in ("rkd-sc", "b", "c")}
    alone = seed_verdicts(table, trained, "rkd-sc", ["b"], 0.005)["families"]["target"]
    # its two pairs share a family: Holm doubles the smaller p-value
    assert sorted(r["k"] for r in alone) == [8, 32]
    assert sorted(r["p_superior_holm"] for r in alone) == pytest.approx([2 * alone[0]["p_superior"]] * 2)
    assert [r["verdict"] for r in alone] == ["superior", "superior"]
    crowded = {**table, **cell_table({"c": wide}), **cell_table({"c": wide}, k=32)}
    with_c = seed_verdicts(crowded, trained, "rkd-sc", ["b", "c"], 0.005)["families"]["target"]
    assert [r for r in with_c if r["method"] == "b"] == alone
    assert {r["verdict"] for r in with_c if r["method"] == "c"} == {"inconclusive"}


def test_holm_can_change_a_verdict_and_channels_split_families():
    # a comparison that is non-inferior alone (p < 0.05) but not once it shares the family with many others
    rkd = [0.8, 0.81, 0.79]
    base = [0.8, 0.8, 0.8]  # differences 0, +0.01, -0.01: mean 0, se 0.0058 -> p_ni = P(T_2 >= 0.87)
    alone = seed_verdicts(
        cell_table({"rkd-sc": rkd, "b": base}), {"rkd-sc": ["awgn"], "b": ["awgn"]}, "rkd-sc", ["b"], 0.02
    )
    row = alone["families"]["target"][0]
    assert row["p_noninferior"] < 0.05 and row["verdict"] == "non-inferior"
    many = [dict(row, p_noninferior=row["p_noninferior"], p_superior=0.5, p_inferior=0.5) for _ in range(3)]
    assert all(r["verdict"] != "non-inferior" for r in adjust_family(many, 0.05))
    outside = seed_verdicts(
        cell_table({"rkd-sc": rkd, "b": base}), {"rkd-sc": ["awgn"], "b": []}, "rkd-sc", ["b"], 0.02
    )
    assert (
        outside["families"]["outside"] and not outside["families"]["target"] and not outside["noninferior_everywhere"]
    )
    single = seed_verdicts(cell_table({"rkd-sc": rkd[:1], "b": base[:1]}), {}, "rkd-sc", ["b"], 0.02)
    assert single["families"]["outside"][0]["verdict"] == "n/a"
