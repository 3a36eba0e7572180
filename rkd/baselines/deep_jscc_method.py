"""Deep JSCC and ADJSCC as methods: trained end to end by the engine with RKD-SC's stage-2 channel draws, then swept.

``deep-jscc-budget`` is Deep JSCC trained on as many images as RKD-SC's whole pipeline saw;
``deep-jscc-kd`` the same with RKD-SC's stage-1 loss (task + logit KD + feature KD from the teacher
cache; a training-only projector maps its receiver's feature into the teacher's space), so the pair
shows what the teacher is worth to an end-to-end link. Budget rules: ``rkd.baselines.trained_link``.
"""

from __future__ import annotations

from pathlib import Path

from rkd.baselines.context import Context
from rkd.baselines.deep_jscc import DeepJSCCClassifier
from rkd.baselines.link import image_link
from rkd.baselines.trained_link import budget_rule, link_results, scheduled, train_link
from rkd.config import LossConfig
from rkd.losses import build_kd_loss


def deep_jscc_model(ctx: Context, adaptive: bool, kd: bool) -> DeepJSCCClassifier:
    b = ctx.cfg.baselines
    return DeepJSCCClassifier(
        image_link(ctx.cfg, ctx.bundle),
        width=b.jscc_channels,
        decoder_width=b.jscc_decoder_channels,
        hidden=b.jscc_hidden,
        adaptive=adaptive,
        teacher_dim=ctx.teacher_dim if kd else None,
    )


def deep_jscc_results(
    ctx: Context, out_dir: Path, method: str, adaptive: bool, rule: str | None = None, kd: bool = False
) -> dict:
    """Deep JSCC / ADJSCC under its budget rule (``None``: per-seed with ``baselines.match_budget``, else own)."""
    rule = budget_rule(ctx, rule)
    tcfg = scheduled(ctx, ctx.cfg.baselines.jscc_train, rule)
    if kd:
        loss = build_kd_loss(ctx.cfg.loss, tcfg.label_smoothing)
    else:
        loss = build_kd_loss(LossConfig(task=1.0, logit_kd=0.0, feature_kd=0.0), tcfg.label_smoothing)
    desc = "adjscc" if adaptive else ("deep-jscc-kd" if kd else "deep-jscc")
    model, fit_summary = train_link(
        ctx, out_dir, deep_jscc_model(ctx, adaptive, kd), loss, tcfg, desc, teacher=ctx.cache if kd else None
    )
    if not ctx.accelerator.is_main_process:
        return {}
    results = link_results(ctx, model, fit_summary, tcfg, method, rule, upstream=("teacher", "cache") if kd else ())
    results["summary"]["adaptive"] = adaptive
    return results


def deep_jscc_settings(ctx: Context, hashes: dict, rule: str | None = None, kd: bool = False) -> tuple:
    """What a Deep JSCC result depends on beyond the sweep (its hash inputs, in their recorded order)."""
    cfg, b = ctx.cfg, ctx.cfg.baselines
    rule = budget_rule(ctx, rule)
    extra: tuple = (rule,) if rule == "per-seed" else ()  # own and whole: as recorded before the rule existed
    if kd:
        extra += ("kd", cfg.loss)
    return (
        hashes["cache"],
        cfg.codec.max_symbols,
        cfg.codec.rates,
        cfg.channel,
        {k: getattr(b, k) for k in ("jscc_channels", "jscc_decoder_channels", "jscc_hidden")},
        b.jscc_train,
        hashes["stage2"] if rule != "own" else None,
        *extra,
    )
