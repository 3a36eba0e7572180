"""One cell in this process: its RKD-SC run (linked to the shared teacher), its method, its record.

The caller hands in ``run_stages`` (``rkd.run.pipeline.stage_runner``), as ``rkd baselines``'s caller
does. The method runs through the same job as in ``rkd baselines`` (``rkd.baselines.runner``), into
the cell's own directory; ``cell.json`` is written last, with the teacher's content hash, the
machine, the precision, the learning rates, the validation accuracy the tuning grid reads, and the
steps, seconds and training FLOPs of every part the cell trained (what the cost model is calibrated from).
"""

from __future__ import annotations

import time
from pathlib import Path

from rkd.baselines import budget
from rkd.baselines.conference_method import conference_student_name
from rkd.baselines.context import Context, MethodDir, comparison_grid
from rkd.baselines.controls import CONTROLS, control_dir_name
from rkd.baselines.runner import method_hash, method_jobs, run_job
from rkd.baselines.variants import run_variant, variant_dir
from rkd.bench.catalogue import RKD, method
from rkd.bench.layout import TEACHER, Cell, cell_config, cell_dir, cell_fingerprint, field_value, rkd_config
from rkd.bench.machine import machine_record, precision_record
from rkd.bench.records import finished, teacher_hash, write_record
from rkd.config import RunConfig
from rkd.run.artifacts import read_json
from rkd.run.hashing import git_commit

TRAINED_STAGES = ("teacher", "cache", "search", "stage1", "stage2", "eval")
# what a record says about the run that did the work: a re-check that trained nothing keeps them
FIRST_RUN = ("seconds", "finished", "git_commit", "git_commit_at_finish", "machine", "precision", "parts")


class TimedContext(Context):
    """A ``Context`` that adds up the seconds its sweeps take (a cell's sweep is a part of its cost)."""

    sweep_seconds: float = 0.0

    def sweep(self, model, inputs, rates, method, snrs: list | None = None):
        started = time.time()
        try:
            return super().sweep(model, inputs, rates, method, snrs=snrs)
        finally:
            self.sweep_seconds += time.time() - started


def stage_parts(cfg: RunConfig, run_dir: Path, since: float, prefix: str = "") -> dict:
    """``{stage: {"steps", "seconds", "flops"}}`` of the stages trained into ``run_dir`` (not linked) since ``since``."""
    parts = {}
    for stage in TRAINED_STAGES:
        record = Path(run_dir) / stage / "stage.json"
        if (Path(run_dir) / stage).is_symlink() or not record.exists() or record.stat().st_mtime < since:
            continue
        summary = read_json(record).get("summary", {})
        cost = budget.stage_cost(cfg, stage, summary, n_train=1)
        parts[prefix + stage] = {key: cost[key] for key in ("steps", "seconds", "flops")}
        if stage == "search":  # the candidates' brief trainings apart from the supernet's steps
            candidates = candidate_part(cfg, Path(run_dir) / stage, summary.get("selection"))
            parts[prefix + "search"]["seconds"] -= candidates["seconds"]
            parts[prefix + "candidates"] = candidates
    return parts


def candidate_part(cfg: RunConfig, search_dir: Path, selection: dict | None) -> dict:
    """The candidate selection's steps (its training images / its batch), seconds and FLOPs (its candidates' records)."""
    seconds = sum(read_json(p).get("seconds", 0.0) for p in search_dir.glob("candidates/candidate-*/candidate.json"))
    steps = budget.candidate_images(cfg, selection) // cfg.search.candidate_batch_size
    return {"steps": steps, "seconds": float(seconds), "flops": budget.candidate_flops(cfg, search_dir, selection)}


def variant_runs(cfg: RunConfig, cell: Cell) -> dict:
    """``{part prefix: run directory}`` where a cell's method trains pipeline stages of its own."""
    if cell.method == RKD:
        return {"": cfg.run_dir}
    if cell.method.startswith("ablation:"):
        return {"": variant_dir(cfg, cell.method.split(":", 1)[1])}
    if cell.method in CONTROLS:
        return {"": cfg.run_dir / "controls" / control_dir_name(cfg, cell.method)}
    if cell.method.startswith("conference"):
        return {"conference-student:": variant_dir(cfg, conference_student_name(cfg))}
    return {}


def trained_parts(ctx: TimedContext, cell: Cell, results: dict, since: float) -> dict:
    """Every part the cell trained (stages, a baseline's own fit) and its sweeps, with steps, seconds and FLOPs."""
    parts = {}
    for prefix, run_dir in variant_runs(ctx.cfg, cell).items():
        parts.update(stage_parts(ctx.cfg, run_dir, since, prefix))
    summary = results.get("summary", {})
    own = summary.get("budget", {}).get("parts", {}).get(summary.get("method"))
    if own is not None and cell.method != RKD:
        parts["fit:" + cell.method] = {"steps": own["steps"], "seconds": own["seconds"], "flops": own.get("flops")}
    parts["sweep"] = {"steps": len(results.get("records", [])), "seconds": ctx.sweep_seconds}
    return parts


def val_accuracy(cfg: RunConfig, cell: Cell, results: dict) -> float | None:
    """What the tuning grid compares: the method's best val accuracy over the training channels."""
    recorded = results.get("summary", {}).get("best_val_accuracy")
    if recorded is not None:
        return float(recorded)
    stage2 = cfg.run_dir / "stage2" / "stage.json"
    return read_json(stage2)["summary"]["best_val_accuracy"] if cell.method == RKD and stage2.exists() else None


def split_sizes(bundle) -> dict:
    return {split: int(bundle.splits[split].labels.numel()) for split in ("train", "val", "test")}


def run_teacher(base: RunConfig, accelerator, run_stages) -> dict:
    """The shared teacher and its cache (the base run up to its cache)."""
    started = time.time()
    inputs = run_stages(base, "cache")
    parts = stage_parts(base, base.run_dir, started)
    return {"parts": parts, "val_accuracy": None, "sizes": split_sizes(inputs.bundle), "trained": bool(parts)}


def run_method(base: RunConfig, cell: Cell, rkd_scale: float, accelerator, run_stages) -> tuple:
    """The cell's RKD-SC run (trained when it is the RKD-SC cell, else only checked) and its method."""
    started = time.time()
    rkd = rkd_config(base, cell.seed, cell.scale if cell.method == RKD else rkd_scale)
    if cell.method == RKD:  # the seed's run: its stages trained here, the teacher and cache linked
        inputs = run_variant(base, rkd, accelerator, run_stages, until="eval")
    else:  # finished by its RKD-SC cell: checked, never relinked (other cells may be reading it)
        inputs = run_stages(rkd, "eval")
    cfg = cell_config(rkd, cell)
    ctx = TimedContext(cfg, accelerator, inputs, run_stages, comparison_grid(cfg))
    jobs = {name: (runner, hashes) for name, runner, hashes in method_jobs(ctx)}
    runner, hashes = jobs[cell.method]
    directory = MethodDir(cell_dir(base, cell), method_hash(ctx, cell.method, hashes))
    reused = directory.done() is not None
    results = run_job(ctx, directory, cell.method, runner)
    if not accelerator.is_main_process:
        return cfg, {}
    parts = trained_parts(ctx, cell, results, started)
    stages = [name for name in parts if name != "sweep" and not name.startswith("fit:")]  # a fit: part is recorded
    measured = {"parts": parts, "val_accuracy": val_accuracy(cfg, cell, results), "sizes": split_sizes(ctx.bundle)}
    return cfg, {**measured, "trained": bool(stages) or not reused}


def run_cell(base: RunConfig, cell: Cell, rkd_scale: float, accelerator, run_stages, threads: int) -> dict:
    """Run ``cell`` (skipping whatever is done) and write its ``cell.json``; returns the record.

    The commit is read when the cell starts, since that is the code it runs; a checkout moved while it
    ran is recorded as well. A re-check that trained nothing keeps the first run's cost, commit and
    machine (``FIRST_RUN``) and notes itself under ``rechecked``.
    """
    started, commit = time.time(), git_commit()
    if cell.method == TEACHER:
        cfg, measured = base, run_teacher(base, accelerator, run_stages)
    else:
        cfg, measured = run_method(base, cell, rkd_scale, accelerator, run_stages)
    if not accelerator.is_main_process:
        return {}
    moved = {"git_commit_at_finish": now} if (now := git_commit()) != commit else {}
    trained, seconds = measured.pop("trained", True), time.time() - started
    record = {
        "cell": cell.key,
        "method": cell.method,
        "seed": cell.seed,
        "scale": cell.scale,
        "rkd_scale": rkd_scale,
        "fingerprint": cell_fingerprint(base, cfg, cell.method, rkd_scale),
        "lr": {f: field_value(cfg, f) for f in (method(cell.method).lr_fields if cell.method != TEACHER else ())},
        "teacher_hash": teacher_hash(cfg.run_dir),
        "machine": machine_record(threads),
        "precision": precision_record(cfg, accelerator),
        "seconds": seconds,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "git_commit": commit,
        **moved,
        "done": True,
        **measured,
    }
    previous = finished(base, cell, None)
    if not trained and previous is not None:
        recheck = {"finished": record["finished"], "git_commit": now, "seconds": seconds}
        record = {k: v for k, v in record.items() if k not in FIRST_RUN}
        record.update({k: previous[k] for k in FIRST_RUN if k in previous}, rechecked=recheck)
    write_record(cell_dir(base, cell), record)
    return record
