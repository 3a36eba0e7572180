"""Image classification data: load once into uint8 tensors, split reproducibly, transform on device.

Every source (Debian's Fashion-MNIST IDX files, a Hugging Face dataset, a local image folder)
ends up as the same ``DataBundle`` of uint8 ``[N, H, W, C]`` tensors, so the teacher, the
teacher cache and the students never care where images came from. Pixels stay uint8 until a
model's ``ImageTransform`` runs on the batch (on the GPU when there is one): four times less
memory than float and one resize per model instead of one per stored copy.

The bundle's ``fingerprint`` names exactly what a model saw (source checksum, split parameters,
caps and a digest of the pixels and labels of every split) so a teacher cache can tell whether
it still matches the data.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import struct
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from rkd.artifacts import atomic_write_json, read_json, sha256_file
from rkd.config import DataConfig

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CHECKSUM_FILE = "rkd_checksum.json"
CONVERSION_FORMAT = 1  # bump when the Arrow layout written by _convert_fashion_mnist changes
SPLITS = ("train", "val", "test")
IMAGE_COLUMN_NAMES = ("img", "image", "pixel_values")
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label")
TEST_SPLIT_NAMES = ("test", "validation", "valid", "val")
LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601, what PIL uses for RGB -> L


class DataError(RuntimeError):
    """A dataset is missing, malformed, or does not have the columns rkd needs."""


# ----------------------------------------------------------------------------- containers


@dataclass
class Split:
    """One split in memory: ``images`` uint8 ``[N, H, W, C]`` and ``labels`` int64 ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"Split.images must be a uint8 [N, H, W, C] tensor, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"Split.labels must be int64 [N={self.images.shape[0]}], got {self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class DataBundle:
    """Train/val/test splits plus what models need to know about them."""

    splits: dict[str, Split]
    num_classes: int
    class_names: list[str]
    channels: int
    image_shape: tuple[int, int, int]  # (H, W, C)
    fingerprint: str
    source: str
    notes: list[str] = field(default_factory=list)  # e.g. "test split carved from train"


# ----------------------------------------------------------------------------- transforms


@dataclass(frozen=True)
class ImageTransform:
    """uint8 ``[B, H, W, C]`` -> normalised float ``[B, channels, size, size]`` on the batch's device.

    Teachers and students each own one, so the same uint8 batch can feed a 224 px RGB teacher
    and a 28 px grayscale student. Grayscale inputs are repeated to 3 channels (the paper's
    teachers are RGB); RGB inputs for a 1-channel model use the BT.601 luminance.
    """

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"ImageTransform.size = {self.size!r} is invalid: expected an integer >= 1")
        if self.channels not in (1, 3):
            raise ValueError(f"ImageTransform.channels = {self.channels!r} is invalid: expected 1 or 3")
        object.__setattr__(self, "mean", _per_channel("mean", self.mean, self.channels))
        object.__setattr__(self, "std", _per_channel("std", self.std, self.channels))
        if any(s <= 0 for s in self.std):
            raise ValueError(f"ImageTransform.std = {self.std} is invalid: expected values > 0")

    def describe(self) -> dict:
        """JSON-able record (stored in the teacher cache manifest)."""
        return {"size": self.size, "channels": self.channels, "mean": list(self.mean), "std": list(self.std)}

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dtype != torch.uint8 or pixels.dim() != 4 or pixels.shape[-1] not in (1, 3):
            raise ValueError(
                f"ImageTransform input must be a uint8 [B, H, W, C] batch with C in (1, 3), "
                f"got {pixels.dtype} {tuple(pixels.shape)}"
            )
        x = pixels.permute(0, 3, 1, 2).float().div_(255.0)
        in_channels = x.shape[1]
        if in_channels == 3 and self.channels == 1:  # reduce before resizing: 3x less work
            weights = torch.tensor(LUMINANCE, device=x.device).view(1, 3, 1, 1)
            x = (x * weights).sum(dim=1, keepdim=True)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        if in_channels == 1 and self.channels == 3:  # expand after resizing
            x = x.expand(-1, 3, -1, -1)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return ((x - mean) / std).contiguous()


def _per_channel(name: str, values: Any, channels: int) -> tuple[float, ...]:
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    if len(values) == 1:
        values = values * channels
    if len(values) == 3 and channels == 1:  # an RGB processor's statistics for a grayscale model
        values = [sum(w * v for w, v in zip(LUMINANCE, values))]
    if len(values) != channels:
        raise ValueError(f"ImageTransform.{name} = {values} is invalid: expected 1 or {channels} values")
    return tuple(values)


def augment(pixels: torch.Tensor, generator: torch.Generator, padding: Optional[int] = None, flip: bool = True) -> torch.Tensor:
    """Random crop after zero padding, plus random horizontal flip, on a uint8 ``[B, H, W, C]`` batch.

    One gather per batch, on the batch's device; random numbers come from ``generator`` (CPU) so
    a run is reproducible. ``padding`` defaults to H/8 clamped to 2..4 px (4 for 28-32 px images).
    """
    if pixels.dim() != 4:
        raise ValueError(f"augment expects a [B, H, W, C] batch, got shape {tuple(pixels.shape)}")
    b, h, w, _ = pixels.shape
    pad = padding if padding is not None else int(min(4, max(2, round(h / 8))))
    padded = F.pad(pixels, (0, 0, pad, pad, pad, pad))  # pads W and H, not C
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(pixels.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(pixels.device)
    rows = oy[:, None] + torch.arange(h, device=pixels.device)  # [B, H]
    cols = ox[:, None] + torch.arange(w, device=pixels.device)  # [B, W]
    if flip:
        flipped = (torch.rand(b, generator=generator) < 0.5).to(pixels.device)
        cols = torch.where(flipped[:, None], cols.flip(-1), cols)
    batch = torch.arange(b, device=pixels.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


def channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 ``[N, H, W, C]`` images in [0, 1] units (chunked: no big float copy)."""
    channels = images.shape[-1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].reshape(-1, channels).to(torch.float64).div_(255.0)
        total += x.sum(0)
        total_sq += (x * x).sum(0)
        count += x.shape[0]
    mean = total / max(1, count)
    std = (total_sq / max(1, count) - mean**2).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


def student_transform(cfg: DataConfig, bundle: DataBundle) -> ImageTransform:
    """The student's input pipeline: ``cfg.image_size``, the data's channels, train-split statistics."""
    mean, std = channel_stats(bundle.splits["train"].images)
    return ImageTransform(size=cfg.image_size, channels=bundle.channels, mean=mean, std=[max(s, 1e-3) for s in std])


# ----------------------------------------------------------------------------- loaders


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


# ----------------------------------------------------------------------------- splitting


def _seeded_perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))


def split_indices(n: int, fraction: float, seed: int, what: str = "data.val_fraction") -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (kept, carved) index sets, each sorted; ``carved`` holds round(n * fraction) >= 1 rows."""
    carved_n = max(1, int(round(n * fraction)))
    if carved_n >= n:
        raise DataError(f"cannot carve {fraction:.3f} ({what}) of a split with {n} images: nothing would be left "
                        f"to train on; the dataset needs more labelled images")
    perm = _seeded_perm(n, seed)
    return perm[carved_n:].sort().values, perm[:carved_n].sort().values


def _cap(split: Split, limit: Optional[int], seed: int) -> Split:
    if limit is None or limit >= len(split):
        return split
    keep = _seeded_perm(len(split), seed)[:limit].sort().values
    return Split(split.images[keep].contiguous(), split.labels[keep].contiguous())


def _take(split: Split, index: torch.Tensor) -> Split:
    return Split(split.images[index].contiguous(), split.labels[index].contiguous())


def _finish(
    cfg: DataConfig,
    train: Split,
    test: Split,
    class_names: list[str],
    source: str,
    source_checksum: str,
    notes: list[str],
) -> DataBundle:
    """Carve val from train, apply caps, fingerprint: the same for every source."""
    kept, carved = split_indices(len(train), cfg.val_fraction, cfg.split_seed)
    splits = {"train": _take(train, kept), "val": _take(train, carved), "test": test}
    caps = {"train": cfg.max_train, "val": cfg.max_val, "test": cfg.max_test}
    for offset, name in enumerate(SPLITS):  # a different stream per split: caps never correlate
        splits[name] = _cap(splits[name], caps[name], cfg.split_seed + 1000 + offset)
    shapes = {tuple(s.images.shape[1:]) for s in splits.values()}
    if len(shapes) != 1:
        raise DataError(f"splits of {source} have different image shapes {sorted(shapes)}")
    image_shape = shapes.pop()
    if image_shape[-1] not in (1, 3):
        raise DataError(f"{source}: images have {image_shape[-1]} channels; rkd supports 1 (grayscale) or 3 (RGB)")
    max_label = max(int(s.labels.max()) if len(s) else -1 for s in splits.values())
    min_label = min(int(s.labels.min()) if len(s) else 0 for s in splits.values())
    if min_label < 0 or max_label >= len(class_names):
        raise DataError(
            f"{source}: labels span [{min_label}, {max_label}] but there are {len(class_names)} class names; "
            f"expected labels in [0, {len(class_names) - 1}] (unlabelled rows use -1: drop them first)"
        )
    if len(class_names) < 2:
        raise DataError(f"{source}: {len(class_names)} class(es) {class_names}; classification needs at least 2")
    for name, split in splits.items():
        if len(split) == 0:
            raise DataError(f"{source}: the {name} split is empty after carving and caps; raise data.max_{name} "
                            f"or data.val_fraction, or give the dataset more images")
    unseen = sorted(set(splits["test"].labels.unique().tolist()) - set(splits["train"].labels.unique().tolist()))
    if unseen:
        shown = ", ".join(class_names[i] for i in unseen[:10]) + (", ..." if len(unseen) > 10 else "")
        note = f"{len(unseen)} class(es) appear in test but not in train ({shown}): they cannot be learnt"
        notes.append(note)
        warnings.warn(f"{source}: {note}", stacklevel=2)
        source = f"{source} [{note}]"
    fingerprint = _fingerprint(source_checksum, cfg, splits, class_names)
    return DataBundle(splits=splits, num_classes=len(class_names), class_names=list(class_names),
                      channels=int(image_shape[-1]), image_shape=tuple(int(v) for v in image_shape),
                      fingerprint=fingerprint, source=source, notes=notes)


def _digest_split(split: Split) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(list(split.images.shape)).encode())
    digest.update(memoryview(split.images.contiguous().numpy()).cast("B"))
    digest.update(memoryview(split.labels.contiguous().numpy()).cast("B"))
    return digest.hexdigest()


def _fingerprint(source_checksum: str, cfg: DataConfig, splits: dict[str, Split], class_names: list[str]) -> str:
    record = {  # content, not paths: moving a dataset or its cache keeps the fingerprint
        "source_checksum": source_checksum,
        "val_fraction": cfg.val_fraction,
        "split_seed": cfg.split_seed,
        "caps": [cfg.max_train, cfg.max_val, cfg.max_test],
        "class_names": list(class_names),
        "content": {name: _digest_split(split) for name, split in splits.items()},
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- entry point


def load_data(cfg: DataConfig, test_fraction: float = 0.1) -> DataBundle:
    """Load ``cfg.name`` into a train/val/test ``DataBundle``.

    ``test_fraction`` is carved (seeded with ``cfg.split_seed``) from train when a dataset ships
    without a labelled test split.
    """
    name = cfg.name
    if name == "fashion-mnist":
        return _load_fashion_mnist(cfg)
    if name.startswith("hf:"):
        return _load_hf(cfg, name[3:], test_fraction)
    if name.startswith("imagefolder:"):
        return _load_imagefolder(cfg, name[len("imagefolder:"):], test_fraction)
    raise DataError(f"data.name = {name!r} is not supported: expected 'fashion-mnist', 'hf:<hub id or dir>' or 'imagefolder:<dir>'")


# ----------------------------------------------------------------------------- Fashion-MNIST


def read_idx(path: Path) -> np.ndarray:
    """Parse a (gzipped) IDX file of unsigned bytes: images ``[N, H, W]`` or labels ``[N]``."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file: only {len(raw)} bytes")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        raise DataError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()}); expected 00000801 or 00000803")
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


def _converted_is_valid(root: Path, source_shas: Optional[dict[str, str]]) -> bool:
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
    """IDX -> ``DatasetDict`` saved with ``save_to_disk`` into a temp dir, then renamed onto ``target``.

    Images are stored as nested fixed-length uint8 lists ``[28][28][1]`` rather than ``Image()``:
    47 MB on disk, and loading is a zero-copy Arrow -> numpy view (~0.02 s for 60k images) instead
    of decoding 70k PNGs.
    """
    import datasets
    import pyarrow as pa

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        parts = {}
        for split, (image_file, label_file) in FASHION_MNIST_FILES.items():
            images = read_idx(sources[image_file])
            labels = read_idx(sources[label_file]).astype(np.int64)
            if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
                raise DataError(f"Fashion-MNIST {split}: {image_file} {images.shape} and {label_file} {labels.shape} do not pair up")
            features = datasets.Features({
                "image": _uint8_image_feature((*images.shape[1:], 1)),
                "label": datasets.ClassLabel(names=FASHION_MNIST_CLASSES),
            })
            table = pa.table({"image": _uint8_image_column(images[..., None]), "label": pa.array(labels, pa.int64())})
            parts[split] = datasets.Dataset(table, info=datasets.DatasetInfo(features=features))
        datasets.DatasetDict(parts).save_to_disk(str(tmp))
        atomic_write_json(tmp / CHECKSUM_FILE, {
            "format": CONVERSION_FORMAT,
            "sources": source_shas,
            "arrow": _arrow_checksums(tmp),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        stale = None
        if target.exists():  # move aside first: a directory cannot be renamed onto a non-empty one
            stale = target.parent / f".{target.name}.stale-{os.getpid()}-{time.time_ns()}"
            os.replace(target, stale)
        os.replace(tmp, target)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _arrow_array(dataset: Any, column: str) -> np.ndarray:
    """A column of equally shaped arrays as one numpy array ``[N, ...]`` with the stored dtype.

    Reads Arrow buffers directly: ``with_format("numpy")`` builds nested lists row by row (minutes
    for 60k images) and upcasts uint8 to int64.
    """
    import pyarrow as pa

    array = dataset.with_format(None).data.column(column).combine_chunks()
    if isinstance(array, pa.ExtensionArray):  # datasets' ArrayND features
        array = array.storage
    dims: list[Optional[int]] = []
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
    if None in dims or values.size != n * int(np.prod(dims, dtype=np.int64)):
        raise DataError(f"column {column!r} holds arrays of different shapes; store images as an Image feature instead")
    return values.reshape(n, *dims)


def _load_fashion_mnist(cfg: DataConfig) -> DataBundle:
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
            if missing:
                raise _missing_fashion_error(idx_dir, missing)
            _convert_fashion_mnist(sources, source_shas, converted)
        elif missing:
            notes.append(f"IDX files missing from {idx_dir}; used the verified conversion in {converted}")
        record = read_json(converted / CHECKSUM_FILE)
    import datasets

    dd = datasets.load_from_disk(str(converted))
    parts = {}
    for split in ("train", "test"):
        images = torch.from_numpy(np.array(_arrow_array(dd[split], "image"), copy=True))  # writable, off the mmap
        labels = torch.from_numpy(np.array(dd[split].with_format(None).data.column("label").to_numpy(), dtype=np.int64))
        parts[split] = Split(images, labels)
    source_checksum = hashlib.sha256(json.dumps(record["sources"], sort_keys=True).encode()).hexdigest()
    return _finish(cfg, parts["train"], parts["test"], FASHION_MNIST_CLASSES, f"fashion-mnist ({converted})",
                   source_checksum, notes)


# ----------------------------------------------------------------------------- Hugging Face datasets


def _is_save_to_disk_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def _load_hf(cfg: DataConfig, spec: str, test_fraction: float) -> DataBundle:
    import datasets

    if not spec:
        raise DataError("data.name = 'hf:' names no dataset: expected 'hf:<hub id>' (e.g. hf:uoft-cs/cifar100) or 'hf:<save_to_disk dir>'")
    path = Path(spec).expanduser()
    if _is_save_to_disk_dir(path):
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:  # truncated arrow files, missing shards, an empty split
            raise DataError(
                f"data.name = 'hf:{spec}': datasets could not read the save_to_disk directory {str(path)!r} "
                f"({type(exc).__name__}: {exc}). Re-save it with Dataset(Dict).save_to_disk; datasets cannot "
                f"reload a split saved with no rows, so drop empty splits first") from exc
        origin = f"hf:{spec} (save_to_disk dir)"
    elif spec.startswith(("/", "./", "../", "~")) and not path.exists():
        raise DataError(f"data.name = 'hf:{spec}': directory {str(path)!r} does not exist; expected a "
                        f"datasets.save_to_disk directory or a hub id such as hf:uoft-cs/cifar100")
    else:
        try:
            loaded = datasets.load_dataset(str(path) if path.is_dir() else spec)
        except Exception as exc:  # hub errors come in many types (offline, not found, gated)
            raise DataError(
                f"data.name = 'hf:{spec}': could not load it with datasets.load_dataset ({type(exc).__name__}: {exc}). "
                f"Check the hub id and your network (HF_HUB_OFFLINE must be unset), or point data.name at a "
                f"local datasets.save_to_disk directory."
            ) from exc
        origin = f"hf:{spec}" + (" (local dir)" if path.is_dir() else " (hub)")
    return _bundle_from_hf(cfg, loaded, origin, test_fraction)


def _load_imagefolder(cfg: DataConfig, spec: str, test_fraction: float) -> DataBundle:
    """A local class-per-folder tree via datasets' ``imagefolder`` builder (works offline for local dirs)."""
    import datasets

    root = Path(spec).expanduser()
    if not root.is_dir():
        raise DataError(f"data.name = 'imagefolder:{spec}': directory {str(root)!r} does not exist; expected a directory "
                        f"with one sub-folder per class (or train/ and test/ sub-folders, each with class folders)")
    base = root / "train" if (root / "train").is_dir() else root
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and any(f.is_file() for f in d.rglob("*")))
    if len(classes) < 2:
        raise DataError(f"data.name = 'imagefolder:{spec}': {base} has {len(classes)} class folder(s) with files "
                        f"{classes}; expected one sub-folder per class and at least 2 classes")
    arrow_cache = Path(cfg.cache_dir).expanduser() / "imagefolder-arrow"
    try:
        loaded = datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=str(arrow_cache))
    except Exception as exc:
        raise DataError(f"data.name = 'imagefolder:{spec}': datasets could not read {root} as an image folder "
                        f"({type(exc).__name__}: {exc}); expected <dir>/<class>/<image> or <dir>/{{train,test}}/<class>/<image>") from exc
    return _bundle_from_hf(cfg, loaded, f"imagefolder:{root}", test_fraction)


def _detect_columns(features: Any, image_column: Optional[str], label_column: Optional[str], origin: str) -> tuple[str, str]:
    import datasets

    columns = list(features)
    described = ", ".join(f"{c} ({type(features[c]).__name__})" for c in columns)
    for field_name, chosen in (("data.image_column", image_column), ("data.label_column", label_column)):
        if chosen is not None and chosen not in features:
            raise DataError(f"{field_name} = {chosen!r} is not a column of {origin}; available columns: {described}")
    if image_column is None:
        images = [c for c in columns if isinstance(features[c], datasets.Image)]
        images += [c for c in IMAGE_COLUMN_NAMES if c in features and c not in images]
        if not images:
            raise DataError(f"{origin}: no image column found (looked for an Image feature or the names "
                            f"{IMAGE_COLUMN_NAMES}); set data.image_column. Available columns: {described}")
        image_column = images[0]
    if label_column is None:
        class_labels = [c for c in columns if isinstance(features[c], datasets.ClassLabel)]
        preferred = [c for c in LABEL_COLUMN_NAMES if c in class_labels]
        named = [c for c in LABEL_COLUMN_NAMES if c in features]
        candidates = preferred or class_labels or named
        if not candidates:
            raise DataError(f"{origin}: no label column found (looked for a ClassLabel feature or the names "
                            f"{LABEL_COLUMN_NAMES}); set data.label_column. Available columns: {described}")
        label_column = candidates[0]
    return image_column, label_column


def _bundle_from_hf(cfg: DataConfig, loaded: Any, origin: str, test_fraction: float) -> DataBundle:
    import datasets

    notes: list[str] = []
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    available = list(loaded.keys())
    if "train" in loaded:
        train_name = "train"
    elif len(available) == 1:
        train_name = available[0]
        notes.append(f"used the only split {train_name!r} as train")
    else:
        raise DataError(f"{origin} has no 'train' split; available splits: {available}")
    if len(loaded[train_name]) == 0:
        raise DataError(f"{origin}: split {train_name!r} is empty; rkd trains on it, so it needs labelled images")
    image_col, label_col = _detect_columns(loaded[train_name].features, cfg.image_column, cfg.label_column, origin)
    features = loaded[train_name].features
    if isinstance(features[label_col], datasets.ClassLabel):
        class_names = list(features[label_col].names)
    else:
        class_names = None
    test_name = None
    for candidate in TEST_SPLIT_NAMES:
        if candidate in loaded and candidate != train_name:
            if len(loaded[candidate]) == 0:
                notes.append(f"split {candidate!r} is empty; not used as test")
                continue
            labels = np.asarray(loaded[candidate].with_format(None).data.column(label_col).to_numpy())
            if labels.size and labels.min() >= 0:
                test_name = candidate
                break
            notes.append(f"split {candidate!r} is unlabelled (label -1); not used as test")
    unused = [s for s in available if s not in (train_name, test_name)]
    if unused:
        notes.append(f"splits {unused} not used")
    names = [train_name] + ([test_name] if test_name else [])
    arrays = _decode_images({n: loaded[n] for n in names}, image_col, cfg.image_size, notes)
    labels = {}
    for n in names:
        column = loaded[n].with_format(None).data.column(label_col)
        labels[n] = torch.from_numpy(np.array(column.to_numpy(), dtype=np.int64))
    if class_names is None:
        top = max(int(l.max()) for l in labels.values())
        class_names = [str(i) for i in range(top + 1)]
        notes.append(f"label column {label_col!r} is not a ClassLabel; class names are the integers 0..{top}")
    train = Split(arrays[train_name], labels[train_name])
    test = Split(arrays[test_name], labels[test_name]) if test_name is not None else None
    # the source's own content (paths and datasets' cache fingerprints move; pixels do not)
    source_checksum = hashlib.sha256(json.dumps({
        "train": _digest_split(train),
        "test": _digest_split(test) if test is not None else None,
        "carved_test_fraction": None if test is not None else test_fraction,
    }, sort_keys=True).encode()).hexdigest()
    if test is not None:
        if test_name != "test":
            notes.append(f"split {test_name!r} used as test")
    else:
        kept, carved = split_indices(len(train), test_fraction, cfg.split_seed + 7919, what="a test split, as the data has none")
        train, test = _take(train, kept), _take(train, carved)
        notes.append(f"no labelled test split: carved {len(test)} images ({test_fraction:.0%}) from train, "
                     f"seeded by data.split_seed")
    source = origin + (f" [{'; '.join(notes)}]" if notes else "")
    return _finish(cfg, train, test, class_names, source, source_checksum, notes)


def _pil_to_array(image: Any) -> np.ndarray:
    if image.mode == "L":
        return np.asarray(image)
    if image.mode == "RGB":
        return np.asarray(image)
    if image.mode in ("1", "I", "I;16", "F", "LA"):
        return np.asarray(image.convert("L"))
    return np.asarray(image.convert("RGB"))


def _pil_images(ds: Any, column: str) -> Iterator[Any]:
    """Decode an ``Image`` column straight from its Arrow ``{bytes, path}`` storage with PIL.

    About 3x faster than iterating the dataset (which formats every row); rows without bytes
    (e.g. remote paths) go through the feature's own decoder.
    """
    import io

    from PIL import Image as PILImage

    storage = ds.with_format(None).data.column(column).combine_chunks()
    blobs, paths = storage.field("bytes").to_pylist(), storage.field("path").to_pylist()
    feature = ds.features[column]
    for row, (blob, path) in enumerate(zip(blobs, paths)):
        try:
            if blob is not None:
                image = PILImage.open(io.BytesIO(blob))
            elif path is not None and os.path.isfile(path):
                image = PILImage.open(path)
            else:
                image = feature.decode_example({"bytes": blob, "path": path})
            image.load()
        except Exception as exc:  # PIL raises several types for truncated or non-image files
            raise DataError(f"image column {column!r}, row {row}{f' ({path})' if path else ''} is not a readable image "
                            f"({type(exc).__name__}: {exc}); remove or replace it") from None
        yield image


def _decode_images(parts: dict[str, Any], column: str, image_size: int, notes: list[str]) -> dict[str, torch.Tensor]:
    """Image or array columns -> uint8 ``[N, H, W, C]``; mixed sizes are resized to ``image_size``."""
    import datasets
    from PIL import Image as PILImage

    decoded: dict[str, list[np.ndarray] | np.ndarray] = {}
    for name, ds in parts.items():
        feature = ds.features[column]
        if isinstance(feature, datasets.Image):
            decoded[name] = [_pil_to_array(img) for img in _pil_images(ds, column)]
        else:
            array = _arrow_array(ds, column)
            if array.ndim not in (3, 4):
                raise DataError(f"image column {column!r} holds arrays of shape {array.shape[1:]}; expected [H, W] or [H, W, C]")
            if array.ndim == 4 and array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3):
                array = array.transpose(0, 2, 3, 1)  # channels-first -> channels-last
            if np.issubdtype(array.dtype, np.floating):
                if array.size and not np.isfinite(array).all():
                    bad = int(np.argwhere(~np.isfinite(array.reshape(len(array), -1)))[0][0])
                    raise DataError(f"image column {column!r} of split {name!r}: row {bad} has NaN or Inf pixel "
                                    f"values; fix or drop those rows")
                array = array * 255.0 if array.max() <= 1.0 else array
            decoded[name] = list(np.clip(array, 0, 255).astype(np.uint8))
    sizes = {a.shape[:2] for arrays in decoded.values() for a in arrays}
    color = any(a.ndim == 3 and a.shape[-1] == 3 for arrays in decoded.values() for a in arrays)
    resize = len(sizes) > 1
    if resize:
        notes.append(f"images of {len(sizes)} different sizes resized to {image_size}x{image_size} (data.image_size)")
    out = {}
    for name, arrays in decoded.items():
        fixed = []
        for a in arrays:
            if a.ndim == 3 and a.shape[-1] == 1:
                a = a[..., 0]
            if resize and a.shape[:2] != (image_size, image_size):
                a = np.asarray(PILImage.fromarray(a).resize((image_size, image_size), PILImage.BILINEAR))
            if a.ndim == 2:
                a = np.repeat(a[..., None], 3, axis=-1) if color else a[..., None]
            fixed.append(a)
        out[name] = torch.from_numpy(np.stack(fixed)) if fixed else torch.zeros((0, image_size, image_size, 3 if color else 1), dtype=torch.uint8)
    return out


def describe(bundle: DataBundle) -> str:
    """One line for logs."""
    sizes = ", ".join(f"{k} {len(v)}" for k, v in bundle.splits.items())
    return f"{bundle.source}: {sizes}; {bundle.num_classes} classes; images {bundle.image_shape}"


__all__ = [
    "DataError", "Split", "DataBundle", "ImageTransform", "augment", "channel_stats", "student_transform",
    "IndexedImages", "make_loader", "split_indices", "load_data", "read_idx", "describe", "FASHION_MNIST_CLASSES",
]
