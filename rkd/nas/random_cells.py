"""Random cells of a given size: the control the search's cells must beat (searched vs random at equal size)."""

from __future__ import annotations

import random

from rkd.nas.complexity import NetworkShape, network_params
from rkd.nas.derive import SKIP
from rkd.nas.genotype import Genotype

MAX_RANDOM_SKIPS = 2  # as the search's cap: cells full of skips would be a strawman


def random_cell(rng: random.Random, ops: list, nodes: int) -> list:
    """One cell: each node takes two distinct earlier inputs, each through a random op; at most 2 skips."""
    while True:
        edges = []
        for node in range(nodes):
            for source in rng.sample(range(2 + node), 2):
                edges.append((rng.choice(ops), source))
        if sum(op == SKIP for op, _ in edges) <= MAX_RANDOM_SKIPS:
            return edges


def random_genotype(
    primitives: list,
    nodes: int,
    target_params: int,
    shape: NetworkShape,
    seed: int = 0,
    samples: int = 2000,
    tolerance: float = 0.03,
) -> Genotype:
    """Random cells (no ``none``) whose student is closest in size to ``target_params``.

    Draws until one is within ``tolerance`` of the target (or ``samples`` draws): a fixed small number
    of draws leaves small targets far off, since most random cells are larger than searched ones.
    Only parameters are counted (the global RNG is left untouched).
    """
    rng = random.Random(seed)
    ops = [p for p in primitives if p != "none"]
    concat = list(range(2, 2 + nodes))
    best: tuple[Genotype, int] | None = None
    for _ in range(samples):
        g = Genotype(random_cell(rng, ops, nodes), concat, random_cell(rng, ops, nodes), concat)
        params = network_params(g, shape)
        if best is None or abs(params - target_params) < abs(best[1] - target_params):
            best = (g, params)
        if abs(best[1] - target_params) <= tolerance * target_params:
            break
    assert best is not None, "samples must be >= 1"
    return best[0]
