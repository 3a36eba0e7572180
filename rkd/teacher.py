"""The teacher: a Hugging Face vision model, fine-tuned once, whose outputs are cached once.

Distillation in rkd never runs the teacher inside a student's training loop. The teacher is
fine-tuned on the task (``train_teacher``), saved with ``save_pretrained`` (so reloading a
trained teacher takes the same ``from_pretrained`` path as a hub checkpoint), and one frozen
pass writes its logits and pooled features for every split to a sharded, checksummed cache
(``build_cache``). Students then read ``TeacherCache.targets`` by sample index: a 300M-parameter
teacher costs one inference pass, not one per student epoch.

The cache is keyed by the teacher's identity (a hash of its weights) and the dataset
fingerprint; ``load_cache`` refuses anything that does not match, naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate.utils import DistributedType
from safetensors.torch import load_file, save_file

from rkd.artifacts import atomic_write, atomic_write_json, read_json, sha256_file
from rkd.config import ConfigError, RunConfig, TeacherConfig
from rkd.data import SPLITS, DataBundle, ImageTransform, augment, make_loader
from rkd.embedded_teacher import build_embedded_model
from rkd.progress import progress_bar

PathLike = Union[str, Path]

TEACHER_RECORD = "rkd_teacher.json"  # beside config.json in a saved teacher
CLIP_HEAD_FILE = "rkd_clip_head.safetensors"
TEACHER_RECORD_VERSION = 1
CACHE_FORMAT = "rkd-teacher-cache"
CACHE_VERSION = 1
MANIFEST = "manifest.json"
AUGMENTATION_NONE = "none: un-augmented single view"
AUGMENTATION_FLIP = "flip-average: mean of each image's and its horizontal mirror's outputs"
CLIP_MODEL_TYPES = ("clip", "clip_vision_model")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
FP16_MAX = 65504.0

# Where each family keeps its classification head. The head's *input* is the pooled
# representation the family's own classifier sees: ResNet/RegNet/BiT the pooled output of the
# backbone, ViT/DeiT the CLS token after the final layer norm, ConvNeXt/Swin/BEiT/EfficientNet/
# MobileNet their pooled (and normed) output, DINOv2 [CLS, mean patch]. Unknown families fall
# back to the first of these attribute names, then to the mean of the last hidden state.
HEAD_ATTRIBUTES = {
    "resnet": "classifier", "regnet": "classifier", "bit": "classifier", "vit": "classifier",
    "deit": "classifier", "convnext": "classifier", "convnextv2": "classifier", "swin": "classifier",
    "swinv2": "classifier", "beit": "classifier", "data2vec-vision": "classifier",
    "efficientnet": "classifier", "mobilenet_v1": "classifier", "mobilenet_v2": "classifier",
    "mobilevit": "classifier", "dinov2": "classifier", "poolformer": "classifier", "van": "classifier",
}
FALLBACK_HEAD_ATTRIBUTES = ("classifier", "fc", "head")


class CacheError(RuntimeError):
    """The teacher cache is missing, incomplete, corrupt or built for another teacher or dataset."""


# ----------------------------------------------------------------------------- the wrapper


class Teacher(nn.Module):
    """An HF vision model plus its input transform: uint8 pixels in, ``{"logits", "features"}`` out.

    ``kind`` is ``"classifier"`` (an ``AutoModelForImageClassification``; features are the input
    of its classification head) or ``"clip"`` (``CLIPVisionModelWithProjection``; features are the
    projected image embeddings and ``head`` is a linear classifier trained by rkd).
    """

    def __init__(self, model: nn.Module, transform: ImageTransform, kind: str, source: str,
                 head: Optional[nn.Linear] = None, processor: Any = None, trust_remote_code: bool = False) -> None:
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
        self._forward_kwargs = {"interpolate_pos_encoding": True} if wants_interp and native and native != transform.size else {}
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
        return sum(p.numel() for p in self.parameters())

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


def find_head(model: nn.Module) -> tuple[Optional[nn.Module], Optional[nn.Linear]]:
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


def classifier_outputs(model: nn.Module, pixel_values: torch.Tensor, head: Optional[nn.Module],
                       forward_kwargs: Optional[dict] = None) -> dict[str, torch.Tensor]:
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


def _size_of(value: Any) -> Optional[int]:
    """A square side from an HF processor ``size``/``crop_size`` (int, dict or SizeDict)."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    get = value.get if isinstance(value, dict) else (lambda k: getattr(value, k, None))
    height, width = get("height"), get("width")
    if height and width:
        if height != width:
            warnings.warn(f"image processor size {height}x{width} is not square; rkd uses {max(height, width)}x{max(height, width)}")
        return int(max(height, width))
    for key in ("shortest_edge", "longest_edge"):
        if get(key):
            return int(get(key))
    return None


def transform_from_processor(processor: Any, model_config: Any, kind: str, size_override: Optional[int]) -> ImageTransform:
    """The processor's size (crop size when it center-crops) and statistics; the model's channel count."""
    channels = int(getattr(model_config, "num_channels", 3) or 3)
    size = size_override
    mean, std = (CLIP_MEAN, CLIP_STD) if kind == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    if processor is not None:
        if size is None and getattr(processor, "do_center_crop", False):
            size = _size_of(getattr(processor, "crop_size", None))
        if size is None:
            size = _size_of(getattr(processor, "size", None))
        if getattr(processor, "do_normalize", True) is False:
            mean, std = (0.0,), (1.0,)
        else:
            mean = getattr(processor, "image_mean", None) or mean
            std = getattr(processor, "image_std", None) or std
    if size is None:
        native = getattr(model_config, "image_size", None)
        size = int(native[0] if isinstance(native, (list, tuple)) else native or 224)
    return ImageTransform(size=int(size), channels=channels, mean=tuple(mean), std=tuple(std))


def load_processor(source: str, trust_remote_code: bool = False) -> Any:
    """``AutoImageProcessor.from_pretrained`` or None (with a warning): the model config then supplies defaults."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as exc:  # missing preprocessor_config.json, or a processor class we cannot build
        warnings.warn(f"no usable image processor for teacher {source!r} ({type(exc).__name__}: {exc}); "
                      f"using the model config's image_size and standard mean/std")
        return None


def square_processor(size: int, mean: Any, std: Any) -> Any:
    """A standard ``ViTImageProcessor`` recording a plain resize to ``size`` and the given statistics."""
    import transformers

    cls = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor  # no torchvision needed
    return cls(do_resize=True, size={"height": size, "width": size}, image_mean=list(mean), image_std=list(std))


def _label_maps(class_names: list[str]) -> tuple[dict[int, str], dict[str, int]]:
    return {i: n for i, n in enumerate(class_names)}, {n: i for i, n in enumerate(class_names)}


def _norm_label(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).lower()


def match_labels(id2label: dict, class_names: list[str]) -> Optional[list[int]]:
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
    """The task's teacher: the embedded HF classifier (``rkd.embedded_teacher``), or a hub / ``save_pretrained`` checkpoint.

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
        raise ConfigError(f"teacher.source = {source!r}: directory {str(local)!r} does not exist; expected 'embedded', "
                          f"a hub id (e.g. openai/clip-vit-base-patch32) or a save_pretrained directory")
    ref = str(local) if local.is_dir() else source
    try:
        config = AutoConfig.from_pretrained(ref, trust_remote_code=cfg.trust_remote_code)
    except Exception as exc:
        if "trust_remote_code" in str(exc) and not cfg.trust_remote_code:
            raise ConfigError(f"teacher.source = {source!r} needs its own Python code to load (its config has an "
                              f"auto_map), which rkd does not run unless asked: add --trust-remote-code to the command "
                              f"line if you trust that checkpoint") from None
        raise ConfigError(f"teacher.source = {source!r}: could not load its config ({type(exc).__name__}: {exc}); "
                          f"expected 'embedded', a hub id reachable from here, or a save_pretrained directory") from exc
    return ref, config


def _build_pretrained(cfg: TeacherConfig, num_classes: int, class_names: list[str]) -> Teacher:
    source = cfg.source
    ref, config = load_teacher_config(cfg)
    kind = _detect_kind(cfg, config)
    if kind == "clip":
        model, head = _load_clip(ref, config, num_classes, source, cfg.finetune)
        processor = load_processor(ref, cfg.trust_remote_code)
        transform = transform_from_processor(processor, model.config, "clip", cfg.image_size)
        return Teacher(model, transform, "clip", source, head=head, processor=processor,
                       trust_remote_code=cfg.trust_remote_code)
    model = _load_classifier(ref, config, num_classes, class_names, source, cfg)
    processor = load_processor(ref, cfg.trust_remote_code)
    transform = transform_from_processor(processor, model.config, "classifier", cfg.image_size)
    return Teacher(model, transform, "classifier", source, processor=processor, trust_remote_code=cfg.trust_remote_code)


def _load_clip(ref: str, config: Any, num_classes: int, source: str, finetune: bool) -> tuple[nn.Module, nn.Linear]:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if not finetune:
        raise _finetune_required(source, f"teacher {source} is a CLIP model: its {num_classes}-class linear head over "
                                         f"image embeddings is new and untrained")
    if getattr(config, "model_type", None) == "clip":  # a full CLIP checkpoint: keep its projection size
        vision_config = CLIPVisionConfig(**config.vision_config.to_dict())
        vision_config.projection_dim = config.projection_dim
    elif getattr(config, "model_type", None) == "clip_vision_model":
        vision_config = config
    else:
        raise ConfigError(f"teacher.kind = 'clip' but teacher.source = {source!r} is a {config.model_type!r} model; "
                          f"expected a CLIP checkpoint, or teacher.kind = 'auto' / 'classifier'")
    model = CLIPVisionModelWithProjection.from_pretrained(ref, config=vision_config)
    head = nn.Linear(int(vision_config.projection_dim), num_classes)
    _reset_linear(head, 0.02)
    return model, head


def _load_classifier(ref: str, config: Any, num_classes: int, class_names: list[str], source: str, cfg: TeacherConfig) -> nn.Module:
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
                raise _finetune_required(source, f"teacher {source} predicts {len(theirs)} classes ({shown}), the task has "
                                                 f"{num_classes} ({', '.join(class_names[:5])}{', ...' if num_classes > 5 else ''})")
            model = AutoModelForImageClassification.from_pretrained(
                ref, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True,
                trust_remote_code=cfg.trust_remote_code,
            )
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"teacher.source = {source!r} is a {getattr(config, 'model_type', '?')!r} model, which is neither "
                          f"an image classifier (AutoModelForImageClassification) nor CLIP; expected one of those "
                          f"({exc})") from exc
    head, linear = find_head(model)
    if order is not None:
        if linear is None:
            raise ConfigError(f"teacher {source}: its labels match the task but rkd cannot find its classification head "
                              f"to reorder; set teacher.finetune=true to train a new head")
        if order != list(range(num_classes)):  # the checkpoint's own head, rows in the task's class order
            with torch.no_grad():
                linear.weight.copy_(linear.weight[order].clone())
                if linear.bias is not None:
                    linear.bias.copy_(linear.bias[order].clone())
        model.config.id2label, model.config.label2id = id2label, label2id
    elif linear is not None:  # same-sized but unrelated heads are kept by from_pretrained: start afresh
        _reset_linear(linear, float(getattr(model.config, "initializer_range", 0.02) or 0.02))
    return model


# ----------------------------------------------------------------------------- save / reload


def save_teacher(teacher: Teacher, model_dir: PathLike) -> Path:
    """``save_pretrained`` model + image processor + ``rkd_teacher.json`` (and the CLIP head), atomically."""
    model_dir = Path(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.", suffix=".tmp", dir=model_dir.parent))
    try:
        teacher.model.save_pretrained(str(tmp), safe_serialization=True)
        t = teacher.transform
        processor = square_processor(t.size, t.mean, t.std) if _processor_disagrees(teacher) else teacher.processor
        processor.save_pretrained(str(tmp))
        clip_head = None
        if teacher.kind == "clip":
            clip_head = CLIP_HEAD_FILE
            state = {k: v.detach().cpu().contiguous() for k, v in teacher.head.state_dict().items()}
            save_file(state, str(tmp / CLIP_HEAD_FILE))
        atomic_write_json(tmp / TEACHER_RECORD, {
            "version": TEACHER_RECORD_VERSION,
            "kind": teacher.kind,
            "source": teacher.source,
            "trust_remote_code": teacher.trust_remote_code,
            "num_classes": teacher.num_classes,
            "class_names": [teacher.model.config.id2label[i] for i in range(teacher.num_classes)]
            if teacher.kind == "classifier" else None,
            "feature_dim": teacher.feature_dim,
            "transform": teacher.transform.describe(),
            "clip_head": clip_head,
            "identity": teacher.identity,
        })
        stale = None
        if model_dir.exists():
            stale = model_dir.parent / f".{model_dir.name}.stale-{os.getpid()}-{time.time_ns()}"
            os.replace(model_dir, stale)
        os.replace(tmp, model_dir)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return model_dir


def _processor_disagrees(teacher: Teacher) -> bool:
    """Save a fresh processor when there is none or when ``teacher.image_size`` overrode its size."""
    if teacher.processor is None:
        return True
    derived = transform_from_processor(teacher.processor, teacher.model.config, teacher.kind, None)
    return derived != teacher.transform


def load_trained_teacher(model_dir: PathLike, trust_remote_code: bool = False) -> Teacher:
    """Rebuild a teacher written by ``save_teacher`` through ``from_pretrained``.

    A teacher that needed remote code loads only when the caller allows it again
    (``trust_remote_code``): the saved record alone never switches it on.
    """
    from transformers import AutoModelForImageClassification, CLIPVisionModelWithProjection

    model_dir = Path(model_dir)
    record_path = model_dir / TEACHER_RECORD
    if not record_path.is_file():
        raise FileNotFoundError(f"{record_path} not found: {model_dir} is not a teacher saved by rkd "
                                f"(use build_teacher for a plain hub or save_pretrained checkpoint)")
    record = read_json(record_path)
    if record.get("version") != TEACHER_RECORD_VERSION:
        raise ValueError(f"{record_path}: version {record.get('version')!r} is not supported (expected {TEACHER_RECORD_VERSION})")
    trust = record.get("trust_remote_code", False) is True
    if trust and not trust_remote_code:
        raise ConfigError(f"the teacher in {model_dir} was built with remote code (trust_remote_code in {record_path}); "
                         f"rkd runs it only when asked on the command line: add --trust-remote-code if you trust "
                         f"{record.get('source')!r}")
    transform = ImageTransform(**{k: tuple(v) if isinstance(v, list) else v for k, v in record["transform"].items()})
    processor = load_processor(str(model_dir), trust)
    if record["kind"] == "clip":
        model = CLIPVisionModelWithProjection.from_pretrained(str(model_dir))
        state = load_file(str(model_dir / record["clip_head"]))
        head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0], bias="bias" in state)
        head.load_state_dict(state)
        return Teacher(model, transform, "clip", record["source"], head=head, processor=processor, trust_remote_code=trust)
    model = AutoModelForImageClassification.from_pretrained(str(model_dir), trust_remote_code=trust)
    return Teacher(model, transform, "classifier", record["source"], processor=processor, trust_remote_code=trust)


# ----------------------------------------------------------------------------- fine-tuning


class TeacherObjective:
    """Cross-entropy on (optionally augmented) uint8 batches; augmentation only while training."""

    def __init__(self, use_augmentation: bool, label_smoothing: float = 0.0, seed: int = 0) -> None:
        self.use_augmentation = use_augmentation
        self.label_smoothing = label_smoothing
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, model: nn.Module, batch: dict, train: bool):
        from rkd.engine import Step

        pixels = batch["pixels"]
        if train and self.use_augmentation:
            pixels = augment(pixels, self.generator)
        logits = model(pixels)["logits"]
        labels = batch["label"]
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing if train else 0.0)
        return Step(loss=loss, logits=logits.detach(), labels=labels, terms={"ce": loss.detach()})


def head_parameters(teacher: Teacher) -> list[nn.Parameter]:
    """The classification head's parameters (new or task-reordered), as opposed to the backbone's."""
    if teacher.kind == "clip":
        return list(teacher.head.parameters())
    head, _ = find_head(teacher.model)
    return list(head.parameters()) if head is not None else []


def parameter_groups(teacher: Teacher, lr: float, backbone_lr_scale: float) -> list[dict]:
    """Optimiser groups: the head at ``lr``, the backbone at ``lr * backbone_lr_scale``.

    A pretrained backbone fine-tunes best at a fraction of the rate a fresh head needs.
    """
    head_ids = {id(p) for p in head_parameters(teacher)}
    head = [p for p in teacher.parameters() if id(p) in head_ids]
    backbone = [p for p in teacher.parameters() if id(p) not in head_ids]
    groups = [{"params": head, "lr": lr}] if head else []
    if backbone:
        groups.append({"params": backbone, "lr": lr * backbone_lr_scale})
    return groups


def train_teacher(cfg: RunConfig, bundle: DataBundle, out_dir: PathLike, accelerator: Any,
                  backbone_lr_scale: Optional[float] = None) -> dict:
    """Build, fine-tune (``cfg.teacher.train`` through ``rkd.engine.fit``) and save the teacher to ``out_dir/model``.

    ``backbone_lr_scale`` multiplies the learning rate of everything but the head; by default 1
    for the embedded teacher (trained from scratch) and 0.1 for pretrained checkpoints.
    With ``teacher.finetune = false`` the loaded teacher is only evaluated on val and saved.
    """
    from rkd.engine import evaluate, fit

    out_dir = Path(out_dir)
    tcfg = cfg.teacher
    teacher = build_teacher(tcfg, bundle.num_classes, bundle.class_names, bundle.channels)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # DeepSpeed broadcasts each parameter as raw bytes, which needs a contiguous layout: no channels-last weights
        teacher = teacher.to(memory_format=torch.contiguous_format)
    objective = TeacherObjective(tcfg.augment, tcfg.train.label_smoothing, seed=cfg.seed + 17 * accelerator.process_index)
    val_loader = make_loader(bundle.splits["val"], tcfg.train.batch_size, shuffle=False, seed=cfg.seed)
    if tcfg.finetune:
        train_loader = make_loader(bundle.splits["train"], tcfg.train.batch_size, shuffle=True, seed=cfg.seed)
        if backbone_lr_scale is None:
            backbone_lr_scale = 1.0 if tcfg.source == "embedded" else 0.1
        groups = parameter_groups(teacher, tcfg.train.lr, backbone_lr_scale)
        summary = fit(accelerator, teacher, objective, train_loader, val_loader, tcfg.train, out_dir, desc="teacher",
                      parameters=groups)
        val_accuracy, seconds, steps = summary["best_val_accuracy"], summary["seconds"], summary["steps"]
    else:
        started = time.time()
        model = accelerator.prepare_model(teacher, evaluation_mode=True)
        metrics = evaluate(accelerator, model, objective, accelerator.prepare_data_loader(val_loader))
        val_accuracy, seconds, steps = metrics["accuracy"], time.time() - started, 0
    teacher = accelerator.unwrap_model(teacher) if hasattr(accelerator, "unwrap_model") else teacher
    model_dir = out_dir / "model"
    if accelerator.is_main_process:
        save_teacher(teacher, model_dir)
    accelerator.wait_for_everyone()
    return {
        "val_accuracy": float(val_accuracy),
        "train_seconds": float(seconds),
        "steps": int(steps),
        "n_params": teacher.n_params,
        "finetuned": bool(tcfg.finetune),
        "kind": teacher.kind,
        "source": teacher.source,
        "trust_remote_code": bool(teacher.trust_remote_code),
        "model_dir": str(model_dir),
    }


# ----------------------------------------------------------------------------- the cache


@dataclass(frozen=True)
class _Shard:
    split: str
    number: int
    start: int
    stop: int

    @property
    def file(self) -> str:
        return f"{self.split}-{self.number:05d}.safetensors"

    @property
    def sidecar(self) -> str:
        return self.file + ".json"


def _plan(bundle: DataBundle, shard_size: int) -> list[_Shard]:
    """Every split cut into contiguous index ranges of ``shard_size`` (the last may be shorter)."""
    if shard_size < 1:
        raise ValueError(f"shard_size = {shard_size!r} is invalid: expected an integer >= 1")
    plan = []
    for split in SPLITS:
        n = len(bundle.splits[split])
        for number in range(math.ceil(n / shard_size)):
            plan.append(_Shard(split, number, number * shard_size, min(n, (number + 1) * shard_size)))
    return plan


def _shard_is_current(cache_dir: Path, shard: _Shard, expected: dict) -> bool:
    """A shard from an interrupted or earlier build is reused when its sidecar and checksum agree."""
    sidecar, path = cache_dir / shard.sidecar, cache_dir / shard.file
    if not (sidecar.is_file() and path.is_file()):
        return False
    try:
        record = read_json(sidecar)
    except (ValueError, OSError):
        return False
    wanted = {"file": shard.file, "split": shard.split, "start": shard.start, "stop": shard.stop, **expected}
    if any(record.get(k) != v for k, v in wanted.items()):
        return False
    return sha256_file(path) == record.get("sha256")


def _teacher_pass(teacher: Teacher, images: torch.Tensor, batch_size: int, device: torch.device,
                  accelerator: Any, flip_average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    logits, features = [], []
    autocast = accelerator.autocast() if accelerator is not None else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(device, non_blocking=True)
            out = teacher(batch)
            if flip_average:  # [B, H, W, C]: dim 2 is the width
                mirrored = teacher(batch.flip(2))
                out = {key: (out[key].float() + mirrored[key].float()) / 2 for key in ("logits", "features")}
            logits.append(out["logits"].float().cpu())
            features.append(out["features"].float().cpu())
    logits_t, features_t = torch.cat(logits), torch.cat(features)
    if not (torch.isfinite(logits_t).all() and torch.isfinite(features_t).all()):
        raise RuntimeError("the teacher produced non-finite logits or features; check its weights and input transform")
    return logits_t.clamp(-FP16_MAX, FP16_MAX).half(), features_t.clamp(-FP16_MAX, FP16_MAX).half()


def build_cache(teacher: Teacher, bundle: DataBundle, cache_dir: PathLike, batch_size: int, shard_size: int,
                accelerator: Any = None, progress: bool = True, flip_average: bool = False) -> dict:
    """One frozen, un-augmented teacher pass over every split into fp16 safetensors shards; returns the manifest.

    ``flip_average`` stores the mean of each image's and its mirror's outputs (a 2x longer pass,
    a slightly stronger and mirror-invariant teacher).

    Shard ``i`` (numbered over all splits) is written by process ``i % N``; each shard gets a
    sidecar ``.json`` with its checksum, so a rerun after a kill recomputes only missing or
    stale shards. The main process writes ``manifest.json`` last, after every process is done:
    a cache without a manifest is never valid.
    """
    cache_dir = Path(cache_dir)
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    is_main = rank == 0
    if accelerator is not None and hasattr(accelerator, "unwrap_model"):
        teacher = accelerator.unwrap_model(teacher)
    device = accelerator.device if accelerator is not None else next(teacher.parameters()).device
    teacher.to(device)
    was_training = teacher.training
    teacher.eval()
    identity = teacher.identity
    expected = {"teacher_sha256": identity["weights_sha256"], "dataset_fingerprint": bundle.fingerprint,
                "transform": teacher.transform.describe()}
    if flip_average:  # only then: caches built before the option stay valid
        expected["augmentation"] = AUGMENTATION_FLIP
    plan = _plan(bundle, shard_size)
    if is_main:
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / MANIFEST).unlink(missing_ok=True)  # invalid until rewritten below
    _barrier(accelerator)
    mine = [shard for i, shard in enumerate(plan) if i % world == rank]
    bar = progress_bar(sum(s.stop - s.start for s in mine), "teacher cache", enabled=progress and is_main, unit="img")
    for shard in mine:
        if not _shard_is_current(cache_dir, shard, expected):
            images = bundle.splits[shard.split].images[shard.start : shard.stop]
            logits, features = _teacher_pass(teacher, images, batch_size, device, accelerator, flip_average)
            tensors = {"logits": logits, "features": features,
                       "index": torch.arange(shard.start, shard.stop, dtype=torch.int64)}
            # one key: safetensors writes metadata from a hash map, so several keys come out in random order
            metadata = {"rkd": json.dumps({"split": shard.split, "start": shard.start, "stop": shard.stop}, sort_keys=True)}
            atomic_write(cache_dir / shard.file, lambda p: save_file(tensors, str(p), metadata=metadata))
            record = {"file": shard.file, "split": shard.split, "start": shard.start, "stop": shard.stop,
                      "sha256": sha256_file(cache_dir / shard.file), **expected}
            atomic_write_json(cache_dir / shard.sidecar, record)
        bar.update(shard.stop - shard.start)
    bar.close()
    teacher.train(was_training)
    _barrier(accelerator)
    if is_main:
        manifest = _write_manifest(cache_dir, plan, expected, identity, bundle, teacher, shard_size)
    _barrier(accelerator)
    if not is_main:
        manifest = read_json(cache_dir / MANIFEST)
    return manifest


def _barrier(accelerator: Any) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


def _write_manifest(cache_dir: Path, plan: list[_Shard], expected: dict, identity: dict, bundle: DataBundle,
                    teacher: Teacher, shard_size: int) -> dict:
    splits: dict[str, dict] = {s: {"size": len(bundle.splits[s]), "shards": []} for s in SPLITS}
    for shard in plan:
        if not _shard_is_current(cache_dir, shard, expected):
            raise CacheError(f"{cache_dir / shard.file}: missing or not matching its sidecar after the build "
                             f"(did a process fail?); rerun build_cache")
        record = read_json(cache_dir / shard.sidecar)
        splits[shard.split]["shards"].append({"file": shard.file, "start": shard.start, "stop": shard.stop,
                                              "sha256": record["sha256"]})
    wanted = {s.file for s in plan} | {s.sidecar for s in plan}
    for stale in cache_dir.glob("*.safetensors*"):  # shards of an earlier, larger dataset
        if stale.name not in wanted:
            stale.unlink(missing_ok=True)
    manifest = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "teacher": identity,
        "dataset_fingerprint": bundle.fingerprint,
        "dataset_source": bundle.source,
        "transform": expected["transform"],
        "augmentation": expected.get("augmentation", AUGMENTATION_NONE),
        "dtype": "float16",
        "num_classes": teacher.num_classes,
        "feature_dim": teacher.feature_dim,
        "shard_size": shard_size,
        "splits": splits,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_json(cache_dir / MANIFEST, manifest)
    return manifest


@dataclass
class TeacherCache:
    """Cached fp16 teacher outputs per split, row ``i`` belonging to sample ``i`` of that split."""

    logits: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor]
    manifest: dict
    path: Path

    def targets(self, split: str, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The teacher's outputs for a batch's ``index`` tensor, as float32 on the index's device."""
        if split not in self.logits:
            raise KeyError(f"split {split!r} is not in the teacher cache {self.path}; available: {sorted(self.logits)}")
        rows = index.to(self.logits[split].device, dtype=torch.long)
        return {
            "teacher_logits": self.logits[split][rows].to(index.device).float(),
            "teacher_features": self.features[split][rows].to(index.device).float(),
        }

    def to(self, device: Union[str, torch.device]) -> "TeacherCache":
        """Move every tensor (e.g. to the GPU, so ``targets`` gathers there without a copy per batch)."""
        return TeacherCache({k: v.to(device) for k, v in self.logits.items()},
                            {k: v.to(device) for k, v in self.features.items()}, self.manifest, self.path)


_REBUILD = "delete the cache directory or rerun the pipeline to rebuild it"


def verify_cache(cache_dir: PathLike, expected_teacher: Optional[dict] = None,
                 expected_fingerprint: Optional[str] = None) -> dict:
    """Check manifest, coverage, shard checksums and (if given) teacher identity and data fingerprint."""
    cache_dir = Path(cache_dir)
    path = cache_dir / MANIFEST
    if not path.is_file():
        raise CacheError(f"{path} is missing: the teacher cache in {cache_dir} was never completed "
                         f"(the manifest is written last); {_REBUILD}")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise CacheError(f"{path} is not valid JSON ({exc}); it is truncated or corrupt; {_REBUILD}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT or manifest.get("version") != CACHE_VERSION:
        found = (manifest.get("format"), manifest.get("version")) if isinstance(manifest, dict) else type(manifest).__name__
        raise CacheError(f"{path}: format {found} is not {(CACHE_FORMAT, CACHE_VERSION)}; {_REBUILD}")
    if expected_teacher is not None:
        recorded = manifest.get("teacher") or {}
        differing = {k: (recorded.get(k), v) for k, v in expected_teacher.items() if recorded.get(k) != v}
        if differing:
            shown = "; ".join(f"{k}: cache has {a!r}, expected {b!r}" for k, (a, b) in differing.items())
            raise CacheError(f"{path}: built by a different teacher ({shown}); {_REBUILD}")
    if expected_fingerprint is not None and manifest.get("dataset_fingerprint") != expected_fingerprint:
        raise CacheError(f"{path}: built for dataset fingerprint {manifest.get('dataset_fingerprint')!r}, expected "
                         f"{expected_fingerprint!r} (the data, its split or its caps changed); {_REBUILD}")
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or set(SPLITS) - set(splits):
        raise CacheError(f"{path}: expected splits {list(SPLITS)}, found {sorted(splits or {})}; {_REBUILD}")
    for split in SPLITS:
        entry = splits[split]
        cursor = 0
        for shard in sorted(entry.get("shards", []), key=lambda s: s["start"]):
            if shard["start"] != cursor or shard["stop"] <= shard["start"]:
                raise CacheError(f"{path}: split {split!r} shard {shard['file']} covers [{shard['start']}, {shard['stop']}) "
                                 f"but the next index is {cursor}; {_REBUILD}")
            cursor = shard["stop"]
            shard_path = cache_dir / shard["file"]
            if not shard_path.is_file():
                raise CacheError(f"{shard_path} is missing (listed in {path}); {_REBUILD}")
            found = sha256_file(shard_path)
            if found != shard["sha256"]:
                raise CacheError(f"{shard_path}: sha256 {found[:16]}... does not match the manifest's "
                                 f"{shard['sha256'][:16]}...; the file is corrupt or from another build; {_REBUILD}")
        if cursor != entry.get("size"):
            raise CacheError(f"{path}: split {split!r} shards cover [0, {cursor}) but the split has {entry.get('size')} "
                             f"samples; {_REBUILD}")
    return manifest


def load_cache(cache_dir: PathLike, expected_teacher: Optional[dict] = None,
               expected_fingerprint: Optional[str] = None) -> TeacherCache:
    """Verify (see ``verify_cache``) and load every split's logits and features into memory."""
    cache_dir = Path(cache_dir)
    manifest = verify_cache(cache_dir, expected_teacher, expected_fingerprint)
    logits, features = {}, {}
    k, d = manifest["num_classes"], manifest["feature_dim"]
    for split in SPLITS:
        parts_l, parts_f = [], []
        for shard in sorted(manifest["splits"][split]["shards"], key=lambda s: s["start"]):
            shard_path = cache_dir / shard["file"]
            try:
                tensors = load_file(str(shard_path))
            except Exception as exc:
                raise CacheError(f"{shard_path}: unreadable safetensors file ({exc}); {_REBUILD}") from exc
            n = shard["stop"] - shard["start"]
            ok = (set(tensors) >= {"logits", "features", "index"} and tuple(tensors["logits"].shape) == (n, k)
                  and tuple(tensors["features"].shape) == (n, d)
                  and torch.equal(tensors["index"], torch.arange(shard["start"], shard["stop"])))
            if not ok:
                shapes = {name: tuple(t.shape) for name, t in tensors.items()}
                raise CacheError(f"{shard_path}: tensors {shapes} do not match indices [{shard['start']}, {shard['stop']}) "
                                 f"with {k} classes and {d} features; {_REBUILD}")
            parts_l.append(tensors["logits"])
            parts_f.append(tensors["features"])
        logits[split] = torch.cat(parts_l) if parts_l else torch.zeros(0, k, dtype=torch.float16)
        features[split] = torch.cat(parts_f) if parts_f else torch.zeros(0, d, dtype=torch.float16)
    return TeacherCache(logits, features, manifest, cache_dir)


def cache_is_valid(cache_dir: PathLike, expected_teacher: Optional[dict] = None,
                   expected_fingerprint: Optional[str] = None) -> bool:
    """True when ``verify_cache`` passes (cheap: checks checksums, loads no tensors)."""
    try:
        verify_cache(cache_dir, expected_teacher, expected_fingerprint)
        return True
    except CacheError:
        return False
