"""Which precision each part of a run computes in on this machine, decided once from the config and the launcher.

``teacher.train_precision`` governs the teacher's training passes, ``mixed_precision`` the student-side
stages (the Accelerator's mixed precision). Under DeepSpeed the launch's JSON decides both
(``rkd.hardware.precision.under_deepspeed``). Otherwise ``auto`` asks the device's capability and,
where bf16 is native, the probe's measured bf16/fp32 ratio for that kind of work; ``mixed_precision=auto``
first honours a launcher that asked for bf16/fp16 (``accelerate launch --mixed_precision``).
"""

from __future__ import annotations

import os

import torch

from rkd.hardware.capability import capability
from rkd.hardware.precision import Precision, choose, deepspeed_precision, launcher_precision, under_deepspeed
from rkd.hardware.probe import WORK_OF, probe

WORK_NAMES = {"teacher": "the teacher's convolutions", "student": "the student's small layers"}


def deepspeed_launch() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes", "on")


def deepspeed_source() -> tuple[str, str]:
    """``(what DeepSpeed computes in, where that comes from)`` for the current DeepSpeed launch."""
    path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "")
    if path and path != "none":
        return deepspeed_precision(path), path
    launcher = launcher_precision()  # no JSON: Accelerate builds one from --mixed_precision
    return (f"weights-{launcher}" if launcher else "fp32"), "built by Accelerate from the launch flags"


def measured_bf16_speed(device_type: str, kind: str) -> float | None:
    """bf16's throughput over fp32's for ``kind`` of work from this machine's probe (run once, cached)."""
    try:
        return float(probe(device_type)["bf16_speed"][WORK_OF[kind]])
    except Exception:  # a probe that cannot run must not stop a run: the capability alone decides
        return None


def precision_for(field: str, requested: str, device_type: str, kind: str) -> Precision:
    """The precision of ``field = requested`` for ``kind`` (teacher/student) of work on ``device_type``.

    Raises ``PrecisionError`` for a format the device cannot run or one the DeepSpeed JSON contradicts.
    """
    if deepspeed_launch():
        ds_precision, source = deepspeed_source()
        return under_deepspeed(field, requested, ds_precision, source)
    launched = launcher_precision()
    if field == "mixed_precision" and requested == "auto" and launched:
        chosen = choose(field, launched, capability(device_type))
        reason = f"asked for by the launcher (ACCELERATE_MIXED_PRECISION={launched})"
        return Precision(chosen.name, f"{reason}; {chosen.reason.split('; ', 1)[-1]}", chosen.warning)
    cap = capability(device_type)
    speed = measured_bf16_speed(device_type, kind) if cap.bf16 or requested == "bf16" else None
    return choose(field, requested, cap, speed, WORK_NAMES[kind])


def student_precision(requested: str, device_type: str) -> Precision:
    return precision_for("mixed_precision", requested, device_type, "student")


def teacher_precision(requested: str, device_type: str) -> Precision:
    return precision_for("teacher.train_precision", requested, device_type, "teacher")


def device_type_of(accelerator) -> str:
    return accelerator.device.type if isinstance(accelerator.device, torch.device) else str(accelerator.device)


def accelerator_precision(accelerator, requested: str) -> Precision:
    """What the student-side stages of ``accelerator`` compute in, with the reason ``requested`` gave.

    A caller that built the Accelerator with another value than the config's gets that value, said so.
    """
    chosen = student_precision(requested, device_type_of(accelerator))
    if deepspeed_launch():
        return chosen
    actual = "fp32" if accelerator.mixed_precision == "no" else str(accelerator.mixed_precision)
    if actual == chosen.name:
        return chosen
    return Precision(actual, f"set when the Accelerator was built (mixed_precision={accelerator.mixed_precision})")
