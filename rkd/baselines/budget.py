"""Training budgets of the compared methods, so a win cannot be bought with compute unnoticed.

A method's budget is the sum over every trained part it depends on: RKD-SC counts the teacher,
its logit/feature cache pass, the search (when on), stage 1 and stage 2; the digital schemes count
the teacher, cache and stage 1 (they send the stage-1 student's output); the conference design its
own feature-MSE student plus the teacher and cache; Deep JSCC only itself. Per part:

* ``steps``: optimiser steps (from the stage's ``stage.json`` / the engine's fit summary);
* ``images_seen``: ``steps * batch_size * world_size`` (training images through the model);
* ``epochs``: ``images_seen / n_train`` (so a step-capped run shows its fraction of an epoch);
* ``seconds``: wall time of the part on the machine that ran it (the cache pass: seconds only).
"""

from __future__ import annotations

import math
from pathlib import Path

from rkd.run.artifacts import read_json

PIPELINE_PARTS = ("teacher", "cache", "search", "stage1", "stage2")
# what RKD-SC trains per seed: a benchmark's seeds share one teacher and its cache, counted once
SEED_PARTS = ("search", "stage1", "stage2")


def part_cost(steps: int, batch_size: int, world_size: int, seconds: float, n_train: int) -> dict:
    images = int(steps) * int(batch_size) * int(world_size)
    return {"steps": int(steps), "images_seen": images, "epochs": images / max(1, n_train), "seconds": float(seconds)}


def _stage_batch(cfg, stage: str) -> int:
    return {
        "teacher": cfg.teacher.train.batch_size,
        "search": cfg.search.train.batch_size,
        "stage1": cfg.stage1.batch_size,
        "stage2": cfg.stage2.batch_size,
    }.get(stage, 0)


def pipeline_costs(cfg, run_dir: Path, stages: tuple, n_train: int) -> dict:
    """``{stage: part cost}`` from the finished stages' ``stage.json`` under ``run_dir`` (missing ones left out)."""
    parts = {}
    for stage in stages:
        record = Path(run_dir) / stage / "stage.json"
        if not record.exists():
            continue
        summary = read_json(record).get("summary", {})
        if summary.get("enabled") is False:
            continue
        parts[stage] = part_cost(
            summary.get("steps", 0),
            _stage_batch(cfg, stage),
            summary.get("world_size", 1),
            summary.get("seconds", 0.0),
            n_train,
        )
        if stage == "search":
            candidates = candidate_images(cfg, summary.get("selection"))
            parts[stage]["images_seen"] += candidates
            parts[stage]["epochs"] = parts[stage]["images_seen"] / max(1, n_train)
    return parts


def candidate_images(cfg, selection: dict | None) -> int:
    """Training images the search's candidate selection fed its brief trainings (full batches of its subset)."""
    if not selection:
        return 0
    batch = cfg.search.candidate_batch_size
    per_epoch = (selection["train_rows"] // batch) * batch or selection["train_rows"]  # a subset < one batch: kept
    epochs = selection["epochs"]
    if selection.get("screened"):
        screen = selection["screen_epochs"]
        return per_epoch * (selection["candidates"] * screen + selection["survivors"] * (epochs - screen))
    return per_epoch * selection["candidates"] * epochs


def total(parts: dict, n_train: int) -> dict:
    """A method's budget: its parts and their sums."""
    images = sum(p["images_seen"] for p in parts.values())
    return {
        "parts": parts,
        "images_seen": images,
        "epochs": images / max(1, n_train),
        "seconds": sum(p["seconds"] for p in parts.values()),
    }


def fit_cost(fit_summary: dict, batch_size: int, world_size: int, n_train: int) -> dict:
    return part_cost(fit_summary["steps"], batch_size, world_size, fit_summary["seconds"], n_train)


def matched_schedule(target_images: int, batch_size: int, world_size: int, n_train: int) -> dict:
    """Epochs and a step cap that make a run see ``target_images`` training images (deep-jscc-budget)."""
    if target_images <= 0:
        raise ValueError(
            f"target images seen = {target_images} is invalid: expected RKD-SC's finished budget (> 0); "
            f"run rkd-sc first"
        )
    per_step = batch_size * world_size
    steps = max(1, math.ceil(target_images / per_step))
    steps_per_epoch = max(1, n_train // per_step)
    return {"epochs": max(1, math.ceil(steps / steps_per_epoch)), "max_steps": steps}


def rkd_budget(cfg, run_dir: Path | None, n_train: int, parts: tuple = PIPELINE_PARTS) -> dict:
    """RKD-SC's budget from its finished stages: the whole pipeline, or ``parts`` of it (``SEED_PARTS``)."""
    return total(pipeline_costs(cfg, run_dir or cfg.run_dir, parts, n_train), n_train)
