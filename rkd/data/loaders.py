"""DataLoaders over in-memory splits whose items carry their row index (the teacher cache key)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from rkd.data.bundle import Split


class IndexedImages(Dataset):
    """Items ``{"pixels", "label", "index"}``; ``index`` is the row in the split, the teacher cache key."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict:
        return {"pixels": self.split.images[i], "label": self.split.labels[i], "index": torch.tensor(i, dtype=torch.int64)}


def make_loader(split: Split, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False) -> DataLoader:
    """A single-process DataLoader whose shuffling is fixed by ``seed`` (data is already in memory)."""
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(IndexedImages(split), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      generator=generator, num_workers=0)
