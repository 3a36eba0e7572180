"""The paper's shapes on the CPU (benchmarks/paper_shapes.py): a ViT-B/16-sized teacher at 224 px and
CIFAR-100-shaped data through every stage, a few steps each, within the stated memory bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from multiproc import REPO


@pytest.mark.slow
def test_paper_shapes_run_every_stage_within_the_memory_bound(tmp_path):
    out = tmp_path / "paper_shapes.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    env["RKD_PLAN"] = "off"  # the run's time estimate would time more ViT-B steps than the stages take
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "paper_shapes.py"), "--work", str(tmp_path), "--out", str(out)]
        + ["--n-train", "32", "--n-test", "8"],  # the bound is per batch; fewer images, a shorter cache pass
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert list(result["stages"]) == ["teacher", "cache", "search", "stage1", "stage2", "eval"]
    assert 80e6 < result["teacher_params"] < 90e6  # ViT-B/16
    for stage, entry in result["stages"].items():
        assert entry["peak_rss_gib"] <= result["memory_bound_gib"], (stage, entry)
    assert result["machine"]["model"] and result["precision"]["mixed_precision"] == "no"
