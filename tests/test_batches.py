"""Batches are indexed whole (no per-item collate in Python), the frozen student's tokens are computed in blocks
and kept on the device in the training precision, and the objective reads the teacher cache on the batch's
device. The 2-process version of the token blocks runs in tests/test_standins.py."""

from __future__ import annotations

import pytest
import torch


def test_image_and_token_batches_are_indexed_whole(fashion_bundle, monkeypatch):
    """Before: every batch was batch_size __getitem__ calls plus a Python collate."""
    from rkd.data import make_loader
    from rkd.data.loaders import IndexedImages
    from rkd.engine import make_accelerator
    from rkd.models.frozen_tokens import IndexedTokens, token_loader

    calls = []
    for cls in (IndexedImages, IndexedTokens):
        original = cls.__getitem__
        monkeypatch.setattr(cls, "__getitem__", lambda self, i, original=original: calls.append(i) or original(self, i))
    accelerator = make_accelerator(cpu=True)
    split = fashion_bundle.splits["train"]
    images = accelerator.prepare(make_loader(split, 32, shuffle=True, seed=0))
    batch = next(iter(images))
    assert batch["pixels"].shape == (32, 28, 28, 1) and batch["pixels"].dtype == torch.uint8
    assert torch.equal(batch["pixels"], split.images[batch["index"]])
    assert torch.equal(batch["label"], split.labels[batch["index"]])
    tokens = torch.randn(len(split), 4, 8)
    loader = accelerator.prepare(token_loader(tokens, split.labels, 16, shuffle=True, seed=0, drop_last=True))
    batch = next(iter(loader))
    assert torch.equal(batch["tokens"], tokens[batch["index"]]) and batch["tokens"].shape == (16, 4, 8)
    assert calls == []  # no single-item fetches


def test_blocks_cover_every_row_once():
    from rkd.models.frozen_tokens import block_bounds

    for n in (0, 1, 7, 45000):
        for world in (1, 2, 3, 8):
            bounds = [block_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_shared_tokens_are_the_students_tokens_in_the_training_precision(fashion_bundle, fake_fashion_dir, precision):
    from accelerate.state import AcceleratorState
    from test_pipeline import TINY

    from rkd.config import load_config
    from rkd.data import student_transform
    from rkd.engine import make_accelerator
    from rkd.models.factory import create_stage1_model
    from rkd.models.frozen_tokens import shared_tokens, student_tokens

    AcceleratorState._reset_state(True)
    accelerator = make_accelerator(precision, cpu=True)
    cfg = load_config(None, [*TINY, f"data.fashion_mnist_dir={fake_fashion_dir}"])
    torch.manual_seed(0)
    student = create_stage1_model(cfg, fashion_bundle, 12).student
    transform = student_transform(cfg.data, fashion_bundle)
    images = fashion_bundle.splits["val"].images
    got = shared_tokens(accelerator, student, transform, images, 25)
    reference = student_tokens(student, transform, images, 25)
    assert got.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    assert got.device == accelerator.device and got.shape == reference.shape
    assert torch.allclose(got.float(), reference, atol=0.1 if precision == "bf16" else 1e-6)
    AcceleratorState._reset_state(True)


def test_the_objective_reads_the_cache_on_the_batch_device(tiny_teacher_cache):
    """The cache is moved once per objective, not gathered on the CPU and copied at every step."""
    from rkd.config import LossConfig
    from rkd.losses import build_kd_loss
    from rkd.stages.objective import DistillObjective

    moves = []

    class Recording:
        def __init__(self, cache):
            self.cache = cache

        def to(self, device):
            moves.append(str(device))
            return self.cache.to(device)

    objective = DistillObjective(None, Recording(tiny_teacher_cache), build_kd_loss(LossConfig()))
    index = torch.arange(4)
    for _ in range(3):
        targets = objective.cache_on(index.device).targets("train", index)
    assert moves == ["cpu"] and targets["teacher_logits"].shape == (4, 10)
