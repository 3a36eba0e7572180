"""Deep JSCC for classification, and its SNR-adaptive variant (ADJSCC-style attention-feature modules).

Deep JSCC maps the image straight to channel symbols with a CNN and learns end to end, from the
task loss alone, what to send. Here the encoder is fully convolutional like Deep JSCC's: its last
convolution emits a 4x4 map of ``L/8`` channels, i.e. ``2L`` reals = ``L`` complex symbols, read
out channel-major so a transmitter that stops after ``k`` symbols sends a prefix of the map.
Training draws ``k`` per sample from the same rates as RKD-SC, so the prefix learns to carry the
most. The receiver reshapes the (zero-filled) received map, adds the sent-mask as extra input
planes (it knows which symbols arrived, as RKD-SC's decoder does), and classifies with a small
conv + MLP.

The adaptive variant puts an attention-feature (AF) module after every conv block on both sides:
channel-wise gains computed from the block's pooled output and the channel state, which is how
ADJSCC lets one network serve every SNR. The transmitter's state is the nominal SNR only; the
receiver's is (nominal SNR, effective SNR), the same inputs RKD-SC's CAT gets.
"""

from __future__ import annotations

import torch
from torch import nn

from rkd.baselines.link import ImageLink, LinkModel, pad_symbols
from rkd.models.cat import STATE_SCALE_DB

GRID = 4  # the encoder's output map is GRID x GRID


class AFModule(nn.Module):
    """Attention-feature module: scale each channel by a gain from (pooled feature, channel state)."""

    def __init__(self, channels: int, state_dim: int = 2) -> None:
        super().__init__()
        hidden = max(8, channels // 2)
        self.net = nn.Sequential(
            nn.Linear(channels + state_dim, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        context = x.mean(dim=(2, 3))
        gains = self.net(torch.cat([context, state.to(x.dtype) / STATE_SCALE_DB], dim=-1))
        return x * gains[:, :, None, None]


class ConvStage(nn.Module):
    """conv -> PReLU, then an AF module when the model is SNR-adaptive."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, adaptive: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2)
        self.act = nn.PReLU(c_out)
        self.af = AFModule(c_out) if adaptive else None

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(x))
        return self.af(x, state) if self.af is not None else x


class DeepJSCCClassifier(LinkModel):
    """Image -> CNN -> ``max_symbols`` complex symbols -> channel -> conv/MLP receiver -> logits.

    ``adaptive=False`` is Deep JSCC (no channel state anywhere); ``adaptive=True`` adds AF modules
    (ADJSCC). ``teacher_dim``: a training-only projector of the receiver's feature for feature KD. Input: the student's normalised images ``[B, C, H, W]`` (any H, W: the map is pooled
    to 8x8 before the stride-2 last conv if needed).
    """

    def __init__(
        self,
        link: ImageLink,
        width: int = 40,
        decoder_width: int = 32,
        hidden: int = 64,
        adaptive: bool = False,
        teacher_dim: int | None = None,
    ) -> None:
        super().__init__(link.channel_specs, link.max_symbols)
        in_channels, num_classes, max_symbols = link.in_channels, link.num_classes, link.max_symbols
        if max_symbols % 8 != 0:
            raise ValueError(
                f"argument 'max_symbols' = {max_symbols} is invalid for Deep JSCC: expected a multiple "
                f"of 8 (a 4x4 map of max_symbols/8 channels, 2 reals per symbol)"
            )
        self.adaptive = adaptive
        self.map_channels = 2 * max_symbols // (GRID * GRID)
        self.encoder_stages = nn.ModuleList(
            [
                ConvStage(in_channels, width, 5, 2, adaptive),
                ConvStage(width, width, 5, 2, adaptive),
                ConvStage(width, width, 3, 1, adaptive),
                ConvStage(width, width, 3, 1, adaptive),
            ]
        )
        self.pool = nn.AdaptiveAvgPool2d(2 * GRID)
        self.to_symbols = nn.Conv2d(width, self.map_channels, 3, stride=2, padding=1)
        self.decoder_stages = nn.ModuleList(
            [
                ConvStage(2 * self.map_channels, decoder_width, 3, 1, adaptive),
                ConvStage(decoder_width, decoder_width, 3, 1, adaptive),
            ]
        )
        self.readout = nn.Sequential(nn.Flatten(), nn.Linear(decoder_width * GRID * GRID, hidden), nn.PReLU(hidden))
        self.head = nn.Linear(hidden, num_classes)
        # feature KD from the teacher cache (deep-jscc-kd): the receiver's feature projected to the teacher's
        self.projector = nn.Linear(hidden, teacher_dim) if teacher_dim else None

    def training_outputs(self, features: torch.Tensor, z: torch.Tensor, snr_db: torch.Tensor, k: torch.Tensor) -> dict:
        return {} if self.projector is None else {"projected": self.projector(features)}

    def transmit(self, inputs: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        state = torch.stack([snr_db, snr_db], dim=-1).to(inputs.dtype)
        x = inputs
        for stage in self.encoder_stages:
            x = stage(x, state)
        if x.shape[-2:] != (2 * GRID, 2 * GRID):
            x = self.pool(x)
        return self.as_symbols(self.to_symbols(x).flatten(1))  # channel-major: symbol i = reals 2i, 2i+1

    def decoder(self, y: torch.Tensor, mask: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        y, mask = pad_symbols(y, mask, self.max_symbols)
        dtype = self.head.weight.dtype
        shape = (y.shape[0], self.map_channels, GRID, GRID)
        received = torch.view_as_real(y.to(torch.complex64)).reshape(shape).to(dtype)
        sent = mask[..., None].expand(-1, -1, 2).reshape(shape).to(dtype)
        x = torch.cat([received, sent], dim=1)
        state = state.to(dtype)
        for stage in self.decoder_stages:
            x = stage(x, state)
        return self.readout(x)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def transmitter_modules(self) -> list:
        return [self.encoder_stages, self.to_symbols]

    def receiver_modules(self) -> list:
        return [self.decoder_stages, self.readout, self.head]
