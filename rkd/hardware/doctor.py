"""``rkd doctor``: what this machine can do, and what rkd will choose on it, in one screen.

Software versions, devices, native number formats and the precision each config field resolves to
(with the reason), the probe's peaks, threads, whether SLURM and the embedded dataset are there, and
the estimated time of ``rkd run`` with the given config here (``make run`` for the default), from
a few timed steps of each stage's model (``rkd.run.plan``).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path

import torch

from rkd.config import RunConfig
from rkd.data import load_data
from rkd.hardware.capability import capability
from rkd.hardware.decide import student_precision, teacher_precision
from rkd.hardware.precision import PrecisionError
from rkd.hardware.probe import WORKLOADS, cache_dir, probe
from rkd.hardware.threads import cores_available, threads_line
from rkd.run.estimate import plan_lines
from rkd.run.hashing import STAGES
from rkd.run.plan import measure_costs, needed_costs, stage_plan

FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def software() -> str:
    cuda = torch.version.cuda or "none (a CPU build of torch)"
    names = ("accelerate", "transformers", "datasets", "deepspeed")
    return f"torch {torch.__version__}, CUDA {cuda}, " + ", ".join(f"{n} {version(n)}" for n in names)


def devices() -> list[str]:
    cpu = capability("cpu")
    flags = cpu.details
    lines = [
        f"CPU        {cpu.name}; {cores_available()} cores for this process; torch kernels {flags.get('aten_isa', '?')}"
        + (f", {flags['onednn_limit']}" if flags.get("onednn_limit") else ""),
        f"           native bf16: {'yes' if cpu.bf16 else 'no' if cpu.bf16 is False else 'unknown'} ({cpu.why})",
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            gpu = capability("cuda") if i == 0 else None
            name = torch.cuda.get_device_name(i)
            extra = f"; native bf16: {'yes' if gpu.bf16 else 'no'} ({gpu.why})" if gpu else ""
            lines.append(f"GPU {i}      {name}{extra}")
    else:
        lines.append("GPUs       none visible to torch")
    return lines


def precisions(cfg: RunConfig, device_type: str) -> tuple[list[str], dict]:
    """The lines on each precision field, and the chosen names (None where the device cannot run it)."""
    lines: list[str] = []
    chosen: dict[str, str | None] = {}
    for key, field, value, decide in (
        ("teacher", "teacher.train_precision", cfg.teacher.train_precision, teacher_precision),
        ("student", "mixed_precision", cfg.mixed_precision, student_precision),
    ):
        try:
            precision = decide(value, device_type)
            chosen[key] = precision.name
            lines.append(f"           {field} = {value} -> {precision}")
        except PrecisionError as err:
            chosen[key] = None
            lines.append(f"           {field} = {value} -> error: {err}")
    return lines, chosen


def probe_lines(device_type: str) -> list[str]:
    measured = probe(device_type)
    lines = []
    for label, precision in (("probe     ", "fp32"), ("          ", "bf16")):
        gflops = measured["gflops"][precision]
        parts = ", ".join(f"{w} {gflops[w]:g}" for w in WORKLOADS)
        lines.append(f"{label} {precision}: {parts} GFLOP/s (one thread)")
    speed = ", ".join(f"{w} {measured['bf16_speed'][w]:.2f}x" for w in WORKLOADS)
    lines.append(f"           bf16 over fp32: {speed} (cached in {cache_dir()})")
    return lines


def surroundings(cfg: RunConfig) -> list[str]:
    sbatch = shutil.which("sbatch")
    job = os.environ.get("SLURM_JOB_ID")
    slurm = f"sbatch at {sbatch}" if sbatch else "not found (sbatch is not on PATH)"
    slurm += f"; inside job {job}" if job else ""
    fashion = Path(cfg.data.fashion_mnist_dir)
    present = all((fashion / f).is_file() for f in FASHION_FILES)
    data = (
        f"{fashion}: present"
        if present
        else f"{fashion}: missing (make data, or apt-get install dataset-fashion-mnist)"
    )
    return [f"SLURM      {slurm}", f"dataset    Fashion-MNIST {data}"]


def run_estimate(cfg: RunConfig, chosen: dict) -> list[str]:
    """``rkd run``'s plan with ``cfg`` here, from a few timed steps of each stage's model."""
    if None in chosen.values():
        return ["estimate   none: a precision above cannot run here"]
    try:
        bundle = load_data(cfg.data)
    except Exception as err:
        return [f"estimate   none: the data could not be loaded ({type(err).__name__}: {err})"]
    stages = [s for s in STAGES if s != "search" or cfg.search.enabled]
    costs = measure_costs(cfg, bundle, needed_costs(stages), chosen)
    plans = [stage_plan(s, cfg, bundle, costs) for s in stages]
    return [line.replace("[rkd] plan:", "estimate  ") for line in plan_lines(plans)]


def report(cfg: RunConfig, estimate: bool = True, reprobe: bool = False) -> str:
    """The doctor's whole report as text; ``reprobe`` measures the probe again and replaces its cache first."""
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if reprobe:
        probe(device_type, refresh=True)
    lines = ["rkd doctor: what this machine can do, and what rkd chooses on it", f"software   {software()}"]
    lines += devices()
    chosen_lines, chosen = precisions(cfg, device_type)
    lines += ["precision  (auto: bf16 only where native and measured faster)", *chosen_lines]
    lines += probe_lines(device_type)
    lines.append(f"threads    {threads_line()}")
    lines += surroundings(cfg)
    if estimate:
        lines += run_estimate(cfg, chosen)
    return "\n".join(lines)
