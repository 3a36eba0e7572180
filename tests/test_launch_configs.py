"""Every file in launch_configs/ loads as Accelerate reads it, says what it must, and the CPU one
really gives two synchronised processes."""

from __future__ import annotations

import json

import pytest
import yaml
from multiproc import REPO, run_launch

CONFIG_DIR = REPO / "launch_configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
REQUIRED = ("compute_environment", "distributed_type", "num_machines", "num_processes", "machine_rank", "use_cpu")


def test_the_expected_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {
        "cpu_2proc.yaml",
        "gpu_1.yaml",
        "gpu_multi.yaml",
        "multi_node.yaml",
        "deepspeed_zero2.yaml",
        "deepspeed_zero2_bf16.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_with_accelerate(path):
    from accelerate.commands.config.config_args import load_config_from_file

    raw = yaml.safe_load(path.read_text())
    missing = [key for key in REQUIRED if key not in raw]
    assert not missing, f"{path.name} lacks {missing}"
    cfg = load_config_from_file(str(path))  # raises on keys Accelerate does not know
    assert cfg.num_processes >= cfg.num_machines >= 1
    assert cfg.mixed_precision in (None, "no", "bf16", "fp16")
    kind = cfg.distributed_type.value
    if kind == "NO":
        assert cfg.num_processes == 1 and cfg.num_machines == 1
    if cfg.num_machines > 1:
        assert raw.get("main_process_ip") and raw.get("main_process_port"), (
            f"{path.name}: a multi-node config needs a rendezvous"
        )
    if kind == "DEEPSPEED":
        ds = raw["deepspeed_config"]
        assert (REPO / ds["deepspeed_config_file"]).is_file(), f"{path.name}: {ds['deepspeed_config_file']} is missing"
        assert ds.get("deepspeed_multinode_launcher") == "standard"  # torchrun on every node: works under srun
        assert cfg.mixed_precision in (None, "no")  # rkd refuses DeepSpeed's weight-casting bf16/fp16 modes


def test_cpu_config_is_the_measured_recipe():
    """MULTI_CPU, or --cpu, runs ONE process with accelerate 1.15; MULTI_GPU + ACCELERATE_USE_CPU=1 runs N."""
    raw = yaml.safe_load((CONFIG_DIR / "cpu_2proc.yaml").read_text())
    assert raw["distributed_type"] == "MULTI_GPU" and raw["use_cpu"] is True and raw["num_processes"] == 2
    assert "ACCELERATE_USE_CPU=1" in (CONFIG_DIR / "cpu_2proc.yaml").read_text()


def _fill_auto(value, micro: int = 8):
    """Replace DeepSpeed "auto" values the way Accelerate does for one process with batch 8, fp32.

    (DeepSpeedConfig checks train batch = micro batch x accumulation x world size, and without a
    process group the world size is 1.)
    """
    filled = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": 1,
        "train_batch_size": micro,
        "gradient_clipping": 1.0,
        "enabled": False,
    }
    if isinstance(value, dict):
        return {k: (filled[k] if v == "auto" else _fill_auto(v, micro)) for k, v in value.items()}
    return value


@pytest.mark.parametrize("name", ["deepspeed_zero2.json", "deepspeed_zero2_bf16.json"])
def test_deepspeed_json_is_valid(name):
    raw = json.loads((CONFIG_DIR / name).read_text())
    assert raw["zero_optimization"]["stage"] == 2
    autos = {k for k, v in raw.items() if v == "auto"}
    assert {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"} <= autos
    if name.endswith("_bf16.json"):
        assert raw["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
        assert raw["bf16"]["enabled"] is False and raw["fp16"]["enabled"] is False
    deepspeed_config = pytest.importorskip(
        "deepspeed.runtime.config",
        reason="deepspeed is not installed (pip install -c constraints.txt deepspeed): JSON checked only for its shape",
    )
    config = deepspeed_config.DeepSpeedConfig(_fill_auto(raw))
    assert config.zero_optimization_stage == 2 and config.train_micro_batch_size_per_gpu == 8
    assert config.torch_autocast_enabled == name.endswith("_bf16.json")


def test_cpu_2proc_launch_gives_two_synchronised_ranks(tmp_path):
    """The launch config the tests and CPU SLURM jobs use: 2 processes, one gloo group (reduce of 1 + 2 is 3 on both)."""
    run_launch(
        ["-m", "rkd_probe", "check", "--runs-dir", tmp_path, "--name", "probe"], tmp_path / "launch.log", nproc=2
    )
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "probe" / "probe").glob("check-0-rank*.json"))]
    assert [r["rank"] for r in records] == [0, 1]
    for r in records:
        assert r["world_size"] == 2 and r["reduce_sum"] == 3.0
        assert r["distributed_type"] == "MULTI_CPU"  # Accelerate's name for CPU processes in one group
