"""Experiment trackers (TensorBoard, W&B, MLflow, ...) through Accelerate's ``log_with``.

``tracking.log_with: [tensorboard]`` hands the names to ``Accelerator(log_with=..., project_dir=...)``;
each command then opens one tracker run named after the run (``runs/<name>``) with the whole config
as its hyperparameters, and the engine sends every ``log.jsonl`` record's numbers to it as
``<stage>/<key>`` (``stage1/loss``, ``teacher/val_accuracy``, ...) at the stage's step. Trackers
live on the main process only (Accelerate's rule); ``log.jsonl`` stays the record of truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import accelerate.utils

from rkd.config import ConfigError, RunConfig, to_dict

# W&B keeps one step counter per run, and rkd's stages each count from 0: W&B would drop every
# stage after the first. They get no step; each record carries ``<stage>/step`` instead.
RUN_WIDE_STEP = ("wandb",)


def tracking_dir(cfg: RunConfig) -> Path:
    return Path(cfg.tracking.dir).expanduser() if cfg.tracking.dir else cfg.run_dir / "tracking"


def accelerator_kwargs(cfg: RunConfig) -> dict:
    """``log_with`` / ``project_dir`` for ``Accelerator``; refuses a tracker whose package is missing."""
    names = list(cfg.tracking.log_with)
    if not names:
        return {}
    for name in names:
        if name != "all" and not getattr(accelerate.utils, f"is_{name}_available", lambda: False)():
            raise ConfigError(
                f"config field 'tracking.log_with' names {name!r}, but its Python package is not "
                f"installed: pip install -c constraints.txt {name.replace('_', '-')} (or drop it)"
            )
    return {"log_with": names, "project_dir": str(tracking_dir(cfg))}


def flat_config(cfg: RunConfig) -> dict:
    """The config as ``section.field`` -> bool/int/float/str (what every tracker's hparams accept)."""
    flat: dict = {"run_name": cfg.name}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        else:  # None, lists: their JSON text
            flat[prefix] = json.dumps(value, default=str)

    walk("", to_dict(cfg))
    return flat


def start_tracking(accelerator, cfg: RunConfig) -> None:
    """Open the tracker runs (a no-op without ``tracking.log_with``), named after the rkd run."""
    if not cfg.tracking.log_with:
        return
    names = {"wandb": {"name": cfg.name}, "mlflow": {"run_name": cfg.name}, "aim": {"run_name": cfg.name}}
    accelerator.init_trackers(
        cfg.tracking.project,
        config=flat_config(cfg),
        init_kwargs={k: v for k, v in names.items() if k in cfg.tracking.log_with},
    )


def log_record(accelerator, record: dict, step: int | None = None) -> None:
    """One ``log.jsonl`` record's numbers to every open tracker, as ``<stage>/<key>``."""
    trackers = getattr(accelerator, "trackers", None) or []
    if not trackers:
        return
    stage = record.get("stage", "train")
    values = {
        f"{stage}/{k}": v
        for k, v in record.items()
        if k not in ("stage", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    step = record.get("step") if step is None else step
    for tracker in trackers:
        if tracker.name in RUN_WIDE_STEP:
            tracker.log({**values, f"{stage}/step": step})
        else:
            tracker.log(values, step=step)
