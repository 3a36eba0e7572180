"""benchmarks/paired_runs.py on synthetic seed runs: the differences per cell and over seeds, and each run's
shortfall from the yardstick on AWGN at SNR <= 0 dB."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from multiproc import REPO

from rkd.coding.bounds import decision_accuracy, simplex_success
from rkd.evaluation.records import channel_record

SPECS = [{"name": "awgn"}, {"name": "rayleigh", "csi": "perfect"}]
SNRS = [-10.0, 0.0, 10.0]
STUDENT = 0.9


def write_seed_run(directory, accuracy):
    """One seed's run: its config, RKD-SC's records at k = 8 on both channels, and each stage's seconds."""
    (directory / "eval").mkdir(parents=True)
    (directory / "config.yaml").write_text(yaml.safe_dump({"eval": {"channels": SPECS, "seed": 1234}}))
    records = [channel_record("rkd-sc", spec, snr, 8, accuracy, 1000) for snr in SNRS for spec in SPECS]
    records.append(channel_record("deep-jscc", SPECS[0], 0.0, 8, 0.1, 1000))  # another method's: ignored
    summary = {"student_accuracy": STUDENT, "num_classes": 10}
    (directory / "eval" / "results.json").write_text(json.dumps({"summary": summary, "records": records}))
    for stage in ("search", "stage1", "stage2", "eval"):
        (directory / stage).mkdir(exist_ok=True)
        (directory / stage / "stage.json").write_text(json.dumps({"summary": {"seconds": 10.0}}))


def run_paired(tmp_path, a: str, b: str, seeds: str) -> subprocess.CompletedProcess:
    """``paired_runs.py`` on the templates ``tmp_path / a`` and ``tmp_path / b``, writing ``paired.json``."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "paired_runs.py"), str(tmp_path / a), str(tmp_path / b)]
    cmd += ["--seeds", seeds, "--out", str(tmp_path / "paired.json")]
    return subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)


def paired(tmp_path, a: str, b: str, seeds: str = "0,1") -> dict:
    """The JSON of ``run_paired`` (seeds 0 and 1 unless told), after checking that it succeeded."""
    proc = run_paired(tmp_path, a, b, seeds)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / "paired.json").read_text())


def test_two_recipes_paired_by_seed(tmp_path):
    for seed, gain in ((0, 0.02), (1, 0.04)):
        write_seed_run(tmp_path / f"a-{seed}", 0.6)
        write_seed_run(tmp_path / f"b-{seed}", 0.6 + gain)
    result = paired(tmp_path, "a-{seed}", "b-{seed}")
    assert set(result["cell_difference_points"]) == {"awgn k=8", "rayleigh-csi k=8"}
    assert result["cell_difference_mean_points"]["mean"] == pytest.approx(3.0)
    assert [result["per_seed"][s]["cell_difference_mean_points"] for s in ("0", "1")] == pytest.approx([2.0, 4.0])
    yardstick = [float(decision_accuracy(STUDENT, simplex_success(10, 8, snr), 10)) for snr in (-10.0, 0.0)]
    shortfall_a = result["per_seed"]["0"]["yardstick_shortfall_a"]
    assert shortfall_a["cells"] == 2  # AWGN at -10 and 0 dB only
    assert shortfall_a["mean"] == pytest.approx(sum(100 * (0.6 - y) for y in yardstick) / 2, abs=1e-3)
    assert shortfall_a["worst"] == pytest.approx(100 * (0.6 - max(yardstick)), abs=1e-3)
    assert result["per_seed"]["1"]["yardstick_shortfall_b"]["mean"] == pytest.approx(
        shortfall_a["mean"] + 4.0, abs=1e-3
    )


def test_seed_zero_alone_may_be_written_as_bench_writes_it_and_bad_seeds_are_named(tmp_path):
    write_seed_run(tmp_path / "a-0", 0.6)
    write_seed_run(tmp_path / "b-0", 0.62)
    assert paired(tmp_path, "a-{seed}", "b-{seed}", seeds="0,")["cell_difference_mean_points"]["per_seed"] == [2.0]
    proc = run_paired(tmp_path, "a-{seed}", "b-{seed}", seeds="0,x")
    assert proc.returncode != 0 and "--seeds '0,x'" in proc.stderr and "0,1,2" in proc.stderr


def write_control_cell(directory, accuracy):
    """A control's benchmark cell: its records on one more SNR than the runs' grid, and its parts' seconds."""
    directory.mkdir(parents=True)
    (directory / "cell.json").write_text(json.dumps({"method": "no-teacher"}))
    records = [channel_record("no-teacher", spec, snr, 8, accuracy, 1000) for snr in SNRS for spec in SPECS]
    records += [channel_record("no-teacher", spec, 5.0, 8, 0.0, 1000) for spec in SPECS]  # not on the runs' grid
    summary = {"method": "no-teacher", "budget": {"parts": {"stage1": {"seconds": 7.0}, "stage2": {"seconds": 3.0}}}}
    (directory / "results.json").write_text(json.dumps({"summary": summary, "records": records}))


def test_a_control_cell_pairs_on_the_snrs_both_were_evaluated_at(tmp_path):
    for seed, gap in ((0, -0.01), (1, -0.03)):
        write_seed_run(tmp_path / f"a-{seed}", 0.6)
        write_control_cell(tmp_path / f"cell-{seed}", 0.6 + gap)
    result = paired(tmp_path, "a-{seed}", "cell-{seed}")
    assert result["cell_difference_mean_points"]["per_seed"] == pytest.approx([-1.0, -3.0])
    assert result["per_seed"]["0"]["seconds_b"] == {"stage1": 7.0, "stage2": 3.0}
    assert result["per_seed"]["0"]["yardstick_shortfall_b"] is None
    assert set(result["yardstick_shortfall_mean_points"]) == {"a"}
