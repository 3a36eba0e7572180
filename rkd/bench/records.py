"""What a finished cell records (``cell.json``), and the comparison's view of the chosen cells.

A cell is done when its ``cell.json`` holds the fingerprint of the config it would run with now
(``rkd.bench.layout.cell_fingerprint``). The comparison gathers the chosen cells (symbolic links)
into the layout ``rkd.evaluation.compare`` reads, after two refusals: a cell that was asked for
but never finished, and cells that were made with different teachers (by content hash).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rkd.bench.layout import Cell, cell_dir, view_dir
from rkd.config import RunConfig, save_config
from rkd.run.artifacts import atomic_write_json, read_json
from rkd.run.fingerprint import tree_digest

CELL_RECORD = "cell.json"


class BenchError(RuntimeError):
    """The benchmark cannot go on as asked; the message names the cells and the command that fixes it."""


def teacher_hash(run_dir: Path) -> str:
    """The content hash of a run's trained teacher (every file of ``teacher/model``)."""
    return tree_digest(Path(run_dir) / "teacher" / "model")


def write_record(directory: Path, record: dict) -> None:
    atomic_write_json(Path(directory) / CELL_RECORD, record)


def read_record(directory: Path) -> dict | None:
    path = Path(directory) / CELL_RECORD
    return read_json(path) if path.exists() else None


def finished(base: RunConfig, cell: Cell, fingerprint: str | None) -> dict | None:
    """The cell's record when it finished with ``fingerprint`` (None: any finished record), else None."""
    record = read_record(cell_dir(base, cell))
    if record is None or not record.get("done"):
        return None
    if fingerprint is not None and record.get("fingerprint") != fingerprint:
        return None
    return record


def check_one_teacher(records: dict) -> str | None:
    """The one teacher hash of ``{cell key: record}``; raises ``BenchError`` naming the cells when there are more."""
    by_teacher: dict = {}
    for key, record in sorted(records.items()):
        by_teacher.setdefault(record.get("teacher_hash"), []).append(key)
    if len(by_teacher) > 1:
        groups = "; ".join(f"teacher {str(h)[:12]}: {', '.join(keys)}" for h, keys in by_teacher.items())
        raise BenchError(
            f"refusing to compare cells made with different teachers ({groups}): rerun the cells of the stale "
            f"teacher (delete their directories under cells/ and run the bench again)"
        )
    return next(iter(by_teacher), None)


def check_complete(expected: list, records: dict, command: str) -> None:
    """Every expected cell finished, or ``BenchError`` naming the missing ones and the command that makes them."""
    missing = [cell.key for cell in expected if cell.key not in records]
    if missing:
        methods = ",".join(sorted({parse.split("@")[0] for parse in missing}))
        seeds = ",".join(sorted({parse.split("@")[1].removeprefix("seed") for parse in missing}, key=int))
        raise BenchError(
            f"the comparison needs cells that have not finished: {', '.join(missing)}; make them with "
            f"`{command} --only {methods} --seeds {seeds}` (comparison.json left unchanged)"
        )


def check_results(base: RunConfig, cells: list, main_eval: Path) -> None:
    """Every chosen cell's results and the first seed's RKD-SC evaluation are on disk, or ``BenchError``."""
    lost = [cell.key for cell in cells if not (cell_dir(base, cell) / "results.json").exists()]
    if not (Path(main_eval) / "results.json").exists():
        lost.append(f"{main_eval} (RKD-SC's evaluation)")
    if lost:
        raise BenchError(
            f"cells recorded as done have no results (deleted?): {', '.join(lost)}; delete their cell.json "
            f"and run the bench again"
        )


def _link(target: Path, source: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(Path(source).resolve(), target_is_directory=True)


def assemble_view(base: RunConfig, main: RunConfig, chosen: list, seeds: list) -> Path:
    """``runs/bench/view``: the chosen cells of every seed as ``baselines/<method>`` (first seed) and
    ``seeds/seed-<s>/baselines/<method>``, with the first seed's RKD-SC evaluation and config beside them."""
    view = view_dir(base)
    for stale in ("baselines", "seeds", "eval"):
        path = view / stale
        if path.is_symlink():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)  # links only: rmtree unlinks them without following
    view.mkdir(parents=True, exist_ok=True)
    save_config(main, view / "config.yaml")
    _link(view / "eval", main.run_dir / "eval")
    for cell in chosen:
        seed_root = view if cell.seed == seeds[0] else view / "seeds" / f"seed-{cell.seed}"
        _link(seed_root / "baselines" / cell.method.replace(":", "-"), cell_dir(base, cell))
    return view
