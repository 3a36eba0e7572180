"""Runs the benchmark's cells in worker processes, as many at once as asked, each with its own threads.

A cell is done when its ``cell.json`` holds the fingerprint of the config it would run with now, so a
benchmark stopped at any point resumes by running the same command: finished cells are skipped
without starting a process, and a cell that was killed resumes inside its stages (their checkpoints).
Each cell runs in its own process (``command(cell, rkd_scale, threads)`` gives its command line)
with ``OMP_NUM_THREADS`` set, its output in ``runs/bench/logs/<cell>.log``; the teacher cell, which
everything waits for, gets every worker's threads. Among ready cells RKD-SC's go first (the others
wait for them), then the order of the plan. A failed cell is reported and its dependants wait; the
rest go on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rkd.bench.catalogue import RKD
from rkd.bench.layout import TEACHER, Cell, cell_config, cell_fingerprint, logs_dir, rkd_config
from rkd.bench.plan import cell_graph
from rkd.bench.records import finished
from rkd.bench.tuning import choices
from rkd.config import RunConfig

POLL_SECONDS = 2.0


@dataclass
class Bench:
    """What one benchmark run is: its base config, methods, seeds and grid."""

    base: RunConfig
    names: list
    seeds: list
    grid: tuple
    _fingerprints: dict = field(default_factory=dict)

    def fingerprint(self, cell: Cell, rkd_scale: float) -> str:
        key = (cell, rkd_scale)
        if key not in self._fingerprints:
            if cell.method == TEACHER:
                cfg = self.base
            else:
                rkd = rkd_config(self.base, cell.seed, cell.scale if cell.method == RKD else rkd_scale)
                cfg = cell_config(rkd, cell)
            self._fingerprints[key] = cell_fingerprint(self.base, cfg, cell.method, rkd_scale)
        return self._fingerprints[key]

    def rkd_scale(self, chosen: dict, cell: Cell) -> float:
        """The RKD-SC multiplier a cell builds on: its own for RKD-SC, the chosen one for the rest (teacher: none)."""
        if cell.method == TEACHER:
            return 1.0
        return cell.scale if cell.method == RKD else chosen.get(RKD, 1.0)

    def made_again(self, cell: Cell, rkd_scale: float) -> str | None:
        """Why a cell that finished once is not done under this plan (None: done, or never finished)."""
        record = finished(self.base, cell, None)
        if record is None or record.get("fingerprint") == self.fingerprint(cell, rkd_scale):
            return None
        was = record.get("rkd_scale")
        if cell.method != TEACHER and was is not None and was != rkd_scale:
            return f"it was made on RKD-SC at x{was:g}, this plan builds on x{rkd_scale:g}"
        commit = str(record.get("git_commit") or "unknown")[:12]
        return f"a field it reads differs from the config it was made from (at commit {commit})"

    def remade(self, records: dict, chosen: dict, graph: dict) -> dict:
        """``{cell key: why}`` for each cell of ``state()``'s graph that finished once and will be made again."""
        reasons = {c.key: self.made_again(c, self.rkd_scale(chosen, c)) for c in graph if c.key not in records}
        return {key: why for key, why in reasons.items() if why}

    def state(self, graph: dict | None = None) -> tuple:
        """``(records of the finished cells, choices made, the graph)``, read again from disk."""
        records: dict = {}
        chosen: dict = {}
        while True:  # each choice can reveal more cells; stop when the graph no longer grows
            graph = cell_graph(self.names, self.seeds, self.grid, chosen)
            for cell in graph:
                if cell.key not in records:
                    record = finished(self.base, cell, self.fingerprint(cell, self.rkd_scale(chosen, cell)))
                    if record is not None:
                        records[cell.key] = record
            more = choices([RKD, *self.names], self.grid, self.seeds[0], records)
            if more == chosen:
                return records, chosen, graph
            chosen = more


def priority(cell: Cell, order: list) -> tuple:
    return (cell.method != TEACHER, cell.method != RKD, order.index(cell))


def run_cells(
    bench: Bench, launch: Callable, parallel: int, threads: int, log: Callable = print, recheck: bool = False
) -> dict:
    """Run every cell not yet done, ``parallel`` at a time; returns ``{"done", "failed", "waiting", "chosen"}``.

    ``launch(cell, rkd_scale, threads)`` starts a cell and returns what ``poll()`` tells the exit code of
    (``subprocess_launcher``: a worker process; a launcher that runs the cell before returning works too).
    """
    running: dict = {}  # cell -> (process, started)
    failed: set = set()
    rechecked: set = set()
    logs_dir(bench.base).mkdir(parents=True, exist_ok=True)
    while True:
        records, chosen, graph = bench.state()
        if recheck:  # run every cell once anyway: each skips inside what its own hashes say is done
            records = {k: v for k, v in records.items() if k in rechecked}
        order = list(graph)
        ready = [
            c
            for c in order
            if c.key not in records
            and c not in running
            and c.key not in failed
            and all(d.key in records for d in graph[c])
        ]
        for cell in sorted(ready, key=lambda c: priority(c, order))[: max(0, parallel - len(running))]:
            cell_threads = threads * parallel if cell.method == TEACHER else threads
            rkd_scale = bench.rkd_scale(chosen, cell)
            why = bench.made_again(cell, rkd_scale)
            again = f"; made again: {why}" if why else ""
            log(
                f"[bench] start {cell.key} ({len(running) + 1} running, {len(records)} done, {len(order)} known{again})"
            )
            started = time.time()  # before the launch: an in-process launch returns when the cell has finished
            running[cell] = (launch(cell, rkd_scale, cell_threads), started)
        if not running:
            waiting = [c.key for c in order if c.key not in records and c.key not in failed]
            return {"done": sorted(records), "failed": sorted(failed), "waiting": waiting, "chosen": chosen}
        if all(process.poll() is None for process, _ in running.values()):
            time.sleep(POLL_SECONDS)
        for cell, (process, started) in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            del running[cell]
            rechecked.add(cell.key)
            minutes = (time.time() - started) / 60
            if code != 0:
                failed.add(cell.key)
                log(f"[bench] FAILED {cell.key} (exit {code}, {minutes:.1f} min): see {log_path(bench, cell)}")
            elif finished(bench.base, cell, bench.fingerprint(cell, bench.rkd_scale(chosen, cell))) is None:
                failed.add(cell.key)  # started again, it would skip its finished work and end the same way
                log(
                    f"[bench] FAILED {cell.key} ({minutes:.1f} min): it exited 0 but its cell.json does not hold this "
                    f"plan's fingerprint (did the code or the config change while the benchmark ran?); run the same "
                    f"command again"
                )
            else:
                log(f"[bench] done {cell.key} in {minutes:.1f} min")


def log_path(bench: Bench, cell: Cell):
    return logs_dir(bench.base) / f"{cell.key.replace(':', '-')}.log"


def subprocess_launcher(bench: Bench, command: Callable) -> Callable:
    """``launch``: the cell's ``command(cell, rkd_scale, threads)`` in a worker process, output to its log file."""

    def launch(cell: Cell, rkd_scale: float, threads: int) -> subprocess.Popen:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        with open(log_path(bench, cell), "a") as handle:  # the child keeps its own copy of the file
            return subprocess.Popen(
                command(cell, rkd_scale, threads),
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
            )

    return launch


class Finished:
    """A cell run to its end before ``launch`` returned (in this process), polled like a worker process."""

    def __init__(self, code: int) -> None:
        self.code = code

    def poll(self) -> int:
        return self.code


def python_command(script: str, config_args: list) -> Callable:
    """``command(cell, rkd_scale, threads)`` running ``script cell ...`` with this interpreter and the same config."""

    def command(cell: Cell, rkd_scale: float, threads: int) -> list:
        return [
            sys.executable,
            script,
            "cell",
            cell.key,
            "--rkd-scale",
            f"{rkd_scale:g}",
            "--threads",
            str(threads),
            *config_args,
        ]

    return command
