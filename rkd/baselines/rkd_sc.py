"""RKD-SC itself and its ablations, swept on the comparison grid: a finished stage 2 loaded and measured."""

from __future__ import annotations

import torch

from rkd.baselines import budget
from rkd.baselines.context import Context, link_sizes, receiver_probe, student_params, trained_labels
from rkd.config import RunConfig
from rkd.measure import count_params
from rkd.models.factory import load_stage2
from rkd.models.frozen_tokens import batched


def rkd_system_results(ctx: Context, cfg: RunConfig, method: str) -> dict:
    """The stage-2 system of ``cfg`` (the main run's or an ablation's) swept and sized under ``method``."""
    system = load_stage2(cfg, ctx.bundle, ctx.teacher_dim, cfg.run_dir / "stage1", cfg.run_dir / "stage2").eval()
    x = ctx.inputs("test")
    tokens = batched(lambda t: system.student(t)["tokens"], x, cfg.eval.batch_size)
    records = ctx.sweep(system, tokens, ctx.rates, method)
    one = x[:1]
    z = system.transmit(system.student(one)["tokens"], torch.zeros(1)).detach()
    sizes = link_sizes(
        student_params(system.student) + count_params(system.encoder),
        count_params(system.decoder) + count_params(system.student.classifier),
        lambda: system.transmit(system.student(one)["tokens"], torch.zeros(1)),
        receiver_probe(system, z),
    )
    return {
        "summary": {
            "method": method,
            "max_symbols": cfg.codec.max_symbols,
            "rates": ctx.rates,
            **sizes,
            "input_values": int(one.numel()),
            "train_rates": cfg.codec.train_rates or cfg.codec.rates,
            "use_state": cfg.codec.use_state,
            "kind": "scheme",
            "trained_on": trained_labels(cfg.channel),
            "budget": budget.rkd_budget(cfg, cfg.run_dir, ctx.n_train),
        },
        "records": records,
    }
