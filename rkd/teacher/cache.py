"""The teacher cache: one frozen teacher pass written once, verified, and read by sample index.

``rkd.teacher.cache_build.build_cache`` writes the teacher's logits and pooled features for every split to fp16,
checksummed safetensors shards (a killed build resumes, recomputing only missing or stale
shards); students then read ``TeacherCache.targets`` by sample index, so a 300M-parameter
teacher costs one inference pass, not one per student epoch.

The cache is keyed by the teacher's identity (a hash of its weights) and the dataset
fingerprint; ``load_cache`` refuses anything that does not match, naming the file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from rkd.data import SPLITS
from rkd.run.artifacts import PathLike, read_json_checked, sha256_file

CACHE_FORMAT = "rkd-teacher-cache"
CACHE_VERSION = 1
MANIFEST = "manifest.json"
AUGMENTATION_NONE = "none: un-augmented single view"
AUGMENTATION_FLIP = "flip-average: mean of each image's and its horizontal mirror's outputs"
FP16_MAX = 65504.0


class CacheError(RuntimeError):
    """The teacher cache is missing, incomplete, corrupt or built for another teacher or dataset."""


@dataclass
class TeacherCache:
    """Cached fp16 teacher outputs per split, row ``i`` belonging to sample ``i`` of that split."""

    logits: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor]
    manifest: dict
    path: Path

    def targets(self, split: str, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The teacher's outputs for a batch's ``index`` tensor, as float32 on the index's device."""
        if split not in self.logits:
            raise KeyError(f"split {split!r} is not in the teacher cache {self.path}; available: {sorted(self.logits)}")
        rows = index.to(self.logits[split].device, dtype=torch.long)
        return {
            "teacher_logits": self.logits[split][rows].to(index.device).float(),
            "teacher_features": self.features[split][rows].to(index.device).float(),
        }

    def to(self, device: str | torch.device) -> TeacherCache:
        """Move every tensor (e.g. to the GPU, so ``targets`` gathers there without a copy per batch)."""
        return TeacherCache(
            {k: v.to(device) for k, v in self.logits.items()},
            {k: v.to(device) for k, v in self.features.items()},
            self.manifest,
            self.path,
        )


_REBUILD = "delete the cache directory or rerun the pipeline to rebuild it"


def _check_split(cache_dir: Path, path: Path, split: str, entry: dict) -> None:
    """The split's shards cover it exactly, in order, and each file's sha256 is the manifest's."""
    cursor = 0
    for shard in sorted(entry.get("shards", []), key=lambda s: s["start"]):
        if shard["start"] != cursor or shard["stop"] <= shard["start"]:
            raise CacheError(
                f"{path}: split {split!r} shard {shard['file']} covers [{shard['start']}, {shard['stop']}) "
                f"but the next index is {cursor}; {_REBUILD}"
            )
        cursor = shard["stop"]
        shard_path = cache_dir / shard["file"]
        if not shard_path.is_file():
            raise CacheError(f"{shard_path} is missing (listed in {path}); {_REBUILD}")
        found = sha256_file(shard_path)
        if found != shard["sha256"]:
            raise CacheError(
                f"{shard_path}: sha256 {found[:16]}... does not match the manifest's "
                f"{shard['sha256'][:16]}...; the file is corrupt or from another build; {_REBUILD}"
            )
    if cursor != entry.get("size"):
        raise CacheError(
            f"{path}: split {split!r} shards cover [0, {cursor}) but the split has {entry.get('size')} "
            f"samples; {_REBUILD}"
        )


def verify_cache(
    cache_dir: PathLike, expected_teacher: dict | None = None, expected_fingerprint: str | None = None
) -> dict:
    """Check manifest, coverage, shard checksums and (if given) teacher identity and data fingerprint."""
    cache_dir = Path(cache_dir)
    path = cache_dir / MANIFEST
    missing = CacheError(
        f"{path} is missing: the teacher cache in {cache_dir} was never completed "
        f"(the manifest is written last); {_REBUILD}"
    )
    manifest = read_json_checked(
        path,
        missing,
        lambda exc: CacheError(f"{path} is not valid JSON ({exc}); it is truncated or corrupt; {_REBUILD}"),
    )
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != CACHE_FORMAT
        or manifest.get("version") != CACHE_VERSION
    ):
        found = (
            (manifest.get("format"), manifest.get("version")) if isinstance(manifest, dict) else type(manifest).__name__
        )
        raise CacheError(f"{path}: format {found} is not {(CACHE_FORMAT, CACHE_VERSION)}; {_REBUILD}")
    if expected_teacher is not None:
        recorded = manifest.get("teacher") or {}
        differing = {k: (recorded.get(k), v) for k, v in expected_teacher.items() if recorded.get(k) != v}
        if differing:
            shown = "; ".join(f"{k}: cache has {a!r}, expected {b!r}" for k, (a, b) in differing.items())
            raise CacheError(f"{path}: built by a different teacher ({shown}); {_REBUILD}")
    if expected_fingerprint is not None and manifest.get("dataset_fingerprint") != expected_fingerprint:
        raise CacheError(
            f"{path}: built for dataset fingerprint {manifest.get('dataset_fingerprint')!r}, expected "
            f"{expected_fingerprint!r} (the data, its split or its caps changed); {_REBUILD}"
        )
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or set(SPLITS) - set(splits):
        raise CacheError(f"{path}: expected splits {list(SPLITS)}, found {sorted(splits or {})}; {_REBUILD}")
    for split in SPLITS:
        _check_split(cache_dir, path, split, splits[split])
    return manifest


def load_cache(
    cache_dir: PathLike, expected_teacher: dict | None = None, expected_fingerprint: str | None = None
) -> TeacherCache:
    """Verify (see ``verify_cache``) and load every split's logits and features into memory."""
    cache_dir = Path(cache_dir)
    manifest = verify_cache(cache_dir, expected_teacher, expected_fingerprint)
    logits, features = {}, {}
    k, d = manifest["num_classes"], manifest["feature_dim"]
    for split in SPLITS:
        parts_l, parts_f = [], []
        for shard in sorted(manifest["splits"][split]["shards"], key=lambda s: s["start"]):
            shard_path = cache_dir / shard["file"]
            try:
                tensors = load_file(str(shard_path))
            except Exception as exc:
                raise CacheError(f"{shard_path}: unreadable safetensors file ({exc}); {_REBUILD}") from exc
            n = shard["stop"] - shard["start"]
            ok = (
                set(tensors) >= {"logits", "features", "index"}
                and tuple(tensors["logits"].shape) == (n, k)
                and tuple(tensors["features"].shape) == (n, d)
                and torch.equal(tensors["index"], torch.arange(shard["start"], shard["stop"]))
            )
            if not ok:
                shapes = {name: tuple(t.shape) for name, t in tensors.items()}
                raise CacheError(
                    f"{shard_path}: tensors {shapes} do not match indices [{shard['start']}, {shard['stop']}) "
                    f"with {k} classes and {d} features; {_REBUILD}"
                )
            parts_l.append(tensors["logits"])
            parts_f.append(tensors["features"])
        logits[split] = torch.cat(parts_l) if parts_l else torch.zeros(0, k, dtype=torch.float16)
        features[split] = torch.cat(parts_f) if parts_f else torch.zeros(0, d, dtype=torch.float16)
    return TeacherCache(logits, features, manifest, cache_dir)


def cache_is_valid(
    cache_dir: PathLike, expected_teacher: dict | None = None, expected_fingerprint: str | None = None
) -> bool:
    """True when ``verify_cache`` passes (cheap: checks checksums, loads no tensors)."""
    try:
        verify_cache(cache_dir, expected_teacher, expected_fingerprint)
        return True
    except CacheError:
        return False
