"""The teacher cache: one frozen teacher pass written once, verified, and read by sample index.

``build_cache`` writes the teacher's logits and pooled features for every split to fp16,
checksummed safetensors shards (a killed build resumes, recomputing only missing or stale
shards); students then read ``TeacherCache.targets`` by sample index, so a 300M-parameter
teacher costs one inference pass, not one per student epoch.

The cache is keyed by the teacher's identity (a hash of its weights) and the dataset
fingerprint; ``load_cache`` refuses anything that does not match, naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from rkd.data import SPLITS, DataBundle
from rkd.run.artifacts import PathLike, atomic_write, atomic_write_json, read_json, sha256_file
from rkd.run.progress import progress_bar
from rkd.teacher.model import Teacher

CACHE_FORMAT = "rkd-teacher-cache"
CACHE_VERSION = 1
MANIFEST = "manifest.json"
AUGMENTATION_NONE = "none: un-augmented single view"
AUGMENTATION_FLIP = "flip-average: mean of each image's and its horizontal mirror's outputs"
FP16_MAX = 65504.0


class CacheError(RuntimeError):
    """The teacher cache is missing, incomplete, corrupt or built for another teacher or dataset."""


@dataclass(frozen=True)
class _Shard:
    split: str
    number: int
    start: int
    stop: int

    @property
    def file(self) -> str:
        return f"{self.split}-{self.number:05d}.safetensors"

    @property
    def sidecar(self) -> str:
        return self.file + ".json"


def _plan(bundle: DataBundle, shard_size: int) -> list[_Shard]:
    """Every split cut into contiguous index ranges of ``shard_size`` (the last may be shorter)."""
    if shard_size < 1:
        raise ValueError(f"shard_size = {shard_size!r} is invalid: expected an integer >= 1")
    plan = []
    for split in SPLITS:
        n = len(bundle.splits[split])
        for number in range(math.ceil(n / shard_size)):
            plan.append(_Shard(split, number, number * shard_size, min(n, (number + 1) * shard_size)))
    return plan


def _shard_is_current(cache_dir: Path, shard: _Shard, expected: dict) -> bool:
    """A shard from an interrupted or earlier build is reused when its sidecar and checksum agree."""
    sidecar, path = cache_dir / shard.sidecar, cache_dir / shard.file
    if not (sidecar.is_file() and path.is_file()):
        return False
    try:
        record = read_json(sidecar)
    except (ValueError, OSError):
        return False
    wanted = {"file": shard.file, "split": shard.split, "start": shard.start, "stop": shard.stop, **expected}
    if any(record.get(k) != v for k, v in wanted.items()):
        return False
    return sha256_file(path) == record.get("sha256")


def _teacher_pass(
    teacher: Teacher,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    accelerator: Any,
    flip_average: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    logits, features = [], []
    autocast = accelerator.autocast() if accelerator is not None else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(device, non_blocking=True)
            out = teacher(batch)
            if flip_average:  # [B, H, W, C]: dim 2 is the width
                mirrored = teacher(batch.flip(2))
                out = {key: (out[key].float() + mirrored[key].float()) / 2 for key in ("logits", "features")}
            logits.append(out["logits"].float().cpu())
            features.append(out["features"].float().cpu())
    logits_t, features_t = torch.cat(logits), torch.cat(features)
    if not (torch.isfinite(logits_t).all() and torch.isfinite(features_t).all()):
        raise RuntimeError("the teacher produced non-finite logits or features; check its weights and input transform")
    return logits_t.clamp(-FP16_MAX, FP16_MAX).half(), features_t.clamp(-FP16_MAX, FP16_MAX).half()


def _write_shard(cache_dir: Path, shard: _Shard, logits: torch.Tensor, features: torch.Tensor, expected: dict) -> None:
    """The shard's safetensors file, then its sidecar with the checksum (so a half-written shard is never current)."""
    tensors = {
        "logits": logits,
        "features": features,
        "index": torch.arange(shard.start, shard.stop, dtype=torch.int64),
    }
    # one key: safetensors writes metadata from a hash map, so several keys come out in random order
    metadata = {"rkd": json.dumps({"split": shard.split, "start": shard.start, "stop": shard.stop}, sort_keys=True)}
    atomic_write(cache_dir / shard.file, lambda p: save_file(tensors, str(p), metadata=metadata))
    record = {
        "file": shard.file,
        "split": shard.split,
        "start": shard.start,
        "stop": shard.stop,
        "sha256": sha256_file(cache_dir / shard.file),
        **expected,
    }
    atomic_write_json(cache_dir / shard.sidecar, record)


def build_cache(
    teacher: Teacher,
    bundle: DataBundle,
    cache_dir: PathLike,
    batch_size: int,
    shard_size: int,
    accelerator: Any = None,
    progress: bool = True,
    flip_average: bool = False,
) -> dict:
    """One frozen, un-augmented teacher pass over every split into fp16 safetensors shards; returns the manifest.

    ``flip_average`` stores the mean of each image's and its mirror's outputs (a 2x longer pass,
    a slightly stronger and mirror-invariant teacher).

    Shard ``i`` (numbered over all splits) is written by process ``i % N``; each shard gets a
    sidecar ``.json`` with its checksum, so a rerun after a kill recomputes only missing or
    stale shards. The main process writes ``manifest.json`` last, after every process is done:
    a cache without a manifest is never valid.
    """
    cache_dir = Path(cache_dir)
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    is_main = rank == 0
    if accelerator is not None and hasattr(accelerator, "unwrap_model"):
        teacher = accelerator.unwrap_model(teacher)
    device = accelerator.device if accelerator is not None else next(teacher.parameters()).device
    teacher.to(device)
    was_training = teacher.training
    teacher.eval()
    identity = teacher.identity
    expected = {
        "teacher_sha256": identity["weights_sha256"],
        "dataset_fingerprint": bundle.fingerprint,
        "transform": teacher.transform.describe(),
        "augmentation": AUGMENTATION_FLIP if flip_average else AUGMENTATION_NONE,
    }
    plan = _plan(bundle, shard_size)
    if is_main:
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / MANIFEST).unlink(missing_ok=True)  # invalid until rewritten below
    _barrier(accelerator)
    mine = [shard for i, shard in enumerate(plan) if i % world == rank]
    bar = progress_bar(sum(s.stop - s.start for s in mine), "teacher cache", enabled=progress and is_main, unit="img")
    for shard in mine:
        if not _shard_is_current(cache_dir, shard, expected):
            images = bundle.splits[shard.split].images[shard.start : shard.stop]
            logits, features = _teacher_pass(teacher, images, batch_size, device, accelerator, flip_average)
            _write_shard(cache_dir, shard, logits, features, expected)
        bar.update(shard.stop - shard.start)
    bar.close()
    teacher.train(was_training)
    _barrier(accelerator)
    if is_main:
        manifest = _write_manifest(cache_dir, plan, expected, identity, bundle, teacher, shard_size)
    _barrier(accelerator)
    if not is_main:
        manifest = read_json(cache_dir / MANIFEST)
    return manifest


def _barrier(accelerator: Any) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


def _write_manifest(
    cache_dir: Path,
    plan: list[_Shard],
    expected: dict,
    identity: dict,
    bundle: DataBundle,
    teacher: Teacher,
    shard_size: int,
) -> dict:
    splits: dict[str, dict] = {s: {"size": len(bundle.splits[s]), "shards": []} for s in SPLITS}
    for shard in plan:
        if not _shard_is_current(cache_dir, shard, expected):
            raise CacheError(
                f"{cache_dir / shard.file}: missing or not matching its sidecar after the build "
                f"(did a process fail?); rerun build_cache"
            )
        record = read_json(cache_dir / shard.sidecar)
        splits[shard.split]["shards"].append(
            {"file": shard.file, "start": shard.start, "stop": shard.stop, "sha256": record["sha256"]}
        )
    wanted = {s.file for s in plan} | {s.sidecar for s in plan}
    for stale in cache_dir.glob("*.safetensors*"):  # shards of an earlier, larger dataset
        if stale.name not in wanted:
            stale.unlink(missing_ok=True)
    manifest = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "teacher": identity,
        "dataset_fingerprint": bundle.fingerprint,
        "dataset_source": bundle.source,
        "transform": expected["transform"],
        "augmentation": expected["augmentation"],
        "dtype": "float16",
        "num_classes": teacher.num_classes,
        "feature_dim": teacher.feature_dim,
        "shard_size": shard_size,
        "splits": splits,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_json(cache_dir / MANIFEST, manifest)
    return manifest


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
    if not path.is_file():
        raise CacheError(
            f"{path} is missing: the teacher cache in {cache_dir} was never completed "
            f"(the manifest is written last); {_REBUILD}"
        )
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise CacheError(f"{path} is not valid JSON ({exc}); it is truncated or corrupt; {_REBUILD}") from None
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
