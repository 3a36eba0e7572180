"""The student CNN: a DARTS evaluation network (stem, stacked cells, pool, linear) built from a genotype.

It follows DARTS's conventions (cells read the two previous cells' outputs, reduction cells at 1/3
and 2/3 depth double the channels, drop-path on non-identity ops, optional auxiliary head) with two
changes for a tiny CPU student: the stem may downsample (stride 2 turns 28x28 into 14x14, which
cuts every later cell's cost by 4x), and the auxiliary head pools adaptively so any input size works.

The forward pass returns the final feature map as a token sequence too, because stage 2 transmits
those tokens, not just the pooled vector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Union

import torch
from einops import rearrange
from torch import nn

from rkd.models.heads import ClassifierHead
from rkd.nas.genotype import Genotype, load_genotype, validate_genotype
from rkd.nas.ops import FactorizedReduce, Identity, ReLUConvBN, build_op


def apply_drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of one op's output with probability ``drop_prob`` (rescaled to keep the mean).

    Dropping a path per sample forces each node not to rely on a single incoming op.
    """
    if drop_prob <= 0.0:
        return x
    keep_prob = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep_prob)
    return x * mask / keep_prob


class Cell(nn.Module):
    """One normal or reduction cell instantiated from a genotype.

    ``s0`` (two cells back) and ``s1`` (previous cell) are first mapped to ``C`` channels; when the
    cell before ``s1`` was a reduction, ``s0`` still has twice ``s1``'s resolution and is reduced.
    In a reduction cell, the ops reading the cell inputs (index 0 or 1) use stride 2.
    """

    def __init__(self, genotype: Genotype, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        edges = genotype.reduce if reduction else genotype.normal
        self.concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.steps = len(edges) // 2
        self.indices = [index for _, index in edges]
        self.ops = nn.ModuleList(
            build_op(name, C, 2 if reduction and index < 2 else 1, True) for name, index in edges
        )
        self.multiplier = len(self.concat)
        self.out_channels = self.multiplier * C

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for step in range(self.steps):
            node = 0
            for edge in (2 * step, 2 * step + 1):
                op = self.ops[edge]
                h = op(states[self.indices[edge]])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = apply_drop_path(h, drop_prob)
                node = node + h
            states.append(node)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """Extra classifier on the 2/3-depth features: a deep-supervision signal during training only.

    Unlike DARTS's head (which assumes an 8x8 map) it pools to 2x2 adaptively and stays small.
    """

    def __init__(self, C: int, num_classes: int, hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(C, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(4 * hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def _stem(in_channels: int, C: int, stride: int) -> nn.Sequential:
    """conv3x3 + BN at stride 1 or 2; stride 4 is two stride-2 convs (a ReLU between them)."""
    if stride in (1, 2):
        return nn.Sequential(nn.Conv2d(in_channels, C, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(C))
    if stride == 4:
        return nn.Sequential(
            nn.Conv2d(in_channels, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C), nn.ReLU(inplace=True),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C),
        )
    raise ValueError(f"stem_stride must be 1, 2 or 4, got {stride}")


def reduction_layers(layers: int) -> list[int]:
    """Indices of the reduction cells: layers//3 and 2*layers//3, as in DARTS (one index if they coincide)."""
    return sorted({layers // 3, 2 * layers // 3})


class Student(nn.Module):
    """DARTS-style evaluation network; ``forward`` returns tokens, pooled features and logits.

    ``drop_path_prob`` is an attribute (initialised from ``drop_path``) so a trainer can ramp it up over
    epochs as DARTS does.
    """

    def __init__(self, genotype: Union[Genotype, Mapping, str, Path], in_channels: int, num_classes: int,
                 init_channels: int = 8, layers: int = 5, stem_stride: int = 2, stem_multiplier: int = 3,
                 drop_path: float = 0.0, auxiliary: bool = False) -> None:
        super().__init__()
        if layers < 1 or init_channels < 1:
            raise ValueError(f"layers and init_channels must be >= 1, got {layers} and {init_channels}")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
        if isinstance(genotype, (Genotype, Mapping)):
            self.genotype = validate_genotype(genotype)
        else:  # a registry name or a path to a .json file
            self.genotype = load_genotype(genotype)
        self.layers = layers
        self.auxiliary = auxiliary
        self.drop_path_prob = drop_path

        C_curr = stem_multiplier * init_channels
        self.stem = _stem(in_channels, C_curr, stem_stride)

        C_prev_prev, C_prev, C_curr = C_curr, C_curr, init_channels
        self.reduction_indices = reduction_layers(layers)
        aux_index = 2 * layers // 3
        self.cells = nn.ModuleList()
        reduction_prev = False
        C_aux = None
        for i in range(layers):
            reduction = i in self.reduction_indices
            if reduction:
                C_curr *= 2
            cell = Cell(self.genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.out_channels
            if i == aux_index:
                C_aux = C_prev
        self.auxiliary_head: Optional[AuxiliaryHead] = (
            AuxiliaryHead(C_aux, num_classes) if auxiliary and C_aux is not None else None
        )
        self.aux_index = aux_index
        self.out_channels = C_prev
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = ClassifierHead(C_prev, num_classes)

    @property
    def token_dim(self) -> int:
        return self.out_channels

    @property
    def feature_dim(self) -> int:
        return self.out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # channels-last activations make CPU pools, depthwise convs and BN ~2x faster; the weights keep
        # the default layout so state dicts stay contiguous (safetensors needs that). The stem output is
        # converted explicitly because a 1-channel input leaves the conv's layout choice ambiguous.
        x = x.contiguous(memory_format=torch.channels_last)
        s0 = s1 = self.stem(x).contiguous(memory_format=torch.channels_last)
        aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(s1)
        features = self.global_pooling(s1).flatten(1)
        out = {
            "tokens": rearrange(s1, "b c h w -> b (h w) c"),
            "features": features,
            "logits": self.classifier(features),
        }
        if aux_logits is not None:
            out["aux_logits"] = aux_logits
        return out
