"""What each ``rkd`` command does once its config is read: the pipeline up to a stage, the sweep, baselines, export.

``rkd.cli`` parses the command line and imports this module only then, because it pulls in torch,
transformers and datasets (seconds), which ``rkd --help`` and argument errors do not need.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from rkd.baselines.runner import run_baselines
from rkd.config import ConfigError, RunConfig
from rkd.data import DataError
from rkd.engine import make_accelerator
from rkd.evaluation.compare import ComparisonError, report_comparison
from rkd.evaluation.report import report
from rkd.export.torchscript import export_trained
from rkd.hardware.doctor import report as doctor_report
from rkd.hardware.precision import PrecisionError
from rkd.hardware.threads import configure_threads
from rkd.nas.genotype import GenotypeError
from rkd.run.artifacts import IntegrityError
from rkd.run.collective import on_main
from rkd.run.diskspace import DiskFullError
from rkd.run.launch_check import LaunchError
from rkd.run.lock import RunLock, RunLockError, held
from rkd.run.pipeline import Pipeline, stage_runner
from rkd.run.preemption import StopRequested
from rkd.run.tracking import accelerator_kwargs, start_tracking
from rkd.teacher.cache import CacheError

UNTIL = {
    "run": "eval",
    "teacher": "teacher",
    "cache": "cache",
    "search": "search",
    "distill": "stage2",
    "evaluate": "eval",
}
# errors whose message is the whole story: bad input or damaged files, told without a traceback
USER_FACING_ERRORS = (
    ConfigError,
    DataError,
    GenotypeError,
    IntegrityError,
    CacheError,
    ComparisonError,
    LaunchError,
    RunLockError,
    DiskFullError,
    PrecisionError,
)
SWEEP_POINT = "search --sweep-index"  # the lock command of a sweep array task


def execute(args: argparse.Namespace, cfg: RunConfig) -> int:
    """Run the parsed command; returns the exit status."""
    if args.command == "doctor":
        configure_threads()
        print(doctor_report(cfg, estimate=not args.no_estimate, reprobe=args.reprobe))
        return 0
    if args.command == "report":
        print(f"report: {report(cfg.run_dir)}")
        try:
            comparison = report_comparison(cfg.run_dir)
        except ComparisonError as exc:
            print(f"rkd: error: {exc}", file=sys.stderr)
            return 2
        if comparison is not None:
            print(f"comparison: {comparison}")
        return 0
    try:
        trackers = accelerator_kwargs(cfg)
    except ConfigError as exc:
        print(f"rkd: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_threads()
    try:
        accelerator = make_accelerator(
            cfg.mixed_precision, seed=cfg.seed, collective_timeout_minutes=cfg.collective_timeout_minutes, **trackers
        )
    except PrecisionError as exc:
        print(f"rkd: configuration error: {exc}", file=sys.stderr)
        return 2
    except LaunchError as exc:
        print(f"rkd: error: {exc}", file=sys.stderr)
        return 2
    start_tracking(accelerator, cfg)  # a tracker run named after the rkd run, with its config
    distributed = accelerator.num_processes > 1
    try:
        with held(accelerator, run_lock(args, cfg, accelerator)):
            code = run_command(args, cfg, accelerator)
    except USER_FACING_ERRORS as exc:
        print(f"rkd: error: {exc}", file=sys.stderr)
        return leave(2, distributed)
    except StopRequested as stop:  # a scheduler's signal: checkpointed; every rank stops at the same step
        if not distributed:
            raise
        return leave(int(stop.code or 0), distributed)
    except Exception:
        if not distributed:
            raise
        traceback.print_exc()
        return leave(1, distributed)
    # Leave together and tear the process group down before the interpreter exits.
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return leave(code, distributed)


def leave(code: int, distributed: bool) -> int:
    """The exit status; a distributed process exits here, without the interpreter's shutdown.

    A gloo worker thread can still hold the last reference to a tensor whose Python object the
    shutdown has freed; it then cannot take the GIL and aborts the rank ("terminate called without an
    active exception", SIGABRT), and the launcher reports a failed job whatever the status was. What
    the command writes is written by now (and closed, after a success), so the exit handlers have
    nothing left to do.
    """
    if not distributed:
        return code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_lock(args: argparse.Namespace, cfg: RunConfig, accelerator) -> RunLock:
    """The run directory's lock for this command: exclusive, except that sweep points share it (``rkd.run.lock``)."""
    if args.command == "search" and args.sweep_index is not None:
        return RunLock(cfg.run_dir, SWEEP_POINT, group="sweep", log=accelerator.print)
    return RunLock(cfg.run_dir, args.command, log=accelerator.print)


def run_command(args: argparse.Namespace, cfg: RunConfig, accelerator) -> int:
    """The command's work on an already built Accelerator; returns the exit status."""
    if args.command == "baselines":
        run_baselines(cfg, accelerator, stage_runner(accelerator))
        if accelerator.is_main_process:
            print(f"comparison: {cfg.run_dir / 'compare' / 'comparison.md'}")
        return 0
    if args.command == "export":
        paths = export_run(cfg, accelerator, onnx=not args.no_onnx)
        if accelerator.is_main_process:
            print(f"export: {paths['dir']}")
        return 0
    pipeline = Pipeline(cfg, accelerator)
    if args.command == "search" and (args.sweep or args.sweep_index is not None):
        return sweep_command(cfg, accelerator, pipeline, args.sweep_index)
    summaries = pipeline.run(until=UNTIL[args.command])
    if accelerator.is_main_process:
        run_dir = cfg.run_dir
        if "eval" in summaries:
            s = summaries["eval"]
            print(
                f"\nteacher {100 * s['teacher_accuracy']:.2f}% ({s['teacher_params']:,} params), "
                f"student {100 * s['student_accuracy']:.2f}% ({s['student_params']:,} params)"
            )
            print(f"report: {run_dir / 'eval' / 'report.md'}")
        elif args.command == "search":
            s = summaries["search"]
            print(
                f"\nsearched cells: {s['params']:,} params, {s['flops']:,} FLOPs/image: "
                f"{run_dir / 'search' / 'genotype.json'}\nuse them: rkd run search.enabled=true [same overrides]"
            )
        else:
            print(f"done: {run_dir}")
    return 0


def sweep_command(cfg: RunConfig, accelerator, pipeline: Pipeline, index) -> int:
    """``rkd search --sweep [--sweep-index i]``: the Pareto sweep, and the chosen point when all are done.

    Array tasks started together need the teacher and its cache first: one task builds them under the
    ``upstream`` lock while the others wait for it, then find them done.
    """
    if index is not None:
        upstream = RunLock(cfg.run_dir, SWEEP_POINT, name="upstream", log=accelerator.print)
        with held(accelerator, upstream, wait_while=lambda holder: holder.get("command") == SWEEP_POINT):
            pipeline.run(until="cache")
    try:
        result = pipeline.sweep(index)
    except ValueError as exc:
        print(f"rkd: {exc}", file=sys.stderr)
        return 2
    if accelerator.is_main_process and result is not None:
        sweep_dir = cfg.run_dir / "search" / "sweep"
        chosen = result["chosen"]
        if chosen is None:
            print(
                f"sweep: no point fits search.sweep_budget={cfg.search.sweep_budget}; see {sweep_dir / 'pareto.json'}"
            )
        else:
            p = result["points"][chosen]
            print(
                f"sweep: chose complexity weight {p['complexity_weight']:g} ({p['params']:,} params, "
                f"{p['flops']:,} FLOPs, val {100 * p['val_accuracy']:.2f}%): {sweep_dir / 'genotype.json'}"
            )
        print(f"pareto: {sweep_dir / 'pareto.json'}")
    return 0


def export_run(cfg: RunConfig, accelerator, onnx: bool = True) -> dict:
    """``rkd export``: the run up to stage 2 first, then its link into ``runs/<name>/export/`` (``onnx``: the ONNX
    pair too, where the onnx extra is installed)."""
    pipeline = Pipeline(cfg, accelerator)
    pipeline.run(until="stage2")
    out_dir = cfg.run_dir / "export"
    inputs = pipeline.inputs
    _ = inputs.bundle, inputs.cache  # collective loads (a barrier inside): every rank, before the main-only export
    paths = on_main(accelerator, lambda: export_trained(cfg, inputs, out_dir, onnx=onnx))
    return paths if paths is not None else {"dir": out_dir}
