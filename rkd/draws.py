"""The per-sample draws of training: SNR (bucketed over processes and steps), channel uses k, the symbol
mask k implies, and which training channel each sample goes through.

The physics (``rkd.channels``) applies a channel to symbols; this module decides which channel, SNR
and k each sample of a batch gets. Every draw takes an optional ``torch.Generator``, which may live
on another device than the data, so a seeded run draws the same values on CPU and GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch


def _draw(
    sample: Callable, shape: Sequence[int], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``sample`` (``torch.randn``/``torch.rand``) on ``device``; a generator may live on another device than
    the data (e.g. CPU vs CUDA), so its draws are made where it lives and moved."""
    if generator is None:
        return sample(*shape, device=device, dtype=dtype)
    return sample(*shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def randn(
    shape: Sequence[int], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal draws."""
    return _draw(torch.randn, shape, generator, device, dtype)


def rand(
    shape: Sequence[int], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Uniform [0, 1) draws."""
    return _draw(torch.rand, shape, generator, device, dtype)


class SNRSampler:
    """Training SNRs drawn from equal-width buckets of ``[snr_min, snr_max]`` that rotate with the step.

    Rule: process ``rank`` of ``world_size`` at step ``s`` uses bucket ``(rank + s * world_size) mod
    n_buckets`` and draws every sample's SNR uniformly inside it. So at one step the processes hold
    ``min(world_size, n_buckets)`` distinct consecutive buckets (all of them when ``world_size >=
    n_buckets``), the window advances by ``world_size`` each step, and a single process walks
    through the buckets one per step, covering the whole range every ``n_buckets`` steps. Each
    process's batch is narrow in SNR while the gradient averaged over processes (or a few steps)
    spans the range - stratified sampling with no communication.
    """

    def __init__(self, snr_min: float, snr_max: float, n_buckets: int, rank: int = 0, world_size: int = 1) -> None:
        if not (math.isfinite(snr_min) and math.isfinite(snr_max) and snr_min < snr_max):
            raise ValueError(
                f"argument 'snr_min' = {snr_min!r} is invalid: expected a finite value below snr_max = {snr_max!r}"
            )
        if isinstance(n_buckets, bool) or not isinstance(n_buckets, int) or n_buckets < 1:
            raise ValueError(f"argument 'n_buckets' = {n_buckets!r} is invalid: expected an integer >= 1")
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"argument 'world_size' = {world_size!r} is invalid: expected an integer >= 1")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(
                f"argument 'rank' = {rank!r} is invalid: expected an integer in [0, world_size={world_size})"
            )
        self.snr_min = float(snr_min)
        self.snr_max = float(snr_max)
        self.n_buckets = n_buckets
        self.rank = rank
        self.world_size = world_size

    def buckets(self) -> list[tuple[float, float]]:
        """The (lo, hi) edges of every bucket, in increasing SNR."""
        width = (self.snr_max - self.snr_min) / self.n_buckets
        edges = [self.snr_min + i * width for i in range(self.n_buckets)] + [self.snr_max]
        return [(edges[i], edges[i + 1]) for i in range(self.n_buckets)]

    def buckets_for(self, step: int) -> list[int]:
        """This process's bucket indices at ``step`` (one bucket per process per step)."""
        return [(self.rank + step * self.world_size) % self.n_buckets]

    def sample(
        self,
        batch_size: int,
        step: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """SNRs in dB, ``[batch_size]``, uniform inside this process's bucket(s) at ``step``."""
        edges = self.buckets()
        chosen = self.buckets_for(step)
        device = torch.device(device) if device is not None else torch.device("cpu")
        lo = torch.tensor([edges[b][0] for b in chosen], device=device)
        hi = torch.tensor([edges[b][1] for b in chosen], device=device)
        which = torch.arange(batch_size, device=device) % len(chosen)
        u = rand((batch_size,), generator, device, torch.float32)
        return lo[which] + (hi[which] - lo[which]) * u

    def __repr__(self) -> str:
        return (
            f"SNRSampler(snr_min={self.snr_min}, snr_max={self.snr_max}, n_buckets={self.n_buckets}, "
            f"rank={self.rank}, world_size={self.world_size})"
        )


def symbol_mask(k: torch.Tensor, max_symbols: int) -> torch.Tensor:
    """Bool ``[B, max_symbols]``, True for the first ``k[b]`` symbols (those actually sent)."""
    positions = torch.arange(max_symbols, device=k.device)
    return positions[None, :] < k[:, None]


def sample_rates(
    batch_size: int,
    rates: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    proportional: bool = False,
) -> torch.Tensor:
    """Per-sample symbol counts ``k`` (LongTensor ``[B]``) drawn from ``rates``, so one batch trains all rates.

    Uniform over ``rates`` by default; ``proportional=True`` draws ``k`` with probability ``k / sum(rates)``:
    the symbols past the shortest prefix are only trained by the longer codes, so those get more samples.
    """
    if len(rates) == 0:
        raise ValueError(f"argument 'rates' = {list(rates)!r} is invalid: expected a non-empty list of symbol counts")
    table = torch.as_tensor(list(rates), dtype=torch.long)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if proportional:
        weights = table.to(device=gen_device, dtype=torch.float).clamp_min(1e-6)
        index = torch.multinomial(weights.expand(batch_size, -1), 1, generator=generator).squeeze(1).cpu()
        out = table[index]
        return out.to(device) if device is not None else out
    index = torch.randint(len(table), (batch_size,), generator=generator, device=gen_device).cpu()
    out = table[index]
    return out.to(device) if device is not None else out


def training_channel_specs(channel_cfg: Any) -> list:
    """The training channels of a ``ChannelTrainConfig`` as specs: each fading channel once per CSI mode.

    ``channel_cfg.csi`` is one mode or a list of them (one model trained for every mode it will be
    evaluated in); AWGN appears once, its receiver always knowing ``h = 1``.
    """
    modes = [channel_cfg.csi] if isinstance(channel_cfg.csi, str) else list(channel_cfg.csi)
    pilots = getattr(channel_cfg, "pilots", 1)
    specs = []
    for name in channel_cfg.channels:
        for csi in modes[:1] if name == "awgn" else modes:
            spec = {"name": name, "csi": csi, "k_factor": channel_cfg.k_factor}
            if csi == "pilot":
                spec["pilots"] = pilots
            specs.append(spec)
    return specs
