"""Training budgets of the compared methods, so a win cannot be bought with compute unnoticed.

A method's budget is the sum over every trained part it depends on: RKD-SC counts the teacher,
its logit/feature cache pass, the search (when on), stage 1 and stage 2; the digital schemes count
the teacher, cache and stage 1 (they send the stage-1 student's output); the conference design its
own feature-MSE student plus the teacher and cache; Deep JSCC only itself. Per part:

* ``steps``: optimiser steps (from the stage's ``stage.json`` / the engine's fit summary);
* ``images_seen``: ``steps * batch_size * world_size`` (training images through the model);
* ``epochs``: ``images_seen / n_train`` (so a step-capped run shows its fraction of an epoch);
* ``seconds``: wall time of the part on the machine that ran it (the cache pass: seconds only);
* ``flops``: training FLOPs, ``images_seen`` x the FLOPs per image the engine counted on one step of the
  part (forward, backward and whatever else its objective computes; ``rkd.hardware.efficiency``), or None
  where no step was counted (a stage resumed past the counted step, a record older than the count). The
  cache pass is the teacher's forward over every image once, not a training step: it has no ``flops``.
"""

from __future__ import annotations

import math
from pathlib import Path

from rkd.hardware.efficiency import counted_flops
from rkd.run.artifacts import read_json

PIPELINE_PARTS = ("teacher", "cache", "search", "stage1", "stage2")
# what RKD-SC trains per seed: a benchmark's seeds share one teacher and its cache, counted once
SEED_PARTS = ("search", "stage1", "stage2")


def part_cost(
    steps: int, batch_size: int, world_size: int, seconds: float, n_train: int, flops_per_image: float | None = None
) -> dict:
    images = int(steps) * int(batch_size) * int(world_size)
    return {
        "steps": int(steps),
        "images_seen": images,
        "epochs": images / max(1, n_train),
        "seconds": float(seconds),
        "flops": None if flops_per_image is None else round(images * flops_per_image),
    }


def _stage_batch(cfg, stage: str) -> int:
    return {
        "teacher": cfg.teacher.train.batch_size,
        "search": cfg.search.train.batch_size,
        "stage1": cfg.stage1.batch_size,
        "stage2": cfg.stage2.batch_size,
    }.get(stage, 0)


def stage_cost(cfg, stage: str, summary: dict, n_train: int) -> dict:
    """One pipeline stage's part cost from its ``stage.json`` summary (the search: its supernet alone)."""
    return part_cost(
        summary.get("steps", 0),
        _stage_batch(cfg, stage),
        summary.get("world_size", 1),
        summary.get("seconds", 0.0),
        n_train,
        counted_flops(summary),
    )


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
        parts[stage] = stage_cost(cfg, stage, summary, n_train)
        if stage == "search":
            part, selection = parts[stage], summary.get("selection")
            part["images_seen"] += candidate_images(cfg, selection)
            part["epochs"] = part["images_seen"] / max(1, n_train)
            part["flops"] = add_flops(part["flops"], candidate_flops(cfg, Path(run_dir) / stage, selection))
    return parts


def add_flops(*flops: float | None) -> float | None:
    """A sum of FLOP counts that is None (not counted) when any of them is."""
    return None if any(f is None for f in flops) else sum(flops)  # type: ignore[arg-type]


def _epoch_images(cfg, selection: dict) -> int:
    """Images in one epoch of a candidate's brief training (full batches of its subset)."""
    batch = cfg.search.candidate_batch_size
    return (selection["train_rows"] // batch) * batch or selection["train_rows"]  # a subset < one batch: kept


def candidate_flops(cfg, search_dir: Path, selection: dict | None) -> float | None:
    """Training FLOPs of the candidates' brief trainings: each candidate's epochs (the longest it was scored
    at) x an epoch's images x the FLOPs per image its run counted; None when a candidate has no count."""
    if not selection:
        return 0
    total = 0.0
    records = sorted(Path(search_dir).glob("candidates/candidate-*/candidate.json"))
    for path in records:
        record = read_json(path)
        per_image, scored = record.get("flops_per_image"), record.get("val_accuracy") or {}
        if per_image is None or not scored:
            return None
        total += max(int(epochs) for epochs in scored) * _epoch_images(cfg, selection) * per_image
    return round(total) if records else None


def candidate_images(cfg, selection: dict | None) -> int:
    """Training images the search's candidate selection fed its brief trainings (full batches of its subset)."""
    if not selection:
        return 0
    per_epoch = _epoch_images(cfg, selection)
    epochs = selection["epochs"]
    if selection.get("screened"):
        screen = selection["screen_epochs"]
        return per_epoch * (selection["candidates"] * screen + selection["survivors"] * (epochs - screen))
    return per_epoch * selection["candidates"] * epochs


def total(parts: dict, n_train: int) -> dict:
    """A method's budget: its parts and their sums."""
    images = sum(p["images_seen"] for p in parts.values())
    trained = [p.get("flops") for p in parts.values() if p["images_seen"]]  # the cache pass trains nothing
    return {
        "parts": parts,
        "images_seen": images,
        "epochs": images / max(1, n_train),
        "seconds": sum(p["seconds"] for p in parts.values()),
        "flops": add_flops(*trained),
    }


def fit_cost(fit_summary: dict, batch_size: int, world_size: int, n_train: int) -> dict:
    return part_cost(
        fit_summary["steps"], batch_size, world_size, fit_summary["seconds"], n_train, counted_flops(fit_summary)
    )


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
