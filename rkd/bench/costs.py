"""The benchmark's cost model: each cell's parts, their full-size step counts, and seconds per step measured.

A cell's cost is the sum over the parts it trains of (steps at full size) x (seconds per step of that
part), plus its sweeps (seconds per test image, times the test images) and a fixed overhead (process
start, data and cache loading, checks). Step counts follow from the config and the split sizes the
way the runs compute them (epochs x batches, the budget rules of ``rkd.baselines.trained_link``);
seconds per step come from a calibration: a short benchmark of every method on the same models and
batch sizes with small splits and few epochs (``benchmarks/bench.py calibrate``), whose cell records
hold each part's steps and seconds. The wall time of the whole plan is a list-scheduling simulation
of the cells on the workers, in the scheduler's order and with its dependencies.
"""

from __future__ import annotations

import math
import statistics

from rkd.baselines import budget
from rkd.baselines.controls import CONVERGENCE_FACTOR
from rkd.bench.catalogue import RKD
from rkd.bench.layout import TEACHER, Cell
from rkd.bench.plan import cell_graph
from rkd.bench.tuning import grid_for
from rkd.config import RunConfig

PER_IMAGE = {"cache": "all", "eval": "test", "sweep": "test"}  # parts whose cost follows a split's size
# the pipeline's stages (the same models whichever method runs them): their seconds per step are pooled
POOLED = ("teacher", "cache", "search", "candidates", "stage1", "stage2", "eval", "conference-student:stage1")
POOLED_KEY = "pipeline"
WHOLE_BUDGET = ("deep-jscc-budget", "deep-jscc-kd")
SEED_BUDGET = ("deep-jscc", "adjscc", "vfe")


def _batches(rows: int, batch: int, drop_last: bool) -> int:
    return rows // batch if drop_last else math.ceil(rows / batch)


def seed_images(cfg: RunConfig, n_train: int) -> dict:
    """Training images of RKD-SC's parts at full size: the shared teacher, and the search, stage 1 and stage 2 of a seed."""
    s = cfg.search
    rows = min(s.max_train or n_train, n_train)
    supernet = s.train.epochs * _batches(rows, s.train.batch_size, False) * s.train.batch_size
    selection = None
    if s.candidates > 1:
        screened = s.candidate_survivors is not None and s.candidate_survivors < s.candidates
        selection = {
            "train_rows": min(s.candidate_max_train or n_train, n_train),
            "candidates": s.candidates,
            "survivors": s.candidate_survivors if screened else s.candidates,
            "epochs": s.candidate_epochs,
            "screened": screened,
            "screen_epochs": s.candidate_screen_epochs,
        }
    stage = {k: getattr(cfg, k) for k in ("stage1", "stage2")}
    t = cfg.teacher.train
    return {
        "teacher": t.epochs * _batches(n_train, t.batch_size, False) * t.batch_size,
        "supernet": supernet if s.enabled else 0,
        "candidates": budget.candidate_images(cfg, selection) if s.enabled else 0,
        **{k: c.epochs * _batches(n_train, c.batch_size, True) * c.batch_size for k, c in stage.items()},
    }


def rkd_steps(cfg: RunConfig, n_train: int, images: dict) -> dict:
    steps = {
        k: _batches(n_train, getattr(cfg, k).batch_size, True) * getattr(cfg, k).epochs for k in ("stage1", "stage2")
    }
    if cfg.search.enabled:
        steps["search"] = images["supernet"] // cfg.search.train.batch_size
        steps["candidates"] = images["candidates"] // cfg.search.candidate_batch_size
    return steps


def method_steps(cfg: RunConfig, name: str, sizes: dict) -> dict:
    """``{part: steps}`` a cell of ``name`` trains at full size (per-image parts: the images they pass)."""
    n = sizes["train"]
    images = seed_images(cfg, n)
    rkd = rkd_steps(cfg, n, images)
    sweep = {"sweep": sizes["test"]}
    if name == TEACHER:
        return {"teacher": images["teacher"] // cfg.teacher.train.batch_size, "cache": sum(sizes.values())}
    if name == RKD:
        return {**rkd, "eval": sizes["test"], **sweep}
    if name in ("ablation:no-kd", "random-cells"):
        return {"stage1": rkd["stage1"], "stage2": rkd["stage2"], **sweep}
    if name.startswith("ablation:"):
        return {"stage2": rkd["stage2"], **sweep}
    if name == "no-teacher":
        seen = images["supernet"] + images["candidates"] + images["stage1"]
        return {"stage1": math.ceil(seen / cfg.stage1.batch_size), "stage2": rkd["stage2"], **sweep}
    if name == "no-teacher-converged":
        factor = CONVERGENCE_FACTOR
        return {"stage1": rkd["stage1"] * factor, "stage2": rkd["stage2"] * factor, **sweep}
    if name in SEED_BUDGET or name in WHOLE_BUDGET:
        parts = ("supernet", "candidates", "stage1", "stage2") + (("teacher",) if name in WHOLE_BUDGET else ())
        batch = (cfg.baselines.vfe_train if name == "vfe" else cfg.baselines.jscc_train).batch_size
        return {f"fit:{name}": math.ceil(sum(images[p] for p in parts) / batch), **sweep}
    if name == "conference":
        c, b = cfg.baselines.conference_stage1, cfg.baselines
        student = cfg.stage1.epochs if b.match_budget else c.epochs
        return {
            "conference-student:stage1": student * _batches(n, c.batch_size, True),
            "fit:conference": b.conference_train.epochs * _batches(n, b.conference_train.batch_size, True),
            **sweep,
        }
    return dict(sweep)  # the digital schemes train nothing


def _count(part: str, cost: dict, sizes: dict) -> int:
    """What a part's seconds are per: its steps, or the images of the split it passes (``PER_IMAGE``)."""
    unit = PER_IMAGE.get(part)
    if unit is None:
        return cost["steps"]
    return sum(sizes.values()) if unit == "all" else sizes.get(unit, 0)


def unit_costs(records: list) -> dict:
    """Seconds per step (per image for ``PER_IMAGE`` parts) from calibration cell records (each with ``parts``
    and ``sizes``), and the median per-cell overhead. The pipeline's stages train the same models in every
    method that runs them, so theirs are pooled over every record (seconds over steps: the long runs, least
    diluted by a stage's fixed costs, weigh most); a method's own fit and sweep are its own. ``flops_per_step``:
    the training FLOPs of one step of each trained part that counted them, per method and, for the pipeline's
    stages, pooled too (for methods that reuse a stage they did not count: a count is exact for its own model,
    and depends on the models and batch sizes, not on the machine or the split sizes)."""
    units: dict = {}
    pooled: dict = {}
    flops: dict = {}
    overheads = []
    for record in records:
        sizes = record.get("sizes", {})
        for part, cost in record.get("parts", {}).items():
            count = _count(part, cost, sizes)
            if not count:
                continue
            if part in POOLED:
                _pool(pooled, ("seconds", part), cost["seconds"], count)
            else:
                units.setdefault(record["method"], {})[part] = cost["seconds"] / count
            if cost.get("flops") is not None and part not in PER_IMAGE:
                flops.setdefault(record["method"], {})[part] = cost["flops"] / count
                if part in POOLED:
                    _pool(pooled, ("flops", part), cost["flops"], count)
        spent = sum(cost["seconds"] for cost in record.get("parts", {}).values())
        overheads.append(max(0.0, record["seconds"] - spent))
    for (kind, part), (amount, count) in pooled.items():
        (units if kind == "seconds" else flops).setdefault(POOLED_KEY, {})[part] = amount / count
    units.setdefault(POOLED_KEY, {})
    overhead = statistics.median(overheads) if overheads else 0.0
    return {"per_unit": units, "overhead": overhead, "flops_per_step": flops}


def _pool(pooled: dict, key: tuple, amount: float, count: int) -> None:
    total = pooled.setdefault(key, [0.0, 0])
    total[0], total[1] = total[0] + amount, total[1] + count


def with_measured(calibrated: dict, records: list) -> tuple[dict, int]:
    """``calibrated`` (``unit_costs``' output) with every part that this benchmark's own finished cells
    measured at full size replaced by their cost, and their median overhead; also the count of parts
    replaced. A calibration is short and small; a finished cell is the cost itself."""
    if not records:
        return calibrated, 0
    measured = unit_costs(records)
    per_unit = {method: dict(parts) for method, parts in calibrated["per_unit"].items()}
    replaced = 0
    for method, parts in measured["per_unit"].items():
        per_unit.setdefault(method, {}).update(parts)
        replaced += len(parts)
    flops = {owner: dict(parts) for owner, parts in calibrated.get("flops_per_step", {}).items()}
    for owner, parts in measured["flops_per_step"].items():
        flops.setdefault(owner, {}).update(parts)
    return {"per_unit": per_unit, "overhead": measured["overhead"], "flops_per_step": flops}, replaced


def _priced(cfg: RunConfig, cell: Cell, sizes: dict, table: dict, skip: tuple = ()) -> float | None:
    """Sum over a cell's full-size parts (``skip`` left out) of their count x their unit in ``table``: the
    method's own, else the pooled pipeline's, else RKD-SC's (ablations and controls sweep as RKD-SC does);
    None when ``table`` lacks one of them."""
    own, pooled, rkd = (table.get(name, {}) for name in (cell.method, POOLED_KEY, RKD))
    total = 0.0
    for part, count in method_steps(cfg, cell.method, sizes).items():
        if part in skip:
            continue
        unit = own.get(part, pooled.get(part, rkd.get(part)))
        if unit is None:
            return None
        total += unit * count
    return total


def cell_seconds(cfg: RunConfig, cell: Cell, sizes: dict, units: dict) -> float | None:
    """A cell's estimated seconds at full size; None when the calibration lacks one of its parts."""
    parts = _priced(cfg, cell, sizes, units["per_unit"])
    return None if parts is None else units["overhead"] + parts


def cell_flops(cfg: RunConfig, cell: Cell, sizes: dict, units: dict) -> float | None:
    """A cell's training FLOPs at full size (its trained parts' steps x FLOPs per step); None when a part's
    FLOPs were not counted. Sweeps, the cache pass and the evaluation train nothing."""
    per_step = units.get("flops_per_step")
    if not per_step:  # a calibration older than the count
        return None
    return _priced(cfg, cell, sizes, per_step, skip=tuple(PER_IMAGE))


def simulate(order: list, deps: dict, seconds: dict, workers: int) -> float:
    """Wall seconds of running ``order``'s cells on ``workers``: whenever a worker is free, the first cell
    in ``order`` whose ``deps`` have finished starts (the scheduler's rule)."""
    finish: dict = {}
    running: list = []  # (end, position, cell)
    pending, now = list(order), 0.0
    while pending or running:
        ready = [c for c in pending if all(d in finish for d in deps[c])]
        while ready and len(running) < workers:
            cell = ready.pop(0)
            pending.remove(cell)
            running.append((now + seconds[cell], order.index(cell), cell))
        if not running:  # what is left waits on cells that are not in the plan
            break
        running.sort()
        now, _, cell = running.pop(0)
        finish[cell] = now
    return max(finish.values(), default=0.0)


def full_graph(names: list, seeds: list, grid: tuple, known: dict | None = None) -> tuple:
    """``(order, deps)`` of every cell the plan will run: the choices ``known`` so far, every other as if it
    were ``x1``, with the tuning's waits (a tuned method's other seeds wait for its whole grid) made explicit."""
    chosen = {name: 1.0 for name in [RKD, *names]} | (known or {})
    graph = cell_graph(names, seeds, grid, chosen)
    deps = {}
    for cell, waits in graph.items():
        extra: tuple[Cell, ...] = ()
        if cell.method != TEACHER and cell.seed != seeds[0] and len(grid_for(cell.method, grid)) > 1:
            extra = tuple(Cell(cell.method, seeds[0], x) for x in grid)
        if cell.method != RKD and cell.method != TEACHER and len(grid_for(RKD, grid)) > 1:
            extra += tuple(Cell(RKD, seeds[0], x) for x in grid)
        deps[cell] = tuple(dict.fromkeys(waits + extra))
    order = sorted(graph, key=lambda c: (c.method != TEACHER, c.method != RKD, list(graph).index(c)))
    return order, deps


def estimate(
    cfg: RunConfig,
    names: list,
    seeds: list,
    grid: tuple,
    sizes: dict,
    units: dict,
    workers: int,
    done: frozenset | set = frozenset(),
    chosen: dict | None = None,
) -> dict:
    """The plan's cost: cells, CPU seconds (one thread each), wall seconds on ``workers`` and, per method, the
    training FLOPs of one of its cells (the shared teacher's in the teacher cell's own);
    cells whose keys are in ``done`` cost nothing (what is left of a benchmark stopped part-way), and the
    grid's choices made so far (``chosen``) decide which multiplier the other seeds run at."""
    order, deps = full_graph(names, seeds, grid, chosen)
    seconds: dict = {}
    per_method: dict = {}
    unknown: set = set()
    for cell in order:
        cost = 0.0 if cell.key in done else cell_seconds(cfg, cell, sizes, units)
        if cost is None:
            unknown.add(cell.method)
            cost = 0.0
        seconds[cell] = cost
        if cell.method not in per_method:  # a method's training FLOPs are alike for every seed and multiplier
            per_method[cell.method] = {
                "cells": 0,
                "seconds": 0.0,
                "flops_per_cell": cell_flops(cfg, cell, sizes, units),
            }
        entry = per_method[cell.method]
        entry["cells"] += 1
        entry["seconds"] += cost
    return {
        "cells": len(order),
        "cpu_seconds": sum(seconds.values()),
        "wall_seconds": simulate(order, deps, seconds, workers),
        "workers": workers,
        "per_method": per_method,
        "uncalibrated": sorted(unknown),
    }
