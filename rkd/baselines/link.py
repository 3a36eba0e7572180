"""What every trained baseline shares with RKD-SC's stage 2: the same channels, per-sample draws and sweep.

A baseline is a model with ``transmit(inputs, snr_db) -> complex [B, L]``,
``decoder(y, mask, state) -> features`` and ``classify(features) -> logits``; that is exactly
the interface ``rkd.evaluation.sweep.channel_sweep`` drives, so baselines are evaluated by the same code,
on the same grid, with the same seeded noise as RKD-SC. ``forward`` sends each sample's first
``k`` symbols through its own channel, as ``RKDSystem.receive`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rkd.channels import channel_from_spec, send_per_sample
from rkd.config import RunConfig
from rkd.data import DataBundle
from rkd.draws import symbol_mask, training_channel_specs


@dataclass(frozen=True)
class ImageLink:
    """What an end-to-end image link is built for: the images' channels, the classes, the channels it is
    trained on (specs) and the largest number of complex symbols it sends (L)."""

    in_channels: int
    num_classes: int
    channel_specs: Sequence[dict]
    max_symbols: int


def image_link(cfg: RunConfig, bundle: DataBundle) -> ImageLink:
    """The link a run's config and data ask for: RKD-SC's training channels and ``codec.max_symbols``."""
    return ImageLink(bundle.channels, bundle.num_classes, training_channel_specs(cfg.channel), cfg.codec.max_symbols)


class LinkModel(nn.Module):
    """Base class of the trained baselines: transmitter, channels, receiver; per-sample throughout."""

    def __init__(self, channel_specs_: Sequence[dict], max_symbols: int) -> None:
        super().__init__()
        self.max_symbols = max_symbols
        self.channels = nn.ModuleList(channel_from_spec(spec) for spec in channel_specs_)

    def transmit(self, inputs: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def as_symbols(self, reals: torch.Tensor) -> torch.Tensor:
        """``[B, 2 * max_symbols]`` reals -> ``[B, max_symbols]`` complex symbols (consecutive pairs)."""
        reals = reals.float()
        return torch.view_as_complex(reals.reshape(reals.shape[0], self.max_symbols, 2).contiguous())

    def decoder(self, y: torch.Tensor, mask: torch.Tensor, state: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def classify(self, features: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(
        self,
        inputs: torch.Tensor,
        snr_db: torch.Tensor,
        k: torch.Tensor,
        channel_ids: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> dict:
        z = self.transmit(inputs, snr_db)
        sent = symbol_mask(k, z.shape[-1]).to(z.device)  # the first k[b] symbols through channel channel_ids[b]
        y, state, mask = send_per_sample(self.channels, z, snr_db, sent, channel_ids, generator)
        features = self.decoder(y, mask, state)
        return {
            "features": features,
            "logits": self.classify(features),
            **self.training_outputs(features, z, snr_db, k),
        }

    def training_outputs(self, features: torch.Tensor, z: torch.Tensor, snr_db: torch.Tensor, k: torch.Tensor) -> dict:
        """More outputs for a loss term (e.g. a projection into the teacher's feature space); none by default.
        ``z``: the sent symbols, ``snr_db`` and ``k`` each sample's draws."""
        return {}


def pad_symbols(y: torch.Tensor, mask: torch.Tensor, max_symbols: int) -> tuple:
    """Accept a prefix of ``n <= max_symbols`` received symbols (as the sweep sends) and pad to full length."""
    n = y.shape[-1]
    if n > max_symbols or n < 1 or mask.shape != y.shape:
        raise ValueError(
            f"arguments 'y'/'mask' have shapes {tuple(y.shape)}/{tuple(mask.shape)}: expected both "
            f"[batch, n] with 1 <= n <= max_symbols={max_symbols}"
        )
    if n < max_symbols:
        y = torch.cat([y, y.new_zeros(y.shape[0], max_symbols - n)], dim=1)
        mask = torch.cat([mask.bool(), mask.new_zeros(mask.shape[0], max_symbols - n, dtype=torch.bool)], dim=1)
    y = torch.where(mask.bool(), y, torch.zeros((), dtype=y.dtype, device=y.device))
    return y, mask.bool()


class NoTeacher:
    """Stands in for the teacher cache where a baseline learns from labels only (Deep JSCC)."""

    def targets(self, split: str, index: torch.Tensor) -> dict:
        return {}
