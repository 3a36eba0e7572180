"""Fashion-MNIST from Debian's IDX files, converted once to a verified Arrow dataset and loaded zero-copy.

``datasets``, ``pyarrow`` and ``filelock`` are imported inside the functions that need them: they take seconds to
import, and ``import rkd.data`` (for transforms and loaders) should not pay for them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rkd.config import DataConfig
from rkd.data.arrow import arrow_array, label_tensor
from rkd.data.bundle import DataBundle, DataError, Split, finish_bundle
from rkd.run.artifacts import atomic_write_json, read_json, sha256_file
from rkd.run.rundir import atomic_directory

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CHECKSUM_FILE = "rkd_checksum.json"
CONVERSION_FORMAT = 1  # bump when the Arrow layout written by _convert_fashion_mnist changes


def read_idx(path: Path) -> np.ndarray:
    """Parse a (gzipped) IDX file of unsigned bytes: images ``[N, H, W]`` or labels ``[N]``."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file: only {len(raw)} bytes")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        raise DataError(
            f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()}); expected 00000801 or 00000803"
        )
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims} ({int(np.prod(dims))} bytes), found {data.size}")
    return data.reshape(dims)


def _fashion_sources(idx_dir: Path) -> dict[str, Path]:
    return {fname: idx_dir / fname for pair in FASHION_MNIST_FILES.values() for fname in pair}


def _missing_fashion_error(idx_dir: Path, missing: list[str]) -> DataError:
    return DataError(
        f"Fashion-MNIST IDX files not found in data.fashion_mnist_dir = {str(idx_dir)!r} (missing: {', '.join(missing)}). "
        f"Install them with `apt-get install dataset-fashion-mnist`, or set data.fashion_mnist_dir to a directory "
        f"holding {', '.join(sorted(_fashion_sources(idx_dir)))}."
    )


def _arrow_checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*.arrow"))}


def _converted_is_valid(root: Path, source_shas: dict[str, str] | None) -> bool:
    """The converted Arrow dir exists, matches its checksum file and (if known) the current IDX files."""
    record_path = root / CHECKSUM_FILE
    if not record_path.is_file():
        return False
    try:
        record = read_json(record_path)
    except (ValueError, OSError):
        return False
    if record.get("format") != CONVERSION_FORMAT:
        return False
    if source_shas is not None and record.get("sources") != source_shas:
        return False
    arrow = record.get("arrow") or {}
    if not arrow:
        return False
    try:
        return _arrow_checksums(root) == arrow
    except OSError:
        return False


def _fixed_list(feature: Any, length: int) -> Any:
    import datasets

    cls = getattr(datasets, "List", None) or datasets.Sequence  # List since datasets 4, Sequence before
    return cls(feature, length=length)


def _uint8_image_feature(shape: Sequence[int]) -> Any:
    """Nested fixed-length lists of uint8: Arrow ``fixed_size_list`` stores exactly H*W*C bytes per image.

    (``Array3D`` would store variable-length lists with int32 offsets: 5x the bytes for 28x28x1.)
    """
    import datasets

    feature = datasets.Value("uint8")
    for size in reversed(shape):
        feature = _fixed_list(feature, int(size))
    return feature


def _uint8_image_column(images: np.ndarray) -> Any:
    """The Arrow column for ``_uint8_image_feature`` built straight from numpy, without a Python loop."""
    import pyarrow as pa

    storage = pa.array(np.ascontiguousarray(images).reshape(-1))
    for size in reversed(images.shape[1:]):
        storage = pa.FixedSizeListArray.from_arrays(storage, int(size))
    return storage


def _convert_fashion_mnist(sources: dict[str, Path], source_shas: dict[str, str], target: Path) -> None:
    """IDX -> ``DatasetDict`` saved with ``save_to_disk`` into ``atomic_directory(target)``: all or nothing.

    Images are stored as nested fixed-length uint8 lists ``[28][28][1]`` rather than ``Image()``:
    compact on disk, and loading is a zero-copy Arrow -> numpy view instead of decoding 70k PNGs.
    """
    import datasets
    import pyarrow as pa

    with atomic_directory(target) as tmp:
        parts = {}
        for split, (image_file, label_file) in FASHION_MNIST_FILES.items():
            images = read_idx(sources[image_file])
            labels = read_idx(sources[label_file]).astype(np.int64)
            if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
                raise DataError(
                    f"Fashion-MNIST {split}: {image_file} {images.shape} and {label_file} {labels.shape} do not pair up"
                )
            features = datasets.Features(
                {
                    "image": _uint8_image_feature((*images.shape[1:], 1)),
                    "label": datasets.ClassLabel(names=FASHION_MNIST_CLASSES),
                }
            )
            table = pa.table({"image": _uint8_image_column(images[..., None]), "label": pa.array(labels, pa.int64())})
            parts[split] = datasets.Dataset(table, info=datasets.DatasetInfo(features=features))
        datasets.DatasetDict(parts).save_to_disk(str(tmp))
        atomic_write_json(
            tmp / CHECKSUM_FILE,
            {
                "format": CONVERSION_FORMAT,
                "sources": source_shas,
                "arrow": _arrow_checksums(tmp),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )


def load_fashion_mnist(cfg: DataConfig) -> DataBundle:
    """Convert the IDX files once (under a file lock), then load the verified Arrow copy."""
    from filelock import FileLock

    idx_dir = Path(cfg.fashion_mnist_dir).expanduser()
    sources = _fashion_sources(idx_dir)
    missing = [name for name, path in sources.items() if not path.is_file()]
    source_shas = None if missing else {name: sha256_file(path) for name, path in sources.items()}
    cache_root = Path(cfg.cache_dir).expanduser()
    converted = cache_root / "fashion-mnist"
    notes: list[str] = []
    cache_root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_root / ".fashion-mnist.lock")):  # several processes may start at once
        if not _converted_is_valid(converted, source_shas):
            if missing or source_shas is None:
                raise _missing_fashion_error(idx_dir, missing)
            _convert_fashion_mnist(sources, source_shas, converted)
        elif missing:
            notes.append(f"IDX files missing from {idx_dir}; used the verified conversion in {converted}")
        record = read_json(converted / CHECKSUM_FILE)
    import datasets

    dd = datasets.load_from_disk(str(converted))
    parts = {}
    for split in ("train", "test"):
        images = torch.from_numpy(np.array(arrow_array(dd[split], "image"), copy=True))  # writable, off the mmap
        parts[split] = Split(images, label_tensor(dd[split], "label"))
    source_checksum = hashlib.sha256(json.dumps(record["sources"], sort_keys=True).encode()).hexdigest()
    return finish_bundle(
        cfg,
        parts["train"],
        parts["test"],
        FASHION_MNIST_CLASSES,
        f"fashion-mnist ({converted})",
        source_checksum,
        notes,
    )
