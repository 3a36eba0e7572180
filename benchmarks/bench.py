"""`make bench`: RKD-SC against its baselines, controls and ablations on the shipped default, in resumable cells.

    python benchmarks/bench.py plan   [--only a,b] [--seeds 5|0,1,2] [--grid 0.5,1,2] [--parallel 2]
    python benchmarks/bench.py run    [same options] [--threads 1] [--recheck]    # plan, cells, then report
    python benchmarks/bench.py report [same options]                              # the comparison only
    python benchmarks/bench.py grid   [same options]      # the first seed's grid cells as they stand, as JSON
    python benchmarks/bench.py calibrate [--parallel 2]      # every method briefly: seconds per step -> costs
    python benchmarks/bench.py cell <method@seed<s>@x<m>> --rkd-scale <m>         # one cell (the workers' command)

Every command takes ``--config`` (repeatable; default ``default``) and ``section.field=value``
overrides, as ``rkd`` does; the run lives in ``runs/bench`` (``name=...`` to change). ``run`` prints
the plan with its estimated time (from ``--costs``, a calibration's JSON) before it starts, then runs
every cell that is not done, ``--parallel`` at a time with ``--threads`` each, and writes the
comparison when every cell it needs has finished. Stopped at any point, the same command resumes.
See ``rkd.bench`` for the layout and the rules.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

import common  # noqa: F401  (this checkout's rkd first)

HERE = Path(__file__).resolve().parent
COSTS = HERE / "results" / "bench_costs.json"
# the calibration profile: the default's models and batch sizes on a 4,096-image train split (each part's
# seconds per step is what it measures): one epoch of the teacher and of stage 1; stage 2 and the conference
# codec as shipped (their steps are cheap: enough of them to spread the one pass that computes their
# inputs as in a full run); the search as shipped (its subsets are fixed sizes, so its cost is its full
# cost), scoring candidates on the 1,024 val images there are
CALIBRATE = [
    "name=bench-calibrate",
    "data.max_train=4096",
    "data.max_val=1024",
    "data.max_test=1000",
    "teacher.train.epochs=1",
    "stage1.epochs=1",
    "baselines.jscc_train.epochs=1",
    "baselines.vfe_train.epochs=1",
]


def parse_args(argv: list):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("plan", "run", "report", "grid", "calibrate", "cell"))
    parser.add_argument("cell", nargs="?", help="cell key (command 'cell')")
    parser.add_argument("--config", action="append", default=None)
    parser.add_argument("--only", default=None, help="methods, comma-separated (RKD-SC always runs)")
    parser.add_argument("--seeds", default=None, help="a count (5) or seeds (0,1,2; seed 0: 0,); the first tunes")
    parser.add_argument("--grid", default=None, help="learning-rate multipliers, e.g. 0.5,1,2 (1 alone: no tuning)")
    parser.add_argument("--parallel", type=int, default=2, help="cells at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per cell")
    parser.add_argument("--rkd-scale", type=float, default=1.0, help="(command 'cell') RKD-SC's chosen multiplier")
    parser.add_argument("--recheck", action="store_true", help="start every cell once (each skips what is done)")
    parser.add_argument("--in-process", action="store_true", help="one cell at a time in this process (no workers)")
    parser.add_argument("--costs", default=str(COSTS), help="calibration JSON for the estimate")
    parser.add_argument("--results", default=None, help="copy the report's files here (grid: grid.json)")
    args, overrides = parser.parse_known_args(argv)
    unknown = [o for o in overrides if "=" not in o]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    return args, overrides


def config_args(args, overrides: list) -> list:
    return [arg for c in (args.config or []) for arg in ("--config", c)] + overrides


def make_bench(args, overrides: list):
    from rkd.bench.catalogue import parse_methods
    from rkd.bench.layout import base_config
    from rkd.bench.plan import dropped_ablations, parse_seeds
    from rkd.bench.scheduler import Bench
    from rkd.bench.tuning import parse_grid
    from rkd.config import load_config

    cfg = load_config(list(args.config or ["default"]), ["name=bench", *overrides])
    base = base_config(cfg)
    names = parse_methods(args.only)
    dropped = dropped_ablations(base, names)
    names = [n for n in names if n not in dropped]
    grid = parse_grid(args.grid)
    return Bench(base, names, parse_seeds(args.seeds), grid), dropped


def print_plan(bench, dropped: dict, costs_path: str, parallel: int) -> dict | None:
    """The cells and, with a calibration, the estimated CPU and wall time; returns the estimate."""
    from rkd.bench.costs import estimate, with_measured
    from rkd.bench.plan import describe
    from rkd.data import load_data

    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    say(f"[bench] plan for {bench.base.run_dir}:")
    for line in describe(bench.names, bench.seeds, bench.grid, dropped):
        say(f"[bench] {line}")
    records, chosen, graph = bench.state()
    for key, why in bench.remade(records, chosen, graph).items():
        say(f"[bench]   made again: {key} ({why})")
    if not Path(costs_path).exists():
        say(f"[bench] no estimate: {costs_path} missing (run `python benchmarks/bench.py calibrate` first)")
        return None
    costs = json.loads(Path(costs_path).read_text())
    bundle = load_data(bench.base.data)
    sizes = {s: int(bundle.splits[s].labels.numel()) for s in ("train", "val", "test")}
    units, measured = with_measured(costs["units"], list(records.values()))
    est = estimate(bench.base, bench.names, bench.seeds, bench.grid, sizes, units, parallel, set(records), chosen)
    for name, entry in est["per_method"].items():
        flops = entry.get("flops_per_cell")
        trained = "training FLOPs not counted" if flops is None else f"{flops / 1e12:9.2f} training TFLOPs a cell"
        say(f"[bench]   {name:28s} {entry['cells']:2d} cells {entry['seconds'] / 3600:6.2f} CPU-h {trained}")
    machine, load = costs.get("machine", {}), costs.get("load_average_5min_median")
    say(
        f"[bench] estimate: {est['cells']} cells ({len(records)} done), {est['cpu_seconds'] / 3600:.2f} CPU-hours left, "
        f"{est['wall_seconds'] / 3600:.2f} h wall on {parallel} workers (calibrated on {machine.get('model')} "
        f"[{', '.join(machine.get('flags', []))}]"
        + (f" under a load of {load:.1f} on {machine.get('cpus_available')} CPUs" if load else "")
        + ", "
        f"{machine.get('torch_threads')} thread per cell)"
        + (f"; {measured} costs from this benchmark's own finished cells" if measured else "")
        + (f"; not calibrated: {', '.join(est['uncalibrated'])}" if est["uncalibrated"] else "")
    )
    return est


def in_process_launcher(bench):
    """``launch`` running each cell here, one at a time (smoke tests, debugging): no worker start-up per cell."""
    import traceback
    from contextlib import redirect_stderr, redirect_stdout

    from rkd.bench.cell import run_cell
    from rkd.bench.scheduler import Finished, log_path
    from rkd.engine import make_accelerator
    from rkd.run.pipeline import stage_runner

    accelerator = make_accelerator(bench.base.mixed_precision, seed=bench.base.seed)
    run_stages = stage_runner(accelerator)

    def launch(cell, rkd_scale: float, threads: int):
        with open(log_path(bench, cell), "a") as log, redirect_stdout(log), redirect_stderr(log):
            try:
                run_cell(bench.base, cell, rkd_scale, accelerator, run_stages, threads)
            except Exception:  # the scheduler reports the cell as failed and goes on with the others
                traceback.print_exc()
                return Finished(1)
        return Finished(0)

    return launch


def run_one_cell(args, overrides: list) -> int:
    """One cell in this process, its output on this terminal (a worker's goes to the cell's log file)."""
    import torch

    from rkd.bench.cell import run_cell
    from rkd.bench.layout import parse_cell
    from rkd.engine import make_accelerator
    from rkd.run.pipeline import stage_runner

    torch.set_num_threads(args.threads)
    bench, _ = make_bench(args, overrides)
    accelerator = make_accelerator(bench.base.mixed_precision, seed=bench.base.seed)
    record = run_cell(
        bench.base, parse_cell(args.cell), args.rkd_scale, accelerator, stage_runner(accelerator), args.threads
    )
    print(json.dumps({k: record.get(k) for k in ("cell", "seconds", "val_accuracy", "teacher_hash")}))
    return 0


def run_all(args, overrides: list, report: bool = True) -> dict:
    from rkd.bench.scheduler import python_command, run_cells, subprocess_launcher

    bench, dropped = make_bench(args, overrides)
    print_plan(bench, dropped, args.costs, args.parallel)
    if args.in_process:
        launch, parallel = in_process_launcher(bench), 1
    else:
        command = python_command(str(Path(__file__).resolve()), config_args(args, overrides))
        launch, parallel = subprocess_launcher(bench, command), args.parallel
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    outcome = run_cells(bench, launch, parallel, args.threads, log=say, recheck=args.recheck)
    say(
        f"[bench] {len(outcome['done'])} cells done, {len(outcome['failed'])} failed, {len(outcome['waiting'])} waiting"
    )
    return {"outcome": outcome, "report": make_report(args, overrides) if report and not outcome["failed"] else None}


def make_report(args, overrides: list) -> dict:
    from rkd.bench.report import write_report

    bench, _ = make_bench(args, overrides)
    summary = write_report(bench, "python benchmarks/bench.py run " + " ".join(config_args(args, overrides)))
    if args.results:  # `make bench` keeps them in benchmarks/results/bench (runs/ is not tracked)
        results = Path(args.results)
        results.mkdir(parents=True, exist_ok=True)
        compare = Path(summary["view"]) / "compare"
        for item in ("comparison.png", "comparison.md", "rate_policy.json", "results.json", "lead.png"):
            if (compare / item).exists():  # lead.png: only where its panels were swept
                shutil.copyfile(compare / item, results / item)
        shutil.copyfile(bench.base.run_dir / "tuning.json", results / "tuning.json")
        (results / "cells.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def grid_cells(args, overrides: list) -> dict:
    """The first seed's grid as it stands (``rkd.bench.tuning.grid_as_it_stands``): a grid extended by a
    multiplier shows its choices before every cell built on RKD-SC's choice is made again."""
    from rkd.bench.tuning import grid_as_it_stands

    bench, _ = make_bench(args, overrides)
    result = grid_as_it_stands(bench.base, bench.names, bench.grid, bench.seeds[0])
    options = [f"--grid {','.join(f'{x:g}' for x in bench.grid)}"] + ([f"--only {args.only}"] if args.only else [])
    result["command"] = " ".join(["python benchmarks/bench.py grid", *options, *config_args(args, overrides)])
    if args.results:
        Path(args.results).mkdir(parents=True, exist_ok=True)
        (Path(args.results) / "grid.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def calibrate(args, overrides: list) -> dict:
    """Every method once, briefly, on one seed without tuning; their records -> ``--costs``."""
    from rkd.bench.costs import unit_costs
    from rkd.bench.machine import machine_record

    args.seeds, args.grid = "1", "1"  # seed 0 alone, no tuning
    overrides = [*CALIBRATE, *overrides]
    result = run_all(args, overrides, report=False)
    bench, _ = make_bench(args, overrides)
    records, _, _ = bench.state()
    loads = [r["machine"]["load_average"][1] for r in records.values() if r.get("machine", {}).get("load_average")]
    costs = {
        "machine": machine_record(args.threads),
        "load_average_5min_median": statistics.median(loads) if loads else None,
        "parallel": args.parallel,
        "profile": CALIBRATE,
        "units": unit_costs([r for r in records.values()]),
        "cells": {
            k: {"seconds": r["seconds"], "parts": r.get("parts"), "sizes": r.get("sizes")} for k, r in records.items()
        },
    }
    Path(args.costs).parent.mkdir(parents=True, exist_ok=True)
    Path(args.costs).write_text(json.dumps(costs, indent=2) + "\n")
    return {"costs": args.costs, "outcome": result["outcome"]}


def main(argv: list | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "cell":
        return run_one_cell(args, overrides)
    try:
        if args.command == "plan":
            print_plan(*make_bench(args, overrides), args.costs, args.parallel)
            return 0
        commands = {"run": run_all, "report": make_report, "grid": grid_cells, "calibrate": calibrate}
        result = commands[args.command](args, overrides)
    except (RuntimeError, ValueError) as err:  # BenchError, ComparisonError: what is missing or mixed, and the fix
        print(f"[bench] {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0 if not (isinstance(result, dict) and result.get("outcome", {}).get("failed")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
