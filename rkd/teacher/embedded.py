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

from typing import Any

import torch
import torch.nn as nn

EMBEDDED_FAMILIES = ("resnet", "regnet", "convnext")


def embedded_model_config(
    family: str, hidden_sizes: list, depths: list, embedding_size: int, groups_width: int, labels: dict
) -> Any:
    """The HF config of an embedded teacher; ``labels`` holds num_labels, id2label, label2id."""
    from transformers import ConvNextConfig, RegNetConfig, ResNetConfig

    hidden = [int(v) for v in hidden_sizes]
    depth = [int(v) for v in depths]
    if family == "resnet":
        return ResNetConfig(
            num_channels=3,
            embedding_size=int(embedding_size),
            hidden_sizes=hidden,
            depths=depth,
            layer_type="basic",
            **labels,
        )
    if family == "regnet":
        return RegNetConfig(
            num_channels=3,
            embedding_size=int(embedding_size),
            hidden_sizes=hidden,
            depths=depth,
            layer_type="x",
            groups_width=int(groups_width),
            downsample_in_first_stage=False,
            **labels,
        )
    if family == "convnext":
        return ConvNextConfig(
            num_channels=3, patch_size=2, num_stages=len(hidden), hidden_sizes=hidden, depths=depth, **labels
        )
    raise ValueError(f"teacher.embedded_family = {family!r} is invalid: expected one of {', '.join(EMBEDDED_FAMILIES)}")


def build_embedded_model(cfg: Any, num_classes: int, id2label: dict, label2id: dict) -> nn.Module:
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
