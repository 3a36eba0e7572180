"""Codebooks of short explicit channel codes: ``M`` codewords of ``uses`` complex channel uses.

Every codebook is a complex ``[M, uses]`` tensor (float64 parts) whose rows all have unit average
power per complex symbol, ``sum |c|^2 = uses``: the normalisation ``rkd.channels`` applies to every
sample, so a codeword passes it unchanged. Equal-energy codes live on the sphere of radius
``sqrt(uses)`` in ``n = 2 uses`` real dimensions, where maximum likelihood decoding on AWGN is
"largest correlation".

* ``simplex``: ``M <= n + 1`` points with pairwise inner product ``-E/(M-1)``: the best known code
  there (optimal for ``M <= n + 1`` at moderate SNR).
* ``orthogonal`` (``M <= n``) and ``biorthogonal`` (``M <= 2n``): the textbook codes with closed-form
  error probabilities (``rkd.coding.bounds``).
* ``psk`` (``n = 2``): ``M`` points on the circle, optimal there (``gray_psk``: Gray-labelled).
* ``spherical``: the best (largest minimum distance) of a few seeded random codes, each spread
  over the sphere by a repulsion; for ``M > n + 1``, where no simplex exists.

``decision_code(M, uses)`` picks the code a decision (one of ``M`` classes) is sent with;
``block_code(bits, uses)`` the code for ``bits`` of a longer message in a block of ``uses``.
"""

from __future__ import annotations

import functools
import math

import torch

SPHERICAL_TRIES = 3
SPHERICAL_STEPS = 250
BLOCK_CODES = "PSK on one use; simplex or biorthogonal (2^bits <= 2n) on longer blocks"
DESIGN_SNR_DB = 0.0  # the spherical codes minimise their union bound here, and codes are ranked by it


def _check(m: int, uses: int) -> None:
    if isinstance(m, bool) or not isinstance(m, int) or m < 2:
        raise ValueError(f"argument 'M' = {m!r} is invalid: expected an integer number of codewords >= 2")
    if isinstance(uses, bool) or not isinstance(uses, int) or uses < 1:
        raise ValueError(f"argument 'uses' = {uses!r} is invalid: expected an integer number of channel uses >= 1")


def to_complex(points: torch.Tensor, uses: int) -> torch.Tensor:
    """Real ``[M, <= 2 uses]`` points -> complex ``[M, uses]`` codewords scaled to ``sum |c|^2 = uses``."""
    real = torch.zeros(points.shape[0], 2 * uses, dtype=torch.float64)
    real[:, : points.shape[1]] = points.double()
    real = real / real.norm(dim=1, keepdim=True).clamp_min(1e-300) * math.sqrt(uses)
    return torch.view_as_complex(real.reshape(points.shape[0], uses, 2).contiguous())


def simplex(m: int, uses: int) -> torch.Tensor:
    """The regular simplex: ``M`` equal-energy points, pairwise inner product ``-1/(M-1)`` of the energy."""
    _check(m, uses)
    if m > 2 * uses + 1:
        raise ValueError(
            f"argument 'M' = {m} is invalid: a simplex of {m} points needs n >= {m - 1} real dimensions, got {2 * uses}"
        )
    centred = torch.eye(m, dtype=torch.float64) - 1.0 / m
    _, _, basis = torch.linalg.svd(centred)  # rows span the (M-1)-dimensional subspace of the centred points
    return to_complex(centred @ basis[: m - 1].T, uses)


def orthogonal(m: int, uses: int) -> torch.Tensor:
    """``M <= n`` mutually orthogonal equal-energy codewords (one real dimension each)."""
    _check(m, uses)
    if m > 2 * uses:
        raise ValueError(f"argument 'M' = {m} is invalid: an orthogonal code needs M <= n = {2 * uses}")
    return to_complex(torch.eye(m, dtype=torch.float64), uses)


def biorthogonal(m: int, uses: int) -> torch.Tensor:
    """``M <= 2n`` codewords ``+e_1, -e_1, +e_2, -e_2, ...`` (the first ``M`` of them)."""
    _check(m, uses)
    if m > 4 * uses:
        raise ValueError(f"argument 'M' = {m} is invalid: a biorthogonal code needs M <= 2n = {4 * uses}")
    eye = torch.eye(2 * uses, dtype=torch.float64)
    return to_complex(torch.stack([sign * eye[i // 2] for i, sign in zip(range(m), [1.0, -1.0] * m)]), uses)


def psk(m: int) -> torch.Tensor:
    """``M`` points evenly on the unit circle: one complex use."""
    _check(m, 1)
    angles = 2 * math.pi * torch.arange(m, dtype=torch.float64) / m
    return torch.polar(torch.ones_like(angles), angles)[:, None]


def _gray(bits: int) -> torch.Tensor:
    """Position of each ``bits``-bit label on a ring: labels of neighbouring positions differ in one bit."""
    codes = torch.arange(2**bits)
    position = torch.empty_like(codes)
    position[codes ^ (codes >> 1)] = codes  # the Gray code of position p is p ^ (p >> 1)
    return position


def gray_psk(bits: int) -> torch.Tensor:
    """``2^bits``-PSK whose row ``i`` carries the bit pattern of ``i``, Gray-labelled around the circle."""
    return psk(2**bits)[_gray(bits)]


def min_distance(code: torch.Tensor) -> float:
    """The smallest Euclidean distance between two codewords."""
    real = torch.view_as_real(code).reshape(code.shape[0], -1)
    d = torch.cdist(real, real)
    return float(d[~torch.eye(code.shape[0], dtype=torch.bool)].min())


def pairwise_error(code: torch.Tensor, snr_db: float = DESIGN_SNR_DB) -> float:
    """The union bound on the error probability of ML decoding on AWGN at ``snr_db`` (per complex symbol):
    the mean over codewords of the sum of their pairwise errors ``Q(d_ij / (2 sigma))``."""
    return float(_union_bound(torch.view_as_real(code).reshape(code.shape[0], -1), snr_db))


def _union_bound(points: torch.Tensor, snr_db: float) -> torch.Tensor:
    sigma = math.sqrt(0.5 * 10.0 ** (-snr_db / 10.0))  # noise std per real dimension
    off = ~torch.eye(points.shape[0], dtype=torch.bool)
    d = (points[:, None, :] - points[None, :, :]).square().sum(-1)[off].clamp_min(1e-18).sqrt()
    return 0.5 * torch.special.erfc(d / (2.0 * sigma) / math.sqrt(2.0)).sum() / points.shape[0]


def _spread(m: int, uses: int, seed: int) -> torch.Tensor:
    """Seeded random points on the sphere of radius ``sqrt(uses)`` moved by gradient steps down the union bound
    (gradients on even when the caller evaluates under ``torch.no_grad``)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(m, 2 * uses, generator=generator, dtype=torch.float64).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=0.02)
    radius = math.sqrt(uses)
    with torch.enable_grad():
        for _ in range(SPHERICAL_STEPS):
            loss = _union_bound(x / x.norm(dim=1, keepdim=True) * radius, DESIGN_SNR_DB)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return to_complex(x.detach(), uses)


@functools.lru_cache(maxsize=256)
def _spherical_cached(m: int, uses: int, seed: int, tries: int) -> torch.Tensor:
    candidates = [_spread(m, uses, seed * 1000 + t) for t in range(tries)]
    return min(candidates, key=pairwise_error)


def spherical(m: int, uses: int, seed: int = 0, tries: int = SPHERICAL_TRIES) -> torch.Tensor:
    """The best (smallest union bound at ``DESIGN_SNR_DB``) of ``tries`` seeded random spherical codes, each
    moved down the union bound by gradient steps."""
    _check(m, uses)
    return _spherical_cached(m, uses, seed, tries).clone()


def decision_code(m: int, uses: int) -> tuple:
    """``(name, codebook)`` for one of ``M`` decisions in ``uses`` complex uses: PSK on one use, the simplex
    where it exists, else the better (by union bound at ``DESIGN_SNR_DB``) of the spherical and biorthogonal codes."""
    _check(m, uses)
    if uses == 1:
        return "psk", psk(m)
    if m <= 2 * uses + 1:
        return "simplex", simplex(m, uses)
    options = [("spherical", spherical(m, uses))]
    if m <= 4 * uses:
        options.append(("biorthogonal", biorthogonal(m, uses)))
    return min(options, key=lambda option: pairwise_error(option[1]))


def block_code(bits: int, uses: int) -> tuple:
    """``(name, codebook)`` carrying ``bits`` bits (row ``i`` = the bit pattern of ``i``) in a block of ``uses``.

    One use: Gray-labelled PSK. Longer blocks: the simplex (``2^bits <= n + 1``) or the biorthogonal
    code (``2^bits <= 2n``), the classic low-rate codes. All have equal energy: the channel normalises
    each packet's power, which would rescale a packet of unequal-energy (QAM) symbols by an amount the
    receiver does not know.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
        raise ValueError(f"argument 'bits' = {bits!r} is invalid: expected an integer >= 1")
    m = 2**bits
    if uses == 1:
        return "psk", gray_psk(bits)
    if m <= 2 * uses + 1:
        return "simplex", simplex(m, uses)
    if m <= 4 * uses:
        return "biorthogonal", biorthogonal(m, uses)
    raise ValueError(f"arguments 'bits'/'uses' = {bits}/{uses} have no block code: expected {BLOCK_CODES}")


def block_options(uses: int, max_bits: int = 8) -> list:
    """Every ``(block length, bits per block)`` of ``block_code`` that fills ``uses`` channel uses exactly."""
    options = []
    for length in (d for d in range(1, uses + 1) if uses % d == 0):
        for bits in range(1, max_bits + 1):
            m = 2**bits
            if length == 1 or m <= 4 * length:
                options.append((length, bits))
    return options
