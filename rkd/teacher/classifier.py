"""The classifier kind: any ``AutoModelForImageClassification`` checkpoint, its head kept, reordered or replaced.

Features are the input of the model's own classification head (captured by a forward pre-hook),
or the mean of its last hidden state when rkd cannot find that head. A checkpoint whose labels
name the task's classes keeps its head, rows reordered to the task's order; any other gets a new,
randomly initialised head, which must then be fine-tuned.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from rkd.errors import ConfigError
from rkd.teacher.hub import IMAGENET_MEAN, IMAGENET_STD, Checkpoint, load_processor
from rkd.teacher.parts import TeacherParts, finetune_required, reset_linear

if TYPE_CHECKING:
    from transformers import PreTrainedModel  # imported lazily at run time: transformers is heavy

# Where each family keeps its classification head. The head's *input* is the pooled
# representation the family's own classifier sees: ResNet/RegNet/BiT the pooled output of the
# backbone, ViT/DeiT the CLS token after the final layer norm, ConvNeXt/Swin/BEiT/EfficientNet/
# MobileNet their pooled (and normed) output, DINOv2 [CLS, mean patch]. Unknown families fall
# back to the first of these attribute names, then to the mean of the last hidden state.
HEAD_ATTRIBUTES = {
    "resnet": "classifier",
    "regnet": "classifier",
    "bit": "classifier",
    "vit": "classifier",
    "deit": "classifier",
    "convnext": "classifier",
    "convnextv2": "classifier",
    "swin": "classifier",
    "swinv2": "classifier",
    "beit": "classifier",
    "data2vec-vision": "classifier",
    "efficientnet": "classifier",
    "mobilenet_v1": "classifier",
    "mobilenet_v2": "classifier",
    "mobilevit": "classifier",
    "dinov2": "classifier",
    "poolformer": "classifier",
    "van": "classifier",
}
FALLBACK_HEAD_ATTRIBUTES = ("classifier", "fc", "head")


def find_head(model: PreTrainedModel) -> tuple[nn.Module | None, nn.Linear | None]:
    """The classification head module (whose input is the pooled feature) and its final Linear."""
    model_type = getattr(model.config, "model_type", None)
    names = [HEAD_ATTRIBUTES[model_type]] if model_type in HEAD_ATTRIBUTES else []
    for name in names + [n for n in FALLBACK_HEAD_ATTRIBUTES if n not in names]:
        module = getattr(model, name, None)
        if isinstance(module, nn.Linear):
            return module, module
        if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], nn.Linear):
            if all(isinstance(m, (nn.Flatten, nn.Dropout, nn.Identity)) for m in list(module)[:-1]):
                return module, module[-1]
    return None, None


def classifier_outputs(
    model: PreTrainedModel, pixel_values: torch.Tensor, head: nn.Module | None, forward_kwargs: dict | None = None
) -> dict[str, torch.Tensor]:
    """Logits plus the pooled representation, in one forward pass.

    With a known head, a forward pre-hook captures the head's input (exactly what the model's own
    classifier sees); otherwise the last hidden state is mean-pooled (over space or tokens).
    """
    kwargs = dict(forward_kwargs or {})
    if head is not None:
        captured: list[torch.Tensor] = []
        handle = head.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
        try:
            logits = model(pixel_values=pixel_values, **kwargs).logits
        finally:
            handle.remove()
        if captured:
            return {"logits": logits, "features": captured[-1].flatten(1)}
    out = model(pixel_values=pixel_values, output_hidden_states=True, **kwargs)
    last = out.hidden_states[-1]
    features = last.mean(dim=(2, 3)) if last.dim() == 4 else last.mean(dim=1) if last.dim() == 3 else last.flatten(1)
    return {"logits": out.logits, "features": features}


def label_maps(class_names: list[str]) -> tuple[dict[int, str], dict[str, int]]:
    return {i: n for i, n in enumerate(class_names)}, {n: i for i, n in enumerate(class_names)}


def _norm_label(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).lower()


def match_labels(id2label: dict | None, class_names: list[str]) -> list[int] | None:
    """Teacher output index for each task class, when both name the same set of classes; else None."""
    teacher = {_norm_label(v): int(k) for k, v in (id2label or {}).items()}
    wanted = [_norm_label(n) for n in class_names]
    if len(teacher) != len(id2label or {}) or len(teacher) != len(wanted) or set(teacher) != set(wanted):
        return None
    return [teacher[n] for n in wanted]


def _reorder_head(
    model: PreTrainedModel, linear: nn.Linear | None, order: list[int], class_names: list[str], source: str
) -> None:
    """Keep the checkpoint's own head, its rows in the task's class order."""
    if linear is None:
        raise ConfigError(
            f"teacher {source}: its labels match the task but rkd cannot find its "
            f"classification head to reorder; set teacher.finetune=true to train a new head"
        )
    if order != list(range(len(class_names))):
        with torch.no_grad():
            linear.weight.copy_(linear.weight[order].clone())
            if linear.bias is not None:
                linear.bias.copy_(linear.bias[order].clone())
    model.config.id2label, model.config.label2id = label_maps(class_names)


def _from_pretrained(
    cfg: Any, checkpoint: Checkpoint, class_names: list[str], order: list[int] | None
) -> PreTrainedModel:
    """The checkpoint's classifier: as it is when its labels match the task, else with a new head of the task's size."""
    from transformers import AutoModelForImageClassification

    ref, config, source = checkpoint.ref, checkpoint.config, cfg.source
    if order is not None:
        return AutoModelForImageClassification.from_pretrained(ref, trust_remote_code=cfg.trust_remote_code)
    if not cfg.finetune:
        theirs = list((config.id2label or {}).values())
        shown = ", ".join(map(str, theirs[:5])) + (", ..." if len(theirs) > 5 else "")
        n = len(class_names)
        raise finetune_required(
            source,
            f"teacher {source} predicts {len(theirs)} classes ({shown}), the task has "
            f"{n} ({', '.join(class_names[:5])}{', ...' if n > 5 else ''})",
        )
    id2label, label2id = label_maps(class_names)
    return AutoModelForImageClassification.from_pretrained(
        ref, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True, trust_remote_code=cfg.trust_remote_code
    )


class ClassifierKind:
    """An HF image classifier: logits from its own head, features from that head's input."""

    name = "classifier"
    source: str | None = None
    default_stats = (IMAGENET_MEAN, IMAGENET_STD)
    backbone_lr_scale = 0.1

    def recognises(self, hf_config: Any) -> bool:
        return True  # any other checkpoint is tried as an image classifier

    def build(self, cfg: Any, checkpoint: Checkpoint | None, num_classes: int, class_names: list[str]) -> TeacherParts:
        assert checkpoint is not None
        order = match_labels(getattr(checkpoint.config, "id2label", None), class_names)
        try:
            model = _from_pretrained(cfg, checkpoint, class_names, order)
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(
                f"teacher.source = {cfg.source!r} is a {getattr(checkpoint.config, 'model_type', '?')!r} model, "
                f"which is not an image classifier (AutoModelForImageClassification); expected an image classifier "
                f"or a checkpoint of another teacher.kind ({exc})"
            ) from exc
        _, linear = find_head(model)
        if order is not None:
            _reorder_head(model, linear, order, class_names, cfg.source)
        elif linear is not None:  # same-sized but unrelated heads are kept by from_pretrained: start afresh
            reset_linear(linear, float(getattr(model.config, "initializer_range", 0.02) or 0.02))
        return TeacherParts(model, None, load_processor(checkpoint.ref, cfg.trust_remote_code, required=True))

    def from_config(self, cfg: Any, checkpoint: Checkpoint | None, num_classes: int) -> TeacherParts:
        from transformers import AutoModelForImageClassification

        assert checkpoint is not None
        model = AutoModelForImageClassification.from_config(checkpoint.config, trust_remote_code=cfg.trust_remote_code)
        return TeacherParts(model, None, load_processor(checkpoint.ref, cfg.trust_remote_code, required=True))

    def sizes(self, model: PreTrainedModel, head: nn.Linear | None) -> tuple[int, int | None]:
        """``(classes, feature size)``; the feature size is None when only a forward pass can tell."""
        _, linear = find_head(model)
        return int(model.config.num_labels or 0), (linear.in_features if linear is not None else None)

    def outputs(
        self, model: PreTrainedModel, head: nn.Linear | None, pixel_values: torch.Tensor, forward_kwargs: dict
    ) -> dict[str, torch.Tensor]:
        return classifier_outputs(model, pixel_values, find_head(model)[0], forward_kwargs)

    def head_parameters(self, model: PreTrainedModel, head: nn.Linear | None) -> list[nn.Parameter]:
        found, _ = find_head(model)
        return list(found.parameters()) if found is not None else []

    def save(self, model: PreTrainedModel, head: nn.Linear | None, directory: Path) -> dict:
        """What the saved record adds for this kind: the class names in output order."""
        id2label = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
        return {"class_names": [id2label[i] for i in range(int(model.config.num_labels or 0))]}

    def load(self, directory: Path, record: dict, trust_remote_code: bool) -> tuple[PreTrainedModel, nn.Linear | None]:
        from transformers import AutoModelForImageClassification

        return AutoModelForImageClassification.from_pretrained(
            str(directory), trust_remote_code=trust_remote_code
        ), None
