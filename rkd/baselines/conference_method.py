"""The conference design as a method: a feature-MSE student (a config variant of stage 1), then its autoencoder.

The student runs as its own pipeline variant (``rkd.baselines.variants``) sharing the main run's
teacher and cache; the autoencoder is trained on its frozen projected features with the SNR schedule.
It always sends all its ``L`` symbols: its records are at its own ``k = L`` (nominal SNR) and, for the
comparison at a smaller ``k``, at equal energy per image (``equal_energy_records``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from rkd.baselines import budget
from rkd.baselines.conference import ConferenceAutoencoder, SNRScheduleObjective
from rkd.baselines.context import Context, link_sizes, receiver_probe, student_params
from rkd.baselines.variants import conference_stage1, conference_student_overrides, derive_config, run_variant
from rkd.channels import channel_label
from rkd.config import LossConfig
from rkd.data import make_loader
from rkd.draws import training_channel_specs
from rkd.engine import fit
from rkd.losses import build_kd_loss
from rkd.measure import count_params
from rkd.models.factory import load_stage1, save_model
from rkd.models.frozen_tokens import batched
from rkd.run.fingerprint import input_fingerprints


def train_conference(ctx: Context, out_dir: Path, features: dict, specs: list):
    """The autoencoder on the student's frozen features; returns the unwrapped model and the fit summary."""
    cfg, b, acc = ctx.cfg, ctx.cfg.baselines, ctx.accelerator
    model = ConferenceAutoencoder(
        ctx.teacher_dim,
        ctx.bundle.num_classes,
        specs,
        tokens=b.conference_tokens,
        d_model=b.conference_d_model,
        depth=b.conference_depth,
    )
    train_loader = make_loader(
        ctx.bundle.splits["train"], b.conference_train.batch_size, shuffle=True, seed=cfg.seed + 2, drop_last=True
    )
    val_loader = make_loader(ctx.bundle.splits["val"], cfg.eval.batch_size, shuffle=False, seed=cfg.seed)
    loss = build_kd_loss(LossConfig(task=1.0, logit_kd=0.0, feature_kd=1.0, feature_loss="mse"))
    objective = SNRScheduleObjective(
        features,
        ctx.cache,
        loss,
        b.conference_snrs,
        max(1, len(train_loader) // acc.num_processes),
        cfg.channel.snr_min,
        cfg.channel.snr_max,
        seed=cfg.seed,
        n_channels=len(specs),
    )
    train_summary = fit(acc, model, objective, train_loader, val_loader, b.conference_train, out_dir, desc="conference")
    return acc.unwrap_model(model).eval(), train_summary


def equal_energy_records(ctx: Context, model, inputs: torch.Tensor, method: str) -> list:
    """The design at equal energy per image: at each compared ``k`` below its ``L`` symbols, all ``L`` sent at
    ``SNR - 10 log10(L / k)``, recorded at the nominal SNR with ``channel_uses = k`` (so it pairs with the
    other methods' ``k``), ``symbols_sent = L`` and the SNR the channel applied (``channel_snr_db``)."""
    symbols, records = model.max_symbols, []
    for k in sorted(r for r in ctx.rates if r < symbols):
        shift = 10.0 * math.log10(symbols / k)
        for r in ctx.sweep(model, inputs, [symbols], method, snrs=[s - shift for s in ctx.grid]):
            nominal = round(r["snr_db"] + shift, 6)
            records.append(
                {**r, "snr_db": nominal, "channel_uses": k, "symbols_sent": symbols, "channel_snr_db": r["snr_db"]}
            )
    return records


def conference_student_name(cfg) -> str:
    """Its variant's directory: one per stage-1 learning rate, so a tuning grid's cells never share one."""
    return f"conference-student-lr{cfg.baselines.conference_stage1.lr:g}"


def conference_results(ctx: Context, out_dir: Path, method: str, awgn_only: bool = False) -> dict:
    cfg, b, acc = ctx.cfg, ctx.cfg.baselines, ctx.accelerator
    student_cfg = derive_config(cfg, conference_student_overrides(cfg), conference_student_name(cfg))
    run_variant(cfg, student_cfg, acc, ctx.run_stages, until="stage1")
    stage1 = load_stage1(student_cfg, ctx.bundle, ctx.teacher_dim, student_cfg.run_dir / "stage1").eval()
    for p in stage1.parameters():
        p.requires_grad_(False)
    features = {
        split: batched(lambda t: stage1(t)["projected"], ctx.inputs(split), cfg.eval.batch_size)
        for split in ("train", "val", "test")
    }
    specs = [{"name": "awgn"}] if awgn_only else training_channel_specs(cfg.channel)
    model, train_summary = train_conference(ctx, out_dir, features, specs)
    if not acc.is_main_process:
        return {}
    save_model(model, out_dir / "model.safetensors")
    records = [
        {**r, "symbols_sent": model.max_symbols}
        for r in ctx.sweep(model, features["test"], [model.max_symbols], method)
    ]
    records += equal_energy_records(ctx, model, features["test"], method)
    one = ctx.inputs("test")[:1]
    z = model.transmit(features["test"][:1], torch.zeros(1)).detach()
    tx_params = (
        student_params(stage1.student) + count_params(stage1.projector) + count_params(*model.transmitter_modules())
    )
    sizes = link_sizes(
        tx_params,
        count_params(*model.receiver_modules()),
        lambda: model.transmit(stage1(one)["projected"], torch.zeros(1)),
        receiver_probe(model, z),
    )
    return {
        "summary": {
            "method": method,
            "max_symbols": model.max_symbols,
            "rates": [model.max_symbols],
            "energy_matched_rates": [k for k in ctx.rates if k < model.max_symbols],
            "feature_dim": ctx.teacher_dim,
            "train_snrs": list(b.conference_snrs),
            "kind": "scheme",
            "trained_on": sorted({channel_label(s) for s in specs}),
            "budget": budget.total(
                {
                    **ctx.upstream_budget(("teacher", "cache")),
                    **budget.pipeline_costs(student_cfg, student_cfg.run_dir, ("stage1",), ctx.n_train),
                    method: budget.fit_cost(
                        train_summary, b.conference_train.batch_size, acc.num_processes, ctx.n_train
                    ),
                },
                ctx.n_train,
            ),
            **sizes,
            "best_val_accuracy": train_summary["best_val_accuracy"],
            "student_run": str(student_cfg.run_dir),
        },
        "records": records,
    }


def conference_settings(ctx: Context, hashes: dict, awgn_only: bool = False) -> tuple:
    """What a conference result depends on beyond the sweep (its hash inputs, in their recorded order)."""
    cfg, b = ctx.cfg, ctx.cfg.baselines
    student = input_fingerprints(cfg)["student"]  # a genotype file by content, not path
    return (
        hashes["cache"],
        student,
        cfg.channel.snr_min,
        cfg.channel.snr_max,
        b.conference_snrs,
        conference_stage1(cfg),
        b.conference_train,
        b.conference_tokens,
        b.conference_d_model,
        b.conference_depth,
        "awgn" if awgn_only else cfg.channel,
        "own k and equal energy per image",  # what its records hold
        hashes["search"] if cfg.search.enabled else None,  # the searched cells its student trains
    )
