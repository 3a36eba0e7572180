"""Cell genotypes in the DARTS format, their validation, JSON files and a registry of named cells.

A genotype is what a search hands to training: ``normal``/``reduce`` list ``(op_name, input_index)``
pairs, two per intermediate node (inputs 0 and 1 are the cell's two inputs, 2.. the earlier nodes),
and ``*_concat`` the nodes whose outputs are concatenated into the cell's output. Keeping the exact
DARTS format means published cells can be typed in and searched cells can be compared with them.
"""

from __future__ import annotations

from collections import Counter, namedtuple
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rkd.nas.ops import OPS
from rkd.run.artifacts import atomic_write_json, read_json_checked

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")

_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


class GenotypeError(ValueError):
    """A genotype field is malformed; the message names the field and the offending value."""


def _check_edges(field: str, edges: Any) -> list[tuple[str, int]]:
    if isinstance(edges, (str, bytes)) or not isinstance(edges, Sequence):
        raise GenotypeError(f"{field}: expected a list of (op_name, input_index) pairs, got {edges!r}")
    if len(edges) == 0 or len(edges) % 2 != 0:
        raise GenotypeError(f"{field}: expected a non-empty, even number of edges (2 per node), got {len(edges)}")
    checked = []
    for position, edge in enumerate(edges):
        where = f"{field}[{position}]"
        if isinstance(edge, (str, bytes)) or not isinstance(edge, Sequence) or len(edge) != 2:
            raise GenotypeError(f"{where}: expected an (op_name, input_index) pair, got {edge!r}")
        name, index = edge
        if name not in OPS:
            raise GenotypeError(f"{where}: unknown op {name!r}; known ops: {sorted(OPS)}")
        node = 2 + position // 2  # the node this edge feeds may read the inputs and earlier nodes
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < node:
            raise GenotypeError(
                f"{where}: input index {index!r} of op {name!r} must be an integer in [0, {node}) for node {node}"
            )
        checked.append((str(name), int(index)))
    return checked


def _check_concat(field: str, concat: Any, n_nodes: int) -> list[int]:
    if isinstance(concat, (str, bytes)) or not isinstance(concat, Sequence) or len(concat) == 0:
        raise GenotypeError(f"{field}: expected a non-empty list of node indices, got {concat!r}")
    valid = range(2, 2 + n_nodes)  # cell inputs are excluded: in a reduction cell they have the wrong size
    for index in concat:
        if isinstance(index, bool) or not isinstance(index, int) or index not in valid:
            raise GenotypeError(f"{field}: node index {index!r} must be an integer in [2, {2 + n_nodes})")
    if len(set(concat)) != len(concat):
        raise GenotypeError(f"{field}: repeated node index in {list(concat)!r}")
    return [int(i) for i in concat]


def validate_genotype(genotype: Genotype | Mapping[str, Any]) -> Genotype:
    """Check every field and return a normalised ``Genotype`` (tuples for pairs, lists for concat)."""
    data = genotype._asdict() if isinstance(genotype, Genotype) else genotype
    if not isinstance(data, Mapping):
        raise GenotypeError(f"genotype: expected a mapping with keys {list(_FIELDS)}, got {type(data).__name__}")
    missing = [key for key in _FIELDS if key not in data]
    if missing:
        raise GenotypeError(f"genotype: missing field(s) {missing}; present: {sorted(data)}")
    normal = _check_edges("normal", data["normal"])
    reduce = _check_edges("reduce", data["reduce"])
    return Genotype(
        normal=normal,
        normal_concat=_check_concat("normal_concat", data["normal_concat"], len(normal) // 2),
        reduce=reduce,
        reduce_concat=_check_concat("reduce_concat", data["reduce_concat"], len(reduce) // 2),
    )


def genotype_to_dict(genotype: Genotype) -> dict[str, list]:
    """JSON-ready form: pairs become ``[op_name, index]`` lists."""
    genotype = validate_genotype(genotype)
    return {
        "normal": [[name, index] for name, index in genotype.normal],
        "normal_concat": list(genotype.normal_concat),
        "reduce": [[name, index] for name, index in genotype.reduce],
        "reduce_concat": list(genotype.reduce_concat),
    }


def genotype_from_dict(data: Mapping[str, Any]) -> Genotype:
    """Build a validated ``Genotype`` from a mapping (lists or tuples; extra keys such as "meta" ignored)."""
    return validate_genotype(data)


def describe_cells(genotype: Genotype) -> str:
    """One line naming every op and its input, node by node (``|`` between nodes), for reports and logs."""

    def cell(edges: list) -> str:
        pairs = [f"{name}@{index}" for name, index in edges]
        return " | ".join(" + ".join(pairs[i : i + 2]) for i in range(0, len(pairs), 2))

    genotype = validate_genotype(genotype)
    return f"normal [{cell(genotype.normal)}], reduce [{cell(genotype.reduce)}]"


def shared_edges(genotypes: Sequence[Genotype], ignore_inputs: bool = False) -> int:
    """How many edges (op and input; op only with ``ignore_inputs``) every genotype has, node by node.

    The stability of a search across seeds: 16 of 16 for 4-node cells means every seed derived
    the same cells. Edges are matched within a node, in any order.
    """
    genotypes = [validate_genotype(g) for g in genotypes]
    if not genotypes:
        raise GenotypeError("shared_edges: expected at least one genotype, got none")
    shared = 0
    for cell in ("normal", "reduce"):
        cells = [getattr(g, cell) for g in genotypes]
        if len({len(edges) for edges in cells}) != 1:
            raise GenotypeError(f"{cell}: the genotypes have different edge counts {[len(e) for e in cells]}")
        for start in range(0, len(cells[0]), 2):
            common = Counter(name if ignore_inputs else (name, index) for name, index in cells[0][start : start + 2])
            for edges in cells[1:]:
                common &= Counter(name if ignore_inputs else (name, index) for name, index in edges[start : start + 2])
            shared += sum(common.values())
    return shared


def save_genotype(genotype: Genotype, path: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    """Write a genotype as JSON, with optional provenance (search run, seed, scores) under "meta"."""
    data: dict[str, Any] = genotype_to_dict(genotype)
    if meta is not None:
        data["meta"] = dict(meta)
    return atomic_write_json(path, data)


def load_genotype(name_or_path: str | Path) -> Genotype:
    """A registered name (see ``GENOTYPES``) or a path to a JSON file written by ``save_genotype``."""
    if isinstance(name_or_path, str) and name_or_path in GENOTYPES:
        return GENOTYPES[name_or_path]
    path = Path(name_or_path).expanduser()
    missing = GenotypeError(
        f"genotype {str(name_or_path)!r} is neither a registered name {sorted(GENOTYPES)} nor an existing .json file"
    )
    data = read_json_checked(
        path, missing, lambda err: GenotypeError(f"genotype file {str(path)!r} is not valid JSON: {err}")
    )
    try:
        return genotype_from_dict(data)
    except GenotypeError as err:
        raise GenotypeError(f"genotype file {str(path)!r}: {err}") from None


# A lightweight hand-designed cell for a tiny CPU student. Normal cell: every node is one learned
# depthwise-separable op plus an identity (a residual unit), chained so node 5 sits four separable
# blocks deep, with dilated convs for a 5x5 receptive field at single-block cost. Reduction cell:
# only three ops read the full-resolution inputs (a max pool each and one strided sep conv, so the
# downsampling is partly learned), the rest work at the halved size where they cost a quarter.
# No avg_pool: on CPU its backward (count_include_pad=False) costs more than a dilated conv.
DEFAULT = Genotype(
    normal=[
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("sep_conv_3x3", 2),
        ("skip_connect", 1),
        ("dil_conv_3x3", 2),
        ("skip_connect", 0),
        ("dil_conv_3x3", 3),
        ("skip_connect", 2),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3x3", 0),
        ("sep_conv_3x3", 1),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("dil_conv_3x3", 3),
        ("skip_connect", 2),
        ("sep_conv_3x3", 4),
        ("skip_connect", 3),
    ],
    reduce_concat=[2, 3, 4, 5],
)

# DARTS (second order) CIFAR-10 cell, Liu et al. 2019, as published.
DARTS_V2 = Genotype(
    normal=[
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ],
    reduce_concat=[2, 3, 4, 5],
)

GENOTYPES: dict[str, Genotype] = {
    "default": validate_genotype(DEFAULT),
    "darts_v2": validate_genotype(DARTS_V2),
}
