"""A few seconds' measurement of what this machine computes: fp32 and bf16 matmul and conv throughput.

Three workloads, each timed in fp32 and bf16 (interleaved rounds, median): a square matmul, a
teacher-sized 3x3 convolution (forward and backward) and a small DARTS-cell student (rkd's own,
forward and backward): on a CPU, bf16 can speed the first two and still slow the third, whose many
small layers pay autocast's casts and get little from the faster arithmetic. FLOPs are counted by
``torch.utils.flop_counter``. The result is cached per machine (CPU or GPU model, torch version,
ISA limits) under ``$RKD_CACHE_DIR`` (default ``~/.cache/rkd``), so runs after the first
read it. Stages compare their achieved GFLOP/s with these peaks; ``auto`` precision reads the
bf16/fp32 ratios (``bf16_speed``).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rkd.hardware.capability import cpu_name, onednn_limit
from rkd.nas.genotype import GENOTYPES
from rkd.nas.network import Student

PROBE_VERSION = 3
WORKLOADS = ("matmul", "conv", "student")
# which workload stands for which kind of stage work when auto precision asks
WORK_OF = {"teacher": "conv", "student": "student"}
ROUND_SECONDS = 0.1  # per workload, dtype and round
ROUNDS = 3  # at most: one round settles a workload whose formats differ more than twofold


def cache_dir() -> Path:
    return Path(os.environ.get("RKD_CACHE_DIR", "~/.cache/rkd")).expanduser() / "probe"


def machine_key(device_type: str) -> dict:
    """What makes two probes comparable: the device, torch and the kernel limits."""
    device = torch.cuda.get_device_name() if device_type == "cuda" else cpu_name()
    return {
        "version": PROBE_VERSION,
        "device_type": device_type,
        "device": device,
        "torch": torch.__version__,
        "aten_isa": os.environ.get("ATEN_CPU_CAPABILITY", ""),
        "onednn_limit": onednn_limit()[0] or "",
    }


class _Logits(nn.Module):
    """The student's logits alone (its forward returns a dict)."""

    def __init__(self) -> None:
        super().__init__()
        self.student = Student(
            GENOTYPES["default"], in_channels=1, num_classes=10, init_channels=8, layers=3, stem_stride=2
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)["logits"]


def _workload(name: str, dtype: torch.dtype, device: torch.device, scale: int) -> Callable[[], None]:
    """One call of workload ``name`` in ``dtype`` (weights fp32 under autocast, as training runs)."""
    generator = torch.Generator().manual_seed(0)
    if name == "matmul":
        n = 256 * scale
        a, b = (torch.randn(n, n, generator=generator).to(device, dtype) for _ in range(2))

        def matmul() -> None:
            a @ b

        return matmul
    module: nn.Module
    if name == "conv":  # the teacher's layout: channels-last
        module, shape, layout = (
            nn.Conv2d(128, 128, 3, padding=1, bias=False),
            (4 * scale, 128, 14, 14),
            torch.channels_last,
        )
    else:  # the student's: contiguous
        module, shape, layout = _Logits(), (32 * scale, 1, 28, 28), torch.contiguous_format
    module = module.to(device).to(memory_format=layout)  # type: ignore[call-overload]  # torch's stubs omit it
    x = torch.randn(shape, generator=generator).to(device, memory_format=layout).requires_grad_(name == "conv")

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = module(x)
        out.float().sum().backward()

    return step


def _flops(fn: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _timed(fn: Callable[[], None], sync: Callable[[], None], seconds: float) -> float:
    """Seconds per call, repeating for about ``seconds`` (one call at least: emulated formats are slow)."""
    calls, started = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        sync()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return elapsed / calls


def measure(device_type: str = "cpu") -> dict:
    """Run the probe now: GFLOP/s per workload and dtype (one CPU thread), and bf16's speed over fp32's.

    On a CPU the probe runs one thread: on a shared node, threads that wait for a busy core make a
    multi-threaded measurement meaningless, while one thread's throughput and the bf16/fp32 ratios
    hold; ``peak_gflops`` scales it by the threads a stage uses.
    """
    threads = torch.get_num_threads()
    if device_type != "cuda":
        torch.set_num_threads(1)
    try:
        return _measure(device_type)
    finally:
        torch.set_num_threads(threads)


def _measure(device_type: str) -> dict:
    device = torch.device("cuda" if device_type == "cuda" else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    scale = 4 if device.type == "cuda" else 1
    started = time.perf_counter()
    gflops: dict = {"fp32": {}, "bf16": {}}
    for name in WORKLOADS:
        calls = {
            key: _workload(name, dtype, device, scale)
            for key, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
        }
        flops = _flops(calls["fp32"])
        times: dict = {key: [] for key in calls}
        for fn in calls.values():  # warm-up
            fn()
        for _ in range(ROUNDS):
            for key, fn in calls.items():
                times[key].append(_timed(fn, sync, ROUND_SECONDS))
            if not 0.5 < times["fp32"][0] / times["bf16"][0] < 2:
                break
        for key in calls:
            gflops[key][name] = round(flops / statistics.median(times[key]) / 1e9, 2)
    return {
        **machine_key(device_type),
        "gflops": gflops,
        "bf16_speed": {name: round(gflops["bf16"][name] / gflops["fp32"][name], 3) for name in WORKLOADS},
        "probe_seconds": round(time.perf_counter() - started, 2),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"{key['device_type']}-{digest}.json"


def cached(device_type: str = "cpu") -> dict | None:
    """This machine's probe if one was stored, else None (nothing is measured)."""
    path = _path(machine_key(device_type))
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def probe(device_type: str = "cpu", refresh: bool = False) -> dict:
    """This machine's probe: read from the cache, or measured now (a few seconds) and stored."""
    result = None if refresh else cached(device_type)
    if result is None:
        result = measure(device_type)
        path = _path(machine_key(device_type))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(result, indent=1) + "\n")
            tmp.replace(path)
        except OSError:
            pass  # a read-only home: the measurement still serves this process
    return result


def peak_gflops(result: dict, precision: str, threads: int | None = None) -> float:
    """The best throughput the probe saw in ``precision`` (fp16 counts as bf16), for ``threads`` CPU threads.

    The probe measured one thread; on a CPU the peak of N threads is taken as N times that (ideal scaling).
    """
    key = "fp32" if precision == "fp32" else "bf16"
    best = max(result["gflops"][key].values())
    if result.get("device_type") == "cuda":
        return best
    return best * (threads if threads is not None else torch.get_num_threads())
