"""The CAT code uses its symbols: effective dimension grows with k, and longer codes beat energy alone."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rkd.channels import get_channel
from rkd.draws import sample_rates, symbol_mask
from rkd.evaluation.diagnostics import effective_dimensions, participation_ratio, rate_gains, summarise_rate_gains
from rkd.models.cat import CATDecoder, CATEncoder

MAX_SYMBOLS, RATES = 16, [2, 4, 8, 16]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_participation_ratio_counts_independent_directions():
    g = torch.Generator().manual_seed(0)
    independent = torch.randn(4000, 12, generator=g)
    assert participation_ratio(independent) == pytest.approx(12, rel=0.05)
    repeated = torch.randn(4000, 2, generator=g).repeat(1, 6)  # a repetition code: 6 copies of 2 reals
    assert participation_ratio(repeated) == pytest.approx(2, rel=0.05)
    assert participation_ratio(torch.zeros(10, 3)) == 0.0


def test_rate_gain_is_zero_for_an_energy_only_code_and_positive_otherwise():
    snrs = [-10.0, -4.0, 2.0, 8.0, 14.0, 20.0]

    def curve(shift: float) -> list:  # accuracy as a function of total energy: logistic in dB
        return [1 / (1 + math.exp(-(s + shift) / 4)) for s in snrs]

    energy_only = {4: curve(0.0), 16: curve(10 * math.log10(4))}
    records = [
        {"method": "m", "channel_label": "awgn", "snr_db": s, "channel_uses": k, "accuracy": a}
        for k, accs in energy_only.items()
        for s, a in zip(snrs, accs)
    ]
    gains = rate_gains(records, "m", "awgn")
    assert gains and all(abs(g["rate_gain"]) < 0.03 for g in gains)  # interpolation error only
    better = [dict(r, accuracy=r["accuracy"] + 0.1) if r["channel_uses"] == 16 else r for r in records]
    summary = summarise_rate_gains(rate_gains(better, "m", "awgn"))
    assert summary[16]["mean"] == pytest.approx(0.1, abs=0.03) and summary[16]["min"] > 0.07


def test_trained_toy_code_grows_in_dimension_and_beats_energy_only():
    """A class needs all 16 feature dimensions; a CAT trained at variable k must spread them over its symbols."""
    torch.manual_seed(0)
    n_classes, n_tokens, in_dim = 16, 4, 16
    g = torch.Generator().manual_seed(1)
    prototypes = torch.randn(n_classes, in_dim, generator=g) * 1.5
    encoder = CATEncoder(in_dim, d_model=32, depth=1, heads=2, max_symbols=MAX_SYMBOLS)
    decoder = CATDecoder(d_model=32, depth=1, heads=2, max_symbols=MAX_SYMBOLS, out_dim=32)
    classifier = torch.nn.Linear(32, n_classes)
    channel = get_channel("awgn")

    def draw(batch: int, generator: torch.Generator):
        labels = torch.randint(n_classes, (batch,), generator=generator)
        pooled = prototypes[labels] + 0.3 * torch.randn(batch, in_dim, generator=generator)
        return pooled[:, None, :] + 0.1 * torch.randn(batch, n_tokens, in_dim, generator=generator), labels

    def logits(tokens, k, snr, generator):
        state = torch.stack([snr, snr], dim=-1)
        mask = symbol_mask(k, MAX_SYMBOLS)
        out = channel.transmit(encoder(tokens, state), snr, mask, generator=generator)
        return classifier(decoder(out.y, out.mask, out.state))

    encoder.init_principal(draw(2000, g)[0].mean(dim=1))
    params = [*encoder.parameters(), *decoder.parameters(), *classifier.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    for _ in range(200):
        tokens, labels = draw(128, g)
        snr = torch.rand(128, generator=g) * 25 - 10
        k = sample_rates(128, RATES, generator=g, proportional=True)
        loss = F.cross_entropy(logits(tokens, k, snr, g), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    encoder.eval(), decoder.eval()
    tokens, labels = draw(3000, torch.Generator().manual_seed(9))
    dims = effective_dimensions(lambda t, s: encoder(t, torch.stack([s, s], dim=-1)), tokens, RATES, snr_db=5.0)
    # extra symbols carry new directions, up to the 16 reals (8 symbols) the 16-d source has
    assert dims[8] > dims[2] + 3 and dims[4] > dims[2] and dims[16] > dims[8] - 0.5, dims
    records = []
    with torch.no_grad():
        for k in (2, 16):
            for snr_db in (-6.0, -3.0, 0.0, 3.0, 6.0, 9.0, 12.0, 15.0):
                snr = torch.full((3000,), snr_db)
                pred = logits(tokens, torch.full((3000,), k), snr, torch.Generator().manual_seed(5)).argmax(-1)
                records.append(
                    {
                        "method": "toy",
                        "channel_label": "awgn",
                        "snr_db": snr_db,
                        "channel_uses": k,
                        "accuracy": float((pred == labels).float().mean()),
                    }
                )
    gains = summarise_rate_gains(rate_gains(records, "toy", "awgn"))
    assert gains[16]["mean"] > 0.05, (gains, records)  # k=16 beats k=2 given the same total energy
