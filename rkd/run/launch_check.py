"""Launcher settings that cannot work with rkd, refused in one line before any stage starts.

* GPUs requested but none visible: the job asked for GPUs (SLURM's ``SLURM_GPUS_ON_NODE`` /
  ``SLURM_GPUS_PER_NODE`` / ``SLURM_JOB_GPUS``, rkd's ``GPUS_PER_NODE``, ``CUDA_VISIBLE_DEVICES``)
  but torch sees no CUDA device (a CPU-only torch build, a missing driver): the run would otherwise
  fall back to one slow CPU process while the GPUs idle.
* DeepSpeed ZeRO stage 3: it partitions every parameter over the processes, and rkd's stages read
  and load whole weights (best-model selection, the frozen student, the export).
* DeepSpeed with a fixed ``gradient_clipping``: rkd sets DeepSpeed's clipping from each stage's
  ``grad_clip`` (``use_stage_clipping``), so that results do not depend on the launcher.

The DeepSpeed settings are read the way Accelerate reads them: its ``HfDeepSpeedConfig`` on the JSON
that ``accelerate launch`` names in ``ACCELERATE_DEEPSPEED_CONFIG_FILE``, else the ZeRO stage and
clipping that the launcher's flags put in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from accelerate.utils import DistributedType
from accelerate.utils.deepspeed import HfDeepSpeedConfig

GPU_VARIABLES = ("GPUS_PER_NODE", "SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES")
CPU_PAIRING = "launch_configs/cpu_2proc.yaml with ACCELERATE_USE_CPU=1 (slurm/*.sh: GPUS_PER_NODE=0)"


class LaunchError(RuntimeError):
    """The launcher and the machine (or the DeepSpeed config) do not go together."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def gpu_count(name: str, value: str | None) -> int:
    """GPUs a variable asks for: a count ("4"), SLURM's typed counts ("a100:4", "gpu:a100:2,gpu:v100:1"),
    or a device list ("0,1,2"; ``SLURM_JOB_GPUS`` and ``CUDA_VISIBLE_DEVICES``). 0 when unset or empty."""
    value = (value or "").strip()
    if not value or value in ("-1", "NoDevFiles"):
        return 0
    if name in ("SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES"):
        return len([d for d in value.split(",") if d.strip()])
    total = 0
    for part in value.split(","):
        count = part.rsplit(":", 1)[-1].split("(")[0]
        total += int(count) if count.isdigit() else 0
    return total


def requested_gpus(env: Mapping[str, str]) -> tuple[int, str]:
    """``(GPUs per node, "VARIABLE=value")`` from the first of ``GPU_VARIABLES`` that asks for any; ``(0, "")``."""
    for name in GPU_VARIABLES:
        count = gpu_count(name, env.get(name))
        if count:
            return count, f"{name}={env[name]}"
    return 0, ""


def check_gpus(env: Mapping[str, str], cuda_available: bool) -> None:
    """Refuse a job that asked for GPUs on a process that cannot see any (unless it asked for a CPU run)."""
    if cuda_available or _truthy(env.get("ACCELERATE_USE_CPU")):
        return
    count, source = requested_gpus(env)
    if count == 0:
        return
    build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
    raise LaunchError(
        f"{source} asks for {count} GPU(s) per node but torch sees none ({build}): install the CUDA build of torch "
        f"on the GPU nodes (README: Installing on a GPU cluster), or run on CPU with {CPU_PAIRING}"
    )


def deepspeed_settings(env: Mapping[str, str]) -> dict:
    """``{"source", "zero_stage", "gradient_clipping"}`` of a DeepSpeed launch, as Accelerate will read them."""
    path = env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none")
    if path and path != "none":
        config = HfDeepSpeedConfig(path)
        stage = config.get_value("zero_optimization.stage")
        clipping = config.get_value("gradient_clipping")
        source = path
    else:
        stage, clipping, source = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"), None, "accelerate launch flags"
    flag = env.get("ACCELERATE_GRADIENT_CLIPPING")
    if flag not in (None, "", "auto", "none"):
        clipping, source = flag, f"{source} and --gradient_clipping"
    return {
        "source": source,
        "zero_stage": int(stage if stage not in (None, "auto") else 2),
        "gradient_clipping": clipping,
    }


def check_deepspeed(env: Mapping[str, str]) -> None:
    """Refuse ZeRO stage 3 and a fixed ``gradient_clipping`` (rkd sets it per stage from ``grad_clip``)."""
    if not _truthy(env.get("ACCELERATE_USE_DEEPSPEED")):
        return
    settings = deepspeed_settings(env)
    if settings["zero_stage"] == 3:
        raise LaunchError(
            f"DeepSpeed zero_optimization.stage = 3 ({settings['source']}) partitions every parameter over the "
            f"processes, but rkd's stages load and read whole weights (best-model selection, the frozen student, "
            f"export); rkd's models fit one GPU: use launch_configs/deepspeed_zero2.yaml (ZeRO-2 shards optimiser "
            f"states and gradients) or launch_configs/gpu_multi.yaml (DDP)"
        )
    clipping = settings["gradient_clipping"]
    if clipping not in (None, "auto"):
        raise LaunchError(
            f"DeepSpeed gradient_clipping = {clipping} ({settings['source']}) would override every stage's grad_clip "
            f'(e.g. stage1.grad_clip), so results would depend on the launcher: set "gradient_clipping": "auto" '
            f"as in launch_configs/deepspeed_zero2.json (rkd fills in each stage's grad_clip) and drop "
            f"--gradient_clipping"
        )


def check_launch(env: Mapping[str, str] | None = None, cuda_available: bool | None = None) -> None:
    """Every check above, on this process's environment and devices; raises ``LaunchError``."""
    env = os.environ if env is None else env
    check_gpus(env, torch.cuda.is_available() if cuda_available is None else cuda_available)
    check_deepspeed(env)


def use_stage_clipping(accelerator, grad_clip: float | None) -> None:
    """Under DeepSpeed, clip this stage's gradients at its ``grad_clip`` (DeepSpeed clips inside its step,
    so the engine's own clipping call does nothing there). Call before ``accelerator.prepare``."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.state.deepspeed_plugin.deepspeed_config["gradient_clipping"] = float(grad_clip or 0.0)


def applied_clipping(accelerator, model, grad_clip: float | None) -> float | None:
    """The gradient-norm bound the prepared ``model`` is trained with (DeepSpeed's own when it clips)."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED and hasattr(model, "gradient_clipping"):
        return float(model.gradient_clipping()) or None
    return grad_clip
