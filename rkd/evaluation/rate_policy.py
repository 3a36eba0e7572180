"""Rate policy: for each channel and SNR, the fewest channel uses ``k`` that cost almost no accuracy.

A rate-adaptive transmitter can stop after any ``k`` of its ordered symbols. Sending more than
needed wastes channel uses, so from the evaluation sweep we pick, per (channel, SNR), the smallest
``k`` whose accuracy is within ``margin`` of the best accuracy any evaluated ``k`` reached there.
The table is what a deployed transmitter would look up given the SNR it was told.
"""

from __future__ import annotations

from pathlib import Path

from rkd.run.artifacts import atomic_write_json


def rate_policy(records: list, margin: float, method: str | None = None) -> dict:
    """``{channel_label: [{"snr_db", "k", "accuracy", "best_k", "best_accuracy"}, ...]}`` in SNR order.

    ``records`` are evaluation records (see ``rkd.evaluation.sweep``); only those of ``method`` (all when
    None) with an SNR and a ``k`` count. Ties in the best accuracy go to the smaller ``k``.
    """
    if not 0 <= margin < 1:
        raise ValueError(f"argument 'margin' = {margin!r} is invalid: expected an accuracy margin in [0, 1)")
    cells: dict = {}
    for r in records:
        if r.get("snr_db") is None or r.get("channel_uses") is None:
            continue
        if method is not None and r.get("method") != method:
            continue
        cells.setdefault(r["channel_label"], {}).setdefault(float(r["snr_db"]), {})[int(r["channel_uses"])] = float(
            r["accuracy"]
        )
    policy: dict = {}
    for label, by_snr in cells.items():
        rows = []
        for snr in sorted(by_snr):
            by_k = by_snr[snr]
            best_k = min(by_k, key=lambda k: (-by_k[k], k))
            best = by_k[best_k]
            k = min(k for k, acc in by_k.items() if acc >= best - margin - 1e-12)
            rows.append({"snr_db": snr, "k": k, "accuracy": by_k[k], "best_k": best_k, "best_accuracy": best})
        policy[label] = rows
    return policy


def write_rate_policy(path: Path, records: list, margin: float, method: str | None = None) -> dict:
    """Write ``rate_policy.json``: the margin, the method, and the per-channel table."""
    table = rate_policy(records, margin, method)
    data = {
        "margin": margin,
        "method": method,
        "rule": "fewest channel uses k whose accuracy >= best accuracy over k - margin, per channel and SNR",
        "policy": table,
    }
    atomic_write_json(Path(path), data)
    return data
