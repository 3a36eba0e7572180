"""Each stage's work as a plan (``rkd.run.estimate.StagePlan``): step and image counts from the config and
the data, priced by the step costs ``rkd.run.calibrate`` measured here.

A forward pass over one image is priced at a third of a training step's per-image cost (the backward
pass costs about twice the forward). Counts are per process (the loaders shard across processes).
Phase names are what the loops report: ``<loop>:train`` per optimiser step, ``<loop>:val`` per
validation image, ``cache``, ``tokens`` and ``sweep`` per image. The evaluation's sweep is timed on its
own (``seconds_per_sweep_cell_image``): it reuses each SNR's transmission across channels and k.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch

from rkd.config import RunConfig, layer
from rkd.data import DataBundle
from rkd.run.calibrate import (
    codec_workload,
    seconds_per_step,
    seconds_per_sweep_cell_image,
    student_workload,
    supernet_workload,
    teacher_workload,
)
from rkd.run.estimate import LONG_RUN, StagePlan, plan_lines
from rkd.stages.selection import candidate_epochs

FORWARD_SHARE = 1 / 3  # of a training step's per-image cost


def needed_costs(stages: list) -> set:
    """Which step costs the ``stages`` need."""
    need = set()
    if {"teacher", "cache"} & set(stages):
        need.add("teacher")
    if "search" in stages:
        need |= {"supernet", "supernet_arch", "candidate"}
    if {"stage1", "stage2", "eval"} & set(stages):
        need.add("stage1")
    if {"stage2", "eval"} & set(stages):
        need.add("stage2")
    if "eval" in stages:
        need.add("sweep")
    return need


def measure_costs(cfg: RunConfig, bundle: DataBundle, need: set, precisions: dict) -> dict:
    """``(seconds per training step, batch)`` of each model named in ``need`` (``needed_costs``), timed now.

    The global random state is put back afterwards: a run's draws must not depend on whether it was planned.
    """
    costs: dict = {}
    with torch.random.fork_rng(devices=[]):
        teacher, dim = teacher_workload(cfg, bundle, precisions["teacher"])
        if "teacher" in need:
            costs["teacher"] = (seconds_per_step(teacher), teacher.images)
        student = precisions["student"]
        builders = {
            "supernet": lambda: supernet_workload(cfg, bundle, dim, False, student),
            "supernet_arch": lambda: supernet_workload(cfg, bundle, dim, True, student),
            "candidate": lambda: student_workload(cfg, bundle, dim, cfg.search.candidate_batch_size, student),
            "stage1": lambda: student_workload(cfg, bundle, dim, cfg.stage1.batch_size, student),
            "stage2": lambda: codec_workload(cfg, bundle, dim, student),
        }
        for name, build in builders.items():
            if name in need:
                workload = build()
                costs[name] = (seconds_per_step(workload), workload.images)
                if name == "stage2" and "sweep" in need:
                    costs["sweep"] = (seconds_per_sweep_cell_image(cfg, workload), 1)
    return costs


def _forward(costs: dict, name: str) -> float:
    seconds, batch = costs[name]
    return seconds / batch * FORWARD_SHARE


def _epochs_steps(epochs: int, per_epoch: int, max_steps: int | None) -> int:
    steps = epochs * per_epoch
    return steps if max_steps is None else min(steps, max_steps)


def _search_phases(plan: StagePlan, cfg: RunConfig, n: dict, costs: dict, world: int) -> None:
    s = cfg.search
    rows = min(n["train"], s.max_train or n["train"])
    per_epoch = math.ceil((rows // s.train.batch_size if rows >= s.train.batch_size else 1) / world)
    total = _epochs_steps(s.train.epochs, per_epoch, s.train.max_steps)
    warmup = min(total, s.warmup_epochs * per_epoch)
    plan.add("search:train", warmup, costs["supernet"][0])
    plan.add("search:train", total - warmup, costs["supernet_arch"][0])
    val_rows = min(n["val"], s.max_val or n["val"])
    plan.add("search:val", s.train.epochs * math.ceil(val_rows / world), _forward(costs, "supernet"))
    if s.candidates > 1:
        c_rows = min(n["train"], s.candidate_max_train or n["train"])
        c_batch = s.candidate_batch_size
        c_per_epoch = math.ceil((c_rows // c_batch if c_rows >= c_batch else 1) / world)
        epochs = candidate_epochs(s, s.candidates)
        plan.add("candidate:train", epochs * c_per_epoch, costs["candidate"][0])
        c_val = min(n["val"], s.candidate_max_val or n["val"])
        plan.add("candidate:val", epochs * math.ceil(c_val / world), _forward(costs, "candidate"))


def split_sizes(cfg: RunConfig, bundle: DataBundle) -> dict:
    """Images per split as ``cfg`` would use them (its ``data.max_*`` caps applied to the loaded data)."""
    caps = {"train": cfg.data.max_train, "val": cfg.data.max_val, "test": cfg.data.max_test}
    return {s: min(len(bundle.splits[s].labels), caps[s] or len(bundle.splits[s].labels)) for s in caps}


def stage_plan(stage: str, cfg: RunConfig, bundle: DataBundle, costs: dict, world: int = 1) -> StagePlan:
    """``stage``'s work priced by ``costs`` (``measure_costs``); an empty plan for a stage without timed work."""
    n = split_sizes(cfg, bundle)
    plan = StagePlan(stage)
    if stage == "teacher" and cfg.teacher.finetune:
        t = cfg.teacher.train
        steps = _epochs_steps(t.epochs, math.ceil(math.ceil(n["train"] / t.batch_size) / world), t.max_steps)
        plan.add("teacher:train", steps, costs["teacher"][0])
        plan.add("teacher:val", t.epochs * math.ceil(n["val"] / world), _forward(costs, "teacher"))
    elif stage == "cache":
        views = 2 if cfg.teacher.cache_flip_average else 1
        plan.add("cache", math.ceil(sum(n.values()) / world), views * _forward(costs, "teacher"))
    elif stage == "search" and cfg.search.enabled:
        _search_phases(plan, cfg, n, costs, world)
    elif stage in ("stage1", "stage2"):
        t = getattr(cfg, stage)
        if stage == "stage2":
            plan.add("tokens", n["train"] + n["val"], _forward(costs, "stage1"))
        steps = _epochs_steps(t.epochs, math.ceil(n["train"] // t.batch_size / world), t.max_steps)
        plan.add(f"{stage}:train", steps, costs[stage][0])
        plan.add(f"{stage}:val", t.epochs * math.ceil(n["val"] / world), _forward(costs, stage))
    elif stage == "eval":
        e = cfg.eval
        snrs = math.floor((e.snr_max - e.snr_min) / e.snr_step + 1e-9) + 1
        cells = len(e.channels) * math.ceil(snrs / world) * len(e.rates or cfg.codec.rates)
        plan.add("tokens", n["test"], _forward(costs, "stage1"))
        per_cell_image = costs["sweep"][0] if "sweep" in costs else _forward(costs, "stage2")
        plan.add("sweep", cells * n["test"], per_cell_image)
    return plan


def planning_enabled() -> bool:
    """``RKD_PLAN=off`` skips the timing of each stage's models (no plan, no projected times)."""
    return os.environ.get("RKD_PLAN", "on").strip().lower() not in ("off", "0", "no", "false")


class Planner:
    """A run's plans: step costs measured once per model on the main process, plans per stage from them.

    Estimation never stops a run: a model that cannot be timed leaves its stage without a plan, said so.
    """

    def __init__(self, cfg: RunConfig, accelerator, bundle, precisions: Callable[[], dict]) -> None:
        self.cfg, self.accelerator, self.bundle, self.precisions = cfg, accelerator, bundle, precisions
        self.costs: dict = {}
        self.enabled = accelerator.is_main_process and planning_enabled()

    def _measure(self, stages: list) -> None:
        missing = needed_costs(stages) - set(self.costs)
        if missing:
            self.costs.update(measure_costs(self.cfg, self.bundle(), missing, self.precisions()))

    def stage(self, stage: str) -> StagePlan | None:
        """``stage``'s plan, timing its models first if the run's plan did not."""
        if not self.enabled:
            return None
        try:
            self._measure([stage])
            return stage_plan(stage, self.cfg, self.bundle(), self.costs, self.accelerator.num_processes)
        except Exception as err:  # an estimate must never stop the run it estimates
            self.accelerator.print(f"[rkd] {stage}: no time estimate ({type(err).__name__}: {err})")
            return None

    def announce(self, stages: list) -> list[str]:
        """The whole run's plan for the ``stages`` still to run, as printed lines (also returned)."""
        if not self.enabled or len(stages) < 2:
            return []
        plans = [p for p in (self.stage(s) for s in stages) if p is not None]
        if not plans:
            return []
        quick = None
        if sum(p.seconds or 0.0 for p in plans) > LONG_RUN:
            quick_cfg = layer(self.cfg, "quick")
            world = self.accelerator.num_processes
            quick = sum(stage_plan(p.stage, quick_cfg, self.bundle(), self.costs, world).seconds or 0.0 for p in plans)
        lines = plan_lines(plans, quick)
        for line in lines:
            self.accelerator.print(line)
        return lines
