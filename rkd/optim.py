"""What a stage's optimiser trains and how its learning rate moves: the optimiser, the warm-up + cosine
schedule (whose length ``rkd.engine.fit`` sets once Accelerate has sharded the data), and the heads left out
because no loss term reads their output."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from rkd.config import TrainConfig


def schedule_steps(cfg: TrainConfig, batches_per_epoch: int) -> int:
    """The optimiser steps of a schedule: every epoch's batches, capped by ``max_steps``."""
    steps = cfg.epochs * batches_per_epoch
    return steps if cfg.max_steps is None else min(steps, cfg.max_steps)


def build_optimizer(params: Iterable, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """The warm-up's length in steps: ``warmup_fraction`` of this run's steps (rounded), else ``warmup_steps``."""
    return _warmup(cfg.warmup_fraction, cfg.warmup_steps, total_steps)


def _warmup(fraction: float | None, steps: int, total_steps: int) -> int:
    return math.floor(fraction * total_steps + 0.5) if fraction else steps


class Schedule:
    """The learning-rate factor at a scheduler step: linear warm-up, then cosine (or constant) to ``total_steps``.

    ``total_steps`` may change after the scheduler is built (``set_schedule_length``). Only numbers and a
    word are kept, so a checkpoint of the scheduler (which saves this object's fields) loads safely.
    """

    def __init__(self, cfg: TrainConfig, total_steps: int) -> None:
        self.fraction, self.steps, self.kind = cfg.warmup_fraction, cfg.warmup_steps, str(cfg.scheduler)
        self.total_steps = int(total_steps)

    def __call__(self, step: int) -> float:
        total = self.total_steps
        warmup = _warmup(self.fraction, self.steps, total)
        if warmup and step < warmup:
            return (step + 1) / warmup
        if self.kind == "constant" or total <= warmup:
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """Linear warm-up, then cosine (or constant) over ``total_steps`` scheduler steps (``Schedule``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, Schedule(cfg, total_steps))


def set_schedule_length(scheduler, total_steps: int) -> None:
    """Change the length of a ``build_scheduler`` schedule (in scheduler steps): ``fit`` sets it once Accelerate
    has sharded the loader."""
    scheduler.lr_lambdas[0].total_steps = int(total_steps)


def freeze_unread_heads(model: torch.nn.Module, objective, log: Callable[[str], None] = print) -> list:
    """Freeze each head (``model.output_heads()``) whose output no loss term reads (``objective.output_keys()``).

    Such a head gets no gradient: one process merely skips it, but DDP's gradient all-reduce waits for
    it and fails at the next step ("Expected to have finished reduction"). Returns the frozen outputs.
    """
    heads, keys = getattr(model, "output_heads", None), outputs_read(objective)
    if heads is None or keys is None:
        return []
    frozen = [name for name, head in heads().items() if name not in keys]
    for name in frozen:
        heads()[name].requires_grad_(False)
    if frozen:
        log(f"[rkd] no loss term reads {frozen}: their heads stay as they are (frozen)")
    return frozen


def outputs_read(objective) -> set | None:
    """The model outputs ``objective``'s loss reads (its ``output_keys()``), or None when it does not say."""
    reads = getattr(objective, "output_keys", None)
    return reads() if reads is not None else None


def selects_on_loss(objective) -> bool:
    """True when no loss term reads the logits (a feature-only student): the classifier head is then frozen
    and untrained, its val accuracy says nothing, and the best epoch is the one with the lowest val loss."""
    keys = outputs_read(objective)
    return keys is not None and "logits" not in keys
