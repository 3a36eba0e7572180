"""The earlier (conference) RKD-SC design: feature-MSE student + attention autoencoder over its feature.

That design distilled the student by feature MSE alone (its projected feature imitates the
teacher's), then sent the whole uncompressed projected feature: ``D`` reals as ``D/2`` complex
symbols, every one of them, every time. An attention autoencoder cut the vector into tokens, and
was trained on AWGN one epoch per SNR in a fixed order, with MSE to the teacher's feature plus
cross-entropy. The student stays frozen while the autoencoder trains.

Here (method ``conference``) the same schedule runs over the same training channel mixture as
every other method (each sample's channel drawn from ``channel.channels``), so no method is
compared on channels only the others saw in training; ``conference-awgn`` keeps the original
AWGN-only schedule as a variant.

The authors' code attended across the *batch* (a sample's code depended on the other samples sent
with it); here attention runs over the tokens of one sample only, so every sample is encoded alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rkd.baselines.link import LinkModel, pad_symbols
from rkd.engine import Step
from rkd.evaluation.records import validation_batch_generator
from rkd.models.cat import Attention, FeedForward


class Block(nn.Module):
    """Pre-norm transformer block, attention within one sample's tokens."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, 0.0)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, 2.0, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class TokenTransformer(nn.Module):
    """``[B, D]`` -> ``T`` tokens of ``D/T`` values -> blocks -> ``[B, D]``."""

    def __init__(self, dim: int, tokens: int, d_model: int, depth: int, heads: int = 4) -> None:
        super().__init__()
        self.tokens, self.chunk = tokens, dim // tokens
        self.embed = nn.Linear(self.chunk, d_model)
        self.position = nn.Parameter(torch.randn(tokens, d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(d_model, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, self.chunk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.reshape(x.shape[0], self.tokens, self.chunk)) + self.position
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm(h)).flatten(1)


class ConferenceAutoencoder(LinkModel):
    """Projected student feature ``[B, D]`` -> ``D/2`` complex symbols -> channel -> feature -> logits.

    No channel-state input (the conference design had none); the received feature is compared with
    the teacher's (``projected`` output, for the feature-MSE term) and classified by a linear head.
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        channel_specs: Sequence[dict],
        tokens: int = 16,
        d_model: int = 32,
        depth: int = 2,
    ) -> None:
        if feature_dim % (2 * tokens) != 0:
            raise ValueError(
                f"feature dimension {feature_dim} is invalid for the conference autoencoder: expected a "
                f"multiple of 2 * baselines.conference_tokens = {2 * tokens}; change conference_tokens"
            )
        super().__init__(channel_specs, feature_dim // 2)
        self.feature_dim = feature_dim
        self.encoder = TokenTransformer(feature_dim, tokens, d_model, depth)
        self.decoder_net = TokenTransformer(feature_dim, tokens, d_model, depth)
        self.head = nn.Linear(feature_dim, num_classes)

    def transmit(self, inputs: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        return self.as_symbols(self.encoder(inputs))

    def decoder(self, y: torch.Tensor, mask: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        y, _ = pad_symbols(y, mask, self.max_symbols)
        reals = torch.view_as_real(y.to(torch.complex64)).flatten(1).to(self.head.weight.dtype)
        return self.decoder_net(reals)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def training_outputs(self, features: torch.Tensor, z: torch.Tensor, snr_db: torch.Tensor, k: torch.Tensor) -> dict:
        return {"projected": features}  # the received feature is compared with the teacher's as it is

    def transmitter_modules(self) -> list:
        return [self.encoder]

    def receiver_modules(self) -> list:
        return [self.decoder_net, self.head]


class SNRScheduleObjective:
    """Conference training: ``snrs[epoch]`` for all samples, all ``D/2`` symbols sent.

    Each sample's channel is drawn uniformly from the model's ``n_channels`` channels (1: AWGN only).

    Validation draws SNRs uniformly over ``[snr_min, snr_max]`` (seeded per batch), so the engine's
    best-epoch selection rewards the whole range, not the SNR of the epoch just trained.
    """

    def __init__(
        self,
        features: dict,
        cache,
        loss,
        snrs: Sequence[float],
        steps_per_epoch: int,
        snr_min: float,
        snr_max: float,
        seed: int = 0,
        n_channels: int = 1,
    ) -> None:
        self.features = features
        self.cache = cache
        self.loss = loss
        self.snrs = [float(s) for s in snrs]
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.snr_min, self.snr_max = snr_min, snr_max
        self.seed = seed
        self.n_channels = n_channels
        self.step = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.eval_split = "val"

    def set_step(self, step: int) -> None:
        self.step = step

    def current_snr(self) -> float:
        return self.snrs[min(self.step // self.steps_per_epoch, len(self.snrs) - 1)]

    def __call__(self, model, batch: dict, train: bool) -> Step:
        split = "train" if train else self.eval_split
        index = batch["index"]
        inputs = self.features[split][index.cpu()].to(batch["label"].device)
        n = inputs.shape[0]
        if train:
            snr, gen = torch.full((n,), self.current_snr()), self.generator
        else:
            gen = validation_batch_generator(index[0], self.seed)
            snr = self.snr_min + (self.snr_max - self.snr_min) * torch.rand(n, generator=gen)
        unwrapped = getattr(model, "module", model)
        k = torch.full((n,), unwrapped.max_symbols, dtype=torch.long)
        device = inputs.device
        channel_ids = (
            torch.randint(0, self.n_channels, (n,), generator=gen)
            if self.n_channels > 1
            else torch.zeros(n, dtype=torch.long)
        )  # AWGN only: the original draws, untouched
        outputs = model(inputs, snr.to(device), k.to(device), channel_ids.to(device), generator=gen)
        targets = self.cache.targets(split, index)
        total, parts = self.loss(outputs, {"label": batch["label"], **targets})
        return Step(loss=total, logits=outputs["logits"], labels=batch["label"], terms=parts)
