"""Finite-blocklength rate: the Polyanskiy-Poor-Verdu normal approximation for the AWGN channel.

A reference curve beside the explicit codes (``rkd.coding.bounds``), never a channel model: it is
optimistic at short blocks (its ``1/2 log2 n`` term) and meaningless above capacity, where it still
credits ``Q(negative margin)`` of success.

Convention (``k`` *complex* channel uses; the SNR is per complex symbol):
a complex use at SNR ``P`` is two real dimensions each at SNR ``P``. Per real dimension

    C_r = 1/2 log2(1 + P),      V_r = P (P + 2) / (2 (P + 1)^2) * log2(e)^2   [bits^2]

and over ``n = 2k`` real dimensions the number of bits a code of packet error ``eps`` carries is

    log2 M*(n, eps) ~= n C_r - sqrt(n V_r) Q^{-1}(eps) + 1/2 log2(n)

i.e. per complex use ``R = C - sqrt(V / k) Q^{-1}(eps) + log2(2k) / (2k)`` with ``C = log2(1 + P)`` and
``V = 2 V_r`` (the dispersion doubles for a complex use). For a fixed payload of ``B`` bits the
relation is inverted in closed form: ``eps = Q((n C_r + 1/2 log2 n - B) / sqrt(n V_r))``.

Block fading with receiver CSI: the same expression at the instantaneous SNR ``|h|^2 P`` per packet
(quasi-static fading), averaged over the fading (``rkd.coding.bounds.over_fading``).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

LOG2E = math.log2(math.e)


def q_function(x: torch.Tensor) -> torch.Tensor:
    """Gaussian tail ``Q(x) = P(N(0,1) > x)``."""
    return 0.5 * torch.special.erfc(torch.as_tensor(x, dtype=torch.float64) / math.sqrt(2.0))


def q_inverse(eps: float) -> float:
    if not 0.0 < eps < 1.0:
        raise ValueError(f"argument 'eps' = {eps} is invalid: expected a packet error probability in (0, 1)")
    return NormalDist().inv_cdf(1.0 - eps)


def real_capacity(snr: torch.Tensor) -> torch.Tensor:
    """Bits per real dimension at linear SNR ``snr``."""
    return 0.5 * torch.log2(1.0 + torch.as_tensor(snr, dtype=torch.float64))


def real_dispersion(snr: torch.Tensor) -> torch.Tensor:
    """Channel dispersion per real dimension (bits^2) at linear SNR ``snr``."""
    p = torch.as_tensor(snr, dtype=torch.float64)
    return p * (p + 2.0) / (2.0 * (p + 1.0) ** 2) * LOG2E**2


def normal_approx_rate(channel_uses: int, snr_db: float, eps: float) -> float:
    """Bits per complex channel use at packet error ``eps`` over ``channel_uses`` complex uses (see module doc)."""
    if channel_uses < 1:
        raise ValueError(f"argument 'channel_uses' = {channel_uses} is invalid: expected an integer >= 1")
    n = 2 * channel_uses
    snr = torch.tensor(10.0 ** (snr_db / 10.0), dtype=torch.float64)
    bits = n * real_capacity(snr) - torch.sqrt(n * real_dispersion(snr)) * q_inverse(eps) + 0.5 * math.log2(n)
    return float(bits) / channel_uses


def packet_error(payload_bits: float, channel_uses: int, snr_linear: torch.Tensor) -> torch.Tensor:
    """Packet error probability of ``payload_bits`` (``log2 M``, not necessarily whole) over ``channel_uses``
    complex uses, per (instantaneous) SNR.

    The normal approximation inverted for ``eps``; ``snr_linear`` may be a tensor (one SNR per packet).
    A zero-dispersion point (SNR 0) is an error unless nothing is sent.
    """
    if payload_bits < 0 or channel_uses < 1:
        raise ValueError(
            f"arguments 'payload_bits'/'channel_uses' = {payload_bits}/{channel_uses} are invalid: expected >= 0 / >= 1"
        )
    snr = torch.as_tensor(snr_linear, dtype=torch.float64).clamp_min(0.0)
    if payload_bits == 0:
        return torch.zeros_like(snr)
    n = 2 * channel_uses
    margin = n * real_capacity(snr) + 0.5 * math.log2(n) - payload_bits
    spread = torch.sqrt(n * real_dispersion(snr))
    eps = q_function(margin / spread.clamp_min(1e-300))
    return torch.where(spread > 0, eps, torch.ones_like(eps)).clamp(0.0, 1.0)
