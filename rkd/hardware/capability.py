"""What number formats this process's device computes natively, as torch and oneDNN will really use them.

A CPU flag is not enough: oneDNN (which runs torch's bf16 matmuls and convolutions on x86) can be
limited below the CPU's own instructions (``ONEDNN_MAX_CPU_ISA``), and then bf16 is emulated,
tens of times slower than fp32, although cpuid still reports AVX512-BF16. So native bf16 on a CPU
needs all three: the instructions (AMX or AVX512-BF16), oneDNN's bf16 support, and no ISA limit below
them. On CUDA, torch's own check without emulation decides. Anything unreadable is reported as
such (``bf16 = None``) and precision falls back to fp32 with that reason.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass, field

import torch

# oneDNN's ISA names, oldest first (its documentation, "CPU dispatcher control"); bf16 compute needs
# AVX512_CORE_BF16 or later.
ONEDNN_ISAS = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16",
    "AVX10_1_512",
    "AVX512_CORE_FP16",
    "AVX10_1_512_AMX",
    "AVX512_CORE_AMX",
    "AVX10_1_512_AMX_FP16",
    "AVX512_CORE_AMX_FP16",
    "ALL",
)
BF16_ISA = ONEDNN_ISAS.index("AVX512_CORE_BF16")
ISA_LIMIT_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


@dataclass(frozen=True)
class Capability:
    """One device's native formats. ``bf16``/``fp16``: True, False, or None when unreadable; ``why``: the reason."""

    device: str  # "cpu" or "cuda"
    name: str
    bf16: bool | None
    fp16: bool | None
    why: str
    details: dict = field(default_factory=dict)


def _cpuinfo() -> dict:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none)."""
    fields: dict = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    """The CPU's model name with its family and model numbers (names such as "AMD EPYC" hide the generation)."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" in info and "model" in info:
        name = f"{name} (family {info['cpu family']}, model {info['model']})"
    return name


def onednn_limit() -> tuple[str | None, bool]:
    """``(the ISA limit set in the environment, whether it still allows bf16 compute)``."""
    for variable in ISA_LIMIT_VARIABLES:
        value = os.environ.get(variable, "").strip().upper()
        if value:
            allows = value not in ONEDNN_ISAS or ONEDNN_ISAS.index(value) >= BF16_ISA
            return f"{variable}={value}", allows
    return None, True


def _cpu_flags() -> dict:
    return {
        "aten_isa": torch.backends.cpu.get_cpu_capability(),
        "amx": bool(torch.cpu._is_amx_tile_supported()),
        "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
        "onednn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    }


def cpu_capability(read_flags=_cpu_flags) -> Capability:
    """The CPU's native formats; ``read_flags`` is replaceable so tests can stand in any CPU."""
    name = cpu_name()
    try:
        flags = read_flags()
    except Exception as err:  # a torch build without these probes, or a platform they do not know
        return Capability("cpu", name, None, False, f"CPU capability unreadable ({type(err).__name__}: {err})")
    limit, allows = onednn_limit()
    flags = {**flags, "onednn_limit": limit}
    instruction = "AMX" if flags["amx"] else "AVX512-BF16" if flags["avx512_bf16"] else None
    if instruction is None:
        return Capability("cpu", name, False, False, "this CPU has no native bf16", flags)
    if not allows:
        return Capability("cpu", name, False, False, f"oneDNN is limited by {limit}, below the CPU's bf16", flags)
    if not flags["onednn_bf16"]:
        return Capability("cpu", name, False, False, f"CPU has {instruction} but oneDNN will not use bf16", flags)
    return Capability("cpu", name, True, False, f"CPU has {instruction}", flags)


def cuda_capability(index: int = 0) -> Capability:
    """The CUDA device's native formats (bf16 from compute capability 8.0, Ampere, on)."""
    try:
        name = torch.cuda.get_device_name(index)
        major, minor = torch.cuda.get_device_capability(index)
        bf16 = bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except Exception as err:
        return Capability("cuda", "CUDA device", None, None, f"GPU capability unreadable ({type(err).__name__}: {err})")
    details = {"compute_capability": f"{major}.{minor}"}
    if bf16:
        return Capability("cuda", name, True, True, f"GPU {name} computes bf16", details)
    return Capability("cuda", name, False, True, f"GPU {name} has no native bf16 (compute {major}.{minor})", details)


@functools.lru_cache(maxsize=4)
def capability(device_type: str = "cpu") -> Capability:
    """The capability of the device type a run trains on (read once per process)."""
    return cuda_capability() if device_type == "cuda" else cpu_capability()
