"""A full disk stops the run with one line: the file that could not be written and the space left.

Writes fail on a full disk in different words: ``OSError(ENOSPC)`` from Python, "os error 28" from
safetensors, and from ``torch.save`` only "unexpected pos ..." or "file write failed". So a failed
write counts as a full disk when its error says so, or when the file system has less than
``LOW_SPACE`` bytes left after it failed. Every rkd write goes to a temporary file or a new
directory first, so the files written before (the previous checkpoint, the finished cache shards,
the previous results) stay intact, and a rerun resumes from them.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

LOW_SPACE = 1 << 20  # bytes: less than this left after a failed write means the disk filled up
FULL_DISK_WORDS = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")


class DiskFullError(RuntimeError):
    """A write failed because its file system is full (or over quota)."""


def free_bytes(path: str | Path) -> int | None:
    """Bytes free to this user on the file system holding ``path`` (its nearest existing parent); None if unknown."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return int(shutil.disk_usage(path).free)
    except OSError:
        return None


def human(n: int | None) -> str:
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def is_disk_full(error: BaseException, path: str | Path) -> bool:
    """Whether ``error``, raised while writing ``path``, came from a full file system."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if any(words in str(error) for words in FULL_DISK_WORDS):
        return True
    free = free_bytes(path)
    return free is not None and free < LOW_SPACE


def disk_full_error(path: str | Path, kept: str) -> DiskFullError:
    """The one-line error: ``path``, the space left, what is kept and how to go on."""
    return DiskFullError(
        f"no space left on device writing {path} ({human(free_bytes(path))} free there); {kept}: free some space "
        f"(or point runs_dir elsewhere) and rerun the same command to resume"
    )


def as_disk_full(error: BaseException, path: str | Path, kept: str) -> BaseException:
    """``error`` as a ``DiskFullError`` when the disk filled up, else ``error`` itself."""
    if isinstance(error, DiskFullError) or not is_disk_full(error, path):
        return error
    return disk_full_error(path, kept)
