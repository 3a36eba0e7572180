"""The separated yardstick: the student's decision sent with the best known code for it, at RKD-SC's cells.

For a classifier of clean accuracy ``a`` whose ``C``-way decision is sent with the decision code of
``rkd.coding.decision`` (the regular simplex where ``C <= 2 k + 1``, else the best spherical code), the
end-to-end accuracy is ``a P_c + (1 - a)(1 - P_c)/(C - 1)``. A semantic codec should reach it (it may pass
it a little with soft information). The comparison computes it at every (channel, k, SNR) cell RKD-SC
was swept at, with ``a`` the stage-1 student's clean accuracy averaged over the seeds.
"""

from __future__ import annotations

from collections.abc import Callable

from rkd.channels import channel_label
from rkd.coding.bounds import decision_accuracy
from rkd.coding.decision import decision_success
from rkd.evaluation.records import channel_record

METHOD = "yardstick"
TARGET_GAP = 0.01  # RKD-SC within one point of the yardstick ...
TARGET_CHANNEL, TARGET_MAX_SNR = "awgn", 0.0  # ... on AWGN at every SNR <= 0 dB
DEFAULT_TRIALS = 20_000  # Monte Carlo trials per cell when the config's baselines.digital_code_trials is unset


def in_target(record: dict) -> bool:
    """Whether a record's cell is one the yardstick target judges (AWGN, SNR <= 0 dB)."""
    return (
        record["channel_label"] == TARGET_CHANNEL
        and record["snr_db"] is not None
        and record["snr_db"] <= TARGET_MAX_SNR
    )


def yardstick_at(
    cfg: dict,
    rkd_records: list,
    keep: Callable[[dict], bool],
    student_accuracy: float,
    num_classes: int,
    trials: int | None = None,
) -> list:
    """The yardstick at every swept cell of ``rkd_records`` that ``keep`` accepts, on the run config's channels.

    ``cfg`` is a run's ``config.yaml`` as a dict: its evaluation channels give each label's spec, its
    ``baselines.digital_code_trials`` the trials unless ``trials`` says otherwise, its ``eval.seed`` the draws.
    """
    specs = {channel_label(spec): spec for spec in cfg["eval"]["channels"]}
    cells = {
        (r["channel_label"], r["channel_uses"], r["snr_db"])
        for r in rkd_records
        if r["snr_db"] is not None and r["channel_label"] in specs and keep(r)
    }
    if trials is None:
        trials = int((cfg.get("baselines") or {}).get("digital_code_trials") or DEFAULT_TRIALS)
    return yardstick_records(
        sorted(cells, key=str), specs, student_accuracy, num_classes, trials, int(cfg["eval"]["seed"])
    )


def yardstick_records(cells: list, specs: dict, student_accuracy: float, num_classes: int, trials: int, seed: int):
    """One record per ``(channel label, k, snr)`` of ``cells``; ``specs`` maps a channel label to its spec."""
    records = []
    for label, k, snr in cells:
        found = decision_success(num_classes, int(k), specs[label], float(snr), trials, seed)
        accuracy = float(decision_accuracy(student_accuracy, found["p_correct"], num_classes))
        records.append(channel_record(METHOD, specs[label], snr, k, accuracy, 0, **found))
    return records


def yardstick_gaps(rkd_records: list, yardstick: list) -> dict:
    """RKD-SC minus the yardstick at every AWGN cell with SNR <= 0 dB, and whether all are within one point."""
    mine = {(r["channel_label"], r["channel_uses"], r["snr_db"]): r["accuracy"] for r in rkd_records}
    gaps = [
        {
            "k": r["channel_uses"],
            "snr_db": r["snr_db"],
            "rkd_sc": mine[key],
            "yardstick": r["accuracy"],
            "gap": mine[key] - r["accuracy"],
        }
        for r in sorted(yardstick, key=lambda r: (r["channel_uses"], r["snr_db"]))
        if in_target(r) and (key := (r["channel_label"], r["channel_uses"], r["snr_db"])) in mine
    ]
    return {
        "cells": gaps,
        "met": bool(gaps) and all(g["gap"] >= -TARGET_GAP for g in gaps),
        "max_shortfall": TARGET_GAP,
    }
