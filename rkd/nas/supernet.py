"""The DARTS search network: every cell edge holds all candidate ops, mixed by softmaxed architecture weights.

Layout follows the ``Student`` (same stem, cells reading the two previous cells, reductions at 1/3 and
2/3 depth that double the channels, pooled features and a classifier) so the searched cells are
judged in the network they will live in. Search-time conventions from DARTS: BN without affine
parameters (an affine scale would let an op's weight hide in its BN and blur what the architecture
weights mean) and a BN after pooling ops (so parameter-free ops are on the conv ops' scale). Every BN
normalises with the statistics of the current batch, in evaluation too: the architecture changes
the distribution of every node at every step, so running statistics would lag behind it and the
supernet's validation accuracy would measure the lag, not the architecture.

Partial channels (PC-DARTS, ``partial_channels = k > 1``): only ``C/k`` channels of an edge go
through the mixed op; the rest bypass it (max-pooled on strided edges) and a channel shuffle mixes
the two parts for the next op. This cuts search memory and time about ``k`` times. Its sampling
noise is what edge normalisation (``beta`` weights per edge, softmaxed over each node's incoming
edges) is there to damp.

The architecture parameters are ``nn.Parameter``s of this module (so checkpoints and best-model
selection keep them with the weights), created with ``requires_grad=False``: the weight step treats
them as constants (no gradient clipping, DDP reduction or wasted backward work on them), and the
architect switches them on only for its own update (``arch_gradients_enabled``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
from einops import rearrange
from torch import nn

from rkd.nas.complexity import ExpectedCost
from rkd.nas.derive import ArchWeights, derive_genotype, edge_layout, normalize_edges, num_edges
from rkd.nas.genotype import Genotype
from rkd.nas.heads import ClassifierHead
from rkd.nas.ops import PRIMITIVES, FactorizedReduce, ReLUConvBN, Zero, build_op
from rkd.nas.skeleton import StackedCell, build_stem, readout, reduction_layers, stack_cells, stem_forward

ARCH_INIT_SCALE = 1e-3  # DARTS: near-uniform mixtures at the start


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel groups so the next op sees channels from every group."""
    return rearrange(x, "b (g c) h w -> b (c g) h w", g=groups)


class MixedOp(nn.Module):
    """One searchable edge: ``sum_i w_i * op_i(x)`` over the candidate ops (on ``C/k`` channels if partial)."""

    def __init__(self, C: int, stride: int, primitives: Sequence[str], partial_channels: int = 1) -> None:
        super().__init__()
        if partial_channels < 1 or C % partial_channels != 0:
            raise ValueError(
                f"partial_channels = {partial_channels!r} is invalid for an edge with {C} channels: "
                f"expected an integer >= 1 that divides {C}"
            )
        self.k = partial_channels
        self.stride = stride
        channels = C // partial_channels
        self.ops = nn.ModuleList()
        for name in primitives:
            op = build_op(name, channels, stride, False)
            if isinstance(op, (nn.MaxPool2d, nn.AvgPool2d)):
                op = nn.Sequential(op, nn.BatchNorm2d(channels, affine=False))
            self.ops.append(op)
        # ``none`` contributes exactly zero to the value and to every gradient: skip computing it
        self.is_zero = [isinstance(op, Zero) for op in self.ops]
        self.zero = Zero(stride)
        self.bypass = nn.MaxPool2d(2, 2, ceil_mode=True) if partial_channels > 1 and stride == 2 else None

    def _mix(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor | None = None
        for w, op, zero in zip(weights, self.ops, self.is_zero):
            if zero:
                continue
            h = w * op(x)
            out = h if out is None else out + h
        return self.zero(x) if out is None else out

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.k == 1:
            return self._mix(x, weights)
        part = x.shape[1] // self.k
        mixed = self._mix(x[:, :part], weights)
        rest = x[:, part:]
        if self.bypass is not None:
            rest = self.bypass(rest)
        return channel_shuffle(torch.cat([mixed, rest], dim=1), self.k)


class SearchCell(StackedCell):
    """A cell whose ``nodes`` intermediate nodes sum one mixed op per earlier state."""

    def __init__(
        self,
        nodes: int,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        primitives: Sequence[str],
        partial_channels: int = 1,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.nodes = nodes
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.layout = edge_layout(nodes)
        self.edges = nn.ModuleList(
            MixedOp(C, 2 if reduction and source < 2 else 1, primitives, partial_channels) for _, source in self.layout
        )
        self.out_channels = nodes * C

    def forward(
        self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, edge_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.nodes):
            node = 0
            for source, state in enumerate(states):
                h = self.edges[offset + source](state, weights[offset + source])
                node = node + (h if edge_weights is None else edge_weights[offset + source] * h)
            offset += len(states)
            states.append(node)
        return torch.cat(states[2:], dim=1)


class SuperNet(nn.Module):
    """The searchable network; ``forward`` returns ``tokens``, ``features``, ``logits`` like ``Student``.

    With an ``ExpectedCost`` attached, ``forward`` also returns ``arch_params`` and ``arch_flops``: the
    expected size of the student that would be derived now, differentiable in the architecture
    parameters (what ``rkd.losses.ComplexityPenalty`` reads).
    """

    betas_normal: nn.Parameter | None  # edge weights, with edge normalisation only
    betas_reduce: nn.Parameter | None

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        primitives: Sequence[str] = PRIMITIVES,
        init_channels: int = 8,
        layers: int = 5,
        nodes: int = 4,
        stem_stride: int = 2,
        stem_multiplier: int = 3,
        partial_channels: int = 1,
        edge_normalization: bool = False,
        cost: ExpectedCost | None = None,
    ) -> None:
        super().__init__()
        if layers < 1 or init_channels < 1 or nodes < 1:
            raise ValueError(f"layers, init_channels and nodes must be >= 1, got {layers}, {init_channels}, {nodes}")
        self.primitives = list(primitives)
        if not self.primitives:
            raise ValueError("primitives is empty: the search needs at least one candidate op")
        self.nodes = nodes
        self.layers = layers
        self.edge_normalization = edge_normalization
        C_stem = stem_multiplier * init_channels
        self.stem = build_stem(in_channels, C_stem, stem_stride)
        self.reduction_indices = reduction_layers(layers)
        self.cells = stack_cells(
            layers,
            C_stem,
            init_channels,
            partial(SearchCell, nodes, primitives=self.primitives, partial_channels=partial_channels),
        )
        self.out_channels = self.cells.channels[-1]
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = ClassifierHead(self.out_channels, num_classes)
        edges, ops = num_edges(nodes), len(self.primitives)
        self.alphas_normal = nn.Parameter(ARCH_INIT_SCALE * torch.randn(edges, ops), requires_grad=False)
        self.alphas_reduce = nn.Parameter(ARCH_INIT_SCALE * torch.randn(edges, ops), requires_grad=False)
        if edge_normalization:
            self.betas_normal = nn.Parameter(ARCH_INIT_SCALE * torch.randn(edges), requires_grad=False)
            self.betas_reduce = nn.Parameter(ARCH_INIT_SCALE * torch.randn(edges), requires_grad=False)
        else:
            self.betas_normal = self.betas_reduce = None
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.track_running_stats = False
                module.running_mean = module.running_var = module.num_batches_tracked = None
        self.cost = cost
        if cost is not None and (cost.primitives != self.primitives or cost.nodes != nodes):
            raise ValueError(
                f"the ExpectedCost prices primitives {cost.primitives} with {cost.nodes} nodes, "
                f"the supernet searches {self.primitives} with {nodes} nodes"
            )

    # -- parameter groups ------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        params = [self.alphas_normal, self.alphas_reduce]
        if self.betas_normal is not None and self.betas_reduce is not None:  # with edge normalisation
            params += [self.betas_normal, self.betas_reduce]
        return params

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return (p for p in self.parameters() if id(p) not in arch)

    # -- architecture weights --------------------------------------------------------------------
    def arch_weights(self) -> ArchWeights:
        """Softmaxed op weights per edge and, with edge normalisation, normalised edge weights."""
        return ArchWeights(
            normal=self.alphas_normal.softmax(dim=-1),
            reduce=self.alphas_reduce.softmax(dim=-1),
            normal_edges=normalize_edges(self.betas_normal, self.nodes) if self.betas_normal is not None else None,
            reduce_edges=normalize_edges(self.betas_reduce, self.nodes) if self.betas_reduce is not None else None,
        )

    def expected_cost(self) -> dict[str, torch.Tensor]:
        if self.cost is None:
            raise RuntimeError("this SuperNet was built without an ExpectedCost (pass cost=...)")
        return self.cost(self.alphas_normal, self.alphas_reduce, self.betas_normal, self.betas_reduce)

    def genotype(self, max_skips: int | None = None) -> Genotype:
        """Derive the discrete cells from the current architecture (see ``rkd.nas.derive``)."""
        with torch.no_grad():
            return derive_genotype(self.arch_weights(), self.primitives, self.nodes, max_skips)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        w = self.arch_weights()
        s0 = s1 = stem_forward(self.stem, x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, *w.of(reduction=cell.reduction))
        out = readout(s1, self.global_pooling, self.classifier)
        if self.cost is not None:
            cost = self.expected_cost()
            out["arch_params"], out["arch_flops"] = cost["params"], cost["flops"]
        return out

    @property
    def feature_dim(self) -> int:
        return self.out_channels


@contextmanager
def arch_gradients_enabled(params: Sequence[nn.Parameter]):
    """Let autograd track the architecture parameters for one architecture update, then freeze them again."""
    previous = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in zip(params, previous):
            p.requires_grad_(flag)
