"""Small heads on pooled features: a projector into the teacher's feature space and a classifier.

Both default to a single Linear so the stage-1 student stays within its parameter budget; a hidden
layer (with LayerNorm, which is batch-size independent, unlike BatchNorm) is available for ablations.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(in_dim: int, out_dim: int, hidden: int | None, dropout: float) -> nn.Module:
    layers: list[nn.Module] = []
    if hidden is None:
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(in_dim, out_dim))
    else:
        layers += [nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.GELU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(hidden, out_dim))
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


class FeatureProjector(nn.Module):
    """Map the student's pooled features to the teacher's feature dimension for feature KD.

    The projector, not the student's own feature, absorbs the teacher's width and scale, so the student
    keeps a compact feature that later feeds the semantic transmitter.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.net = _mlp(in_dim, out_dim, hidden, 0.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class ClassifierHead(nn.Module):
    """Pooled features -> class logits (a Linear unless ``hidden`` is given)."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim, self.num_classes = in_dim, num_classes
        self.net = _mlp(in_dim, num_classes, hidden, dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)
