"""The controls a reviewer asks of RKD-SC: its own student and codec without a teacher, and random cells of its size.

Each control is a config variant of the main run (``rkd.baselines.variants``) living in
``<run>/controls/<name>``, sharing the main run's teacher and cache, trained by the same pipeline
and swept as RKD-SC is:

* ``no-teacher``: the main run's searched cells (not searched again) and the same CAT, task loss only
  in both stages, stage 1 lengthened so the student sees as many training images as RKD-SC's seed
  did in its search and stage 1 (stage 2 is the same length in both): the teacher's worth at
  RKD-SC's training budget;
* ``no-teacher-converged``: the same without a budget: each stage's cosine schedule is stretched to
  ``CONVERGENCE_FACTOR`` times its epochs, and the stage stops once as many epochs as its default
  schedule has pass without a better val accuracy (a patience of a few epochs would fire early in the
  stretched schedule, where the rate is still high and the val accuracy noisy, long before convergence);
* ``random-cells``: random cells (``rkd.nas.random_cells``) of the searched cells' size in RKD-SC's
  own recipe (KD on, same schedule): the search's gain at full training.

``baselines.control_lr_scale`` multiplies the no-teacher controls' stage-1 and stage-2 learning
rates (a benchmark tunes it as it tunes every method's learning rate).
"""

from __future__ import annotations

from pathlib import Path

from rkd.baselines import budget
from rkd.baselines.context import Context
from rkd.baselines.rkd_sc import rkd_system_results
from rkd.baselines.variants import derive_config, no_teacher, run_variant, searched_cells
from rkd.config import RunConfig
from rkd.models.factory import student_shape
from rkd.nas.complexity import network_params
from rkd.nas.genotype import load_genotype, save_genotype
from rkd.nas.random_cells import random_genotype
from rkd.run.artifacts import read_json
from rkd.run.hashing import stage_hashes

CONTROLS = ("no-teacher", "no-teacher-converged", "random-cells")
CONVERGENCE_FACTOR = 4  # a cap well past the default schedule


def _scaled_lrs(cfg: RunConfig) -> list:
    scale = cfg.baselines.control_lr_scale
    return [f"stage1.lr={cfg.stage1.lr * scale!r}", f"stage2.lr={cfg.stage2.lr * scale!r}"]


def budget_overrides(ctx: Context) -> list:
    """Stage 1 capped at the images RKD-SC's seed saw in its search and stage 1 (stage 2 is the same in both)."""
    cfg = ctx.cfg
    seen = budget.rkd_budget(cfg, cfg.run_dir, ctx.n_train, ("search", "stage1"))
    if "stage1" not in seen["parts"]:
        raise RuntimeError(f"no-teacher needs RKD-SC's finished stage 1 in {cfg.run_dir / 'stage1'}; run rkd-sc first")
    schedule = budget.matched_schedule(seen["images_seen"], cfg.stage1.batch_size, 1, ctx.n_train)
    return [f"stage1.epochs={schedule['epochs']}", f"stage1.max_steps={schedule['max_steps']}"]


def convergence_overrides(cfg: RunConfig) -> list:
    """Each stage up to ``CONVERGENCE_FACTOR`` times its epochs, stopped by a whole default schedule without progress."""
    overrides = []
    for stage in ("stage1", "stage2"):
        epochs = getattr(cfg, stage).epochs
        overrides += [f"{stage}.epochs={epochs * CONVERGENCE_FACTOR}", f"{stage}.early_stop_patience={epochs}"]
    return overrides


def random_cells_file(ctx: Context) -> Path:
    """Random cells of the main run's student's size (seeded by the run's seed), written once beside the controls."""
    cfg = ctx.cfg
    path = cfg.run_dir / "controls" / "random-cells.genotype.json"
    searched = cfg.run_dir / "search" / "genotype.json" if cfg.search.enabled else None
    target = load_genotype(searched if searched is not None else cfg.student.genotype)
    shape = student_shape(cfg, ctx.bundle)
    size = network_params(target, shape)
    if not path.exists() or read_json(path).get("meta", {}).get("target_params") != size:
        genotype = random_genotype(cfg.search.primitives, cfg.search.nodes, size, shape, seed=cfg.seed)
        meta = {"method": "random", "target_params": size, "params": network_params(genotype, shape), "seed": cfg.seed}
        if ctx.accelerator.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_genotype(genotype, path, meta=meta)
        ctx.accelerator.wait_for_everyone()
    return path


def control_dir_name(cfg: RunConfig, name: str) -> str:
    """A control's variant directory under ``controls/``: one per learning-rate multiplier (a tuning grid's cells)."""
    scale = cfg.baselines.control_lr_scale
    return name if scale == 1 or name == "random-cells" else f"{name}-lr{scale:g}"


def control_config(ctx: Context, name: str) -> RunConfig:
    """The variant config of control ``name``."""
    cfg = ctx.cfg
    if name == "random-cells":
        overrides = ["search.enabled=false", f"student.genotype={random_cells_file(ctx)}"]
    elif name == "no-teacher":
        overrides = searched_cells(cfg) + no_teacher(cfg) + _scaled_lrs(cfg) + budget_overrides(ctx)
    elif name == "no-teacher-converged":
        overrides = searched_cells(cfg) + no_teacher(cfg) + _scaled_lrs(cfg) + convergence_overrides(cfg)
    else:
        raise ValueError(f"unknown control {name!r}; known: {CONTROLS}")
    return derive_config(cfg, overrides, control_dir_name(cfg, name), parent="controls")


def control_results(ctx: Context, out_dir: Path, method: str, name: str) -> dict:
    """Control ``name`` trained through stage 2 (sharing the main run's teacher and cache), then swept as RKD-SC."""
    variant = control_config(ctx, name)
    run_variant(ctx.cfg, variant, ctx.accelerator, ctx.run_stages, until="stage2")
    if not ctx.accelerator.is_main_process:
        return {}
    results = rkd_system_results(ctx, variant, method)
    stages = {s: read_json(variant.run_dir / s / "stage.json")["summary"] for s in ("stage1", "stage2")}
    summary = results["summary"]
    summary.update(
        best_val_accuracy=stages["stage2"]["best_val_accuracy"],
        trained_epochs={s: v.get("epochs") for s, v in stages.items()},
        stopped_early={s: v.get("stopped_early") for s, v in stages.items()},
        variant_run=str(variant.run_dir),
    )
    if name != "random-cells":  # learned without the teacher: its training is not part of their budget
        summary["budget"] = budget.rkd_budget(variant, variant.run_dir, ctx.n_train, ("stage1", "stage2"))
    return results


def control_settings(ctx: Context, hashes: dict, name: str) -> tuple:
    """What a control's result depends on: its variant's stage-2 hash (cells, losses, schedule, lrs)."""
    return (name, stage_hashes(control_config(ctx, name))["stage2"])
