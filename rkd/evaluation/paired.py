"""Seeds, confidence intervals and the paired RKD-SC-vs-baseline verdicts behind the comparison report.

Inputs: per seed, each method's ``results.json`` and (with ``baselines.per_image``) its
``correct.npz``: one packed bit per test image per swept record, in record order, so two
methods' images line up (same test images, same seeded channel draws per cell and seed).

Outputs: records averaged over seeds with 95% intervals (``rkd.evaluation.stats.accuracy_interval``), and
per (baseline, channel, k, SNR) cell the pooled mid-p McNemar verdict of RKD-SC vs the baseline
(``win`` / ``tie`` / ``loss``; where a method kept no per-image data, an unpaired two-proportion
test on the pooled counts, labelled ``unpaired``). The dominance rule: "RKD-SC >= baseline" holds
in a cell unless it is a significant ``loss``; it is checked only in cells whose channel both
methods were trained (or, for digital schemes, designed) for; the other cells are reported
separately as ``outside``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rkd.evaluation.stats import ALPHA, accuracy_interval, mcnemar, paired_t, two_proportion_p, verdict
from rkd.run.artifacts import atomic_write, read_json

CORRECT_FILE = "correct.npz"


def save_correct(directory: Path, kept: list) -> Path:
    """Per-image correctness (a list of bool tensors, one per record) as packed bits beside results.json."""
    rows = np.stack([np.asarray(t.cpu().numpy(), dtype=bool) for t in kept])
    path = Path(directory) / CORRECT_FILE

    def write(target: Path) -> None:
        with open(target, "wb") as handle:
            np.savez_compressed(handle, bits=np.packbits(rows, axis=1), n=np.int64(rows.shape[1]))

    atomic_write(path, write)
    return path


def load_correct(directory: Path) -> np.ndarray | None:
    """``[records, n]`` bools, or None where the method kept no per-image correctness."""
    path = Path(directory) / CORRECT_FILE
    if not path.exists():
        return None
    with np.load(path) as data:
        return np.unpackbits(data["bits"], axis=1, count=int(data["n"])).astype(bool)


def load_seed(run_dir: Path) -> dict:
    """``{method: {"summary", "records", "correct"}}`` for every finished method under ``run_dir/baselines``."""
    out = {}
    root = Path(run_dir) / "baselines"
    for path in sorted(root.glob("*/results.json")) if root.exists() else []:
        if ".stale-" in path.parent.name or not (path.parent / "done.json").exists():
            continue
        data = read_json(path)
        correct = load_correct(path.parent)
        if correct is not None and correct.shape[0] != len(data["records"]):
            correct = None  # written by another sweep: not usable for pairing
        out[data["summary"]["method"]] = {**data, "correct": correct}
    return out


def cell_key(record: dict) -> tuple:
    return record["method"], record["channel_label"], record["channel_uses"], record["snr_db"]


def index_cells(seeds: dict) -> dict:
    """``{cell key: [(seed, record, correct row or None), ...]}`` over every seed and method."""
    cells: dict = {}
    for seed, methods in seeds.items():
        for data in methods.values():
            for i, record in enumerate(data["records"]):
                row = None if data["correct"] is None else data["correct"][i]
                cells.setdefault(cell_key(record), []).append((seed, record, row))
    return cells


def averaged_records(cells: dict) -> list:
    """One record per cell: the seed-mean accuracy with its 95% interval (``low``/``high``) and per-seed values."""
    out = []
    for entries in cells.values():
        first = entries[0][1]
        accs = [r["accuracy"] for _, r, _ in entries]
        ci = accuracy_interval(accs, int(first["n_test"]))
        out.append(
            {
                **first,
                "accuracy": ci["mean"],
                "low": ci["low"],
                "high": ci["high"],
                "seeds": ci["seeds"],
                "interval": ci["interval"],
                "per_seed": {str(s): r["accuracy"] for s, r, _ in entries},
            }
        )
    return out


def paired_cell(ours: list, theirs: list, alpha: float = ALPHA) -> dict | None:
    """RKD-SC (``ours``) vs a baseline in one cell over the seeds both have; None when they share none."""
    mine = {seed: (record, row) for seed, record, row in ours}
    shared = [(seed, mine[seed], (record, row)) for seed, record, row in theirs if seed in mine]
    if not shared:
        return None
    paired = all(a[1] is not None and b[1] is not None for _, a, b in shared)
    if paired:
        b = sum(int(np.sum(a[1] & ~o[1])) for _, a, o in shared)
        c = sum(int(np.sum(o[1] & ~a[1])) for _, a, o in shared)
        test = {"test": "mcnemar mid-p, pooled over seeds", **mcnemar(b, c)}
        p = test["p_mid"]
    else:
        n = sum(int(a[0]["n_test"]) for _, a, _ in shared)
        hits_a = sum(round(a[0]["accuracy"] * a[0]["n_test"]) for _, a, _ in shared)
        hits_b = sum(round(o[0]["accuracy"] * o[0]["n_test"]) for _, _, o in shared)
        p = two_proportion_p(hits_a, hits_b, n)
        test = {"test": "unpaired two-proportion (no per-image data)", "p": p}
    ours_mean = sum(a[0]["accuracy"] for _, a, _ in shared) / len(shared)
    theirs_mean = sum(o[0]["accuracy"] for _, _, o in shared) / len(shared)
    t = paired_t([a[0]["accuracy"] - o[0]["accuracy"] for _, a, o in shared])
    return {
        "rkd_sc": ours_mean,
        "baseline": theirs_mean,
        "seeds": len(shared),
        "p": p,
        **test,
        "paired_t": t,
        "verdict": verdict(ours_mean, theirs_mean, p, alpha),
    }


def dominance(
    cells: dict,
    trained: dict,
    rkd: str,
    baselines: list,
    k_values: list,
    channels: tuple,
    snr_range: tuple = (-10.0, 20.0),
) -> dict:
    """The paired verdict in every (baseline, channel, k, SNR) cell, split into trained-for and outside cells.

    ``trained``: ``{method: [channel labels]}`` (missing: nothing counts as trained for it).
    """
    inside: list[dict] = []
    outside: list[dict] = []
    ours_trained = set(trained.get(rkd) or [])
    for (method, label, k, snr), ours in sorted(cells.items(), key=lambda kv: str(kv[0])):
        if method != rkd or k not in k_values or snr is None or not snr_range[0] <= snr <= snr_range[1]:
            continue
        if not any(label == c or label.startswith(f"{c}-") for c in channels):
            continue
        for baseline in baselines:
            theirs = cells.get((baseline, label, k, snr))
            result = paired_cell(ours, theirs) if theirs else None
            if result is None:
                continue
            row = {"method": baseline, "channel_label": label, "k": k, "snr_db": snr, **result}
            both = label in ours_trained and label in set(trained.get(baseline) or [])
            (inside if both else outside).append(row)
    losses = [r for r in inside if r["verdict"] == "loss"]
    return {
        "cells": inside,
        "outside": outside,
        "compared": len(inside),
        "losses": losses,
        "wins": sum(r["verdict"] == "win" for r in inside),
        "ties": sum(r["verdict"] == "tie" for r in inside),
        "met": bool(inside) and not losses,
    }
