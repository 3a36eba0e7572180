"""DataLoaders over in-memory splits whose items carry their row index (the teacher cache key).

Batches are indexed whole from the in-memory tensors (``IndexedImages.__getitems__``), and pinned when a
GPU is present so that Accelerate's copy to it is asynchronous. No worker processes: indexing a tensor in
memory is faster than shipping the batch from a worker; augmentation runs on the device, in the objective.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from rkd.data.bundle import Split


class IndexedImages(Dataset):
    """Items ``{"pixels", "label", "index"}``; ``index`` is the row in the split, the teacher cache key."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict:
        return {
            "pixels": self.split.images[i],
            "label": self.split.labels[i],
            "index": torch.tensor(i, dtype=torch.int64),
        }

    def __getitems__(self, indices: list) -> dict:
        """A whole batch with one indexing operation (the DataLoader's fetcher calls this, not ``batch_size``
        ``__getitem__`` calls and a collate in Python)."""
        rows = torch.as_tensor(indices, dtype=torch.int64)
        return {"pixels": self.split.images[rows], "label": self.split.labels[rows], "index": rows}


def whole_batch(batch: Any) -> Any:
    """The collate function for datasets that index whole batches (``__getitems__``): the batch is already whole."""
    return batch


def seeded_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False, pin_memory: bool = False
) -> DataLoader:
    """A single-process DataLoader over in-memory data, its shuffling fixed by ``seed``; ``dataset`` hands out
    whole batches through ``__getitems__``."""
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=generator,
        num_workers=0,
        collate_fn=whole_batch,
        pin_memory=pin_memory,
    )


def make_loader(split: Split, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False) -> DataLoader:
    """The seeded loader over a split's images (pinned for a GPU's copies)."""
    return seeded_loader(IndexedImages(split), batch_size, shuffle, seed, drop_last, torch.cuda.is_available())


def subset_indices(n: int, limit: int | None, seed: int) -> torch.Tensor:
    """A seeded, sorted choice of ``limit`` rows of a split (all rows when ``limit`` is None or larger)."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:limit].sort().values


def subset_loader(
    split: Split, indices: torch.Tensor, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False
) -> DataLoader:
    """Like ``rkd.data.make_loader`` on some rows; a batch's ``index`` stays the row in the full split
    (the teacher cache's key)."""
    dataset = Subset(IndexedImages(split), indices.tolist())
    return seeded_loader(dataset, batch_size, shuffle, seed, drop_last, torch.cuda.is_available())
