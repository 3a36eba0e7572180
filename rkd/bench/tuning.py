"""The tuning grid every trained method gets alike: its learning rates times each multiplier, chosen on val.

Each tuned method (``rkd.bench.catalogue``: one with ``lr_fields``) trains once per multiplier of the
grid on the first training seed, under its budget rule; the multiplier with the best val accuracy
(over the training channel mixture, the same measure for every method) is chosen, and every other
seed runs at it. Ties go to the multiplier nearest 1, then to the smaller. ``tuning.json`` records
the grid, each multiplier's val accuracy and learning rates, and the choice.
"""

from __future__ import annotations

import math
from typing import Any

from rkd.bench.catalogue import RKD, tuned
from rkd.bench.layout import Cell, cell_dir
from rkd.bench.records import finished
from rkd.run.artifacts import atomic_write_json, read_json

GRID = (0.5, 1.0, 2.0)


def parse_grid(text: str | None) -> tuple:
    """``--grid 0.5,1,2`` -> the multipliers (positive, distinct, 1 included: the shipped rates are a candidate)."""
    if not text:
        return GRID
    try:
        grid = tuple(sorted({float(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        grid = ()
    if not grid or any(v <= 0 for v in grid) or 1.0 not in grid:
        raise ValueError(f"--grid {text!r} is invalid: expected distinct multipliers > 0 that include 1, e.g. 0.5,1,2")
    return grid


def grid_for(name: str, grid: tuple) -> tuple:
    """The multipliers a method's first seed trains at: the grid when it is tuned, else 1 alone."""
    return grid if tuned(name) else (1.0,)


def choose(val_accuracy: dict) -> float:
    """The multiplier with the best val accuracy; ties: nearest 1 (in ratio), then the smaller."""
    return max(val_accuracy, key=lambda x: (val_accuracy[x], -abs(math.log(x)), -x))


def choices(names: list, grid: tuple, seed: int, records: dict) -> dict:
    """``{method: chosen multiplier}`` for every method whose grid cells (first seed) have all finished."""
    chosen = {}
    for name in names:
        cells = [Cell(name, seed, x) for x in grid_for(name, grid)]
        found = [records.get(c.key) for c in cells]
        if all(r is not None for r in found):
            scores = {c.scale: r.get("val_accuracy") for c, r in zip(cells, found) if r is not None}
            if len(scores) == 1:
                chosen[name] = next(iter(scores))
            elif all(v is not None for v in scores.values()):
                chosen[name] = choose(scores)
    return chosen


def write_tuning(path, names: list, grid: tuple, seed: int, records: dict, chosen: dict) -> dict:
    """``tuning.json``: per tuned method, each multiplier's val accuracy and learning rates, and the choice."""
    out: dict[str, Any] = {
        "grid": list(grid),
        "seed": seed,
        "selection": "best val accuracy over the training channels",
        "methods": {},
    }
    for name in names:
        if not tuned(name):
            continue
        cells = [Cell(name, seed, x) for x in grid]
        out["methods"][name] = {
            "val_accuracy": {f"{c.scale:g}": (records.get(c.key) or {}).get("val_accuracy") for c in cells},
            "lr": {f"{c.scale:g}": (records.get(c.key) or {}).get("lr") for c in cells},
            "chosen": chosen.get(name),
        }
    atomic_write_json(path, out)
    return out


def swept_mean(records: list, snr_range: tuple = (-10.0, 20.0)) -> float | None:
    """Mean accuracy over a cell's swept records in ``snr_range`` (every channel and k): descriptive only."""
    swept = [
        r["accuracy"] for r in records if r.get("snr_db") is not None and snr_range[0] <= r["snr_db"] <= snr_range[1]
    ]
    return sum(swept) / len(swept) if swept else None


def grid_as_it_stands(base, names: list, grid: tuple, seed: int) -> dict:
    """The first seed's grid cells that have finished, whichever RKD-SC multiplier they were built on, and
    the choice each complete grid implies: what extending a grid shows before its dependents are made again.
    Per cell: val accuracy (what the choice reads), test mean, RKD-SC's multiplier it was built on, minutes."""
    records, cells, missing = {}, {}, []
    names = [n for n in dict.fromkeys([RKD, *names]) if tuned(n)]
    for name in names:
        for x in grid:
            cell = Cell(name, seed, x)
            record = finished(base, cell, None)
            if record is None:
                missing.append(cell.key)
                continue
            records[cell.key] = record
            path = cell_dir(base, cell) / "results.json"
            results = read_json(path) if path.exists() else {}
            cells[cell.key] = {
                "val_accuracy": record.get("val_accuracy"),
                "test_mean": swept_mean(results.get("records", [])),
                "built_on_rkd_sc": record.get("rkd_scale"),
                "minutes": round(record.get("seconds", 0.0) / 60, 1),
                "git_commit": record.get("git_commit"),
            }
    chosen = choices(names, grid, seed, records)
    return {"grid": list(grid), "seed": seed, "chosen": chosen, "missing": missing, "cells": cells}
