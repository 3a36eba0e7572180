"""Training-step speed of each stage's model under variants (precision, channels-last, torch.compile), as JSON.

Each model takes ``rkd.engine.train_step`` steps with its stage's own objective, built by the same
builders the run plan times (``rkd.run.calibrate``), on batches of the default config's shapes:

* ``teacher``: the embedded teacher (augmentation on), batch ``teacher.train.batch_size``;
* ``student``: stage 1's student + projector, batch ``stage1.batch_size``;
* ``candidate``: the same at ``search.candidate_batch_size`` (the search's candidate selection);
* ``supernet``: the search network's weight step plus one first-order architecture step;
* ``codec``: stage 2's codec over the channels, on the frozen student's tokens.

Variants are compared in one process, in interleaved rounds (median per variant), so ratios hold on a
loaded machine; with one thread the process CPU time per step is reported too (it does not depend on
the load). A variant is ``<precision>[+cl][+compile]`` (``fp32``, ``bf16``, ``fp32+cl``, ``fp32+compile``).

    python benchmarks/stage_steps.py --models teacher student --variants fp32 bf16 \\
        --out benchmarks/results/stage_steps_precision.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from common import write_json

from rkd.config import load_config
from rkd.data import load_data
from rkd.engine import train_step
from rkd.hardware.capability import capability
from rkd.run.calibrate import (
    LocalSteps,
    codec_workload,
    student_workload,
    supernet_workload,
    teacher_workload,
)


class ChannelsLast:
    """An objective whose image batches reach the model in channels-last layout."""

    def __init__(self, objective) -> None:
        self.objective = objective

    def __call__(self, model, batch, train):
        transform = self.objective.objective.transform
        self.objective.objective.transform = lambda p: transform(p).contiguous(memory_format=torch.channels_last)
        try:
            return self.objective(model, batch, train)
        finally:
            self.objective.objective.transform = transform

    def __getattr__(self, name):
        return getattr(self.objective, name)


def build(name: str, variant: str, cfg, bundle):
    precision = variant.split("+")[0]
    teacher, dim = teacher_workload(cfg, bundle, precision)
    work = {
        "teacher": lambda: teacher,
        "student": lambda: student_workload(cfg, bundle, dim, cfg.stage1.batch_size, precision),
        "candidate": lambda: student_workload(cfg, bundle, dim, cfg.search.candidate_batch_size, precision),
        "supernet": lambda: supernet_workload(cfg, bundle, dim, True, precision),
        "codec": lambda: codec_workload(cfg, bundle, dim, precision),
    }[name]()
    if "+cl" in variant and name not in ("teacher", "codec"):
        work.model = work.model.to(memory_format=torch.channels_last)
        work.objective = ChannelsLast(work.objective)
    if "+compile" in variant:
        work.model = torch.compile(work.model)
    return work


def measure(name: str, variants: list, cfg, bundle, steps: int, rounds: int) -> dict:
    works = {v: build(name, v, cfg, bundle) for v in variants}
    result: dict = {}
    for variant, work in works.items():
        started = time.perf_counter()
        for i in range(2):
            train_step(LocalSteps, work.model, work.objective, work.batch, work.optimizer, None, i, 5.0)
        result[variant] = {"first_two_steps_s": round(time.perf_counter() - started, 2), "wall": [], "cpu": []}
    for _ in range(rounds):
        for variant, work in works.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(steps):
                train_step(LocalSteps, work.model, work.objective, work.batch, work.optimizer, None, i, 5.0)
            result[variant]["wall"].append((time.perf_counter() - wall) / steps)
            result[variant]["cpu"].append((time.process_time() - cpu) / steps)
    base = statistics.median(result[variants[0]]["wall"])
    base_cpu = statistics.median(result[variants[0]]["cpu"])
    for variant, work in works.items():
        wall, cpu = statistics.median(result[variant].pop("wall")), statistics.median(result[variant].pop("cpu"))
        result[variant].update(
            median_s_per_step=round(wall, 4),
            median_cpu_s_per_step=round(cpu, 4),
            images_per_s=round(work.images / wall, 1),
            speed_vs_first=round(base / wall, 3),
            cpu_speed_vs_first=round(base_cpu / cpu, 3),
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["teacher", "student", "candidate", "supernet", "codec"])
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(["default"], args.overrides)
    bundle = load_data(cfg.data)
    cap = capability("cpu")
    record = {
        "cpu": cap.name,
        "capability": cap.why,
        "flags": cap.details,
        "isa_env": {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ},
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__,
        "threads": args.threads,
        "steps": args.steps,
        "rounds": args.rounds,
        "load_average_start": os.getloadavg()[0],
        "results": {},
    }
    for name in args.models:
        record["results"][name] = measure(name, args.variants, cfg, bundle, args.steps, args.rounds)
        print(json.dumps({"model": name, **record["results"][name]}), flush=True)
    record["load_average_end"] = os.getloadavg()[0]
    write_json(record, args.out, indent=1)


if __name__ == "__main__":
    main()
