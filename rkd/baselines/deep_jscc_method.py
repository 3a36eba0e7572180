"""Deep JSCC and ADJSCC as methods: trained end to end by the engine with RKD-SC's stage-2 channel draws, then swept.

``deep-jscc-budget`` is Deep JSCC trained on as many images as RKD-SC's whole pipeline saw.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from rkd.baselines import budget
from rkd.baselines.context import Context, link_sizes, receiver_probe, trained_labels
from rkd.baselines.deep_jscc import DeepJSCCClassifier
from rkd.baselines.link import NoTeacher
from rkd.data import make_loader
from rkd.draws import training_channel_specs
from rkd.engine import fit
from rkd.losses import build_kd_loss
from rkd.measure import count_params
from rkd.models.factory import save_model
from rkd.stages.objective import DistillObjective


def train_deep_jscc(ctx: Context, out_dir: Path, adaptive: bool, train_cfg=None):
    cfg, b, acc = ctx.cfg, ctx.cfg.baselines, ctx.accelerator
    tcfg = train_cfg or b.jscc_train
    model = DeepJSCCClassifier(
        ctx.bundle.channels,
        ctx.bundle.num_classes,
        training_channel_specs(cfg.channel),
        cfg.codec.max_symbols,
        width=b.jscc_channels,
        decoder_width=b.jscc_decoder_channels,
        hidden=b.jscc_hidden,
        adaptive=adaptive,
    )
    loss = build_kd_loss(task=1.0, logit_kd=0.0, feature_kd=0.0, label_smoothing=tcfg.label_smoothing)
    objective = DistillObjective(
        ctx.transform,
        NoTeacher(),
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
    summary = fit(
        acc, model, objective, train_loader, val_loader, tcfg, out_dir, desc="adjscc" if adaptive else "deep-jscc"
    )
    model = acc.unwrap_model(model).eval()
    if acc.is_main_process:
        save_model(model, out_dir / "model.safetensors")
    return model, summary


def deep_jscc_results(ctx: Context, out_dir: Path, method: str, adaptive: bool, budget_matched: bool = False) -> dict:
    """Deep JSCC / ADJSCC; ``budget_matched``: Deep JSCC trained on RKD-SC's total images seen (deep-jscc-budget)."""
    b, world = ctx.cfg.baselines, ctx.accelerator.num_processes
    tcfg = b.jscc_train
    if budget_matched:
        rkd = budget.rkd_budget(ctx.cfg, ctx.cfg.run_dir, ctx.n_train)
        if "stage2" not in rkd["parts"]:
            raise RuntimeError(
                f"deep-jscc-budget needs RKD-SC's finished stage 2 in {ctx.cfg.run_dir / 'stage2'} "
                f"(its budget is matched); run it with rkd-sc (e.g. without --only)"
            )
        schedule = budget.matched_schedule(rkd["images_seen"], tcfg.batch_size, world, ctx.n_train)
        tcfg = dataclasses.replace(tcfg, **schedule)
    model, train_summary = train_deep_jscc(ctx, out_dir, adaptive, tcfg)
    if not ctx.accelerator.is_main_process:
        return {}
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
    return {
        "summary": {
            "method": method,
            "adaptive": adaptive,
            "max_symbols": ctx.cfg.codec.max_symbols,
            "rates": ctx.rates,
            **sizes,
            "best_val_accuracy": train_summary["best_val_accuracy"],
            "train_seconds": train_summary["seconds"],
            "kind": "scheme",
            "trained_on": trained_labels(ctx.cfg.channel),
            "train_schedule": {"epochs": tcfg.epochs, "max_steps": tcfg.max_steps},
            "budget": budget.total(
                {method: budget.fit_cost(train_summary, tcfg.batch_size, world, ctx.n_train)}, ctx.n_train
            ),
        },
        "records": records,
    }


def deep_jscc_settings(ctx: Context, hashes: dict, budget_matched: bool = False) -> tuple:
    """What a Deep JSCC result depends on beyond the sweep (its hash inputs, in their recorded order)."""
    cfg, b = ctx.cfg, ctx.cfg.baselines
    return (
        hashes["cache"],
        cfg.codec.max_symbols,
        cfg.codec.rates,
        cfg.channel,
        {k: getattr(b, k) for k in ("jscc_channels", "jscc_decoder_channels", "jscc_hidden")},
        b.jscc_train,
        hashes["stage2"] if budget_matched else None,
    )
