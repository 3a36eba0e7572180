"""Atomic, checksummed files: a kill never leaves a file that looks complete but is not."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rkd.run.diskspace import as_disk_full

PathLike = str | Path


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: PathLike, writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp_path)`` then rename onto ``path`` (same directory, so the rename is atomic).

    A full disk raises ``rkd.run.diskspace.DiskFullError`` naming ``path``; the old ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.replace(tmp_path, path)
    except Exception as exc:  # a full disk becomes one line naming the file (rkd.run.diskspace)
        error = as_disk_full(exc, path, f"the previous {path.name} (if any) is kept")
        if error is exc:
            raise
        tmp_path.unlink(missing_ok=True)
        raise error from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: PathLike) -> Any:
    return json.loads(Path(path).read_text())


def read_json_checked(path: Path, missing: Exception, invalid: Callable[[Exception], Exception]) -> Any:
    """The JSON in ``path`` for a caller that words its own errors: ``missing`` is raised when there is no
    such file, ``invalid(reason)`` when the file cannot be read or parsed."""
    if not path.is_file():
        raise missing
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise invalid(exc) from None


class IntegrityError(RuntimeError):
    """A file rkd wrote earlier no longer matches the checksum recorded when it was written."""


def file_checksums(root: PathLike, skip: Callable[[Path], bool] = lambda rel: False) -> dict[str, str]:
    """``{relative path: sha256}`` for every file under ``root`` (sorted), except those ``skip(rel)`` names."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {rel.as_posix(): sha256_file(p) for p in files if not skip(rel := p.relative_to(root))}


def verify_checksums(root: PathLike, recorded: dict[str, str], what: str, fix: str) -> None:
    """Raise ``IntegrityError`` naming the first file under ``root`` that is missing or changed.

    ``what`` says which artifact this is and where its checksums were recorded; ``fix`` what the
    user should do. Integrity only: a checksum in a file next to the data shows damage (a disk
    fault, a partial copy, an edit), not who wrote it.
    """
    root = Path(root)
    for rel, expected in recorded.items():
        path = root / rel
        if not path.is_file():
            raise IntegrityError(f"{path} is missing; {what} lists it. {fix}")
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(
                f"{path} was changed or truncated after rkd wrote it (sha256 {actual[:12]}..., "
                f"recorded {expected[:12]}... in {what}). {fix}"
            )


def read_record(path: PathLike, fix: str) -> Any:
    """``read_json`` for rkd's own records: an unreadable record is an ``IntegrityError`` that names the fix."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{path} is not a readable JSON record ({exc}). {fix}") from None
