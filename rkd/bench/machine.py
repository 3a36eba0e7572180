"""The machine a cell ran on, recorded with its results: a time means nothing without the CPU and precision."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

# CPU flags that decide which kernels (and which precisions) run natively
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma")


def cpu_info(path: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU's model name and which of ``FLAGS`` it has (Linux; elsewhere the platform's processor string)."""
    fields: dict = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first core's lines
    present = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "flags": [f for f in FLAGS if f in present],
    }


def machine_record(threads: int | None = None) -> dict:
    """CPU, the cores the process may use, torch's kernel level and thread count, and any GPU."""
    record = {
        **cpu_info(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads() if threads is None else threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        # runnable processes over the last 1, 5 and 15 minutes: above the CPU count, every time here is inflated
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(0)
    return record


def precision_record(cfg, accelerator) -> dict:
    """The precisions a cell's training used: the engine's mixed precision and the teacher's autocast."""
    return {
        "mixed_precision": str(getattr(accelerator, "mixed_precision", "no")),
        "teacher_train_precision": cfg.teacher.train_precision,
    }
