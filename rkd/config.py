"""Typed run configuration: dataclasses, YAML files, ``section.field=value`` overrides, validation.

Every error names the field, the bad value and what would be accepted, so a user fixes a YAML
file without reading a traceback from deep inside torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A configuration value is unknown, malformed or out of range."""


# ----------------------------------------------------------------------------- sections


@dataclass
class DataConfig:
    # "fashion-mnist" (Debian's IDX files, converted once), "hf:<hub id or save_to_disk dir>",
    # or "imagefolder:<dir>" (one sub-folder per class, optional train/ and test/ splits)
    name: str = "fashion-mnist"
    cache_dir: str = "~/.cache/rkd/datasets"  # where converted datasets live
    fashion_mnist_dir: str = "/usr/share/datasets/fashion-mnist"
    image_column: Optional[str] = None  # auto-detected when None
    label_column: Optional[str] = None
    val_fraction: float = 0.1  # carved from train with split_seed; test stays untouched
    split_seed: int = 0
    image_size: int = 28  # the student's input size
    max_train: Optional[int] = None  # cap train/val/test sizes for smoke runs
    max_val: Optional[int] = None
    max_test: Optional[int] = None


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | sgd
    scheduler: str = "cosine"  # cosine | constant
    warmup_steps: int = 0
    grad_clip: Optional[float] = 5.0
    max_steps: Optional[int] = None  # stop early (tests, smoke runs)
    checkpoint_every: int = 200  # optimiser steps between resumable checkpoints
    log_every: int = 20
    label_smoothing: float = 0.0


@dataclass
class TeacherConfig:
    # "embedded": an HF classifier built from embedded_* and trained by rkd; anything else is an
    # AutoModelForImageClassification / CLIP checkpoint: a hub id or a save_pretrained dir.
    source: str = "embedded"
    kind: str = "auto"  # auto | classifier | clip
    # Runs the checkpoint's own Python. Only the command line can switch it on (--trust-remote-code
    # or teacher.trust_remote_code=true); a YAML file that sets it is refused.
    trust_remote_code: bool = False
    image_size: Optional[int] = None  # None: whatever the teacher's image processor says
    finetune: bool = True  # train (embedded) or fine-tune (hub) on the task before caching
    embedded_hidden_sizes: list = field(default_factory=lambda: [32, 64, 128, 256])
    embedded_depths: list = field(default_factory=lambda: [1, 1, 1, 1])
    embedded_embedding_size: int = 32
    # resnet | regnet | convnext: see rkd.embedded_teacher (regnet/convnext keep 28 px resolution)
    embedded_family: str = "resnet"
    embedded_groups_width: int = 1024  # regnet: channels per group (>= widest stage: plain convs)
    channels_last: bool = False  # embedded teacher weights in channels-last memory (faster CPU convs)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, lr=2e-3))
    augment: bool = True  # random crop + flip while fine-tuning (the cache is un-augmented)
    cache_flip_average: bool = False  # cache the mean of each image's and its mirror's outputs
    cache_shard_size: int = 16384
    cache_batch_size: int = 512


@dataclass
class StudentConfig:
    genotype: str = "default"  # a genotype name from rkd.nas.genotype, or a path to a .json
    init_channels: int = 8
    layers: int = 5
    stem_stride: int = 2
    drop_path: float = 0.0


@dataclass
class LossConfig:
    task: float = 1.0
    logit_kd: float = 1.0
    feature_kd: float = 1.0
    temperature: float = 4.0
    feature_loss: str = "cosine"  # cosine | mse


@dataclass
class CodecConfig:
    d_model: int = 32
    encoder_depth: int = 2
    decoder_depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    max_symbols: int = 32  # L: complex channel symbols the encoder can emit
    rates: list = field(default_factory=lambda: [4, 8, 16, 32])  # k values (channel uses)
    dropout: float = 0.0
    use_state: bool = True  # false: the codec's channel-state input is zeroed in training and test (ablation)
    train_rates: Optional[list] = None  # k drawn in stage 2; null = rates ([max_symbols] = fixed-length ablation)
    rate_sampling: str = "proportional"  # uniform | proportional (P(k) ~ k: the long codes' extra symbols train too)
    principal_init: bool = True  # start the encoder's linear path at the student feature's principal directions


@dataclass
class ChannelTrainConfig:
    channels: list = field(default_factory=lambda: ["awgn", "rayleigh", "rician"])
    # perfect | pilot | none, or a list of them: every fading channel is trained in each listed mode
    csi: Any = "perfect"
    pilots: int = 1  # csi=pilot: pilot symbols per packet, counted in k
    k_factor: float = 4.0  # Rician K
    snr_min: float = -10.0
    snr_max: float = 20.0
    snr_buckets: int = 6  # the SNR range split into buckets; processes or steps rotate over them


@dataclass
class EvalConfig:
    channels: list = field(
        default_factory=lambda: [
            {"name": "awgn"},
            {"name": "rayleigh", "csi": "perfect"},
            {"name": "rayleigh", "csi": "pilot", "pilots": 1},
            {"name": "rician", "csi": "perfect", "k_factor": 4.0},
        ]
    )
    snr_min: float = -10.0
    snr_max: float = 20.0
    snr_step: float = 2.0
    rates: Optional[list] = None  # None: codec.rates
    batch_size: int = 1000
    seed: int = 1234
    rate_margin: float = 0.01  # rate policy: the fewest k whose accuracy is within this of the best k's


DARTS_PRIMITIVES = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


@dataclass
class SearchConfig:
    """KDL-DARTS: the distillation-guided, complexity-penalised architecture search for the student's cells."""

    enabled: bool = False  # False: stage 1 uses student.genotype; True: the search stage runs and stage 1 uses its cells
    init_channels: int = 8  # the search network (the derived cells are priced in the student's own shape)
    layers: int = 5
    nodes: int = 4  # intermediate nodes per cell
    stem_stride: int = 2
    primitives: list = field(default_factory=lambda: list(DARTS_PRIMITIVES))  # names from rkd.nas.ops.OPS
    partial_channels: int = 1  # PC-DARTS k: 1/k of each edge's channels go through the mixed op; 1 = off
    edge_normalization: bool = False  # PC-DARTS beta weights per edge
    order: str = "first"  # first | second (one-step unrolled, finite-difference Hessian-vector product)
    # weights: DARTS's SGD, lr 0.025 cosine, wd 3e-4, clip 5
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=3, batch_size=64, lr=0.025, weight_decay=3e-4, optimizer="sgd", scheduler="cosine", grad_clip=5.0))
    max_train: Optional[int] = None  # search on a seeded subset of the train split (weights) ...
    max_val: Optional[int] = None  # ... and of the val split (architecture); null = whole split
    warmup_epochs: int = 1  # weight-only epochs before the first architecture update
    arch_lr: float = 3e-4  # DARTS's Adam for the architecture parameters
    arch_betas: list = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: float = 1e-3
    # the loss: task + KD against the cached teacher + complexity penalty
    task: float = 1.0
    logit_kd: float = 1.0
    feature_kd: float = 1.0
    temperature: float = 4.0
    feature_loss: str = "cosine"  # cosine | mse
    complexity: str = "params"  # params | flops | both
    complexity_weight: float = 0.1  # 0 = no penalty
    param_budget: Optional[float] = None  # a budget turns the penalty into a hinge above it
    flops_budget: Optional[float] = None
    max_skips: Optional[int] = 2  # at most this many skip_connect per derived cell; null = no cap
    # the Pareto sweep (rkd search --sweep): one independent search per weight, each briefly trained
    sweep_weights: list = field(default_factory=lambda: [0.0, 0.1, 0.3, 1.0])
    sweep_budget: Optional[float] = None  # pick the best val accuracy within this budget (null: best overall)
    sweep_budget_metric: str = "params"  # params | flops
    sweep_train_epochs: int = 2  # stage-1 epochs per derived genotype


@dataclass
class BaselinesConfig:
    """What `rkd baselines` trains and sweeps beside RKD-SC (rkd.baselines); no pipeline stage reads it."""

    methods: list = field(default_factory=lambda: ["deep-jscc", "adjscc", "conference", "label-digital",
                                                   "feature-digital", "digital"])
    # training seeds: each a full retrain of every method (seed -> init, data order, train and test
    # channel draws); null = [seed]. Seeds other than `seed` run in <run>/seeds/seed-<s>/ (methods only)
    seeds: Optional[list] = None
    per_image: bool = False  # keep per-image correctness (correct.npz) for the paired test of rkd.compare
    ablations: list = field(default_factory=lambda: ["no-kd", "robust-kd", "no-channel-training", "no-state",
                                                     "fixed-length"])
    extra_snrs: list = field(default_factory=lambda: [-5.0, 5.0])  # added to the eval grid for the comparison
    compare_k: Optional[int] = None  # k of the comparison table and figure; null = max(codec.rates)
    # Deep JSCC / ADJSCC: conv encoder (width jscc_channels) -> codec.max_symbols symbols; conv+MLP receiver
    jscc_channels: int = 40
    jscc_decoder_channels: int = 32
    jscc_hidden: int = 64
    jscc_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, lr=2e-3))
    # the conference RKD-SC: feature-MSE student, then a per-sample attention autoencoder, one epoch per SNR (AWGN)
    conference_snrs: list = field(default_factory=lambda: [-5.0, -2.0, 0.0, 5.0, 10.0, 15.0, 20.0])
    conference_stage1: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, lr=3e-3))
    conference_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=7, lr=1e-3))
    conference_tokens: int = 16  # the feature vector is cut into this many tokens for attention
    conference_d_model: int = 32
    conference_depth: int = 2
    # separate source/channel coding: b-bit uniform quantiser + ideal capacity-achieving code
    digital_bits: list = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])  # candidate b; largest that fits
    digital_fallback: str = "prior"  # prior (most frequent train class) | uniform (a seeded random guess)
    digital_target_error: float = 1e-3  # feature-digital: largest b whose packet error <= this at the nominal SNR


@dataclass
class TrackingConfig:
    # experiment trackers through Accelerate's log_with, e.g. [tensorboard] or [wandb, mlflow]; [] = log.jsonl only
    log_with: list = field(default_factory=list)
    project: str = "rkd"  # W&B / MLflow / Comet project (experiment); TensorBoard's sub-folder
    dir: Optional[str] = None  # where file-based trackers write; null = runs/<name>/tracking


# what Accelerate's LoggerType accepts ("all" = every installed one); tests/test_tracking.py keeps it in step
TRACKERS = ("all", "tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")


@dataclass
class RunConfig:
    name: str = "default"
    runs_dir: str = "runs"
    seed: int = 0
    # auto: whatever the launcher says (accelerate config file / --mixed_precision), else no;
    # no | bf16 | fp16 override the launcher (fp16 needs CUDA: it is ignored on CPU)
    mixed_precision: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    channel: ChannelTrainConfig = field(default_factory=ChannelTrainConfig)
    stage1: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, lr=3e-3))
    stage2: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, lr=1e-3))
    # stage 2 loss weights (the same terms as stage 1, computed on the received features)
    stage2_loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir).expanduser() / self.name


# ----------------------------------------------------------------------------- validation

_CHOICES = {
    "mixed_precision": ("auto", "no", "bf16", "fp16"),
    "teacher.kind": ("auto", "classifier", "clip"),
    "optimizer": ("adamw", "sgd"),
    "scheduler": ("cosine", "constant"),
    "loss.feature_loss": ("cosine", "mse"),
    "stage2_loss.feature_loss": ("cosine", "mse"),
    "channel.csi": ("perfect", "pilot", "none"),
    "codec.rate_sampling": ("uniform", "proportional"),
    "search.order": ("first", "second"),
    "search.complexity": ("params", "flops", "both"),
    "search.sweep_budget_metric": ("params", "flops"),
}
KNOWN_CHANNELS = ("awgn", "rayleigh", "rician")


def _fail(path: str, value: Any, accepted: str) -> None:
    raise ConfigError(f"config field '{path}' = {value!r} is invalid: expected {accepted}")


def _check_train(path: str, t: TrainConfig) -> None:
    if t.epochs < 0:
        _fail(f"{path}.epochs", t.epochs, "an integer >= 0")
    if t.batch_size < 1:
        _fail(f"{path}.batch_size", t.batch_size, "an integer >= 1")
    if not t.lr > 0:
        _fail(f"{path}.lr", t.lr, "a learning rate > 0")
    if t.weight_decay < 0:
        _fail(f"{path}.weight_decay", t.weight_decay, "a number >= 0")
    for key in ("optimizer", "scheduler"):
        if getattr(t, key) not in _CHOICES[key]:
            _fail(f"{path}.{key}", getattr(t, key), f"one of {_CHOICES[key]}")
    if t.grad_clip is not None and not t.grad_clip > 0:
        _fail(f"{path}.grad_clip", t.grad_clip, "a number > 0, or null for no clipping")
    if t.max_steps is not None and t.max_steps < 1:
        _fail(f"{path}.max_steps", t.max_steps, "an integer >= 1, or null")
    if t.checkpoint_every < 1 or t.log_every < 1:
        _fail(f"{path}.checkpoint_every/log_every", (t.checkpoint_every, t.log_every), "integers >= 1")
    if t.warmup_steps < 0:
        _fail(f"{path}.warmup_steps", t.warmup_steps, "an integer >= 0")
    if not 0 <= t.label_smoothing < 1:
        _fail(f"{path}.label_smoothing", t.label_smoothing, "a number in [0, 1)")


def _check_loss(path: str, loss: LossConfig) -> None:
    for key in ("task", "logit_kd", "feature_kd"):
        if getattr(loss, key) < 0:
            _fail(f"{path}.{key}", getattr(loss, key), "a weight >= 0")
    if loss.task + loss.logit_kd + loss.feature_kd <= 0:
        _fail(f"{path}", "all weights 0", "at least one loss weight > 0")
    if not loss.temperature > 0:
        _fail(f"{path}.temperature", loss.temperature, "a temperature > 0")
    if loss.feature_loss not in ("cosine", "mse"):
        _fail(f"{path}.feature_loss", loss.feature_loss, "'cosine' or 'mse'")


def _check_search(s: SearchConfig) -> None:
    from rkd.nas.ops import OPS  # here, not at the top: the op registry grows at run time (and pulls in torch)

    if s.init_channels < 1 or s.layers < 1 or s.nodes < 1:
        _fail("search.init_channels/layers/nodes", (s.init_channels, s.layers, s.nodes), "integers >= 1")
    if s.stem_stride not in (1, 2, 4):
        _fail("search.stem_stride", s.stem_stride, "1, 2 or 4")
    unknown = [p for p in s.primitives if not isinstance(p, str) or p not in OPS]
    if not s.primitives or unknown or len(set(map(str, s.primitives))) != len(s.primitives):
        _fail("search.primitives", s.primitives, f"a non-empty list of distinct op names from {sorted(OPS)}")
    if all(p == "none" for p in s.primitives):
        _fail("search.primitives", s.primitives, "at least one op other than 'none'")
    if s.partial_channels < 1 or s.init_channels % s.partial_channels != 0:
        _fail("search.partial_channels", s.partial_channels,
              f"an integer >= 1 dividing search.init_channels ({s.init_channels}); 1 = off")
    if s.order not in _CHOICES["search.order"]:
        _fail("search.order", s.order, f"one of {_CHOICES['search.order']}")
    _check_train("search.train", s.train)
    for key in ("max_train", "max_val"):
        v = getattr(s, key)
        if v is not None and v < 1:
            _fail(f"search.{key}", v, "an integer >= 1, or null for the whole split")
    if s.warmup_epochs < 0:
        _fail("search.warmup_epochs", s.warmup_epochs, "an integer >= 0")
    if not s.arch_lr > 0:
        _fail("search.arch_lr", s.arch_lr, "a learning rate > 0")
    if len(s.arch_betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in s.arch_betas):
        _fail("search.arch_betas", s.arch_betas, "two numbers in [0, 1), e.g. [0.5, 0.999]")
    if s.arch_weight_decay < 0:
        _fail("search.arch_weight_decay", s.arch_weight_decay, "a number >= 0")
    for key in ("task", "logit_kd", "feature_kd", "complexity_weight"):
        if getattr(s, key) < 0:
            _fail(f"search.{key}", getattr(s, key), "a weight >= 0")
    if s.task + s.logit_kd + s.feature_kd <= 0:
        _fail("search.task/logit_kd/feature_kd", (s.task, s.logit_kd, s.feature_kd),
              "at least one accuracy term with weight > 0 (the complexity penalty alone would pick empty cells)")
    if not s.temperature > 0:
        _fail("search.temperature", s.temperature, "a temperature > 0")
    if s.feature_loss not in ("cosine", "mse"):
        _fail("search.feature_loss", s.feature_loss, "'cosine' or 'mse'")
    if s.complexity not in _CHOICES["search.complexity"]:
        _fail("search.complexity", s.complexity, f"one of {_CHOICES['search.complexity']}")
    for key in ("param_budget", "flops_budget", "sweep_budget"):
        v = getattr(s, key)
        if v is not None and not v > 0:
            _fail(f"search.{key}", v, "a number > 0, or null for none")
    if s.max_skips is not None and s.max_skips < 0:
        _fail("search.max_skips", s.max_skips, "an integer >= 0, or null for no cap")
    if not s.sweep_weights or any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0
                                  for w in s.sweep_weights):
        _fail("search.sweep_weights", s.sweep_weights, "a non-empty list of complexity weights >= 0")
    if s.sweep_budget_metric not in _CHOICES["search.sweep_budget_metric"]:
        _fail("search.sweep_budget_metric", s.sweep_budget_metric, f"one of {_CHOICES['search.sweep_budget_metric']}")
    if s.sweep_train_epochs < 1:
        _fail("search.sweep_train_epochs", s.sweep_train_epochs, "an integer >= 1")


BASELINE_METHODS = ("deep-jscc", "adjscc", "deep-jscc-budget", "conference", "conference-awgn", "label-digital",
                    "feature-digital", "digital")
ABLATIONS = ("no-kd", "no-robust-kd", "robust-kd", "no-channel-training", "no-state", "fixed-length")


def _check_baselines(b: BaselinesConfig, codec: CodecConfig) -> None:
    for key, known in (("methods", BASELINE_METHODS), ("ablations", ABLATIONS)):
        values = getattr(b, key)
        if any(v not in known for v in values) or len(set(values)) != len(values):
            _fail(f"baselines.{key}", values, f"distinct names from {known} (an empty list runs none)")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in b.extra_snrs):
        _fail("baselines.extra_snrs", b.extra_snrs, "a list of SNRs in dB, e.g. [-5, 5]")
    if b.compare_k is not None and b.compare_k not in codec.rates:
        _fail("baselines.compare_k", b.compare_k, f"one of codec.rates {codec.rates}, or null for the largest")
    if b.seeds is not None and (not isinstance(b.seeds, list) or not b.seeds
                                or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in b.seeds)
                                or len(set(b.seeds)) != len(b.seeds)):
        _fail("baselines.seeds", b.seeds, "null (= [seed]) or a non-empty list of distinct integers >= 0, e.g. [0, 1, 2]")
    if isinstance(b.digital_target_error, bool) or not isinstance(b.digital_target_error, (int, float)) \
            or not 0 < b.digital_target_error < 1:
        _fail("baselines.digital_target_error", b.digital_target_error, "a packet error probability in (0, 1)")
    if {"deep-jscc", "adjscc", "deep-jscc-budget"} & set(b.methods):
        if codec.max_symbols % 8 != 0:
            _fail("codec.max_symbols", codec.max_symbols,
                  "a multiple of 8 when baselines.methods has deep-jscc/adjscc (their encoder emits a 4x4 map "
                  "of max_symbols/8 channels, 2 reals per symbol); or drop those methods")
    for key in ("jscc_channels", "jscc_decoder_channels", "jscc_hidden", "conference_tokens", "conference_d_model",
                "conference_depth"):
        if getattr(b, key) < 1:
            _fail(f"baselines.{key}", getattr(b, key), "an integer >= 1")
    if b.conference_d_model % 4 != 0:
        _fail("baselines.conference_d_model", b.conference_d_model, "a multiple of 4 (the attention heads)")
    for key in ("jscc_train", "conference_stage1", "conference_train"):
        _check_train(f"baselines.{key}", getattr(b, key))
    if not b.conference_snrs or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in b.conference_snrs):
        _fail("baselines.conference_snrs", b.conference_snrs, "a non-empty list of SNRs in dB, one per epoch")
    if b.conference_train.epochs != len(b.conference_snrs):
        _fail("baselines.conference_train.epochs", b.conference_train.epochs,
              f"len(baselines.conference_snrs) = {len(b.conference_snrs)}: one epoch per training SNR")
    if not b.digital_bits or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 16
                                 for v in b.digital_bits):
        _fail("baselines.digital_bits", b.digital_bits, "a non-empty list of bit depths in [1, 16]")
    if b.digital_fallback not in ("prior", "uniform"):
        _fail("baselines.digital_fallback", b.digital_fallback, "'prior' or 'uniform'")


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
            f"environment instead (e.g. HF_TOKEN, or `hf auth login` once)")


def validate(cfg: RunConfig) -> RunConfig:
    """Check ranges and choices that types alone cannot express; return cfg for chaining."""
    _check_no_secrets(to_dict(cfg))
    if not cfg.name or "/" in cfg.name or cfg.name.startswith("."):
        _fail("name", cfg.name, "a non-empty run name without '/' that does not start with '.'")
    if cfg.mixed_precision not in _CHOICES["mixed_precision"]:
        _fail("mixed_precision", cfg.mixed_precision, f"one of {_CHOICES['mixed_precision']}")
    d = cfg.data
    name = d.name
    if not (name == "fashion-mnist" or name.startswith("hf:") or name.startswith("imagefolder:")):
        _fail("data.name", name, "'fashion-mnist', 'hf:<hub id or save_to_disk dir>' or 'imagefolder:<dir>'")
    if not 0 < d.val_fraction < 1:
        _fail("data.val_fraction", d.val_fraction, "a fraction strictly between 0 and 1")
    if not 8 <= d.image_size <= 1024:
        _fail("data.image_size", d.image_size, "an integer in [8, 1024]")
    for key in ("max_train", "max_val", "max_test"):
        v = getattr(d, key)
        if v is not None and v < 1:
            _fail(f"data.{key}", v, "an integer >= 1, or null for the whole split")
    t = cfg.teacher
    if t.kind not in _CHOICES["teacher.kind"]:
        _fail("teacher.kind", t.kind, f"one of {_CHOICES['teacher.kind']}")
    if t.image_size is not None and not 8 <= t.image_size <= 1024:
        _fail("teacher.image_size", t.image_size, "an integer in [8, 1024], or null")
    for key in ("embedded_hidden_sizes", "embedded_depths"):
        sizes = getattr(t, key)
        if not sizes or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes):
            _fail(f"teacher.{key}", sizes, "a non-empty list of positive integers")
    if t.embedded_embedding_size < 1:
        _fail("teacher.embedded_embedding_size", t.embedded_embedding_size, "a positive integer")
    if t.embedded_family not in ("resnet", "regnet", "convnext"):
        _fail("teacher.embedded_family", t.embedded_family, "one of resnet, regnet, convnext")
    if t.embedded_groups_width < 1:
        _fail("teacher.embedded_groups_width", t.embedded_groups_width, "a positive integer")
    if len(t.embedded_hidden_sizes) != len(t.embedded_depths) or not t.embedded_depths:
        _fail("teacher.embedded_depths", t.embedded_depths, "one depth per entry of teacher.embedded_hidden_sizes")
    if t.cache_shard_size < 1 or t.cache_batch_size < 1:
        _fail("teacher.cache_shard_size/cache_batch_size", (t.cache_shard_size, t.cache_batch_size), "integers >= 1")
    _check_train("teacher.train", t.train)
    s = cfg.student
    if s.init_channels < 1 or s.layers < 1:
        _fail("student.init_channels/layers", (s.init_channels, s.layers), "integers >= 1")
    if s.stem_stride not in (1, 2, 4):
        _fail("student.stem_stride", s.stem_stride, "1, 2 or 4")
    if not 0 <= s.drop_path < 1:
        _fail("student.drop_path", s.drop_path, "a probability in [0, 1)")
    _check_loss("loss", cfg.loss)
    _check_loss("stage2_loss", cfg.stage2_loss)
    c = cfg.codec
    if c.heads < 1:
        _fail("codec.heads", c.heads, "an integer >= 1 that divides codec.d_model")
    if c.d_model < 1 or c.d_model % c.heads != 0:
        _fail("codec.d_model", c.d_model, f"a positive multiple of codec.heads ({c.heads})")
    if c.encoder_depth < 1 or c.decoder_depth < 1:
        _fail("codec.encoder_depth/decoder_depth", (c.encoder_depth, c.decoder_depth), "integers >= 1")
    if c.max_symbols < 1:
        _fail("codec.max_symbols", c.max_symbols, "an integer >= 1")
    if not c.rates or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k > c.max_symbols for k in c.rates):
        _fail("codec.rates", c.rates, f"a non-empty list of integers in [1, codec.max_symbols={c.max_symbols}]")
    if not 0 <= c.dropout < 1:
        _fail("codec.dropout", c.dropout, "a probability in [0, 1)")
    if c.train_rates is not None and (not c.train_rates or any(
            isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= c.max_symbols for k in c.train_rates)):
        _fail("codec.train_rates", c.train_rates,
              f"null (= codec.rates) or a non-empty list of integers in [1, codec.max_symbols={c.max_symbols}]")
    if c.rate_sampling not in _CHOICES["codec.rate_sampling"]:
        _fail("codec.rate_sampling", c.rate_sampling, f"one of {_CHOICES['codec.rate_sampling']}")
    ch = cfg.channel
    if not ch.channels or any(n not in KNOWN_CHANNELS for n in ch.channels):
        _fail("channel.channels", ch.channels, f"a non-empty list drawn from {KNOWN_CHANNELS}")
    if isinstance(ch.csi, str) and ch.csi.startswith("["):  # a list given on the command line
        try:
            ch.csi = yaml.safe_load(ch.csi)
        except yaml.YAMLError:
            pass
    modes = ch.csi if isinstance(ch.csi, list) else [ch.csi]
    if not modes or any(not isinstance(m, str) or m not in _CHOICES["channel.csi"] for m in modes):
        _fail("channel.csi", ch.csi, f"one of {_CHOICES['channel.csi']} or a non-empty list of them")
    if isinstance(ch.pilots, bool) or not isinstance(ch.pilots, int) or ch.pilots < 1:
        _fail("channel.pilots", ch.pilots, "an integer >= 1 (pilot symbols per packet)")
    if "pilot" in modes and ch.pilots >= min(c.train_rates or c.rates):
        _fail("channel.pilots", ch.pilots, f"fewer pilots than the smallest trained k ({min(c.train_rates or c.rates)})")
    if ch.k_factor < 0:
        _fail("channel.k_factor", ch.k_factor, "a Rician K factor >= 0")
    if not ch.snr_min < ch.snr_max:
        _fail("channel.snr_min", ch.snr_min, f"a value below channel.snr_max ({ch.snr_max})")
    if ch.snr_buckets < 1:
        _fail("channel.snr_buckets", ch.snr_buckets, "an integer >= 1")
    _check_train("stage1", cfg.stage1)
    _check_train("stage2", cfg.stage2)
    _check_search(cfg.search)
    e = cfg.eval
    for i, spec in enumerate(e.channels):
        if not isinstance(spec, dict) or spec.get("name") not in KNOWN_CHANNELS:
            _fail(f"eval.channels[{i}]", spec, f"a mapping with 'name' in {KNOWN_CHANNELS} (and optional csi, k_factor, pilots)")
        extra = set(spec) - {"name", "csi", "k_factor", "pilots"}
        if extra:
            _fail(f"eval.channels[{i}]", spec, "only the keys name, csi, k_factor, pilots")
        if spec.get("csi", "perfect") not in _CHOICES["channel.csi"]:
            _fail(f"eval.channels[{i}].csi", spec.get("csi"), "'perfect', 'pilot' or 'none'")
        pilots = spec.get("pilots", 1)
        if isinstance(pilots, bool) or not isinstance(pilots, int) or pilots < 1:
            _fail(f"eval.channels[{i}].pilots", pilots, "an integer >= 1")
        k_factor = spec.get("k_factor", 0.0)
        if isinstance(k_factor, bool) or not isinstance(k_factor, (int, float)) or not math.isfinite(k_factor) or k_factor < 0:
            _fail(f"eval.channels[{i}].k_factor", k_factor, "a finite Rician K factor >= 0")
    if not e.snr_step > 0 or not e.snr_min <= e.snr_max:
        _fail("eval.snr_step", e.snr_step, "a step > 0 with eval.snr_min <= eval.snr_max")
    if e.rates is not None and any(k not in c.rates for k in e.rates):
        _fail("eval.rates", e.rates, f"a subset of codec.rates {c.rates}, or null")
    if e.batch_size < 1:
        _fail("eval.batch_size", e.batch_size, "an integer >= 1")
    if not 0 <= e.rate_margin < 1:
        _fail("eval.rate_margin", e.rate_margin, "an accuracy margin in [0, 1), e.g. 0.01 for one point")
    _check_baselines(cfg.baselines, c)
    if any(not isinstance(n, str) or n not in TRACKERS for n in cfg.tracking.log_with):
        _fail("tracking.log_with", cfg.tracking.log_with, f"a list drawn from {TRACKERS}, or [] for none")
    return cfg


# ----------------------------------------------------------------------------- building


def _coerce(path: str, value: Any, typ: Any) -> Any:
    """Turn a YAML / command-line value into the field's declared type or fail naming the field."""
    origin = get_origin(typ)
    if origin is Union:  # Optional[X]
        args = [a for a in get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            return None
        return _coerce(path, value, args[0])
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            _fail(path, value, f"a mapping of {typ.__name__} fields")
        return _build(typ, value, path)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        _fail(path, value, "true or false")
    if typ is int:
        if isinstance(value, bool):
            _fail(path, value, "an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        _fail(path, value, "an integer")
    if typ is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None or not math.isfinite(number):
            _fail(path, value, "a finite number")
        return number
    if typ is str:
        if isinstance(value, bool):  # YAML 1.1 reads a bare `no`/`yes` (e.g. mixed_precision: no) as a bool
            return "yes" if value else "no"
        if isinstance(value, (str, int, float)):
            return str(value)
        _fail(path, value, "a string")
    if typ is list or origin is list:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                _fail(path, value, "a list, e.g. [8, 16, 32]")
        if not isinstance(value, list):
            _fail(path, value, "a list, e.g. [8, 16, 32]")
        return list(value)
    return value


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"section '{prefix}'" if prefix else "the top level"
        raise ConfigError(f"unknown config key(s) {unknown} in {where}; accepted keys: {sorted(names)}")
    kwargs = {}
    defaults = None
    for name, value in values.items():
        path = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            # a partial section starts from this field's own default (e.g. search.train's SGD settings),
            # not from the section class's defaults
            defaults = cls() if defaults is None else defaults
            value = _merge(to_dict(getattr(defaults, name)), value)
        kwargs[name] = _coerce(path, value, hints[name])
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def packaged_config_path(name: str) -> Path:
    """Path of a YAML shipped in rkd/configs (``default``, ``quick``, ``paper-cifar100-clip`` ...)."""
    path = Path(str(resources.files("rkd") / "configs" / f"{name}.yaml"))
    if not path.exists():
        available = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"no packaged config named {name!r}; available: {available}")
    return path


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.field=value, e.g. stage1.epochs=2")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _read_yaml(path: Union[str, Path]) -> dict:
    p = Path(path)
    if not p.exists() and not str(path).endswith((".yaml", ".yml")):
        p = packaged_config_path(str(path))
    if not p.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections, got {type(loaded).__name__}")
    return loaded


def load_config(paths: Optional[Union[str, Path, list]] = None, overrides: Optional[list[str]] = None) -> RunConfig:
    """Built-in defaults, then YAML files in order (paths or packaged names), then ``a.b=c`` overrides."""
    values: dict = {}
    if paths is not None and not isinstance(paths, (list, tuple)):
        paths = [paths]
    for path in paths or []:
        layer = _read_yaml(path)
        teacher = layer.get("teacher")
        if isinstance(teacher, dict) and teacher.get("trust_remote_code") not in (None, False):
            raise ConfigError(
                f"config field 'teacher.trust_remote_code' = true in {str(path)!r} is refused: remote code runs "
                f"with your privileges, so only the command line may switch it on. Remove it from the file and pass "
                f"--trust-remote-code (or the override teacher.trust_remote_code=true) if you trust the checkpoint")
        values = _merge(values, layer)
    for text in overrides or []:
        keys, value = parse_override(text)
        node: dict = {}
        cursor = node
        for k in keys[:-1]:
            cursor = cursor.setdefault(k, {})
        cursor[keys[-1]] = value
        values = _merge(values, node)
    return validate(_build(RunConfig, values))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(*parts: Any) -> str:
    """Stable short hash of config sections (dataclasses or plain data)."""
    data = [to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_config(cfg: RunConfig, path: Union[str, Path]) -> None:
    from rkd.artifacts import atomic_write_text  # artifacts imports nothing from rkd: no cycle

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
