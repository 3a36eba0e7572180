"""The Pareto sweep of KDL-DARTS: one search per complexity weight, each derived student trained briefly.

``rkd search --sweep`` runs every ``search.sweep_weights`` entry (``--sweep-index i`` runs one point,
e.g. one SLURM array task); each point is an independent, resumable directory. Once all points are
done, ``search/sweep/pareto.{json,csv,png}`` hold the accuracy-vs-size front and the chosen point's
``genotype.json`` (the most accurate within ``search.sweep_budget``).
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from accelerate.utils import set_seed

from rkd.config import RunConfig, config_hash
from rkd.data import DataBundle
from rkd.nas.genotype import load_genotype
from rkd.run.artifacts import atomic_write, atomic_write_json, read_json
from rkd.run.fingerprint import input_fingerprints
from rkd.run.hashing import stage_hashes
from rkd.run.rundir import ResumableDir
from rkd.stages.search import METHOD, run_search
from rkd.stages.stage1 import train_student


def point_hash(cfg: RunConfig, weight: float) -> str:
    student = input_fingerprints(cfg)["student"]  # a genotype file by content, not path
    return config_hash(
        stage_hashes(cfg)["search"], float(weight), cfg.search.sweep_train_epochs, student, cfg.loss, cfg.stage1
    )


def search_point(cfg: RunConfig, weight: float, out_dir: Path, accelerator, bundle: DataBundle, cache) -> dict:
    """One sweep point, independent of the others: search with ``weight``, train the result briefly, record it.

    Writes ``out_dir/point.json`` last; a finished point with the same settings is returned as is,
    an unfinished one resumes from its checkpoints, one with other settings is moved aside.
    """
    out_dir = Path(out_dir)
    expected_hash = point_hash(cfg, weight)
    record_path = out_dir / "point.json"
    if record_path.exists() and read_json(record_path).get("hash") == expected_hash:
        return read_json(record_path)
    if accelerator.is_main_process:
        ResumableDir(out_dir, expected_hash).begin(weight=weight)
    accelerator.wait_for_everyone()
    # seeded per point, so a point run alone (one array task) equals the same point in a full sweep
    set_seed(cfg.seed)
    searched = run_search(cfg, accelerator, bundle, cache, out_dir / "search", complexity_weight=weight)
    genotype = load_genotype(out_dir / "search" / "genotype.json")
    brief = dataclasses.replace(cfg, stage1=dataclasses.replace(cfg.stage1, epochs=cfg.search.sweep_train_epochs))
    set_seed(cfg.seed + 1)
    trained = train_student(brief, accelerator, bundle, cache, out_dir / "stage1", genotype=genotype)
    record = {
        "hash": expected_hash,
        "complexity_weight": float(weight),
        "params": searched["params"],
        "flops": searched["flops"],
        "expected_params": searched["expected_params"],
        "expected_flops": searched["expected_flops"],
        "val_accuracy": trained["best_val_accuracy"],
        "supernet_val_accuracy": searched["supernet_val_accuracy"],
        "skips": searched["skips"],
        "search_seconds": searched["seconds"],
        "train_seconds": trained["seconds"],
        "genotype_path": str(out_dir / "search" / "genotype.json"),
        "genotype": searched["genotype"],
    }
    if accelerator.is_main_process:
        atomic_write_json(record_path, record)
    accelerator.wait_for_everyone()
    return record


def pareto_front(points: list[dict], metric: str) -> list[int]:
    """Indices of the points no other point beats on both cost (``metric``, lower) and val accuracy (higher)."""
    front = []
    for i, p in enumerate(points):
        dominated = any(
            q[metric] <= p[metric]
            and q["val_accuracy"] >= p["val_accuracy"]
            and (q[metric] < p[metric] or q["val_accuracy"] > p["val_accuracy"])
            for j, q in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def pick_within_budget(points: list[dict], budget: float | None, metric: str) -> int | None:
    """The most accurate point whose ``metric`` fits ``budget`` (the cheaper one on ties); None if none fits."""
    fitting = [i for i, p in enumerate(points) if budget is None or p[metric] <= budget]
    if not fitting:
        return None
    return max(fitting, key=lambda i: (points[i]["val_accuracy"], -points[i][metric]))


def plot_pareto(points: list[dict], chosen: int | None, budget: float | None, metric: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "params", "student parameters"), (axes[1], "flops", "student FLOPs / image")):
        front = sorted(pareto_front(points, key), key=lambda i: points[i][key])
        ax.scatter([p[key] for p in points], [100 * p["val_accuracy"] for p in points], color="tab:blue", zorder=2)
        ax.plot(
            [points[i][key] for i in front],
            [100 * points[i]["val_accuracy"] for i in front],
            color="tab:blue",
            alpha=0.5,
            label="Pareto front",
        )
        for p in points:
            ax.annotate(
                f"w={p['complexity_weight']:g}",
                (p[key], 100 * p["val_accuracy"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(4, 4),
            )
        if chosen is not None:
            ax.scatter(
                [points[chosen][key]],
                [100 * points[chosen]["val_accuracy"]],
                s=120,
                facecolors="none",
                edgecolors="tab:red",
                zorder=3,
                label="chosen",
            )
        if budget is not None and key == metric:
            ax.axvline(budget, color="tab:red", ls="--", lw=1, label="budget")
        ax.set_xlabel(label)
        ax.set_ylabel("stage-1 val accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{METHOD} sweep over the complexity weight")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return path


def write_pareto(sweep_dir: Path, points: list[dict], budget: float | None, metric: str) -> dict:
    """pareto.json / .csv / .png, and the chosen point's genotype copied to ``sweep_dir/genotype.json``."""
    chosen = pick_within_budget(points, budget, metric)
    result = {
        "budget": budget,
        "budget_metric": metric,
        "chosen": chosen,
        "pareto_front_params": pareto_front(points, "params"),
        "pareto_front_flops": pareto_front(points, "flops"),
        "points": points,
    }
    atomic_write_json(sweep_dir / "pareto.json", result)
    fields = [
        "complexity_weight",
        "params",
        "flops",
        "expected_params",
        "expected_flops",
        "val_accuracy",
        "supernet_val_accuracy",
        "search_seconds",
        "train_seconds",
        "genotype_path",
    ]

    def write_csv(path: Path) -> None:
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(points)

    atomic_write(sweep_dir / "pareto.csv", write_csv)
    plot_pareto(points, chosen, budget, metric, sweep_dir / "pareto.png")
    if chosen is not None:
        source = read_json(points[chosen]["genotype_path"])
        source.setdefault("meta", {})["sweep_val_accuracy"] = points[chosen]["val_accuracy"]
        atomic_write_json(sweep_dir / "genotype.json", source)
    return result


def run_sweep(
    cfg: RunConfig, accelerator, bundle: DataBundle, cache, sweep_dir: Path, index: int | None = None
) -> dict | None:
    """Run every sweep point (or only point ``index``); write the Pareto outputs once all points are done."""
    s = cfg.search
    weights = list(s.sweep_weights)
    if index is not None and not 0 <= index < len(weights):
        raise ValueError(
            f"--sweep-index {index} is out of range: search.sweep_weights has {len(weights)} "
            f"entries {weights}, so the index must be in [0, {len(weights) - 1}]"
        )
    sweep_dir = Path(sweep_dir)
    for i in [index] if index is not None else range(len(weights)):
        accelerator.print(f"[search] sweep point {i}: complexity weight {weights[i]:g}")
        search_point(cfg, weights[i], sweep_dir / f"point-{i:02d}", accelerator, bundle, cache)
    points, missing = [], []
    for i, weight in enumerate(weights):
        path = sweep_dir / f"point-{i:02d}" / "point.json"
        if path.exists() and read_json(path).get("hash") == point_hash(cfg, weight):
            points.append(read_json(path))
        else:
            missing.append(i)
    if missing:
        accelerator.print(f"[search] sweep: points {missing} are not done yet; pareto.json is written when all are")
        return None
    result = None
    if accelerator.is_main_process:
        result = write_pareto(sweep_dir, points, s.sweep_budget, s.sweep_budget_metric)
    accelerator.wait_for_everyone()
    return result if result is not None else read_json(sweep_dir / "pareto.json")
