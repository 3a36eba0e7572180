"""Launcher settings refused before any stage starts: GPUs asked for but absent, ZeRO-3, a fixed DeepSpeed
clipping; each refusal is one line naming the setting and a pairing that works."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rkd.run.launch_check import LaunchError, check_deepspeed, check_gpus, gpu_count, requested_gpus


@pytest.mark.parametrize(
    ("name", "value", "count"),
    [
        ("SLURM_GPUS_ON_NODE", "4", 4),
        ("SLURM_GPUS_PER_NODE", "a100:4", 4),
        ("SLURM_GPUS_PER_NODE", "gpu:a100:2,gpu:v100:1", 3),
        ("SLURM_JOB_GPUS", "0,1,2", 3),
        ("CUDA_VISIBLE_DEVICES", "0", 1),
        ("CUDA_VISIBLE_DEVICES", "", 0),
        ("CUDA_VISIBLE_DEVICES", "-1", 0),
        ("GPUS_PER_NODE", "0", 0),
    ],
)
def test_gpu_counts_in_slurm_and_cuda_formats(name, value, count):
    assert gpu_count(name, value) == count


def test_gpus_requested_but_absent_is_refused_in_one_line():
    env = {"SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_ID": "7"}
    assert requested_gpus(env) == (4, "SLURM_GPUS_ON_NODE=4")
    with pytest.raises(LaunchError) as info:
        check_gpus(env, cuda_available=False)
    message = str(info.value)
    assert "\n" not in message
    assert "SLURM_GPUS_ON_NODE=4" in message and "torch sees none" in message
    assert "cpu_2proc.yaml with ACCELERATE_USE_CPU=1" in message  # the working pairing
    check_gpus(env, cuda_available=True)  # GPUs visible: fine
    check_gpus({**env, "ACCELERATE_USE_CPU": "1"}, cuda_available=False)  # a CPU run asked for explicitly
    check_gpus({"GPUS_PER_NODE": "0"}, cuda_available=False)  # rkd's slurm scripts on a CPU node


def test_rkd_refuses_a_gpu_job_without_gpus_before_any_stage(tmp_path, fake_fashion_dir):
    """Before: make_accelerator fell back to one CPU process silently (the GPUs of the job idle)."""
    env = {"SLURM_GPUS_ON_NODE": "2", "PATH": "/usr/bin:/bin", "PYTHONPATH": sys.path[0], "HF_HUB_OFFLINE": "1"}
    from multiproc import REPO

    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "rkd.cli", "run", "--runs-dir", str(tmp_path), "--name", "x"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("rkd: error: SLURM_GPUS_ON_NODE=2 asks for 2 GPU(s)")
    assert not (tmp_path / "x" / "teacher").exists()  # refused before any stage


def _ds_env(tmp_path, config: dict) -> dict:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config))
    return {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(path)}


def test_zero3_is_refused_naming_the_file_and_zero2(tmp_path):
    env = _ds_env(tmp_path, {"zero_optimization": {"stage": 3}, "gradient_clipping": "auto"})
    with pytest.raises(LaunchError, match=r"zero_optimization.stage = 3 \(.*ds.json\).*deepspeed_zero2.yaml"):
        check_deepspeed(env)
    with pytest.raises(LaunchError, match="stage = 3"):  # `accelerate launch --use_deepspeed --zero_stage 3`
        check_deepspeed({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"})
    check_deepspeed({**env, "ACCELERATE_USE_DEEPSPEED": "false"})  # not a DeepSpeed launch


def test_a_fixed_deepspeed_clipping_is_refused(tmp_path):
    env = _ds_env(tmp_path, {"zero_optimization": {"stage": 2}, "gradient_clipping": 1.0})
    with pytest.raises(LaunchError, match=r'gradient_clipping = 1.0 .*"auto"'):
        check_deepspeed(env)
    auto = _ds_env(tmp_path, {"zero_optimization": {"stage": 2}, "gradient_clipping": "auto"})
    check_deepspeed(auto)
    with pytest.raises(LaunchError, match="--gradient_clipping"):
        check_deepspeed({**auto, "ACCELERATE_GRADIENT_CLIPPING": "1.0"})


@pytest.mark.parametrize("name", ["deepspeed_zero2.json", "deepspeed_zero2_bf16.json"])
def test_packaged_deepspeed_configs_pass_the_checks(name):
    from multiproc import REPO

    check_deepspeed(
        {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(REPO / "launch_configs" / name)}
    )
