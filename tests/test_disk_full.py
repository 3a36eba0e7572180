"""A full disk: a checkpoint, cache shard or results write that hits ENOSPC stops with one line naming the path and
the free space; what was written before (the previous checkpoint, the other shards, the previous results) stays
intact, and a rerun with space resumes. On a real small file system (a tmpfs mount; the tests run as root in CI),
with an injected OSError(ENOSPC) where mounting is not allowed."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from rkd.config import TrainConfig
from rkd.engine import Step, fit, make_accelerator
from rkd.run.artifacts import atomic_write_json, sha256_file
from rkd.run.diskspace import DiskFullError

MARGIN = 16 * 1024  # bytes left free when a test fills the disk


@pytest.fixture
def small_fs(tmp_path):
    """A 32 MiB tmpfs, or a skip that says why (not root, or no mount permission in a container)."""
    mount = tmp_path / "small-fs"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); the injected-ENOSPC tests cover it"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path, leave: int = MARGIN) -> Path:
    """Take all but ``leave`` bytes of the file system holding ``directory``."""
    filler = directory / f"filler-{uuid.uuid4().hex}"
    free = shutil.disk_usage(directory).free
    with open(filler, "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, max(0, free - leave))
    return filler


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text
    return text


# ----------------------------------------------------------------------------- checkpoints


def toy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 512, generator=g)
    rows = [{"x": x[i], "label": (x[i, 0] > 0).long()} for i in range(64)]
    return DataLoader(rows, batch_size=8), DataLoader(rows, batch_size=32)


class FillAt:
    """Cross-entropy; before update ``at`` it fills the disk (or calls ``action``)."""

    def __init__(self, at: int | None, action) -> None:
        self.at, self.action = at, action

    def set_step(self, step: int) -> None:
        if step == self.at:
            self.action()

    def __call__(self, model, batch, train):
        logits = model(batch["x"])
        loss = torch.nn.functional.cross_entropy(logits, batch["label"])
        return Step(loss=loss, logits=logits.detach(), labels=batch["label"])


CFG = TrainConfig(epochs=1, lr=1e-3, checkpoint_every=2, log_every=100)


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 2))  # ~1 MiB of weights


def check_checkpoint_kept_and_resumable(out: Path, fillers: list) -> None:
    checkpoints = out / "checkpoints"
    latest = json.loads((checkpoints / "latest.json").read_text())
    assert latest["dir"] == "step-00000002"
    assert sorted(p.name for p in checkpoints.iterdir() if p.is_dir()) == ["step-00000002"]  # partial one removed
    for rel, digest in latest["files"].items():
        assert sha256_file(checkpoints / "step-00000002" / rel) == digest
    for filler in fillers:
        filler.unlink()
    train, val = toy()
    summary = fit(make_accelerator(cpu=True), model(), FillAt(None, None), train, val, CFG, out)
    assert summary["steps"] == 8  # resumed from step 2 and finished


def test_a_checkpoint_on_a_full_disk_stops_and_keeps_the_previous_one(small_fs):
    out = small_fs / "stage"
    fillers: list = []
    train, val = toy()
    with pytest.raises(DiskFullError) as info:
        fit(
            make_accelerator(cpu=True), model(), FillAt(3, lambda: fillers.append(fill(small_fs))), train, val, CFG, out
        )
    message = one_line(info.value)
    assert f"no space left on device writing {out / 'checkpoints' / 'step-00000004'}" in message
    assert "KiB free there" in message or " B free there" in message
    assert "previous checkpoint" in message and "rerun the same command to resume" in message
    check_checkpoint_kept_and_resumable(out, fillers)


def test_an_injected_enospc_in_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    """Where no file system can be mounted: the same path, the error injected into Accelerate's save_state."""
    from accelerate import Accelerator

    real = Accelerator.save_state

    def save_state(self, output_dir=None, **kwargs):
        if output_dir.endswith("step-00000004"):
            Path(output_dir).mkdir(parents=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    train, val = toy()
    with pytest.raises(DiskFullError, match="step-00000004"):
        fit(make_accelerator(cpu=True), model(), FillAt(None, None), train, val, CFG, tmp_path / "stage")
    monkeypatch.setattr(Accelerator, "save_state", real)
    check_checkpoint_kept_and_resumable(tmp_path / "stage", [])


# ----------------------------------------------------------------------------- cache shards and results


def test_a_cache_shard_on_a_full_disk_stops_and_keeps_the_other_shards(small_fs, fashion_bundle):
    from rkd.config import TeacherConfig
    from rkd.teacher.cache_build import build_cache
    from rkd.teacher.model import build_teacher

    torch.manual_seed(0)
    cfg = TeacherConfig(embedded_hidden_sizes=[8, 16], embedded_depths=[1, 1], embedded_embedding_size=8)
    teacher = build_teacher(cfg, fashion_bundle.num_classes, fashion_bundle.class_names, fashion_bundle.channels)
    cache = small_fs / "cache"
    build_cache(teacher, fashion_bundle, cache, batch_size=64, shard_size=32, progress=False)
    before = {p.name: sha256_file(p) for p in cache.glob("*.safetensors")}
    (cache / "train-00003.safetensors").unlink()
    filler = fill(small_fs, leave=0)
    with pytest.raises(DiskFullError) as info:
        build_cache(teacher, fashion_bundle, cache, batch_size=64, shard_size=32, progress=False)
    # the shard or, when the shard still fit, its sidecar (a shard without one is redone next time)
    assert f"writing {cache / 'train-00003.safetensors'}" in one_line(info.value) and "is kept" in str(info.value)
    after = {p.name: sha256_file(p) for p in cache.glob("*.safetensors")}
    others = set(before) - {"train-00003.safetensors"}
    assert {k: after[k] for k in others} == {k: before[k] for k in others}  # the finished shards are untouched
    assert not (cache / "manifest.json").exists()  # the cache is not valid until a build completes
    filler.unlink()
    build_cache(teacher, fashion_bundle, cache, batch_size=64, shard_size=32, progress=False)
    assert {p.name: sha256_file(p) for p in cache.glob("*.safetensors")} == before


def test_a_results_write_on_a_full_disk_keeps_the_previous_results(small_fs):
    path = small_fs / "eval" / "results.json"
    atomic_write_json(path, {"records": [1, 2, 3]})
    filler = fill(small_fs, leave=1024)
    with pytest.raises(DiskFullError) as info:
        atomic_write_json(path, {"records": list(range(100_000))})
    assert f"writing {path}" in one_line(info.value) and "the previous results.json (if any) is kept" in str(info.value)
    assert json.loads(path.read_text()) == {"records": [1, 2, 3]}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary file left behind
    filler.unlink()
