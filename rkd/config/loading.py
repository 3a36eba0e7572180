"""Loading a run config: built-in defaults, YAML files in order, then ``section.field=value`` overrides.

The merged mapping is validated by pydantic against ``rkd.config.schema``; its errors come back as
one ConfigError that names each field (dotted path), the bad value and what would be accepted.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from rkd.config.schema import LossConfig, RunConfig
from rkd.config.validation import ConfigError, validate
from rkd.config.yaml_io import dump_yaml, load_yaml
from rkd.run.artifacts import atomic_write_text

# the search's loss terms were SearchConfig fields until the search got its own `loss` section
_MOVED_TO_SEARCH_LOSS = tuple(f.name for f in dataclasses.fields(LossConfig))


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
        value = load_yaml(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists() and not str(path).endswith((".yaml", ".yml")):
        p = packaged_config_path(str(path))
    if not p.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        loaded = load_yaml(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections, got {type(loaded).__name__}")
    teacher = loaded.get("teacher")
    if isinstance(teacher, dict) and teacher.get("trust_remote_code") not in (None, False):
        raise ConfigError(
            f"config field 'teacher.trust_remote_code' = true in {str(path)!r} is refused: remote code runs "
            f"with your privileges, so only the command line may switch it on. Remove it from the file and pass "
            f"--trust-remote-code (or the override teacher.trust_remote_code=true) if you trust the checkpoint"
        )
    return loaded


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _refuse_moved_keys(values: dict) -> None:
    search = values.get("search")
    for key in _MOVED_TO_SEARCH_LOSS:
        if isinstance(search, dict) and key in search:
            raise ConfigError(
                f"config key 'search.{key}' moved to 'search.loss.{key}' (the search's loss terms are a `loss` "
                f"section, like stage 1's); accepted: search.loss.{key}={search[key]!r} on the command line, or "
                f"`loss: {{{key}: ...}}` under `search:` in a YAML file"
            )


def _dotted(loc: tuple) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def _accepted(error: Mapping[str, Any]) -> str:
    """What pydantic's error says would have been accepted, in the words of rkd's own messages."""
    ctx = error.get("ctx") or {}
    if error["type"] == "config":
        return ctx["accepted"]
    if error["type"] == "literal_error":
        return f"one of {ctx['expected']}"
    if error["type"] in ("dataclass_type", "dataclass_args_type"):
        return f"a mapping of {ctx.get('class_name', 'section')} fields"
    return error["msg"].removeprefix("Input should be ")


def _as_config_error(exc: ValidationError) -> ConfigError:
    errors = exc.errors()
    unknown = [e for e in errors if e["type"] in ("unexpected_keyword_argument", "extra_forbidden", "invalid_key")]
    if unknown:
        section = unknown[0]["loc"][:-1]
        keys = sorted((e["loc"][-1] for e in unknown if e["loc"][:-1] == section), key=str)
        node = RunConfig()
        for part in section:
            node = getattr(node, str(part))
        where = f"section '{_dotted(section)}'" if section else "the top level"
        accepted = sorted(f.name for f in dataclasses.fields(node))
        return ConfigError(f"unknown config key(s) {keys} in {where}; accepted keys: {accepted}")
    return ConfigError(
        "; ".join(
            f"config field '{_dotted(e['loc'])}' = {e['input']!r} is invalid: expected {_accepted(e)}" for e in errors
        )
    )


@functools.lru_cache(maxsize=1)
def _adapter() -> TypeAdapter:
    return TypeAdapter(RunConfig)


def _build(values: dict) -> RunConfig:
    # every field starts from its own default, so a partial section keeps that field's defaults
    # (e.g. search.train's SGD settings), not those of the section's class
    try:
        return _adapter().validate_python(_merge(to_dict(RunConfig()), values))
    except ValidationError as exc:
        raise _as_config_error(exc) from None


def load_config(paths: str | Path | list | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Built-in defaults, then YAML files in order (paths or packaged names), then ``a.b=c`` overrides."""
    values: dict = {}
    if paths is not None and not isinstance(paths, (list, tuple)):
        paths = [paths]
    for path in paths or []:
        values = _merge(values, _read_yaml(path))
    for text in overrides or []:
        keys, value = parse_override(text)
        for key in reversed(keys):
            value = {key: value}
        values = _merge(values, value)
    _refuse_moved_keys(values)
    return validate(_build(values))


def layer(cfg: RunConfig, path: str | Path) -> RunConfig:
    """``cfg`` with a YAML file (or packaged name) layered on top, as ``--quick`` layers ``quick``."""
    return validate(_build(_merge(to_dict(cfg), _read_yaml(path))))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(*parts: Any) -> str:
    """Stable short hash of config sections (dataclasses or plain data)."""
    data = [to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_config(cfg: RunConfig, path: str | Path) -> None:
    atomic_write_text(path, dump_yaml(to_dict(cfg), sort_keys=False))
