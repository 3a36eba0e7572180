"""Fine-tuning the teacher once, through the same ``rkd.engine.fit`` loop every stage uses.

A pretrained backbone fine-tunes at a fraction of the learning rate a fresh head needs, so the
optimiser sees two parameter groups; the trained teacher is saved with ``save_teacher``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate.utils import DistributedType

from rkd.config import RunConfig
from rkd.data import DataBundle, augment, make_loader, random_erase
from rkd.engine import Step, evaluate, fit
from rkd.hardware.decide import device_type_of, teacher_precision
from rkd.hardware.precision import DTYPES, computing_in
from rkd.run.artifacts import PathLike
from rkd.run.hashing import teacher_seed
from rkd.teacher.io import save_teacher
from rkd.teacher.model import Teacher, build_teacher


@dataclass(eq=False)
class TeacherObjective:
    """Cross-entropy on (optionally augmented) uint8 batches; augmentation only while training.

    ``precision`` (fp32 or bf16, as ``rkd.hardware.decide.teacher_precision`` chose it) is the format of
    the teacher's forward passes, whatever the Accelerator's own mixed precision for the student
    stages (the loss stays fp32). ``deepspeed=True``: DeepSpeed's engine owns the autocast (its JSON),
    so the objective adds none, which DeepSpeed would replace or switch off anyway. ``seed`` seeds the
    augmentation's own generator.
    """

    use_augmentation: bool
    label_smoothing: float = 0.0
    seed: int = 0
    precision: str = "fp32"
    random_erasing: float = 0.0
    deepspeed: bool = False
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.precision not in DTYPES:
            raise ValueError(f"precision = {self.precision!r} is invalid: expected one of {tuple(DTYPES)}")
        self.generator = torch.Generator().manual_seed(int(self.seed))

    def __call__(self, model: nn.Module, batch: dict, train: bool):
        pixels = batch["pixels"]
        if train and self.use_augmentation:
            pixels = random_erase(augment(pixels, self.generator), self.generator, self.random_erasing)
        if self.deepspeed:
            logits = model(pixels)["logits"]
        else:
            with computing_in(model, self.precision, pixels.device.type):
                logits = model(pixels)["logits"]
        labels = batch["label"]
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing if train else 0.0)
        return Step(loss=loss, logits=logits.detach(), labels=labels, terms={"ce": loss.detach()})


def parameter_groups(teacher: Teacher, lr: float, backbone_lr_scale: float) -> list[dict]:
    """Optimiser groups: the head at ``lr``, the backbone at ``lr * backbone_lr_scale``.

    A pretrained backbone fine-tunes best at a fraction of the rate a fresh head needs.
    """
    head_ids = {id(p) for p in teacher.head_parameters()}
    head = [p for p in teacher.parameters() if id(p) in head_ids]
    backbone = [p for p in teacher.parameters() if id(p) not in head_ids]
    groups = [{"params": head, "lr": lr}] if head else []
    if backbone:
        groups.append({"params": backbone, "lr": lr * backbone_lr_scale})
    return groups


def _fine_tune(
    cfg: RunConfig,
    bundle: DataBundle,
    accelerator: Any,
    teacher: Teacher,
    objective: TeacherObjective,
    val_loader: Any,
    out_dir: Path,
    backbone_lr_scale: float,
) -> tuple[float, float, int, dict]:
    """``rkd.engine.fit`` over the train split, head and backbone at their own rates: (best val accuracy, seconds,
    steps, throughput)."""
    tcfg = cfg.teacher
    train_loader = make_loader(bundle.splits["train"], tcfg.train.batch_size, shuffle=True, seed=teacher_seed(cfg))
    groups = parameter_groups(teacher, tcfg.train.lr, backbone_lr_scale)
    summary = fit(
        accelerator,
        teacher,
        objective,
        train_loader,
        val_loader,
        tcfg.train,
        out_dir,
        desc="teacher",
        parameters=groups,
    )
    return summary["best_val_accuracy"], summary["seconds"], summary["steps"], summary["throughput"]


def train_teacher(
    cfg: RunConfig, bundle: DataBundle, out_dir: PathLike, accelerator: Any, backbone_lr_scale: float | None = None
) -> dict:
    """Build, fine-tune (``cfg.teacher.train`` through ``rkd.engine.fit``) and save the teacher to ``out_dir/model``.

    ``backbone_lr_scale`` multiplies the learning rate of everything but the head; by default the
    kind's own (the embedded teacher trains from scratch at one rate, a checkpoint's backbone slower).
    With ``teacher.finetune = false`` the loaded teacher is only evaluated on val and saved.
    """
    out_dir = Path(out_dir)
    tcfg = cfg.teacher
    # one download per node: the node's first process fills the hub cache, the others then read it
    with accelerator.local_main_process_first():
        teacher = build_teacher(tcfg, bundle.num_classes, bundle.class_names, bundle.channels)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # DeepSpeed broadcasts each parameter as raw bytes, which needs a contiguous layout: no channels-last weights
        teacher = teacher.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # torch's stubs omit it
    objective = TeacherObjective(
        tcfg.augment,
        tcfg.train.label_smoothing,
        seed=teacher_seed(cfg) + 17 * accelerator.process_index,
        precision=teacher_precision(tcfg.train_precision, device_type_of(accelerator)).name,
        random_erasing=tcfg.random_erasing,
        deepspeed=accelerator.distributed_type == DistributedType.DEEPSPEED,
    )
    val_loader = make_loader(bundle.splits["val"], tcfg.train.batch_size, shuffle=False, seed=teacher_seed(cfg))
    if tcfg.finetune:
        if backbone_lr_scale is None:
            backbone_lr_scale = teacher.adapter.backbone_lr_scale
        val_accuracy, seconds, steps, throughput = _fine_tune(
            cfg, bundle, accelerator, teacher, objective, val_loader, out_dir, backbone_lr_scale
        )
    else:
        started = time.time()
        model = accelerator.prepare_model(teacher, evaluation_mode=True)
        metrics = evaluate(accelerator, model, objective, accelerator.prepare_data_loader(val_loader))
        val_accuracy, seconds, steps, throughput = metrics["accuracy"], time.time() - started, 0, {}
    teacher = accelerator.unwrap_model(teacher) if hasattr(accelerator, "unwrap_model") else teacher
    model_dir = out_dir / "model"
    if accelerator.is_main_process:
        save_teacher(teacher, model_dir)
    accelerator.wait_for_everyone()
    return {
        "val_accuracy": float(val_accuracy),
        "train_seconds": float(seconds),
        "steps": int(steps),
        "n_params": teacher.n_params,
        "finetuned": bool(tcfg.finetune),
        "kind": teacher.kind,
        "source": teacher.source,
        "trust_remote_code": bool(teacher.trust_remote_code),
        "model_dir": str(model_dir),
        "throughput": throughput,
    }
