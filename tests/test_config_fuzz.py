"""Property-based config validation: any input either loads or fails early with a ConfigError that
names the field; never a raw TypeError/KeyError/AttributeError from deeper code."""

import dataclasses

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rkd.config import ConfigError, RunConfig, load_config

SECTIONS = {f.name: f for f in dataclasses.fields(RunConfig)}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


def field_paths():
    paths = []
    for name, f in SECTIONS.items():
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            for sub in dataclasses.fields(default):
                paths.append(f"{name}.{sub.name}")
        else:
            paths.append(name)
    return paths


PATHS = field_paths()


def _check(overrides, names=()):
    """Load; on failure the message must name one of ``names`` (the field or section involved)."""
    try:
        cfg = load_config(None, overrides)
    except ConfigError as exc:
        message = str(exc)
        assert any(name in message for name in names) or not names, (overrides, message)
        assert "expected" in message or "accepted" in message or "must look like" in message, message
        return None
    assert isinstance(cfg, RunConfig)
    for f in (cfg.stage1.lr, cfg.stage2.lr, cfg.channel.snr_min, cfg.channel.snr_max, cfg.eval.snr_step):
        assert f == f and abs(f) != float("inf"), overrides  # no NaN/inf gets through
    return cfg


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=values)
def test_random_values_load_or_fail_clearly(path, value):
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    section, _, field = path.partition(".")
    _check([f"{path}={text}"], names=(path, section, field or section))


@settings(max_examples=150, deadline=None)
@given(
    keys=st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=20), min_size=1, max_size=3),
    value=scalars,
)
def test_random_keys_load_or_fail_clearly(keys, value):
    overrides = [
        f"{k}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}" for k in keys
    ]
    _check(overrides)


@settings(max_examples=100, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(sorted(SECTIONS) + ["bogus"]), values, max_size=4))
def test_random_yaml_documents_load_or_fail_clearly(doc, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = None
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert str(exc)
    if cfg is not None:
        assert isinstance(cfg, RunConfig)
