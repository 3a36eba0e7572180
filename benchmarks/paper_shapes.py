"""The paper's shapes on this machine: a ViT-B/16-sized teacher (random init from its config, 224 px, ~86M
parameters) and CIFAR-100-shaped data (synthetic, saved with datasets' save_to_disk), through every stage of
rkd's pipeline with the paper config's student and codec (rkd/configs/paper-cifar100-vit.yaml), a few steps each:
teacher fine-tuning, the cache, a search step, stage 1, stage 2 and one evaluation cell.

Prints (and writes with --out) a JSON with each stage's seconds and peak resident memory (the process's high-water
mark, reset before each stage), the machine and the precision; exits 1 when a stage's peak memory is above
``--memory-bound`` GiB. The step counts are minimal: the point is the shapes, the memory and that nothing breaks;
throughput belongs to benchmarks/device_check.py on an accelerator.

    OMP_NUM_THREADS=2 python benchmarks/paper_shapes.py --out benchmarks/results/paper_shapes_cpu.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
from common import write_json

MEMORY_BOUND_GIB = 6.0  # a stage above this on the CPU run fails (ViT-B/16 with AdamW states: ~1.4 GiB of weights)
STAGES = ("teacher", "cache", "search", "stage1", "stage2", "eval")
VIT_B16: dict = {}  # transformers' ViTConfig defaults are ViT-B/16 at 224 px: hidden 768, 12 layers, 12 heads
VIT_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
VIT_TINY.update(image_size=32, patch_size=8)


def make_data(root: Path, n_train: int, n_test: int, classes: int = 100, size: int = 32, seed: int = 0) -> Path:
    """CIFAR-100-shaped data (``img`` 32x32 RGB, ``fine_label`` of 100 classes) as a save_to_disk directory."""
    import datasets
    from PIL import Image

    if (root / "dataset_dict.json").exists():
        return root
    rng = np.random.default_rng(seed)
    features = datasets.Features(
        {"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=[f"class-{i:03d}" for i in range(classes)])}
    )
    parts = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % classes
        pixels = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        pixels[:, : size // 4] = (labels * (255 // classes))[:, None, None, None]  # something to learn
        parts[split] = datasets.Dataset.from_dict(
            {"img": [Image.fromarray(p) for p in pixels], "fine_label": labels.tolist()}, features=features
        )
    datasets.DatasetDict(parts).save_to_disk(str(root))
    return root


def make_teacher(root: Path, vit: dict, classes: int = 100) -> Path:
    """A randomly initialised ViT image classifier from its config, saved with its processor (mean/std 0.5)."""
    from transformers import ViTConfig, ViTForImageClassification

    from rkd.teacher.hub import square_processor

    if (root / "config.json").exists():
        return root
    config = ViTConfig(**vit, num_labels=classes)
    ViTForImageClassification(config).save_pretrained(str(root))
    square_processor(config.image_size, [0.5] * 3, [0.5] * 3).save_pretrained(str(root))
    return root


def overrides(data: Path, teacher: Path, steps: int = 2, batch: int = 8, precision: str = "no") -> list:
    """The paper config run for ``steps`` steps per stage (the student, codec and channels stay the paper's)."""
    return [
        f"data.name=hf:{data}",
        f"teacher.source={teacher}",
        f"mixed_precision={precision}",
        f"teacher.train.max_steps={steps}",
        f"teacher.train.batch_size={batch}",
        "teacher.train.warmup_steps=0",
        f"teacher.cache_batch_size={4 * batch}",
        "search.enabled=true",
        "search.train.epochs=1",
        f"search.train.max_steps={max(1, steps // 2)}",
        f"search.train.batch_size={2 * batch}",
        "search.warmup_epochs=0",
        f"search.max_train={8 * batch}",
        f"search.max_val={4 * batch}",
        f"stage1.max_steps={steps}",
        f"stage1.batch_size={8 * batch}",
        f"stage2.max_steps={steps}",
        f"stage2.batch_size={8 * batch}",
        "eval.channels=[{name: awgn}]",
        "eval.snr_min=10",
        "eval.snr_max=10",
        "eval.rates=[128]",
        f"eval.batch_size={16 * batch}",
    ]


def peak_rss_gib() -> float:
    """This process's resident-memory high-water mark since the last ``reset_peak_rss``."""
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 2**20


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current resident size


def run_stages(cfg, accelerator) -> dict:
    """Each stage of the pipeline in order, with its seconds and peak resident memory."""
    from rkd.run.pipeline import Pipeline

    pipeline = Pipeline(cfg, accelerator)
    stages = {}
    for stage in STAGES:
        reset_peak_rss()
        started = time.perf_counter()
        pipeline.run(until=stage)
        stages[stage] = {"seconds": round(time.perf_counter() - started, 2), "peak_rss_gib": round(peak_rss_gib(), 3)}
        print(f"[paper-shapes] {stage}: {stages[stage]}", flush=True)
    return stages


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/rkd-paper-shapes"), help="data, teacher and runs")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    parser.add_argument("--memory-bound", type=float, default=MEMORY_BOUND_GIB, help="GiB per stage (peak RSS)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=64)
    parser.add_argument("--n-test", type=int, default=16)
    args = parser.parse_args(argv)
    import torch

    from rkd.bench.machine import machine_record
    from rkd.config import load_config
    from rkd.engine import make_accelerator

    torch.set_num_threads(args.threads)
    data = make_data(args.work / "cifar100-shaped", args.n_train, args.n_test)
    teacher = make_teacher(args.work / "vit-b16-random", VIT_B16)
    extra = [f"runs_dir={args.work / 'runs'}", "name=paper-shapes"]
    cfg = load_config(["paper-cifar100-vit"], [*overrides(data, teacher, steps=2, batch=4), *extra])
    accelerator = make_accelerator(cfg.mixed_precision, cpu=True, seed=cfg.seed)
    started = time.perf_counter()
    stages = run_stages(cfg, accelerator)
    eval_summary = json.loads((cfg.run_dir / "eval" / "stage.json").read_text())["summary"]
    result = {
        "what": "paper shapes (ViT-B/16 teacher at 224 px, CIFAR-100-shaped data, the paper config's student and "
        "codec), a few steps per stage on the CPU",
        "machine": machine_record(args.threads),
        "precision": {"mixed_precision": str(accelerator.mixed_precision), "teacher": cfg.teacher.train_precision},
        "teacher_params": eval_summary["teacher_params"],
        "student_params": eval_summary["student_params"],
        "codec_tx_params": eval_summary["codec_tx_params"],
        "data": {"train_val": args.n_train, "test": args.n_test, "classes": 100, "image": [32, 32, 3]},
        "steps_per_stage": {"teacher": cfg.teacher.train.max_steps, "stage1": cfg.stage1.max_steps},
        "stages": stages,
        "total_seconds": round(time.perf_counter() - started, 1),
        "memory_bound_gib": args.memory_bound,
    }
    write_json(result, args.out)
    over = {s: v["peak_rss_gib"] for s, v in stages.items() if v["peak_rss_gib"] > args.memory_bound}
    if over:
        print(f"paper-shapes: peak memory above {args.memory_bound} GiB in {over}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
