"""KDL-DARTS: the distillation-guided, complexity-penalised DARTS search that designs the student's cells.

The search network (``rkd.nas.supernet``) is trained with the paper's objective, task CE + logit KD
+ feature KD against the *cached* teacher (no teacher forward pass during the search) + a
differentiable penalty on the expected size of the derived student (``rkd.losses.ComplexityPenalty``
over ``rkd.nas.complexity``). Weights learn on the train split through ``rkd.engine.fit``; the
architecture learns on the val split in the objective's ``before_update`` hook (``rkd.nas.architect``),
after ``search.warmup_epochs`` of weight-only training. The genotype is derived with DARTS's top-2
rule and a skip-connection cap (``rkd.nas.derive``) from the final architecture, as in DARTS (``fit``
hands back the best-validation *weights*; the architect puts the latest architecture back).

Outputs in the stage directory: ``genotype.json`` (DARTS format + "meta"), ``genotype.png``,
``alphas.jsonl`` (softmaxed architecture weights at every epoch start and at the end), and the
engine's ``log.jsonl``/checkpoints.

The Pareto sweep (``rkd search --sweep``) runs one independent search per ``search.sweep_weights``
entry (``--sweep-index i`` runs one point, e.g. one SLURM array task), trains each derived student
briefly with stage-1 KD, and writes ``search/sweep/pareto.{json,csv,png}`` plus the chosen point's
``genotype.json``.

    accelerate launch rkd/search.py --config rkd/configs/default.yaml [--sweep [--sweep-index i]] [a.b=c ...]
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

if __package__ in (None, ""):  # launched by path: import rkd.* from this checkout, never rkd/ as top level
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import torch
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Subset

from rkd.artifacts import atomic_write, atomic_write_json, read_json
from rkd.config import RunConfig, SearchConfig, config_hash
from rkd.data import DataBundle, IndexedImages, Split, student_transform
from rkd.engine import Step, build_scheduler, fit
from rkd.fingerprint import input_fingerprints
from rkd.losses import CompositeLoss, ComplexityPenalty, FeatureKD, LogitKD, TaskLoss
from rkd.models.heads import FeatureProjector
from rkd.nas.architect import Architect, cycle_batches
from rkd.nas.complexity import ExpectedCost, NetworkShape, measure_network
from rkd.nas.derive import SKIP, count_ops
from rkd.nas.genotype import Genotype, genotype_to_dict, load_genotype, save_genotype
from rkd.nas.plot import plot_genotype
from rkd.nas.supernet import SuperNet

METHOD = "KDL-DARTS"


# ----------------------------------------------------------------------------- model and loss


class SearchNetwork(nn.Module):
    """Supernet + feature projector: the search-time counterpart of ``DistilledStudent``.

    It passes every supernet output through (``arch_params``/``arch_flops`` included) and adds
    ``projected`` for feature KD, so ``build_kd_loss``'s terms and the complexity term all read it.
    """

    def __init__(self, supernet: SuperNet, teacher_feature_dim: int) -> None:
        super().__init__()
        self.supernet = supernet
        self.projector = FeatureProjector(supernet.feature_dim, teacher_feature_dim)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.supernet(x)
        out["projected"] = self.projector(out["features"])
        return out

    def arch_parameters(self) -> list[nn.Parameter]:
        return self.supernet.arch_parameters()

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def genotype(self, max_skips: Optional[int] = None) -> Genotype:
        return self.supernet.genotype(max_skips)


def student_shape(cfg: RunConfig, bundle: DataBundle) -> NetworkShape:
    """The student the derived cells will be trained in: what the complexity penalty prices."""
    return NetworkShape(in_channels=bundle.channels, num_classes=bundle.num_classes, image_size=cfg.data.image_size,
                        init_channels=cfg.student.init_channels, layers=cfg.student.layers,
                        stem_stride=cfg.student.stem_stride)


def build_search_network(s: SearchConfig, bundle: DataBundle, teacher_feature_dim: int,
                         cost: Optional[ExpectedCost]) -> SearchNetwork:
    supernet = SuperNet(bundle.channels, bundle.num_classes, s.primitives, init_channels=s.init_channels,
                        layers=s.layers, nodes=s.nodes, stem_stride=s.stem_stride,
                        partial_channels=s.partial_channels, edge_normalization=s.edge_normalization, cost=cost)
    return SearchNetwork(supernet, teacher_feature_dim)


def complexity_metrics(kind: str) -> list[str]:
    return ["params", "flops"] if kind == "both" else [kind]


def build_search_loss(s: SearchConfig, cost: ExpectedCost, complexity_weight: float) -> CompositeLoss:
    """Task + logit KD + feature KD (the stage-1 terms) + the complexity penalty, scaled by the uniform cost."""
    penalty = ComplexityPenalty(complexity_metrics(s.complexity), scale=cost.uniform(),
                                budget={"params": s.param_budget, "flops": s.flops_budget})
    return CompositeLoss({
        "task": (s.task, TaskLoss(s.train.label_smoothing)),
        "logit_kd": (s.logit_kd, LogitKD(s.temperature)),
        "feature_kd": (s.feature_kd, FeatureKD(s.feature_loss)),
        "complexity": (complexity_weight, penalty),
    })


# ----------------------------------------------------------------------------- data


def subset_indices(n: int, limit: Optional[int], seed: int) -> torch.Tensor:
    """A seeded, sorted choice of ``limit`` rows of a split (all rows when ``limit`` is None or larger)."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:limit].sort().values


def subset_loader(split: Split, indices: torch.Tensor, batch_size: int, shuffle: bool, seed: int,
                  drop_last: bool = False) -> DataLoader:
    """Like ``rkd.data.make_loader`` on some rows; a batch's ``index`` stays the row in the full split
    (the teacher cache's key)."""
    dataset = Subset(IndexedImages(split), indices.tolist())
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      generator=torch.Generator().manual_seed(int(seed)), num_workers=0)


def weight_lr_schedule(train_cfg, total_steps: int) -> Callable[[int], float]:
    """The weight learning rate at a step, from the engine's own schedule (for the unrolled step)."""
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=train_cfg.lr)
    factor = build_scheduler(dummy, train_cfg, total_steps).lr_lambdas[0]
    return lambda step: train_cfg.lr * factor(step)


# ----------------------------------------------------------------------------- objective


class SearchObjective:
    """The engine objective of the search: the loss on train/val batches, plus the architecture step.

    ``before_update`` (called by ``rkd.engine.fit`` before each weight update) logs the architecture
    at every epoch start and, after the warm-up, lets the architect take one step on a val batch.
    """

    def __init__(self, transform, cache, loss: CompositeLoss, warmup_steps: int, steps_per_epoch: int,
                 unwrap: Callable[[nn.Module], nn.Module], alpha_log: Optional[Path] = None,
                 max_skips: Optional[int] = None) -> None:
        self.transform = transform
        self.cache = cache
        self.loss = loss
        self.warmup_steps = warmup_steps
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.unwrap = unwrap
        self.alpha_log = alpha_log
        self.max_skips = max_skips
        self.architect: Optional[Architect] = None

    def evaluate(self, forward: Callable[[torch.Tensor], dict], batch: dict, split: str) -> tuple:
        x = self.transform(batch["pixels"])
        outputs = forward(x)
        targets = {"label": batch["label"], **self.cache.targets(split, batch["index"])}
        total, parts = self.loss(outputs, targets)
        return total, parts, outputs

    def loss_of(self, forward: Callable[[torch.Tensor], dict], batch: dict, split: str) -> torch.Tensor:
        """The architect's loss function (``forward`` may run the model with substituted weights)."""
        return self.evaluate(forward, batch, split)[0]

    def __call__(self, model: nn.Module, batch: dict, train: bool) -> Step:
        total, parts, outputs = self.evaluate(model, batch, "train" if train else "val")
        terms = dict(parts)
        for key in ("arch_params", "arch_flops"):
            if key in outputs:
                terms[f"expected_{key[5:]}"] = outputs[key].detach()
        if train and self.architect is not None and self.architect.last_val_loss is not None:
            terms["arch_val_loss"] = self.architect.last_val_loss
        return Step(loss=total, logits=outputs["logits"], labels=batch["label"], terms=terms)

    def before_update(self, model: nn.Module, batch: dict, step: int) -> None:
        if step % self.steps_per_epoch == 0:
            self.log_architecture(self.unwrap(model), step, epoch=step // self.steps_per_epoch)
        if self.architect is not None and step >= self.warmup_steps:
            self.architect.step(self.unwrap(model), batch, step)

    def log_architecture(self, model: SearchNetwork, step: int, epoch: Any) -> None:
        if self.alpha_log is None:
            return
        with torch.no_grad():
            w = model.supernet.arch_weights()
            record = {"epoch": epoch, "step": step, "primitives": model.supernet.primitives,
                      "normal": w["normal"].cpu().tolist(), "reduce": w["reduce"].cpu().tolist(),
                      "genotype": genotype_to_dict(model.genotype(self.max_skips))}
            if w["normal_edges"] is not None:
                record["normal_edges"] = w["normal_edges"].cpu().tolist()
                record["reduce_edges"] = w["reduce_edges"].cpu().tolist()
            if model.supernet.cost is not None:
                record.update({f"expected_{k}": float(v) for k, v in model.supernet.expected_cost().items()})
        self.alpha_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.alpha_log, "a") as handle:
            handle.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------- one search


def run_search(cfg: RunConfig, accelerator, bundle: DataBundle, cache, out_dir: Path,
               complexity_weight: Optional[float] = None) -> dict:
    """Search the student's cells; write genotype.json/.png and alphas.jsonl into ``out_dir``; return a summary.

    ``complexity_weight`` overrides ``cfg.search.complexity_weight`` (the sweep's knob).
    """
    s = cfg.search
    weight = s.complexity_weight if complexity_weight is None else float(complexity_weight)
    out_dir = Path(out_dir)
    started = time.time()
    rank, world = accelerator.process_index, accelerator.num_processes
    teacher_dim = cache.features["train"].shape[1]
    shape = student_shape(cfg, bundle)
    cost = ExpectedCost(s.primitives, s.nodes, shape)
    model = build_search_network(s, bundle, teacher_dim, cost)
    loss = build_search_loss(s, cost, weight)

    train_split, val_split = bundle.splits["train"], bundle.splits["val"]
    train_rows = subset_indices(len(train_split), s.max_train, cfg.seed)
    val_rows = subset_indices(len(val_split), s.max_val, cfg.seed + 1)
    train_loader = subset_loader(train_split, train_rows, s.train.batch_size, shuffle=True, seed=cfg.seed,
                                 drop_last=len(train_rows) >= s.train.batch_size)
    val_loader = subset_loader(val_split, val_rows, cfg.eval.batch_size, shuffle=False, seed=cfg.seed)
    # the architecture's own val batches: this process's shard, reshuffled every pass; with the gradient
    # averaged across processes, N shards of B act like one global batch of N*B
    shard = val_rows[rank::world]

    def arch_batches(skip: int):
        loader = subset_loader(val_split, shard, s.train.batch_size, shuffle=True, seed=cfg.seed + 1000 + rank,
                               drop_last=len(shard) >= s.train.batch_size)
        return cycle_batches(loader, accelerator.device, skip)

    steps_per_epoch = math.ceil(len(train_loader) / world)
    total_steps = s.train.epochs * steps_per_epoch
    if s.train.max_steps is not None:
        total_steps = min(total_steps, s.train.max_steps)
    objective = SearchObjective(student_transform(cfg.data, bundle), cache, loss,
                                warmup_steps=s.warmup_epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch,
                                unwrap=accelerator.unwrap_model,
                                alpha_log=out_dir / "alphas.jsonl" if accelerator.is_main_process else None,
                                max_skips=s.max_skips)
    reduce = (lambda g: accelerator.reduce(g, reduction="mean")) if world > 1 else None
    objective.architect = Architect(
        model.arch_parameters(), objective.loss_of, arch_batches,
        lr=s.arch_lr, betas=s.arch_betas, weight_decay=s.arch_weight_decay, order=s.order,
        unrolled_lr=weight_lr_schedule(s.train, total_steps), unrolled_weight_decay=s.train.weight_decay,
        reduce=reduce)
    # checkpoints then carry the architecture optimiser too, so a resumed search continues exactly
    accelerator.register_for_checkpointing(objective.architect)
    try:
        summary = fit(accelerator, model, objective, train_loader, val_loader, s.train, out_dir, desc="search",
                      parameters=model.weight_parameters())
    finally:  # a later stage's checkpoints must not expect this object (Accelerate has no public unregister)
        accelerator._custom_objects[:] = [o for o in accelerator._custom_objects if o is not objective.architect]

    model = accelerator.unwrap_model(model)
    objective.architect.restore_latest()
    uncapped = model.genotype(None)
    genotype = model.genotype(s.max_skips)
    measured = measure_network(genotype, shape)
    with torch.no_grad():
        expected = {k: float(v) for k, v in model.supernet.expected_cost().items()}
    objective.log_architecture(model, summary["steps"], epoch="final")
    meta = {
        "method": METHOD, "complexity": s.complexity, "complexity_weight": weight,
        "param_budget": s.param_budget, "flops_budget": s.flops_budget,
        "expected_params": expected["params"], "expected_flops": expected["flops"],
        "params": measured.params, "flops": measured.flops,
        "supernet_val_accuracy": summary["best_val_accuracy"], "order": s.order,
        "partial_channels": s.partial_channels, "edge_normalization": s.edge_normalization,
        "max_skips": s.max_skips, "skips_before_cap": count_ops(uncapped, SKIP), "skips": count_ops(genotype, SKIP),
        "loss_weights": {"task": s.task, "logit_kd": s.logit_kd, "feature_kd": s.feature_kd},
        "train_rows": int(len(train_rows)), "val_rows": int(len(val_rows)),
        "steps": summary["steps"], "arch_steps": objective.architect.steps,
        "seconds": time.time() - started,
    }
    if accelerator.is_main_process:
        save_genotype(genotype, out_dir / "genotype.json", meta=meta)
        plot_genotype(genotype, out_dir / "genotype.png",
                      title=f"{METHOD}: complexity weight {weight:g}, {measured.params:,} params, "
                            f"{measured.flops:,} FLOPs/image")
    accelerator.wait_for_everyone()
    accelerator.print(f"[search] derived cells: {measured.params:,} params, {measured.flops:,} FLOPs/image; "
                      f"{out_dir / 'genotype.json'}")
    return {**meta, "genotype": genotype_to_dict(genotype), "history": summary["history"]}


# ----------------------------------------------------------------------------- the Pareto sweep


def search_hash(cfg: RunConfig) -> str:
    from rkd.pipeline import stage_hashes

    return stage_hashes(cfg)["search"]


def point_hash(cfg: RunConfig, weight: float) -> str:
    student = input_fingerprints(cfg)["student"]  # a genotype file by content, not path
    return config_hash(search_hash(cfg), float(weight), cfg.search.sweep_train_epochs, student, cfg.loss,
                       cfg.stage1)


def search_point(cfg: RunConfig, weight: float, out_dir: Path, accelerator, bundle: DataBundle, cache) -> dict:
    """One sweep point, independent of the others: search with ``weight``, train the result briefly, record it.

    Writes ``out_dir/point.json`` last; a finished point with the same settings is returned as is,
    an unfinished one resumes from its checkpoints, one with other settings is moved aside.
    """
    from rkd.distill import run_stage1

    out_dir = Path(out_dir)
    expected_hash = point_hash(cfg, weight)
    record_path, started_path = out_dir / "point.json", out_dir / "started.json"
    if record_path.exists() and read_json(record_path).get("hash") == expected_hash:
        return read_json(record_path)
    if accelerator.is_main_process:
        if out_dir.exists() and (not started_path.exists() or read_json(started_path).get("hash") != expected_hash):
            stale = out_dir.with_name(f"{out_dir.name}.stale-{int(time.time())}")
            shutil.move(str(out_dir), str(stale))
        out_dir.mkdir(parents=True, exist_ok=True)
        if not started_path.exists():
            atomic_write_json(started_path, {"hash": expected_hash, "weight": weight, "time": time.time()})
    accelerator.wait_for_everyone()
    # seeded per point, so a point run alone (one array task) equals the same point in a full sweep
    set_seed(cfg.seed)
    searched = run_search(cfg, accelerator, bundle, cache, out_dir / "search", complexity_weight=weight)
    genotype = load_genotype(out_dir / "search" / "genotype.json")
    brief = dataclasses.replace(cfg, stage1=dataclasses.replace(cfg.stage1, epochs=cfg.search.sweep_train_epochs))
    set_seed(cfg.seed + 1)
    trained = run_stage1(brief, accelerator, bundle, cache, out_dir / "stage1", genotype=genotype)
    record = {
        "hash": expected_hash, "complexity_weight": float(weight),
        "params": searched["params"], "flops": searched["flops"],
        "expected_params": searched["expected_params"], "expected_flops": searched["expected_flops"],
        "val_accuracy": trained["best_val_accuracy"], "supernet_val_accuracy": searched["supernet_val_accuracy"],
        "skips": searched["skips"], "search_seconds": searched["seconds"], "train_seconds": trained["seconds"],
        "genotype_path": str(out_dir / "search" / "genotype.json"), "genotype": searched["genotype"],
    }
    if accelerator.is_main_process:
        atomic_write_json(record_path, record)
    accelerator.wait_for_everyone()
    return record


def pareto_front(points: list[dict], metric: str) -> list[int]:
    """Indices of the points no other point beats on both cost (``metric``, lower) and val accuracy (higher)."""
    front = []
    for i, p in enumerate(points):
        dominated = any(q[metric] <= p[metric] and q["val_accuracy"] >= p["val_accuracy"]
                        and (q[metric] < p[metric] or q["val_accuracy"] > p["val_accuracy"])
                        for j, q in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def pick_within_budget(points: list[dict], budget: Optional[float], metric: str) -> Optional[int]:
    """The most accurate point whose ``metric`` fits ``budget`` (the cheaper one on ties); None if none fits."""
    fitting = [i for i, p in enumerate(points) if budget is None or p[metric] <= budget]
    if not fitting:
        return None
    return max(fitting, key=lambda i: (points[i]["val_accuracy"], -points[i][metric]))


def plot_pareto(points: list[dict], chosen: Optional[int], budget: Optional[float], metric: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "params", "student parameters"), (axes[1], "flops", "student FLOPs / image")):
        front = sorted(pareto_front(points, key), key=lambda i: points[i][key])
        ax.scatter([p[key] for p in points], [100 * p["val_accuracy"] for p in points], color="tab:blue", zorder=2)
        ax.plot([points[i][key] for i in front], [100 * points[i]["val_accuracy"] for i in front], color="tab:blue",
                alpha=0.5, label="Pareto front")
        for p in points:
            ax.annotate(f"w={p['complexity_weight']:g}", (p[key], 100 * p["val_accuracy"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
        if chosen is not None:
            ax.scatter([points[chosen][key]], [100 * points[chosen]["val_accuracy"]], s=120, facecolors="none",
                       edgecolors="tab:red", zorder=3, label="chosen")
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


def write_pareto(sweep_dir: Path, points: list[dict], budget: Optional[float], metric: str) -> dict:
    """pareto.json / .csv / .png, and the chosen point's genotype copied to ``sweep_dir/genotype.json``."""
    chosen = pick_within_budget(points, budget, metric)
    result = {"budget": budget, "budget_metric": metric, "chosen": chosen,
              "pareto_front_params": pareto_front(points, "params"), "pareto_front_flops": pareto_front(points, "flops"),
              "points": points}
    atomic_write_json(sweep_dir / "pareto.json", result)
    fields = ["complexity_weight", "params", "flops", "expected_params", "expected_flops", "val_accuracy",
              "supernet_val_accuracy", "search_seconds", "train_seconds", "genotype_path"]

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


def run_sweep(cfg: RunConfig, accelerator, bundle: DataBundle, cache, sweep_dir: Path,
              index: Optional[int] = None) -> Optional[dict]:
    """Run every sweep point (or only point ``index``); write the Pareto outputs once all points are done."""
    s = cfg.search
    weights = list(s.sweep_weights)
    if index is not None and not 0 <= index < len(weights):
        raise ValueError(f"--sweep-index {index} is out of range: search.sweep_weights has {len(weights)} "
                         f"entries {weights}, so the index must be in [0, {len(weights) - 1}]")
    sweep_dir = Path(sweep_dir)
    for i in ([index] if index is not None else range(len(weights))):
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


def main(argv=None) -> int:
    from rkd.cli import main as cli_main

    return cli_main(["search", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
