"""The baseline registry: each name of ``baselines.methods`` -> how it runs, what it is recorded as, what it depends on.

Adding a method is one entry here (and its name in ``rkd.baselines.names``); the runner only
looks names up. The ablations have their own registry, ``rkd.baselines.variants.ABLATIONS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rkd.baselines.conference_method import conference_results, conference_settings
from rkd.baselines.context import Context
from rkd.baselines.controls import CONTROLS, control_results, control_settings
from rkd.baselines.deep_jscc_method import deep_jscc_results, deep_jscc_settings
from rkd.baselines.digital_schemes import (
    digital_results,
    digital_settings,
    feature_digital_results,
    feature_digital_settings,
    label_digital_results,
    label_digital_settings,
)
from rkd.baselines.vfe_method import vfe_results, vfe_settings


@dataclass(frozen=True)
class Method:
    run: Callable[
        [Context, Path, str], dict
    ]  # (ctx, out_dir, label) -> {"summary", "records"}; {} off the main process
    settings: Callable[[Context, dict], tuple]  # (ctx, stage hashes) -> what its results depend on beyond the sweep
    label: str  # its name in results and the comparison


def _without_dir(results: Callable[[Context, str], dict]) -> Callable[[Context, Path, str], dict]:
    """A method that trains nothing of its own writes nothing but its results."""
    return lambda ctx, out_dir, label: results(ctx, label)


def _control(name: str) -> Method:
    return Method(partial(control_results, name=name), partial(control_settings, name=name), name)


def _deep_jscc(label: str, adaptive: bool = False, rule: str | None = None, kd: bool = False) -> Method:
    return Method(
        partial(deep_jscc_results, adaptive=adaptive, rule=rule, kd=kd),
        partial(deep_jscc_settings, rule=rule, kd=kd),
        label,
    )


METHODS: dict[str, Method] = {
    "deep-jscc": _deep_jscc("deep-jscc"),
    "adjscc": _deep_jscc("adjscc", adaptive=True),
    "deep-jscc-budget": _deep_jscc("deep-jscc-budget", rule="whole"),
    "deep-jscc-kd": _deep_jscc("deep-jscc-kd", rule="whole", kd=True),
    "vfe": Method(vfe_results, vfe_settings, "vfe"),
    "conference": Method(conference_results, conference_settings, "conference-rkd"),
    "conference-awgn": Method(
        partial(conference_results, awgn_only=True), partial(conference_settings, awgn_only=True), "conference-rkd-awgn"
    ),
    "label-digital": Method(_without_dir(label_digital_results), label_digital_settings, "label-digital"),
    "feature-digital": Method(_without_dir(feature_digital_results), feature_digital_settings, "feature-digital"),
    "digital": Method(_without_dir(digital_results), digital_settings, "digital"),
    **{name: _control(name) for name in CONTROLS},
}
