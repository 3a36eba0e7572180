"""The teacher kinds, one adapter each, in one registry (as ``rkd.channels.CHANNELS`` holds the channels).

An adapter says how its kind of teacher is built (from the checkpoint, or from its config alone
for the pre-flight probe), how it maps pixels to logits and features, which parameters are its
head, and what it adds to a saved teacher. ``teacher.kind``'s accepted values are this registry's
keys. A new kind (SigLIP, a headless DINOv2) is one adapter module and one entry here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn as nn

from rkd.teacher.classifier import ClassifierKind
from rkd.teacher.clip import ClipTowerKind
from rkd.teacher.embedded import EmbeddedKind
from rkd.teacher.hub import Checkpoint, load_checkpoint
from rkd.teacher.parts import TeacherParts

if TYPE_CHECKING:
    from transformers import PreTrainedModel  # imported lazily at run time: transformers is heavy

AUTO = "auto"  # teacher.kind: the kind the source names (a fixed source, or the checkpoint's config)


class TeacherKind(Protocol):
    name: str  # teacher.kind, Teacher.kind and the saved record's "kind"
    source: str | None  # the teacher.source that selects this kind; None: a hub id or save_pretrained directory
    default_stats: tuple  # (mean, std) when the image processor gives none
    backbone_lr_scale: float  # the backbone's learning rate over the head's while fine-tuning

    def recognises(self, hf_config: Any) -> bool:
        """Under ``teacher.kind = auto``: is a checkpoint with this config of this kind?"""
        ...

    def build(self, cfg: Any, checkpoint: Checkpoint | None, num_classes: int, class_names: list[str]) -> TeacherParts:
        """The teacher from its checkpoint's weights, with a head for the task's classes."""
        ...

    def from_config(self, cfg: Any, checkpoint: Checkpoint | None, num_classes: int) -> TeacherParts:
        """The same architecture with random weights (what the pre-flight probe runs)."""
        ...

    def sizes(self, model: PreTrainedModel, head: nn.Linear | None) -> tuple[int, int | None]:
        """``(classes, feature size)``; the feature size is None when only a forward pass can tell."""
        ...

    def outputs(
        self, model: PreTrainedModel, head: nn.Linear | None, pixel_values: torch.Tensor, forward_kwargs: dict
    ) -> dict[str, torch.Tensor]:
        """``{"logits", "features"}`` of transformed pixels."""
        ...

    def head_parameters(self, model: PreTrainedModel, head: nn.Linear | None) -> list[nn.Parameter]:
        """The classification head's parameters, trained at the full learning rate."""
        ...

    def save(self, model: PreTrainedModel, head: nn.Linear | None, directory: Path) -> dict:
        """Write what ``save_pretrained`` does not keep into ``directory``; return the record's extra fields."""
        ...

    def load(self, directory: Path, record: dict, trust_remote_code: bool) -> tuple[PreTrainedModel, nn.Linear | None]:
        """The model and head a saved teacher of this kind holds."""
        ...


TEACHER_KINDS: dict[str, TeacherKind] = {
    kind.name: kind for kind in (ClassifierKind(), ClipTowerKind(), EmbeddedKind())
}
# under teacher.kind = auto, a checkpoint no other kind recognises is tried as an image classifier
FALLBACK_KIND = ClassifierKind.name
KIND_CHOICES = (AUTO, *TEACHER_KINDS)


def source_kind(source: str) -> TeacherKind | None:
    """The kind a fixed ``teacher.source`` value selects (``embedded``), or None for a checkpoint."""
    return next((kind for kind in TEACHER_KINDS.values() if kind.source == source), None)


def resolve_kind(cfg: Any) -> tuple[TeacherKind, Checkpoint | None]:
    """The adapter that builds ``cfg``'s teacher and, for a checkpoint, its reference and config (no weights)."""
    fixed = source_kind(cfg.source)
    if fixed is not None:
        return fixed, None
    checkpoint = load_checkpoint(cfg.source, cfg.trust_remote_code)
    if cfg.kind != AUTO:
        return TEACHER_KINDS[cfg.kind], checkpoint
    others = [k for k in TEACHER_KINDS.values() if k.source is None and k.name != FALLBACK_KIND]
    recognised = [kind for kind in others if kind.recognises(checkpoint.config)]
    return (recognised[0] if recognised else TEACHER_KINDS[FALLBACK_KIND]), checkpoint
