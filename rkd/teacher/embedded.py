"""The embedded teacher: an HF image classifier built from a config, shaped for small images.

The embedded default trains a teacher here, from scratch, on the task's own images (no hub
weights). ImageNet stems are wrong for 28 px inputs: HF ResNet's 7x7 stride-2 conv plus max-pool
leaves a 7x7 map before the first stage. ``teacher.embedded_family`` picks the architecture:

- ``resnet``: HF ``ResNetForImageClassification`` (basic blocks), the ImageNet stem as shipped;
  give it ``teacher.image_size: 56`` to run its first stage at 14x14 on 28 px data.
- ``regnet``: HF ``RegNetForImageClassification`` (X blocks), whose stem is one 3x3 stride-2
  conv; the first stage keeps that resolution (``downsample_in_first_stage=False``) and
  ``embedded_groups_width`` sets the grouped convs (>= the widest stage: plain convs).
- ``convnext``: HF ``ConvNextForImageClassification`` with a 2x2 patch stem and one stage per
  entry of ``embedded_hidden_sizes`` (3 stages fit 28 px: 14, 7, 3).

All three are ``AutoModelForImageClassification`` models, so ``save_pretrained`` and
``from_pretrained`` reload them like any checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from rkd.teacher.classifier import ClassifierKind, label_maps
from rkd.teacher.hub import Checkpoint, square_processor
from rkd.teacher.parts import TeacherParts

if TYPE_CHECKING:
    from transformers import PreTrainedModel  # imported lazily at run time: transformers is heavy


def _resnet(hidden: list[int], depths: list[int], embedding_size: int, groups_width: int, labels: dict) -> Any:
    from transformers import ResNetConfig

    return ResNetConfig(
        num_channels=3, embedding_size=embedding_size, hidden_sizes=hidden, depths=depths, layer_type="basic", **labels
    )


def _regnet(hidden: list[int], depths: list[int], embedding_size: int, groups_width: int, labels: dict) -> Any:
    from transformers import RegNetConfig

    return RegNetConfig(
        num_channels=3,
        embedding_size=embedding_size,
        hidden_sizes=hidden,
        depths=depths,
        layer_type="x",
        groups_width=groups_width,
        downsample_in_first_stage=False,
        **labels,
    )


def _convnext(hidden: list[int], depths: list[int], embedding_size: int, groups_width: int, labels: dict) -> Any:
    from transformers import ConvNextConfig

    return ConvNextConfig(
        num_channels=3, patch_size=2, num_stages=len(hidden), hidden_sizes=hidden, depths=depths, **labels
    )


# teacher.embedded_family -> the HF config of that architecture; the config's accepted values follow
FAMILIES = {"resnet": _resnet, "regnet": _regnet, "convnext": _convnext}
EMBEDDED_FAMILIES = tuple(FAMILIES)
EMBEDDED_SIZE = 28  # the input side when teacher.image_size is null: the embedded default's images


def embedded_model_config(
    family: str, hidden_sizes: list, depths: list, embedding_size: int, groups_width: int, labels: dict
) -> Any:
    """The HF config of an embedded teacher; ``labels`` holds num_labels, id2label, label2id."""
    if family not in FAMILIES:
        raise ValueError(
            f"teacher.embedded_family = {family!r} is invalid: expected one of {', '.join(EMBEDDED_FAMILIES)}"
        )
    hidden, depth = [int(v) for v in hidden_sizes], [int(v) for v in depths]
    return FAMILIES[family](hidden, depth, int(embedding_size), int(groups_width), labels)


def build_embedded_model(cfg: Any, num_classes: int, id2label: dict, label2id: dict) -> PreTrainedModel:
    """A freshly initialised HF classifier from ``cfg.embedded_*`` (a ``TeacherConfig``)."""
    from transformers import AutoModelForImageClassification

    labels = {"num_labels": num_classes, "id2label": id2label, "label2id": label2id}
    config = embedded_model_config(
        cfg.embedded_family,
        cfg.embedded_hidden_sizes,
        cfg.embedded_depths,
        cfg.embedded_embedding_size,
        cfg.embedded_groups_width,
        labels,
    )
    model = AutoModelForImageClassification.from_config(config)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


class EmbeddedKind(ClassifierKind):
    """The classifier rkd builds from ``teacher.embedded_*`` and trains from scratch on the task's images.

    Once built it is an HF classifier like any other (saved and reloaded as one); it differs in
    how it is made: from a config (so the pre-flight probe builds the very same model), RGB with
    a square resize and 0.5 statistics, and its backbone trained at the head's rate.
    """

    name = "embedded"
    source = "embedded"
    backbone_lr_scale = 1.0

    def recognises(self, hf_config: Any) -> bool:
        return False  # chosen by teacher.source = embedded, never from a checkpoint

    def build(self, cfg: Any, checkpoint: Checkpoint | None, num_classes: int, class_names: list[str]) -> TeacherParts:
        id2label, label2id = label_maps(class_names)
        model = build_embedded_model(cfg, num_classes, id2label, label2id)
        processor = square_processor(cfg.image_size or EMBEDDED_SIZE, [0.5] * 3, [0.5] * 3)
        return TeacherParts(model, None, processor)

    def from_config(self, cfg: Any, checkpoint: Checkpoint | None, num_classes: int) -> TeacherParts:
        return self.build(cfg, checkpoint, num_classes, [f"class-{i}" for i in range(num_classes)])
