"""A dataset's columns read straight from Arrow: fast, and in the stored dtype (Fashion-MNIST and hf: sources).

``pyarrow`` is imported inside ``arrow_array``: it is only needed once a dataset is read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rkd.data.bundle import DataError


def arrow_column(dataset: Any, column: str) -> Any:
    """The column's Arrow data, without ``datasets``' row-by-row formatting."""
    return dataset.with_format(None).data.column(column)


def label_tensor(dataset: Any, column: str) -> torch.Tensor:
    """An integer label column as int64 ``[N]``."""
    return torch.from_numpy(np.array(arrow_column(dataset, column).to_numpy(), dtype=np.int64))


def arrow_array(dataset: Any, column: str) -> np.ndarray:
    """A column of equally shaped arrays as one numpy array ``[N, ...]`` with the stored dtype.

    Reads Arrow buffers directly: ``with_format("numpy")`` builds nested lists row by row (minutes
    for 60k images) and upcasts uint8 to int64.
    """
    import pyarrow as pa

    array = arrow_column(dataset, column).combine_chunks()
    if isinstance(array, pa.ExtensionArray):  # datasets' ArrayND features
        array = array.storage
    dims: list[int | None] = []
    kind = array.type
    while pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        dims.append(kind.list_size if pa.types.is_fixed_size_list(kind) else None)
        kind = kind.value_type
    n = len(array)
    if None in dims:
        shape = getattr(dataset.features[column], "shape", None)
        dims = list(shape) if shape else list(np.asarray(array[0].as_py()).shape) if n else dims
    flat = array
    while hasattr(flat.type, "value_type"):
        flat = flat.flatten()
    values = flat.to_numpy(zero_copy_only=False)
    known = [int(d) for d in dims if d is not None]
    if len(known) != len(dims) or values.size != n * int(np.prod(known, dtype=np.int64)):
        raise DataError(f"column {column!r} holds arrays of different shapes; store images as an Image feature instead")
    return values.reshape(n, *dims)
