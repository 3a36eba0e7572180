"""Narrow strided 1x1 convs run as subsample + unit-stride conv: the same function, and no heap corruption."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

from rkd.config import TeacherConfig
from rkd.hardware.strided_pointwise import (
    WIDEST_CHANNEL_BLOCK,
    UnitStridePointwiseConv2d,
    is_narrow_strided_pointwise,
    use_unit_stride_pointwise,
)
from rkd.teacher.io import load_trained_teacher, save_teacher
from rkd.teacher.model import build_teacher

NAMES = [f"c{i}" for i in range(4)]
TINY = dict(embedded_hidden_sizes=[8, 16], embedded_depths=[1, 1], embedded_embedding_size=8, channels_last=True)


@pytest.mark.parametrize("stride", [(2, 2), (2, 1), (3, 3)])
@pytest.mark.parametrize("side", [14, 15])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_unit_stride_form_is_the_same_function_and_gradient(stride, side, channels_last):
    """The reference is oneDNN's strided kernel on a channels-first input, the layout it handles soundly."""
    torch.manual_seed(0)
    strided = nn.Conv2d(6, 12, 1, stride=stride, bias=True)
    unit = nn.Conv2d(6, 12, 1, stride=stride, bias=True)
    unit.load_state_dict(strided.state_dict())
    assert use_unit_stride_pointwise(unit) == 1 and type(unit) is UnitStridePointwiseConv2d
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(5, 6, side, side)
    xa, xb = x.clone().requires_grad_(), x.clone().contiguous(memory_format=fmt).requires_grad_()
    ya, yb = strided(xa), unit(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(ya)
    (ya * weights).sum().backward()
    (yb * weights).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(unit.weight.grad, strided.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(unit.bias.grad, strided.bias.grad, rtol=1e-5, atol=1e-5)


def test_only_narrow_strided_unpadded_pointwise_convs_are_switched():
    narrow = WIDEST_CHANNEL_BLOCK - 1
    model = nn.Sequential(
        nn.Conv2d(narrow, 8, 1, stride=2),  # switched
        nn.Conv2d(WIDEST_CHANNEL_BLOCK, 8, 1, stride=2),  # a whole block wide: oneDNN's own kernel
        nn.Conv2d(narrow, 8, 1),  # unit stride
        nn.Conv2d(narrow, 8, 1, stride=2, padding=1),  # padded: not a plain subsample
        nn.Conv2d(narrow, 8, 3, stride=2),  # not pointwise
    )
    keys = list(model.state_dict())
    assert [is_narrow_strided_pointwise(m) for m in model] == [True, False, False, False, False]
    assert use_unit_stride_pointwise(model) == 1
    assert [type(m) for m in model] == [UnitStridePointwiseConv2d, *[nn.Conv2d] * 4]
    assert list(model.state_dict()) == keys and use_unit_stride_pointwise(model) == 0


@pytest.mark.parametrize("family", ["regnet", "resnet"])
def test_a_narrow_teacher_is_switched_and_reloads_switched(family, tmp_path):
    teacher = build_teacher(TeacherConfig(embedded_family=family, **TINY), 4, NAMES, channels=1)
    switched = [m for m in teacher.modules() if type(m) is UnitStridePointwiseConv2d]
    assert switched and not any(is_narrow_strided_pointwise(m) for m in teacher.modules())
    save_teacher(teacher, tmp_path / "model")
    reloaded = load_trained_teacher(tmp_path / "model")
    assert len([m for m in reloaded.modules() if type(m) is UnitStridePointwiseConv2d]) == len(switched)


TRAIN_A_NARROW_CHANNELS_LAST_TEACHER = textwrap.dedent(
    """
    import torch
    torch.set_num_threads(2)  # the overrun lands in another thread's share of the workspace
    from rkd.config import TeacherConfig
    from rkd.teacher.model import build_teacher
    cfg = TeacherConfig(embedded_family="regnet", embedded_hidden_sizes=[8, 16], embedded_depths=[1, 1],
                        embedded_embedding_size=8, channels_last=True)
    teacher = build_teacher(cfg, 4, ["a", "b", "c", "d"], channels=1).train()
    optimizer = torch.optim.SGD(teacher.parameters(), lr=0.01)
    for step in range(40):
        for batch in (32, 13):
            pixels = torch.randint(0, 256, (batch, 28, 28, 1), dtype=torch.uint8)
            loss = teacher(pixels)["logits"].float().square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    print("trained")
    """
)


def test_training_a_narrow_channels_last_teacher_leaves_the_heap_intact():
    """glibc's heap checks (MALLOC_CHECK_=3) abort at the first corrupted chunk; an AVX-512 CPU running
    oneDNN's strided 1x1 backward-weights kernel on these narrow shortcuts aborts within a few steps."""
    env = {**os.environ, "MALLOC_CHECK_": "3", "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", TRAIN_A_NARROW_CHANNELS_LAST_TEACHER], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr[-2000:]
