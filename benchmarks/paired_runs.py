"""Two benchmark runs' RKD-SC cells paired by seed (a recipe change against the default), as JSON.

For each seed both runs finished: the clean student's test accuracy, each stage's seconds, and, per
(channel, k), the accuracy averaged over every SNR in -10..20 dB; then the differences (B - A) per cell
and their means. Pairing by seed holds the search fixed when the change leaves it alone.

    python benchmarks/paired_runs.py runs/bench runs/bench-fast --seeds 0,1 [--out results/x.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import write_json

SNR_RANGE = (-10.0, 20.0)


def cell_means(results: dict) -> dict:
    """``{(channel label, k): mean accuracy over the SNR range}`` of RKD-SC's records."""
    by_cell: dict = {}
    for r in results["records"]:
        if r["method"] == "rkd-sc" and r["snr_db"] is not None and SNR_RANGE[0] <= r["snr_db"] <= SNR_RANGE[1]:
            by_cell.setdefault((r["channel_label"], r["channel_uses"]), []).append(r["accuracy"])
    return {key: statistics.mean(values) for key, values in by_cell.items()}


def seed_record(run: Path, seed: int) -> dict:
    seed_dir = run / "rkd" / f"seed-{seed}-x1"
    results = json.loads((seed_dir / "eval" / "results.json").read_text())
    seconds = {
        stage: json.loads((seed_dir / stage / "stage.json").read_text())["summary"].get("seconds")
        for stage in ("search", "stage1", "stage2", "eval")
    }
    return {"student": results["summary"]["student_accuracy"], "seconds": seconds, "cells": cell_means(results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed, differences = {}, {}
    for seed in seeds:
        a, b = seed_record(args.a, seed), seed_record(args.b, seed)
        shared = sorted(set(a["cells"]) & set(b["cells"]), key=str)
        for key in shared:
            differences.setdefault(f"{key[0]} k={key[1]}", []).append(100 * (b["cells"][key] - a["cells"][key]))
        per_seed[seed] = {
            "student_a": a["student"],
            "student_b": b["student"],
            "seconds_a": a["seconds"],
            "seconds_b": b["seconds"],
            "cell_difference_mean_points": round(
                statistics.mean(100 * (b["cells"][k] - a["cells"][k]) for k in shared), 3
            ),
        }
    means = {cell: round(statistics.mean(values), 3) for cell, values in differences.items()}
    record = {
        "a": str(args.a),
        "b": str(args.b),
        "seeds": seeds,
        "snr_range_db": list(SNR_RANGE),
        "per_seed": per_seed,
        "cell_difference_points": means,
        "cell_difference_mean_points": round(statistics.mean(means.values()), 3),
    }
    write_json(record, args.out)


if __name__ == "__main__":
    main()
