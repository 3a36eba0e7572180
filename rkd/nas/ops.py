"""DARTS candidate operations: the vocabulary both hand-designed cells and the architecture search use.

Every op maps ``[B, C, H, W]`` to ``[B, C, ceil(H/s), ceil(W/s)]`` for stride ``s`` in {1, 2}, odd
sizes included (7x7 -> 4x4), so any mix of ops on one node's inputs can be summed.

``OPS`` maps a name to a builder ``(C, stride, affine) -> nn.Module``. To add an op (e.g. a cheaper
conv for a latency-aware search) register a builder under a new name::

    OPS["sep_conv_3x3_single"] = lambda C, stride, affine: DilConv(C, C, 3, stride, 1, 1, affine)

and, if the search should consider it, append its name to the search's primitive list. ``PRIMITIVES``
itself stays the standard DARTS list so published genotypes and search spaces keep their meaning.
Genotype validation looks names up in ``OPS`` at call time, so registered ops are accepted at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

OpBuilder = Callable[[int, int, bool], nn.Module]


class ReLUConvBN(nn.Module):
    """ReLU -> conv -> BN: the pre-activation order DARTS uses so a cell's summed outputs stay linear."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU -> (dilated) depthwise conv -> pointwise conv -> BN: a wide receptive field for few FLOPs."""

    def __init__(
        self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int, affine: bool = True
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=C_in, bias=False
            ),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked depthwise-separable blocks (only the first strided), as in DARTS's sep_conv ops."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Identity(nn.Module):
    """The stride-1 skip connection; a class of its own so drop-path can recognise and spare it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape, so a searched mixture can switch an edge off."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 convs on the even and the odd pixel grids, concatenated.

    A single strided 1x1 conv would only ever see even pixels; the second branch sees the odd ones
    (DARTS's offset-by-one input). Subsampling before the ReLU and convs is the same function as a
    stride-2 1x1 conv but touches a quarter of the data. For odd sizes the odd grid is one short and
    is zero-padded at the bottom/right, so both branches give ``ceil(H/2) x ceil(W/2)``.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        if C_out % 2 != 0:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        even = x[:, :, ::2, ::2]
        odd = x[:, :, 1::2, 1::2]
        odd = F.pad(odd, (0, even.shape[-1] - odd.shape[-1], 0, even.shape[-2] - odd.shape[-2]))
        return self.bn(torch.cat([self.conv_1(self.relu(even)), self.conv_2(self.relu(odd))], dim=1))


def _skip(C: int, stride: int, affine: bool) -> nn.Module:
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine)


OPS: dict[str, OpBuilder] = {
    "none": lambda C, stride, affine: Zero(stride),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine),
}

# The standard DARTS search space, in its published order (index i of an alpha row is PRIMITIVES[i]).
PRIMITIVES: list[str] = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
]


def build_op(name: str, C: int, stride: int, affine: bool = True) -> nn.Module:
    """Look an op up by name, with an error that lists the known names."""
    try:
        builder = OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; known ops: {sorted(OPS)}") from None
    return builder(C, stride, affine)
