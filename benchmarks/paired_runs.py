"""Two recipes' runs paired by seed (a recipe change against the default, or a control against RKD-SC), as JSON.

For each seed both runs finished: the clean student's test accuracy, each stage's seconds, per
(channel, k) the accuracy averaged over the SNRs in -10..20 dB that both runs were evaluated at, and
the shortfall from the yardstick on AWGN at SNR <= 0 dB (``rkd.evaluation.yardstick``, with that
seed's own student); then the differences (B - A) per cell with their mean and 95% t interval over
seeds. Pairing by seed holds the search (and stage 1, when the change is downstream of it) fixed.

A run is a benchmark directory (its seeds' runs are ``rkd/seed-<s>-x1``), a template of one seed's run
directory with ``{seed}`` in it, or a template of a benchmark cell (a directory with ``cell.json``, e.g.
a control's): a cell gives its method's records and its stages' seconds, but no clean student, so no
yardstick shortfall.

    python benchmarks/paired_runs.py runs/bench runs/bench-fast --seeds 0,1 [--out results/x.json]
    python benchmarks/paired_runs.py runs/bench 'runs/s2exp/e24-s{seed}' --seeds 0,1,2
    python benchmarks/paired_runs.py runs/bench 'runs/bench/cells/no-teacher-converged/seed-{seed}-x1' --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import write_json

SNR_RANGE = (-10.0, 20.0)
YARDSTICK_TRIALS = 200_000


def seed_dir(run: str, seed: int) -> Path:
    return Path(run.format(seed=seed)) if "{seed}" in run else Path(run) / "rkd" / f"seed-{seed}-x1"


def accuracies(records: list) -> dict:
    """``{(channel label, k, SNR): accuracy}`` of the records in the SNR range."""
    return {
        (r["channel_label"], r["channel_uses"], r["snr_db"]): r["accuracy"]
        for r in records
        if r["snr_db"] is not None and SNR_RANGE[0] <= r["snr_db"] <= SNR_RANGE[1]
    }


def cell_differences(a: dict, b: dict) -> dict:
    """``{(channel label, k): mean of B - A (points)}`` over the SNRs both runs were evaluated at."""
    by_cell: dict = {}
    for key in sorted(set(a) & set(b), key=str):
        by_cell.setdefault(key[:2], []).append(100 * (b[key] - a[key]))
    return {cell: statistics.mean(values) for cell, values in by_cell.items()}


def yardstick_shortfall(run_dir: Path, records: list, summary: dict) -> dict:
    """RKD-SC minus the yardstick on AWGN at SNR <= 0 dB (points): mean and worst over those cells."""
    import yaml

    from rkd.evaluation.yardstick import in_target, yardstick_at, yardstick_gaps

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    student, classes = summary["student_accuracy"], int(summary["num_classes"])
    reference = yardstick_at(cfg, records, in_target, student, classes, YARDSTICK_TRIALS)
    gaps = [100 * g["gap"] for g in yardstick_gaps(records, reference)["cells"]]
    return {"mean": round(statistics.mean(gaps), 3), "worst": round(min(gaps), 3), "cells": len(gaps)}


def seed_record(run: str, seed: int) -> dict:
    directory = seed_dir(run, seed)
    if (directory / "cell.json").exists():
        return cell_record(directory)
    results = json.loads((directory / "eval" / "results.json").read_text())
    records = [r for r in results["records"] if r["method"] == "rkd-sc"]
    seconds = {
        stage: json.loads((directory / stage / "stage.json").read_text())["summary"].get("seconds")
        for stage in ("search", "stage1", "stage2", "eval")
    }
    return {
        "student": results["summary"]["student_accuracy"],
        "seconds": seconds,
        "accuracies": accuracies(records),
        "yardstick_shortfall_points": yardstick_shortfall(directory, records, results["summary"]),
    }


def cell_record(directory: Path) -> dict:
    """A benchmark cell's method: its records and its training parts' seconds (no clean student here)."""
    results = json.loads((directory / "results.json").read_text())
    method = results["summary"]["method"]
    parts = results["summary"].get("budget", {}).get("parts", {})
    return {
        "student": None,
        "seconds": {part: spent.get("seconds") for part, spent in parts.items()},
        "accuracies": accuracies([r for r in results["records"] if r["method"] == method]),
        "yardstick_shortfall_points": None,
    }


def over_seeds(values: list) -> dict:
    from rkd.evaluation.stats import mean_interval

    mean, low, high = mean_interval(values)
    rounded = lambda v: None if v is None else round(v, 3)  # noqa: E731
    return {"mean": rounded(mean), "ci95": [rounded(low), rounded(high)], "per_seed": [round(v, 3) for v in values]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="the reference: a benchmark directory or a seed-run template with {seed}")
    parser.add_argument("b", help="the change, likewise")
    parser.add_argument("--seeds", default="0", help="the seeds to pair, a list: 0,1,2 (seed 0 alone: 0 or 0,)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        parser.error(f"--seeds {args.seeds!r}: expected seeds >= 0 separated by commas, e.g. 0,1,2")
    per_seed, differences, seed_means = {}, {}, []
    for seed in seeds:
        a, b = seed_record(args.a, seed), seed_record(args.b, seed)
        by_cell = cell_differences(a["accuracies"], b["accuracies"])
        if not by_cell:
            raise SystemExit(f"[paired_runs] seed {seed}: the two runs share no (channel, k, SNR) in {SNR_RANGE} dB")
        for (label, k), difference in by_cell.items():
            differences.setdefault(f"{label} k={k}", []).append(difference)
        seed_means.append(statistics.mean(by_cell.values()))
        per_seed[seed] = {
            "student_a": a["student"],
            "student_b": b["student"],
            "seconds_a": a["seconds"],
            "seconds_b": b["seconds"],
            "yardstick_shortfall_a": a["yardstick_shortfall_points"],
            "yardstick_shortfall_b": b["yardstick_shortfall_points"],
            "cell_difference_mean_points": round(seed_means[-1], 3),
        }
    shortfalls = {side: [per_seed[s][f"yardstick_shortfall_{side}"] for s in seeds] for side in "ab"}
    record = {
        "a": args.a,
        "b": args.b,
        "seeds": seeds,
        "snr_range_db": list(SNR_RANGE),
        "per_seed": per_seed,
        "cell_difference_points": {cell: over_seeds(values) for cell, values in differences.items()},
        "cell_difference_mean_points": over_seeds(seed_means),
        "yardstick_shortfall_mean_points": {
            side: over_seeds([shortfall["mean"] for shortfall in values])
            for side, values in shortfalls.items()
            if None not in values
        },
    }
    write_json(record, args.out)


if __name__ == "__main__":
    main()
