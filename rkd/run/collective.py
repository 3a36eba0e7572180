"""What every process of a run must decide together, so that one rank's trouble never leaves the others waiting.

A collective operation (DDP's gradient all-reduce, a barrier, a checkpoint) hangs until every rank
joins it; a rank that raised instead waits for no one, and the others block until the watchdog
kills the job, minutes later and with an unrelated message. So:

* ``StepVote``: once per training step, one all-reduce carries each rank's "my loss is finite" and
  "I received a stop signal" (SLURM signals the processes of a job one at a time); every rank then
  stops for the same reason at the same step.
* ``on_main``: work only the main process does (writing results) is followed by a broadcast of its
  outcome, so a failure there (a full disk) raises on every rank instead of hanging the others.
* ``agree_on_error``: the same for work every rank does on its own files (checkpoint files, cache shards).
* ``process_group_kwargs``: how long a rank waits in a collective before it gives up (the config's
  ``collective_timeout_minutes``), so a rank that works alone must finish within it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
from accelerate.utils import InitProcessGroupKwargs, broadcast_object_list, gather_object

ACCELERATE_DEFAULT_TIMEOUT = InitProcessGroupKwargs().timeout  # what Accelerate leaves out of the kwargs it passes


class StepVote:
    """The outcome of one step's vote: which ranks saw a non-finite loss, and whether any rank must stop."""

    def __init__(self, non_finite_ranks: list, stop: bool, world_size: int) -> None:
        self.non_finite_ranks = non_finite_ranks
        self.stop = stop
        self.world_size = world_size


def vote(accelerator, loss: torch.Tensor, stop_requested: bool) -> StepVote:
    """One all-reduce (one host sync) per step: slot ``r`` counts rank r's non-finite loss, the last slot the
    ranks that received a stop signal. A single process only checks its own loss."""
    finite = torch.isfinite(loss.detach()).all()
    world = accelerator.num_processes
    if world == 1:
        return StepVote([] if bool(finite) else [0], stop_requested, 1)
    votes = torch.zeros(world + 1, device=accelerator.device)
    votes[accelerator.process_index] = (~finite).float()
    votes[world] = float(stop_requested)
    counts = accelerator.reduce(votes, reduction="sum").tolist()
    return StepVote([r for r in range(world) if counts[r] > 0], counts[world] > 0, world)


def _outcome(error: BaseException | None) -> list | None:
    return None if error is None else [type(error).__name__, str(error)]


def _raise_for_peer(outcome: list, error_type: type, where: str) -> None:
    """On a rank that did not fail: ``error_type`` when the failure was one, else ``RuntimeError``."""
    name, text = outcome
    if name == error_type.__name__:
        raise error_type(text)
    raise RuntimeError(f"{where} failed: {name}: {text}")


def on_main(accelerator, work: Callable[[], Any], error_type: type = RuntimeError) -> Any:
    """Run ``work()`` on the main process only; every rank returns together, or every rank raises.

    The main process re-raises its own exception; the others raise ``error_type`` with the same message
    when the failure was an ``error_type`` (so every rank prints the same line), else a ``RuntimeError``
    naming it. Returns ``work()``'s result on the main process, None elsewhere.
    """
    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = work()
        except Exception as exc:  # every failure is reported on all ranks below
            error = exc
    if accelerator.num_processes > 1:
        shared = [_outcome(error)]
        broadcast_object_list(shared, from_process=0)
        if error is None and shared[0] is not None:
            _raise_for_peer(shared[0], error_type, "the main process")
    if error is not None:
        raise error
    return result


def agree_on_error(accelerator, error: BaseException | None, error_type: type = RuntimeError) -> None:
    """After work each rank did alone: raise on every rank if any rank failed (its own error where it has one)."""
    if accelerator.num_processes == 1:
        if error is not None:
            raise error
        return
    outcomes = gather_object([_outcome(error)])
    if error is not None:
        raise error
    failed = [(rank, outcome) for rank, outcome in enumerate(outcomes) if outcome is not None]
    if failed:
        rank, outcome = failed[0]
        _raise_for_peer(outcome, error_type, f"rank {rank}")


def replicas_identical(accelerator, model: torch.nn.Module) -> bool:
    """True when every rank holds the same parameters (a hash per rank, gathered once).

    Ranks that trained as one group end every stage with equal weights; ranks that did not (a CPU
    launch without ACCELERATE_USE_CPU starts unsynchronised rank-0 processes) differ. Buffers such as
    BatchNorm's running statistics are left out: DDP syncs them at the start of a forward pass only.
    """
    if accelerator.num_processes == 1:
        return True
    digest = hashlib.sha256()
    for name, parameter in accelerator.unwrap_model(model).named_parameters():
        digest.update(name.encode())
        digest.update(parameter.detach().float().cpu().contiguous().numpy().tobytes())
    return len(set(gather_object([digest.hexdigest()]))) == 1


def check_replicas(accelerator, model: torch.nn.Module, desc: str) -> bool:
    """``replicas_identical``, or a ``RuntimeError`` naming the stage and the launch that would have kept them so."""
    if not replicas_identical(accelerator, model):
        raise RuntimeError(
            f"[{desc}] the {accelerator.num_processes} processes ended with different weights: they did not train "
            f"as one group (on CPU, launch with ACCELERATE_USE_CPU=1 and launch_configs/cpu_2proc.yaml)"
        )
    return True


def process_group_kwargs(no_gpu: bool, timeout_minutes: float | None) -> InitProcessGroupKwargs:
    """The process group: gloo without a GPU (DeepSpeed through Accelerate on CPU needs it, and it is the only
    backend that works there), NCCL with one; the collective timeout when one is set, None keeping each
    backend's default. Accelerate hands the timeout to ``deepspeed.init_distributed`` too, where it overrides
    ``DEEPSPEED_TIMEOUT``."""
    backend = "gloo" if no_gpu else "nccl"
    if timeout_minutes is None:
        return InitProcessGroupKwargs(backend=backend)
    timeout = timedelta(minutes=timeout_minutes)
    if timeout == ACCELERATE_DEFAULT_TIMEOUT:  # Accelerate passes on only values unlike its default; a
        timeout += timedelta(microseconds=1)  # microsecond more is the same wait to the backends (milliseconds)
    return InitProcessGroupKwargs(backend=backend, timeout=timeout)
