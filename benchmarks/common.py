"""Shared helpers of the benchmark scripts: config from argv, timing, and the run's models if trained."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch


def parse_config(description: str, add_arguments=None, default_configs=("default", "compare")):
    """``--config`` (repeatable, default: default + compare), ``section.field=value`` overrides, and the
    script's own options (``add_arguments(parser)``)."""
    from rkd.config import load_config

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", action="append", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: be fair to other jobs)")
    parser.add_argument("overrides", nargs="*")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return load_config(list(args.config or default_configs), list(args.overrides)), args


def median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def trained(path: Path) -> bool:
    return (Path(path) / "stage.json").exists()
