"""KDL-DARTS ablation on the embedded default: is the searched student worth its search?

Compares five students trained with the same brief stage-1 KD recipe: the KDL-DARTS cells, the
hand-designed ``default`` cells, a random genotype of the searched one's size, and the cells of two
ablated searches (no KD terms: task loss only; no complexity penalty). Reports parameters, FLOPs,
stage-1 test accuracy and each search's cost (wall minutes, CPU minutes and peak memory of the search
process, read with ``os.wait4``'s rusage). With ``--rkd-sc`` the searched and the hand student also
go through a short stage 2 and are evaluated over AWGN at a few SNRs.

Subset (so it fits in ~20-30 minutes on 2 shared CPU cores): the default config with
``data.max_train/max_val/max_test`` (default 6000/1000/2000), a 3-epoch teacher on that subset,
the default search section (its own 1024/512-image subset), stage 1 for ``--stage1-epochs`` epochs.

    python benchmarks/search_ablation.py [--out benchmarks/results/search_ablation.json] [--rkd-sc]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {  # search variant -> config overrides on top of the default search section
    "kdl_darts": [],
    "no_kd": ["search.logit_kd=0", "search.feature_kd=0"],
    "no_complexity": ["search.complexity_weight=0"],
}


def base_overrides(args) -> list:
    return [f"runs_dir={args.runs_dir}", "name=search-ablation",
            f"data.max_train={args.max_train}", f"data.max_val={args.max_val}", f"data.max_test={args.max_test}",
            f"teacher.train.epochs={args.teacher_epochs}", f"stage1.epochs={args.stage1_epochs}",
            "stage2.epochs=2", *args.override]


def load(args, extra=()):
    from rkd.config import load_config

    return load_config("default", [*base_overrides(args), *extra])


def pipeline_inputs(cfg):
    """Accelerator, data and teacher cache through the pipeline (trained/built once, then skipped)."""
    from rkd.engine import make_accelerator
    from rkd.pipeline import Pipeline

    accelerator = make_accelerator("no", cpu=True, seed=cfg.seed)
    pipeline = Pipeline(cfg, accelerator)
    pipeline.run(until="cache")
    return accelerator, pipeline


def child_search(args) -> None:
    """One search in this (child) process, so the parent can read its CPU time and peak memory."""
    import torch
    from accelerate.utils import set_seed

    from rkd.search import run_search

    torch.set_num_threads(args.threads)
    cfg = load(args, VARIANTS[args.variant])
    accelerator, pipeline = pipeline_inputs(cfg)
    set_seed(cfg.seed)
    out = Path(args.runs_dir) / "ablation" / args.variant
    started = time.time()
    run_search(cfg, accelerator, pipeline.bundle, pipeline.cache, out)
    (out / "wall.json").write_text(json.dumps({"seconds": time.time() - started}))


def run_child_search(args, variant: str) -> dict:
    cmd = [sys.executable, __file__, "--child-search", variant, "--runs-dir", args.runs_dir, "--threads",
           str(args.threads), "--max-train", str(args.max_train), "--max-val", str(args.max_val),
           "--max-test", str(args.max_test), "--teacher-epochs", str(args.teacher_epochs),
           "--stage1-epochs", str(args.stage1_epochs), *sum((["--override", o] for o in args.override), [])]
    log = Path(args.runs_dir) / f"search-{variant}.log"
    started = time.time()
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"search {variant} failed (status {status}); see {log}")
    out = Path(args.runs_dir) / "ablation" / variant
    meta = json.loads((out / "genotype.json").read_text())["meta"]
    return {"process_wall_minutes": (time.time() - started) / 60,
            "search_wall_minutes": json.loads((out / "wall.json").read_text())["seconds"] / 60,
            "cpu_minutes": (usage.ru_utime + usage.ru_stime) / 60, "peak_rss_mib": usage.ru_maxrss / 1024,
            "steps": meta["steps"], "arch_steps": meta["arch_steps"], "train_rows": meta["train_rows"],
            "val_rows": meta["val_rows"], "supernet_val_accuracy": meta["supernet_val_accuracy"],
            "expected_params": meta["expected_params"], "skips": meta["skips"],
            "skips_before_cap": meta["skips_before_cap"]}


def random_genotype(primitives: list, nodes: int, target_params: int, shape, seed: int = 0, samples: int = 200):
    """The random cells (no ``none``, at most 2 skips per cell) whose student is closest in size to ``target_params``."""
    from rkd.nas.complexity import measure_network
    from rkd.nas.derive import SKIP
    from rkd.nas.genotype import Genotype

    rng = random.Random(seed)
    ops = [p for p in primitives if p != "none"]

    def cell():
        while True:
            edges = []
            for node in range(nodes):
                for source in rng.sample(range(2 + node), 2):
                    edges.append((rng.choice(ops), source))
            if sum(op == SKIP for op, _ in edges) <= 2:
                return edges

    best = None
    concat = list(range(2, 2 + nodes))
    for _ in range(samples):
        g = Genotype(cell(), concat, cell(), concat)
        params = measure_network(g, shape).params
        if best is None or abs(params - target_params) < abs(best[1] - target_params):
            best = (g, params)
    return best[0]


def test_accuracy(cfg, bundle, cache, stage1_dir: Path) -> float:
    import torch

    from rkd.data import student_transform
    from rkd.distill import load_stage1

    model = load_stage1(cfg, bundle, cache.features["train"].shape[1], stage1_dir).eval()
    transform = student_transform(cfg.data, bundle)
    test = bundle.splits["test"]
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test), 500):
            logits = model(transform(test.images[start:start + 500]))["logits"]
            correct += int((logits.argmax(-1) == test.labels[start:start + 500]).sum())
    return correct / len(test)


def rkd_sc_accuracy(cfg, accelerator, bundle, cache, stage1_dir: Path, out: Path, snrs: list) -> dict:
    """Short stage 2 on the stage-1 student, then AWGN accuracy at the full channel budget per SNR."""
    import torch

    from accelerate.utils import set_seed

    from rkd.data import student_transform
    from rkd.distill import load_stage2, run_stage2
    from rkd.evaluate import batched, channel_sweep

    set_seed(cfg.seed + 2)
    run_stage2(cfg, accelerator, bundle, cache, stage1_dir, out)
    teacher_dim = cache.features["train"].shape[1]
    system = load_stage2(cfg, bundle, teacher_dim, stage1_dir, out).eval()
    test = bundle.splits["test"]
    x = student_transform(cfg.data, bundle)(test.images)
    with torch.no_grad():
        tokens = batched(lambda t: system.student(t)["tokens"], x, 500)
    k = max(cfg.codec.rates)
    records = channel_sweep(system, tokens, test.labels, [{"name": "awgn"}], snrs, [k], 500, cfg.eval.seed,
                            progress=False)
    return {f"{r['snr_db']:g} dB": r["accuracy"] for r in records} | {"channel_uses": k}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default="/tmp/rkd-search-ablation")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "search_ablation.json"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    parser.add_argument("--max-train", type=int, default=6000)
    parser.add_argument("--max-val", type=int, default=1000)
    parser.add_argument("--max-test", type=int, default=2000)
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--stage1-epochs", type=int, default=3)
    parser.add_argument("--rkd-sc", action="store_true", help="also a short stage 2 + AWGN accuracy (searched, hand)")
    parser.add_argument("--override", action="append", default=[], help="extra config override (repeatable)")
    parser.add_argument("--child-search", dest="variant", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant is not None:
        child_search(args)
        return

    import torch
    from accelerate.utils import set_seed

    from rkd.distill import run_stage1
    from rkd.nas.complexity import measure_network
    from rkd.nas.genotype import GENOTYPES, genotype_to_dict, load_genotype
    from rkd.search import student_shape

    torch.set_num_threads(args.threads)
    started = time.time()
    cfg = load(args)
    accelerator, pipeline = pipeline_inputs(cfg)
    bundle, cache = pipeline.bundle, pipeline.cache
    prepared = time.time()
    searches = {variant: run_child_search(args, variant) for variant in VARIANTS}
    searched = time.time()
    shape = student_shape(cfg, bundle)
    genotypes = {v: load_genotype(Path(args.runs_dir) / "ablation" / v / "genotype.json") for v in VARIANTS}
    genotypes["hand_default"] = GENOTYPES["default"]
    genotypes["random_similar_size"] = random_genotype(cfg.search.primitives, cfg.search.nodes,
                                                       measure_network(genotypes["kdl_darts"], shape).params, shape)
    students = {}
    for name, genotype in genotypes.items():
        out = Path(args.runs_dir) / "ablation" / f"stage1-{name}"
        set_seed(cfg.seed + 1)
        summary = run_stage1(cfg, accelerator, bundle, cache, out, genotype=genotype)
        cost = measure_network(genotype, shape)
        students[name] = {"params": cost.params, "flops": cost.flops,
                          "stage1_val_accuracy": summary["best_val_accuracy"],
                          "stage1_test_accuracy": test_accuracy(cfg, bundle, cache, out),
                          "stage1_minutes": summary["seconds"] / 60, "genotype": genotype_to_dict(genotype)}
        print(f"{name}: {cost.params:,} params, {cost.flops:,} FLOPs, test {100 * students[name]['stage1_test_accuracy']:.2f}%",
              flush=True)
    if args.rkd_sc:
        for name in ("kdl_darts", "hand_default"):
            students[name]["rkd_sc_awgn"] = rkd_sc_accuracy(
                cfg, accelerator, bundle, cache, Path(args.runs_dir) / "ablation" / f"stage1-{name}",
                Path(args.runs_dir) / "ablation" / f"stage2-{name}", [-5.0, 5.0, 15.0])
    result = {
        "setup": {
            "data": {"train": len(bundle.splits["train"]), "val": len(bundle.splits["val"]),
                     "test": len(bundle.splits["test"])},
            "teacher_epochs": args.teacher_epochs, "stage1_epochs": args.stage1_epochs, "threads": args.threads,
            "search": {k: v for k, v in vars(cfg.search).items() if k not in ("train", "primitives", "sweep_weights")}
            | {"epochs": cfg.search.train.epochs, "batch_size": cfg.search.train.batch_size},
            "teacher_test_accuracy": float((cache.logits["test"].float().argmax(-1) == bundle.splits["test"].labels)
                                           .float().mean()),
            "load_average_at_end": os.getloadavg(),
        },
        "searches": searches,
        "students": students,
        "minutes": {"teacher_and_cache": (prepared - started) / 60, "searches": (searched - prepared) / 60,
                    "total": (time.time() - started) / 60},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
