"""Separate source and channel coding: quantise the student's feature, send bits at channel capacity.

The digital reference point. The stage-1 student's pooled feature (``D`` values) is quantised to
``b`` bits per value by a uniform quantiser whose per-dimension range is the train split's
min..max, giving ``b * D`` bits. The bits go over an ideal capacity-achieving channel code
(infinite block length, no overhead: an optimistic bound for any real code):

* capacity per channel use: ``C = log2(1 + SNR)``; on a fading block ``C = log2(1 + |h|^2 SNR)``,
  ``|h|^2`` drawn per sample with the same seeded generator as the analog sweeps. The receiver is
  granted perfect channel knowledge for decoding even where the analog methods get ``csi=none``
  (a digital link sends pilots; this favours the digital baseline).
* ``b`` is chosen by the transmitter, which knows the nominal SNR but not ``h``: the largest
  candidate with ``b * D <= k * log2(1 + SNR)``. If none fits, nothing is sent.
* outage: a sample whose ``k * C < b * D`` (a fade) is lost, as is every sample when nothing fits.
  The receiver then predicts the fallback: the most frequent train class (``prior``), or a
  seeded uniform random class (``uniform``). Otherwise it dequantises to bin centres and applies
  the student's classifier.

This gives the digital cliff: full quantised accuracy above the SNR where ``b`` bits fit,
chance level below it. Nothing is trained beyond the stage-1 student. Being unachievable at
finite ``k``, it is reported as a *bound* (method ``digital``), not as a scheme.

The schemes that send explicit codes over the same channels are ``rkd.baselines.label_code`` and
``rkd.baselines.feature_code``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rkd.channels import channel_from_spec
from rkd.evaluation.records import cell_generator, grid_records


def capacity_bits(snr_db: torch.Tensor, gain2: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Shannon capacity in bits per complex channel use: ``log2(1 + |h|^2 * 10^(snr/10))``."""
    snr = torch.as_tensor(snr_db, dtype=torch.float64)
    return torch.log2(1.0 + torch.as_tensor(gain2, dtype=torch.float64) * torch.pow(10.0, snr / 10.0))


def choose_bits(snr_db: float, channel_uses: int, dim: int, candidates: Sequence[int]) -> int:
    """Largest ``b`` in ``candidates`` whose ``b * dim`` bits fit ``channel_uses`` uses at ``snr_db`` (0: none fits)."""
    budget = channel_uses * float(capacity_bits(torch.tensor(float(snr_db))))
    fitting = [b for b in candidates if b * dim <= budget + 1e-9]
    return max(fitting) if fitting else 0


class UniformQuantizer:
    """Per-dimension uniform ``b``-bit quantiser over the train range ``[lo, hi]``; values outside clamp."""

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        self.lo = lo.float()
        self.span = (hi.float() - lo.float()).clamp_min(1e-8)

    @classmethod
    def fit(cls, features: torch.Tensor) -> UniformQuantizer:
        return cls(features.min(dim=0).values, features.max(dim=0).values)

    def indices(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        levels = 2**bits
        unit = ((x.float() - self.lo) / self.span).clamp(0.0, 1.0)
        return torch.clamp((unit * levels).floor(), max=levels - 1).long()

    def dequantize(self, q: torch.Tensor, bits: int) -> torch.Tensor:
        return self.lo + (q.float() + 0.5) / (2**bits) * self.span

    def __call__(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        return self.dequantize(self.indices(x, bits), bits)


def fallback_predictions(n: int, num_classes: int, mode: str, prior_class: int, seed: int) -> torch.Tensor:
    if mode == "prior":
        return torch.full((n,), int(prior_class), dtype=torch.long)
    if mode == "uniform":
        return torch.randint(num_classes, (n,), generator=torch.Generator().manual_seed(seed))
    raise ValueError(f"argument 'mode' = {mode!r} is invalid: expected 'prior' or 'uniform'")


@torch.no_grad()
def digital_sweep(
    features: torch.Tensor,
    labels: torch.Tensor,
    head,
    quantizer: UniformQuantizer,
    channel_specs: list,
    snrs: list,
    rates: list,
    candidates: Sequence[int],
    fallback: torch.Tensor,
    seed: int,
    method: str = "digital",
) -> list:
    """Records (``rkd.evaluation.sweep`` format plus ``bits``) for every channel x SNR x k.

    ``fallback``: the receiver's prediction per test sample when it gets nothing.
    """
    n, dim = features.shape
    labels = labels.cpu()
    quantized_correct: dict = {}

    def correct_at(bits: int) -> torch.Tensor:
        if bits not in quantized_correct:
            preds = head(quantizer(features, bits)).argmax(-1).cpu()
            quantized_correct[bits] = preds == labels
        return quantized_correct[bits]

    fallback_correct = fallback.cpu() == labels

    def cell(spec: dict, snr: float, k: int) -> tuple[float, dict]:
        bits = choose_bits(snr, k, dim, candidates)
        gain2 = channel_from_spec(spec).sample_fading(n, cell_generator(seed), torch.device("cpu"), torch.float64)
        gain2 = gain2.abs().square()
        if bits == 0:
            delivered = torch.zeros(n, dtype=torch.bool)
        else:
            delivered = k * capacity_bits(torch.tensor(float(snr)), gain2) >= bits * dim - 1e-9
        hit = torch.where(delivered, correct_at(bits) if bits else fallback_correct, fallback_correct)
        return float(hit.float().mean()), {"bits": bits, "outage": float(1.0 - delivered.float().mean())}

    return grid_records(method, channel_specs, snrs, rates, n, cell)


def min_snr_for_bits(bits: int, dim: int, channel_uses: int) -> float:
    """The AWGN SNR (dB) above which ``bits * dim`` bits fit ``channel_uses`` uses: where the cliff sits."""
    return 10.0 * math.log10(2.0 ** (bits * dim / channel_uses) - 1.0)
