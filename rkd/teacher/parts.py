"""What a teacher kind builds (the HF model, the head rkd adds to it, the image processor) and the
helpers the kinds share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch.nn as nn

from rkd.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel  # imported lazily at run time: transformers is heavy


class TeacherParts(NamedTuple):
    model: PreTrainedModel
    head: nn.Linear | None  # a head rkd adds (a CLIP tower's classifier); None when the model has its own
    processor: Any  # the HF image processor, or None when the checkpoint has none


def reset_linear(linear: nn.Linear, std: float) -> None:
    nn.init.normal_(linear.weight, std=std)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def finetune_required(source: str, reason: str) -> ConfigError:
    return ConfigError(f"{reason}; set teacher.finetune=true so rkd can train a new head (teacher.source = {source!r})")
