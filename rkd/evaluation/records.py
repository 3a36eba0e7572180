"""One accuracy record per (method, channel, SNR, k), laid out once, and the rules that seed evaluation draws.

Every sweep (RKD-SC's eval, the analog baselines, the digital schemes and bound) writes the same
keys in the same order, so ``results.json`` files compare cell by cell; the clean teacher and
student rows use the same layout with no channel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rkd.channels import channel_label


def accuracy_record(
    *,
    method: str,
    channel: str,
    csi: str,
    k_factor,
    channel_label: str,
    snr_db,
    channel_uses,
    accuracy: float,
    n_test: int,
    **extra,
) -> dict:
    """The record's keys in their fixed order; ``extra`` (e.g. a digital scheme's ``bits``) follows them."""
    return {
        "method": method,
        "channel": channel,
        "csi": csi,
        "k_factor": k_factor,
        "channel_label": channel_label,
        "snr_db": snr_db,
        "channel_uses": channel_uses,
        "accuracy": accuracy,
        "n_test": n_test,
        **extra,
    }


def channel_record(
    method: str, spec: dict, snr_db: float, channel_uses: int, accuracy: float, n_test: int, **extra
) -> dict:
    """A swept cell: CSI and Rician K named only where the channel has them (AWGN: csi ``n/a``)."""
    name = spec["name"]
    return accuracy_record(
        method=method,
        channel=name,
        csi=spec.get("csi", "perfect") if name != "awgn" else "n/a",
        k_factor=spec.get("k_factor") if name == "rician" else None,
        channel_label=channel_label(spec),
        snr_db=float(snr_db),
        channel_uses=int(channel_uses),
        accuracy=accuracy,
        n_test=n_test,
        **extra,
    )


def grid_records(
    method: str,
    channel_specs: list,
    snrs: list,
    rates: list,
    n_test: int,
    cell: Callable[[dict, float, int], tuple[float, dict]],
) -> list:
    """One record per SNR x channel x k, in that order; ``cell(spec, snr, k)`` gives its accuracy and extra fields."""
    records = []
    for snr in snrs:
        for spec in channel_specs:
            for k in rates:
                accuracy, extra = cell(spec, snr, k)
                records.append(channel_record(method, spec, snr, k, accuracy, n_test, **extra))
    return records


def clean_record(method: str, accuracy: float, n_test: int) -> dict:
    """A noiseless reference row (the teacher, the stage-1 student)."""
    return accuracy_record(
        method=method,
        channel="clean",
        csi="n/a",
        k_factor=None,
        channel_label="clean",
        snr_db=None,
        channel_uses=None,
        accuracy=accuracy,
        n_test=n_test,
    )


def cell_generator(seed: int) -> torch.Generator:
    """A fresh generator per sweep cell, seeded with ``eval.seed``: every method and cell meets the same draws."""
    return torch.Generator().manual_seed(seed)


def validation_batch_generator(first_index: int, seed: int) -> torch.Generator:
    """The channel draws of a validation batch during training: fixed by the batch's first row and the seed,
    so every epoch's validation (and every method's) meets the same SNRs, k and noise."""
    return torch.Generator().manual_seed(10_007 * int(first_index) + seed)
