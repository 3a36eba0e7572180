"""``load_data``: ``data.name`` picks the source module that turns a dataset into a ``DataBundle``."""

from __future__ import annotations

from rkd.config import DataConfig
from rkd.data.bundle import DataBundle, DataError
from rkd.data.fashion_mnist import load_fashion_mnist
from rkd.data.hf import load_hf
from rkd.data.imagefolder import load_imagefolder


def load_data(cfg: DataConfig, test_fraction: float = 0.1) -> DataBundle:
    """Load ``cfg.name`` into a train/val/test ``DataBundle``.

    ``test_fraction`` is carved (seeded with ``cfg.split_seed``) from train when a dataset ships
    without a labelled test split.
    """
    name = cfg.name
    if name == "fashion-mnist":
        return load_fashion_mnist(cfg)
    if name.startswith("hf:"):
        return load_hf(cfg, name[3:], test_fraction)
    if name.startswith("imagefolder:"):
        return load_imagefolder(cfg, name[len("imagefolder:") :], test_fraction)
    raise DataError(
        f"data.name = {name!r} is not supported: expected 'fashion-mnist', 'hf:<hub id or dir>' or 'imagefolder:<dir>'"
    )
