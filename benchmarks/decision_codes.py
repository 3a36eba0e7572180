"""The explicit decision codes checked against closed forms and the simplex table, as JSON.

For 10 decisions in k complex uses on AWGN (SNR per complex symbol): the code rkd.coding picks, its
P_c by Monte Carlo through rkd.channels, its closed form where one exists (simplex), Shannon's
sphere-packing converse and the normal approximation; the orthogonal-code check (16 codewords in
k = 8); and the label-digital sweep itself (per-image decisions of a synthetic 90% student) against
the accuracy its code's closed form implies.

    python benchmarks/decision_codes.py [--trials N]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import common  # noqa: F401  (this checkout's rkd first)
import torch

SNRS = (-10.0, -6.0, -2.0, 0.0, 4.0)
PAPER = {  # /work/shared/PAPER.md, 200,000 trials
    4: (0.321, 0.503, 0.771, 0.894, 0.996),
    8: (0.450, 0.709, 0.945, 0.989, 1.000),
    16: (0.638, 0.901, 0.997, 1.000, 1.000),
    32: (0.844, 0.989, 1.000, 1.000, 1.000),
}


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def decision_table(trials: int) -> dict:
    from rkd.coding.bounds import normal_approx_success, simplex_success, sphere_packing_success
    from rkd.coding.codebooks import decision_code
    from rkd.coding.link import message_success

    table = {}
    for k, paper in PAPER.items():
        name, code = decision_code(10, k)
        snrs = torch.tensor(SNRS)
        table[str(k)] = {
            "code": name,
            "paper": list(paper),
            "monte_carlo": [message_success(code, {"name": "awgn"}, s, k, trials, seed=7) for s in SNRS],
            "closed_form": simplex_success(10, k, snrs).tolist() if name == "simplex" else None,
            "converse": sphere_packing_success(10, k, snrs).tolist(),
            "normal_approximation": normal_approx_success(10, k, snrs).tolist(),
        }
    return table


def orthogonal_check(trials: int) -> dict:
    from rkd.coding.bounds import orthogonal_success
    from rkd.coding.codebooks import orthogonal
    from rkd.coding.link import message_success

    return {
        "code": "16 orthogonal codewords in k = 8",
        "snr_db": list(SNRS),
        "closed_form": orthogonal_success(16, 8, torch.tensor(SNRS)).tolist(),
        "monte_carlo": [message_success(orthogonal(16, 8), {"name": "awgn"}, s, 8, trials, seed=11) for s in SNRS],
    }


def label_digital_check(n: int) -> dict:
    from rkd.baselines.label_code import label_code_sweep

    labels = torch.arange(n) % 10
    wrong = (labels + 1 + torch.randint(9, (n,), generator=torch.Generator().manual_seed(0))) % 10
    decisions = torch.where(torch.arange(n) < int(0.9 * n), labels, wrong)
    records = label_code_sweep(
        decisions, labels, 10, [{"name": "awgn"}], list(SNRS), [8, 32], 0, 20_000, "label-digital"
    )
    return {
        "student_accuracy": 0.9,
        "images": n,
        "cells": [
            {
                key: r[key]
                for key in ("channel_uses", "snr_db", "code", "accuracy", "expected_accuracy", "p_correct_from")
            }
            for r in records
        ],
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200_000)
    parser.add_argument("--images", type=int, default=100_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    result = {
        "benchmark": "decision_codes",
        "machine": {"cpu": cpu_name(), "threads": 1, "precision": "float64"},
        "trials": args.trials,
        "simplex_table": decision_table(args.trials),
        "orthogonal": orthogonal_check(args.trials),
        "label_digital": label_digital_check(args.images),
    }
    result["seconds"] = time.time() - started
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
