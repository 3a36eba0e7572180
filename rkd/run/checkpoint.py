"""Resumable training state for ``rkd.engine.fit``: Accelerate's checkpoint plus what Accelerate does not hold.

Each checkpoint is a ``checkpoints/step-NNNNNNNN`` directory; ``latest.json`` (written last, by the
main process) names it and carries every file's checksum, so a half-written or altered checkpoint is
refused before anything in it is deserialised.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from rkd.run.artifacts import (
    IntegrityError,
    atomic_write,
    atomic_write_json,
    file_checksums,
    read_record,
    verify_checksums,
)
from rkd.run.collective import agree_on_error, on_main
from rkd.run.diskspace import DiskFullError, as_disk_full


class Checkpointer:
    """Resumable Accelerate state under ``out_dir/checkpoints``; ``latest.json`` is written last.

    ``objects`` (with ``state_dict``/``load_state_dict``) are saved by the main process beside
    Accelerate's files and restored on every process. They are kept here rather than registered with
    ``accelerator.register_for_checkpointing``, which cannot be undone and would make every later
    stage's checkpoints save and expect them.
    """

    def __init__(
        self, accelerator: Accelerator, out_dir: Path, keep: int = 1, objective=None, objects: Sequence = ()
    ) -> None:
        self.accelerator = accelerator
        self.root = out_dir / "checkpoints"
        self.keep = keep
        # An objective's own generator (augmentation, channel draws) is part of the training state:
        # without it a resumed run would draw different noise than an uninterrupted one.
        self.generator = getattr(objective, "generator", None)
        for index, obj in enumerate(objects):
            if not (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))):
                raise TypeError(
                    f"checkpoint_objects[{index}] = {type(obj).__name__} cannot be checkpointed: "
                    f"expected an object with state_dict() and load_state_dict(state) methods"
                )
        self.objects = list(objects)

    def _generator_file(self, directory: Path) -> Path:
        return directory / f"objective-rng-rank{self.accelerator.process_index}.safetensors"

    @staticmethod
    def _object_file(directory: Path, index: int) -> Path:
        # not ``custom_checkpoint_*.pkl``: Accelerate's load_state counts those against its own registry
        return directory / f"checkpoint-object-{index}.pt"

    def _fix(self) -> str:
        return (
            f"rkd will not load it. To restart this stage from its beginning, delete {self.root} "
            f"(the stage's other files and the stages before it are kept) and rerun the same command."
        )

    def latest(self) -> dict | None:
        pointer = self.root / "latest.json"
        if not pointer.exists():
            return None
        record = read_record(pointer, self._fix())
        if not isinstance(record, dict) or not isinstance(record.get("dir"), str) or "files" not in record:
            raise IntegrityError(f"{pointer} is not a checkpoint record written by this version of rkd. {self._fix()}")
        if not (self.root / record["dir"]).is_dir():
            return None
        return record

    def _write(self, target: Path) -> None:
        """This rank's files of a checkpoint in the new directory ``target``."""
        self.accelerator.save_state(str(target))
        if isinstance(self.generator, torch.Generator):
            state = {"state": self.generator.get_state()}
            atomic_write(self._generator_file(target), lambda p: save_file(state, str(p)))
        if self.accelerator.is_main_process:
            for index, obj in enumerate(self.objects):
                object_state = obj.state_dict()
                atomic_write(self._object_file(target, index), lambda p: torch.save(object_state, p))  # noqa: B023 - called at once, inside the loop

    def _point_to(self, name: str, progress: dict) -> None:
        """Main process: hash every rank's files, write the pointer (last), drop older checkpoints."""
        target = self.root / name
        files = file_checksums(target)
        atomic_write_json(self.root / "latest.json", {"dir": name, **progress, "files": files})
        old = sorted(p for p in self.root.glob("step-*") if p.is_dir() and p.name != name)
        for stale in old[: max(0, len(old) - (self.keep - 1))]:
            shutil.rmtree(stale, ignore_errors=True)

    def save(self, progress: dict) -> None:
        """A new checkpoint directory, then the pointer to it. Collective: a failure on any rank (a full disk)
        raises on every rank, the partial directory is removed, and the previous checkpoint stays current."""
        name = f"step-{progress['global_step']:08d}"
        target = self.root / name
        kept = f"the previous checkpoint in {self.root} is kept"
        error = None
        try:
            self._write(target)
        except Exception as exc:  # every rank must learn of it (below), or the others wait forever
            error = as_disk_full(exc, target, kept)
        try:
            agree_on_error(self.accelerator, error, DiskFullError)
            on_main(self.accelerator, lambda: self._point_to(name, progress), DiskFullError)
        except Exception:
            if self.accelerator.is_main_process and self.latest_dir() != name:
                shutil.rmtree(target, ignore_errors=True)
            raise

    def latest_dir(self) -> str | None:
        pointer = self.root / "latest.json"
        try:
            return read_record(pointer, self._fix()).get("dir") if pointer.exists() else None
        except IntegrityError:
            return None

    def load(self, record: dict) -> None:
        """Verify every file of the checkpoint against ``latest.json`` before anything is deserialised."""
        directory = self.root / record["dir"]
        verify_checksums(directory, record["files"], f"{self.root / 'latest.json'}", self._fix())
        self.accelerator.load_state(str(directory))
        if isinstance(self.generator, torch.Generator) and self._generator_file(directory).exists():
            self.generator.set_state(load_file(str(self._generator_file(directory)))["state"])
        for index, obj in enumerate(self.objects):
            path = self._object_file(directory, index)
            if not path.is_file():
                raise IntegrityError(
                    f"{directory} holds no {path.name}: it was not written with this stage's "
                    f"{len(self.objects)} checkpointed object(s). {self._fix()}"
                )
            obj.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
