"""Stopping a training run cleanly when the scheduler asks: SIGTERM/SIGUSR1 become a flag every process agrees on.

SLURM sends one of these signals before a time limit or a preemption; ``rkd.engine.fit`` checks the
flag between steps, writes a checkpoint and raises ``StopRequested``, so the requeued job resumes.
"""

from __future__ import annotations

import signal
import threading

import torch
from accelerate import Accelerator


class StopRequested(SystemExit):
    """A SIGTERM/SIGUSR1 arrived: a checkpoint was written and the process should exit."""


class SignalFlag:
    """Turns SIGTERM/SIGUSR1 into a flag the loop checks between steps."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def agreed(self, accelerator: Accelerator) -> bool:
        """True on every process as soon as any process got a signal, so all checkpoint at the same step.

        SLURM signals the processes of a job one by one: checked locally, one rank could enter the
        checkpoint's collectives while another runs the next step's all-reduce, and both would hang.
        """
        local = self.received is not None
        if accelerator.num_processes == 1:
            return local
        votes = torch.tensor([1.0 if local else 0.0], device=accelerator.device)
        return bool(accelerator.reduce(votes, reduction="sum").item() > 0)
