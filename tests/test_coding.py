"""Explicit short codes over rkd.channels, checked against closed forms and known values.

Independent references: the orthogonal-signal integral and antipodal/PSK/QAM error probabilities
computed here by their textbook formulas (numpy), the simplex table of /work/shared/PAPER.md (200,000
Monte Carlo trials), the cap fraction of a 3-d sphere, and Rayleigh-averaged BPSK.
"""

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from rkd.coding.bounds import (
    cap_angle,
    decision_accuracy,
    normal_approx_success,
    orthogonal_success,
    over_fading,
    simplex_success,
    sphere_packing_success,
)
from rkd.coding.codebooks import (
    biorthogonal,
    block_code,
    block_options,
    decision_code,
    gray_psk,
    orthogonal,
    pairwise_error,
    psk,
    simplex,
)
from rkd.coding.decision import decision_reference
from rkd.coding.link import data_uses, message_success, send_messages

AWGN = {"name": "awgn"}
PHI = NormalDist().cdf
# PAPER.md, "The channel's limit for the decision itself": P_c of 10 decisions, SNR -10, -6, -2, 0, 4 dB
PAPER_SNRS = (-10.0, -6.0, -2.0, 0.0, 4.0)
PAPER_TABLE = {
    4: (0.321, 0.503, 0.771, 0.894, 0.996),
    8: (0.450, 0.709, 0.945, 0.989, 1.000),
    16: (0.638, 0.901, 0.997, 1.000, 1.000),
    32: (0.844, 0.989, 1.000, 1.000, 1.000),
}


def numpy_orthogonal(m, two_e_over_n0):
    """Independent: P_c = int phi(y - mu) Phi(y)^(M-1) dy on a fine trapezoid grid."""
    mu = math.sqrt(two_e_over_n0)
    y = np.linspace(mu - 15, mu + 15, 60001)
    cdf = np.array([PHI(v) for v in y])
    return float(np.trapezoid(np.exp(-0.5 * (y - mu) ** 2) / math.sqrt(2 * math.pi) * cdf ** (m - 1), y))


def numpy_psk(m, snr):
    """Independent: 8-PSK success by integrating the 2-d Gaussian around the point over its decision sector."""
    r = np.linspace(0, math.sqrt(snr) + 12 / math.sqrt(2), 3001)[:, None]
    theta = np.linspace(-math.pi / m, math.pi / m, 1001)[None, :]
    n0 = 1.0 / snr  # unit symbol energy
    density = r / (math.pi * n0) * np.exp(-(r**2 - 2 * r * np.cos(theta) + 1.0) / n0)
    return float(np.trapezoid(np.trapezoid(density, theta[0], axis=1), r[:, 0]))


def test_codebooks_have_unit_power_and_their_geometry():
    for code in (simplex(10, 8), orthogonal(8, 4), biorthogonal(10, 4), psk(8), decision_code(10, 4)[1]):
        assert torch.allclose(code.abs().square().sum(1), torch.full((code.shape[0],), float(code.shape[1])).double())
    gram = (simplex(10, 8) @ simplex(10, 8).conj().T).real / 8
    assert torch.allclose(gram, torch.eye(10).double() * (1 + 1 / 9) - 1 / 9, atol=1e-12)  # <c_i, c_j> = -E/(M-1)
    gram = (orthogonal(8, 4) @ orthogonal(8, 4).conj().T).real
    assert torch.allclose(gram, 4 * torch.eye(8).double(), atol=1e-12)
    points = torch.view_as_real(gray_psk(4)[:, 0])
    for i in range(16):  # Gray labels: nearest neighbours differ in one bit
        d = (points - points[i]).norm(dim=1)
        for j in torch.nonzero((d - d[d > 0].min()).abs() < 1e-9).flatten().tolist():
            assert bin(i ^ j).count("1") == 1
    assert decision_code(10, 8)[0] == "simplex" and decision_code(10, 1)[0] == "psk"
    name, code = decision_code(10, 4)  # no simplex of 10 points in 8 dimensions
    assert name == "spherical" and pairwise_error(code) < pairwise_error(biorthogonal(10, 4))
    for length, bits in block_options(4):
        assert block_code(bits, length)[1].shape == (2**bits, length)
    with pytest.raises(ValueError, match="simplex"):
        simplex(10, 4)


def test_closed_forms_against_independent_values():
    snrs = torch.tensor([-10.0, -4.0, 0.0, 3.0])
    for m, uses in ((2, 4), (8, 4), (16, 8)):
        ours = orthogonal_success(m, uses, snrs)
        ref = [numpy_orthogonal(m, 2 * uses * 10 ** (s / 10)) for s in snrs.tolist()]
        assert ours.tolist() == pytest.approx(ref, abs=1e-6)
    a = (8 * 10 ** (snrs / 10)).sqrt()
    assert orthogonal_success(2, 4, snrs).tolist() == pytest.approx([PHI(v / math.sqrt(2)) for v in a.tolist()])
    assert simplex_success(2, 4, snrs).tolist() == pytest.approx([PHI(v) for v in a.tolist()])  # antipodal
    # the simplex table: closed form within the table's Monte Carlo error (200,000 trials: SD <= 0.0011)
    for k in (8, 16, 32):
        assert simplex_success(10, k, torch.tensor(PAPER_SNRS)).tolist() == pytest.approx(PAPER_TABLE[k], abs=0.0035)


def test_sphere_packing_converse():
    assert cap_angle(8, 2) == pytest.approx(math.pi / 8, abs=1e-6)
    assert cap_angle(5, 3) == pytest.approx(math.acos(1 - 2 / 5), abs=1e-6)  # 3-d cap: (1 - cos) / 2 = 1/M
    snrs = torch.tensor([-6.0, 0.0, 6.0, 10.0])
    a = (8 * 10 ** (snrs / 10)).sqrt()
    assert sphere_packing_success(2, 4, snrs).tolist() == pytest.approx([PHI(v) for v in a.tolist()])  # exact at M=2
    exact_psk = [numpy_psk(8, 10 ** (s / 10)) for s in snrs.tolist()]
    assert sphere_packing_success(8, 1, snrs).tolist() == pytest.approx(exact_psk, abs=2e-4)  # exact for PSK
    for k in (4, 8, 16, 32):  # an upper bound on the best codes
        bound = sphere_packing_success(10, k, torch.tensor(PAPER_SNRS))
        assert all(b >= p - 0.0035 for b, p in zip(bound.tolist(), PAPER_TABLE[k]))
    assert all(sphere_packing_success(10, 8, snrs) >= simplex_success(10, 8, snrs))
    assert float(normal_approx_success(10, 32, torch.tensor(-10.0))) > PAPER_TABLE[32][0]  # optimistic at n = 64


def test_link_matches_closed_forms_on_awgn():
    # the target: the explicit code through rkd.channels within 1 point of its analytic P_c (orthogonal, AWGN)
    for s in (-8.0, -2.0, 2.0):
        mc = message_success(orthogonal(16, 8), AWGN, s, 8, 40_000, seed=1)
        assert mc == pytest.approx(float(orthogonal_success(16, 8, s)), abs=0.01)
    # the PAPER table's k = 4 row (the optimised spherical code) within Monte Carlo error
    code = decision_code(10, 4)[1]
    mc = [message_success(code, AWGN, s, 4, 40_000, seed=2) for s in PAPER_SNRS]
    assert mc == pytest.approx(PAPER_TABLE[4], abs=0.008)
    # QPSK: P_c = (1 - Q(sqrt(SNR)))^2; 8-PSK: its decision sector integrated numerically
    q = 1 - PHI(math.sqrt(10 ** (3 / 10)))
    assert message_success(gray_psk(2), AWGN, 3.0, 1, 40_000, seed=3) == pytest.approx((1 - q) ** 2, abs=0.006)
    assert message_success(gray_psk(3), AWGN, 8.0, 1, 40_000, seed=3) == pytest.approx(numpy_psk(8, 10**0.8), abs=0.006)


def test_fading_average_and_pilots():
    # BPSK (an antipodal pair on one use) on Rayleigh with CSI: P_e = (1 - sqrt(g / (1 + g))) / 2
    spec = {"name": "rayleigh", "csi": "perfect"}
    g = 10 ** (6 / 10)
    averaged = over_fading(lambda s: simplex_success(2, 1, s), spec, 6.0)
    assert 1 - averaged == pytest.approx((1 - math.sqrt(g / (1 + g))) / 2, abs=0.003)
    assert 1 - message_success(psk(2), spec, 6.0, 1, 40_000, seed=4) == pytest.approx(1 - averaged, abs=0.006)
    pilot = {"name": "rayleigh", "csi": "pilot", "pilots": 1}
    assert data_uses(pilot, 4) == 3 and data_uses(spec, 4) == 4
    with pytest.raises(ValueError, match="data uses"):
        send_messages(torch.zeros(5, dtype=torch.long), simplex(4, 4), pilot, 0.0, 4, torch.Generator())
    ref = decision_reference(10, 8, pilot, 0.0, 20_000, seed=0)
    assert ref["code_uses"] == 7 and ref["p_correct_from"].startswith("monte carlo")
    assert ref["p_correct"] < ref["converse"]
    none = decision_reference(10, 8, {"name": "rayleigh", "csi": "none"}, 10.0, 20_000, seed=0)
    assert none["converse"] is None and none["p_correct"] > 0.5  # phase-blind decoding still works


def test_decision_accuracy():
    assert decision_accuracy(1.0, 0.8, 10) == pytest.approx(0.8)
    assert decision_accuracy(0.9, 1.0, 10) == pytest.approx(0.9)
    assert decision_accuracy(0.9, 0.1, 10) == pytest.approx(0.1)  # the channel alone: chance
