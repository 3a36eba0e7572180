"""``rkd doctor`` and the threads rkd gives each process (rkd.hardware.doctor, rkd.hardware.threads)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rkd.hardware import threads

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_thread_settings(monkeypatch):
    for variable in ("RKD_THREADS", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(variable, raising=False)


def test_threads_are_the_cores_shared_by_the_processes_on_the_node(monkeypatch, no_thread_settings):
    monkeypatch.setattr(threads, "cores_available", lambda: 8)
    assert threads.planned_threads() == (8, "8 cores / 1 process on this node")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # accelerate launch / torchrun with 4 processes here
    assert threads.planned_threads() == (2, "8 cores / 4 processes on this node")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert threads.planned_threads()[0] == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's word wins
    assert threads.planned_threads() == (3, "OMP_NUM_THREADS=3")
    monkeypatch.setenv("RKD_THREADS", "5")
    assert threads.planned_threads() == (5, "RKD_THREADS=5")


def test_cores_follow_the_affinity_mask():
    assert threads.cores_available() == len(os.sched_getaffinity(0))


def _doctor(env_extra: dict) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env_extra}
    done = subprocess.run(
        [sys.executable, "-m", "rkd.cli", "doctor", "--no-estimate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_doctor_says_what_the_machine_can_do_and_what_rkd_chooses(tmp_path):
    out = _doctor({"RKD_CACHE_DIR": str(tmp_path)})
    for label in (
        "software   torch",
        "CPU ",
        "native bf16:",
        "probe      fp32:",
        "threads    1 thread",
        "SLURM",
        "dataset",
    ):
        assert label in out, out
    assert "teacher.train_precision = auto -> " in out and "mixed_precision = auto -> " in out
    assert list(tmp_path.glob("probe/cpu-*.json"))  # the probe is cached per machine


def test_doctor_under_avx2_kernels_chooses_no_bf16(tmp_path):
    """ONEDNN_MAX_CPU_ISA=AVX2 imitates a CPU without native bf16 (oneDNN emulates it): auto must pick fp32."""
    out = _doctor({"RKD_CACHE_DIR": str(tmp_path), "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"})
    assert "native bf16: no" in out, out
    assert "teacher.train_precision = auto -> fp32: auto:" in out and "mixed_precision = auto -> fp32: auto:" in out


def test_reprobe_replaces_a_stale_probe(tmp_path, monkeypatch):
    """A probe taken on a loaded machine stays until measured again: --reprobe measures and replaces it."""
    import json

    from rkd.config import load_config
    from rkd.hardware import doctor, probe

    monkeypatch.setenv("RKD_CACHE_DIR", str(tmp_path))
    stale = probe.measure("cpu")
    stale["measured"] = "stale"
    path = probe._path(probe.machine_key("cpu"))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(stale))
    assert probe.cached("cpu")["measured"] == "stale"
    doctor.report(load_config(["default"], []), estimate=False)
    assert probe.cached("cpu")["measured"] == "stale"  # without the flag the cache is read, not measured
    doctor.report(load_config(["default"], []), estimate=False, reprobe=True)
    assert probe.cached("cpu")["measured"] != "stale"
