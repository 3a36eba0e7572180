"""The embedded teacher families: build from config, reload through from_pretrained, size against the student."""

from __future__ import annotations

import pytest
import torch

from rkd.config import ConfigError, RunConfig, TeacherConfig, load_config
from rkd.nas.genotype import load_genotype
from rkd.nas.network import Student
from rkd.teacher.cache import AUGMENTATION_FLIP, AUGMENTATION_NONE, load_cache
from rkd.teacher.cache_build import build_cache
from rkd.teacher.embedded import EMBEDDED_FAMILIES, embedded_model_config
from rkd.teacher.io import load_trained_teacher, save_teacher
from rkd.teacher.model import build_teacher
from rkd.teacher.training import TeacherObjective

NAMES10 = [f"class{i}" for i in range(10)]
TINY = {
    "resnet": dict(embedded_hidden_sizes=[8, 16], embedded_depths=[1, 1], embedded_embedding_size=8),
    "regnet": dict(embedded_hidden_sizes=[8, 16], embedded_depths=[1, 1], embedded_embedding_size=8),
    "convnext": dict(embedded_hidden_sizes=[8, 16, 32], embedded_depths=[1, 1, 1]),
}


def _pixels(n: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (n, 28, 28, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", EMBEDDED_FAMILIES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_family_builds_and_round_trips(family, channels_last, tmp_path):
    torch.manual_seed(0)
    cfg = TeacherConfig(embedded_family=family, channels_last=channels_last, **TINY[family])
    teacher = build_teacher(cfg, 10, NAMES10, channels=1).eval()
    assert teacher.model.config.model_type == family
    with torch.no_grad():
        before = teacher(_pixels())
    assert before["logits"].shape == (3, 10) and torch.isfinite(before["logits"]).all()
    save_teacher(teacher, tmp_path / "model")
    reloaded = load_trained_teacher(tmp_path / "model").eval()
    assert type(reloaded.model) is type(teacher.model)
    with torch.no_grad():
        after = reloaded(_pixels())
    torch.testing.assert_close(after["logits"], before["logits"], rtol=1e-4, atol=1e-5)
    assert reloaded.identity["weights_sha256"] == teacher.identity["weights_sha256"]


def test_regnet_keeps_resolution_in_first_stage():
    config = embedded_model_config("regnet", [8, 16], [1, 1], 8, 1024, {"num_labels": 10})
    assert config.downsample_in_first_stage is False and config.layer_type == "x"
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_config(config)
    out = model(torch.zeros(1, 3, 28, 28), output_hidden_states=True)
    assert [tuple(h.shape[-2:]) for h in out.hidden_states[:3]] == [(14, 14), (14, 14), (7, 7)]


def test_unknown_family_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="teacher.embedded_family"):
        load_config(["default"], ["teacher.embedded_family=vgg"])
    with pytest.raises(ValueError, match="teacher.embedded_family = 'vgg'"):
        embedded_model_config("vgg", [8], [1], 8, 8, {})


def test_default_teacher_is_20x_the_default_student():
    cfg: RunConfig = load_config(["default"])
    teacher = build_teacher(cfg.teacher, 10, NAMES10, channels=1)
    student = Student(
        load_genotype(cfg.student.genotype),
        in_channels=1,
        num_classes=10,
        init_channels=cfg.student.init_channels,
        layers=cfg.student.layers,
        stem_stride=cfg.student.stem_stride,
    )
    n_student = sum(p.numel() for p in student.parameters())
    assert teacher.n_params >= 20 * n_student, (teacher.n_params, n_student)


def test_teacher_objective_augmentation_is_seeded_and_train_only():
    torch.manual_seed(0)
    teacher = build_teacher(TeacherConfig(embedded_family="regnet", **TINY["regnet"]), 10, NAMES10, channels=1).eval()
    batch = {"pixels": _pixels(8), "label": torch.arange(8) % 10}
    losses = [float(TeacherObjective(True, 0.1, seed=3)(teacher, batch, True).loss.detach()) for _ in range(2)]
    assert losses[0] == losses[1]
    other = float(TeacherObjective(True, 0.1, seed=4)(teacher, batch, True).loss.detach())
    assert other != losses[0]
    plain = [float(TeacherObjective(True, 0.0, seed=s)(teacher, batch, False).loss.detach()) for s in (3, 4)]
    assert plain[0] == plain[1]  # no augmentation (nor smoothing) at evaluation


def test_teacher_objective_bf16_autocast_and_random_erasing():
    torch.manual_seed(0)
    teacher = build_teacher(TeacherConfig(embedded_family="regnet", **TINY["regnet"]), 10, NAMES10, channels=1).eval()
    batch = {"pixels": _pixels(8), "label": torch.arange(8) % 10}
    full = TeacherObjective(False, seed=0)(teacher, batch, False)
    half = TeacherObjective(False, seed=0, precision="bf16")(teacher, batch, False)
    assert full.logits.dtype == torch.float32 and half.logits.dtype == torch.bfloat16
    assert half.loss.dtype == torch.float32  # the loss is computed in fp32
    torch.testing.assert_close(half.logits.float(), full.logits, rtol=0.1, atol=0.1)
    assert not torch.equal(half.logits.float(), full.logits)
    erased = [
        float(TeacherObjective(True, seed=3, random_erasing=p)(teacher, batch, True).loss.detach()) for p in (0.0, 1.0)
    ]
    assert erased[0] != erased[1]
    with pytest.raises(ValueError, match="precision = 'fp8'"):
        TeacherObjective(False, precision="fp8")
    with pytest.raises(ConfigError, match="teacher.train_precision"):
        load_config(["default"], ["teacher.train_precision=fp8"])


def test_flip_averaged_cache(fashion_bundle, tmp_path):
    torch.manual_seed(0)
    teacher = build_teacher(TeacherConfig(embedded_family="regnet", **TINY["regnet"]), 10, NAMES10, channels=1).eval()
    plain = build_cache(teacher, fashion_bundle, tmp_path / "cache", batch_size=50, shard_size=64, progress=False)
    flipped = build_cache(
        teacher, fashion_bundle, tmp_path / "cache", batch_size=50, shard_size=64, progress=False, flip_average=True
    )
    assert plain["augmentation"] == AUGMENTATION_NONE and flipped["augmentation"] == AUGMENTATION_FLIP
    images = fashion_bundle.splits["test"].images
    with torch.no_grad():
        want = (teacher(images)["logits"] + teacher(images.flip(2))["logits"]) / 2
    cache = load_cache(tmp_path / "cache", expected_teacher=teacher.identity)
    torch.testing.assert_close(cache.logits["test"].float(), want, rtol=2e-3, atol=2e-3)  # fp16 storage
    assert not torch.allclose(want, teacher(images)["logits"].detach(), atol=1e-3)  # the mirror changed something
