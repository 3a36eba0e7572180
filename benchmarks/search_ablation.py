"""KDL-DARTS ablation on the embedded default: is the searched student worth its search?

Compares students trained with the same brief stage-1 KD recipe: the KDL-DARTS cells, the
hand-designed ``default`` cells, a random genotype of the searched one's size, and (``--variants``)
the cells of two ablated searches (no KD terms: task loss only; no complexity penalty). Reports
parameters, FLOPs, stage-1 test accuracy and each search's cost (wall minutes, CPU minutes and peak
memory of the search process, read with ``os.wait4``'s rusage). With ``--rkd-sc`` the searched and
the hand student also go through a short stage 2 and are evaluated over AWGN at a few SNRs.

``--seeds 0 1 2`` repeats every search, random draw and stage-1 training per seed (the teacher and
its cache are trained once, with the config's seed) and adds ``summary``: mean +/- std (sample
std, n - 1) of the stage-1 test accuracy per student, searched minus random per seed, and the
searched genotype's stability across seeds (how many of its edges, op and input, every seed chose).
``--train-seeds 3`` trains every student three times (seeds s, s + 1000, s + 2000) and reports the
mean: a brief training's accuracy moves with its seed, and the average keeps that noise apart from
what the cells do.
Per-seed differences come with their paired-t 95% interval over the seeds (``ci95``).
The random cells are drawn until one is within 3% of the searched student's parameters (at most
2,000 draws); with no ``none`` op and at most 2 skips, small random cells are rare on the default
shape, so compare ``mean_params`` before reading a small searched student's gain.

Subset (so one seed takes a fraction of a full run on a CPU): the default config with
``data.max_train/max_val/max_test`` (default 6000/3000/2000; 3,000 val images so the
search's candidate selection scores on more than 1,000), a 3-epoch teacher on that subset
(warm-up: its first epoch),
the default search section (its own 1024/512-image subset), stage 1 for ``--stage1-epochs`` epochs.
``--smoke`` shrinks everything (a few minutes) to show the script works; its numbers mean nothing.

    python benchmarks/search_ablation.py --seeds 0 1 2 [--train-seeds 3] [--out benchmarks/results/search_ablation.json] [--rkd-sc]
    python benchmarks/search_ablation.py --smoke --seeds 0 1 --variants kdl_darts --out /tmp/ablation-smoke.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common  # noqa: F401  (this checkout's rkd first)

from rkd.config import LossConfig
from rkd.losses import teacher_terms

REPO = Path(__file__).resolve().parents[1]

TEACHER_BATCH = 256
TRAIN_SEED_STRIDE = 1000  # --train-seeds: repeat r trains with seed + 1000 r (init, batch order, KD masks)
VARIANTS = {  # search variant -> config overrides on top of the default search section
    "kdl_darts": [],
    "no_kd": [f"search.loss.{name}=0" for name in teacher_terms(LossConfig())],  # every term that reads the teacher
    "no_complexity": ["search.complexity_weight=0"],
}


def base_overrides(args) -> list:
    # the default's warm-up is one epoch of the full training set; on the subset it would outlast the
    # short teacher's whole training, so it is one epoch of the subset
    warmup = math.ceil(args.max_train / TEACHER_BATCH)
    return [
        f"runs_dir={args.runs_dir}",
        "name=search-ablation",
        f"data.max_train={args.max_train}",
        f"data.max_val={args.max_val}",
        f"data.max_test={args.max_test}",
        f"teacher.train.epochs={args.teacher_epochs}",
        f"teacher.train.warmup_steps={warmup}",
        f"teacher.train.batch_size={TEACHER_BATCH}",
        f"stage1.epochs={args.stage1_epochs}",
        "stage2.epochs=2",
        *args.override,
    ]


def load(args, extra=()):
    from rkd.config import load_config

    return load_config("default", [*base_overrides(args), *extra])


def pipeline_inputs(cfg):
    """Accelerator, data and teacher cache through the pipeline (trained/built once, then skipped)."""
    from rkd.engine import make_accelerator
    from rkd.run.pipeline import Pipeline

    accelerator = make_accelerator("no", cpu=True, seed=cfg.seed)
    pipeline = Pipeline(cfg, accelerator)
    pipeline.run(until="cache")
    return accelerator, pipeline


SMOKE = {"max_train": 600, "max_val": 200, "max_test": 300, "teacher_epochs": 1, "stage1_epochs": 1}
SMOKE_OVERRIDES = [
    "search.max_train=128",
    "search.max_val=64",
    "search.train.epochs=2",
    "search.warmup_epochs=1",
    "stage1.max_steps=8",
]


def seed_dir(args, seed: int) -> Path:
    return Path(args.runs_dir) / "ablation" / f"seed-{seed}"


def child_search(args) -> None:
    """One search in this (child) process, so the parent can read its CPU time and peak memory."""
    import torch
    from accelerate.utils import set_seed

    from rkd.stages.search import run_search

    torch.set_num_threads(args.threads)
    cfg = load(args, VARIANTS[args.variant])
    accelerator, pipeline = pipeline_inputs(cfg)  # the teacher and cache of the config's own seed
    cfg = dataclasses.replace(cfg, seed=args.child_seed)  # the search's subset, init and batch order
    set_seed(cfg.seed)
    out = seed_dir(args, args.child_seed) / args.variant
    started = time.time()
    run_search(cfg, accelerator, pipeline.inputs.bundle, pipeline.inputs.cache, out)
    (out / "wall.json").write_text(json.dumps({"seconds": time.time() - started}))


def run_child_search(args, variant: str, seed: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child-search",
        variant,
        "--child-seed",
        str(seed),
        "--runs-dir",
        args.runs_dir,
        "--threads",
        str(args.threads),
        "--max-train",
        str(args.max_train),
        "--max-val",
        str(args.max_val),
        "--max-test",
        str(args.max_test),
        "--teacher-epochs",
        str(args.teacher_epochs),
        "--stage1-epochs",
        str(args.stage1_epochs),
        *sum((["--override", o] for o in args.override), []),
    ]
    log = Path(args.runs_dir) / f"search-{variant}-seed{seed}.log"
    started = time.time()
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            cmd, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        )
        _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"search {variant} (seed {seed}) failed (status {status}); see {log}")
    out = seed_dir(args, seed) / variant
    meta = json.loads((out / "genotype.json").read_text())["meta"]
    return {
        "process_wall_minutes": (time.time() - started) / 60,
        "search_wall_minutes": json.loads((out / "wall.json").read_text())["seconds"] / 60,
        "cpu_minutes": (usage.ru_utime + usage.ru_stime) / 60,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "steps": meta["steps"],
        "arch_steps": meta["arch_steps"],
        "train_rows": meta["train_rows"],
        "val_rows": meta["val_rows"],
        "supernet_val_accuracy": meta["supernet_val_accuracy"],
        "expected_params": meta["expected_params"],
        "skips": meta["skips"],
        "skips_before_cap": meta["skips_before_cap"],
        "selection": meta.get("selection"),
    }


def test_accuracy(cfg, bundle, cache, stage1_dir: Path) -> float:
    import torch

    from rkd.data import student_transform
    from rkd.models.factory import load_stage1

    model = load_stage1(cfg, bundle, cache.features["train"].shape[1], stage1_dir).eval()
    transform = student_transform(cfg.data, bundle)
    test = bundle.splits["test"]
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test), 500):
            logits = model(transform(test.images[start : start + 500]))["logits"]
            correct += int((logits.argmax(-1) == test.labels[start : start + 500]).sum())
    return correct / len(test)


def rkd_sc_accuracy(cfg, accelerator, bundle, cache, stage1_dir: Path, out: Path, snrs: list) -> dict:
    """Short stage 2 on the stage-1 student, then AWGN accuracy at the full channel budget per SNR."""
    import torch
    from accelerate.utils import set_seed

    from rkd.data import student_transform
    from rkd.evaluation.sweep import channel_sweep
    from rkd.models.factory import load_stage2
    from rkd.models.frozen_tokens import batched
    from rkd.stages.stage2 import train_codec

    set_seed(cfg.seed + 2)
    train_codec(cfg, accelerator, bundle, cache, stage1_dir, out)
    teacher_dim = cache.features["train"].shape[1]
    system = load_stage2(cfg, bundle, teacher_dim, stage1_dir, out).eval()
    test = bundle.splits["test"]
    x = student_transform(cfg.data, bundle)(test.images)
    with torch.no_grad():
        tokens = batched(lambda t: system.student(t)["tokens"], x, 500)
    k = max(cfg.codec.rates)
    records = channel_sweep(
        system, tokens, test.labels, [{"name": "awgn"}], snrs, [k], 500, cfg.eval.seed, progress=False
    )
    return {f"{r['snr_db']:g} dB": r["accuracy"] for r in records} | {"channel_uses": k}


def train_students(args, cfg, accelerator, bundle, cache, seed: int) -> dict:
    """Stage 1 of every student of one seed: the searches' cells, the hand cells, a random draw of the searched size."""
    from accelerate.utils import set_seed

    from rkd.models.factory import student_shape
    from rkd.nas.complexity import measure_network
    from rkd.nas.genotype import GENOTYPES, genotype_from_dict, genotype_to_dict, load_genotype
    from rkd.nas.random_cells import random_genotype
    from rkd.stages.stage1 import train_student

    cfg = dataclasses.replace(cfg, seed=seed)
    shape = student_shape(cfg, bundle)
    genotypes = {v: load_genotype(seed_dir(args, seed) / v / "genotype.json") for v in args.variants}
    selection = json.loads((seed_dir(args, seed) / "kdl_darts" / "genotype.json").read_text())["meta"].get("selection")
    if selection:  # what the candidate selection added: the cells DARTS derived before it
        genotypes["darts_derived"] = genotype_from_dict(selection["derived_genotype"])
    genotypes["hand_default"] = GENOTYPES["default"]
    genotypes["random_similar_size"] = random_genotype(
        cfg.search.primitives, cfg.search.nodes, measure_network(genotypes["kdl_darts"], shape).params, shape, seed=seed
    )
    students = {}
    for name, genotype in genotypes.items():
        runs = []
        for repeat in range(args.train_seeds):  # repeat 0 is the seed itself, as before --train-seeds existed
            trained = dataclasses.replace(cfg, seed=seed + TRAIN_SEED_STRIDE * repeat)
            out = seed_dir(args, seed) / (f"stage1-{name}" + (f"-r{repeat}" if repeat else ""))
            set_seed(trained.seed + 1)
            summary = train_student(trained, accelerator, bundle, cache, out, genotype=genotype)
            runs.append(
                {
                    "val": summary["best_val_accuracy"],
                    "test": test_accuracy(trained, bundle, cache, out),
                    "minutes": summary["seconds"] / 60,
                }
            )
        cost = measure_network(genotype, shape)
        students[name] = {
            "params": cost.params,
            "flops": cost.flops,
            "stage1_val_accuracy": statistics.fmean(r["val"] for r in runs),
            "stage1_test_accuracy": statistics.fmean(r["test"] for r in runs),
            "stage1_minutes": sum(r["minutes"] for r in runs),
            "genotype": genotype_to_dict(genotype),
        }
        if args.train_seeds > 1:
            students[name]["stage1_test_accuracy_per_training_seed"] = [r["test"] for r in runs]
        print(
            f"seed {seed} {name}: {cost.params:,} params, {cost.flops:,} FLOPs, "
            f"test {100 * students[name]['stage1_test_accuracy']:.2f}%"
            + (f" (mean of {args.train_seeds} trainings)" if args.train_seeds > 1 else ""),
            flush=True,
        )
    if args.rkd_sc:
        for name in ("kdl_darts", "hand_default"):
            students[name]["rkd_sc_awgn"] = rkd_sc_accuracy(
                cfg,
                accelerator,
                bundle,
                cache,
                seed_dir(args, seed) / f"stage1-{name}",
                seed_dir(args, seed) / f"stage2-{name}",
                [-5.0, 5.0, 15.0],
            )
    return students


def mean_std(values: list) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
        "values": values,
    }


def paired(values: list) -> dict:
    """``mean_std`` of per-seed differences, with their paired-t 95% interval over the seeds."""
    from rkd.evaluation.stats import paired_t

    test = paired_t(values)
    return mean_std(values) | ({"ci95": [test["low"], test["high"]]} if test else {})


def summarise(per_seed: dict) -> dict:
    """Mean +/- std of each student's stage-1 test accuracy over seeds, searched - random, and genotype stability."""
    from rkd.nas.genotype import genotype_from_dict, shared_edges

    seeds = sorted(per_seed)
    names = list(per_seed[seeds[0]]["students"])
    accuracy = {n: mean_std([per_seed[s]["students"][n]["stage1_test_accuracy"] for s in seeds]) for n in names}
    params = {n: statistics.fmean(per_seed[s]["students"][n]["params"] for s in seeds) for n in names}
    gain = [
        per_seed[s]["students"]["kdl_darts"]["stage1_test_accuracy"]
        - per_seed[s]["students"]["random_similar_size"]["stage1_test_accuracy"]
        for s in seeds
    ]
    derived = {}
    if all("darts_derived" in per_seed[s]["students"] for s in seeds):
        derived["searched_minus_darts_derived"] = paired(
            [
                per_seed[s]["students"]["kdl_darts"]["stage1_test_accuracy"]
                - per_seed[s]["students"]["darts_derived"]["stage1_test_accuracy"]
                for s in seeds
            ]
        )
    searched = [genotype_from_dict(per_seed[s]["students"]["kdl_darts"]["genotype"]) for s in seeds]
    total = len(searched[0].normal) + len(searched[0].reduce)
    pairs = [(a, b) for i, a in enumerate(searched) for b in searched[i + 1 :]]
    return {
        "seeds": seeds,
        "stage1_test_accuracy": accuracy,
        "mean_params": params,
        "searched_minus_random": paired(gain),
        **derived,
        "stability": {
            "edges": total,
            "edges_shared_by_all_seeds": shared_edges(searched),
            "ops_shared_by_all_seeds_ignoring_inputs": shared_edges(searched, ignore_inputs=True),
            "mean_edges_shared_per_seed_pair": (statistics.fmean(shared_edges(p) for p in pairs) if pairs else None),
        },
    }


def merge(paths: list, out: Path) -> None:
    """One summary over the seeds of several runs of this script (e.g. seeds run in parallel processes)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    strip = ("load_average_at_end",)
    setups = [{k: v for k, v in r["setup"].items() if k not in strip} for r in runs]
    if any(s != setups[0] for s in setups[1:]):
        raise SystemExit(f"--merge: the files were run with different setups: {paths}")
    per_seed = {}
    for path, r in zip(paths, runs):
        for seed, value in r["per_seed"].items():
            if int(seed) in per_seed:
                raise SystemExit(f"--merge: seed {seed} appears twice (again in {path})")
            per_seed[int(seed)] = value
    result = {
        "setup": setups[0],
        "merged_from": [str(p) for p in paths],
        "summary": summarise(per_seed),
        "per_seed": {str(seed): v for seed, v in sorted(per_seed.items())},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default="/tmp/rkd-search-ablation")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "search_ablation.json"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="search/stage-1 seeds (e.g. 0 1 2)")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        help="searches to run per seed (kdl_darts is always included)",
    )
    parser.add_argument("--max-train", type=int, default=6000)
    parser.add_argument("--max-val", type=int, default=3000)
    parser.add_argument("--max-test", type=int, default=2000)
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--stage1-epochs", type=int, default=3)
    parser.add_argument(
        "--train-seeds",
        type=int,
        default=1,
        help="stage-1 trainings per student and seed, averaged: each brief training alone varies "
        "by ~0.7 points with its seed, as much as the cells do",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny subsets and searches: proves the script runs")
    parser.add_argument("--rkd-sc", action="store_true", help="also a short stage 2 + AWGN accuracy (searched, hand)")
    parser.add_argument("--override", action="append", default=[], help="extra config override (repeatable)")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="summarise the seeds of earlier result files (same setup, distinct seeds) into --out",
    )
    parser.add_argument("--child-search", dest="variant", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
        args.override = [*SMOKE_OVERRIDES, *args.override]
    if "kdl_darts" not in args.variants:
        args.variants.insert(0, "kdl_darts")
    return args


def main() -> None:
    args = parse_args()
    if args.variant is not None:
        child_search(args)
        return
    if args.merge:
        merge(args.merge, Path(args.out))
        return

    import torch

    from rkd.config import to_dict

    torch.set_num_threads(args.threads)
    started = time.time()
    cfg = load(args)
    accelerator, pipeline = pipeline_inputs(cfg)
    bundle, cache = pipeline.inputs.bundle, pipeline.inputs.cache
    prepared = time.time()
    per_seed, search_seconds = {}, 0.0
    for seed in args.seeds:
        before = time.time()
        searches = {variant: run_child_search(args, variant, seed) for variant in args.variants}
        search_seconds += time.time() - before
        per_seed[seed] = {"searches": searches, "students": train_students(args, cfg, accelerator, bundle, cache, seed)}
    result = {
        "setup": {
            "data": {
                "train": len(bundle.splits["train"]),
                "val": len(bundle.splits["val"]),
                "test": len(bundle.splits["test"]),
            },
            "teacher_epochs": args.teacher_epochs,
            "stage1_epochs": args.stage1_epochs,
            "threads": args.threads,
            "train_seeds": args.train_seeds,
            "smoke": args.smoke,
            "overrides": args.override,
            "teacher_seed": cfg.seed,
            "search": {
                k: v for k, v in to_dict(cfg.search).items() if k not in ("train", "primitives", "sweep_weights")
            }
            | {"epochs": cfg.search.train.epochs, "batch_size": cfg.search.train.batch_size},
            "teacher_test_accuracy": float(
                (cache.logits["test"].float().argmax(-1) == bundle.splits["test"].labels).float().mean()
            ),
            "load_average_at_end": os.getloadavg(),
        },
        "summary": summarise(per_seed),
        "per_seed": {str(seed): v for seed, v in per_seed.items()},
        "minutes": {
            "teacher_and_cache": (prepared - started) / 60,
            "searches": search_seconds / 60,
            "total": (time.time() - started) / 60,
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
