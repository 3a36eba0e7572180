"""Finite-blocklength rate (normal approximation) and the label/feature digital schemes built on it."""

import math
from statistics import NormalDist

import pytest
import torch

from rkd.baselines.digital import fbl_sweep, feature_bits_for, label_bits
from rkd.baselines.fbl import loss_probability, normal_approx_rate, packet_error, q_inverse


def reference_bits_real(n, snr_db, eps):
    """Independent: PPV normal approximation over n real dimensions, by the textbook formula."""
    p = 10 ** (snr_db / 10)
    c = 0.5 * math.log2(1 + p)
    v = p * (p + 2) / (2 * (p + 1) ** 2) * math.log2(math.e) ** 2
    return n * c - math.sqrt(n * v) * NormalDist().inv_cdf(1 - eps) + 0.5 * math.log2(n)


def test_normal_approximation_known_values():
    assert q_inverse(1e-3) == pytest.approx(3.090232, abs=1e-5)
    # n = 100 real dimensions, 0 dB, eps = 1e-3: 50 - sqrt(100 * 0.7805) * 3.0902 + 3.32 = 26.0 bits
    assert reference_bits_real(100, 0.0, 1e-3) == pytest.approx(26.02, abs=0.05)
    # 50 complex uses = 100 real dimensions
    assert 50 * normal_approx_rate(50, 0.0, 1e-3) == pytest.approx(reference_bits_real(100, 0.0, 1e-3), rel=1e-9)
    assert normal_approx_rate(100, 0.0, 1e-3) * 100 == pytest.approx(reference_bits_real(200, 0.0, 1e-3), rel=1e-9)


def test_rate_properties():
    for snr in (-10.0, 0.0, 10.0, 20.0):
        capacity = math.log2(1 + 10 ** (snr / 10))
        rates = [normal_approx_rate(k, snr, 1e-3) for k in (16, 64, 256, 4096, 10**6)]
        assert all(r < capacity for r in rates)
        assert rates == sorted(rates)  # more channel uses: closer to capacity
        assert capacity - rates[-1] < 0.01 * max(1.0, capacity)
        by_eps = [normal_approx_rate(64, snr, e) for e in (1e-6, 1e-3, 1e-1)]
        assert by_eps == sorted(by_eps)  # a looser error target buys rate


def test_packet_error_inverts_the_rate():
    snr = 10 ** (5.0 / 10)
    for k, eps in ((32, 1e-3), (100, 1e-2)):
        bits = k * normal_approx_rate(k, 5.0, eps)
        assert float(packet_error(math.floor(bits), k, torch.tensor(snr))) <= eps
        assert float(packet_error(math.ceil(bits), k, torch.tensor(snr))) >= eps
    assert float(packet_error(4, 32, torch.tensor(0.0))) == 1.0 and float(packet_error(0, 32, torch.tensor(0.0))) == 0.0
    errors = packet_error(4, 32, torch.tensor([0.01, 0.1, 1.0, 10.0]))
    assert torch.all(errors[1:] <= errors[:-1])
    assert float(errors[0]) == pytest.approx(0.68, abs=0.02)  # above capacity the approximation still credits 32%
    assert float(loss_probability(4, 32, torch.tensor(0.01))) == 1.0  # ... which the schemes count as lost
    assert float(loss_probability(4, 32, torch.tensor(10.0))) == float(errors[-1])


def test_label_digital_reaches_low_snr_and_fades():
    assert label_bits(10) == 4 and label_bits(2) == 1 and label_bits(100) == 7
    n = 4000
    labels = torch.arange(n) % 10
    right = torch.ones(n, dtype=torch.bool)  # a student that is always right
    fallback = torch.randint(10, (n,), generator=torch.Generator().manual_seed(3)) == labels
    keep = []
    records = fbl_sweep(
        lambda b: right,
        fallback,
        lambda snr, k: (4, 4),
        [{"name": "awgn"}, {"name": "rayleigh", "csi": "perfect"}],
        [-20.0, -5.0, 0.0, 10.0],
        [32],
        seed=0,
        method="label-digital",
        keep=keep,
    )
    cell = {(r["channel_label"], r["snr_db"]): r for r in records}
    assert cell[("awgn", 10.0)]["accuracy"] == 1.0 and cell[("awgn", 0.0)]["accuracy"] == 1.0
    # -5 dB: margin (32 log2(1.316) + 3 - 4) / sqrt(64 * 0.44) = 2.2 -> eps = Q(2.2) = 1.4%, 90% of those wrong
    assert cell[("awgn", -5.0)]["packet_error"] == pytest.approx(0.014, abs=0.003)
    assert cell[("awgn", -5.0)]["accuracy"] == pytest.approx(1 - 0.9 * 0.014, abs=0.006)
    assert cell[("awgn", -20.0)]["lost"] == 1.0  # 32 * log2(1.01) = 0.46 bits < 4: above capacity, lost
    assert cell[("awgn", -20.0)]["accuracy"] == pytest.approx(0.1, abs=0.02)  # a uniform guess
    # Rayleigh at 10 dB: outage when 32 log2(1 + 10|h|^2) < 4, i.e. |h|^2 < 0.009: P = 1 - exp(-0.009)
    ray = cell[("rayleigh-csi", 10.0)]
    assert ray["outage"] == pytest.approx(1 - math.exp(-0.009), abs=0.005) and ray["lost"] >= ray["outage"]
    assert len(keep) == len(records) and all(k.dtype == torch.bool and k.numel() == n for k in keep)
    assert records[0]["payload_bits"] == 4 and "packet_error" in records[0]


def test_feature_bits_choice():
    # 64 dims over 32 uses at 20 dB: capacity carries 213 bits (3 bits/value would fit), the normal
    # approximation at eps 1e-3 about 191 (213 - sqrt(64 * 1.04) * 3.09 + 3): only 2 bits/value
    assert feature_bits_for(20.0, 32, 64, [1, 2, 3, 4], 1e-3) == 2
    assert feature_bits_for(20.0, 32, 64, [1, 2, 3, 4], 0.5) == 3
    assert feature_bits_for(-20.0, 32, 8, [2, 4], 1e-3) == 2  # nothing meets the target: the smallest
