"""The config's accepted names, read from the registries that define them (and Accelerate's trackers).

pydantic checks a value against these ``Literal`` types; a static type checker, which cannot run
the registries, sees the names as plain strings. A new channel, teacher kind, embedded family,
baseline or ablation is accepted by the config as soon as its registry holds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

import yaml
from pydantic import BeforeValidator

from rkd.baselines.names import ABLATIONS, BASELINE_METHODS
from rkd.channels import CHANNEL_NAMES, CSI_MODES
from rkd.config.coerce import reject
from rkd.config.yaml_io import load_yaml
from rkd.teacher.embedded import EMBEDDED_FAMILIES
from rkd.teacher.kinds import KIND_CHOICES

# what Accelerate's LoggerType accepts ("all" = every installed one); tests/test_tracking.py keeps it in step
TRACKERS = ("all", "tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")

if TYPE_CHECKING:
    ChannelName: TypeAlias = str
    TeacherKindName: TypeAlias = str
    EmbeddedFamily: TypeAlias = str
    BaselineMethod: TypeAlias = str
    Ablation: TypeAlias = str
    Tracker: TypeAlias = str
else:
    ChannelName = Literal[CHANNEL_NAMES]
    TeacherKindName = Literal[KIND_CHOICES]
    EmbeddedFamily = Literal[EMBEDDED_FAMILIES]
    BaselineMethod = Literal[BASELINE_METHODS]
    Ablation = Literal[ABLATIONS]
    Tracker = Literal[TRACKERS]


def _csi_setting(value: Any) -> str | list:
    if isinstance(value, str) and value.startswith("["):  # a list given as text on the command line
        try:
            value = load_yaml(value)
        except yaml.YAMLError:
            pass
    modes = value if isinstance(value, list) else [value]
    if not modes or any(not isinstance(m, str) or m not in CSI_MODES for m in modes):
        reject(f"one of {CSI_MODES} or a non-empty list of them")
    return value


CsiSetting = Annotated[str | list, BeforeValidator(_csi_setting)]  # one CSI mode or a list of them
