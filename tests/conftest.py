"""Shared fixtures: a tiny fake Fashion-MNIST (real IDX format, learnable patterns) and offline hubs.

Tests never touch the network: the hub code paths are exercised through local
``save_pretrained`` / ``save_to_disk`` round trips of tiny models and datasets.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

# before transformers / datasets / huggingface_hub are imported anywhere
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch

from rkd.config import DataConfig

FAKE_TRAIN, FAKE_TEST = 300, 100


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a gzipped IDX file of unsigned bytes (the format Debian's Fashion-MNIST ships)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def fake_fashion_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28x28 images a tiny model learns quickly: brightness rises with the class, plus a class-placed bar."""
    n = labels.shape[0]
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.int32)
    images += (labels * 20)[:, None, None]
    for i, label in enumerate(labels):
        images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
    return np.clip(images, 0, 255).astype(np.uint8)


def make_fake_fashion_mnist(directory: Path, n_train: int = FAKE_TRAIN, n_test: int = FAKE_TEST, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", fake_fashion_images(labels, rng))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return directory


@pytest.fixture(scope="session")
def fake_fashion_dir(tmp_path_factory) -> Path:
    """A Fashion-MNIST IDX directory with 300 train / 100 test images (10 classes)."""
    return make_fake_fashion_mnist(tmp_path_factory.mktemp("fake-fashion-mnist"))


@pytest.fixture
def data_cache_dir(tmp_path) -> Path:
    return tmp_path / "dataset-cache"


@pytest.fixture
def fashion_cfg(fake_fashion_dir, data_cache_dir) -> DataConfig:
    """A DataConfig reading the fake IDX files, converting into a fresh per-test cache dir."""
    return DataConfig(
        name="fashion-mnist",
        fashion_mnist_dir=str(fake_fashion_dir),
        cache_dir=str(data_cache_dir),
        val_fraction=0.2,
        split_seed=0,
    )


@pytest.fixture(scope="session")
def fashion_bundle(fake_fashion_dir, tmp_path_factory):
    """The fake Fashion-MNIST loaded once per session (train 240 / val 60 / test 100)."""
    from rkd.data import load_data

    cfg = DataConfig(
        name="fashion-mnist",
        fashion_mnist_dir=str(fake_fashion_dir),
        cache_dir=str(tmp_path_factory.mktemp("shared-dataset-cache")),
        val_fraction=0.2,
        split_seed=0,
    )
    return load_data(cfg)


@pytest.fixture(scope="session")
def tiny_teacher_cache(fashion_bundle, tmp_path_factory):
    """A TeacherCache for ``fashion_bundle`` without a teacher: label-informed logits and 12-d random features.

    Lets search and distillation code run against "cached teacher" targets in a second, not minutes.
    """
    import torch

    from rkd.teacher.cache import TeacherCache

    generator = torch.Generator().manual_seed(0)
    logits, features = {}, {}
    for split, data in fashion_bundle.splits.items():
        one_hot = torch.nn.functional.one_hot(data.labels, fashion_bundle.num_classes).float()
        logits[split] = (4.0 * one_hot + torch.randn(one_hot.shape, generator=generator)).half()
        features[split] = torch.randn(len(data), 12, generator=generator).half()
    return TeacherCache(logits, features, {"augmentation": "none"}, tmp_path_factory.mktemp("tiny-teacher-cache"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of small training loops: faster than two on a shared 2-core CPU, and deterministic."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state; reset it around tests that build their own Accelerator."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def pytest_collection_modifyitems(config, items):
    """The tests of an xdist_group (the SLURM cluster's) first: most of their time is the cluster's start and
    its queue, which then overlaps the other tests' work (pytest-xdist hands tests out in this order)."""
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)
