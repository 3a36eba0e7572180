"""Accuracy over the channel: every channel x SNR x channel uses k, with seeded noise.

The transmitter output is computed once per SNR; each channel/k pair then only costs a channel draw
and the receiver, run on the first k symbols. Each (SNR, channel, k) cell draws its noise from a
generator seeded with the eval seed alone, on the CPU, so a cell's records do not depend on which
process ran it or how many there were. RKD-SC and every baseline are swept by this one function.
"""

from __future__ import annotations

import torch

from rkd.channels import channel_from_spec
from rkd.evaluation.records import cell_generator, channel_record
from rkd.models.frozen_tokens import batched
from rkd.run.estimate import advance
from rkd.run.progress import progress_bar

METHOD = "rkd-sc"


def snr_grid(eval_cfg) -> list:
    """The evaluated SNRs: ``snr_min`` to ``snr_max`` in steps of ``snr_step`` (dB)."""
    count = int(round((eval_cfg.snr_max - eval_cfg.snr_min) / eval_cfg.snr_step)) + 1
    return [round(eval_cfg.snr_min + i * eval_cfg.snr_step, 6) for i in range(count)]


def my_share(items: list, rank: int, world_size: int) -> list:
    """Round-robin: process ``rank`` of ``world_size`` takes items rank, rank + world_size, ..."""
    return list(items)[rank::world_size]


@torch.no_grad()
def channel_sweep(
    system,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    channel_specs: list,
    snrs: list,
    rates: list,
    batch_size: int,
    seed: int,
    progress: bool = True,
    method: str = METHOD,
    keep: list | None = None,
) -> list:
    """Accuracy records of an RKD system for every channel x SNR x k, on precomputed student tokens.

    Any model with ``transmit(inputs, snr)``, ``decoder(y, mask, state)`` and ``classify(features)``
    sweeps the same way under its own ``method`` name (the baselines do), with the same seeded noise.
    ``keep``: a list that receives each record's per-image correctness (bool ``[n]``, for paired tests).
    """
    system.eval()
    records = []
    n = tokens.shape[0]
    device = next(system.parameters()).device
    tokens, labels = tokens.to(device), labels.to(device)
    channels = [channel_from_spec(spec) for spec in channel_specs]
    bar = progress_bar(len(snrs) * len(channels) * len(rates), "evaluate", enabled=progress, unit="cells")
    for snr in snrs:
        snr_all = torch.full((n,), float(snr), device=device)
        z = batched(lambda t: system.transmit(t, snr_all[: t.shape[0]]), tokens, batch_size, work=None)  # noqa: B023 - called at once, inside the loop
        for spec, channel in zip(channel_specs, channels):
            for k in rates:
                generator = cell_generator(seed)
                correct, hits = 0, []
                for start in range(0, n, batch_size):
                    zb = z[start : start + batch_size, :k]
                    snr_b = snr_all[start : start + zb.shape[0]]
                    mask = torch.ones(zb.shape, dtype=torch.bool, device=device)
                    out = channel.transmit(zb, snr_b, mask, generator=generator)
                    features = system.decoder(out.y, out.mask, out.state.float())
                    preds = system.classify(features).argmax(-1)
                    hit = preds == labels[start : start + zb.shape[0]]
                    correct += int(hit.sum())
                    hits.append(hit.cpu())
                if keep is not None:
                    keep.append(torch.cat(hits))
                records.append(channel_record(method, spec, snr, k, correct / n, n))
                bar.update(1)
                advance("sweep", n)
    bar.close()
    return records
