"""Building the teacher cache: every split through the frozen teacher once, into checksummed fp16 shards.

Shard ``i`` (numbered over all splits) is written by process ``i % N``, each with a sidecar holding its
checksum, so a rerun after a kill recomputes only missing or stale shards; the main process writes the
manifest last, and a cache without one is never valid (``rkd.teacher.cache`` reads and verifies it).
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
from safetensors.torch import save_file

from rkd.data import SPLITS, DataBundle
from rkd.run.artifacts import PathLike, atomic_write, atomic_write_json, read_json, sha256_file
from rkd.run.collective import agree_on_error, on_main
from rkd.run.diskspace import DiskFullError, as_disk_full
from rkd.run.estimate import advance
from rkd.run.progress import progress_bar
from rkd.teacher.cache import (
    AUGMENTATION_FLIP,
    AUGMENTATION_NONE,
    CACHE_FORMAT,
    CACHE_VERSION,
    FP16_MAX,
    MANIFEST,
    CacheError,
)
from rkd.teacher.model import Teacher


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
            advance("cache", batch.shape[0])
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

    ``flip_average`` stores the mean of each image's and its mirror's outputs (a 2x longer pass, a slightly
    stronger and mirror-invariant teacher). Collective (see the module docstring): a failure on any process
    (a full disk) raises on every process, and the shards written so far stay for the rerun.
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
    error = _write_shards(
        teacher,
        bundle,
        cache_dir,
        plan[rank::world],
        expected,
        batch_size,
        device,
        accelerator,
        flip_average,
        progress and is_main,
    )
    teacher.train(was_training)
    if accelerator is None:
        if error is not None:
            raise error
        return _write_manifest(cache_dir, plan, expected, identity, bundle, teacher, shard_size)
    agree_on_error(accelerator, error, DiskFullError)
    write = lambda: _write_manifest(cache_dir, plan, expected, identity, bundle, teacher, shard_size)  # noqa: E731
    manifest = on_main(accelerator, write, DiskFullError)
    return manifest if is_main else read_json(cache_dir / MANIFEST)


def _write_shards(
    teacher: Teacher,
    bundle: DataBundle,
    cache_dir: Path,
    mine: list,
    expected: dict,
    batch_size: int,
    device: torch.device,
    accelerator: Any,
    flip_average: bool,
    show: bool,
) -> BaseException | None:
    """This process's shards that are not current yet; the first failure is returned (after it, none is written),
    for every process to hear of it together."""
    bar = progress_bar(sum(s.stop - s.start for s in mine), "teacher cache", enabled=show, unit="img")
    error = None
    for shard in mine:
        if not _shard_is_current(cache_dir, shard, expected):
            try:
                images = bundle.splits[shard.split].images[shard.start : shard.stop]
                logits, features = _teacher_pass(teacher, images, batch_size, device, accelerator, flip_average)
                _write_shard(cache_dir, shard, logits, features, expected)
            except Exception as exc:  # stop here; every rank hears of it, instead of waiting at the next barrier
                error = as_disk_full(exc, cache_dir / shard.file, f"the {cache_dir} shards written so far are kept")
                break
        else:
            advance("cache", shard.stop - shard.start, counted=False)
        bar.update(shard.stop - shard.start)
    bar.close()
    return error


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
