"""Checks that relate fields to each other or to a registry; single-field types and ranges are in the schema.

Every error names the field, the bad value and what would be accepted, so a user fixes a YAML
file without reading a traceback from deep inside torch.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from rkd.channels import CHANNEL_NAMES, CSI_MODES
from rkd.config.schema import (
    BaselinesConfig,
    CodecConfig,
    EvalConfig,
    LossConfig,
    RunConfig,
    SearchConfig,
    TeacherConfig,
)
from rkd.errors import ConfigError
from rkd.losses import loss_weights
from rkd.nas.ops import OPS
from rkd.teacher.kinds import AUTO, TEACHER_KINDS, source_kind


def fail(path: str, value: Any, accepted: str) -> None:
    raise ConfigError(f"config field '{path}' = {value!r} is invalid: expected {accepted}")


def _check_loss(path: str, loss: LossConfig, accepted: str = "at least one loss weight > 0") -> None:
    weights = loss_weights(loss)
    if sum(weights.values()) <= 0:
        fail(path, weights, accepted)


def _check_training(cfg: RunConfig) -> None:
    """Every training section: a warm-up given once, as steps or as a fraction of the run's steps."""
    b = cfg.baselines
    sections = {
        "teacher.train": cfg.teacher.train,
        "stage1": cfg.stage1,
        "stage2": cfg.stage2,
        "search.train": cfg.search.train,
        "baselines.jscc_train": b.jscc_train,
        "baselines.vfe_train": b.vfe_train,
        "baselines.conference_stage1": b.conference_stage1,
        "baselines.conference_train": b.conference_train,
    }
    for path, train in sections.items():
        if train.warmup_steps and train.warmup_fraction:
            fail(
                f"{path}.warmup_fraction",
                train.warmup_fraction,
                f"0 when {path}.warmup_steps is set ({train.warmup_steps}): give the warm-up once, "
                "as a fraction of the run's steps or as a step count",
            )


def _check_codec_and_channel(cfg: RunConfig) -> None:
    c, ch = cfg.codec, cfg.channel
    if c.d_model < 1 or c.d_model % c.heads != 0:
        fail("codec.d_model", c.d_model, f"a positive multiple of codec.heads ({c.heads})")
    if not c.rates or any(not 1 <= k <= c.max_symbols for k in c.rates):
        fail("codec.rates", c.rates, f"a non-empty list of integers in [1, codec.max_symbols={c.max_symbols}]")
    if c.train_rates is not None and (not c.train_rates or any(not 1 <= k <= c.max_symbols for k in c.train_rates)):
        fail(
            "codec.train_rates",
            c.train_rates,
            f"null (= codec.rates) or a non-empty list of integers in [1, codec.max_symbols={c.max_symbols}]",
        )
    modes = ch.csi if isinstance(ch.csi, list) else [ch.csi]
    if "pilot" in modes and ch.pilots >= min(c.train_rates or c.rates):
        fail("channel.pilots", ch.pilots, f"fewer pilots than the smallest trained k ({min(c.train_rates or c.rates)})")
    if not ch.snr_min < ch.snr_max:
        fail("channel.snr_min", ch.snr_min, f"a value below channel.snr_max ({ch.snr_max})")


def _check_eval(e: EvalConfig, codec: CodecConfig) -> None:
    for i, spec in enumerate(e.channels):
        if not isinstance(spec, dict) or spec.get("name") not in CHANNEL_NAMES:
            fail(
                f"eval.channels[{i}]",
                spec,
                f"a mapping with 'name' in {CHANNEL_NAMES} (and optional csi, k_factor, pilots)",
            )
        extra = set(spec) - {"name", "csi", "k_factor", "pilots"}
        if extra:
            fail(f"eval.channels[{i}]", spec, "only the keys name, csi, k_factor, pilots")
        if spec.get("csi", "perfect") not in CSI_MODES:
            fail(f"eval.channels[{i}].csi", spec.get("csi"), "'perfect', 'pilot' or 'none'")
        pilots = spec.get("pilots", 1)
        if isinstance(pilots, bool) or not isinstance(pilots, int) or pilots < 1:
            fail(f"eval.channels[{i}].pilots", pilots, "an integer >= 1")
        k_factor = spec.get("k_factor", 0.0)
        if (
            isinstance(k_factor, bool)
            or not isinstance(k_factor, (int, float))
            or not math.isfinite(k_factor)
            or k_factor < 0
        ):
            fail(f"eval.channels[{i}].k_factor", k_factor, "a finite Rician K factor >= 0")
    if not e.snr_step > 0 or not e.snr_min <= e.snr_max:
        fail("eval.snr_step", e.snr_step, "a step > 0 with eval.snr_min <= eval.snr_max")
    if e.rates is not None and any(k not in codec.rates for k in e.rates):
        fail("eval.rates", e.rates, f"a subset of codec.rates {codec.rates}, or null")
    smallest = min(e.rates or codec.rates)
    for i, spec in enumerate(e.channels):
        if spec["name"] != "awgn" and spec.get("csi") == "pilot" and spec.get("pilots", 1) >= smallest:
            fail(
                f"eval.channels[{i}].pilots",
                spec.get("pilots", 1),
                f"fewer pilots than the smallest evaluated k ({smallest})",
            )


def _check_teacher(t: TeacherConfig) -> None:
    if len(t.embedded_hidden_sizes) != len(t.embedded_depths):
        fail("teacher.embedded_depths", t.embedded_depths, "one depth per entry of teacher.embedded_hidden_sizes")
    fixed = source_kind(t.source)
    if fixed is not None and t.kind not in (AUTO, fixed.name):
        fail("teacher.kind", t.kind, f"{AUTO!r} or {fixed.name!r} with teacher.source = {t.source!r}")
    needs = TEACHER_KINDS[t.kind].source if t.kind in TEACHER_KINDS else None
    if needs is not None and t.source != needs:
        checkpoint_kinds = [k.name for k in TEACHER_KINDS.values() if k.source is None]
        fail(
            "teacher.kind",
            t.kind,
            f"teacher.source = {needs!r}, or one of {[AUTO, *checkpoint_kinds]} for {t.source!r}",
        )


def _check_search(s: SearchConfig) -> None:
    unknown = [p for p in s.primitives if p not in OPS]  # OPS, not PRIMITIVES: registered ops are accepted too
    if not s.primitives or unknown or len(set(s.primitives)) != len(s.primitives):
        fail("search.primitives", s.primitives, f"a non-empty list of distinct op names from {sorted(OPS)}")
    if all(p == "none" for p in s.primitives):
        fail("search.primitives", s.primitives, "at least one op other than 'none'")
    if s.partial_channels < 1 or s.init_channels % s.partial_channels != 0:
        fail(
            "search.partial_channels",
            s.partial_channels,
            f"an integer >= 1 dividing search.init_channels ({s.init_channels}); 1 = off",
        )
    _check_loss(
        "search.loss",
        s.loss,
        "at least one accuracy term with weight > 0 (the complexity penalty alone would pick empty cells)",
    )
    if s.candidate_survivors is not None and s.candidate_screen_epochs >= s.candidate_epochs:
        fail(
            "search.candidate_screen_epochs",
            s.candidate_screen_epochs,
            f"fewer than search.candidate_epochs ({s.candidate_epochs}) when search.candidate_survivors is set, "
            "or candidate_survivors: null for no screening",
        )


def _check_baselines(b: BaselinesConfig, codec: CodecConfig) -> None:
    if b.compare_k is not None and b.compare_k not in codec.rates:
        fail("baselines.compare_k", b.compare_k, f"one of codec.rates {codec.rates}, or null for the largest")
    if {"deep-jscc", "adjscc", "deep-jscc-budget"} & set(b.methods) and codec.max_symbols % 8 != 0:
        fail(
            "codec.max_symbols",
            codec.max_symbols,
            "a multiple of 8 when baselines.methods has deep-jscc/adjscc (their encoder emits a 4x4 map "
            "of max_symbols/8 channels, 2 reals per symbol); or drop those methods",
        )
    if b.conference_train.epochs != len(b.conference_snrs):
        fail(
            "baselines.conference_train.epochs",
            b.conference_train.epochs,
            f"len(baselines.conference_snrs) = {len(b.conference_snrs)}: one epoch per training SNR",
        )


# Shapes of common access tokens. A config is copied into every run directory (config.yaml) and
# its values into records and reports, so a token must come from the environment (HF_TOKEN,
# `hf auth login`), never from a config value.
_SECRET_PATTERNS = (
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),  # Hugging Face
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\b(?:sk|xox[abpr])-[A-Za-z0-9-]{20,}"),  # OpenAI-style / Slack
    re.compile(r"://[^/\s:@]+:[^/\s@]+@"),  # user:password@ in a URL
)


def _check_no_secrets(values: Any, path: str = "") -> None:
    if isinstance(values, dict):
        for key, value in values.items():
            _check_no_secrets(value, f"{path}.{key}" if path else str(key))
    elif isinstance(values, (list, tuple)):
        for i, value in enumerate(values):
            _check_no_secrets(value, f"{path}[{i}]")
    elif isinstance(values, str) and any(pattern.search(values) for pattern in _SECRET_PATTERNS):
        shown = values[:3] + "..."
        raise ConfigError(
            f"config field '{path}' = '{shown}' looks like an access token or a password: it is refused because "
            f"configs are copied into the run directory, records and reports. Give credentials through the "
            f"environment instead (e.g. HF_TOKEN, or `hf auth login` once)"
        )


def validate(cfg: RunConfig) -> RunConfig:
    """Check what relates fields to each other (the schema checked each field alone); return cfg for chaining."""
    _check_no_secrets(dataclasses.asdict(cfg))
    _check_teacher(cfg.teacher)
    _check_loss("loss", cfg.loss)
    _check_loss("stage2_loss", cfg.stage2_loss)
    _check_training(cfg)
    _check_codec_and_channel(cfg)
    _check_search(cfg.search)
    _check_eval(cfg.eval, cfg.codec)
    _check_baselines(cfg.baselines, cfg.codec)
    return cfg
