"""Model input pipelines on uint8 batches: resize, channel conversion, normalisation and augmentation.

Pixels stay uint8 until a model's ``ImageTransform`` runs on the batch (on the GPU when there is
one): four times less memory than float and one resize per model instead of one per stored copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from rkd.config import DataConfig
from rkd.data.bundle import DataBundle

LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601, what PIL uses for RGB -> L


@dataclass(frozen=True)
class ImageTransform:
    """uint8 ``[B, H, W, C]`` -> normalised float ``[B, channels, size, size]`` on the batch's device.

    Teachers and students each own one, so the same uint8 batch can feed a 224 px RGB teacher
    and a 28 px grayscale student. Grayscale inputs are repeated to 3 channels (the paper's
    teachers are RGB); RGB inputs for a 1-channel model use the BT.601 luminance.
    """

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"ImageTransform.size = {self.size!r} is invalid: expected an integer >= 1")
        if self.channels not in (1, 3):
            raise ValueError(f"ImageTransform.channels = {self.channels!r} is invalid: expected 1 or 3")
        object.__setattr__(self, "mean", _per_channel("mean", self.mean, self.channels))
        object.__setattr__(self, "std", _per_channel("std", self.std, self.channels))
        if any(s <= 0 for s in self.std):
            raise ValueError(f"ImageTransform.std = {self.std} is invalid: expected values > 0")

    def describe(self) -> dict:
        """JSON-able record (stored in the teacher cache manifest)."""
        return {"size": self.size, "channels": self.channels, "mean": list(self.mean), "std": list(self.std)}

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dtype != torch.uint8 or pixels.dim() != 4 or pixels.shape[-1] not in (1, 3):
            raise ValueError(
                f"ImageTransform input must be a uint8 [B, H, W, C] batch with C in (1, 3), "
                f"got {pixels.dtype} {tuple(pixels.shape)}"
            )
        x = pixels.permute(0, 3, 1, 2).float().div_(255.0)
        in_channels = x.shape[1]
        if in_channels == 3 and self.channels == 1:  # reduce before resizing: 3x less work
            weights = torch.tensor(LUMINANCE, device=x.device).view(1, 3, 1, 1)
            x = (x * weights).sum(dim=1, keepdim=True)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        if in_channels == 1 and self.channels == 3:  # expand after resizing
            x = x.expand(-1, 3, -1, -1)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return ((x - mean) / std).contiguous()


def _per_channel(name: str, values: Any, channels: int) -> tuple[float, ...]:
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    if len(values) == 1:
        values = values * channels
    if len(values) == 3 and channels == 1:  # an RGB processor's statistics for a grayscale model
        values = [sum(w * v for w, v in zip(LUMINANCE, values))]
    if len(values) != channels:
        raise ValueError(f"ImageTransform.{name} = {values} is invalid: expected 1 or {channels} values")
    return tuple(values)


def augment(
    pixels: torch.Tensor, generator: torch.Generator, padding: int | None = None, flip: bool = True
) -> torch.Tensor:
    """Random crop after zero padding, plus random horizontal flip, on a uint8 ``[B, H, W, C]`` batch.

    One gather per batch, on the batch's device; random numbers come from ``generator`` (CPU) so
    a run is reproducible. ``padding`` defaults to H/8 clamped to 2..4 px (4 for 28-32 px images).
    """
    if pixels.dim() != 4:
        raise ValueError(f"augment expects a [B, H, W, C] batch, got shape {tuple(pixels.shape)}")
    b, h, w, _ = pixels.shape
    pad = padding if padding is not None else int(min(4, max(2, round(h / 8))))
    padded = F.pad(pixels, (0, 0, pad, pad, pad, pad))  # pads W and H, not C
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(pixels.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(pixels.device)
    rows = oy[:, None] + torch.arange(h, device=pixels.device)  # [B, H]
    cols = ox[:, None] + torch.arange(w, device=pixels.device)  # [B, W]
    if flip:
        flipped = (torch.rand(b, generator=generator) < 0.5).to(pixels.device)
        cols = torch.where(flipped[:, None], cols.flip(-1), cols)
    batch = torch.arange(b, device=pixels.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


def random_erase(
    pixels: torch.Tensor,
    generator: torch.Generator,
    probability: float,
    area: tuple[float, float] = (0.02, 0.25),
    aspect: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020) on a uint8 ``[B, H, W, C]`` batch: with ``probability``, one
    rectangle per image, of ``area`` of the image and log-uniform ``aspect``, is set to random noise.

    It hides parts of the object, so a teacher cannot lean on one region; the rectangles of the
    whole batch are one vectorised mask, random numbers come from ``generator`` (CPU) as in ``augment``.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"random erasing probability = {probability!r} is invalid: expected a number in [0, 1]")
    if probability == 0.0:
        return pixels
    b, h, w, c = pixels.shape
    fraction = torch.empty(b).uniform_(*area, generator=generator)
    ratio = torch.empty(b).uniform_(math.log(aspect[0]), math.log(aspect[1]), generator=generator).exp()
    eh = (fraction * h * w * ratio).sqrt().round().clamp(1, h).long()
    ew = (fraction * h * w / ratio).sqrt().round().clamp(1, w).long()
    top = (torch.rand(b, generator=generator) * (h - eh + 1)).long()
    left = (torch.rand(b, generator=generator) * (w - ew + 1)).long()
    chosen = torch.rand(b, generator=generator) < probability
    rows, cols = torch.arange(h), torch.arange(w)
    inside = (
        (rows[None, :, None] >= top[:, None, None])
        & (rows[None, :, None] < (top + eh)[:, None, None])
        & (cols[None, None, :] >= left[:, None, None])
        & (cols[None, None, :] < (left + ew)[:, None, None])
        & chosen[:, None, None]
    )
    noise = torch.randint(0, 256, (b, h, w, c), generator=generator, dtype=torch.uint8)
    mask = inside[..., None].to(pixels.device)
    return torch.where(mask, noise.to(pixels.device), pixels)


def channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 ``[N, H, W, C]`` images in [0, 1] units (chunked: no big float copy)."""
    channels = images.shape[-1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].reshape(-1, channels).to(torch.float64).div_(255.0)
        total += x.sum(0)
        total_sq += (x * x).sum(0)
        count += x.shape[0]
    mean = total / max(1, count)
    std = (total_sq / max(1, count) - mean**2).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def student_transform(cfg: DataConfig, bundle: DataBundle) -> ImageTransform:
    """The student's input pipeline: ``cfg.image_size``, the data's channels, train-split statistics."""
    mean, std = channel_stats(bundle.splits["train"].images)
    return ImageTransform(
        size=cfg.image_size, channels=bundle.channels, mean=tuple(mean), std=tuple(max(s, 1e-3) for s in std)
    )
