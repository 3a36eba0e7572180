"""The ``rkd`` command: run | teacher | cache | search | distill | evaluate | report | baselines | export.

Each command runs the pipeline up to its stage, skipping stages already done for the same config,
so ``rkd evaluate`` after ``rkd distill`` only evaluates.

    rkd run                                  # the embedded default (Fashion-MNIST, embedded teacher)
    rkd run --quick                          # a minutes-long smoke run
    rkd run --config paper-cifar100-clip stage2.epochs=10
    rkd search                               # KDL-DARTS: search the student's cells (search.enabled=true)
    rkd run search.enabled=true              # the whole pipeline with the searched cells
    rkd search --sweep [--sweep-index i]     # Pareto sweep over search.sweep_weights (one point per SLURM task)
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from rkd.config import ConfigError, RunConfig, load_config

UNTIL = {"run": "eval", "teacher": "teacher", "cache": "cache", "search": "search", "distill": "stage2",
         "evaluate": "eval"}


def user_facing_errors() -> tuple:
    """Errors whose message is the whole story (imported late: ``rkd --help`` stays fast)."""
    from rkd.artifacts import IntegrityError
    from rkd.data import DataError
    from rkd.nas.genotype import GenotypeError
    from rkd.cache import CacheError

    return ConfigError, DataError, GenotypeError, IntegrityError, CacheError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rkd", description="RKD-SC: distil a large vision model into a small, "
                                     "channel-robust semantic transmitter.")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {
        "run": "the whole pipeline: data, teacher, cache, search (search.enabled), stage 1, stage 2, evaluation",
        "teacher": "train or fine-tune the teacher",
        "cache": "up to the teacher cache",
        "search": "up to the KDL-DARTS architecture search (turns search.enabled on)",
        "distill": "up to stage 2 (both distillation stages)",
        "evaluate": "up to evaluation (sweeps, plots, report)",
        "report": "re-render plots and report.md from an existing eval/results.json (and the comparison, if any)",
        "baselines": "RKD-SC's baselines and ablations (rkd.baselines), then the comparison report in compare/",
        "export": "export the transmitter and receiver as standalone TorchScript files into export/",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", action="append", default=None,
                       help="YAML file or packaged config name (default: 'default'); repeat to layer files")
        p.add_argument("--quick", action="store_true", help="layer the packaged 'quick' profile (a smoke run)")
        p.add_argument("--name", help="run name (runs/<name>)")
        p.add_argument("--runs-dir", help="parent directory of run directories")
        p.add_argument("--trust-remote-code", action="store_true",
                       help="let a hub teacher run its own Python code (teacher.trust_remote_code); only the "
                            "command line can switch this on, and the run's record says it was")
        p.add_argument("overrides", nargs="*", metavar="section.field=value", help="config overrides")
        if name == "search":
            p.add_argument("--sweep", action="store_true",
                           help="Pareto sweep: one search + brief stage-1 training per search.sweep_weights entry")
            p.add_argument("--sweep-index", type=int, default=None, metavar="I",
                           help="run only sweep point I (implies --sweep; e.g. $SLURM_ARRAY_TASK_ID); "
                                "run `rkd cache` first so array tasks share one teacher cache")
    return parser


def resolve_config(args: argparse.Namespace) -> RunConfig:
    paths = list(args.config or ["default"])
    if args.quick:
        paths.append("quick")
    overrides = list(args.overrides or [])
    if args.command == "search":
        overrides.append("search.enabled=true")
    if args.name:
        overrides.append(f"name={args.name}")
    if args.runs_dir:
        overrides.append(f"runs_dir={args.runs_dir}")
    if args.trust_remote_code:
        overrides.append("teacher.trust_remote_code=true")
    return load_config(paths, overrides)


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = resolve_config(args)
    except ConfigError as exc:
        print(f"rkd: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "report":
        from rkd.evaluate import report

        path = report(cfg.run_dir)
        print(f"report: {path}")
        from rkd.compare import report_comparison

        comparison = report_comparison(cfg.run_dir)
        if comparison is not None:
            print(f"comparison: {comparison}")
        return 0

    from rkd.engine import make_accelerator
    from rkd.tracking import accelerator_kwargs, start_tracking

    try:
        trackers = accelerator_kwargs(cfg)
    except ConfigError as exc:
        print(f"rkd: configuration error: {exc}", file=sys.stderr)
        return 2
    accelerator = make_accelerator(cfg.mixed_precision, seed=cfg.seed, **trackers)
    start_tracking(accelerator, cfg)  # a tracker run named after the rkd run, with its config
    try:
        code = run_command(args, cfg, accelerator)
    except Exception as exc:
        if not isinstance(exc, user_facing_errors()):
            raise
        # bad input or damaged files: the message already says what is wrong and how to fix it
        print(f"rkd: error: {exc}", file=sys.stderr)
        return 2
    # Leave together and tear the process group down before the interpreter exits: a gloo group
    # left to the exit handlers can abort one rank ("terminate called without an active exception")
    # after all its work is done, which a launcher then reports as a failed job.
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return code


def run_command(args: argparse.Namespace, cfg: RunConfig, accelerator) -> int:
    """The command's work on an already built Accelerator; returns the exit status."""
    from rkd.pipeline import Pipeline

    if args.command == "baselines":
        from rkd.baselines.runner import run_baselines

        run_baselines(cfg, accelerator)
        if accelerator.is_main_process:
            print(f"comparison: {cfg.run_dir / 'compare' / 'comparison.md'}")
        return 0
    if args.command == "export":
        from rkd.export import export_run

        paths = export_run(cfg, accelerator)
        if accelerator.is_main_process:
            print(f"export: {paths['dir']}")
        return 0
    pipeline = Pipeline(cfg, accelerator)
    if args.command == "search" and (args.sweep or args.sweep_index is not None):
        try:
            result = pipeline.sweep(args.sweep_index)
        except ValueError as exc:
            print(f"rkd: {exc}", file=sys.stderr)
            return 2
        if accelerator.is_main_process and result is not None:
            sweep_dir = cfg.run_dir / "search" / "sweep"
            chosen = result["chosen"]
            if chosen is None:
                print(f"sweep: no point fits search.sweep_budget={cfg.search.sweep_budget}; see {sweep_dir / 'pareto.json'}")
            else:
                p = result["points"][chosen]
                print(f"sweep: chose complexity weight {p['complexity_weight']:g} ({p['params']:,} params, "
                      f"{p['flops']:,} FLOPs, val {100 * p['val_accuracy']:.2f}%): {sweep_dir / 'genotype.json'}")
            print(f"pareto: {sweep_dir / 'pareto.json'}")
        return 0
    summaries = pipeline.run(until=UNTIL[args.command])
    if accelerator.is_main_process:
        run_dir = cfg.run_dir
        if "eval" in summaries:
            s = summaries["eval"]
            print(f"\nteacher {100 * s['teacher_accuracy']:.2f}% ({s['teacher_params']:,} params), "
                  f"student {100 * s['student_accuracy']:.2f}% ({s['student_params']:,} params)")
            print(f"report: {run_dir / 'eval' / 'report.md'}")
        elif args.command == "search":
            s = summaries["search"]
            print(f"\nsearched cells: {s['params']:,} params, {s['flops']:,} FLOPs/image: "
                  f"{run_dir / 'search' / 'genotype.json'}\nuse them: rkd run search.enabled=true [same overrides]")
        else:
            print(f"done: {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
