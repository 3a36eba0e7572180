"""Typed run configuration: dataclasses, YAML files, ``section.field=value`` overrides, validation.

Every error names the field, the bad value and what would be accepted, so a user fixes a YAML
file without reading a traceback from deep inside torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
    # "embedded": an HF ResNet built from a config and trained by rkd; anything else is an
    # AutoModelForImageClassification / CLIP checkpoint: a hub id or a save_pretrained dir.
    source: str = "embedded"
    kind: str = "auto"  # auto | classifier | clip
    trust_remote_code: bool = False
    image_size: Optional[int] = None  # None: whatever the teacher's image processor says
    finetune: bool = True  # train (embedded) or fine-tune (hub) on the task before caching
    embedded_hidden_sizes: list = field(default_factory=lambda: [32, 64, 128, 256])
    embedded_depths: list = field(default_factory=lambda: [1, 1, 1, 1])
    embedded_embedding_size: int = 32
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, lr=2e-3))
    augment: bool = True  # random crop + flip while fine-tuning (the cache is un-augmented)
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
    d_model: int = 64
    encoder_depth: int = 2
    decoder_depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    max_symbols: int = 64  # L: complex channel symbols the encoder can emit
    rates: list = field(default_factory=lambda: [8, 16, 32, 64])  # k values (channel uses)
    dropout: float = 0.0


@dataclass
class ChannelTrainConfig:
    channels: list = field(default_factory=lambda: ["awgn", "rayleigh", "rician"])
    csi: str = "perfect"  # perfect | none (for fading channels)
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
            {"name": "rayleigh", "csi": "none"},
            {"name": "rician", "csi": "perfect", "k_factor": 4.0},
        ]
    )
    snr_min: float = -10.0
    snr_max: float = 20.0
    snr_step: float = 2.0
    rates: Optional[list] = None  # None: codec.rates
    batch_size: int = 1000
    seed: int = 1234


@dataclass
class RunConfig:
    name: str = "default"
    runs_dir: str = "runs"
    seed: int = 0
    mixed_precision: str = "no"  # no | bf16 | fp16
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    channel: ChannelTrainConfig = field(default_factory=ChannelTrainConfig)
    stage1: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, lr=3e-3))
    stage2: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, lr=1e-3))
    # stage 2 loss weights (the same terms as stage 1, computed on the received features)
    stage2_loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir).expanduser() / self.name


# ----------------------------------------------------------------------------- validation

_CHOICES = {
    "mixed_precision": ("no", "bf16", "fp16"),
    "teacher.kind": ("auto", "classifier", "clip"),
    "optimizer": ("adamw", "sgd"),
    "scheduler": ("cosine", "constant"),
    "loss.feature_loss": ("cosine", "mse"),
    "stage2_loss.feature_loss": ("cosine", "mse"),
    "channel.csi": ("perfect", "none"),
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


def validate(cfg: RunConfig) -> RunConfig:
    """Check ranges and choices that types alone cannot express; return cfg for chaining."""
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
    if c.d_model < 1 or c.d_model % c.heads != 0:
        _fail("codec.d_model", c.d_model, f"a positive multiple of codec.heads ({c.heads})")
    if c.encoder_depth < 1 or c.decoder_depth < 1:
        _fail("codec.encoder_depth/decoder_depth", (c.encoder_depth, c.decoder_depth), "integers >= 1")
    if c.max_symbols < 1:
        _fail("codec.max_symbols", c.max_symbols, "an integer >= 1")
    if not c.rates or any((not isinstance(k, int)) or k < 1 or k > c.max_symbols for k in c.rates):
        _fail("codec.rates", c.rates, f"a non-empty list of integers in [1, codec.max_symbols={c.max_symbols}]")
    if not 0 <= c.dropout < 1:
        _fail("codec.dropout", c.dropout, "a probability in [0, 1)")
    ch = cfg.channel
    if not ch.channels or any(n not in KNOWN_CHANNELS for n in ch.channels):
        _fail("channel.channels", ch.channels, f"a non-empty list drawn from {KNOWN_CHANNELS}")
    if ch.csi not in _CHOICES["channel.csi"]:
        _fail("channel.csi", ch.csi, "'perfect' or 'none'")
    if ch.k_factor < 0:
        _fail("channel.k_factor", ch.k_factor, "a Rician K factor >= 0")
    if not ch.snr_min < ch.snr_max:
        _fail("channel.snr_min", ch.snr_min, f"a value below channel.snr_max ({ch.snr_max})")
    if ch.snr_buckets < 1:
        _fail("channel.snr_buckets", ch.snr_buckets, "an integer >= 1")
    _check_train("stage1", cfg.stage1)
    _check_train("stage2", cfg.stage2)
    e = cfg.eval
    for i, spec in enumerate(e.channels):
        if not isinstance(spec, dict) or spec.get("name") not in KNOWN_CHANNELS:
            _fail(f"eval.channels[{i}]", spec, f"a mapping with 'name' in {KNOWN_CHANNELS} (and optional csi, k_factor)")
        extra = set(spec) - {"name", "csi", "k_factor"}
        if extra:
            _fail(f"eval.channels[{i}]", spec, "only the keys name, csi, k_factor")
        if spec.get("csi", "perfect") not in ("perfect", "none"):
            _fail(f"eval.channels[{i}].csi", spec.get("csi"), "'perfect' or 'none'")
    if not e.snr_step > 0 or not e.snr_min <= e.snr_max:
        _fail("eval.snr_step", e.snr_step, "a step > 0 with eval.snr_min <= eval.snr_max")
    if e.rates is not None and any(k not in c.rates for k in e.rates):
        _fail("eval.rates", e.rates, f"a subset of codec.rates {c.rates}, or null")
    if e.batch_size < 1:
        _fail("eval.batch_size", e.batch_size, "an integer >= 1")
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
        if isinstance(value, bool):
            _fail(path, value, "a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        _fail(path, value, "a number")
    if typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
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
    for name, value in values.items():
        path = f"{prefix}.{name}" if prefix else name
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
        values = _merge(values, _read_yaml(path))
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
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
