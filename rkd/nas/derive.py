"""From architecture weights to a discrete genotype: the DARTS top-2 rule plus a skip-connection cap.

A search cell with ``nodes`` intermediate nodes has one edge from every earlier state into every node:
node ``i`` (0-based) reads the two cell inputs and nodes ``0..i-1``, so it has ``2 + i`` incoming edges,
and edges are numbered node by node (``edge_layout``). Architecture weights are ``[edges, ops]``
tables, row ``e`` being the softmax over the candidate ops of edge ``e``.

Derivation (DARTS): for each node, rank its incoming edges by their strongest op other than
``none`` (a "none" edge is a switched-off edge, never an op to keep), keep the top two, and keep the
strongest non-``none`` op on each. With edge normalisation (PC-DARTS), an edge's op weights are
scaled by its edge weight first, so edge weights decide which edges survive.

Skip-connection collapse guard: parameter-free skips win DARTS's bilevel game because they make the
supernet easy to optimise, not because the derived cell is good (Chen et al. 2019, Liang et al. 2019).
With ``max_skips`` set, a derived cell keeps at most that many ``skip_connect`` edges: the skips
with the largest weights stay, every other one is replaced by that edge's strongest op that is
neither ``none`` nor ``skip_connect`` (as P-DARTS does).

``sample_genotype`` draws cells from the same weights instead of taking their top: the proposals
that the search's candidate selection (``rkd.stages.selection``) trains and ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rkd.nas.genotype import Genotype, validate_genotype

NONE = "none"
SKIP = "skip_connect"
SKIP_REDRAWS = 100  # a drawn cell over the skip cap is drawn again this many times, then capped


def edge_layout(nodes: int) -> list[tuple[int, int]]:
    """``(node, input_index)`` of every edge, in the order the architecture tables use."""
    if nodes < 1:
        raise ValueError(f"nodes = {nodes!r} is invalid: expected an integer >= 1")
    return [(node, source) for node in range(nodes) for source in range(2 + node)]


def node_slices(nodes: int) -> list[slice]:
    """The rows of an ``[edges, ...]`` table that belong to each node."""
    slices, start = [], 0
    for node in range(nodes):
        slices.append(slice(start, start + 2 + node))
        start += 2 + node
    return slices


def num_edges(nodes: int) -> int:
    return sum(2 + node for node in range(nodes))


def normalize_edges(betas: torch.Tensor, nodes: int) -> torch.Tensor:
    """PC-DARTS edge weights: a softmax over each node's incoming edges (so they sum to 1 per node)."""
    if betas.shape != (num_edges(nodes),):
        raise ValueError(
            f"edge parameters have shape {tuple(betas.shape)}, expected ({num_edges(nodes)},) for {nodes} nodes"
        )
    return torch.cat([torch.softmax(betas[s], dim=-1) for s in node_slices(nodes)])


def _derive_cell(
    weights: torch.Tensor,
    primitives: Sequence[str],
    nodes: int,
    edge_weights: torch.Tensor | None,
    max_skips: int | None,
) -> list[tuple[str, int]]:
    weights = weights.detach().float().cpu()
    if edge_weights is not None:
        weights = weights * edge_weights.detach().float().cpu()[:, None]
    names = list(primitives)
    real = [i for i, name in enumerate(names) if name != NONE]
    if not real:
        raise ValueError(f"primitives {names} hold only 'none': no op can be derived")
    chosen: list[tuple[int, int, int]] = []  # (edge row, op column, input index)
    for rows in node_slices(nodes):
        strengths = [(float(weights[row, real].max()), row) for row in range(rows.start, rows.stop)]
        # strongest first; ties keep the lower input index (a stable sort on the negated strength)
        top = sorted(strengths, key=lambda item: -item[0])[:2]
        for _, row in top:
            column = max(real, key=lambda i: (float(weights[row, i]), -i))
            chosen.append((row, column, row - rows.start))
    if max_skips is not None and SKIP in names:
        skip = names.index(SKIP)
        others = [i for i in real if i != skip]
        skips = [k for k, (_, column, _) in enumerate(chosen) if column == skip]
        if len(skips) > max_skips and others:
            ranked = sorted(skips, key=lambda k: -float(weights[chosen[k][0], skip]))
            for k in ranked[max_skips:]:
                row, _, source = chosen[k]
                chosen[k] = (row, max(others, key=lambda i: (float(weights[row, i]), -i)), source)
    return [(names[column], source) for _, column, source in chosen]


@dataclass(frozen=True)
class ArchWeights:
    """The architecture as weights: softmaxed op weights per edge ``[edges, ops]`` of the normal and the
    reduction cells, and their normalised edge weights ``[edges]`` (None without edge normalisation)."""

    normal: torch.Tensor
    reduce: torch.Tensor
    normal_edges: torch.Tensor | None = None
    reduce_edges: torch.Tensor | None = None

    def of(self, reduction: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(op weights, edge weights)`` of the reduction or the normal cells."""
        return (self.reduce, self.reduce_edges) if reduction else (self.normal, self.normal_edges)


def derive_genotype(
    weights: ArchWeights, primitives: Sequence[str], nodes: int, max_skips: int | None = None
) -> Genotype:
    """The discrete cells of softmaxed op weights ``[edges, ops]`` (and optional normalised edge weights)."""
    expected = (num_edges(nodes), len(primitives))
    for field, table in (("normal", weights.normal), ("reduce", weights.reduce)):
        if tuple(table.shape) != expected:
            raise ValueError(
                f"{field} architecture weights have shape {tuple(table.shape)}, expected {expected} "
                f"({nodes} nodes x {len(primitives)} primitives)"
            )
    if max_skips is not None and max_skips < 0:
        raise ValueError(f"max_skips = {max_skips!r} is invalid: expected an integer >= 0, or None for no cap")
    concat = list(range(2, 2 + nodes))
    return validate_genotype(
        Genotype(
            normal=_derive_cell(weights.normal, primitives, nodes, weights.normal_edges, max_skips),
            normal_concat=concat,
            reduce=_derive_cell(weights.reduce, primitives, nodes, weights.reduce_edges, max_skips),
            reduce_concat=concat,
        )
    )


def _sample_cell(
    weights: torch.Tensor,
    primitives: Sequence[str],
    nodes: int,
    edge_weights: torch.Tensor | None,
    max_skips: int | None,
    generator: torch.Generator,
) -> list[tuple[str, int]]:
    weights = weights.detach().float().cpu()
    if edge_weights is not None:
        weights = weights * edge_weights.detach().float().cpu()[:, None]
    names = list(primitives)
    real = torch.tensor([i for i, name in enumerate(names) if name != NONE])
    others = torch.tensor([i for i in real.tolist() if names[i] != SKIP])
    if not len(others):
        max_skips = None  # nothing else to draw: the cap could never be met
    for _ in range(SKIP_REDRAWS):
        edges, rows_of = [], []
        for rows in node_slices(nodes):
            table = weights[rows][:, real]
            # inputs by the strength derivation ranks them by; the op by its weight on the chosen edge
            sources = torch.multinomial(table.max(dim=1).values, 2, replacement=False, generator=generator)
            for source in sorted(sources.tolist()):
                column = int(real[torch.multinomial(table[source], 1, generator=generator)])
                edges.append((names[column], source))
                rows_of.append(rows.start + source)
        if max_skips is None or sum(op == SKIP for op, _ in edges) <= max_skips:
            return edges
    # skips dominate the weights: keep the first max_skips skips, draw the others' ops from the rest
    assert max_skips is not None  # without a cap the first draw was returned
    kept = 0
    for k, (op, source) in enumerate(edges):
        if op == SKIP:
            kept += 1
            if kept > max_skips:
                column = int(others[torch.multinomial(weights[rows_of[k], others], 1, generator=generator)])
                edges[k] = (names[column], source)
    return edges


def sample_genotype(
    weights: ArchWeights,
    primitives: Sequence[str],
    nodes: int,
    max_skips: int | None = None,
    generator: torch.Generator | None = None,
) -> Genotype:
    """A genotype drawn from the architecture weights ``derive_genotype`` takes the top of.

    Per node, two distinct inputs in proportion to their strongest real op (times the edge weight),
    then each edge's op in proportion to its weight (never ``none``); a cell over ``max_skips``
    skips is drawn again (after ``SKIP_REDRAWS`` tries its extra skips take other drawn ops).
    Uniform weights give uniformly random cells.
    """
    concat = list(range(2, 2 + nodes))
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    return validate_genotype(
        Genotype(
            normal=_sample_cell(weights.normal, primitives, nodes, weights.normal_edges, max_skips, generator),
            normal_concat=concat,
            reduce=_sample_cell(weights.reduce, primitives, nodes, weights.reduce_edges, max_skips, generator),
            reduce_concat=concat,
        )
    )


def count_ops(genotype: Genotype, name: str) -> dict[str, int]:
    """How many edges of each cell use op ``name`` (e.g. to check the skip cap)."""
    return {
        "normal": sum(op == name for op, _ in genotype.normal),
        "reduce": sum(op == name for op, _ in genotype.reduce),
    }
