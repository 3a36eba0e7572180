"""Intra-op threads and OpenMP's wait policy: training-step time of the teacher and the stage-1 student, as JSON.

For each wait policy (libgomp's default, which spins a while before sleeping, and ``PASSIVE``) a child
process is started with that ``OMP_WAIT_POLICY`` set before torch loads; it times the teacher's and the
student's ``rkd.engine.train_step`` with 1 and 2 threads in interleaved rounds (median per setting), so
the thread ratios hold on a machine whose load changes. Children run one after another, ``--repeats``
times alternating, with the load average recorded beside each.

    python benchmarks/threads.py --out benchmarks/results/threads_wait_policy.json
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/threads.py --precision fp32 ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import write_json

POLICIES = {"default (spin, then sleep)": None, "PASSIVE": "PASSIVE"}


def child(precision: str, rounds: int, threads: list) -> dict:
    import statistics
    import time

    import torch  # before rkd: the wait policy is the one this process was started with

    from rkd.config import load_config
    from rkd.engine import train_step
    from rkd.run.calibrate import LocalSteps, student_workload, teacher_workload

    class Bundle:  # shapes only: a fixed random batch of Fashion-MNIST's size
        channels, num_classes, class_names = 1, 10, [str(i) for i in range(10)]

        class Split:
            images = torch.randint(
                0, 256, (512, 28, 28, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
            )
            labels = torch.arange(512) % 10

        splits = {"train": Split}

    cfg = load_config(["default"], [])
    teacher, dim = teacher_workload(cfg, Bundle, precision)
    student = student_workload(cfg, Bundle, dim, cfg.stage1.batch_size, "fp32")
    out: dict = {}
    for name, work in (("teacher", teacher), ("student", student)):
        times = {t: [] for t in threads}
        for t in threads:  # warm-up
            torch.set_num_threads(t)
            train_step(LocalSteps, work.model, work.objective, work.batch, work.optimizer, None, 0, 5.0)
        for _ in range(rounds):
            for t in threads:
                torch.set_num_threads(t)
                started = time.perf_counter()
                train_step(LocalSteps, work.model, work.objective, work.batch, work.optimizer, None, 0, 5.0)
                times[t].append(time.perf_counter() - started)
        out[name] = {f"threads={t}": round(statistics.median(v), 3) for t, v in times.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="fp32", help="the teacher's (the student runs fp32)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.precision, args.rounds, args.threads)))
        return
    from rkd.hardware.capability import cpu_capability

    cap = cpu_capability()
    record = {
        "cpu": cap.name,
        "capability": cap.why,
        "isa_env": {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ},
        "teacher_precision": args.precision,
        "cores": len(os.sched_getaffinity(0)),
        "runs": [],
    }
    for repeat in range(args.repeats):
        for label, policy in POLICIES.items():
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            load = os.getloadavg()[0]
            cmd = [sys.executable, __file__, "--child", "--precision", args.precision, "--rounds", str(args.rounds)]
            cmd += ["--threads", *map(str, args.threads)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            row = {
                "repeat": repeat,
                "policy": label,
                "load_average_before": load,
                **json.loads(done.stdout.splitlines()[-1]),
            }
            record["runs"].append(row)
            print(json.dumps(row), flush=True)
    write_json(record, args.out, indent=1)


if __name__ == "__main__":
    main()
