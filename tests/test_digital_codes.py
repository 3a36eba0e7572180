"""The digital baselines with explicit codes: label-digital and feature-digital over rkd.channels."""

import pytest
import torch

from rkd.baselines.feature_code import (
    PCACodec,
    choose_blocks,
    choose_split,
    feature_code_sweep,
    from_bits,
    from_blocks,
    to_bits,
    to_blocks,
)
from rkd.baselines.label_code import label_code_sweep
from rkd.coding.bounds import decision_accuracy, simplex_success

SPECS = [{"name": "awgn"}, {"name": "rayleigh", "csi": "perfect"}, {"name": "rayleigh", "csi": "pilot", "pilots": 1}]


def student(n, accuracy, seed=0):
    """Labels and decisions of a 10-class student that is right on the first ``accuracy`` share of images."""
    labels = torch.arange(n) % 10
    wrong = (labels + 1 + torch.randint(9, (n,), generator=torch.Generator().manual_seed(seed))) % 10
    return labels, torch.where(torch.arange(n) < int(accuracy * n), labels, wrong)


def test_label_digital_matches_the_codes_closed_form():
    n = 20_000
    labels, decisions = student(n, 0.9)
    keep = []
    records = label_code_sweep(
        decisions,
        labels,
        10,
        SPECS,
        [-10.0, -2.0, 4.0],
        [4, 8],
        seed=0,
        trials=20_000,
        method="label-digital",
        keep=keep,
    )
    cell = {(r["channel_label"], r["snr_db"], r["channel_uses"]): r for r in records}
    for snr in (-10.0, -2.0, 4.0):  # the target: within 1 point of the analytic value (simplex on AWGN)
        expected = float(decision_accuracy(0.9, simplex_success(10, 8, snr), 10))
        assert cell[("awgn", snr, 8)]["expected_accuracy"] == pytest.approx(expected, abs=1e-9)
        assert cell[("awgn", snr, 8)]["accuracy"] == pytest.approx(expected, abs=0.01)
        fading = cell[("rayleigh-csi", snr, 8)]
        assert fading["p_correct_from"] == "closed form" and fading["accuracy"] == pytest.approx(
            fading["expected_accuracy"], abs=0.01
        )
        spherical = cell[("awgn", snr, 4)]  # no closed form: the code's own Monte Carlo
        assert spherical["code"] == "spherical" and spherical["accuracy"] == pytest.approx(
            spherical["expected_accuracy"], abs=0.012
        )
        assert spherical["normal_approximation_accuracy"] is not None
        assert spherical["expected_accuracy"] <= spherical["converse_accuracy"] + 0.005
    pilot = cell[("rayleigh-pilot1", -2.0, 8)]
    assert pilot["code_uses"] == 7 and pilot["accuracy"] < cell[("rayleigh-csi", -2.0, 8)]["accuracy"]
    assert cell[("awgn", -10.0, 8)]["accuracy"] > 0.4  # no cliff: 10 messages in 16 real dimensions at -10 dB
    assert len(keep) == len(records) and all(k.shape == (n,) for k in keep)
    again = label_code_sweep(decisions, labels, 10, SPECS[:1], [-2.0], [8], 0, 20_000, "label-digital")
    assert again[0]["accuracy"] == cell[("awgn", -2.0, 8)]["accuracy"]  # seeded per cell


def test_bits_and_blocks_round_trip():
    indices = torch.randint(8, (5, 7), generator=torch.Generator().manual_seed(0))
    bits = to_bits(indices, 3)
    assert bits.shape == (5, 21) and torch.equal(from_bits(bits, 3), indices)
    assert to_bits(torch.tensor([[5]]), 3).tolist() == [[True, False, True]]  # most significant first
    messages = to_blocks(bits, 4, 6)  # 21 bits in 6 blocks of 4 (3 padding bits)
    assert messages.shape == (5, 6) and int(messages.max()) < 16
    assert torch.equal(from_blocks(messages, 4, 21), bits)


def test_block_choice_follows_the_snr():
    plans = [choose_blocks(8, snr, 0.01, 4000, 0) for snr in (-20.0, -4.0, 6.0, 20.0)]
    assert not plans[0]["target_met"] and plans[0]["payload_bits"] == 1  # nothing meets the target: one bit
    assert all(p["target_met"] for p in plans[1:])
    assert [p["payload_bits"] for p in plans] == sorted(p["payload_bits"] for p in plans)
    assert plans[-1]["block_length"] == 1 and plans[-1]["payload_bits"] >= 8 * 4  # PSK of >= 4 bits at 20 dB
    assert all(p["block_error"] <= 0.01 for p in plans[1:])


def test_pca_codec_and_feature_digital():
    gen = torch.Generator().manual_seed(1)
    n, dim = 3000, 16
    labels = torch.arange(n) % 4
    centres = torch.randn(4, dim, generator=gen) * 3
    features = centres[labels] + 0.3 * torch.randn(n, dim, generator=gen)
    head = torch.nn.Linear(dim, 4)
    with torch.no_grad():  # nearest centre
        head.weight.copy_(centres)
        head.bias.copy_(-0.5 * centres.square().sum(1))
    codec = PCACodec.fit(features)
    rebuilt = codec.reconstruct(codec.indices(features, dim, 8), 8)
    assert (rebuilt - features).abs().max() < 0.2  # every component at 8 bits
    assert (codec.reconstruct(codec.indices(features, 2, 6), 6).argmax(-1) >= 0).all()

    def score(dims, bits):
        return float(
            (head(codec.reconstruct(codec.indices(features, dims, bits), bits)).argmax(-1) == labels).float().mean()
        )

    assert choose_split(12, dim, [1, 2, 3, 4], score)[0] * choose_split(12, dim, [1, 2, 3, 4], score)[1] <= 12
    keep = []
    records = feature_code_sweep(
        codec,
        features,
        labels,
        head,
        lambda p: choose_split(p, dim, [1, 2, 4], score),
        SPECS[:2],
        [-25.0, 20.0],
        [8],
        0,
        0.01,
        4000,
        "feature-digital",
        keep,
    )
    cell = {(r["channel_label"], r["snr_db"]): r for r in records}
    assert cell[("awgn", 20.0)]["accuracy"] > 0.98 and cell[("awgn", 20.0)]["bit_error"] < 0.01
    assert cell[("awgn", -25.0)]["accuracy"] < 0.6 and not cell[("awgn", -25.0)]["target_met"]
    assert (
        cell[("awgn", 20.0)]["pca_dims"] * cell[("awgn", 20.0)]["bits_per_value"]
        <= cell[("awgn", 20.0)]["payload_bits"]
    )
    assert len(keep) == 4
