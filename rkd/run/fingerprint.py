"""Content fingerprints of the files a config points to, for the stage hashes.

A stage hash must change when an input's *content* changes (an edited genotype JSON, new teacher
weights, an image added to a class folder) and stay the same when identical files are moved, so
the paths themselves never enter it: each path-valued field is replaced by the sha256 of what it
names. Names that are not local paths (a packaged genotype, ``embedded``, a hub id) stay as they are.

Files are streamed (1 MiB blocks) and each digest is kept for the life of the process, keyed by
(path, size, mtime): ``stage_hashes`` runs several times per command, the files are read once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from rkd.config import DataConfig, RunConfig, to_dict
from rkd.data import FASHION_MNIST_FILES
from rkd.nas.genotype import GENOTYPES

BLOCK = 1 << 20
_DIGESTS: dict = {}  # (resolved path, size, mtime_ns) -> sha256 hex


def file_digest(path: Path) -> str:
    """sha256 of one file's bytes, streamed; reused while its size and mtime stay the same."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        sha = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(BLOCK), b""):
                sha.update(block)
        _DIGESTS[key] = sha.hexdigest()
    return _DIGESTS[key]


def _visible(rel: Path) -> bool:
    return not any(part.startswith(".") for part in rel.parts)


def tree_digest(root: Path, recursive: bool = True, keep: Callable[[Path], bool] = _visible) -> str:
    """sha256 over (relative path, file digest) of every kept file under ``root``, in sorted order.

    Relative paths are content here (an imagefolder's class folders are its labels); the root's
    own location is not. Hidden files (``.DS_Store``, ``.cache``) are left out.
    """
    root = Path(root)
    files = root.rglob("*") if recursive else root.iterdir()
    entries = sorted((p.relative_to(root).as_posix(), p) for p in files if p.is_file())
    listing = [[rel, file_digest(p)] for rel, p in entries if keep(Path(rel))]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def _local(text: str) -> Path | None:
    path = Path(text).expanduser()
    return path if path.exists() else None


def genotype_input(genotype: str) -> dict:
    """``student.genotype``: a packaged name as is, a JSON file by its bytes."""
    if genotype in GENOTYPES:
        return {"name": genotype}
    path = _local(genotype)
    if path is None or not path.is_file():
        return {"missing": genotype}  # loading it fails later with the loader's own message
    return {"file_sha256": file_digest(path)}


def teacher_input(source: str) -> dict:
    """``teacher.source``: ``embedded`` or a hub id as is; a save_pretrained directory by its files.

    Only the directory's top level is read: that is where save_pretrained puts config, weights
    (sharded or not), processor and remote code; a Trainer's checkpoint-* sub-folders are not loaded.
    """
    path = _local(source) if source != "embedded" else None
    if path is None or not path.is_dir():
        return {"name": source}
    return {"dir_sha256": tree_digest(path, recursive=False)}


def data_input(cfg: DataConfig) -> dict:
    """The data section with its path fields replaced by content digests.

    ``cache_dir`` only says where converted copies live, so it leaves the hash; Fashion-MNIST's IDX
    files, an imagefolder tree and a save_to_disk directory are hashed; a hub id stays a name.
    """
    data = {k: v for k, v in to_dict(cfg).items() if k not in ("cache_dir", "fashion_mnist_dir")}
    if cfg.name == "fashion-mnist":
        idx_dir = Path(cfg.fashion_mnist_dir).expanduser()
        files = sorted(f for pair in FASHION_MNIST_FILES.values() for f in pair)
        data["name"] = {
            "fashion-mnist": {f: file_digest(idx_dir / f) if (idx_dir / f).is_file() else None for f in files}
        }
    for prefix in ("imagefolder:", "hf:"):
        path = _local(cfg.name[len(prefix) :]) if cfg.name.startswith(prefix) else None
        if path is not None and path.is_dir():
            data["name"] = {prefix.rstrip(":"): tree_digest(path)}
    return data


def input_fingerprints(cfg: RunConfig) -> dict:
    """What the stage hashes use in place of the data, teacher and student sections (paths -> contents)."""
    return {
        "data": data_input(cfg.data),
        "teacher": to_dict(cfg.teacher) | {"source": teacher_input(cfg.teacher.source)},
        "student": to_dict(cfg.student) | {"genotype": genotype_input(cfg.student.genotype)},
    }
