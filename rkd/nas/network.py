"""The student CNN: a DARTS evaluation network (stem, stacked cells, pool, linear) built from a genotype.

It follows DARTS's conventions (cells read the two previous cells' outputs, reduction cells at 1/3
and 2/3 depth double the channels, drop-path on non-identity ops, optional auxiliary head) with two
changes for a tiny CPU student: the stem may downsample (``rkd.nas.skeleton.build_stem``), and the
auxiliary head pools adaptively so any input size works. The skeleton (stem, cell stack, read-out)
is the search network's too; only the cells differ.

The forward pass returns the final feature map as a token sequence too, because stage 2 transmits
those tokens, not just the pooled vector.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path

import torch
from torch import nn

from rkd.nas.genotype import Genotype, load_genotype, validate_genotype
from rkd.nas.heads import ClassifierHead
from rkd.nas.ops import FactorizedReduce, Identity, ReLUConvBN, build_op
from rkd.nas.skeleton import StackedCell, build_stem, readout, reduction_layers, stack_cells, stem_forward


def apply_drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of one op's output with probability ``drop_prob`` (rescaled to keep the mean).

    Dropping a path per sample forces each node not to rely on a single incoming op.
    """
    if drop_prob <= 0.0:
        return x
    keep_prob = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep_prob)
    return x * mask / keep_prob


class Cell(StackedCell):
    """One normal or reduction cell instantiated from a genotype.

    ``s0`` (two cells back) and ``s1`` (previous cell) are first mapped to ``C`` channels; when the
    cell before ``s1`` was a reduction, ``s0`` still has twice ``s1``'s resolution and is reduced.
    In a reduction cell, the ops reading the cell inputs (index 0 or 1) use stride 2.
    """

    def __init__(
        self, genotype: Genotype, C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool
    ) -> None:
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
        self.ops = nn.ModuleList(build_op(name, C, 2 if reduction and index < 2 else 1, True) for name, index in edges)
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


class Student(nn.Module):
    """DARTS-style evaluation network; ``forward`` returns tokens, pooled features and logits.

    ``drop_path_prob`` is an attribute (initialised from ``drop_path``) so a trainer can ramp it up over
    epochs as DARTS does.
    """

    def __init__(
        self,
        genotype: Genotype | Mapping | str | Path,
        in_channels: int,
        num_classes: int,
        init_channels: int = 8,
        layers: int = 5,
        stem_stride: int = 2,
        stem_multiplier: int = 3,
        drop_path: float = 0.0,
        auxiliary: bool = False,
    ) -> None:
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

        C_stem = stem_multiplier * init_channels
        self.stem = build_stem(in_channels, C_stem, stem_stride)
        self.cells = stack_cells(layers, C_stem, init_channels, partial(Cell, self.genotype))
        self.reduction_indices = reduction_layers(layers)
        aux_index = 2 * layers // 3  # always < layers: the head reads the cell at 2/3 depth
        self.auxiliary_head: AuxiliaryHead | None = (
            AuxiliaryHead(self.cells.channels[aux_index], num_classes) if auxiliary else None
        )
        self.aux_index = aux_index
        self.out_channels = self.cells.channels[-1]
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = ClassifierHead(self.out_channels, num_classes)

    @property
    def token_dim(self) -> int:
        return self.out_channels

    @property
    def feature_dim(self) -> int:
        return self.out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s0 = s1 = stem_forward(self.stem, x)
        aux_logits = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(s1)
        out = readout(s1, self.global_pooling, self.classifier)
        if aux_logits is not None:
            out["aux_logits"] = aux_logits
        return out
