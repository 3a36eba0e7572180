"""The ``rkd`` command: run | teacher | cache | distill | evaluate | report.

Each command runs the pipeline up to its stage, skipping stages already done for the same config,
so ``rkd evaluate`` after ``rkd distill`` only evaluates.

    rkd run                                  # the embedded default (Fashion-MNIST, embedded teacher)
    rkd run --quick                          # a minutes-long smoke run
    rkd run --config paper-cifar100-clip stage2.epochs=10
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from rkd.config import ConfigError, RunConfig, load_config

UNTIL = {"run": "eval", "teacher": "teacher", "cache": "cache", "distill": "stage2", "evaluate": "eval"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rkd", description="RKD-SC: distil a large vision model into a small, "
                                     "channel-robust semantic transmitter.")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {
        "run": "the whole pipeline: data, teacher, cache, stage 1, stage 2, evaluation",
        "teacher": "train or fine-tune the teacher",
        "cache": "up to the teacher cache",
        "distill": "up to stage 2 (both distillation stages)",
        "evaluate": "up to evaluation (sweeps, plots, report)",
        "report": "re-render plots and report.md from an existing eval/results.json",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", action="append", default=None,
                       help="YAML file or packaged config name (default: 'default'); repeat to layer files")
        p.add_argument("--quick", action="store_true", help="layer the packaged 'quick' profile (a smoke run)")
        p.add_argument("--name", help="run name (runs/<name>)")
        p.add_argument("--runs-dir", help="parent directory of run directories")
        p.add_argument("overrides", nargs="*", metavar="section.field=value", help="config overrides")
    return parser


def resolve_config(args: argparse.Namespace) -> RunConfig:
    paths = list(args.config or ["default"])
    if args.quick:
        paths.append("quick")
    overrides = list(args.overrides or [])
    if args.name:
        overrides.append(f"name={args.name}")
    if args.runs_dir:
        overrides.append(f"runs_dir={args.runs_dir}")
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
        return 0

    from rkd.engine import make_accelerator
    from rkd.pipeline import Pipeline

    accelerator = make_accelerator(cfg.mixed_precision, seed=cfg.seed)
    pipeline = Pipeline(cfg, accelerator)
    summaries = pipeline.run(until=UNTIL[args.command])
    if accelerator.is_main_process:
        run_dir = cfg.run_dir
        if "eval" in summaries:
            s = summaries["eval"]
            print(f"\nteacher {100 * s['teacher_accuracy']:.2f}% ({s['teacher_params']:,} params), "
                  f"student {100 * s['student_accuracy']:.2f}% ({s['student_params']:,} params)")
            print(f"report: {run_dir / 'eval' / 'report.md'}")
        else:
            print(f"done: {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
