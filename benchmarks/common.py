"""Shared helpers of the benchmark scripts: config from argv, timing, the run's models if trained, the JSON out."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

# This checkout's rkd ahead of any installed one: a venv's editable install of another checkout would
# otherwise be what a script run from here measures (its records would name that checkout's commit).
CHECKOUT = Path(__file__).resolve().parents[1]
if str(CHECKOUT) not in sys.path:
    sys.path.insert(0, str(CHECKOUT))

import torch  # noqa: E402


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


def run_teacher(cfg, bundle):
    """The run's trained teacher if ``rkd run`` made one, else the config's teacher as built; eval mode."""
    from rkd.teacher.io import load_trained_teacher
    from rkd.teacher.model import build_teacher

    path = cfg.run_dir / "teacher"
    if trained(path):
        return load_trained_teacher(path / "model").eval()
    return build_teacher(cfg.teacher, bundle.num_classes, bundle.class_names, bundle.channels).eval()


def write_json(record: dict, out: Path | None, indent: int = 2) -> None:
    """Print the benchmark's record as JSON and, with ``--out``, write it there too."""
    text = json.dumps(record, indent=indent)
    print(text)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
