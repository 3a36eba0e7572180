"""The ``rkd`` command: run | teacher | cache | search | distill | evaluate | report | baselines | export | doctor.

Each command runs the pipeline up to its stage, skipping stages already done for the same config,
so ``rkd evaluate`` after ``rkd distill`` only evaluates.

    rkd run                                  # the embedded default (Fashion-MNIST, embedded teacher)
    rkd run --quick                          # a minutes-long smoke run
    rkd run --config paper-cifar100-clip stage2.epochs=10
    rkd search                               # KDL-DARTS: search the student's cells (search.enabled=true)
    rkd run search.enabled=true              # the whole pipeline with the searched cells
    rkd search --sweep [--sweep-index i]     # Pareto sweep over search.sweep_weights (one point per SLURM task)
    rkd doctor                               # this machine: precisions, threads, peaks, the run's time here
"""

from __future__ import annotations

import argparse
import sys

from rkd.config import ConfigError, RunConfig, load_config

# command -> (what it does, what it writes in the run directory); `rkd <command> --help` says both
_UPSTREAM = "config.yaml, teacher/ (model/: save_pretrained model, processor, rkd_teacher.json), cache/ (fp16 logits and features, manifest.json)"
_STAGE = "model.safetensors, log.jsonl, checkpoints/"
STAGE_RECORDS = (
    "; every stage directory also holds stage.json and started.json (what ran, with its config hash); "
    ".rkd-lock/ names the job that holds the run directory while one runs"
)
COMMANDS = {
    "run": (
        "the whole pipeline: data, teacher, cache, search (search.enabled), stage 1, stage 2, evaluation",
        f"{_UPSTREAM}, search/ (with search.enabled), stage1/ and stage2/ ({_STAGE}), eval/ (results.json, "
        "results.csv, report.md, rate_policy.json, accuracy_vs_snr*.png, confusion_matrix.png)",
    ),
    "teacher": (
        "train or fine-tune the teacher",
        "config.yaml, teacher/ (model/: save_pretrained model, processor, rkd_teacher.json; log.jsonl, checkpoints/)",
    ),
    "cache": ("up to the teacher cache", _UPSTREAM),
    "search": (
        "up to the KDL-DARTS architecture search (turns search.enabled on)",
        f"{_UPSTREAM}, search/ (genotype.json, genotype.png, alphas.jsonl, candidates/); with --sweep "
        "search/sweep/ (pareto.json, pareto.csv, pareto.png, genotype.json)",
    ),
    "distill": (
        "up to stage 2 (both distillation stages)",
        f"{_UPSTREAM}, search/ (with search.enabled), stage1/ and stage2/ ({_STAGE})",
    ),
    "evaluate": (
        "up to evaluation (sweeps, plots, report)",
        "what distill writes, then eval/ (results.json, results.csv, report.md, rate_policy.json, "
        "accuracy_vs_snr*.png, confusion_matrix.png)",
    ),
    "report": (
        "re-render the report from an existing eval/results.json (and the comparison, if any)",
        "eval/report.md and eval/*.png; compare/comparison.md and compare/comparison.png when baselines ran",
    ),
    "baselines": (
        "RKD-SC's baselines and ablations (rkd.baselines), then the comparison report",
        "what evaluate writes, baselines/<method>/ (results.json), ablations/<variant>/, seeds/seed-<s>/ "
        "(baselines.seeds), compare/ (results.json, comparison.md, comparison.png, lead.png, rate_policy.json)",
    ),
    "export": (
        "export the trained transmitter and receiver as standalone files",
        "what distill writes, then export/: transmitter.pt and receiver.pt (TorchScript), transmitter.onnx "
        "and receiver.onnx (ONNX, with the onnx extra installed), export.json",
    ),
    "doctor": (
        "what this machine can do and what rkd chooses on it: precisions, threads, peaks, the run's time here",
        "nothing (the probe's measurement is cached in ~/.cache/rkd/probe/)",
    ),
}
NO_STAGES = ("report", "doctor")  # commands that run no stage, so write no stage records


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rkd", description="RKD-SC: distil a large vision model into a small, channel-robust semantic transmitter."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (does, writes) in COMMANDS.items():
        text = f"{does}. Writes, in runs/<name>/: {writes}" + ("" if name in NO_STAGES else STAGE_RECORDS)
        p = sub.add_parser(name, help=does, description=text)
        p.add_argument(
            "--config",
            action="append",
            default=None,
            help="YAML file or packaged config name (default: 'default'); repeat to layer files",
        )
        p.add_argument("--quick", action="store_true", help="layer the packaged 'quick' profile (a smoke run)")
        p.add_argument("--name", help="run name (runs/<name>)")
        p.add_argument("--runs-dir", help="parent directory of run directories")
        p.add_argument(
            "--trust-remote-code",
            action="store_true",
            help="let a hub teacher run its own Python code (teacher.trust_remote_code); only the "
            "command line can switch this on, and the run's record says it was",
        )
        p.add_argument("overrides", nargs="*", metavar="section.field=value", help="config overrides")
        if name == "doctor":
            p.add_argument(
                "--no-estimate", action="store_true", help="skip timing the stages' models for the run estimate"
            )
            p.add_argument(
                "--reprobe",
                action="store_true",
                help="measure the probe again (a few seconds) and replace its cache, which auto precision "
                "reads: after a probe taken on a loaded machine, or a change of hardware",
            )
        if name == "export":
            p.add_argument(
                "--no-onnx",
                action="store_true",
                help="TorchScript only: skip the ONNX pair even with the onnx extra installed (its exporter "
                "traces each half through torch.export, the slow part of an export)",
            )
        if name == "search":
            p.add_argument(
                "--sweep",
                action="store_true",
                help="Pareto sweep: one search + brief stage-1 training per search.sweep_weights entry",
            )
            p.add_argument(
                "--sweep-index",
                type=int,
                default=None,
                metavar="I",
                help="run only sweep point I (implies --sweep; e.g. $SLURM_ARRAY_TASK_ID); "
                "run `rkd cache` first so array tasks share one teacher cache",
            )
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


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = resolve_config(args)
    except ConfigError as exc:
        print(f"rkd: configuration error: {exc}", file=sys.stderr)
        return 2
    # Lazily loaded: the commands pull in torch, transformers and datasets (seconds of imports) that
    # `rkd --help`, argument errors and configuration errors do not need.
    from rkd.commands import execute

    return execute(args, cfg)


if __name__ == "__main__":
    raise SystemExit(main())
