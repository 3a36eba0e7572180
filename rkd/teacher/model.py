"""The teacher: a Hugging Face vision model wrapped to map uint8 pixels to logits and pooled features.

``build_teacher`` makes the task's teacher through the adapter of its kind (``rkd.teacher.kinds``):
the embedded HF classifier, an image classifier checkpoint or a CLIP vision tower. Distillation
never runs it inside a student's loop: it is fine-tuned once (``rkd.teacher.training``), saved
(``rkd.teacher.io``), and its outputs are cached once (``rkd.teacher.cache``).
"""

from __future__ import annotations

import hashlib
import inspect
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from rkd.config import TeacherConfig
from rkd.data import ImageTransform
from rkd.hardware.strided_pointwise import use_unit_stride_pointwise
from rkd.measure import count_params
from rkd.teacher.hub import input_settings
from rkd.teacher.kinds import TEACHER_KINDS, TeacherKind, resolve_kind
from rkd.teacher.parts import TeacherParts

if TYPE_CHECKING:
    from transformers import PreTrainedModel  # imported lazily at run time: transformers is heavy


class Teacher(nn.Module):
    """An HF vision model plus its input transform: uint8 pixels in, ``{"logits", "features"}`` out.

    ``kind`` names the adapter in ``rkd.teacher.kinds.TEACHER_KINDS`` that runs, saves and reloads
    it; ``head`` is a linear classifier rkd added (None when the model has its own).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        transform: ImageTransform,
        kind: str,
        source: str,
        head: nn.Linear | None = None,
        processor: Any = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        if kind not in TEACHER_KINDS:
            raise ValueError(f"Teacher kind = {kind!r} is invalid: expected one of {', '.join(TEACHER_KINDS)}")
        use_unit_stride_pointwise(model)  # a oneDNN kernel corrupts the heap on these (see that module)
        self.model = model
        self.head = head
        self.transform = transform
        self.kind = kind
        self.source = source
        self.processor = processor
        self.trust_remote_code = trust_remote_code
        config = model.config
        wants_interp = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
        native = getattr(config, "image_size", None)
        native = native[0] if isinstance(native, (list, tuple)) else native
        self._forward_kwargs = (
            {"interpolate_pos_encoding": True} if wants_interp and native and native != transform.size else {}
        )
        self.num_classes, feature_dim = self.adapter.sizes(model, head)
        self.feature_dim = feature_dim if feature_dim is not None else self._probe_feature_dim()

    @property
    def adapter(self) -> TeacherKind:
        return TEACHER_KINDS[self.kind]

    def _probe_feature_dim(self) -> int:
        device = next(self.model.parameters()).device
        probe = torch.zeros(1, self.transform.channels, self.transform.size, self.transform.size, device=device)
        was_training = self.training
        self.eval()
        with torch.no_grad():
            dim = int(self.forward_pixel_values(probe)["features"].shape[-1])
        self.train(was_training)
        return dim

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 ``[B, H, W, C]`` -> ``{"logits": [B, K], "features": [B, D]}``."""
        return self.forward_pixel_values(self.transform(pixels))

    def forward_pixel_values(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """Already transformed float ``[B, C, S, S]`` input."""
        return self.adapter.outputs(self.model, self.head, pixel_values, self._forward_kwargs)

    def head_parameters(self) -> list[nn.Parameter]:
        """The classification head's parameters (new or task-reordered), as opposed to the backbone's."""
        return self.adapter.head_parameters(self.model, self.head)

    @property
    def n_params(self) -> int:
        return count_params(self)

    @property
    def identity(self) -> dict:
        """What the cache manifest records and checks; ``weights_sha256`` hashes every tensor of the state dict."""
        return {
            "source": self.source,
            "kind": self.kind,
            "model_class": type(self.model).__name__,
            "n_params": self.n_params,
            "num_classes": self.num_classes,
            "feature_dim": self.feature_dim,
            "weights_sha256": state_dict_sha256(self),
        }


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 over names, dtypes, shapes and raw bytes of every state-dict tensor, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def transform_from_processor(processor: Any, model_config: Any, kind: str, size_override: int | None) -> ImageTransform:
    """The processor's size (crop size when it center-crops) and statistics (the kind's defaults when it has
    none); the model's channel count."""
    stats = TEACHER_KINDS[kind].default_stats
    return ImageTransform(**input_settings(processor, model_config, stats, size_override))


def assemble(kind: TeacherKind, parts: TeacherParts, cfg: TeacherConfig, trust_remote_code: bool) -> Teacher:
    """The wrapper around what an adapter built: its input transform from the processor and ``teacher.image_size``."""
    transform = transform_from_processor(parts.processor, parts.model.config, kind.name, cfg.image_size)
    return Teacher(
        parts.model,
        transform,
        kind.name,
        cfg.source,
        head=parts.head,
        processor=parts.processor,
        trust_remote_code=trust_remote_code,
    )


def build_teacher(cfg: TeacherConfig, num_classes: int, class_names: list[str], channels: int) -> Teacher:
    """The task's teacher, built by the adapter of its kind from ``teacher.source`` (the embedded classifier,
    a hub id or a ``save_pretrained`` directory)."""
    if len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} entries but num_classes = {num_classes}")
    if channels not in (1, 3):
        raise ValueError(f"channels = {channels!r} is invalid: expected 1 (grayscale) or 3 (RGB)")
    kind, checkpoint = resolve_kind(cfg)
    parts = kind.build(cfg, checkpoint, num_classes, class_names)
    return assemble(kind, parts, cfg, trust_remote_code=cfg.trust_remote_code and checkpoint is not None)
