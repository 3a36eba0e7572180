"""rkd.teacher.kinds: the teacher kinds as adapters in one registry.

A toy kind (a headless backbone with a head rkd adds, as a DINOv2 or SigLIP tower would be) is
registered here and nothing else: building, auto-detection, the pre-flight probe, the head's
learning rate, saving and reloading all go through its adapter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from rkd.config import ConfigError, TeacherConfig, load_config
from rkd.run.preflight import config_only_teacher, probe_teacher
from rkd.teacher import clip
from rkd.teacher.hub import IMAGENET_MEAN, IMAGENET_STD, load_processor, square_processor
from rkd.teacher.io import load_trained_teacher, save_teacher
from rkd.teacher.kinds import KIND_CHOICES, TEACHER_KINDS, resolve_kind
from rkd.teacher.model import build_teacher
from rkd.teacher.parts import TeacherParts
from rkd.teacher.training import parameter_groups

HEAD_FILE = "toy_head.safetensors"


class HeadlessKind:
    """A backbone without a classifier (``AutoModel``); features are its first token, the head is rkd's."""

    name = "headless"
    source = None
    default_stats = (IMAGENET_MEAN, IMAGENET_STD)
    backbone_lr_scale = 0.1

    def recognises(self, hf_config) -> bool:
        return getattr(hf_config, "architectures", None) == ["ViTModel"]

    def _parts(self, model: nn.Module, num_classes: int, ref: str) -> TeacherParts:
        return TeacherParts(model, nn.Linear(model.config.hidden_size, num_classes), load_processor(ref))

    def build(self, cfg, checkpoint, num_classes, class_names) -> TeacherParts:
        from transformers import AutoModel

        return self._parts(AutoModel.from_pretrained(checkpoint.ref), num_classes, checkpoint.ref)

    def from_config(self, cfg, checkpoint, num_classes) -> TeacherParts:
        from transformers import AutoModel

        return self._parts(AutoModel.from_config(checkpoint.config), num_classes, checkpoint.ref)

    def sizes(self, model, head):
        return head.out_features, head.in_features

    def outputs(self, model, head, pixel_values, forward_kwargs):
        features = model(pixel_values=pixel_values, **forward_kwargs).last_hidden_state[:, 0]
        return {"logits": head(features), "features": features}

    def head_parameters(self, model, head):
        return list(head.parameters())

    def save(self, model, head, directory: Path) -> dict:
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(Path(directory) / HEAD_FILE))
        return {"toy_head": HEAD_FILE}

    def load(self, directory: Path, record: dict, trust_remote_code: bool):
        from transformers import AutoModel

        state = load_file(str(Path(directory) / record["toy_head"]))
        head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
        head.load_state_dict(state)
        return AutoModel.from_pretrained(str(directory)), head


@pytest.fixture()
def toy_kind(monkeypatch):
    """The toy kind, registered for one test."""
    monkeypatch.setitem(TEACHER_KINDS, HeadlessKind.name, HeadlessKind())
    return TEACHER_KINDS[HeadlessKind.name]


@pytest.fixture(scope="module")
def headless_dir(tmp_path_factory) -> Path:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    path = tmp_path_factory.mktemp("tiny-headless")
    ViTModel(config, add_pooling_layer=False).save_pretrained(str(path))
    square_processor(32, [0.5] * 3, [0.25] * 3).save_pretrained(str(path))
    return path


def test_a_new_kind_needs_only_its_adapter(toy_kind, headless_dir, tmp_path):
    cfg = TeacherConfig(source=str(headless_dir))
    kind, checkpoint = resolve_kind(cfg)
    assert kind is toy_kind and checkpoint.ref == str(headless_dir)  # auto-detected from the checkpoint's config
    teacher = build_teacher(cfg, 5, list("abcde"), channels=1).eval()
    assert teacher.kind == "headless" and teacher.num_classes == 5 and teacher.feature_dim == 32
    pixels = torch.randint(0, 256, (3, 28, 28, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = teacher(pixels)
    assert out["logits"].shape == (3, 5) and out["features"].shape == (3, 32)

    head, backbone = parameter_groups(teacher, lr=1e-3, backbone_lr_scale=toy_kind.backbone_lr_scale)
    assert sum(p.numel() for p in head["params"]) == 32 * 5 + 5 and backbone["lr"] == pytest.approx(1e-4)

    probe, model_type = config_only_teacher(cfg)
    assert probe.kind == "headless" and model_type == "vit"
    probe_teacher(cfg)

    save_teacher(teacher, tmp_path / "model")
    again = load_trained_teacher(tmp_path / "model").eval()
    with torch.no_grad():
        assert torch.equal(again(pixels)["logits"], out["logits"])
    assert again.identity == teacher.identity


def test_the_configs_choices_come_from_the_registries():
    from rkd.teacher.embedded import EMBEDDED_FAMILIES

    assert KIND_CHOICES == ("auto", *TEACHER_KINDS)
    for field, accepted in (("teacher.kind", KIND_CHOICES), ("teacher.embedded_family", EMBEDDED_FAMILIES)):
        with pytest.raises(ConfigError) as info:
            load_config(None, [f"{field}=nonesuch"])
        assert all(repr(choice) in str(info.value) for choice in accepted), str(info.value)


def test_the_embedded_kind_goes_with_the_embedded_source():
    assert load_config(None, ["teacher.kind=embedded"]).teacher.kind == "embedded"
    with pytest.raises(ConfigError, match=r"teacher.kind.*'auto' or 'embedded' with teacher.source = 'embedded'"):
        load_config(None, ["teacher.kind=classifier"])
    with pytest.raises(ConfigError, match=r"teacher.kind.*teacher.source = 'embedded'"):
        load_config(None, ["teacher.kind=embedded", "teacher.source=some/hub-id"])


def test_clip_is_named_only_by_its_adapter():
    """A kind's details live in its adapter: no other module of rkd branches on the CLIP kind's name."""
    home = Path(clip.__file__).resolve()
    package = home.parents[1]
    found = [
        str(path.relative_to(package.parent))
        for path in package.rglob("*.py")
        if path != home and any(q in path.read_text() for q in ('"clip"', "'clip'"))
    ]
    assert not found, f"the CLIP kind's name spelled outside {home.name}: {found}"
