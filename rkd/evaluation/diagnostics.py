"""Does the variable-length code use its symbols? Two diagnostics for any transmitter.

- **Effective dimension** of the transmitted code at ``k`` symbols: the participation ratio
  ``(sum λ)^2 / sum λ^2`` of the covariance eigenvalues of the 2k power-normalised reals sent,
  over a set of images. A repetition code (every symbol a copy of one value) has about 2 whatever
  ``k``; a code whose extra symbols carry new information grows with ``k``.
- **Energy-only prediction**: if the extra symbols of a k-symbol code only added energy, its
  accuracy at SNR ``s`` would equal the shortest code's at ``s + 10 log10(k / k_min)`` (the same
  total received energy). ``rate_gain`` is the measured accuracy minus that prediction (positive =
  the longer code carries information the short one cannot, however much energy it gets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from rkd.channels import normalize_power
from rkd.draws import symbol_mask
from rkd.models.frozen_tokens import batched


def participation_ratio(samples: torch.Tensor) -> float:
    """``(sum λ)^2 / sum λ^2`` of the covariance of ``samples`` ``[n, d]``: between 1 and ``d``."""
    x = samples.double() - samples.double().mean(dim=0, keepdim=True)
    eigenvalues = torch.linalg.eigvalsh(x.T @ x / max(1, x.shape[0] - 1)).clamp_min(0)
    total = float(eigenvalues.sum())
    return total * total / float(eigenvalues.square().sum()) if total > 0 else 0.0


@torch.no_grad()
def effective_dimensions(
    transmit, inputs: torch.Tensor, rates: Sequence[int], snr_db: float, batch_size: int = 1000
) -> dict:
    """Effective dimension of the first ``k`` symbols, per ``k`` in ``rates``, at nominal ``snr_db``.

    ``transmit(inputs, snr)`` returns complex symbols ``[B, L]``; each sample is power-normalised
    over its first ``k`` symbols, as the channel does, before the reals are counted.
    """
    z = batched(lambda t: transmit(t, torch.full((t.shape[0],), float(snr_db), device=t.device)), inputs, batch_size)
    z = z.cpu()
    out = {}
    for k in rates:
        mask = symbol_mask(torch.full((z.shape[0],), int(k)), z.shape[1])
        sent = torch.view_as_real(normalize_power(z, mask)[:, :k]).flatten(1)
        out[int(k)] = participation_ratio(sent)
    return out


def rate_gains(records: Sequence[dict], method: str, channel_label: str) -> list:
    """For every (k > k_min, SNR) of one method and channel: accuracy minus the energy-only prediction.

    The prediction interpolates the shortest code's accuracy over SNR (linear in dB); points whose
    shifted SNR lies outside the measured grid are skipped, not extrapolated.
    """
    rows = [
        r for r in records if r["method"] == method and r["channel_label"] == channel_label and r["snr_db"] is not None
    ]
    if not rows:
        return []
    k_min = min(r["channel_uses"] for r in rows)
    base = sorted((r["snr_db"], r["accuracy"]) for r in rows if r["channel_uses"] == k_min)
    snrs, accs = np.array([s for s, _ in base]), np.array([a for _, a in base])
    out = []
    for r in rows:
        k = r["channel_uses"]
        if k == k_min:
            continue
        shifted = r["snr_db"] + 10.0 * math.log10(k / k_min)
        if shifted > snrs[-1] + 1e-9:
            continue
        predicted = float(np.interp(shifted, snrs, accs))
        out.append(
            {
                "channel_uses": k,
                "snr_db": r["snr_db"],
                "accuracy": r["accuracy"],
                "energy_only_prediction": predicted,
                "rate_gain": r["accuracy"] - predicted,
            }
        )
    return out


def summarise_rate_gains(gains: Sequence[dict]) -> dict | None:
    """Mean and minimum gain per ``k`` (None when nothing could be compared)."""
    if not gains:
        return None
    out = {}
    for k in sorted({g["channel_uses"] for g in gains}):
        values = [g["rate_gain"] for g in gains if g["channel_uses"] == k]
        out[int(k)] = {"mean": float(np.mean(values)), "min": float(np.min(values)), "n_snrs": len(values)}
    return out
