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
engine's ``log.jsonl``/checkpoints. The Pareto sweep over complexity weights is ``rkd.stages.sweep``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from rkd.config import RunConfig
from rkd.data import DataBundle, student_transform, subset_indices, subset_loader
from rkd.engine import fit
from rkd.losses import loss_weights
from rkd.models.factory import student_shape
from rkd.nas.architect import Architect, cycle_batches
from rkd.nas.complexity import ExpectedCost, NetworkShape, measure_network
from rkd.nas.derive import SKIP, count_ops
from rkd.nas.genotype import Genotype, genotype_to_dict, save_genotype
from rkd.nas.plot import plot_genotype
from rkd.optim import schedule_steps
from rkd.stages.inputs import RunInputs
from rkd.stages.search_objective import (
    SearchNetwork,
    SearchObjective,
    build_search_loss,
    build_search_network,
    weight_lr_schedule,
)
from rkd.stages.selection import select

METHOD = "KDL-DARTS"


def run(cfg: RunConfig, accelerator, inputs: RunInputs, out_dir: Path) -> dict:
    summary = run_search(cfg, accelerator, inputs.bundle, inputs.cache, out_dir)
    summary.pop("history", None)
    return summary


# ----------------------------------------------------------------------------- one search


def search_loaders(cfg: RunConfig, accelerator, bundle: DataBundle) -> tuple:
    """The search's seeded subsets and loaders: weights on train rows, architecture on val rows.

    Returns ``(train_rows, val_rows, train_loader, val_loader, arch_batches)``; ``arch_batches(skip)``
    cycles this process's shard of the val rows, reshuffled every pass.
    """
    s = cfg.search
    rank, world = accelerator.process_index, accelerator.num_processes
    train_split, val_split = bundle.splits["train"], bundle.splits["val"]
    train_rows = subset_indices(len(train_split), s.max_train, cfg.seed)
    val_rows = subset_indices(len(val_split), s.max_val, cfg.seed + 1)
    train_loader = subset_loader(
        train_split,
        train_rows,
        s.train.batch_size,
        shuffle=True,
        seed=cfg.seed,
        drop_last=len(train_rows) >= s.train.batch_size,
    )
    val_loader = subset_loader(val_split, val_rows, cfg.eval.batch_size, shuffle=False, seed=cfg.seed)
    # the architecture's own val batches: this process's shard, reshuffled every pass; with the gradient
    # averaged across processes, N shards of B act like one global batch of N*B
    shard = val_rows[rank::world]

    def arch_batches(skip: int):
        loader = subset_loader(
            val_split,
            shard,
            s.train.batch_size,
            shuffle=True,
            seed=cfg.seed + 1000 + rank,
            drop_last=len(shard) >= s.train.batch_size,
        )
        return cycle_batches(loader, accelerator.device, skip)

    return train_rows, val_rows, train_loader, val_loader, arch_batches


def choose_cells(cfg: RunConfig, accelerator, bundle: DataBundle, cache, model, shape, out_dir: Path) -> tuple:
    """The derived cells, or the candidate selection's winner among them and cells drawn from the weights.

    Returns ``(genotype, selection record or None)``.
    """
    s = cfg.search
    derived = model.genotype(s.max_skips)
    if s.candidates <= 1:
        return derived, None
    chosen, selection = select(cfg, accelerator, bundle, cache, model.supernet, derived, shape, out_dir / "candidates")
    selection = {k: v for k, v in selection.items() if k != "records"} | {"derived_genotype": genotype_to_dict(derived)}
    return chosen, selection


def search_objective(
    cfg: RunConfig,
    accelerator,
    bundle: DataBundle,
    cache,
    model: SearchNetwork,
    loss,
    train_batches: int,
    arch_batches,
    out_dir: Path,
) -> SearchObjective:
    """The weights' objective with its architect: warm-up, architecture log and the unrolled step's schedule."""
    s = cfg.search
    world = accelerator.num_processes
    steps_per_epoch = math.ceil(train_batches / world)
    total_steps = schedule_steps(s.train, steps_per_epoch)
    objective = SearchObjective(
        student_transform(cfg.data, bundle),
        cache,
        loss,
        warmup_steps=s.warmup_epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        unwrap=accelerator.unwrap_model,
        alpha_log=out_dir / "alphas.jsonl" if accelerator.is_main_process else None,
        max_skips=s.max_skips,
    )
    reduce = (lambda g: accelerator.reduce(g, reduction="mean")) if world > 1 else None
    objective.architect = Architect(
        model.arch_parameters(),
        objective.loss_of,
        arch_batches,
        lr=s.arch_lr,
        betas=s.arch_betas,
        weight_decay=s.arch_weight_decay,
        order=s.order,
        unrolled_lr=weight_lr_schedule(s.train, total_steps),
        unrolled_weight_decay=s.train.weight_decay,
        reduce=reduce,
    )
    return objective


def run_search(
    cfg: RunConfig, accelerator, bundle: DataBundle, cache, out_dir: Path, complexity_weight: float | None = None
) -> dict:
    """Search the student's cells; write genotype.json/.png and alphas.jsonl into ``out_dir``; return a summary.

    ``complexity_weight`` overrides ``cfg.search.complexity_weight`` (the sweep's knob).
    """
    s = cfg.search
    weight = s.complexity_weight if complexity_weight is None else float(complexity_weight)
    out_dir = Path(out_dir)
    started = time.time()
    teacher_dim = cache.features["train"].shape[1]
    shape = student_shape(cfg, bundle)
    cost = ExpectedCost(s.primitives, s.nodes, shape)
    model = build_search_network(s, bundle, teacher_dim, cost)
    loss = build_search_loss(s, cost, weight)

    train_rows, val_rows, train_loader, val_loader, arch_batches = search_loaders(cfg, accelerator, bundle)
    objective = search_objective(cfg, accelerator, bundle, cache, model, loss, len(train_loader), arch_batches, out_dir)
    # checkpoints carry the architecture optimiser too, so a resumed search continues exactly
    summary = fit(
        accelerator,
        model,
        objective,
        train_loader,
        val_loader,
        s.train,
        out_dir,
        desc="search",
        parameters=model.weight_parameters(),
        checkpoint_objects=[objective.architect],
    )

    model = accelerator.unwrap_model(model)
    assert objective.architect is not None  # search_objective attached it
    objective.architect.restore_latest()
    chosen, selection = choose_cells(cfg, accelerator, bundle, cache, model, shape, out_dir)
    return record(
        cfg,
        accelerator,
        model,
        objective,
        summary,
        shape,
        weight,
        {"train_rows": int(len(train_rows)), "val_rows": int(len(val_rows))},
        chosen,
        selection,
        out_dir,
        started,
    )


def record(
    cfg: RunConfig,
    accelerator,
    model: SearchNetwork,
    objective: SearchObjective,
    summary: dict,
    shape: NetworkShape,
    weight: float,
    rows: dict,
    genotype: Genotype,
    selection: dict | None,
    out_dir: Path,
    started: float,
) -> dict:
    """The searched cells measured, recorded in genotype.json/.png, summarised."""
    s = cfg.search
    uncapped = model.genotype(None)
    measured = measure_network(genotype, shape)
    with torch.no_grad():
        expected = {k: float(v) for k, v in model.supernet.expected_cost().items()}
    objective.log_architecture(model, summary["steps"], epoch="final")
    meta = {
        "method": METHOD,
        "complexity": s.complexity,
        "complexity_weight": weight,
        "param_budget": s.param_budget,
        "flops_budget": s.flops_budget,
        "expected_params": expected["params"],
        "expected_flops": expected["flops"],
        "params": measured.params,
        "flops": measured.flops,
        "supernet_val_accuracy": summary["best_val_accuracy"],
        "order": s.order,
        "partial_channels": s.partial_channels,
        "edge_normalization": s.edge_normalization,
        "max_skips": s.max_skips,
        "skips_before_cap": count_ops(uncapped, SKIP),
        "skips": count_ops(genotype, SKIP),
        "loss_weights": loss_weights(s.loss),
        **rows,
        "steps": summary["steps"],
        "arch_steps": objective.architect.steps if objective.architect is not None else 0,
        "selection": selection,
        "seconds": time.time() - started,
    }
    if accelerator.is_main_process:
        save_genotype(genotype, out_dir / "genotype.json", meta=meta)
        plot_genotype(
            genotype,
            out_dir / "genotype.png",
            title=f"{METHOD}: complexity weight {weight:g}, {measured.params:,} params, {measured.flops:,} FLOPs/image",
        )
    accelerator.wait_for_everyone()
    accelerator.print(
        f"[search] searched cells: {measured.params:,} params, {measured.flops:,} FLOPs/image; "
        f"{out_dir / 'genotype.json'}"
    )
    kept = {"history": summary["history"], "throughput": summary.get("throughput", {})}
    return {**meta, "genotype": genotype_to_dict(genotype), **kept}
