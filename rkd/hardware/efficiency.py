"""How fast a stage really ran against what the machine can do: images/s, achieved GFLOP/s, efficiency.

A training loop times its steps; once (the stage's second step: the first pays for allocation and
warm-up) one step runs under ``torch.utils.flop_counter`` to count the FLOPs it does, forward, backward
and whatever else the objective computes (the architecture step of the search included). A step run
under the counter need not round exactly as one run without it (stage 2's codec weights did not), so
the counted step is a step of the stage's schedule, not of the process: a run resumed past it counts
none and stays bit-identical to an uninterrupted one. Achieved GFLOP/s
= FLOPs per image x images per second; efficiency = that over the probe's peak for the stage's
precision (``rkd.hardware.probe``), so a small-layer student that keeps a few percent of the machine
busy shows it beside a teacher that keeps half of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from torch.utils.flop_counter import FlopCounterMode

COUNTED_STEP = 1  # zero-based global step: the stage's second step is counted, not timed


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: every FLOP is counted under "Global" only."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


class StepFlops(FlopCounterMode):
    """torch's FLOP counter, totals only. Its per-module breakdown hooks every module's backward, which
    ``torch.autograd.grad`` refuses (the search's architecture step uses it); the totals need no hooks."""

    def __init__(self) -> None:
        super().__init__(display=False)
        self.mod_tracker = _GlobalOnly()  # type: ignore[assignment]  # totals only: no module tracking


def batch_images(batch: Any) -> int:
    """Images in a batch: its labels' length, else the first tensor's first dimension."""
    if isinstance(batch, dict):
        if "label" in batch:
            return len(batch["label"])
        batch = next((v for v in batch.values() if hasattr(v, "shape")), None)
    return int(batch.shape[0]) if hasattr(batch, "shape") and batch.shape else 0


class Throughput:
    """Times the steps of one loop and counts one step's FLOPs (``step(fn, images)`` runs ``fn`` once)."""

    def __init__(self) -> None:
        self.steps = 0
        self.timed_steps = 0
        self.images = 0
        self.seconds = 0.0
        self.flops_per_image: float | None = None

    def step(self, fn: Callable[[], Any], images: int, global_step: int) -> Any:
        """``fn()``, timed; at global step ``COUNTED_STEP`` counted instead."""
        if global_step == COUNTED_STEP and images:
            try:
                with StepFlops() as counter:
                    result = fn()
                self.flops_per_image = counter.get_total_flops() / images
            finally:
                self.steps += 1
            return result
        started = time.perf_counter()
        result = fn()
        self.seconds += time.perf_counter() - started
        self.steps += 1
        self.timed_steps += 1
        self.images += images
        return result

    def summary(self, peak_gflops: float | None = None, processes: int = 1) -> dict:
        """images/s (all processes), achieved GFLOP/s per process, and efficiency against ``peak_gflops``."""
        if not self.timed_steps or self.seconds <= 0:
            return {}
        per_process = self.images / self.seconds
        out: dict = {
            "images_per_s": round(per_process * processes, 1),
            "steps_per_s": round(self.timed_steps / self.seconds, 3),
            "timed_steps": self.timed_steps,
        }
        if self.flops_per_image:
            achieved = self.flops_per_image * per_process / 1e9
            out["flops_per_image"] = round(self.flops_per_image)  # what a budget multiplies by its images
            out["gflop_per_image"] = round(self.flops_per_image / 1e9, 4)
            out["achieved_gflops"] = round(achieved, 2)
            if peak_gflops:
                out["peak_gflops"] = round(peak_gflops, 2)
                out["efficiency"] = round(achieved / peak_gflops, 3)
        return out


def counted_flops(summary: dict) -> float | None:
    """FLOPs per training image a run counted (a fit or stage summary's ``throughput``), or None."""
    return (summary.get("throughput") or {}).get("flops_per_image")


def against_peak(throughput: dict, peak_gflops: float | None) -> dict:
    """``throughput`` (a ``Throughput.summary``) with the probe's peak and the efficiency it gives."""
    if not throughput or not peak_gflops or "achieved_gflops" not in throughput:
        return throughput
    return {
        **throughput,
        "peak_gflops": round(peak_gflops, 2),
        "efficiency": round(throughput["achieved_gflops"] / peak_gflops, 3),
    }
