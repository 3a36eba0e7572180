"""What a code of ``M`` messages in ``uses`` complex channel uses can do on AWGN: exact values and limits.

Units: SNR per complex symbol (dB), unit average power per complex use, ``n = 2 uses`` real
dimensions. Scaled so that the noise has unit variance per real dimension, an equal-energy codeword
has norm ``sqrt(n SNR)``.

* ``orthogonal_success``: ``M <= n`` orthogonal codewords of energy ``E = uses``,
  ``P_c = int phi(y - sqrt(2E/N0)) Phi(y)^(M-1) dy`` with ``2E/N0 = n SNR``;
  ``simplex_success``: the simplex is the orthogonal code less its centroid, so it succeeds as an
  orthogonal code with ``M/(M-1)`` times the energy.
* ``sphere_packing_success``: Shannon's 1959 sphere-packing (cone) bound, an upper bound on ``P_c`` of
  *any* code of ``M`` equal-energy codewords, ML decoded: the probability that the noisy codeword stays
  within the circular cone around it whose solid angle is ``1/M`` of the sphere. It is exact for
  ``M = 2`` (antipodal) and for PSK on one use (the cones are then the PSK decision sectors).
* ``normal_approx_success``: ``1 - eps`` of the Polyanskiy-Poor-Verdu normal approximation for
  ``log2 M`` bits (``rkd.coding.fbl``); not a bound, optimistic at small ``n``.
* ``decision_accuracy``: end-to-end accuracy of a classifier of accuracy ``a`` whose decision is sent
  with success ``P_c`` and whose errors land uniformly on the other ``M - 1`` classes (exact for the
  simplex and orthogonal codes, by symmetry).
* ``over_fading``: any of these averaged over block fading with receiver CSI (the code is fixed,
  the receiver sees ``|h|^2 SNR``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from rkd.channels import channel_from_spec
from rkd.coding.fbl import packet_error

GRID = 2001  # points of the numerical integrals (Simpson's rule on float64)
FADING_STEP_DB = 0.25
FADING_FLOOR_DB = 30.0


def _snr(snr_db) -> torch.Tensor:
    return torch.pow(10.0, torch.as_tensor(snr_db, dtype=torch.float64) / 10.0)


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.special.erfc(-x / math.sqrt(2.0))


def _simpson(values: torch.Tensor, step: float) -> torch.Tensor:
    """Simpson's rule along the last axis (an odd number of points)."""
    weights = torch.ones(values.shape[-1], dtype=torch.float64)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return (values * weights).sum(-1) * step / 3.0


def _check(m: int, uses: int) -> None:
    if m < 2 or uses < 1:
        raise ValueError(f"arguments 'M'/'uses' = {m}/{uses} are invalid: expected M >= 2 codewords, uses >= 1")


def orthogonal_success(m: int, uses: int, snr_db) -> torch.Tensor:
    """Exact ``P_c`` of ``M`` orthogonal equal-energy codewords, ML decoded on AWGN (needs ``M <= 2 uses``)."""
    _check(m, uses)
    if m > 2 * uses:
        raise ValueError(f"argument 'M' = {m} is invalid: an orthogonal code needs M <= n = {2 * uses}")
    return _orthogonal(m, 2 * uses * _snr(snr_db))


def _orthogonal(m: int, energy: torch.Tensor) -> torch.Tensor:
    """``int phi(y - mu) Phi(y)^(M-1) dy`` with ``mu^2 = energy`` (2E/N0), per element of ``energy``."""
    mu = energy.sqrt()[..., None]
    t = torch.linspace(-12.0, 12.0, GRID, dtype=torch.float64)  # y - mu
    y = mu + t
    density = torch.exp(-0.5 * t.square()) / math.sqrt(2 * math.pi)
    return _simpson(density * normal_cdf(y) ** (m - 1), float(t[1] - t[0])).clamp(0.0, 1.0)


def simplex_success(m: int, uses: int, snr_db) -> torch.Tensor:
    """Exact ``P_c`` of the ``M``-point regular simplex, ML decoded on AWGN (needs ``M <= 2 uses + 1``)."""
    _check(m, uses)
    if m > 2 * uses + 1:
        raise ValueError(f"argument 'M' = {m} is invalid: a simplex needs M <= n + 1 = {2 * uses + 1}")
    return _orthogonal(m, 2 * uses * _snr(snr_db) * m / (m - 1))


@functools.lru_cache(maxsize=1024)
def cap_angle(m: int, n: int) -> float:
    """The half-angle of the circular cone holding ``1/M`` of the sphere in R^n (surface fraction
    ``int_0^theta sin^(n-2) / int_0^pi sin^(n-2)``)."""
    theta = torch.linspace(0.0, math.pi, 200_001, dtype=torch.float64)
    density = torch.sin(theta) ** (n - 2)
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum((density[1:] + density[:-1]) / 2, 0)])
    fraction = cumulative / cumulative[-1]
    i = int(torch.searchsorted(fraction, torch.tensor(1.0 / m, dtype=torch.float64)))
    lo, hi = float(fraction[i - 1]), float(fraction[i])
    return float(theta[i - 1]) + (1.0 / m - lo) / max(hi - lo, 1e-300) * float(theta[1] - theta[0])


def sphere_packing_success(m: int, uses: int, snr_db) -> torch.Tensor:
    """Shannon's 1959 cone bound: no code of ``M`` equal-energy codewords in ``uses`` complex uses has a larger ``P_c``.

    With the codeword along the first axis at distance ``a = sqrt(n SNR)``, the noisy point
    ``(a + z_1, z_2..z_n)`` is within angle ``theta`` of it iff ``a + z_1 > 0`` and
    ``z_2^2 + ... + z_n^2 < tan^2(theta) (a + z_1)^2``: a chi-square with ``n - 1`` degrees of freedom.
    """
    _check(m, uses)
    n = 2 * uses
    a = (n * _snr(snr_db)).sqrt()[..., None]
    if m == 2:  # the cone is a half-space
        return normal_cdf(a[..., 0])
    tan2 = math.tan(cap_angle(m, n)) ** 2
    span = a + 12.0
    t = torch.linspace(0.0, 1.0, GRID, dtype=torch.float64) * span  # t = a + z_1 > 0
    density = torch.exp(-0.5 * (t - a).square()) / math.sqrt(2 * math.pi)
    inside = torch.special.gammainc(torch.tensor((n - 1) / 2.0, dtype=torch.float64), tan2 * t.square() / 2.0)
    return (_simpson(density * inside, 1.0) * span[..., 0] / (GRID - 1)).clamp(0.0, 1.0)


def normal_approx_success(m: int, uses: int, snr_db) -> torch.Tensor:
    """``1 - eps`` of the normal approximation for ``log2 M`` bits in ``uses`` complex uses (a reference, not a bound)."""
    _check(m, uses)
    return 1.0 - packet_error(math.log2(m), uses, _snr(snr_db))


def decision_accuracy(student_accuracy: float, p_correct, m: int):
    """``a P_c + (1 - a)(1 - P_c)/(M - 1)``: a right decision must arrive; a wrong one may be turned right."""
    return student_accuracy * p_correct + (1.0 - student_accuracy) * (1.0 - p_correct) / (m - 1)


def over_fading(success: Callable, spec, snr_db: float, draws: int = 20_000, seed: int = 0) -> float:
    """``E_h[success(snr_db + 10 log10 |h|^2)]`` over ``draws`` seeded block-fading gains of the channel ``spec``
    (receiver CSI); ``success`` maps a dB tensor to probabilities and is tabulated every ``FADING_STEP_DB``
    dB (interpolated linearly; fades more than ``FADING_FLOOR_DB`` below the SNR count as at that floor)."""
    channel = channel_from_spec(spec)
    if channel.name == "awgn":
        return float(success(torch.tensor([float(snr_db)], dtype=torch.float64))[0])
    generator = torch.Generator().manual_seed(seed)
    gain = channel.sample_fading(draws, generator, torch.device("cpu"), torch.float64).abs().square()
    effective = (float(snr_db) + 10.0 * torch.log10(gain.clamp_min(1e-30))).clamp_min(float(snr_db) - FADING_FLOOR_DB)
    lo = float(effective.min())
    steps = int(math.ceil((float(effective.max()) - lo) / FADING_STEP_DB)) + 1
    table = success(lo + FADING_STEP_DB * torch.arange(steps + 1, dtype=torch.float64))
    position = (effective - lo) / FADING_STEP_DB
    low = position.floor().long().clamp(max=steps - 1)
    frac = position - low
    return float((table[low] * (1 - frac) + table[low + 1] * frac).mean())
