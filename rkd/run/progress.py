"""Progress that suits where it runs: a live tqdm bar on a terminal, plain lines in a job log.

Under ``sbatch``, ``nohup`` or CI, stderr is a file: a bar's every redraw lands in it as another
line and a long run's log becomes mostly bar. There, progress is one line every
``RKD_PROGRESS_SECONDS`` (default 60) and at each ``mark`` (an epoch's end), with rate and ETA:

    [stage1] 12/23 steps (52%), 0.15 steps/s, elapsed 0:01:18, ETA 0:01:12, loss=4.7012

``RKD_PROGRESS=bar|lines|off`` overrides the choice (``auto``, the default, asks ``isatty``).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from typing import TextIO

from tqdm.auto import tqdm

MODES = ("auto", "bar", "lines", "off")


def _mode() -> str:
    mode = os.environ.get("RKD_PROGRESS", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"environment variable RKD_PROGRESS = {mode!r} is invalid: expected one of {MODES}")
    return mode


def _interval() -> float:
    raw = os.environ.get("RKD_PROGRESS_SECONDS", "60")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"environment variable RKD_PROGRESS_SECONDS = {raw!r} is invalid: expected seconds > 0")
    return value


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


class LineProgress:
    """tqdm's ``update`` / ``set_postfix`` / ``close`` as occasional log lines."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        initial: int = 0,
        interval: float = 60.0,
        file: TextIO | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.interval, self.file = interval, file
        self.postfix = ""
        self.started = self.last = time.monotonic()
        self.start_n = self.written_n = initial
        self.closed = False

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        done = (
            f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)"
            if self.total
            else f"{self.n} {self.unit}"
        )
        eta = f", ETA {_clock((self.total - self.n) / rate)}" if self.total and rate > 0 else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        return f"[{self.desc}] {done}, {rate:.2f} {self.unit}/s, elapsed {_clock(elapsed)}{eta}{postfix}"

    def write(self) -> None:
        print(self.line(), file=self.file or sys.stderr, flush=True)
        self.last, self.written_n = time.monotonic(), self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.interval:
            self.write()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def mark(self) -> None:
        """A line now (the engine calls it at each epoch's end)."""
        self.write()

    def close(self) -> None:
        """The final count, unless the last line already said it."""
        if not self.closed:
            self.closed = True
            if self.n != self.written_n:
                self.write()


class _Silent:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **values) -> None: ...
    def mark(self) -> None: ...
    def close(self) -> None: ...


class _Bar(tqdm):
    def mark(self) -> None:
        """A live bar already shows where it is."""


def progress_bar(
    total: int | None,
    desc: str,
    enabled: bool = True,
    unit: str = "it",
    initial: int = 0,
    stream: TextIO | None = None,
):
    """The one progress helper: a bar on a TTY, lines in a log, nothing when ``enabled`` is False."""
    mode = _mode()
    if not enabled or mode == "off":
        return _Silent()
    stream = stream or sys.stderr
    if mode == "bar" or (mode == "auto" and getattr(stream, "isatty", lambda: False)()):
        return _Bar(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=stream)
    return LineProgress(total, desc, unit, initial=initial, interval=_interval(), file=stream)
