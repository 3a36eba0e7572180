"""Typed run configuration: sections (``schema``), YAML files and overrides (``loading``), cross-field checks
(``validation``). Import from here: ``from rkd.config import RunConfig, load_config, ConfigError``."""

from rkd.config.choices import TRACKERS
from rkd.config.loading import (
    config_hash,
    layer,
    load_config,
    packaged_config_path,
    parse_override,
    save_config,
    to_dict,
)
from rkd.config.schema import (
    BaselinesConfig,
    ChannelTrainConfig,
    CodecConfig,
    DataConfig,
    EvalConfig,
    LossConfig,
    RunConfig,
    SearchConfig,
    StudentConfig,
    TeacherConfig,
    TrackingConfig,
    TrainConfig,
)
from rkd.config.validation import ConfigError, validate

__all__ = [
    "TRACKERS",
    "BaselinesConfig",
    "ChannelTrainConfig",
    "CodecConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "RunConfig",
    "SearchConfig",
    "StudentConfig",
    "TeacherConfig",
    "TrackingConfig",
    "TrainConfig",
    "config_hash",
    "layer",
    "load_config",
    "packaged_config_path",
    "parse_override",
    "save_config",
    "to_dict",
    "validate",
]
