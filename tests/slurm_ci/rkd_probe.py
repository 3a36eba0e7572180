"""A stand-in for ``rkd.cli`` that the launch scripts can run instead of rkd (``RKD_MODULE=rkd_probe``).

It takes rkd's command line (``COMMAND [--sweep-index I] [--name N] [--runs-dir D] ...``), builds
the Accelerator the way rkd does, proves the processes form one synchronised group (a sum reduce
of rank + 1 must equal the triangular number on every rank), and writes what it saw to
``D/N/probe/COMMAND-<index>-rank<r>.json``. Tests use it to check launch mechanics (the SLURM
job array, the multi-node rendezvous) in seconds instead of running a stage.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rkd_probe")
    parser.add_argument("command")
    parser.add_argument("--sweep-index", type=int, default=None)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--name", default="default")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--quick", action="store_true")
    args, rest = parser.parse_known_args(argv)

    import torch

    from rkd.engine import make_accelerator

    accelerator = make_accelerator(seed=0)
    rank, world = accelerator.process_index, accelerator.num_processes
    total = accelerator.reduce(torch.tensor([float(rank + 1)], device=accelerator.device), reduction="sum")
    record = {
        "command": args.command,
        "sweep_index": args.sweep_index,
        "rank": rank,
        "world_size": world,
        "reduce_sum": float(total.item()),
        "expected_sum": world * (world + 1) / 2,
        "distributed_type": str(accelerator.distributed_type.value),
        "host": socket.gethostname(),
        "group_rank": os.environ.get("GROUP_RANK"),
        "master": f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}",
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "overrides": rest,
        "configs": args.config,
    }
    out = Path(args.runs_dir) / args.name / "probe" / f"{args.command}-{args.sweep_index or 0}-rank{rank}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    accelerator.wait_for_everyone()
    accelerator.end_training()  # as rkd.cli does: a gloo group left to the exit handlers can abort a rank
    print(f"rkd_probe: rank {rank}/{world} reduce {record['reduce_sum']} -> {out}", flush=True)
    return 0 if record["reduce_sum"] == record["expected_sum"] else 1


if __name__ == "__main__":
    sys.exit(main())
