"""Directories that survive a kill: a resumable, hash-keyed output directory and an atomic directory swap.

A pipeline stage, a sweep point and a baseline method all write into a directory that must be
resumed when the same settings run again and moved aside (never deleted) when the settings change.
A converted dataset and a saved teacher must appear all at once or not at all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rkd.run.artifacts import atomic_write_json, read_json


class ResumableDir:
    """``path`` belongs to one settings hash, recorded in ``started.json`` when work begins.

    ``begin`` keeps a directory started with the same hash (so the work resumes from its
    checkpoints) and moves one started with another hash, or with no readable record, to
    ``<name>.stale-<old hash>-<time>`` beside it.
    """

    STARTED = "started.json"

    def __init__(self, path: Path, hash_: str) -> None:
        self.path = Path(path)
        self.hash = hash_

    def started_hash(self) -> str | None:
        started = self.path / self.STARTED
        try:
            return read_json(started).get("hash") if started.exists() else None
        except (OSError, ValueError, AttributeError):  # unreadable: the directory counts as stale
            return None

    def begin(self, log: Callable[[Path], None] | None = None, **record) -> Path:
        """Prepare the directory (main process only); ``log`` is told where a stale directory was moved.

        ``record`` is written into ``started.json`` beside the hash (e.g. a sweep point's weight).
        """
        if self.path.exists():
            previous = self.started_hash()
            if previous != self.hash:
                stale = self.path.with_name(f"{self.path.name}.stale-{previous or 'unknown'}-{int(time.time())}")
                shutil.move(str(self.path), str(stale))
                if log is not None:
                    log(stale)
        self.path.mkdir(parents=True, exist_ok=True)
        started = self.path / self.STARTED
        if not started.exists():
            atomic_write_json(started, {"hash": self.hash, **record, "time": time.time()})
        return self.path


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty sibling directory to fill; on success it replaces ``target`` in one rename.

    A directory cannot be renamed onto a non-empty one, so an existing ``target`` is first renamed
    aside and removed after the swap. On an exception the half-written directory is removed and
    ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        stale = None
        if target.exists():
            stale = target.parent / f".{target.name}.stale-{os.getpid()}-{time.time_ns()}"
            os.replace(target, stale)
        os.replace(tmp, target)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
