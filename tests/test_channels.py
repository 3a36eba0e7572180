"""Channel statistics against theory, masking, CSI handling, reproducibility, SNR buckets and errors."""

from __future__ import annotations

import math

import pytest
import torch

from rkd.channels import (
    ChannelOutput,
    channel_from_spec,
    channel_label,
    get_channel,
    normalize_power,
)
from rkd.draws import SNRSampler

N_SAMPLES = 20_000
N_SYMBOLS = 64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_symbols(batch: int, n: int, seed: int = 0) -> torch.Tensor:
    g = _gen(seed)
    scale = torch.rand(batch, 1, generator=g) * 10 + 0.1  # very different powers per sample
    return torch.complex(torch.randn(batch, n, generator=g), torch.randn(batch, n, generator=g)) * scale


def _random_mask(batch: int, n: int, seed: int = 1) -> torch.Tensor:
    g = _gen(seed)
    mask = torch.rand(batch, n, generator=g) < 0.5
    mask[:, 0] = True  # at least one sent symbol per sample
    return mask


# ----------------------------------------------------------------------------- normalisation


def test_normalize_power_unit_power_over_sent_symbols_only():
    z = _random_symbols(512, N_SYMBOLS)
    mask = _random_mask(512, N_SYMBOLS)
    x = normalize_power(z, mask)
    power = (x.abs() ** 2 * mask).sum(-1) / mask.sum(-1)
    torch.testing.assert_close(power, torch.ones(512), atol=1e-5, rtol=0)
    assert torch.all(x[~mask] == 0)
    full = normalize_power(z)
    torch.testing.assert_close(full.abs().square().mean(-1), torch.ones(512), atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_normalize_power_survives_zero_input_and_half_precision():
    zeros = normalize_power(torch.zeros(2, 8, dtype=torch.complex64))
    assert torch.all(torch.isfinite(zeros.real)) and torch.all(zeros == 0)
    nothing_sent = normalize_power(_random_symbols(2, 8), torch.zeros(2, 8, dtype=torch.bool))
    assert torch.all(nothing_sent == 0)
    half = normalize_power(_random_symbols(4, 8).to(torch.complex32))
    assert half.dtype == torch.complex64


# ----------------------------------------------------------------------------- noise and fading statistics


@pytest.mark.parametrize("snr_db", [-10.0, 0.0, 10.0])
def test_awgn_noise_variance_matches_snr(snr_db: float):
    x = normalize_power(_random_symbols(N_SAMPLES, N_SYMBOLS))
    out = get_channel("awgn").transmit(x, torch.full((N_SAMPLES,), snr_db), generator=_gen(2))
    noise = out.y - x
    expected = 10 ** (-snr_db / 10)
    assert noise.abs().square().mean().item() == pytest.approx(expected, rel=0.02)
    # circularly symmetric: each of re/im carries half the variance
    assert noise.real.var().item() == pytest.approx(expected / 2, rel=0.02)
    assert noise.imag.var().item() == pytest.approx(expected / 2, rel=0.02)
    assert torch.all(out.h == 1)
    torch.testing.assert_close(out.state, torch.full((N_SAMPLES, 2), snr_db))


def test_snr_is_per_sample():
    x = normalize_power(_random_symbols(2, 4096))
    y = get_channel("awgn")(x, torch.tensor([0.0, 20.0]), generator=_gen(3))
    noise_power = (y - x).abs().square().mean(-1)
    assert noise_power[0].item() == pytest.approx(1.0, rel=0.1)
    assert noise_power[1].item() == pytest.approx(0.01, rel=0.1)


def _fading(name: str, **kwargs) -> torch.Tensor:
    x = torch.ones(N_SAMPLES, 1, dtype=torch.complex64)
    return get_channel(name, **kwargs).transmit(x, torch.full((N_SAMPLES,), 100.0), generator=_gen(4)).h


def test_rayleigh_gain_is_exponential():
    gain = _fading("rayleigh").abs().square()
    assert gain.mean().item() == pytest.approx(1.0, abs=0.03)
    assert gain.var().item() == pytest.approx(1.0, abs=0.08)  # Exp(1) has variance 1
    assert (gain < 0.1).float().mean().item() == pytest.approx(1 - math.exp(-0.1), abs=0.01)


@pytest.mark.parametrize("k_factor", [1.0, 4.0, 10.0])
def test_rician_power_and_k_factor_from_moments(k_factor: float):
    gain = _fading("rician", k_factor=k_factor).abs().square()
    assert gain.mean().item() == pytest.approx(1.0, abs=0.03)
    # moment estimator: with G = E|h|^2 and V = Var|h|^2, the LoS power is A^2 = sqrt(G^2 - V)
    mean, var = gain.mean().item(), gain.var().item()
    los = math.sqrt(max(mean**2 - var, 0.0))
    assert los / (mean - los) == pytest.approx(k_factor, rel=0.15)


def test_rician_line_of_sight_has_uniform_phase():
    h = _fading("rician", k_factor=4.0)
    assert h.mean().abs().item() < 0.03  # theta uniform: no fixed mean
    assert h.abs().mean().item() > 0.8  # but a strong line of sight in magnitude


@pytest.mark.parametrize("name", ["rayleigh", "rician"])
def test_one_fading_coefficient_per_sample(name: str):
    x = normalize_power(_random_symbols(64, 16))
    out = get_channel(name, csi="none").transmit(x, torch.full((64,), 200.0), generator=_gen(5))
    ratio = out.y / x
    torch.testing.assert_close(ratio, out.h[:, None].expand_as(ratio), atol=1e-4, rtol=1e-4)
    assert ratio[:, 0].abs().std().item() > 0.1  # and it does change between samples


@pytest.mark.parametrize("name", ["rayleigh", "rician"])
def test_perfect_csi_equalises_and_none_does_not(name: str):
    x = normalize_power(_random_symbols(256, 16))
    snr = torch.full((256,), 60.0)
    perfect = get_channel(name, csi="perfect").transmit(x, snr, generator=_gen(6))
    blind = get_channel(name, csi="none").transmit(x, snr, generator=_gen(6))
    torch.testing.assert_close(perfect.y, x, atol=0.05, rtol=0.0)
    assert (blind.y - x).abs().mean().item() > 0.3
    torch.testing.assert_close(blind.y, blind.h[:, None] * x, atol=0.05, rtol=0.0)
    # the receiver knows the effective SNR only with CSI
    torch.testing.assert_close(perfect.state[:, 0], snr)
    torch.testing.assert_close(perfect.state[:, 1], snr + 10 * torch.log10(perfect.h.abs().square()), atol=1e-3, rtol=0)
    torch.testing.assert_close(blind.state[:, 1], snr)


def test_equalised_noise_grows_in_deep_fades():
    x = normalize_power(_random_symbols(N_SAMPLES, 16))
    out = get_channel("rayleigh").transmit(x, torch.full((N_SAMPLES,), 10.0), generator=_gen(7))
    noise_power = (out.y - x).abs().square().mean(-1)
    gain = out.h.abs().square()
    deep, strong = gain < 0.2, gain > 2.0
    assert noise_power[deep].mean() > 10 * noise_power[strong].mean()


@pytest.mark.parametrize("name", ["awgn", "rayleigh", "rician"])
def test_masked_symbols_are_zero_and_power_is_per_sent_symbol(name: str):
    z = _random_symbols(128, 32)
    mask = _random_mask(128, 32)
    out = get_channel(name).transmit(z, torch.full((128,), 30.0), mask, generator=_gen(8))
    assert isinstance(out, ChannelOutput)
    assert out.y.shape == z.shape and out.h.shape == (128,) and out.state.shape == (128, 2)
    assert torch.all(out.y[~mask] == 0)
    y_power = (out.y.abs().square() * mask).sum(-1) / mask.sum(-1)
    assert y_power.median().item() == pytest.approx(1.0, abs=0.05)  # equalised, high SNR


def test_generator_reproducibility_and_forward_matches_transmit():
    z = _random_symbols(8, 16)
    snr = torch.linspace(-5, 15, 8)
    channel = get_channel("rician", k_factor=2.0)
    a = channel.transmit(z, snr, generator=_gen(9))
    b = channel.transmit(z, snr, generator=_gen(9))
    c = channel.transmit(z, snr, generator=_gen(10))
    torch.testing.assert_close(a.y, b.y, atol=0, rtol=0)
    torch.testing.assert_close(a.h, b.h, atol=0, rtol=0)
    assert not torch.allclose(a.y, c.y)
    torch.testing.assert_close(channel(z, snr, generator=_gen(9)), a.y, atol=0, rtol=0)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_dtypes_and_scalar_snr():
    z = _random_symbols(4, 8)
    y = get_channel("awgn")(z.to(torch.complex32), 10.0)
    assert y.dtype == torch.complex64
    out = get_channel("rayleigh").transmit(z.to(torch.complex128), 10.0)
    assert out.y.dtype == torch.complex128 and out.state.dtype == torch.float64


def test_gradients_flow_through_channel():
    z = _random_symbols(4, 8).requires_grad_(True)
    mask = _random_mask(4, 8)
    y = get_channel("rayleigh")(z, torch.full((4,), 10.0), mask)
    y.abs().square().sum().backward()
    assert z.grad is not None and torch.isfinite(torch.view_as_real(z.grad)).all()
    assert torch.all(z.grad[~mask] == 0)


# ----------------------------------------------------------------------------- construction and labels


def test_specs_and_labels():
    assert channel_label({"name": "awgn"}) == "awgn"
    assert channel_label({"name": "rayleigh", "csi": "perfect"}) == "rayleigh-csi"
    assert channel_label({"name": "rayleigh", "csi": "none"}) == "rayleigh-nocsi"
    assert channel_label({"name": "rician", "csi": "perfect", "k_factor": 4.0}) == "rician-k4-csi"
    assert channel_label({"name": "rician", "k_factor": 2.5, "csi": "none"}) == "rician-k2.5-nocsi"
    channel = channel_from_spec({"name": "rician", "csi": "none", "k_factor": 3})
    assert channel.k_factor == 3.0 and channel.csi == "none"
    assert get_channel("rayleigh").csi == "perfect" and get_channel("rician").k_factor == 4.0


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: get_channel("rayleighh"), ["name", "rayleighh", "awgn"]),
        (lambda: get_channel("rayleigh", csi="partial"), ["csi", "partial", "perfect"]),
        (lambda: get_channel("rician", k_factor=-1.0), ["k_factor", "-1.0", ">= 0"]),
        (lambda: get_channel("awgn", power=2), ["power", "csi"]),
        (lambda: channel_from_spec({"name": "awgn", "gain": 1}), ["gain", "name"]),
        (lambda: channel_from_spec({"csi": "none"}), ["spec", "name"]),
        (lambda: SNRSampler(10, 0, 6), ["snr_min", "10"]),
        (lambda: SNRSampler(0, 10, 0), ["n_buckets", "0"]),
        (lambda: SNRSampler(0, 10, 6, rank=2, world_size=2), ["rank", "2"]),
    ],
)
def test_errors_name_argument_value_and_accepted(call, words):
    with pytest.raises(ValueError) as info:
        call()
    for word in words:
        assert word in str(info.value)


# ----------------------------------------------------------------------------- SNR buckets


def test_snr_sampler_buckets_partition_the_range():
    sampler = SNRSampler(-10.0, 20.0, 6)
    edges = sampler.buckets()
    assert len(edges) == 6 and edges[0][0] == -10.0 and edges[-1][1] == 20.0
    assert all(hi - lo == pytest.approx(5.0) for lo, hi in edges)
    assert all(edges[i][1] == edges[i + 1][0] for i in range(5))


@pytest.mark.parametrize("world_size", [1, 2, 6])
def test_snr_sampler_coverage(world_size: int):
    n_buckets = 6
    samplers = [SNRSampler(-10.0, 20.0, n_buckets, rank=r, world_size=world_size) for r in range(world_size)]
    steps_to_cover = math.ceil(n_buckets / world_size)
    for start in range(4):
        at_step = [b for s in samplers for b in s.buckets_for(start)]
        assert len(set(at_step)) == min(world_size, n_buckets)  # processes never duplicate a bucket
        window = {b for step in range(start, start + steps_to_cover) for s in samplers for b in s.buckets_for(step)}
        assert window == set(range(n_buckets))  # every bucket within ceil(n/ws) consecutive steps
    # single process rotates one bucket per step
    if world_size == 1:
        assert [samplers[0].buckets_for(s)[0] for s in range(7)] == [0, 1, 2, 3, 4, 5, 0]


def test_snr_sampler_draws_inside_bucket_and_covers_range():
    sampler = SNRSampler(-10.0, 20.0, 6)
    drawn = []
    for step in range(6):
        snr = sampler.sample(2000, step, generator=_gen(step))
        lo, hi = sampler.buckets()[sampler.buckets_for(step)[0]]
        assert snr.shape == (2000,) and snr.min() >= lo and snr.max() <= hi
        assert snr.max() - snr.min() > 0.9 * (hi - lo)  # uniform inside, not a point
        drawn.append(snr)
    everything = torch.cat(drawn)
    histogram = torch.histc(everything, bins=30, min=-10.0, max=20.0)
    assert histogram.min() > 0.7 * histogram.mean()  # the union of 6 steps is uniform on the range
    again = sampler.sample(10, 3, generator=_gen(3))
    torch.testing.assert_close(again, drawn[3][:10])


# ----------------------------------------------------------------------------- pilot-based CSI


@pytest.mark.parametrize("name", ["rayleigh", "rician"])
def test_pilots_count_in_k_and_recover_the_data_at_high_snr(name):
    g = torch.Generator().manual_seed(11)
    z = torch.complex(torch.randn(256, 8, generator=g), torch.randn(256, 8, generator=g))
    k = torch.randint(2, 9, (256,), generator=g)
    mask = torch.arange(8)[None, :] < k[:, None]
    out = get_channel(name, csi="pilot", pilots=1).transmit(z, torch.full((256,), 120.0), mask, generator=_gen(12))
    assert torch.equal(out.mask.sum(-1), k - 1)  # one of the k channel uses carried the pilot
    data = normalize_power(z, out.mask)  # the encoder's first k - 1 symbols, normalised over themselves
    assert torch.allclose(out.y, data, atol=1e-3)  # h estimated and equalised: the data come back
    gain_db = 10 * torch.log10(out.h.abs().square())
    assert torch.allclose(out.state[:, 1], 120.0 + gain_db, atol=0.05)


def test_pilot_estimate_is_mmse_shrunk_at_low_snr():
    """At -10 dB an LMMSE estimate shrinks towards 0 and MMSE equalisation keeps the output bounded."""
    z = torch.ones(4000, 4, dtype=torch.complex64)
    out = get_channel("rayleigh", csi="pilot", pilots=2).transmit(z, torch.full((4000,), -10.0), generator=_gen(13))
    assert torch.equal(out.mask.sum(-1), torch.full((4000,), 2))
    assert torch.isfinite(out.y).all() and out.y.abs().max() < 50
    blind_zf = get_channel("rayleigh", csi="perfect").transmit(z, torch.full((4000,), -10.0), generator=_gen(13))
    assert out.y.abs().square().mean() < blind_zf.y.abs().square().mean()  # no zero-forcing noise blow-up


def test_pilot_mode_on_awgn_sends_no_pilots_and_bad_counts_are_refused():
    z = torch.randn(16, 4, dtype=torch.complex64)
    out = get_channel("awgn", csi="pilot").transmit(z, torch.full((16,), 10.0), generator=_gen(14))
    assert bool(out.mask.all())
    assert channel_label({"name": "rayleigh", "csi": "pilot", "pilots": 2}) == "rayleigh-pilot2"
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="pilots"):
            get_channel("rayleigh", csi="pilot", pilots=bad)
