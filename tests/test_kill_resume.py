"""SIGKILL `rkd run` inside every stage, rerun the same command each time, and check that the run
resumes (not restarts) and ends with exactly the results of an uninterrupted run (CPU, same seed)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

TINY = [
    "data.val_fraction=0.2",
    "teacher.embedded_hidden_sizes=[8,16]",
    "teacher.embedded_depths=[1,1]",
    "teacher.embedded_embedding_size=8",
    "teacher.train.epochs=3",
    "teacher.train.batch_size=32",
    "teacher.train.checkpoint_every=2",
    "teacher.cache_shard_size=32",
    "teacher.cache_batch_size=16",
    "search.enabled=true",
    "search.init_channels=4",
    "search.layers=3",
    "search.nodes=2",
    "search.train.epochs=2",
    "search.train.batch_size=16",
    "search.train.checkpoint_every=2",
    "search.warmup_epochs=1",
    "search.arch_lr=0.05",
    "search.max_train=64",
    "search.max_val=32",
    "student.init_channels=4",
    "student.layers=3",
    "stage1.epochs=2",
    "stage1.batch_size=32",
    "stage1.checkpoint_every=2",
    "codec.d_model=16",
    "codec.heads=2",
    "codec.encoder_depth=1",
    "codec.decoder_depth=1",
    "codec.max_symbols=8",
    "codec.rates=[2,8]",
    "stage2.epochs=2",
    "stage2.batch_size=32",
    "stage2.checkpoint_every=2",
    "eval.snr_step=5",
    "eval.batch_size=20",
]


def command(fake_fashion_dir, tmp_path, runs):
    return [
        sys.executable,
        "-m",
        "rkd.cli",
        "run",
        "--runs-dir",
        str(runs),
        "--name",
        "k",
        f"data.fashion_mnist_dir={fake_fashion_dir}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        *TINY,
    ]


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    e.pop("WORLD_SIZE", None)
    return e


def run_to_end(cmd) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


LOGS: list = []


def kill_when(cmd, ready, log: Path, timeout=300) -> bool:
    """Start the run, SIGKILL it as soon as ``ready()`` holds; False if it finished first."""
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.DEVNULL, env=env())
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                if ready():
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return True
                if proc.poll() is not None:
                    return False
                time.sleep(0.02)
        finally:
            LOGS.append(log.read_text() if log.exists() else "")
    proc.kill()
    raise AssertionError("kill point never reached")


def checkpoint_step(stage_dir: Path) -> int:
    pointer = stage_dir / "checkpoints" / "latest.json"
    try:
        return json.loads(pointer.read_text())["global_step"]
    except (OSError, ValueError, KeyError):
        return 0


def test_sigkill_in_every_stage_resumes_to_identical_results(fake_fashion_dir, tmp_path):
    reference_runs, killed_runs = tmp_path / "reference", tmp_path / "killed"
    run_to_end(command(fake_fashion_dir, tmp_path, reference_runs))
    cmd = command(fake_fashion_dir, tmp_path, killed_runs)
    run = killed_runs / "k"

    # 1. teacher training, after its second checkpoint
    logs = tmp_path / "logs"
    logs.mkdir()
    assert kill_when(cmd, lambda: checkpoint_step(run / "teacher") >= 4, logs / "1")
    assert not (run / "teacher" / "stage.json").exists()
    # 2. the cache, once some (not all) shards are written
    assert kill_when(cmd, lambda: len(list((run / "cache").glob("*.safetensors"))) >= 2, logs / "2")
    # shards whose sidecar record was written are complete and must be reused as they are
    written = {
        p.name: p.stat().st_mtime_ns
        for p in (run / "cache").glob("*.safetensors")
        if p.with_name(p.name + ".json").exists()
    }
    assert not (run / "cache" / "stage.json").exists()
    # 3. the architecture search, after its weight-only warm-up (architecture updates have begun)
    assert kill_when(cmd, lambda: checkpoint_step(run / "search") >= 6, logs / "3s")
    assert not (run / "search" / "stage.json").exists()
    # 4-5. stage 1 and stage 2, mid-training
    assert kill_when(cmd, lambda: checkpoint_step(run / "stage1") >= 2, logs / "3")
    assert not (run / "stage1" / "stage.json").exists()
    assert kill_when(cmd, lambda: checkpoint_step(run / "stage2") >= 2, logs / "4")
    assert not (run / "stage2" / "stage.json").exists()
    # 6. evaluation, once it has started
    kill_when(cmd, lambda: (run / "eval" / "started.json").exists(), logs / "5")
    out = "".join(LOGS) + run_to_end(cmd)

    for stage in ("teacher", "search", "stage1", "stage2"):  # each resumed from a checkpoint, not from scratch
        assert f"[{stage}] resumed from" in out, stage
    ours, theirs = (json.loads((r / "search" / "genotype.json").read_text()) for r in (run, reference_runs / "k"))
    assert {k: v for k, v in ours.items() if k != "meta"} == {k: v for k, v in theirs.items() if k != "meta"}
    final = [
        json.loads((r / "search" / "alphas.jsonl").read_text().splitlines()[-1]) for r in (run, reference_runs / "k")
    ]
    assert {k: v for k, v in final[0].items() if k != "time"} == {k: v for k, v in final[1].items() if k != "time"}
    for name, mtime in written.items():  # verified shards were kept, not recomputed
        assert (run / "cache" / name).stat().st_mtime_ns == mtime, name
    for stage, name in (
        ("teacher", "model/model.safetensors"),
        ("stage1", "model.safetensors"),
        ("stage2", "model.safetensors"),
    ):
        ours, theirs = load_file(str(run / stage / name)), load_file(str(reference_runs / "k" / stage / name))
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert (ours[key] == theirs[key]).all(), f"{stage}: {key} differs from the uninterrupted run"
    ours = json.loads((run / "eval" / "results.json").read_text())
    theirs = json.loads((reference_runs / "k" / "eval" / "results.json").read_text())
    assert [r["accuracy"] for r in ours["records"]] == [r["accuracy"] for r in theirs["records"]]


def test_sigterm_checkpoints_and_exits_cleanly(fake_fashion_dir, tmp_path):
    cmd = command(fake_fashion_dir, tmp_path, tmp_path / "runs") + ["teacher.train.epochs=50"]
    run = tmp_path / "runs" / "k"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    deadline = time.time() + 300
    while checkpoint_step(run / "teacher") < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-2000:]
    assert "checkpoint saved" in out
    step = checkpoint_step(run / "teacher")
    assert step >= 2 and not (run / "teacher" / "stage.json").exists()
