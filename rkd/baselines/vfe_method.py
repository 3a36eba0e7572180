"""VFE as a method: the information-bottleneck link (``rkd.baselines.vfe``) trained and swept like Deep JSCC."""

from __future__ import annotations

from pathlib import Path

from rkd.baselines.context import Context
from rkd.baselines.link import image_link
from rkd.baselines.trained_link import budget_rule, link_results, scheduled, train_link
from rkd.baselines.vfe import BottleneckKL, VFEClassifier, active_dims
from rkd.config import LossConfig
from rkd.losses import build_kd_loss


def vfe_results(ctx: Context, out_dir: Path, method: str) -> dict:
    cfg, b = ctx.cfg, ctx.cfg.baselines
    rule = budget_rule(ctx, None)
    tcfg = scheduled(ctx, b.vfe_train, rule)
    model = VFEClassifier(image_link(cfg, ctx.bundle), width=b.jscc_channels, hidden=b.jscc_hidden)
    loss = build_kd_loss(
        LossConfig(task=1.0, logit_kd=0.0, feature_kd=0.0),
        tcfg.label_smoothing,
        extra={"bottleneck_kl": (b.vfe_beta, BottleneckKL())},
    )
    model, fit_summary = train_link(ctx, out_dir, model, loss, tcfg, "vfe")
    if not ctx.accelerator.is_main_process:
        return {}
    results = link_results(ctx, model, fit_summary, tcfg, method, rule)
    mid_snr = (cfg.channel.snr_min + cfg.channel.snr_max) / 2
    results["summary"]["beta"] = b.vfe_beta
    results["summary"]["active_dims"] = {
        "snr_db": mid_snr,
        "per_k": active_dims(model, ctx.inputs("val"), mid_snr, ctx.rates, cfg.eval.batch_size),
    }
    return results


def vfe_settings(ctx: Context, hashes: dict) -> tuple:
    """What a VFE result depends on beyond the sweep."""
    cfg, b = ctx.cfg, ctx.cfg.baselines
    rule = budget_rule(ctx, None)
    return (
        hashes["cache"],
        cfg.codec.max_symbols,
        cfg.codec.rates,
        cfg.channel,
        b.jscc_channels,
        b.jscc_hidden,
        b.vfe_beta,
        b.vfe_train,
        rule,
        hashes["stage2"] if rule != "own" else None,
    )
