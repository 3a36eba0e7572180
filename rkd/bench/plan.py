"""Which cells the benchmark runs, in what order, and which of them the comparison reads.

The order is a dependency graph, resolved as the tuning grid's choices become known:

1. the teacher cell (the shared teacher and its cache);
2. RKD-SC on the first seed at every multiplier of the grid;
3. once RKD-SC's multiplier is chosen: RKD-SC on every other seed at it, and on each seed (once that
   seed's RKD-SC run is finished) the untuned methods, and on the first seed every tuned method at
   every multiplier;
4. once a method's multiplier is chosen: that method on every other seed.
"""

from __future__ import annotations

from rkd.baselines.variants import ablation_overrides
from rkd.bench.catalogue import RKD, STAGE2_TERMS, method
from rkd.bench.layout import TEACHER, Cell, with_overrides
from rkd.bench.tuning import grid_for
from rkd.config import RunConfig


def parse_seeds(text: str | None, default: int = 5) -> list:
    """``--seeds 0,1,2`` or ``--seeds 5`` (the first five) -> distinct seeds >= 0, the first one tunes."""
    if not text:
        return list(range(default))
    if text.strip() == "0":
        raise ValueError(
            "--seeds 0 is a count of none: for seed 0 alone write --seeds 1 (a count) or --seeds 0, (a list)"
        )
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return list(range(count))
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r} is invalid: expected a count >= 1 (e.g. 5) or distinct seeds >= 0 (0,1,2)")
    return seeds


def dropped_ablations(base: RunConfig, names: list) -> dict:
    """``{ablation: why}`` for stage-2 term ablations that are RKD-SC itself on this config (same stage-2 loss)."""
    dropped = {}
    for name in names:
        if name in STAGE2_TERMS:
            variant = with_overrides(base, ablation_overrides(name.split(":", 1)[1], base))
            if variant.stage2_loss == base.stage2_loss:
                dropped[name] = "its stage-2 loss is the default's: its cells are RKD-SC's"
    return dropped


def cell_graph(names: list, seeds: list, grid: tuple, chosen: dict) -> dict:
    """``{cell: cells it waits for}`` for every cell known under the choices made so far (``chosen``)."""
    first, teacher = seeds[0], Cell(TEACHER, 0)
    graph: dict = {teacher: ()}
    for x in grid_for(RKD, grid):
        graph[Cell(RKD, first, x)] = (teacher,)
    rkd_x = chosen.get(RKD) if len(grid_for(RKD, grid)) > 1 else 1.0
    if rkd_x is None:
        return graph
    anchor = {s: Cell(RKD, s, rkd_x) for s in seeds}
    for s in seeds[1:]:
        graph[anchor[s]] = (teacher,)
    for name in names:
        if name == RKD:
            continue
        for x in grid_for(name, grid):
            graph[Cell(name, first, x)] = (anchor[first],)
        own = chosen.get(name) if len(grid_for(name, grid)) > 1 else 1.0
        if own is not None:
            for s in seeds[1:]:
                graph[Cell(name, s, own)] = (anchor[s],)
    return graph


def comparison_cells(names: list, seeds: list, grid: tuple, chosen: dict) -> list:
    """The cells the comparison reads: every method at its chosen multiplier on every seed; a method
    still being tuned stands for its grid cells (those are what is missing)."""
    cells = []
    for name in [RKD] + [n for n in names if n != RKD]:
        candidates = grid_for(name, grid)
        own = candidates[0] if len(candidates) == 1 else chosen.get(name)
        if own is None:
            cells += [Cell(name, seeds[0], x) for x in candidates]
        else:
            cells += [Cell(name, s, own) for s in seeds]
    return cells


def describe(names: list, seeds: list, grid: tuple, dropped: dict) -> list:
    """The plan's lines: per method, its cells (the grid on the first seed, then one per seed) and its question."""
    lines = [f"seeds {seeds}; learning-rate grid x{', x'.join(f'{g:g}' for g in grid)} on seed {seeds[0]}"]
    for name in [RKD] + [n for n in names if n != RKD]:
        points = len(grid_for(name, grid))
        cells = f"{points} on seed {seeds[0]}, then 1 per other seed" if points > 1 else "1 per seed"
        lines.append(f"  {name:28s} {points + len(seeds) - 1:2d} cells ({cells}): {method(name).question}")
    for name, why in dropped.items():
        lines.append(f"  {name:28s} dropped: {why}")
    return lines
