"""VFE: task-oriented communication by the information bottleneck (Shao, Mao, Zhang, IEEE JSAC 2022), reimplemented.

The scheme, from the paper: a deterministic on-device encoder emits a feature vector under a peak
amplitude constraint (``tanh``); the channel's noise is what makes the received feature stochastic,
so ``p(z_hat | x)`` is Gaussian around the sent feature with the channel's noise variance. Training
minimises the variational information bottleneck: cross-entropy of the receiver's prediction plus
``beta`` times ``KL(p(z_hat | x) || q(z_hat))`` with a log-uniform (sparsity-inducing) prior ``q``,
whose KL is the variational-dropout approximation of Molchanov et al. (2017) in the per-dimension
noise-to-signal ratio ``alpha_i = sigma^2 / z_i^2``. Dimensions the bottleneck drives to large
``alpha`` carry nothing and are the ones VFE prunes; here every method sends ``k`` symbols, so the
active dimensions are recorded (``active_dims``) rather than cut from the packet.

Adapted to this project's channels: symbols are complex and each sample is normalised to unit
average power over its sent symbols (as for every method), so ``sigma^2`` is the noise per real
dimension at the sample's SNR, ``10^(-SNR/10) / 2``; variable length is trained as for Deep JSCC,
with nested prefixes (the first ``k`` symbols) at the same per-sample draws of ``k``, SNR and channel.
The receiver is an MLP over the received reals and the sent-mask, as the paper's decoder is an MLP.
"""

from __future__ import annotations

import torch
from torch import nn

from rkd.baselines.link import ImageLink, LinkModel, pad_symbols
from rkd.channels import normalize_power
from rkd.draws import symbol_mask
from rkd.losses import LossTerm

# Molchanov et al.'s fit of -KL(q || log-uniform) as a function of log alpha
K1, K2, K3 = 0.63576, 1.87320, 1.48695
ACTIVE_LOG_ALPHA = 3.0  # variational dropout's pruning threshold: above it a dimension is noise


def sparsity_kl(log_alpha: torch.Tensor) -> torch.Tensor:
    """``KL(N(z, alpha z^2) || log-uniform)`` per dimension (Molchanov's approximation; >= 0, -> 0 as alpha grows)."""
    negative = K1 * torch.sigmoid(K2 + K3 * log_alpha) - 0.5 * nn.functional.softplus(-log_alpha) - K1
    return -negative


def noise_log_alpha(reals: torch.Tensor, snr_db: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``log(sigma^2 / x^2)`` per real dimension of unit-power symbols at each sample's SNR (``[B, 2L]``)."""
    noise = 0.5 * torch.pow(10.0, -snr_db.float() / 10.0)
    return torch.log(noise)[:, None] - torch.log(reals.float().pow(2) + eps)


class VFEClassifier(LinkModel):
    """Image -> conv encoder -> ``max_symbols`` complex symbols in [-1, 1]^2 -> channel -> MLP receiver -> logits."""

    def __init__(self, link: ImageLink, width: int = 40, hidden: int = 64) -> None:
        super().__init__(link.channel_specs, link.max_symbols)
        in_channels, num_classes, reals = link.in_channels, link.num_classes, 2 * link.max_symbols
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, stride=2, padding=2),
            nn.PReLU(width),
            nn.Conv2d(width, width, 5, stride=2, padding=2),
            nn.PReLU(width),
            nn.Conv2d(width, width, 3, padding=1),
            nn.PReLU(width),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(width * 16, hidden),
            nn.PReLU(hidden),
            nn.Linear(hidden, reals),
            nn.Tanh(),  # the paper's peak amplitude constraint
        )
        self.receiver = nn.Sequential(nn.Linear(2 * reals, hidden), nn.PReLU(hidden), nn.Linear(hidden, hidden))
        self.act = nn.PReLU(hidden)
        self.head = nn.Linear(hidden, num_classes)

    def transmit(self, inputs: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        return self.as_symbols(self.encoder(inputs))

    def decoder(self, y: torch.Tensor, mask: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        y, mask = pad_symbols(y, mask, self.max_symbols)
        dtype = self.head.weight.dtype
        received = torch.view_as_real(y.to(torch.complex64)).flatten(1).to(dtype)
        sent = mask[..., None].expand(-1, -1, 2).flatten(1).to(dtype)
        return self.act(self.receiver(torch.cat([received, sent], dim=-1)))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def sent_log_alpha(self, z: torch.Tensor, snr_db: torch.Tensor, k: torch.Tensor) -> tuple:
        """``(log alpha [B, 2L], sent-mask [B, 2L])`` of the power-normalised symbols each sample sends."""
        mask = symbol_mask(k, self.max_symbols).to(z.device)
        reals = torch.view_as_real(normalize_power(z, mask)).flatten(1)
        return noise_log_alpha(reals, snr_db), mask[..., None].expand(-1, -1, 2).flatten(1)

    def training_outputs(self, features: torch.Tensor, z: torch.Tensor, snr_db: torch.Tensor, k: torch.Tensor) -> dict:
        """The bottleneck's KL to the sparsity prior over the symbols each sample sends."""
        log_alpha, sent = self.sent_log_alpha(z, snr_db, k)
        return {"bottleneck_kl": (sparsity_kl(log_alpha) * sent).sum(dim=-1)}

    def transmitter_modules(self) -> list:
        return [self.encoder]

    def receiver_modules(self) -> list:
        return [self.receiver, self.act, self.head]


class BottleneckKL(LossTerm):
    """The information bottleneck's rate term: the mean over the batch of each sample's summed KL."""

    requires = (("outputs", "bottleneck_kl"),)

    def forward(self, outputs, batch) -> torch.Tensor:
        return outputs["bottleneck_kl"].float().mean()


@torch.no_grad()
def active_dims(model: VFEClassifier, inputs: torch.Tensor, snr_db: float, rates: list, batch_size: int = 1000) -> dict:
    """Per k of ``rates``: the mean number of sent real dimensions with ``log alpha`` below the pruning threshold."""
    counts = {}
    for k in rates:
        total = 0.0
        for start in range(0, inputs.shape[0], batch_size):
            x = inputs[start : start + batch_size]
            snr = torch.full((x.shape[0],), float(snr_db))
            log_alpha, sent = model.sent_log_alpha(model.transmit(x, snr), snr, torch.full((x.shape[0],), int(k)))
            total += float(((log_alpha < ACTIVE_LOG_ALPHA) & sent).sum())
        counts[str(k)] = total / max(1, inputs.shape[0])
    return counts
