"""The ``imagefolder:`` source: a local class-per-folder tree, read by datasets' ``imagefolder`` builder.

``datasets`` is imported inside ``load_imagefolder``: it takes seconds to import.
"""

from __future__ import annotations

from pathlib import Path

from rkd.config import DataConfig
from rkd.data.bundle import DataBundle, DataError
from rkd.data.hf import bundle_from_hf


def load_imagefolder(cfg: DataConfig, spec: str, test_fraction: float) -> DataBundle:
    """A local class-per-folder tree via datasets' ``imagefolder`` builder (works offline for local dirs)."""
    import datasets

    root = Path(spec).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data.name = 'imagefolder:{spec}': directory {str(root)!r} does not exist; expected a directory "
            f"with one sub-folder per class (or train/ and test/ sub-folders, each with class folders)"
        )
    base = root / "train" if (root / "train").is_dir() else root
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and any(f.is_file() for f in d.rglob("*")))
    if len(classes) < 2:
        raise DataError(
            f"data.name = 'imagefolder:{spec}': {base} has {len(classes)} class folder(s) with files "
            f"{classes}; expected one sub-folder per class and at least 2 classes"
        )
    arrow_cache = Path(cfg.cache_dir).expanduser() / "imagefolder-arrow"
    try:
        loaded = datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=str(arrow_cache))
    except Exception as exc:
        raise DataError(
            f"data.name = 'imagefolder:{spec}': datasets could not read {root} as an image folder "
            f"({type(exc).__name__}: {exc}); expected <dir>/<class>/<image> or <dir>/{{train,test}}/<class>/<image>"
        ) from exc
    return bundle_from_hf(cfg, loaded, f"imagefolder:{root}", test_fraction)
