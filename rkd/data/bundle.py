"""The one shape every source ends up in: a ``DataBundle`` of uint8 splits, carved and fingerprinted alike.

Every source (Debian's Fashion-MNIST IDX files, a Hugging Face dataset, a local image folder)
ends up as the same ``DataBundle`` of uint8 ``[N, H, W, C]`` tensors, so the teacher, the
teacher cache and the students never care where images came from.

The bundle's ``fingerprint`` names exactly what a model saw (source checksum, split parameters,
caps and a digest of the pixels and labels of every split) so a teacher cache can tell whether
it still matches the data.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field

import torch

from rkd.config import DataConfig

SPLITS = ("train", "val", "test")


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
            raise DataError(
                f"Split.images must be a uint8 [N, H, W, C] tensor, got {self.images.dtype} {tuple(self.images.shape)}"
            )
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


# ----------------------------------------------------------------------------- splitting


def _seeded_perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))


def split_indices(
    n: int, fraction: float, seed: int, what: str = "data.val_fraction"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (kept, carved) index sets, each sorted; ``carved`` holds round(n * fraction) >= 1 rows."""
    carved_n = max(1, int(round(n * fraction)))
    if carved_n >= n:
        raise DataError(
            f"cannot carve {fraction:.3f} ({what}) of a split with {n} images: nothing would be left "
            f"to train on; the dataset needs more labelled images"
        )
    perm = _seeded_perm(n, seed)
    return perm[carved_n:].sort().values, perm[:carved_n].sort().values


def _cap(split: Split, limit: int | None, seed: int) -> Split:
    if limit is None or limit >= len(split):
        return split
    return take_rows(split, _seeded_perm(len(split), seed)[:limit].sort().values)


def take_rows(split: Split, index: torch.Tensor) -> Split:
    """The rows ``index`` of ``split`` as a new, contiguous split."""
    return Split(split.images[index].contiguous(), split.labels[index].contiguous())


def finish_bundle(
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
    splits = {"train": take_rows(train, kept), "val": take_rows(train, carved), "test": test}
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
            raise DataError(
                f"{source}: the {name} split is empty after carving and caps; raise data.max_{name} "
                f"or data.val_fraction, or give the dataset more images"
            )
    unseen = sorted(set(splits["test"].labels.unique().tolist()) - set(splits["train"].labels.unique().tolist()))
    if unseen:
        shown = ", ".join(class_names[i] for i in unseen[:10]) + (", ..." if len(unseen) > 10 else "")
        note = f"{len(unseen)} class(es) appear in test but not in train ({shown}): they cannot be learnt"
        notes.append(note)
        warnings.warn(f"{source}: {note}", stacklevel=2)
        source = f"{source} [{note}]"
    fingerprint = _fingerprint(source_checksum, cfg, splits, class_names)
    return DataBundle(
        splits=splits,
        num_classes=len(class_names),
        class_names=list(class_names),
        channels=int(image_shape[-1]),
        image_shape=(int(image_shape[0]), int(image_shape[1]), int(image_shape[2])),
        fingerprint=fingerprint,
        source=source,
        notes=notes,
    )


def digest_split(split: Split) -> str:
    """sha256 of a split's shape, pixels and labels: its content, wherever it was loaded from."""
    digest = hashlib.sha256()
    digest.update(json.dumps(list(split.images.shape)).encode())
    digest.update(split.images.contiguous().numpy().data.cast("B"))
    digest.update(split.labels.contiguous().numpy().data.cast("B"))
    return digest.hexdigest()


def _fingerprint(source_checksum: str, cfg: DataConfig, splits: dict[str, Split], class_names: list[str]) -> str:
    record = {  # content, not paths: moving a dataset or its cache keeps the fingerprint
        "source_checksum": source_checksum,
        "val_fraction": cfg.val_fraction,
        "split_seed": cfg.split_seed,
        "caps": [cfg.max_train, cfg.max_val, cfg.max_test],
        "class_names": list(class_names),
        "content": {name: digest_split(split) for name, split in splits.items()},
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def describe(bundle: DataBundle) -> str:
    """One line for logs."""
    sizes = ", ".join(f"{k} {len(v)}" for k, v in bundle.splits.items())
    return f"{bundle.source}: {sizes}; {bundle.num_classes} classes; images {bundle.image_shape}"
