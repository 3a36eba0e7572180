"""Per-image correctness files, seed averaging, paired verdicts and the dominance rule (trained-for cells only)."""

import numpy as np
import pytest
import torch

from rkd.evaluation.paired import averaged_records, dominance, index_cells, load_correct, paired_cell, save_correct


def record(method, label, acc, n, snr=0.0, k=8):
    return {
        "method": method,
        "channel": label.split("-")[0],
        "csi": "n/a",
        "k_factor": None,
        "channel_label": label,
        "snr_db": snr,
        "channel_uses": k,
        "accuracy": acc,
        "n_test": n,
    }


def method(name, cells):
    """cells: list of (label, snr, correctness vector)."""
    records = [record(name, label, float(np.mean(c)), len(c), snr) for label, snr, c in cells]
    return {"summary": {"method": name}, "records": records, "correct": np.array([c for _, _, c in cells], dtype=bool)}


def test_correct_round_trip(tmp_path):
    kept = [torch.tensor([True, False, True] * 7), torch.tensor([False] * 21)]
    save_correct(tmp_path, kept)
    back = load_correct(tmp_path)
    assert back.shape == (2, 21) and back[0].tolist() == kept[0].tolist() and not back[1].any()
    assert load_correct(tmp_path / "missing") is None


def test_paired_cell_pools_discordant_pairs_over_seeds():
    n = 100
    ours, theirs = np.ones(n, dtype=bool), np.ones(n, dtype=bool)
    theirs[:6] = False  # seed 0: b = 6 (we right, they wrong), c = 0
    ours2, theirs2 = np.ones(n, dtype=bool), np.ones(n, dtype=bool)
    theirs2[:4] = False  # seed 1: b = 4
    seeds = {
        0: {"rkd-sc": method("rkd-sc", [("awgn", 0.0, ours)]), "b": method("b", [("awgn", 0.0, theirs)])},
        1: {"rkd-sc": method("rkd-sc", [("awgn", 0.0, ours2)]), "b": method("b", [("awgn", 0.0, theirs2)])},
    }
    cells = index_cells(seeds)
    result = paired_cell(cells[("rkd-sc", "awgn", 8, 0.0)], cells[("b", "awgn", 8, 0.0)])
    # pooled b = 10, c = 0: exact p = 2 / 2^10, mid-p = 1 / 2^10
    assert (result["b"], result["c"]) == (10, 0) and result["p_mid"] == pytest.approx(2**-10)
    assert result["verdict"] == "win" and result["seeds"] == 2
    assert result["baseline"] == pytest.approx(0.95) and result["paired_t"]["mean_difference"] == pytest.approx(0.05)
    avg = {r["method"]: r for r in averaged_records(cells)}
    assert avg["b"]["accuracy"] == pytest.approx(0.95) and avg["b"]["interval"] == "t over seeds"
    assert avg["b"]["low"] < 0.95 < avg["b"]["high"] and avg["b"]["per_seed"] == {"0": 0.94, "1": 0.96}


def test_dominance_only_where_both_trained():
    n = 200
    right = np.ones(n, dtype=bool)
    worse = right.copy()
    worse[:30] = False  # 30 discordant pairs against us
    slightly = right.copy()
    slightly[:2] = False  # 2 discordant pairs: not significant
    seeds = {
        0: {
            "rkd-sc": method(
                "rkd-sc", [("awgn", 0.0, worse), ("rayleigh-nocsi", 0.0, worse), ("awgn", 10.0, slightly)]
            ),
            "base": method("base", [("awgn", 0.0, right), ("rayleigh-nocsi", 0.0, right), ("awgn", 10.0, right)]),
        }
    }
    trained = {"rkd-sc": ["awgn", "rayleigh-csi"], "base": ["awgn", "rayleigh-csi", "rayleigh-nocsi"]}
    check = dominance(index_cells(seeds), trained, "rkd-sc", ["base"], [8], ("awgn", "rayleigh"))
    assert check["compared"] == 2 and len(check["losses"]) == 1 and check["ties"] == 1 and not check["met"]
    assert check["losses"][0]["channel_label"] == "awgn" and check["losses"][0]["snr_db"] == 0.0
    assert [r["channel_label"] for r in check["outside"]] == ["rayleigh-nocsi"]  # RKD-SC never trained without CSI
    # the same shortfall only outside training: the rule holds (a tie at 10 dB is not a loss)
    trained["rkd-sc"] = ["rayleigh-csi"]
    trained["base"] = ["awgn", "rayleigh-csi"]
    check = dominance(index_cells(seeds), trained, "rkd-sc", ["base"], [8], ("awgn", "rayleigh"))
    assert check["compared"] == 0 and not check["met"] and len(check["outside"]) == 3  # nothing comparable: not met
    trained["rkd-sc"] = ["awgn"]
    seeds[0]["rkd-sc"] = method(
        "rkd-sc", [("awgn", 0.0, slightly), ("rayleigh-nocsi", 0.0, worse), ("awgn", 10.0, slightly)]
    )
    check = dominance(index_cells(seeds), trained, "rkd-sc", ["base"], [8], ("awgn", "rayleigh"))
    assert check["met"] and check["ties"] == 2 and check["wins"] == 0


def test_unpaired_fallback_without_per_image_data():
    seeds = {
        0: {
            "rkd-sc": {**method("rkd-sc", [("awgn", 0.0, np.ones(1000, dtype=bool))]), "correct": None},
            "b": {**method("b", [("awgn", 0.0, np.zeros(1000, dtype=bool))]), "correct": None},
        }
    }
    cells = index_cells(seeds)
    result = paired_cell(cells[("rkd-sc", "awgn", 8, 0.0)], cells[("b", "awgn", 8, 0.0)])
    assert result["test"].startswith("unpaired") and result["verdict"] == "win"
