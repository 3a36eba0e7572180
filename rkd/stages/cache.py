"""The cache stage: the trained teacher's logits and features for every image, written once (``rkd.teacher.cache``)."""

from __future__ import annotations

from pathlib import Path

from rkd.config import RunConfig
from rkd.stages.inputs import RunInputs
from rkd.teacher.cache_build import build_cache


def run(cfg: RunConfig, accelerator, inputs: RunInputs, out_dir: Path) -> dict:
    t = cfg.teacher
    manifest = build_cache(
        inputs.teacher(),
        inputs.bundle,
        out_dir,
        batch_size=t.cache_batch_size,
        shard_size=t.cache_shard_size,
        accelerator=accelerator,
        flip_average=t.cache_flip_average,
    )
    inputs.forget_cache()
    return {"splits": {k: v for k, v in manifest.get("splits", {}).items()}}
