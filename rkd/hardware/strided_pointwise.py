"""Narrow strided 1x1 convolutions, computed as subsampling then a unit-stride 1x1 convolution.

oneDNN's x86 backward-weights kernels for a strided 1x1 convolution first copy the strided input
into a unit-stride workspace ("reduce to unit stride"). With a channels-last input narrower than the
kernel's channel block (8 on AVX2, 16 on AVX-512) that copy writes past the workspace it booked: the
heap is corrupted, and the process later aborts or segfaults somewhere unrelated (upstream report:
https://github.com/uxlfoundation/oneDNN/issues/6035). HF ResNet and RegNet shortcuts are such convs,
so a narrow embedded teacher in channels-last, trained on an AVX-512 CPU, hits it.

A 1x1 convolution with stride ``s`` and no padding is exactly a 1x1 convolution of the input sampled
every ``s`` pixels, and at unit stride oneDNN needs no workspace. ``use_unit_stride_pointwise``
switches the narrow ones of a model to that form in place: same parameters, same state-dict keys
(so ``save_pretrained`` and ``from_pretrained`` are unaffected), same outputs and gradients.
Convolutions at least one channel block wide keep oneDNN's own strided kernel.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

WIDEST_CHANNEL_BLOCK = 16  # AVX-512's fp32 lanes: oneDNN's largest input-channel block on x86 CPUs


class UnitStridePointwiseConv2d(nn.Conv2d):
    """A strided, unpadded 1x1 ``nn.Conv2d`` that subsamples its input and convolves at unit stride."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        step_h, step_w = self.stride
        return F.conv2d(input[..., ::step_h, ::step_w], weight, bias, 1, 0, self.dilation, self.groups)


def is_narrow_strided_pointwise(module: nn.Module) -> bool:
    """A plain 1x1 ``nn.Conv2d`` with a stride above 1, no padding and fewer input channels than a block."""
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (1, 1)
        and module.stride != (1, 1)
        and module.padding in ((0, 0), "valid")
        and module.in_channels < WIDEST_CHANNEL_BLOCK
    )


def use_unit_stride_pointwise(model: nn.Module) -> int:
    """Switch ``model``'s narrow strided 1x1 convs to ``UnitStridePointwiseConv2d`` in place; how many."""
    switched = 0
    for module in model.modules():
        if is_narrow_strided_pointwise(module):
            module.__class__ = UnitStridePointwiseConv2d
            switched += 1
    return switched
