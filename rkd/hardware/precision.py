"""The number format each part of a run computes in, chosen from the hardware, with the reason said.

Two config fields ask for a precision: ``teacher.train_precision`` (the teacher's training passes) and
``mixed_precision`` (the student-side stages: search, stage 1, stage 2, baselines, evaluation).
``auto`` (both defaults) takes bf16 only where the device computes it natively and, where the probe
measured it, where it is not slower than fp32 for that kind of work; fp32 otherwise. An explicit
bf16 on a device that would emulate it still runs, with one warning; a format the device cannot run
at all (fp16 on a CPU) is an error naming the field and the choices.

Under DeepSpeed the launcher's JSON owns precision (its engine replaces or switches off any
autocast around its forward), so ``auto`` follows the JSON and an explicit value must agree with it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from rkd.hardware.capability import Capability

CHOICES = {
    "teacher.train_precision": ("auto", "fp32", "bf16"),
    "mixed_precision": ("auto", "no", "fp32", "bf16", "fp16"),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ACCELERATE_NAMES = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
BF16_MIN_SPEEDUP = 1.2  # auto takes native bf16 where the probe measured at least this speed-up


class PrecisionError(ValueError):
    """A precision the device cannot run, or one that contradicts the launcher's DeepSpeed config."""


@dataclass(frozen=True)
class Precision:
    """A chosen format (``name``: fp32, bf16 or fp16), why it was chosen, and a warning to show once, if any."""

    name: str
    reason: str
    warning: str | None = None

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def accelerate(self) -> str:
        """Accelerate's word for it (``no`` for fp32)."""
        return ACCELERATE_NAMES[self.name]

    def record(self) -> dict:
        return {"precision": self.name, "precision_reason": self.reason}


def _asked(field: str, value: str) -> str:
    return f"asked for ({field} = {value})"


def choose(
    field: str,
    requested: str,
    cap: Capability,
    bf16_speed: float | None = None,
    work: str = "this stage's work",
) -> Precision:
    """The precision for ``field = requested`` on a device with capability ``cap``.

    ``bf16_speed``: bf16's measured throughput over fp32's for this kind of work on this machine
    (the probe's), or None when not measured; below ``BF16_MIN_SPEEDUP``, ``auto`` keeps fp32 although
    bf16 is native: a format with 8 bits of mantissa has to buy a clear speed-up, and a ratio near 1
    would let timing noise flip the choice from one probe to the next.
    """
    requested = "fp32" if requested == "no" else requested
    if requested == "fp32":
        return Precision("fp32", _asked(field, "fp32"))
    if requested == "fp16":
        if not cap.fp16:
            choices = ", ".join(c for c in CHOICES.get(field, ("auto", "fp32", "bf16")) if c != "fp16")
            raise PrecisionError(
                f"config field '{field}' = 'fp16' cannot run on this {cap.device} ({cap.name}): fp16 autocast with "
                f"loss scaling needs a CUDA device; choose one of: {choices}"
            )
        return Precision("fp16", f"{_asked(field, 'fp16')}, with loss scaling")
    if requested == "bf16":
        if cap.bf16:
            return Precision("bf16", f"{_asked(field, 'bf16')}; {cap.why}")
        factor = f", measured {1 / bf16_speed:.1f}x slower than fp32 here" if bf16_speed and bf16_speed < 1 else ""
        warning = (
            f"{field} = bf16 on {cap.name}: {cap.why}, so bf16 is emulated{factor}; {field}=auto would choose fp32 here"
        )
        return Precision("bf16", f"{_asked(field, 'bf16')}; emulated: {cap.why}", warning)
    if requested != "auto":
        raise PrecisionError(f"config field '{field}' = {requested!r} is invalid: expected one of {CHOICES[field]}")
    if cap.bf16 is None:
        return Precision("fp32", f"auto: {cap.why}")
    if not cap.bf16:
        return Precision("fp32", f"auto: {cap.why}")
    if bf16_speed is not None and bf16_speed < BF16_MIN_SPEEDUP:
        return Precision(
            "fp32",
            f"auto: {cap.why}, but bf16 measured {bf16_speed:.2f}x fp32's speed for {work} here "
            f"(auto takes it from {BF16_MIN_SPEEDUP}x)",
        )
    return Precision("bf16", f"auto: {cap.why}")


_WARNED: set = set()


def warn_once(precision: Precision, say: Callable[[str], None]) -> None:
    """Say ``precision``'s warning the first time this process meets it."""
    if precision.warning and precision.warning not in _WARNED:
        _WARNED.add(precision.warning)
        say(f"[rkd] warning: {precision.warning}")


# ----------------------------------------------------------------------------- the launcher's word


def launcher_precision() -> str | None:
    """bf16/fp16 when ``accelerate launch`` asked for it (its config or ``--mixed_precision``), else None."""
    value = os.environ.get("ACCELERATE_MIXED_PRECISION", "").strip().lower()
    return value if value in ("bf16", "fp16") else None


def deepspeed_precision(ds_config: dict | str | Path) -> str:
    """What a DeepSpeed config computes in: fp32, bf16/fp16 (its ``torch_autocast``), or ``weights-<x>``
    (its own bf16/fp16 modes, which cast the weights and which rkd's fp32 inputs cannot feed)."""
    config: dict = ds_config if isinstance(ds_config, dict) else json.loads(Path(ds_config).read_text())
    autocast = config.get("torch_autocast") or {}
    if autocast.get("enabled") is True:
        dtype = str(autocast.get("dtype", "bfloat16")).replace("torch.", "")
        return {"bfloat16": "bf16", "float16": "fp16"}.get(dtype, "fp32")
    for name in ("bf16", "fp16"):
        if (config.get(name) or {}).get("enabled") is True:
            return f"weights-{name}"
    return "fp32"


def under_deepspeed(field: str, requested: str, ds_precision: str, ds_file: str) -> Precision:
    """``field = requested`` under a DeepSpeed config whose compute format is ``ds_precision``.

    ``auto`` follows the JSON; an explicit value must match it, else one line names both settings and a
    pairing that works.
    """
    requested = "fp32" if requested == "no" else requested
    source = f"the DeepSpeed config {ds_file}"
    if ds_precision.startswith("weights-"):
        raise PrecisionError(
            f"{source} sets {ds_precision[8:]}.enabled (weights cast to {ds_precision[8:]}), which rkd's fp32 inputs "
            f"cannot feed; use launch_configs/deepspeed_zero2_bf16.yaml (torch_autocast, fp32 master weights) "
            f"or launch_configs/deepspeed_zero2.yaml (fp32)"
        )
    if requested in ("auto", ds_precision):
        how = "torch_autocast" if ds_precision != "fp32" else "no torch_autocast"
        return Precision(ds_precision, f"{'auto: ' if requested == 'auto' else ''}{source} ({how})")
    pairing = {
        "bf16": f"launch_configs/deepspeed_zero2_bf16.yaml with {field}={requested}",
        "fp32": f"launch_configs/deepspeed_zero2.yaml with {field}={requested}",
    }.get(requested, f"a DeepSpeed JSON whose torch_autocast dtype is {requested}")
    raise PrecisionError(
        f"config field '{field}' = {requested!r} contradicts {source}, which computes in {ds_precision} "
        f"(under DeepSpeed its JSON owns precision): use {pairing}, or {field}=auto to follow the JSON"
    )


# ----------------------------------------------------------------------------- running in a precision


@contextlib.contextmanager
def computing_in(module: torch.nn.Module, precision: Precision | str, device_type: str) -> Iterator[None]:
    """Run ``module``'s forward passes in ``precision`` whatever autocast surrounds it.

    Accelerate's mixed precision wraps a prepared module's ``forward`` in its own autocast, which an
    outer ``torch.autocast(enabled=False)`` cannot switch off; inside this block the module's own
    forward (``_original_forward``) runs instead, under an autocast of ``precision``'s dtype (or none
    for fp32).
    """
    name = precision if isinstance(precision, str) else precision.name
    inner = getattr(module, "module", module)  # DDP keeps the model as .module
    original = inner.__dict__.get("_original_forward")
    wrapped = inner.__dict__.get("forward")
    if original is not None:
        inner.forward = original
    try:
        with torch.autocast(device_type, dtype=DTYPES[name], enabled=name != "fp32"):
            yield
    finally:
        if original is not None:
            inner.forward = wrapped


def observed_precision(module: torch.nn.Module, run: Callable[[], object], device_type: str) -> str:
    """The format ``module``'s layers really computed in while ``run()`` called it: bf16, fp16 or fp32.

    For device checks (``benchmarks/device_check.py``): it reads the autocast state inside the first
    leaf layer to run, below every wrapper (Accelerate's forward, DDP, DeepSpeed's engine), so it sees
    what those wrappers made of the requested precision. Returns "not called" if no layer ran.
    """
    seen: list = []

    def hook(_layer, _args) -> None:
        if not seen:
            on = torch.is_autocast_enabled(device_type)
            dtype = torch.get_autocast_dtype(device_type) if on else torch.float32
            seen.append({torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32"))

    handles = [m.register_forward_pre_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return seen[0] if seen else "not called"
