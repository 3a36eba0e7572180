"""The benchmark's comparison: the chosen cells checked (all finished, one teacher), gathered, compared."""

from __future__ import annotations

from rkd.baselines.registry import METHODS
from rkd.bench.catalogue import RKD
from rkd.bench.layout import rkd_config
from rkd.bench.plan import comparison_cells
from rkd.bench.records import assemble_view, check_complete, check_one_teacher, check_results
from rkd.bench.scheduler import Bench
from rkd.bench.tuning import write_tuning
from rkd.evaluation.compare import write_comparison


def cell_summary(record: dict) -> dict:
    """What the results keep of a cell's record: where and how it ran, what it cost, what it chose from."""
    keep = ("cell", "seconds", "teacher_hash", "machine", "precision", "lr", "val_accuracy", "git_commit", "parts")
    return {k: record.get(k) for k in keep}


def write_report(bench: Bench, command: str) -> dict:
    """``runs/bench/view/compare`` from the chosen cells, or ``BenchError`` naming what is missing or mixed."""
    records, chosen, _ = bench.state()
    base, seeds = bench.base, bench.seeds
    tuning = write_tuning(base.run_dir / "tuning.json", [RKD, *bench.names], bench.grid, seeds[0], records, chosen)
    expected = comparison_cells(bench.names, seeds, bench.grid, chosen)
    check_complete(expected, records, command)
    teacher = check_one_teacher({c.key: records[c.key] for c in expected})
    main = rkd_config(base, seeds[0], chosen.get(RKD, 1.0))
    check_results(base, expected, main.run_dir / "eval")
    view = assemble_view(base, main, expected, seeds)
    path = write_comparison(
        view,
        main.baselines.compare_k or max(main.codec.rates),
        main.eval.rate_margin,
        seeds=seeds,
        methods=[METHODS[n].label if n in METHODS else n for n in [RKD, *bench.names]],
        noninferiority_margin=main.baselines.noninferiority_margin,
    )
    return {
        "comparison": str(path),
        "view": str(view),
        "teacher_hash": teacher,
        "teacher": cell_summary(records.get("teacher", {})),
        "seeds": seeds,
        "tuning": tuning,
        "cells": {c.key: cell_summary(records[c.key]) for c in expected},
    }
