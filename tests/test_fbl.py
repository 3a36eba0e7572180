"""Finite-blocklength rate: the normal approximation, a reference curve beside the explicit codes."""

import math
from statistics import NormalDist

import pytest
import torch

from rkd.coding.fbl import normal_approx_rate, packet_error, q_inverse


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
    assert float(packet_error(math.log2(10), 32, torch.tensor(0.1))) == pytest.approx(  # log2 M need not be whole
        float(packet_error(3, 32, torch.tensor(0.1))), abs=0.2
    )
