"""Checks of a run's inputs that take seconds, made before any stage trains.

Without them a teacher that cannot take its input size fails with a raw error from inside
transformers once the run has started, and an unknown op in a genotype file is reported only
after the teacher and its cache are built (minutes on the default). ``check_inputs`` is called
once by ``Pipeline.run`` before its first stage; each check names the config field to change.
"""

from __future__ import annotations

import dataclasses

import torch

from rkd.config import ConfigError, RunConfig, TeacherConfig
from rkd.nas.genotype import Genotype, GenotypeError, load_genotype
from rkd.teacher.kinds import resolve_kind
from rkd.teacher.model import Teacher, assemble

PROBE_SIZES = (32, 64, 224)  # the alternatives tried when the configured size fails
PROBE_CLASSES = ["class-0", "class-1"]  # the probe checks shapes; the head's width does not matter


def check_inputs(cfg: RunConfig, stages: tuple, teacher_done: bool) -> None:
    """Validate what the ``stages`` about to run will read; raise ``ConfigError``/``GenotypeError`` naming the field."""
    if "stage1" in stages and not cfg.search.enabled:
        check_genotype(cfg.student.genotype)
    if "teacher" in stages and not teacher_done:
        probe_teacher(cfg.teacher)


def check_genotype(name_or_path: str) -> Genotype:
    """Load and validate ``student.genotype`` (a registered name or a JSON file): ops, edge indices, counts."""
    try:
        return load_genotype(name_or_path)
    except GenotypeError as err:
        raise GenotypeError(f"student.genotype = {name_or_path!r}: {err}") from None


# ----------------------------------------------------------------------------- the teacher probe


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def probe_teacher(cfg: TeacherConfig) -> None:
    """One forward of the teacher architecture, built from its config (no weights), on a zero image.

    On failure the error names ``teacher.image_size``, the model type, the size tried, the
    underlying error's first line, and which of ``PROBE_SIZES`` passed the same probe.
    """
    teacher, model_type = config_only_teacher(cfg)
    size = teacher.transform.size
    error = _forward_error(teacher, size)
    if error is None:
        return
    passed = [
        s
        for s in sorted({*PROBE_SIZES, *_native_sizes(teacher)} - {size})
        if _forward_error(_resized(teacher, s), s) is None
    ]
    works = (
        f"sizes that passed the same probe: {', '.join(map(str, passed))}; set teacher.image_size to one of them"
        if passed
        else f"none of {sorted({*PROBE_SIZES} - {size})} passed either: the {model_type!r} config itself "
        f"does not fit (check its patch/window/stage sizes), or pick another teacher.source"
    )
    configured = cfg.image_size if cfg.image_size is not None else f"null (the processor's {size})"
    raise ConfigError(
        f"teacher.image_size = {configured}: the {model_type!r} teacher ({cfg.source}) cannot take a "
        f"{size}x{size} input ({_first_line(error)}); {works}"
    )


def _forward_error(teacher: Teacher, size: int) -> Exception | None:
    pixels = torch.zeros(1, teacher.transform.channels, size, size)
    try:
        with torch.no_grad():
            teacher.forward_pixel_values(pixels)
    except Exception as exc:  # any failure inside the model is the probe's answer
        return exc
    return None


def _native_sizes(teacher: Teacher) -> set:
    native = getattr(teacher.model.config, "image_size", None)
    native = native[0] if isinstance(native, (list, tuple)) else native
    return {int(native)} if isinstance(native, int) and native > 0 else set()


def _resized(teacher: Teacher, size: int) -> Teacher:
    """The same model behind a transform of another size (position-embedding interpolation re-decided)."""
    return Teacher(
        teacher.model,
        dataclasses.replace(teacher.transform, size=size),
        teacher.kind,
        teacher.source,
        head=teacher.head,
    )


def config_only_teacher(cfg: TeacherConfig) -> tuple[Teacher, str]:
    """The teacher as the teacher stage would build it, but with random weights: ``(teacher, model type)``.

    The kind's own adapter builds it (``from_config``), so the probe cannot drift from the stage.
    """
    kind, checkpoint = resolve_kind(cfg)
    model_type = str(getattr(checkpoint.config, "model_type", "?")) if checkpoint is not None else "?"
    try:
        parts = kind.from_config(cfg, checkpoint, len(PROBE_CLASSES))
        model_type = str(getattr(parts.model.config, "model_type", model_type))
        teacher = assemble(kind, parts, cfg, trust_remote_code=False)
    except ConfigError:
        raise
    except Exception as exc:  # building the wrapper runs the model once when it has no linear head
        raise ConfigError(
            f"teacher.source = {cfg.source!r}: a {model_type!r} model built from its config does not "
            f"work at teacher.image_size = {cfg.image_size} ({_first_line(exc)})"
        ) from exc
    return teacher.eval(), model_type
