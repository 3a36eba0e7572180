"""CAT codec: shapes, per-sample independence, masking, state conditioning, gradients, graceful rate loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rkd.channels import get_channel
from rkd.draws import sample_rates, symbol_mask
from rkd.models.cat import CATDecoder, CATEncoder

IN_DIM, MAX_SYMBOLS, OUT_DIM = 12, 16, 24


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _codec(seed: int = 0) -> tuple[CATEncoder, CATDecoder]:
    torch.manual_seed(seed)
    encoder = CATEncoder(IN_DIM, d_model=32, depth=2, heads=4, max_symbols=MAX_SYMBOLS)
    decoder = CATDecoder(d_model=32, depth=2, heads=4, max_symbols=MAX_SYMBOLS, out_dim=OUT_DIM)
    return encoder.eval(), decoder.eval()


def _state(snr_db: torch.Tensor) -> torch.Tensor:
    return torch.stack([snr_db, snr_db - 3.0], dim=-1)


def _inputs(batch: int = 5, n_tokens: int = 9, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, n_tokens, IN_DIM, generator=g)
    state = _state(torch.rand(batch, generator=g) * 30 - 10)
    k = torch.tensor([1, 4, 16, 8, 2, 16, 3][:batch])
    return tokens, state, k


# ----------------------------------------------------------------------------- shapes and API


def test_shapes_and_dtypes_for_any_token_count():
    encoder, decoder = _codec()
    for n_tokens in (1, 9, 49):
        tokens, state, k = _inputs(n_tokens=n_tokens)
        z = encoder(tokens, state)
        assert z.shape == (5, MAX_SYMBOLS) and z.dtype == torch.complex64
    mask = symbol_mask(k, MAX_SYMBOLS)
    feature = decoder(z, mask, state)
    assert feature.shape == (5, OUT_DIM) and feature.dtype == torch.float32


def test_default_sizes_stay_small():
    encoder = CATEncoder(in_dim=32)
    decoder = CATDecoder(out_dim=128)
    assert encoder(torch.randn(2, 7, 32), torch.zeros(2, 2)).shape == (2, 64)
    assert sum(p.numel() for p in encoder.parameters()) < 200_000
    assert sum(p.numel() for p in decoder.parameters()) < 200_000


def test_symbol_mask_and_sample_rates():
    mask = symbol_mask(torch.tensor([0, 2, 5]), 5)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[False] * 5, [True, True, False, False, False], [True] * 5]
    rates = [2, 4, 8, 16]
    k = sample_rates(4000, rates, generator=torch.Generator().manual_seed(0))
    assert k.dtype == torch.long and k.shape == (4000,)
    counts = torch.stack([(k == r).sum() for r in rates])
    assert counts.sum() == 4000 and counts.min() > 900  # every rate, roughly uniform
    again = sample_rates(4000, rates, generator=torch.Generator().manual_seed(0))
    assert torch.equal(k, again)
    with pytest.raises(ValueError, match="rates"):
        sample_rates(3, [])


# ----------------------------------------------------------------------------- per-sample independence


def test_encoder_sample_independent_of_batch():
    encoder, _ = _codec()
    tokens, state, _ = _inputs()
    with torch.no_grad():
        batched = encoder(tokens, state)
        for i in range(tokens.shape[0]):
            alone = encoder(tokens[i : i + 1], state[i : i + 1])
            torch.testing.assert_close(alone[0], batched[i], atol=1e-5, rtol=1e-5)


def test_decoder_sample_independent_of_batch():
    encoder, decoder = _codec()
    tokens, state, k = _inputs()
    mask = symbol_mask(k, MAX_SYMBOLS)
    with torch.no_grad():
        y = get_channel("awgn")(encoder(tokens, state), state[:, 0], mask, generator=torch.Generator().manual_seed(0))
        batched = decoder(y, mask, state)
        for i in range(y.shape[0]):
            alone = decoder(y[i : i + 1], mask[i : i + 1], state[i : i + 1])
            torch.testing.assert_close(alone[0], batched[i], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- masking and conditioning


def test_decoder_ignores_unsent_symbols():
    encoder, decoder = _codec()
    tokens, state, k = _inputs()
    mask = symbol_mask(k, MAX_SYMBOLS)
    with torch.no_grad():
        y = encoder(tokens, state) * mask
        garbage = torch.complex(torch.randn(y.shape) * 100, torch.randn(y.shape) * 100)
        garbage[0, -1] = complex(float("nan"), float("inf"))  # sample 0 sends 1 symbol
        corrupted = torch.where(mask, y, garbage)
        torch.testing.assert_close(decoder(corrupted, mask, state), decoder(y, mask, state), atol=1e-6, rtol=1e-6)
        # while a sent symbol does matter
        changed = y.clone()
        changed[:, 0] += 1.0
        assert not torch.allclose(decoder(changed, mask, state), decoder(y, mask, state))


def test_decoder_survives_nothing_sent():
    _, decoder = _codec()
    y = torch.zeros(2, MAX_SYMBOLS, dtype=torch.complex64)
    feature = decoder(y, torch.zeros(2, MAX_SYMBOLS, dtype=torch.bool), torch.zeros(2, 2))
    assert torch.isfinite(feature).all()


def test_channel_state_changes_outputs():
    encoder, decoder = _codec()
    tokens, _, k = _inputs()
    low, high = _state(torch.full((5,), -5.0)), _state(torch.full((5,), 15.0))
    with torch.no_grad():
        z_low, z_high = encoder(tokens, low), encoder(tokens, high)
        assert (z_low - z_high).abs().mean() > 1e-3 * z_low.abs().mean()
        mask = symbol_mask(k, MAX_SYMBOLS)
        f_low, f_high = decoder(z_low * mask, mask, low), decoder(z_low * mask, mask, high)
        assert (f_low - f_high).abs().mean() > 1e-3 * f_low.abs().mean()
        # the effective-SNR column alone also matters (fading with CSI)
        faded = high.clone()
        faded[:, 1] = -10.0
        assert not torch.allclose(encoder(tokens, faded), z_high)


def test_gradients_flow_end_to_end_through_channel():
    encoder, decoder = _codec()
    encoder.train(), decoder.train()
    tokens, state, k = _inputs()
    mask = symbol_mask(k, MAX_SYMBOLS)
    y = get_channel("awgn")(encoder(tokens, state), state[:, 0], mask)
    decoder(y, mask, state).square().mean().backward()
    for name, module in (("encoder", encoder), ("decoder", decoder)):
        for param_name, param in module.named_parameters():
            assert param.grad is not None, f"{name}.{param_name} got no gradient"
            assert torch.isfinite(param.grad).all(), f"{name}.{param_name} has a non-finite gradient"
    assert encoder.in_proj.weight.grad.abs().sum() > 0
    assert encoder.queries.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- graceful degradation with rate


def test_variable_rate_training_degrades_gracefully():
    """Train with k drawn per sample; fewer symbols should cost accuracy but never collapse.

    0 dB (not a high SNR) so that extra symbols buy something: at high SNR two complex symbols
    already separate 8 classes and every k would tie at ~100%.
    """
    torch.manual_seed(0)
    n_classes, n_tokens, in_dim, snr_db, rates = 8, 4, 8, 0.0, [2, 4, 8, 16]
    prototypes = torch.randn(n_classes, n_tokens, in_dim)
    encoder = CATEncoder(in_dim, d_model=32, depth=1, heads=2, max_symbols=16)
    decoder = CATDecoder(d_model=32, depth=1, heads=2, max_symbols=16, out_dim=16)
    classifier = torch.nn.Linear(16, n_classes)
    channel = get_channel("awgn")
    parameters = [*encoder.parameters(), *decoder.parameters(), *classifier.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    data_gen = torch.Generator().manual_seed(1)

    def draw(batch: int, generator: torch.Generator):
        labels = torch.randint(n_classes, (batch,), generator=generator)
        return prototypes[labels] + 0.5 * torch.randn(batch, n_tokens, in_dim, generator=generator), labels

    def logits(tokens: torch.Tensor, k: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        snr = torch.full((tokens.shape[0],), snr_db)
        mask = symbol_mask(k, 16)
        received = channel.transmit(encoder(tokens, _state(snr)), snr, mask, generator=generator)
        return classifier(decoder(received.y, mask, received.state))

    for _ in range(150):
        tokens, labels = draw(64, data_gen)
        loss = F.cross_entropy(logits(tokens, sample_rates(64, rates, generator=data_gen), data_gen), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    encoder.eval(), decoder.eval()
    tokens, labels = draw(2000, torch.Generator().manual_seed(99))
    accuracy = {}
    with torch.no_grad():
        for k in rates:
            predicted = logits(tokens, torch.full((2000,), k), torch.Generator().manual_seed(5)).argmax(-1)
            accuracy[k] = (predicted == labels).float().mean().item()
    chance = 1.0 / n_classes
    assert accuracy[2] > 2.5 * chance, accuracy  # few symbols still carry the class: no collapse
    assert accuracy[16] >= accuracy[2] + 0.05, accuracy  # more symbols help
    for smaller, larger in zip(rates, rates[1:]):
        assert accuracy[larger] >= accuracy[smaller] - 0.03, accuracy  # monotone up to noise


def test_decoder_prefix_equals_masked_full_length():
    """Evaluation feeds only the first k symbols; that must equal the masked full-length call."""
    torch.manual_seed(0)
    decoder = CATDecoder(d_model=32, depth=2, heads=4, max_symbols=16, out_dim=8).eval()
    y = torch.randn(5, 16, dtype=torch.complex64)
    state = torch.randn(5, 2)
    for k in (1, 4, 16):
        full = decoder(y, symbol_mask(torch.full((5,), k), 16), state)
        prefix = decoder(y[:, :k], torch.ones(5, k, dtype=torch.bool), state)
        assert torch.allclose(full, prefix, atol=1e-5)
