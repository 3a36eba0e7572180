"""The CLIP vision tower kind: ``CLIPVisionModelWithProjection`` with a linear classifier rkd trains.

Features are the projected image embeddings; the head over them is new, so a CLIP teacher is
always fine-tuned. A full CLIP checkpoint (text and vision) gives its vision half and keeps its
projection size. The head is saved beside the tower as its own safetensors file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from rkd.errors import ConfigError
from rkd.teacher.hub import Checkpoint, load_processor
from rkd.teacher.parts import TeacherParts, finetune_required, reset_linear

if TYPE_CHECKING:
    from transformers import PreTrainedModel  # imported lazily at run time: transformers is heavy

NAME = "clip"
FULL_MODEL_TYPE, VISION_MODEL_TYPE = "clip", "clip_vision_model"
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
HEAD_FILE = "rkd_clip_head.safetensors"


def vision_config(config: Any, source: str) -> Any:
    """The vision tower's config: a full CLIP checkpoint's vision half (with its projection size), or the config itself."""
    from transformers import CLIPVisionConfig

    model_type = getattr(config, "model_type", None)
    if model_type == FULL_MODEL_TYPE:
        vision = CLIPVisionConfig(**config.vision_config.to_dict())
        vision.projection_dim = config.projection_dim
        return vision
    if model_type == VISION_MODEL_TYPE:
        return config
    raise ConfigError(
        f"teacher.kind = {NAME!r} but teacher.source = {source!r} is a {model_type!r} model; "
        f"expected a CLIP checkpoint, or teacher.kind = 'auto' for the kind its config names"
    )


class ClipTowerKind:
    """A CLIP vision tower plus a linear head over its image embeddings."""

    name = NAME
    source: str | None = None
    default_stats = (CLIP_MEAN, CLIP_STD)
    backbone_lr_scale = 0.1

    def recognises(self, hf_config: Any) -> bool:
        return getattr(hf_config, "model_type", None) in (FULL_MODEL_TYPE, VISION_MODEL_TYPE)

    def build(self, cfg: Any, checkpoint: Checkpoint | None, num_classes: int, class_names: list[str]) -> TeacherParts:
        from transformers import CLIPVisionModelWithProjection

        assert checkpoint is not None
        if not cfg.finetune:
            raise finetune_required(
                cfg.source,
                f"teacher {cfg.source} is a CLIP model: its {num_classes}-class linear head over "
                f"image embeddings is new and untrained",
            )
        vision = vision_config(checkpoint.config, cfg.source)
        model = CLIPVisionModelWithProjection.from_pretrained(checkpoint.ref, config=vision)
        head = nn.Linear(int(vision.projection_dim), num_classes)
        reset_linear(head, 0.02)
        return TeacherParts(model, head, load_processor(checkpoint.ref, cfg.trust_remote_code, required=True))

    def from_config(self, cfg: Any, checkpoint: Checkpoint | None, num_classes: int) -> TeacherParts:
        from transformers import CLIPVisionModelWithProjection

        assert checkpoint is not None
        vision = vision_config(checkpoint.config, cfg.source)
        model = CLIPVisionModelWithProjection(vision)
        head = nn.Linear(int(vision.projection_dim), num_classes)
        return TeacherParts(model, head, load_processor(checkpoint.ref, cfg.trust_remote_code, required=True))

    def sizes(self, model: PreTrainedModel, head: nn.Linear | None) -> tuple[int, int | None]:
        if head is None:
            raise ValueError("a CLIP teacher needs a linear head over its image embeddings")
        return head.out_features, head.in_features

    def outputs(
        self, model: PreTrainedModel, head: nn.Linear | None, pixel_values: torch.Tensor, forward_kwargs: dict
    ) -> dict[str, torch.Tensor]:
        assert head is not None
        embeds = model(pixel_values=pixel_values, **forward_kwargs).image_embeds
        return {"logits": head(embeds), "features": embeds}

    def head_parameters(self, model: PreTrainedModel, head: nn.Linear | None) -> list[nn.Parameter]:
        return list(head.parameters()) if head is not None else []

    def save(self, model: PreTrainedModel, head: nn.Linear | None, directory: Path) -> dict:
        """The head's weights beside the tower; the record names their file."""
        assert head is not None
        state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
        save_file(state, str(Path(directory) / HEAD_FILE))
        return {"clip_head": HEAD_FILE}

    def load(self, directory: Path, record: dict, trust_remote_code: bool) -> tuple[PreTrainedModel, nn.Linear | None]:
        from transformers import CLIPVisionModelWithProjection

        model = CLIPVisionModelWithProjection.from_pretrained(str(directory))
        state = load_file(str(Path(directory) / record["clip_head"]))
        head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0], bias="bias" in state)
        head.load_state_dict(state)
        return model, head
