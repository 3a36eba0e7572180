"""What the end-to-end trained baselines share: their budget rule, one training call, one sweep and summary.

Deep JSCC, ADJSCC and VFE train a whole link (image to decision) with RKD-SC's stage-2 draws of
SNR, channel and ``k``, through ``rkd.engine.fit``. How many images each sees is a rule, not a
hand-picked epoch count:

* ``own``: the method's own ``TrainConfig`` (epochs as configured);
* ``per-seed``: as many training images as RKD-SC's seed saw in what it trains per seed (search,
  stage 1, stage 2; ``rkd.baselines.budget.SEED_PARTS``): the benchmark's rule for every trained
  baseline (``baselines.match_budget``);
* ``whole``: RKD-SC's whole pipeline, the teacher and its cache included (deep-jscc-budget, deep-jscc-kd).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from rkd.baselines import budget
from rkd.baselines.context import Context, link_sizes, receiver_probe, trained_labels
from rkd.baselines.link import NoTeacher
from rkd.config import TrainConfig
from rkd.data import make_loader
from rkd.engine import fit
from rkd.measure import count_params
from rkd.models.factory import save_model
from rkd.stages.objective import DistillObjective

BUDGET_RULES = ("own", "per-seed", "whole")


def budget_rule(ctx: Context, rule: str | None) -> str:
    """A method's rule: ``rule`` when it has one of its own, else per-seed under ``baselines.match_budget``."""
    if rule is not None:
        return rule
    return "per-seed" if ctx.cfg.baselines.match_budget else "own"


def scheduled(ctx: Context, tcfg: TrainConfig, rule: str) -> TrainConfig:
    """``tcfg`` with the epochs and step cap that ``rule`` gives (``own``: unchanged)."""
    if rule not in BUDGET_RULES:
        raise ValueError(f"budget rule {rule!r} is invalid: expected one of {BUDGET_RULES}")
    if rule == "own":
        return tcfg
    parts = budget.PIPELINE_PARTS if rule == "whole" else budget.SEED_PARTS
    rkd = budget.rkd_budget(ctx.cfg, ctx.cfg.run_dir, ctx.n_train, parts)
    if "stage2" not in rkd["parts"]:
        raise RuntimeError(
            f"the {rule} budget rule needs RKD-SC's finished stage 2 in {ctx.cfg.run_dir / 'stage2'} "
            f"(its budget is matched); run rkd-sc first (e.g. without --only)"
        )
    images = rkd["images_seen"]
    schedule = budget.matched_schedule(images, tcfg.batch_size, ctx.accelerator.num_processes, ctx.n_train)
    return dataclasses.replace(tcfg, **schedule)


def train_link(ctx: Context, out_dir: Path, model, loss, tcfg: TrainConfig, desc: str, teacher=None) -> tuple:
    """``model`` trained by the engine with RKD-SC's stage-2 draws; ``teacher``: the cache, for KD terms."""
    cfg, acc = ctx.cfg, ctx.accelerator
    objective = DistillObjective(
        ctx.transform,
        teacher if teacher is not None else NoTeacher(),
        loss,
        channel_cfg=cfg.channel,
        rates=cfg.codec.rates,
        rank=acc.process_index,
        world_size=acc.num_processes,
        seed=cfg.seed,
        proportional_rates=cfg.codec.rate_sampling == "proportional",
    )  # as RKD-SC's stage 2
    train_loader = make_loader(
        ctx.bundle.splits["train"], tcfg.batch_size, shuffle=True, seed=cfg.seed + 1, drop_last=True
    )
    val_loader = make_loader(ctx.bundle.splits["val"], cfg.eval.batch_size, shuffle=False, seed=cfg.seed)
    summary = fit(acc, model, objective, train_loader, val_loader, tcfg, out_dir, desc=desc)
    model = acc.unwrap_model(model).eval()
    if acc.is_main_process:
        save_model(model, out_dir / "model.safetensors")
    return model, summary


def link_results(
    ctx: Context, model, fit_summary: dict, tcfg: TrainConfig, method: str, rule: str, upstream: tuple = ()
) -> dict:
    """The trained link swept on the comparison grid, sized, and summarised with its schedule and budget.

    ``upstream``: the main run's stages it learned from as well (the teacher and its cache for KD).
    """
    x = ctx.inputs("test")
    records = ctx.sweep(model, x, ctx.rates, method)
    one = x[:1]
    z = model.transmit(one, torch.zeros(1)).detach()
    sizes = link_sizes(
        count_params(*model.transmitter_modules()),
        count_params(*model.receiver_modules()),
        lambda: model.transmit(one, torch.zeros(1)),
        receiver_probe(model, z),
    )
    world = ctx.accelerator.num_processes
    return {
        "summary": {
            "method": method,
            "max_symbols": ctx.cfg.codec.max_symbols,
            "rates": ctx.rates,
            **sizes,
            "best_val_accuracy": fit_summary["best_val_accuracy"],
            "train_seconds": fit_summary["seconds"],
            "kind": "scheme",
            "trained_on": trained_labels(ctx.cfg.channel),
            "budget_rule": rule,
            "train_schedule": {"epochs": tcfg.epochs, "max_steps": tcfg.max_steps, "lr": tcfg.lr},
            "budget": budget.total(
                {
                    **(ctx.upstream_budget(upstream) if upstream else {}),
                    method: budget.fit_cost(fit_summary, tcfg.batch_size, world, ctx.n_train),
                },
                ctx.n_train,
            ),
        },
        "records": records,
    }
