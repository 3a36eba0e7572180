"""The teacher: a Hugging Face vision model wrapped to map uint8 pixels to logits and pooled features.

``build_teacher`` makes the task's teacher: the embedded HF classifier (``rkd.teacher.embedded``),
or a hub / ``save_pretrained`` checkpoint (a classifier whose head is kept, reordered or replaced,
or CLIP with a new linear head). Distillation never runs it inside a student's loop: it is
fine-tuned once (``rkd.teacher.training``), saved (``rkd.teacher.io``), and its outputs are
cached once (``rkd.teacher.cache``).
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from rkd.config import ConfigError, TeacherConfig
from rkd.data import ImageTransform
from rkd.measure import count_params
from rkd.teacher.embedded import build_embedded_model
from rkd.teacher.processor import IMAGENET_MEAN, IMAGENET_STD, input_settings, load_processor, square_processor

CLIP_MODEL_TYPES = ("clip", "clip_vision_model")
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

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


# ----------------------------------------------------------------------------- the wrapper


class Teacher(nn.Module):
    """An HF vision model plus its input transform: uint8 pixels in, ``{"logits", "features"}`` out.

    ``kind`` is ``"classifier"`` (an ``AutoModelForImageClassification``; features are the input
    of its classification head) or ``"clip"`` (``CLIPVisionModelWithProjection``; features are the
    projected image embeddings and ``head`` is a linear classifier trained by rkd).
    """

    def __init__(
        self,
        model: nn.Module,
        transform: ImageTransform,
        kind: str,
        source: str,
        head: nn.Linear | None = None,
        processor: Any = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        if kind not in ("classifier", "clip"):
            raise ValueError(f"Teacher kind = {kind!r} is invalid: expected 'classifier' or 'clip'")
        if kind == "clip" and head is None:
            raise ValueError("a CLIP teacher needs a linear head over its image embeddings")
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
        if kind == "clip":
            self.num_classes = head.out_features
            self.feature_dim = head.in_features
        else:
            self.num_classes = int(config.num_labels)
            # resolved per call, never stored: an attribute would register the head twice in the state dict
            _, linear = find_head(model)
            self.feature_dim = linear.in_features if linear is not None else self._probe_feature_dim()

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
        if self.kind == "clip":
            embeds = self.model(pixel_values=pixel_values, **self._forward_kwargs).image_embeds
            return {"logits": self.head(embeds), "features": embeds}
        return classifier_outputs(self.model, pixel_values, find_head(self.model)[0], self._forward_kwargs)

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


def find_head(model: nn.Module) -> tuple[nn.Module | None, nn.Linear | None]:
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
    model: nn.Module, pixel_values: torch.Tensor, head: nn.Module | None, forward_kwargs: dict | None = None
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


# ----------------------------------------------------------------------------- building


def transform_from_processor(processor: Any, model_config: Any, kind: str, size_override: int | None) -> ImageTransform:
    """The processor's size (crop size when it center-crops) and statistics; the model's channel count."""
    default = (CLIP_MEAN, CLIP_STD) if kind == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    return ImageTransform(**input_settings(processor, model_config, default, size_override))


def _label_maps(class_names: list[str]) -> tuple[dict[int, str], dict[str, int]]:
    return {i: n for i, n in enumerate(class_names)}, {n: i for i, n in enumerate(class_names)}


def _norm_label(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).lower()


def match_labels(id2label: dict, class_names: list[str]) -> list[int] | None:
    """Teacher output index for each task class, when both name the same set of classes; else None."""
    teacher = {_norm_label(v): int(k) for k, v in (id2label or {}).items()}
    wanted = [_norm_label(n) for n in class_names]
    if len(teacher) != len(id2label or {}) or len(teacher) != len(wanted) or set(teacher) != set(wanted):
        return None
    return [teacher[n] for n in wanted]


def _reset_linear(linear: nn.Linear, std: float) -> None:
    nn.init.normal_(linear.weight, std=std)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def _detect_kind(cfg: TeacherConfig, config: Any) -> str:
    if cfg.kind != "auto":
        return cfg.kind
    return "clip" if getattr(config, "model_type", None) in CLIP_MODEL_TYPES else "classifier"


def _finetune_required(source: str, reason: str) -> ConfigError:
    return ConfigError(f"{reason}; set teacher.finetune=true so rkd can train a new head (teacher.source = {source!r})")


def build_teacher(cfg: TeacherConfig, num_classes: int, class_names: list[str], channels: int) -> Teacher:
    """The task's teacher: the embedded HF classifier (``rkd.teacher.embedded``), or a hub / ``save_pretrained`` checkpoint.

    A checkpoint whose labels name the task's classes keeps its head (rows reordered to the task's
    order); any other gets a new, randomly initialised head, which must then be fine-tuned.
    """
    if len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} entries but num_classes = {num_classes}")
    if channels not in (1, 3):
        raise ValueError(f"channels = {channels!r} is invalid: expected 1 (grayscale) or 3 (RGB)")
    if cfg.source == "embedded":
        return _build_embedded(cfg, num_classes, class_names)
    return _build_pretrained(cfg, num_classes, class_names)


def _build_embedded(cfg: TeacherConfig, num_classes: int, class_names: list[str]) -> Teacher:
    """An RGB HF classifier of ``cfg.embedded_family`` built from ``cfg.embedded_*``; grayscale is repeated to RGB."""
    id2label, label2id = _label_maps(class_names)
    model = build_embedded_model(cfg, num_classes, id2label, label2id)
    size = cfg.image_size or 28
    processor = square_processor(size, [0.5] * 3, [0.5] * 3)
    transform = transform_from_processor(processor, model.config, "classifier", None)
    return Teacher(model, transform, "classifier", "embedded", processor=processor)


def load_teacher_config(cfg: TeacherConfig) -> tuple[str, Any]:
    """``(ref, config)`` of a hub / ``save_pretrained`` teacher: its config only, no weights (the pre-flight probe
    builds the model from it); errors name ``teacher.source`` and the fix."""
    from transformers import AutoConfig

    source = cfg.source
    local = Path(source).expanduser()
    if source.startswith(("/", "./", "../", "~")) and not local.is_dir():
        raise ConfigError(
            f"teacher.source = {source!r}: directory {str(local)!r} does not exist; expected 'embedded', "
            f"a hub id (e.g. openai/clip-vit-base-patch32) or a save_pretrained directory"
        )
    ref = str(local) if local.is_dir() else source
    try:
        config = AutoConfig.from_pretrained(ref, trust_remote_code=cfg.trust_remote_code)
    except Exception as exc:
        if "trust_remote_code" in str(exc) and not cfg.trust_remote_code:
            raise ConfigError(
                f"teacher.source = {source!r} needs its own Python code to load (its config has an "
                f"auto_map), which rkd does not run unless asked: add --trust-remote-code to the command "
                f"line if you trust that checkpoint"
            ) from None
        raise ConfigError(
            f"teacher.source = {source!r}: could not load its config ({type(exc).__name__}: {exc}); "
            f"expected 'embedded', a hub id reachable from here, or a save_pretrained directory"
        ) from exc
    return ref, config


def _build_pretrained(cfg: TeacherConfig, num_classes: int, class_names: list[str]) -> Teacher:
    source = cfg.source
    ref, config = load_teacher_config(cfg)
    kind = _detect_kind(cfg, config)
    if kind == "clip":
        model, head = _load_clip(ref, config, num_classes, source, cfg.finetune)
        processor = load_processor(ref, cfg.trust_remote_code)
        transform = transform_from_processor(processor, model.config, "clip", cfg.image_size)
        return Teacher(
            model, transform, "clip", source, head=head, processor=processor, trust_remote_code=cfg.trust_remote_code
        )
    model = _load_classifier(ref, config, num_classes, class_names, source, cfg)
    processor = load_processor(ref, cfg.trust_remote_code)
    transform = transform_from_processor(processor, model.config, "classifier", cfg.image_size)
    return Teacher(model, transform, "classifier", source, processor=processor, trust_remote_code=cfg.trust_remote_code)


def _load_clip(ref: str, config: Any, num_classes: int, source: str, finetune: bool) -> tuple[nn.Module, nn.Linear]:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if not finetune:
        raise _finetune_required(
            source,
            f"teacher {source} is a CLIP model: its {num_classes}-class linear head over "
            f"image embeddings is new and untrained",
        )
    if getattr(config, "model_type", None) == "clip":  # a full CLIP checkpoint: keep its projection size
        vision_config = CLIPVisionConfig(**config.vision_config.to_dict())
        vision_config.projection_dim = config.projection_dim
    elif getattr(config, "model_type", None) == "clip_vision_model":
        vision_config = config
    else:
        raise ConfigError(
            f"teacher.kind = 'clip' but teacher.source = {source!r} is a {config.model_type!r} model; "
            f"expected a CLIP checkpoint, or teacher.kind = 'auto' / 'classifier'"
        )
    model = CLIPVisionModelWithProjection.from_pretrained(ref, config=vision_config)
    head = nn.Linear(int(vision_config.projection_dim), num_classes)
    _reset_linear(head, 0.02)
    return model, head


def _load_classifier(
    ref: str, config: Any, num_classes: int, class_names: list[str], source: str, cfg: TeacherConfig
) -> nn.Module:
    from transformers import AutoModelForImageClassification

    order = match_labels(getattr(config, "id2label", None), class_names)
    id2label, label2id = _label_maps(class_names)
    try:
        if order is not None:
            model = AutoModelForImageClassification.from_pretrained(ref, trust_remote_code=cfg.trust_remote_code)
        else:
            if not cfg.finetune:
                theirs = list((config.id2label or {}).values())
                shown = ", ".join(map(str, theirs[:5])) + (", ..." if len(theirs) > 5 else "")
                raise _finetune_required(
                    source,
                    f"teacher {source} predicts {len(theirs)} classes ({shown}), the task has "
                    f"{num_classes} ({', '.join(class_names[:5])}{', ...' if num_classes > 5 else ''})",
                )
            model = AutoModelForImageClassification.from_pretrained(
                ref,
                id2label=id2label,
                label2id=label2id,
                ignore_mismatched_sizes=True,
                trust_remote_code=cfg.trust_remote_code,
            )
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(
            f"teacher.source = {source!r} is a {getattr(config, 'model_type', '?')!r} model, which is neither "
            f"an image classifier (AutoModelForImageClassification) nor CLIP; expected one of those "
            f"({exc})"
        ) from exc
    head, linear = find_head(model)
    if order is not None:
        if linear is None:
            raise ConfigError(
                f"teacher {source}: its labels match the task but rkd cannot find its classification head "
                f"to reorder; set teacher.finetune=true to train a new head"
            )
        if order != list(range(num_classes)):  # the checkpoint's own head, rows in the task's class order
            with torch.no_grad():
                linear.weight.copy_(linear.weight[order].clone())
                if linear.bias is not None:
                    linear.bias.copy_(linear.bias[order].clone())
        model.config.id2label, model.config.label2id = id2label, label2id
    elif linear is not None:  # same-sized but unrelated heads are kept by from_pretrained: start afresh
        _reset_linear(linear, float(getattr(model.config, "initializer_range", 0.02) or 0.02))
    return model
