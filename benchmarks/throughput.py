"""Stage-2 training throughput (images/s) with 1, 2, ... processes, as JSON.

Measures what stage 2 does per step - the CAT encoder on the frozen student's tokens (computed once,
as ``rkd.stages.stage2`` does), the simulated channels, the CAT decoder and the loss, forward +
backward + optimiser step through ``rkd.engine.train_step`` under Accelerate (DDP when N > 1) - on
synthetic images and teacher targets of the config's shapes, so it needs no dataset, teacher or
earlier stage. Each process count is a separate `accelerate launch` of this file; throughput is
global: steps x batch per process x processes / wall time of the timed steps.

    python benchmarks/throughput.py --processes 1 2 --steps 30              # CPU here
    python benchmarks/throughput.py --processes 1 2 4 8 --precision bf16 --batch-size 256 \
        --out benchmarks/results/throughput_gpu.json                          # a GPU node
    python benchmarks/throughput.py --config paper-cifar100-vit --processes 1 4 ...

On a machine without CUDA it launches with launch_configs/cpu_2proc.yaml and ACCELERATE_USE_CPU=1
(2 CPU processes share the cores, so expect no speed-up there: it checks that the harness works);
with CUDA, launch_configs/gpu_multi.yaml (one process per GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_json

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="stage-2 training throughput with 1..N processes")
    parser.add_argument("--config", action="append", default=None, help="rkd config(s), layered (default: default)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts to measure")
    parser.add_argument("--steps", type=int, default=20, help="timed optimiser steps per process count")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (allocation, autotuning)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch per process (default: stage2.batch_size)")
    parser.add_argument("--precision", choices=["no", "bf16", "fp16"], default="no")
    parser.add_argument("--image-size", type=int, default=28, help="synthetic images: side in pixels")
    parser.add_argument("--channels", type=int, default=1, help="synthetic images: 1 (grayscale) or 3")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--teacher-dim", type=int, default=256, help="teacher feature size the projector maps to")
    parser.add_argument("--launch-config", default=None, help="Accelerate config (default: by CUDA availability)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (default: cores / N)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--note", default=None, help="free text stored in the JSON (e.g. what else ran on the machine)")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)  # internal: result file
    parser.add_argument("overrides", nargs="*", help="rkd config overrides section.field=value")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- one launched measurement


def _synthetic_bundle(args, n: int):
    import torch

    from rkd.data import DataBundle, Split

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, args.image_size, args.image_size, args.channels), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, args.classes, (n,), generator=g)
    split = Split(images, labels)
    return DataBundle(
        splits={"train": split, "val": split, "test": split},
        num_classes=args.classes,
        class_names=[str(i) for i in range(args.classes)],
        channels=args.channels,
        image_shape=(args.image_size, args.image_size, args.channels),
        fingerprint="synthetic",
        source="synthetic",
    )


class _SyntheticTargets:
    """Stands in for the teacher cache: fixed random logits and features per sample index."""

    def __init__(self, n: int, classes: int, dim: int) -> None:
        import torch

        g = torch.Generator().manual_seed(1)
        self.logits = torch.randn(n, classes, generator=g)
        self.features = torch.randn(n, dim, generator=g)

    def targets(self, split, index):
        rows = index.cpu().long()
        return {
            "teacher_logits": self.logits[rows].to(index.device),
            "teacher_features": self.features[rows].to(index.device),
        }


def worker(args: argparse.Namespace) -> None:
    import torch

    from rkd.config import load_config
    from rkd.data import student_transform
    from rkd.engine import make_accelerator, train_step
    from rkd.losses import build_kd_loss
    from rkd.measure import count_params
    from rkd.models.factory import create_stage1_model, create_stage2_model
    from rkd.models.frozen_tokens import freeze, student_tokens, token_loader
    from rkd.optim import build_optimizer, build_scheduler
    from rkd.stages.objective import DistillObjective

    cfg = load_config(list(args.config or ["default"]), list(args.overrides))
    accelerator = make_accelerator(args.precision, seed=0)
    world = accelerator.num_processes
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch_size or cfg.stage2.batch_size
    n = batch * world * (args.warmup + args.steps)
    bundle = _synthetic_bundle(args, n)
    system = create_stage2_model(cfg, create_stage1_model(cfg, bundle, args.teacher_dim))
    # as stage 2 trains (rkd.stages.stage2): the student and projector frozen, their tokens computed once
    for part in (system.student, system.projector):
        freeze(part)
    tokens = student_tokens(
        system.student, student_transform(cfg.data, bundle), bundle.splits["train"].images, cfg.eval.batch_size
    )
    objective = DistillObjective(
        None,
        _SyntheticTargets(n, args.classes, args.teacher_dim),
        build_kd_loss(cfg.stage2_loss),
        channel_cfg=cfg.channel,
        rates=cfg.codec.rates,
        rank=accelerator.process_index,
        world_size=world,
        seed=0,
        proportional_rates=cfg.codec.rate_sampling == "proportional",
    )
    optimizer = build_optimizer([p for p in system.parameters() if p.requires_grad], cfg.stage2)
    scheduler = build_scheduler(optimizer, cfg.stage2, args.warmup + args.steps)
    loader = token_loader(tokens, bundle.splits["train"].labels, batch, shuffle=True, seed=0, drop_last=True)
    model, optimizer, loader, scheduler = accelerator.prepare(system, optimizer, loader, scheduler)
    model.train()

    def sync() -> None:
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        accelerator.wait_for_everyone()

    started = None
    losses = []
    for i, batch_data in enumerate(loader):
        if i == args.warmup:
            sync()
            started = time.perf_counter()
        step = train_step(accelerator, model, objective, batch_data, optimizer, scheduler, i, cfg.stage2.grad_clip)
        if i >= args.warmup:
            losses.append(step.loss.detach())
    sync()
    seconds = time.perf_counter() - started
    steps = len(losses)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        record = {
            "world_size": world,
            "distributed_type": str(accelerator.distributed_type.value),
            "mixed_precision": str(accelerator.mixed_precision),
            "batch_per_process": batch,
            "global_batch": batch * world,
            "steps": steps,
            "seconds": seconds,
            "images_per_s": steps * batch * world / seconds,
            "step_ms": 1000 * seconds / steps,
            "torch_threads_per_process": torch.get_num_threads(),
            "final_loss": float(torch.stack(losses).float().mean()),
            "params": {
                "student": count_params(unwrapped.student),
                "cat_encoder": count_params(unwrapped.encoder),
                "cat_decoder": count_params(unwrapped.decoder),
            },
        }
        args.worker.write_text(json.dumps(record))
    accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------- the driver


def device_description() -> dict:
    import torch

    if torch.cuda.is_available():
        return {
            "device_type": "cuda",
            "device": torch.cuda.get_device_name(0),
            "device_count": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
        }
    name = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"device_type": "cpu", "device": name, "device_count": os.cpu_count()}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: argparse.Namespace, processes: int, result: Path, port: int) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    config = args.launch_config or ("launch_configs/gpu_multi.yaml" if cuda else "launch_configs/cpu_2proc.yaml")
    env = dict(os.environ)
    env.pop("ACCELERATE_USE_CPU", None)
    if not cuda and "deepspeed" not in Path(config).name:
        env["ACCELERATE_USE_CPU"] = "1"  # the CPU recipe (see launch_configs/cpu_2proc.yaml)
    threads = args.threads or max(1, (os.cpu_count() or 1) // processes)
    env["OMP_NUM_THREADS"] = str(threads)
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    cmd = [
        accelerate,
        "launch",
        "--config_file",
        str(REPO / config),
        "--num_processes",
        str(processes),
        "--main_process_port",
        str(port),
        "--mixed_precision",
        args.precision,
        __file__,
        "--worker",
        str(result),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--precision",
        args.precision,
        "--image-size",
        str(args.image_size),
        "--channels",
        str(args.channels),
        "--classes",
        str(args.classes),
        "--teacher-dim",
        str(args.teacher_dim),
        "--threads",
        str(threads),
    ]
    for c in args.config or []:
        cmd += ["--config", c]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    cmd += list(args.overrides)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not result.exists():
        raise SystemExit(
            f"throughput run with {processes} process(es) failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
            f"\n{proc.stderr[-3000:]}"
        )
    record = json.loads(result.read_text())
    if record["world_size"] != processes:
        raise SystemExit(f"asked for {processes} processes but the launch ran {record['world_size']}: check {config}")
    record["launch_config"] = config
    return record


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        worker(args)
        return 0
    import accelerate
    import torch

    report = {
        "benchmark": "rkd stage-2 training throughput (student + CAT codec + channels + KD loss, synthetic data)",
        **device_description(),
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
        "python": platform.python_version(),
        "precision": args.precision,
        "config": args.config or ["default"],
        "overrides": args.overrides,
        "image_shape": [args.image_size, args.image_size, args.channels],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "note": args.note,
        "results": [],
    }
    if hasattr(os, "getloadavg"):  # other jobs on the machine distort CPU timings: record how busy it was
        report["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        for processes in args.processes:
            record = launch(args, processes, Path(tmp) / f"result-{processes}.json", port=free_port())
            report["results"].append(record)
            print(
                f"{processes} process(es): {record['images_per_s']:.1f} images/s ({record['step_ms']:.1f} ms/step)",
                file=sys.stderr,
            )
    if hasattr(os, "getloadavg"):
        report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    base = report["results"][0]["images_per_s"]
    for record in report["results"]:
        record["speedup_vs_first"] = record["images_per_s"] / base
    write_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
