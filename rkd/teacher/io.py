"""A trained teacher on disk: ``save_pretrained`` model and processor plus rkd's record, reloaded by ``from_pretrained``.

Reloading a trained teacher takes the same ``from_pretrained`` path as a hub checkpoint; the
record (``rkd_teacher.json``) adds what HF does not keep: the kind, the input transform, the
source, what the kind's adapter saved beside the model (a CLIP tower's head) and the identity
the teacher cache is keyed by.
"""

from __future__ import annotations

from pathlib import Path

from rkd.config import ConfigError
from rkd.data import ImageTransform
from rkd.run.artifacts import PathLike, atomic_write_json, read_json_checked
from rkd.run.rundir import atomic_directory
from rkd.teacher.hub import load_processor, square_processor
from rkd.teacher.kinds import TEACHER_KINDS
from rkd.teacher.model import Teacher, transform_from_processor

TEACHER_RECORD = "rkd_teacher.json"  # beside config.json in a saved teacher
TEACHER_RECORD_VERSION = 1


def save_teacher(teacher: Teacher, model_dir: PathLike) -> Path:
    """``save_pretrained`` model + image processor + what the kind adds + ``rkd_teacher.json``, atomically."""
    model_dir = Path(model_dir)
    with atomic_directory(model_dir) as tmp:
        teacher.model.save_pretrained(str(tmp), safe_serialization=True)
        t = teacher.transform
        processor = square_processor(t.size, t.mean, t.std) if _processor_disagrees(teacher) else teacher.processor
        processor.save_pretrained(str(tmp))
        extra = teacher.adapter.save(teacher.model, teacher.head, tmp)
        atomic_write_json(
            tmp / TEACHER_RECORD,
            {
                "version": TEACHER_RECORD_VERSION,
                "kind": teacher.kind,
                "source": teacher.source,
                "trust_remote_code": teacher.trust_remote_code,
                "num_classes": teacher.num_classes,
                "feature_dim": teacher.feature_dim,
                "transform": teacher.transform.describe(),
                **extra,
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
    model_dir = Path(model_dir)
    record_path = model_dir / TEACHER_RECORD
    missing = FileNotFoundError(
        f"{record_path} not found: {model_dir} is not a teacher saved by rkd "
        f"(use build_teacher for a plain hub or save_pretrained checkpoint)"
    )
    record = read_json_checked(record_path, missing, lambda exc: ValueError(f"{record_path} is not valid JSON ({exc})"))
    if record.get("version") != TEACHER_RECORD_VERSION:
        raise ValueError(
            f"{record_path}: version {record.get('version')!r} is not supported (expected {TEACHER_RECORD_VERSION})"
        )
    if record.get("kind") not in TEACHER_KINDS:
        raise ValueError(f"{record_path}: kind {record.get('kind')!r} is not one of {', '.join(TEACHER_KINDS)}")
    trust = record.get("trust_remote_code", False) is True
    if trust and not trust_remote_code:
        raise ConfigError(
            f"the teacher in {model_dir} was built with remote code (trust_remote_code in {record_path}); "
            f"rkd runs it only when asked on the command line: add --trust-remote-code if you trust "
            f"{record.get('source')!r}"
        )
    t = record["transform"]
    transform = ImageTransform(
        size=int(t["size"]), channels=int(t["channels"]), mean=tuple(t["mean"]), std=tuple(t["std"])
    )
    processor = load_processor(str(model_dir), trust)
    model, head = TEACHER_KINDS[record["kind"]].load(model_dir, record, trust)
    return Teacher(
        model, transform, record["kind"], record["source"], head=head, processor=processor, trust_remote_code=trust
    )
