"""A trained teacher on disk: ``save_pretrained`` model and processor plus rkd's record, reloaded by ``from_pretrained``.

Reloading a trained teacher takes the same ``from_pretrained`` path as a hub checkpoint; the
record (``rkd_teacher.json``) adds what HF does not keep: the kind, the input transform, the
source, the CLIP head and the identity the teacher cache is keyed by.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn
from safetensors.torch import load_file, save_file

from rkd.config import ConfigError
from rkd.data import ImageTransform
from rkd.run.artifacts import PathLike, atomic_write_json, read_json
from rkd.run.rundir import atomic_directory
from rkd.teacher.model import Teacher, transform_from_processor
from rkd.teacher.processor import load_processor, square_processor

TEACHER_RECORD = "rkd_teacher.json"  # beside config.json in a saved teacher
CLIP_HEAD_FILE = "rkd_clip_head.safetensors"
TEACHER_RECORD_VERSION = 1


def save_teacher(teacher: Teacher, model_dir: PathLike) -> Path:
    """``save_pretrained`` model + image processor + ``rkd_teacher.json`` (and the CLIP head), atomically."""
    model_dir = Path(model_dir)
    with atomic_directory(model_dir) as tmp:
        teacher.model.save_pretrained(str(tmp), safe_serialization=True)
        t = teacher.transform
        processor = square_processor(t.size, t.mean, t.std) if _processor_disagrees(teacher) else teacher.processor
        processor.save_pretrained(str(tmp))
        clip_head = None
        if teacher.kind == "clip":
            clip_head = CLIP_HEAD_FILE
            state = {k: v.detach().cpu().contiguous() for k, v in teacher.head.state_dict().items()}
            save_file(state, str(tmp / CLIP_HEAD_FILE))
        atomic_write_json(
            tmp / TEACHER_RECORD,
            {
                "version": TEACHER_RECORD_VERSION,
                "kind": teacher.kind,
                "source": teacher.source,
                "trust_remote_code": teacher.trust_remote_code,
                "num_classes": teacher.num_classes,
                "class_names": [teacher.model.config.id2label[i] for i in range(teacher.num_classes)]
                if teacher.kind == "classifier"
                else None,
                "feature_dim": teacher.feature_dim,
                "transform": teacher.transform.describe(),
                "clip_head": clip_head,
                "identity": teacher.identity,
            },
        )
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
        raise FileNotFoundError(
            f"{record_path} not found: {model_dir} is not a teacher saved by rkd "
            f"(use build_teacher for a plain hub or save_pretrained checkpoint)"
        )
    record = read_json(record_path)
    if record.get("version") != TEACHER_RECORD_VERSION:
        raise ValueError(
            f"{record_path}: version {record.get('version')!r} is not supported (expected {TEACHER_RECORD_VERSION})"
        )
    trust = record.get("trust_remote_code", False) is True
    if trust and not trust_remote_code:
        raise ConfigError(
            f"the teacher in {model_dir} was built with remote code (trust_remote_code in {record_path}); "
            f"rkd runs it only when asked on the command line: add --trust-remote-code if you trust "
            f"{record.get('source')!r}"
        )
    transform = ImageTransform(**{k: tuple(v) if isinstance(v, list) else v for k, v in record["transform"].items()})
    processor = load_processor(str(model_dir), trust)
    if record["kind"] == "clip":
        model = CLIPVisionModelWithProjection.from_pretrained(str(model_dir))
        state = load_file(str(model_dir / record["clip_head"]))
        head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0], bias="bias" in state)
        head.load_state_dict(state)
        return Teacher(
            model, transform, "clip", record["source"], head=head, processor=processor, trust_remote_code=trust
        )
    model = AutoModelForImageClassification.from_pretrained(str(model_dir), trust_remote_code=trust)
    return Teacher(model, transform, "classifier", record["source"], processor=processor, trust_remote_code=trust)
