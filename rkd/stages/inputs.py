"""What the stages of one run read: the data, the trained teacher, its cache and the student's cells.

Every stage function takes the same four arguments, ``(cfg, accelerator, inputs, out_dir)``; this
object is the third. It loads each input once, when a stage first asks for it, from the run
directory the earlier stages wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rkd.config import RunConfig
from rkd.data import DataBundle, load_data
from rkd.nas.genotype import GENOTYPES, describe_cells, load_genotype
from rkd.run.artifacts import read_json
from rkd.teacher.cache import CacheError, TeacherCache, load_cache
from rkd.teacher.io import load_trained_teacher


class RunInputs:
    """Lazily loaded inputs of the run in ``root``, whose stage hashes are ``hashes``.

    ``rebuild_cache`` is called with the error when the cache on disk cannot be used (the pipeline
    reruns the cache stage); the cache is then read again.
    """

    def __init__(
        self,
        cfg: RunConfig,
        accelerator,
        root: Path,
        hashes: dict,
        rebuild_cache: Callable[[Exception], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.accelerator = accelerator
        self.root = Path(root)
        self.hashes = hashes
        self.rebuild_cache = rebuild_cache
        self._bundle: DataBundle | None = None
        self._cache: TeacherCache | None = None

    def path(self, stage: str) -> Path:
        return self.root / stage

    @property
    def bundle(self) -> DataBundle:
        if self._bundle is None:
            if self.accelerator.is_main_process:  # the first load may convert the dataset
                self._bundle = load_data(self.cfg.data)
            self.accelerator.wait_for_everyone()
            if self._bundle is None:
                self._bundle = load_data(self.cfg.data)
        return self._bundle

    def teacher(self):
        return load_trained_teacher(self.path("teacher") / "model", self.cfg.teacher.trust_remote_code)

    @property
    def cache(self) -> TeacherCache:
        if self._cache is None:
            try:
                self._cache = self._load_cache()
            except CacheError as exc:
                if self.rebuild_cache is None:
                    raise
                self.rebuild_cache(exc)
                self._cache = self._load_cache()
        return self._cache

    def _load_cache(self):
        return load_cache(
            self.path("cache"), expected_teacher=self.teacher().identity, expected_fingerprint=self.bundle.fingerprint
        )

    def forget_cache(self) -> None:
        """Read the cache from disk again next time (it was just rebuilt)."""
        self._cache = None

    def student_genotype(self):
        """The cells stage 1 trains: the searched ones when the search is on, else ``student.genotype``."""
        if self.cfg.search.enabled:
            return load_genotype(self.path("search") / "genotype.json")
        return load_genotype(self.cfg.student.genotype)

    def genotype_origin(self) -> dict:
        """Which cells the student uses (every op, by name) and how they were found, for the report."""
        origin = self._genotype_source()
        cells = describe_cells(self.student_genotype())
        return {**origin, "cells": cells, "how": f"{origin['how']}; cells: {cells}"}

    def _genotype_source(self) -> dict:
        if self.cfg.search.enabled:
            path = self.path("search") / "genotype.json"
            meta = read_json(path).get("meta", {})
            return {"source": "search", "genotype": str(path), "how": describe_search(meta), "meta": meta}
        name = self.cfg.student.genotype
        if name in GENOTYPES:
            return {
                "source": "config",
                "genotype": name,
                "how": f"the packaged genotype {name!r} (rkd.nas.genotype), no search",
            }
        meta = read_json(Path(name).expanduser()).get("meta", {}) if Path(name).expanduser().is_file() else {}
        if "method" in meta:  # e.g. the sweep's chosen cells, passed as student.genotype
            return {"source": "file", "genotype": name, "how": describe_search(meta), "meta": meta}
        return {"source": "file", "genotype": name, "how": f"loaded from {name} (student.genotype), no search"}


def describe_search(meta: dict) -> str:
    """One sentence on how searched cells were found, from their genotype file's ``meta``."""
    sweep = (
        f", chosen by the sweep at val accuracy {100 * meta['sweep_val_accuracy']:.2f}%"
        if "sweep_val_accuracy" in meta
        else ""
    )
    selection = meta.get("selection")
    if selection:
        derived = selection["derived_val_accuracy"]
        versus = (
            f"vs {100 * derived:.2f}% for the derived cells"
            if derived is not None
            else "the derived cells did not pass the screening"
        )
        screening = (
            f"; {selection['survivors']} passed a {selection['screen_epochs']}-epoch screening"
            if selection.get("screened")
            else ""
        )
        sweep = (
            f", then candidate {selection['chosen']} of {selection['candidates']} "
            f"({selection['chosen_source']}), the best after {selection['epochs']} epochs of brief training "
            f"(val {100 * selection['chosen_val_accuracy']:.2f}%, {versus}{screening})"
        ) + sweep
    return (
        f"searched by {meta.get('method', 'KDL-DARTS')} ({meta.get('order', '?')} order, complexity "
        f"{meta.get('complexity', '?')} x {meta.get('complexity_weight', '?')}, cells "
        f"{meta.get('params', 0):,} params / {meta.get('flops', 0):,} FLOPs, supernet val accuracy "
        f"{100 * meta.get('supernet_val_accuracy', 0.0):.2f}%, {meta.get('seconds', 0.0):.0f} s{sweep})"
    )
