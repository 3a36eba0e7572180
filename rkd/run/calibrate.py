"""What one training step of each stage costs on this machine, timed on the run's own shapes.

Each stage's model is built as the stage builds it (the teacher, the search's supernet and its
architecture step, a candidate student, stage 1's student, stage 2's codec on tokens), fed one
batch of real training images (stage 2: synthetic tokens of the student's shape) and timed for a
few ``rkd.engine.train_step`` steps after a warm-up step. Teacher targets are synthetic, of the
teacher's feature size: the step's cost does not depend on their values. The run plan
(``rkd.run.estimate``) multiplies these by each stage's step counts; ``benchmarks/stage_steps.py``
compares variants with the same builders.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rkd.config import RunConfig
from rkd.data import DataBundle, student_transform
from rkd.engine import train_step
from rkd.evaluation.sweep import channel_sweep
from rkd.hardware.precision import computing_in
from rkd.losses import build_kd_loss
from rkd.models.factory import create_stage1_model, create_stage2_model, student_shape
from rkd.nas.architect import Architect
from rkd.nas.complexity import ExpectedCost
from rkd.nas.genotype import load_genotype
from rkd.optim import build_optimizer
from rkd.stages.objective import DistillObjective
from rkd.stages.search_objective import SearchObjective, build_search_loss, build_search_network
from rkd.teacher.model import build_teacher
from rkd.teacher.training import TeacherObjective


class SyntheticTargets:
    """Cached-teacher rows of the right shapes for any index (a stand-in for ``TeacherCache``)."""

    def __init__(self, classes: int, feature_dim: int) -> None:
        self.classes, self.feature_dim = classes, feature_dim
        self.features = {"train": torch.zeros(1, feature_dim)}

    def targets(self, split, index):
        generator = torch.Generator().manual_seed(len(index))
        return {
            "teacher_logits": torch.randn(len(index), self.classes, generator=generator),
            "teacher_features": torch.randn(len(index), self.feature_dim, generator=generator),
        }


class InPrecision:
    """An objective whose model passes run in ``precision`` (as the Accelerator's mixed precision would)."""

    def __init__(self, objective, precision: str) -> None:
        self.objective, self.precision = objective, precision

    def __call__(self, model, batch, train):
        with computing_in(model, self.precision, batch["label"].device.type):
            return self.objective(model, batch, train)

    def __getattr__(self, name):
        return getattr(self.objective, name)


@dataclass
class Workload:
    """One stage's model, objective, optimiser and a batch: what ``seconds_per_step`` times."""

    model: torch.nn.Module
    objective: Callable
    optimizer: torch.optim.Optimizer
    batch: dict

    @property
    def images(self) -> int:
        return len(self.batch["label"])


def image_batch(bundle: DataBundle, size: int) -> dict:
    """The first ``size`` training images (repeated if the split is smaller), as a loader yields them."""
    split = bundle.splits["train"]
    index = torch.arange(size) % len(split.labels)
    return {"pixels": split.images[index], "label": split.labels[index], "index": index}


def teacher_workload(cfg: RunConfig, bundle: DataBundle, precision: str) -> tuple[Workload, int]:
    """The teacher's training step in ``precision``; also returns its feature size (the students' KD target)."""
    teacher = build_teacher(cfg.teacher, bundle.num_classes, bundle.class_names, bundle.channels)
    objective = TeacherObjective(cfg.teacher.augment, cfg.teacher.train.label_smoothing, precision=precision)
    optimizer = build_optimizer(teacher.parameters(), cfg.teacher.train)
    return Workload(
        teacher, objective, optimizer, image_batch(bundle, cfg.teacher.train.batch_size)
    ), teacher.feature_dim


def student_workload(cfg: RunConfig, bundle: DataBundle, feature_dim: int, batch_size: int, precision: str) -> Workload:
    """Stage 1's student (``student.genotype``'s cells: candidates are drawn no larger) at ``batch_size``."""
    model = create_stage1_model(cfg, bundle, feature_dim, load_genotype(cfg.student.genotype))
    targets = SyntheticTargets(bundle.num_classes, feature_dim)
    objective = DistillObjective(student_transform(cfg.data, bundle), targets, build_kd_loss(cfg.loss))
    optimizer = build_optimizer(model.parameters(), cfg.stage1)
    return Workload(model, InPrecision(objective, precision), optimizer, image_batch(bundle, batch_size))


def supernet_workload(cfg: RunConfig, bundle: DataBundle, feature_dim: int, arch: bool, precision: str) -> Workload:
    """The search's weight step, with (``arch``) or without the architecture step the objective takes first."""
    s = cfg.search
    cost = ExpectedCost(s.primitives, s.nodes, student_shape(cfg, bundle))
    model = build_search_network(s, bundle, feature_dim, cost)
    targets = SyntheticTargets(bundle.num_classes, feature_dim)
    loss = build_search_loss(s, cost, s.complexity_weight)
    search = SearchObjective(student_transform(cfg.data, bundle), targets, loss, 0, 1, lambda m: m)
    batch = image_batch(bundle, s.train.batch_size)
    if arch:
        search.architect = Architect(
            model.arch_parameters(),
            search.loss_of,
            lambda skip: iter(lambda: batch, None),
            order=s.order,
            unrolled_lr=lambda step: s.train.lr,
        )
    optimizer = build_optimizer(model.weight_parameters(), s.train)
    return Workload(model, InPrecision(search, precision), optimizer, batch)


def codec_workload(cfg: RunConfig, bundle: DataBundle, feature_dim: int, precision: str) -> Workload:
    """Stage 2's step: the codec over the channels, on synthetic tokens of the frozen student's shape."""
    stage1 = create_stage1_model(cfg, bundle, feature_dim, load_genotype(cfg.student.genotype))
    system = create_stage2_model(cfg, stage1)
    images = image_batch(bundle, cfg.stage2.batch_size)
    with torch.no_grad():
        tokens = stage1(student_transform(cfg.data, bundle)(images["pixels"]))["tokens"]
    for part in (system.student, system.projector):
        part.requires_grad_(False)
    objective = DistillObjective(
        None,
        SyntheticTargets(bundle.num_classes, feature_dim),
        build_kd_loss(cfg.stage2_loss),
        channel_cfg=cfg.channel,
        rates=cfg.codec.train_rates or cfg.codec.rates,
        seed=cfg.seed,
    )
    trainable = [p for p in system.parameters() if p.requires_grad]
    batch = {"tokens": tokens, "label": images["label"], "index": images["index"]}
    return Workload(system, InPrecision(objective, precision), build_optimizer(trainable, cfg.stage2), batch)


class LocalSteps:
    """What ``train_step`` asks of an Accelerator, for a model it never prepared: plain backward and clipping.

    (The run's own Accelerator may be a DeepSpeed one, whose ``backward`` drives its engine's model.)
    """

    sync_gradients = True
    num_processes = 1  # the step's vote then checks this process's loss only

    @staticmethod
    def backward(loss: torch.Tensor) -> None:
        loss.backward()

    @staticmethod
    def clip_grad_norm_(parameters, max_norm: float):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def seconds_per_sweep_cell_image(cfg: RunConfig, codec: Workload) -> float:
    """Seconds the evaluation's channel sweep spends per image per (SNR, channel, k) cell, on ``codec_workload``'s model.

    The sweep transmits once per SNR and then runs only the channel and the receiver on k symbols, at
    the evaluation's batch size without gradients: far cheaper than a share of a training step.
    """
    rates = cfg.eval.rates or cfg.codec.rates
    tokens, labels = codec.batch["tokens"], codec.batch["label"]

    def sweep() -> None:
        channel_sweep(codec.model, tokens, labels, cfg.eval.channels, [0.0], rates, cfg.eval.batch_size, 0, False)

    sweep()  # warm-up
    started = time.perf_counter()
    sweep()
    cells = len(cfg.eval.channels) * len(rates)
    return (time.perf_counter() - started) / (cells * len(labels))


def seconds_per_step(workload: Workload, steps: int = 2) -> float:
    """Mean seconds of ``steps`` training steps after one warm-up step (the workload's weights do change)."""
    workload.model.train()
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()
        train_step(LocalSteps, workload.model, workload.objective, workload.batch, workload.optimizer, None, step, 5.0)
    return (time.perf_counter() - started) / steps
