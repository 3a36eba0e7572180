"""The teacher stage: train or fine-tune the teacher on the task and save it (``rkd.teacher.training``)."""

from __future__ import annotations

from pathlib import Path

from rkd.config import RunConfig
from rkd.stages.inputs import RunInputs
from rkd.teacher.training import train_teacher


def run(cfg: RunConfig, accelerator, inputs: RunInputs, out_dir: Path) -> dict:
    return train_teacher(cfg, inputs.bundle, out_dir, accelerator)
