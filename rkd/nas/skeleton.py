"""The macro skeleton both DARTS networks share: stem, stacked cells, pooled read-out.

The search network (``rkd.nas.supernet``) and the evaluation network (``rkd.nas.network``) differ only
in their cells; building the stem, the cell stack and the read-out here once keeps the searched cells
judged in exactly the network they will live in. Modules are created in the order the networks always
created them (stem, then cells in depth order), so initial weights do not depend on where this lives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import cast

import torch
from einops import rearrange
from torch import nn


class StackedCell(nn.Module):
    """What the skeleton needs of a cell: a module that knows its output channels and whether it reduces."""

    out_channels: int
    reduction: bool


class CellStack(nn.ModuleList):
    """The stacked cells (only ``StackedCell`` modules); ``channels[i]`` is cell ``i``'s output channel count."""

    channels: list[int]

    def __iter__(self) -> Iterator[StackedCell]:
        return cast(Iterator[StackedCell], super().__iter__())


# (C_prev_prev, C_prev, C, reduction, reduction_prev) -> a cell
CellBuilder = Callable[[int, int, int, bool, bool], StackedCell]


def build_stem(in_channels: int, C: int, stride: int) -> nn.Sequential:
    """conv3x3 + BN at stride 1 or 2; stride 4 is two stride-2 convs (a ReLU between them).

    A downsampling stem is this project's change to DARTS for a tiny CPU student: stride 2 turns 28x28
    into 14x14, which cuts every later cell's cost by 4x.
    """
    if stride in (1, 2):
        return nn.Sequential(nn.Conv2d(in_channels, C, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(C))
    if stride == 4:
        return nn.Sequential(
            nn.Conv2d(in_channels, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
            nn.ReLU(inplace=True),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
    raise ValueError(f"stem_stride must be 1, 2 or 4, got {stride}")


def reduction_layers(layers: int) -> list[int]:
    """Indices of the reduction cells: layers//3 and 2*layers//3, as in DARTS (one index if they coincide)."""
    return sorted({layers // 3, 2 * layers // 3})


def stack_cells(layers: int, stem_channels: int, init_channels: int, make_cell: CellBuilder) -> CellStack:
    """``layers`` cells, each reading the two previous outputs (the stem's twice for the first).

    Reduction cells (``reduction_layers``) double the channels; a cell after a reduction is told so,
    because its older input still has twice the resolution. The stack's width is ``cells.channels[-1]``.
    """
    cells = CellStack()
    cells.channels = []
    C_prev_prev, C_prev, C_curr = stem_channels, stem_channels, init_channels
    reductions = reduction_layers(layers)
    reduction_prev = False
    for i in range(layers):
        reduction = i in reductions
        if reduction:
            C_curr *= 2
        cell = make_cell(C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
        cells.append(cell)
        cells.channels.append(cell.out_channels)
        reduction_prev = reduction
        C_prev_prev, C_prev = C_prev, cell.out_channels
    return cells


def stem_forward(stem: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The stem's output in channels-last layout, the layout every cell then runs in.

    Channels-last activations make CPU pools, depthwise convs and BN faster; the weights keep the
    default layout so state dicts stay contiguous (safetensors needs that). The stem output is
    converted explicitly because a 1-channel input leaves the conv's layout choice ambiguous.
    """
    x = x.contiguous(memory_format=torch.channels_last)
    return stem(x).contiguous(memory_format=torch.channels_last)


def readout(s: torch.Tensor, pooling: nn.Module, classifier: nn.Module) -> dict[str, torch.Tensor]:
    """The last cell's map as tokens (what stage 2 transmits), its pooled features and their logits."""
    features = pooling(s).flatten(1)
    return {
        "tokens": rearrange(s, "b c h w -> b (h w) c"),
        "features": features,
        "logits": classifier(features),
    }
