"""benchmarks/device_check.py in its tiny form on 2 CPU processes, so the GPU check cannot rot: every stage runs
under `accelerate launch`, the device probe sees every training step, teacher pass and evaluation sweep, and
finds every tensor on the process's device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from multiproc import REPO, free_port


@pytest.mark.slow
def test_device_check_tiny_on_two_cpu_processes(tmp_path):
    out = tmp_path / "device_check.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "device_check.py"), "--tiny", "--work", str(tmp_path)]
    cmd += ["--out", str(out), "--port", str(free_port())]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(out.read_text())
    assert result["passed"] and result["launch"]["processes"] == 2
    assert [(r["rank"], r["world_size"]) for r in result["ranks"]] == [(0, 2), (1, 2)]
    for rank in result["ranks"]:
        assert rank["violations"] == [] and rank["tensors_checked"] > 1000 and rank["device"].startswith("cpu")
        assert set(rank["stages"]) >= {"teacher", "cache", "search", "stage1", "stage2", "eval"}
        for stage in ("teacher", "search", "stage1", "stage2"):
            assert rank["stages"][stage]["kind"] == "train" and rank["stages"][stage]["images"] > 0
    assert result["summary"]["stages"]["cache"]["img_per_s_all_ranks"] > 0


def test_the_probe_names_a_tensor_off_the_device():
    """The check itself: a module fed a tensor on another device than the accelerator's is reported."""
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from device_check import DeviceProbe

    class Meta:
        device = torch.device("meta")

    probe = DeviceProbe(Meta())
    probe.stage = "stage1"
    probe.timed("train", torch.nn.Linear(3, 2), 4, torch.zeros(4, 3))
    assert probe.violations and probe.violations[0].startswith("stage1: Linear input has a (4, 3) tensor on cpu")
    assert probe.stats["stage1"]["images"] == 4


def test_past_its_time_limit_the_check_reports_instead_of_a_traceback(tmp_path):
    """--time-limit stops the launcher and its ranks together; the JSON still comes, says so, and fails."""
    out = tmp_path / "device_check.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "device_check.py"), "--tiny", "--work", str(tmp_path)]
    cmd += ["--out", str(out), "--port", str(free_port()), "--time-limit", "2"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(out.read_text())
    assert result["launch"]["timed_out"] and result["launch"]["exit_code"] is None and not result["passed"]
