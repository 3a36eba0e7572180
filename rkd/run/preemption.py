"""Stopping a training run cleanly when the scheduler asks: SIGTERM/SIGUSR1 become a flag the ranks vote on.

SLURM sends one of these signals before a time limit or a preemption, to the processes one by one;
``rkd.engine.train_step`` puts the flag into each step's vote (``rkd.run.collective.vote``), so every rank
writes the checkpoint at the same step and raises ``StopRequested``, and the requeued job resumes.
"""

from __future__ import annotations

import signal
import threading


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
