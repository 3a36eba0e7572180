"""The SLURM job scripts' settings, without a cluster: GPUs taken from SLURM's own variables, a shutdown timeout
below the signal lead, CPUs and memory for GPU jobs (slurm/pipeline.sh, with a stand-in sbatch that records its
arguments). tests/test_slurm.py runs the same scripts on a real single-node cluster."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from multiproc import REPO

TEMPLATES = ("cache_teacher.sh", "search.sh", "distill.sh", "evaluate.sh")


def source_common(env: dict, show: str) -> subprocess.CompletedProcess:
    """Source slurm/common.sh (no venv, no job) and print ``show``'s variables."""
    script = f'. "{REPO}/slurm/common.sh"; for v in {show}; do echo "$v=${{!v}}"; done'
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "RKD_HOME": str(REPO), "RKD_VENV": ""}
    return subprocess.run(["bash", "-c", script], env={**base, **env}, capture_output=True, text=True, timeout=60)


def values(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line and not line.startswith("["))


@pytest.mark.parametrize(
    ("env", "gpus"),
    [
        ({"SLURM_GPUS_ON_NODE": "4"}, "4"),
        ({"SLURM_GPUS_PER_NODE": "a100:2"}, "2"),
        ({"SLURM_GPUS_PER_NODE": "gpu:a100:2,gpu:v100:1"}, "3"),
        ({"SLURM_JOB_GPUS": "0,1,2"}, "3"),
        ({}, "0"),
        ({"SLURM_GPUS_ON_NODE": "4", "GPUS_PER_NODE": "0"}, "0"),  # a CPU run asked for explicitly
    ],
)
def test_gpus_per_node_comes_from_slurms_allocation(env, gpus):
    """Before: GPUS_PER_NODE defaulted to 0, so `sbatch --gres=gpu:4 slurm/search.sh` ran one CPU process."""
    got = values(source_common(env, "GPUS_PER_NODE NPROC_PER_NODE RKD_LAUNCH_CONFIG"))
    assert got["GPUS_PER_NODE"] == gpus
    if gpus == "0":
        assert got["RKD_LAUNCH_CONFIG"] == "launch_configs/cpu_2proc.yaml" and got["NPROC_PER_NODE"] == "1"
    else:
        assert got["RKD_LAUNCH_CONFIG"] == "launch_configs/gpu_multi.yaml" and got["NPROC_PER_NODE"] == gpus


@pytest.mark.parametrize("template", TEMPLATES)
def test_each_job_checkpoints_within_its_signal_lead(template):
    """Before: the launcher waited up to 600 s for a checkpoint after a signal sent 300 s (120 s) before the time
    limit, so a slow checkpoint was killed at the limit and the job never requeued."""
    text = (REPO / "slurm" / template).read_text()
    lead = int(re.search(r"^#SBATCH --signal=B:USR1@(\d+)$", text, re.M).group(1))
    declared = int(re.search(r'^RKD_SIGNAL_LEAD="\$\{RKD_SIGNAL_LEAD:-(\d+)\}"', text, re.M).group(1))
    assert declared == lead
    got = values(source_common({"RKD_SIGNAL_LEAD": str(lead)}, "RKD_SHUTDOWN_TIMEOUT"))
    assert 0 < int(got["RKD_SHUTDOWN_TIMEOUT"]) < lead
    assert re.search(r"^#SBATCH --mem=\d+G$", text, re.M)  # host memory is asked for, not left to DefMemPerCPU


def test_a_shutdown_timeout_past_the_signal_lead_is_refused():
    proc = source_common({"RKD_SIGNAL_LEAD": "300", "RKD_SHUTDOWN_TIMEOUT": "600"}, "GPUS_PER_NODE")
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "RKD_SHUTDOWN_TIMEOUT=600 is not below RKD_SIGNAL_LEAD=300" in line


def test_a_gpu_job_with_few_cpus_is_warned():
    proc = source_common({"SLURM_GPUS_ON_NODE": "4", "SLURM_CPUS_ON_NODE": "2"}, "GPUS_PER_NODE")
    assert proc.returncode == 0
    assert "warning: 2 CPU(s) for 4 GPU(s)" in proc.stdout and "-c 32 --mem=256G" in proc.stdout
    quiet = source_common({"SLURM_GPUS_ON_NODE": "4", "SLURM_CPUS_ON_NODE": "32"}, "GPUS_PER_NODE")
    assert "warning" not in quiet.stdout


def run_pipeline(tmp_path, env: dict) -> list:
    """slurm/pipeline.sh with a stand-in sbatch on PATH; returns each sbatch call's arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    calls = tmp_path / "calls"
    (bin_dir / "sbatch").write_text(f'#!/bin/bash\necho "$*" >> {calls}\necho $RANDOM\n')
    (bin_dir / "sbatch").chmod(0o755)
    base = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "RKD_RUNS_DIR": str(tmp_path / "runs"), "RKD_HOME": str(REPO)}
    proc = subprocess.run(
        ["bash", str(REPO / "slurm" / "pipeline.sh")], env={**base, **env}, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return calls.read_text().splitlines()


def test_pipeline_gives_gpu_jobs_cpus_and_memory(tmp_path):
    """Before: a GPU pipeline ran with the scripts' 2 CPUs and no --mem on nodes with 4 GPUs."""
    calls = run_pipeline(tmp_path, {"GPUS_PER_NODE": "4"})
    assert len(calls) == 3
    for call in calls:
        assert "--gres=gpu:4" in call and "--cpus-per-task=32" in call and "--mem=256G" in call, call
    custom = run_pipeline(tmp_path / "b", {"GPUS_PER_NODE": "2", "CPUS_PER_GPU": "6", "MEM_PER_GPU": "40G"})
    assert all("--cpus-per-task=12" in c and "--mem=80G" in c for c in custom)
    cpu = run_pipeline(tmp_path / "c", {})
    assert all("--gres" not in c and "--cpus-per-task" not in c and "--mem" not in c for c in cpu)  # #SBATCH defaults
