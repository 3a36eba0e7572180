"""YAML text in and out through libyaml where PyYAML was built with it, the pure-Python parser and emitter
otherwise: the same safe subset either way, and the C one is several times faster (a comparison reads and
writes a config for every cell and every stage)."""

from __future__ import annotations

from typing import Any

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``: raises ``yaml.YAMLError`` on text that is not YAML."""
    return yaml.load(text, Loader=_LOADER)


def dump_yaml(data: Any, **options: Any) -> str:
    """``yaml.safe_dump`` (``options`` as there, e.g. ``sort_keys=False``)."""
    return yaml.dump(data, Dumper=_DUMPER, **options)
