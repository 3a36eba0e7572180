"""Measured op costs and the differentiable expected cost of the network a search will derive.

The lightweight search penalises the *expected* size of the student: every candidate op on every
edge is priced once, at construction, by measuring a real instance of it as the derived ``Student``
would build it (same channels, stride and input resolution, affine BN): parameters are counted and
FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on a one-image dummy input, the
same counter the evaluation report uses. Nothing is guessed from op names.

The expectation follows what derivation keeps (``rkd.nas.derive``):

* an edge's op probabilities are the softmax of its architecture parameters over the ops other than
  ``none``: derivation never keeps ``none``, so its weight should neither lower nor raise the cost
  (pushing weight onto ``none`` would otherwise look cheap while changing nothing that is derived);
* each node keeps two incoming edges, so its cost is ``2 * sum_e pi_e * E[cost_e]`` with ``pi`` the
  node's normalised edge weights (PC-DARTS edge normalisation) or uniform over its edges;
* the parts no architecture parameter touches (stem, cell preprocessing, classifier) are a constant
  measured on a ``Student`` whose every op is ``none``.

So when the architecture is decided (one-hot op weights, the same op on a node's edges) the expected
cost is exactly the measured cost of the derived ``Student``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from typing import cast

import torch
from torch import nn

from rkd.measure import count_flops, count_params
from rkd.nas.derive import NONE, edge_layout, node_slices, normalize_edges
from rkd.nas.genotype import Genotype
from rkd.nas.network import Cell, Student
from rkd.nas.ops import build_op

METRICS = ("params", "flops")


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int

    def as_dict(self) -> dict[str, int]:
        return {"params": self.params, "flops": self.flops}


@dataclass(frozen=True)
class NetworkShape:
    """What fixes the cost of a derived student besides its genotype."""

    in_channels: int
    num_classes: int
    image_size: int
    init_channels: int = 8
    layers: int = 5
    stem_stride: int = 2

    def build(self, genotype: Genotype, drop_path: float = 0.0) -> Student:
        """The student of this shape; ``drop_path`` regularises training and leaves the cost unchanged."""
        sizes = {name: value for name, value in asdict(self).items() if name != "image_size"}  # cells take any size
        return Student(genotype, **sizes, drop_path=drop_path)

    def dummy_input(self) -> torch.Tensor:
        return torch.zeros(1, self.in_channels, self.image_size, self.image_size)


@cache
def measure_op(name: str, channels: int, stride: int, height: int, width: int) -> Cost:
    """Parameters and FLOPs of op ``name`` on a ``[1, channels, height, width]`` input, as a Student builds it."""
    with torch.random.fork_rng(devices=[]):  # building an op draws initial weights; the caller's RNG must not move
        op = build_op(name, channels, stride, True)
    return Cost(count_params(op), count_flops(op, torch.zeros(1, channels, height, width)))


def measure_network(genotype: Genotype, shape: NetworkShape) -> Cost:
    """Parameters and per-image FLOPs of the Student built from ``genotype``."""
    with torch.random.fork_rng(devices=[]):
        student = shape.build(genotype)
    return Cost(count_params(student), count_flops(student, shape.dummy_input()))


def network_params(genotype: Genotype, shape: NetworkShape) -> int:
    """Parameters of the Student built from ``genotype``, summed from measured op costs.

    The search and the random-cells control count thousands of drawn genotypes; building each Student
    (every op initialised) cost more than training a candidate when few draws fit under a size cap. The
    sum is the same count: the parts no genotype touches, measured once per shape, plus each kept op as
    ``measure_op`` measured it at its cell's channels, stride and resolution (``ExpectedCost``'s tables
    hold the same numbers). A genotype that concatenates other nodes than all of them is built.
    """
    nodes = len(genotype.normal) // 2
    every_node = list(range(2, 2 + nodes))
    if list(genotype.normal_concat) != every_node or list(genotype.reduce_concat) != every_node:
        with torch.random.fork_rng(devices=[]):
            return count_params(shape.build(genotype))
    total = fixed_cost(shape, nodes).params
    for cell in _cells(shape, nodes):
        for op, source in genotype.reduce if cell[0] else genotype.normal:
            total += edge_op_cost(op, cell, source).params
    return total


@cache
def fixed_cost(shape: NetworkShape, nodes: int) -> Cost:
    """The stem, the cells' preprocessing and the classifier: a Student whose every op is ``none``."""
    return measure_network(empty_genotype(nodes), shape)


@cache
def _cells(shape: NetworkShape, nodes: int) -> tuple:
    return tuple(cell_resolutions(shape, nodes))


def edge_op_cost(name: str, cell: tuple[bool, int, tuple[int, int], tuple[int, int]], source: int) -> Cost:
    """Cost of op ``name`` on an edge from ``source`` in ``cell`` (a ``cell_resolutions`` entry).

    An edge reading a cell input sees the input resolution and, in a reduction cell, is strided; an
    edge reading an intermediate node sees the cell's output resolution.
    """
    reduction, channels, input_hw, node_hw = cell
    reads_input = source < 2
    height, width = input_hw if reads_input else node_hw
    return measure_op(name, channels, 2 if reduction and reads_input else 1, height, width)


def empty_genotype(nodes: int) -> Genotype:
    """A genotype whose every op is ``none``: its Student costs exactly the architecture-independent parts."""
    edges = [(NONE, 0), (NONE, 1)] * nodes
    concat = list(range(2, 2 + nodes))
    return Genotype(normal=edges, normal_concat=concat, reduce=edges, reduce_concat=concat)


def cell_resolutions(shape: NetworkShape, nodes: int) -> list[tuple[bool, int, tuple[int, int], tuple[int, int]]]:
    """Per cell ``(reduction, C, input HxW, node HxW)``, measured by running a Student once.

    Ops reading a cell input see the input resolution (a reduction cell's strided ops halve it);
    ops reading an intermediate node see the cell's output resolution.
    """
    with torch.random.fork_rng(devices=[]):
        student = shape.build(empty_genotype(nodes))
    inputs: list[tuple[int, int, int]] = []
    outputs: list[tuple[int, int]] = []
    hooks = []
    cells = [cast(Cell, cell) for cell in student.cells]
    for cell in cells:
        hooks.append(cell.preprocess1.register_forward_hook(lambda m, a, out: inputs.append(tuple(out.shape[1:]))))
        hooks.append(cell.register_forward_hook(lambda m, a, out: outputs.append(tuple(out.shape[2:]))))
    with torch.no_grad():
        student.eval()(shape.dummy_input())
    for hook in hooks:
        hook.remove()
    return [
        (cell.reduction, int(c), (int(h), int(w)), (int(out[0]), int(out[1])))
        for cell, (c, h, w), out in zip(cells, inputs, outputs)
    ]


class ExpectedCost(nn.Module):
    """Expected parameters and FLOPs of the derived Student, differentiable in the architecture parameters.

    ``costs_normal`` / ``costs_reduce`` are ``[metric, edge, op]`` tables summed over all normal /
    reduction cells of the target network (alphas are shared by all cells of a type).
    """

    real: torch.Tensor  # buffers: which ops are not ``none``, and the cost tables
    costs_normal: torch.Tensor
    costs_reduce: torch.Tensor

    def __init__(self, primitives: Sequence[str], nodes: int, shape: NetworkShape) -> None:
        super().__init__()
        self.primitives = list(primitives)
        self.nodes = nodes
        self.shape = shape
        real = torch.tensor([name != NONE for name in self.primitives])
        if not bool(real.any()):
            raise ValueError(f"primitives {self.primitives} hold only 'none': nothing to price")
        self.register_buffer("real", real, persistent=False)
        layout = edge_layout(nodes)
        tables = {
            False: torch.zeros(len(METRICS), len(layout), len(self.primitives), dtype=torch.float64),
            True: torch.zeros(len(METRICS), len(layout), len(self.primitives), dtype=torch.float64),
        }
        for cell in _cells(shape, nodes):
            table = tables[cell[0]]
            for e, (_, source) in enumerate(layout):
                for o, name in enumerate(self.primitives):
                    cost = edge_op_cost(name, cell, source)
                    table[0, e, o] += cost.params
                    table[1, e, o] += cost.flops
        self.register_buffer("costs_normal", tables[False].float(), persistent=False)
        self.register_buffer("costs_reduce", tables[True].float(), persistent=False)
        self.fixed = fixed_cost(shape, nodes)

    def _edge_factors(self, betas: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        if betas is not None:
            return 2.0 * normalize_edges(betas, self.nodes)
        return torch.cat(
            [
                torch.full((s.stop - s.start,), 2.0 / (s.stop - s.start), dtype=like.dtype, device=like.device)
                for s in node_slices(self.nodes)
            ]
        )

    def op_probabilities(self, alphas: torch.Tensor) -> torch.Tensor:
        """Softmax over the ops other than ``none`` (``none`` gets probability 0)."""
        return alphas.masked_fill(~self.real, float("-inf")).softmax(dim=-1)

    def forward(
        self,
        alphas_normal: torch.Tensor,
        alphas_reduce: torch.Tensor,
        betas_normal: torch.Tensor | None = None,
        betas_reduce: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        total = alphas_normal.new_zeros(len(METRICS))
        for alphas, betas, costs in (
            (alphas_normal, betas_normal, self.costs_normal),
            (alphas_reduce, betas_reduce, self.costs_reduce),
        ):
            weights = self._edge_factors(betas, alphas)[:, None] * self.op_probabilities(alphas)
            total = total + (costs * weights).sum(dim=(1, 2))
        return {"params": total[0] + self.fixed.params, "flops": total[1] + self.fixed.flops}

    def uniform(self) -> dict[str, float]:
        """The expected cost before the search has a preference (all parameters zero): a natural scale."""
        zeros = self.costs_normal.new_zeros(self.costs_normal.shape[1:])
        return {k: float(v) for k, v in self.forward(zeros, zeros).items()}
