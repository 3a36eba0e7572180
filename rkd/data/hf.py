"""The ``hf:`` source: a hub id, a local dataset directory or a ``save_to_disk`` directory, decoded to uint8 splits.

``datasets``, ``pyarrow`` and PIL are imported inside the functions that need them: they take seconds to
import, and ``import rkd.data`` (for transforms and loaders) should not pay for them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rkd.config import DataConfig
from rkd.data.arrow import arrow_array, arrow_column, label_tensor
from rkd.data.bundle import DataBundle, DataError, Split, digest_split, finish_bundle, split_indices, take_rows

IMAGE_COLUMN_NAMES = ("img", "image", "pixel_values")
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label")
TEST_SPLIT_NAMES = ("test", "validation", "valid", "val")


def _is_save_to_disk_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def load_hf(cfg: DataConfig, spec: str, test_fraction: float) -> DataBundle:
    """``hf:<spec>``: a ``save_to_disk`` directory, a local dataset directory or a hub id, in that order."""
    import datasets

    if not spec:
        raise DataError(
            "data.name = 'hf:' names no dataset: expected 'hf:<hub id>' (e.g. hf:uoft-cs/cifar100) or 'hf:<save_to_disk dir>'"
        )
    path = Path(spec).expanduser()
    if _is_save_to_disk_dir(path):
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:  # truncated arrow files, missing shards, an empty split
            raise DataError(
                f"data.name = 'hf:{spec}': datasets could not read the save_to_disk directory {str(path)!r} "
                f"({type(exc).__name__}: {exc}). Re-save it with Dataset(Dict).save_to_disk; datasets cannot "
                f"reload a split saved with no rows, so drop empty splits first"
            ) from exc
        origin = f"hf:{spec} (save_to_disk dir)"
    elif spec.startswith(("/", "./", "../", "~")) and not path.exists():
        raise DataError(
            f"data.name = 'hf:{spec}': directory {str(path)!r} does not exist; expected a "
            f"datasets.save_to_disk directory or a hub id such as hf:uoft-cs/cifar100"
        )
    else:
        try:
            loaded = datasets.load_dataset(str(path) if path.is_dir() else spec)
        except Exception as exc:  # hub errors come in many types (offline, not found, gated)
            raise DataError(
                f"data.name = 'hf:{spec}': could not load it with datasets.load_dataset ({type(exc).__name__}: {exc}). "
                f"Check the hub id. On a node without network: download it once where there is network (it lands "
                f"in HF_HOME, shared with the compute nodes) and run with HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1 "
                f"so datasets reads that cache, or point data.name at a local datasets.save_to_disk directory."
            ) from exc
        origin = f"hf:{spec}" + (" (local dir)" if path.is_dir() else " (hub)")
    return bundle_from_hf(cfg, loaded, origin, test_fraction)


def _detect_columns(features: Any, image_column: str | None, label_column: str | None, origin: str) -> tuple[str, str]:
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
            raise DataError(
                f"{origin}: no image column found (looked for an Image feature or the names "
                f"{IMAGE_COLUMN_NAMES}); set data.image_column. Available columns: {described}"
            )
        image_column = images[0]
    if label_column is None:
        class_labels = [c for c in columns if isinstance(features[c], datasets.ClassLabel)]
        preferred = [c for c in LABEL_COLUMN_NAMES if c in class_labels]
        named = [c for c in LABEL_COLUMN_NAMES if c in features]
        candidates = preferred or class_labels or named
        if not candidates:
            raise DataError(
                f"{origin}: no label column found (looked for a ClassLabel feature or the names "
                f"{LABEL_COLUMN_NAMES}); set data.label_column. Available columns: {described}"
            )
        label_column = candidates[0]
    return image_column, label_column


def _train_split_name(loaded: Any, origin: str, notes: list[str]) -> str:
    """``train``, or the only split there is."""
    available = list(loaded.keys())
    if "train" in loaded:
        return "train"
    if len(available) == 1:
        notes.append(f"used the only split {available[0]!r} as train")
        return available[0]
    raise DataError(f"{origin} has no 'train' split; available splits: {available}")


def _test_split_name(loaded: Any, train_name: str, label_col: str, notes: list[str]) -> str | None:
    """The first of ``TEST_SPLIT_NAMES`` that is not empty and carries labels (None: carve one from train)."""
    for candidate in TEST_SPLIT_NAMES:
        if candidate in loaded and candidate != train_name:
            if len(loaded[candidate]) == 0:
                notes.append(f"split {candidate!r} is empty; not used as test")
                continue
            labels = np.asarray(arrow_column(loaded[candidate], label_col).to_numpy())
            if labels.size and labels.min() >= 0:
                return candidate
            notes.append(f"split {candidate!r} is unlabelled (label -1); not used as test")
    return None


def bundle_from_hf(cfg: DataConfig, loaded: Any, origin: str, test_fraction: float) -> DataBundle:
    """A loaded ``Dataset(Dict)`` -> ``DataBundle``: pick train/test splits and columns, decode, carve a test split if none."""
    import datasets

    notes: list[str] = []
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    available = list(loaded.keys())
    train_name = _train_split_name(loaded, origin, notes)
    if len(loaded[train_name]) == 0:
        raise DataError(f"{origin}: split {train_name!r} is empty; rkd trains on it, so it needs labelled images")
    image_col, label_col = _detect_columns(loaded[train_name].features, cfg.image_column, cfg.label_column, origin)
    features = loaded[train_name].features
    if isinstance(features[label_col], datasets.ClassLabel):
        class_names = list(features[label_col].names)
    else:
        class_names = None
    test_name = _test_split_name(loaded, train_name, label_col, notes)
    unused = [s for s in available if s not in (train_name, test_name)]
    if unused:
        notes.append(f"splits {unused} not used")
    names = [train_name] + ([test_name] if test_name else [])
    arrays = _decode_images({n: loaded[n] for n in names}, image_col, cfg.image_size, notes)
    labels = {n: label_tensor(loaded[n], label_col) for n in names}
    if class_names is None:
        top = max(int(column.max()) for column in labels.values())
        class_names = [str(i) for i in range(top + 1)]
        notes.append(f"label column {label_col!r} is not a ClassLabel; class names are the integers 0..{top}")
    train = Split(arrays[train_name], labels[train_name])
    test = Split(arrays[test_name], labels[test_name]) if test_name is not None else None
    # the source's own content (paths and datasets' cache fingerprints move; pixels do not)
    source_checksum = hashlib.sha256(
        json.dumps(
            {
                "train": digest_split(train),
                "test": digest_split(test) if test is not None else None,
                "carved_test_fraction": None if test is not None else test_fraction,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    if test is not None:
        if test_name != "test":
            notes.append(f"split {test_name!r} used as test")
    else:
        kept, carved = split_indices(
            len(train), test_fraction, cfg.split_seed + 7919, what="a test split, as the data has none"
        )
        train, test = take_rows(train, kept), take_rows(train, carved)
        notes.append(
            f"no labelled test split: carved {len(test)} images ({test_fraction:.0%}) from train, "
            f"seeded by data.split_seed"
        )
    source = origin + (f" [{'; '.join(notes)}]" if notes else "")
    return finish_bundle(cfg, train, test, class_names, source, source_checksum, notes)


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

    Faster than iterating the dataset, which formats every row; rows without bytes
    (e.g. remote paths) go through the feature's own decoder.
    """
    from PIL import Image as PILImage

    storage = arrow_column(ds, column).combine_chunks()
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
            raise DataError(
                f"image column {column!r}, row {row}{f' ({path})' if path else ''} is not a readable image "
                f"({type(exc).__name__}: {exc}); remove or replace it"
            ) from None
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
            array = arrow_array(ds, column)
            if array.ndim not in (3, 4):
                raise DataError(
                    f"image column {column!r} holds arrays of shape {array.shape[1:]}; expected [H, W] or [H, W, C]"
                )
            if array.ndim == 4 and array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3):
                array = array.transpose(0, 2, 3, 1)  # channels-first -> channels-last
            if np.issubdtype(array.dtype, np.floating):
                if array.size and not np.isfinite(array).all():
                    bad = int(np.argwhere(~np.isfinite(array.reshape(len(array), -1)))[0][0])
                    raise DataError(
                        f"image column {column!r} of split {name!r}: row {bad} has NaN or Inf pixel "
                        f"values; fix or drop those rows"
                    )
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
                a = np.asarray(PILImage.fromarray(a).resize((image_size, image_size), PILImage.Resampling.BILINEAR))
            if a.ndim == 2:
                a = np.repeat(a[..., None], 3, axis=-1) if color else a[..., None]
            fixed.append(a)
        out[name] = (
            torch.from_numpy(np.stack(fixed))
            if fixed
            else torch.zeros((0, image_size, image_size, 3 if color else 1), dtype=torch.uint8)
        )
    return out
