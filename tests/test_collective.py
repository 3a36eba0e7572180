"""Ranks stop together: a non-finite loss or a stop signal on one rank stops every rank at the same step (one
all-reduce per step), main-only work that fails raises everywhere, and the LR schedule ends with max_steps under
N processes. Each test spawns 2 gloo processes (multiproc.spawn_ranks) and asserts world size 2 and distinct
ranks; each worker writes what it saw to a file the test reads. Stage-level checks launch real processes
(tests/test_standins.py)."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch
from multiproc import run_launch, spawn_ranks
from torch.utils.data import DataLoader

from rkd.commands import leave
from rkd.config import TrainConfig
from rkd.engine import Step


def two_ranks():
    """An Accelerator over the 2 synchronised gloo ranks (spawn_ranks gives their group a short timeout)."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2
    ranks = accelerator.gather(torch.tensor([accelerator.process_index]))
    assert sorted(ranks.tolist()) == [0, 1]
    return accelerator


def report(out: str, accelerator, record: dict) -> None:
    Path(out, f"rank{accelerator.process_index}.json").write_text(json.dumps(record))
    accelerator.end_training()  # the worker's last act; then leave as rkd.cli does (rkd.commands.leave)
    leave(0, distributed=True)


def reports(out: Path) -> list:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def toy_loaders(n: int = 64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    rows = [{"x": x[i], "label": (x[i, 0] > 0).long()} for i in range(n)]
    return DataLoader(rows, batch_size=4, shuffle=True), DataLoader(rows, batch_size=16)


class FaultOn:
    """Cross-entropy; on rank ``rank`` at step ``step``: a NaN loss, or a SIGUSR1 to itself."""

    def __init__(self, rank: int, fault_rank: int | None, fault_step: int, fault: str) -> None:
        self.rank, self.fault_rank, self.fault_step, self.fault, self.step = rank, fault_rank, fault_step, fault, 0

    def set_step(self, step: int) -> None:
        self.step = step

    def __call__(self, model, batch, train):
        logits = model(batch["x"])
        loss = torch.nn.functional.cross_entropy(logits, batch["label"])
        if train and self.rank == self.fault_rank and self.step == self.fault_step:
            if self.fault == "nan":
                loss = loss * float("nan")
            else:
                signal.raise_signal(signal.SIGUSR1)
        return Step(loss=loss, logits=logits.detach(), labels=batch["label"], terms={"ce": loss.detach()})


def _fault_worker(out: str, fault: str) -> None:
    from rkd.engine import NonFiniteLossError, StopRequested, fit

    accelerator = two_ranks()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    train, val = toy_loaders()
    cfg = TrainConfig(epochs=3, lr=0.01, checkpoint_every=100, log_every=1)
    record = {"rank": accelerator.process_index, "world": accelerator.num_processes}
    try:
        fit(accelerator, model, FaultOn(accelerator.process_index, 1, 2, fault), train, val, cfg, Path(out) / "run")
        record["outcome"] = "finished"
    except NonFiniteLossError as exc:
        record.update(outcome="non-finite", message=str(exc))
    except StopRequested:
        record["outcome"] = "stopped"
    latest = Path(out) / "run" / "checkpoints" / "latest.json"
    record["checkpoint_step"] = json.loads(latest.read_text())["global_step"] if latest.exists() else None
    report(out, accelerator, record)


def test_a_nan_on_one_rank_stops_every_rank_at_that_step(tmp_path):
    """Before the vote, rank 0 went on into DDP's gradient all-reduce and waited for rank 1, which had raised."""
    spawn_ranks(_fault_worker, args=(str(tmp_path), "nan"), num_processes=2)
    ranks = reports(tmp_path)
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    assert [r["outcome"] for r in ranks] == ["non-finite", "non-finite"], ranks
    for r in ranks:
        assert "rank(s) [1] of 2 at step 2" in r["message"] and "grad_clip" in r["message"], r["message"]


def test_a_signal_on_one_rank_checkpoints_every_rank_at_the_same_step(tmp_path):
    spawn_ranks(_fault_worker, args=(str(tmp_path), "signal"), num_processes=2)
    ranks = reports(tmp_path)
    assert [r["outcome"] for r in ranks] == ["stopped", "stopped"], ranks
    assert [r["checkpoint_step"] for r in ranks] == [3, 3]  # the signal arrived during step 2 (0-based): 3 done


def _schedule_worker(out: str) -> None:
    from rkd.engine import fit

    accelerator = two_ranks()
    torch.manual_seed(0)
    train, val = toy_loaders(256)  # 64 batches: 32 per rank per epoch, far more than max_steps
    cfg = TrainConfig(epochs=5, lr=1.0, max_steps=8, scheduler="cosine", warmup_steps=0, log_every=1)
    summary = fit(accelerator, torch.nn.Linear(4, 2), FaultOn(0, None, -1, "none"), train, val, cfg, Path(out) / "run")
    report(out, accelerator, {"rank": accelerator.process_index, "steps": summary["steps"]})


def test_max_steps_ends_the_schedule_under_two_processes(tmp_path):
    """Accelerate steps the schedule once per process per update: the LR must reach 0 at max_steps, not at
    max_steps / 2 (the schedule's length was max_steps scheduler steps before)."""
    spawn_ranks(_schedule_worker, args=(str(tmp_path),), num_processes=2)
    assert [r["steps"] for r in reports(tmp_path)] == [8, 8]
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines()) if "lr" in r]
    expected = [0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(1, 9)]  # 1 process, 8 steps: the same curve
    assert lrs == pytest.approx(expected, abs=1e-9), lrs


def _on_main_worker(out: str) -> None:
    from rkd.run.collective import on_main

    accelerator = two_ranks()

    def write():
        raise OSError(28, "No space left on device", "results.json")

    try:
        on_main(accelerator, write)
        outcome = "returned"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    report(out, accelerator, {"outcome": outcome})


def test_a_failure_in_main_only_work_raises_on_every_rank(tmp_path):
    spawn_ranks(_on_main_worker, args=(str(tmp_path),), num_processes=2)
    main, other = (r["outcome"] for r in reports(tmp_path))
    assert main.startswith("OSError") and "No space left" in main
    assert other.startswith("RuntimeError: the main process failed: OSError: ") and "No space left" in other


TIMEOUT_PROBE = """
import json, sys, time
from pathlib import Path

import torch

from rkd.commands import leave
from rkd.engine import make_accelerator

out, minutes, main_delay = sys.argv[1], (None if sys.argv[2] == "none" else float(sys.argv[2])), float(sys.argv[3])
accelerator = make_accelerator("no", collective_timeout_minutes=minutes)
ranks = sorted(accelerator.gather(torch.tensor([accelerator.process_index])).tolist())
if accelerator.is_main_process:
    time.sleep(main_delay)
start = time.monotonic()
try:
    accelerator.wait_for_everyone()
    outcome = "passed"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
record = {"ranks": ranks, "outcome": outcome, "waited": time.monotonic() - start}
Path(out, f"rank{accelerator.process_index}.json").write_text(json.dumps(record))
leave(0, distributed=True)  # after a timeout the group is broken: no end_training
"""


@pytest.mark.slow
def test_the_configured_collective_timeout_bounds_a_wait(tmp_path):
    """A real 2-process launch (spawn_ranks makes its own process group): with 3 s configured, the rank left
    waiting at a barrier fails after about 3 s; with the backend's default it waits the main rank out."""
    probe = tmp_path / "probe.py"
    probe.write_text(TIMEOUT_PROBE)
    short, default = tmp_path / "short", tmp_path / "default"
    short.mkdir(), default.mkdir()
    run_launch([probe, short, 0.05, 12.0], tmp_path / "short.log", timeout=300)
    main, waiting = reports(short)
    assert main["ranks"] == waiting["ranks"] == [0, 1]
    assert "timed out" in waiting["outcome"].lower() or "timeout" in waiting["outcome"].lower(), waiting
    assert 2.0 < waiting["waited"] < 9.0, waiting
    run_launch([probe, default, "none", 6.0], tmp_path / "default.log", timeout=300)
    assert [r["outcome"] for r in reports(default)] == ["passed", "passed"]
    assert reports(default)[1]["waited"] > 4.0


@pytest.mark.parametrize("no_gpu", [True, False])
@pytest.mark.parametrize("minutes", [10, 30, 0.05])
def test_every_configured_timeout_reaches_the_backend(no_gpu, minutes):
    """Accelerate hands on only the kwargs that differ from its defaults (a 10-minute timeout among them), and
    DeepSpeed and gloo default to 30 minutes: a configured timeout must be among what it hands on."""
    from datetime import timedelta

    from rkd.run.collective import process_group_kwargs

    handed_on = process_group_kwargs(no_gpu, minutes).to_kwargs()
    assert abs(handed_on["timeout"] - timedelta(minutes=minutes)) < timedelta(milliseconds=1)
    assert "timeout" not in process_group_kwargs(False, None).to_kwargs()  # NCCL's own default stays
