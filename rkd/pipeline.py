"""The run directory: stage order, config hashes, and skipping what is already done.

``runs/<name>/<stage>/stage.json`` is written last, when a stage finishes, with the hash of the
config sections that stage depends on (its own and its upstream stages'). A stage whose record
matches is skipped; an unfinished stage with the same hash resumes from its checkpoints; a stage
whose hash changed is moved aside to ``<stage>.stale-<old hash>`` (nothing is deleted) and rerun.

The "search" stage (KDL-DARTS, ``rkd.search``) runs only with ``search.enabled``; otherwise it is
passed over without a directory and stage 1 uses ``student.genotype``. When it runs, stage 1 uses
``search/genotype.json`` and stage 1's hash covers the search's.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import zlib
from pathlib import Path
from typing import Callable, Optional

from accelerate.utils import set_seed

from rkd.artifacts import IntegrityError, atomic_write_json, file_checksums, read_json, read_record, verify_checksums
from rkd.config import RunConfig, config_hash, save_config, to_dict
from rkd.fingerprint import input_fingerprints
from rkd.nas.genotype import GENOTYPES, describe_cells
from rkd.preflight import check_inputs

STAGES = ("teacher", "cache", "search", "stage1", "stage2", "eval")
# The cache checks its own shards against its manifest and is rebuilt when they do not match,
# so its stage record does not hash them a second time.
SELF_VERIFYING = ("cache",)


def _not_an_output(rel: Path) -> bool:
    """Files a finished stage's checksums leave out: records, checkpoints (they carry their own),
    renderings that ``rkd report`` rewrites, and the sweep that ``rkd search --sweep`` adds later."""
    return (rel.parts[0] in ("checkpoints", "sweep") or rel.name in ("stage.json", "started.json")
            or rel.suffix in (".png", ".md") or rel.name.startswith("."))
# settings of the sweep (``rkd search --sweep``) and the on/off switch do not change what one search finds
SEARCH_FIELDS_NOT_HASHED = ("enabled", "sweep_weights", "sweep_budget", "sweep_budget_metric", "sweep_train_epochs")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def stage_hashes(cfg: RunConfig) -> dict:
    """Each stage's hash covers its own settings and, through chaining, everything upstream.

    File inputs (dataset, teacher directory, genotype JSON) enter by content, not by path
    (``rkd.fingerprint``): an edited file reruns the stages after it, a moved one does not.
    """
    inputs = input_fingerprints(cfg)
    h = {}
    h["teacher"] = config_hash(cfg.seed, inputs["data"], inputs["teacher"])
    h["cache"] = config_hash(h["teacher"], cfg.teacher.cache_shard_size)
    search = {k: v for k, v in to_dict(cfg.search).items() if k not in SEARCH_FIELDS_NOT_HASHED}
    student_shape = {k: getattr(cfg.student, k) for k in ("init_channels", "layers", "stem_stride")}  # what is priced
    h["search"] = config_hash(h["cache"], search, student_shape)
    h["stage1"] = config_hash(h["cache"], inputs["student"], cfg.loss, cfg.stage1)
    if cfg.search.enabled:
        h["stage1"] = config_hash(h["stage1"], h["search"])
    h["stage2"] = config_hash(h["stage1"], cfg.codec, cfg.channel, cfg.stage2, cfg.stage2_loss)
    h["eval"] = config_hash(h["stage2"], cfg.eval)
    return h


class RunDirectory:
    """Bookkeeping for one run; all writes happen on the main process."""

    def __init__(self, cfg: RunConfig, is_main: bool = True, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.root = cfg.run_dir
        self.hashes = stage_hashes(cfg)
        self.is_main = is_main
        self.log = log
        if is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.root / "config.yaml")

    def path(self, stage: str) -> Path:
        return self.root / stage

    def _redo(self, stage: str) -> str:
        return (f"rkd will not use it. To redo the stage, move or delete {self.path(stage)} and rerun the same "
                f"command: the stages before it are kept.")

    def record(self, stage: str) -> Optional[dict]:
        path = self.path(stage) / "stage.json"
        return read_record(path, self._redo(stage)) if path.exists() else None

    def is_done(self, stage: str) -> bool:
        """True when the stage finished with this config and its outputs are the ones it wrote.

        Raises ``IntegrityError`` (naming the file) when a finished stage's output changed since.
        """
        record = self.record(stage)
        if record is None or record.get("hash") != self.hashes[stage]:
            return False
        if stage not in SELF_VERIFYING:
            if not isinstance(record.get("files"), dict):
                raise IntegrityError(f"{self.path(stage) / 'stage.json'} has no checksums of the stage's outputs "
                                     f"(written by an older rkd, or edited). {self._redo(stage)}")
            verify_checksums(self.path(stage), record["files"], str(self.path(stage) / "stage.json"), self._redo(stage))
        return True

    def begin(self, stage: str) -> Path:
        """Prepare the stage directory: keep a same-hash partial run (to resume), move a stale one aside."""
        path = self.path(stage)
        started = path / "started.json"
        if self.is_main and path.exists():
            try:
                previous = read_json(started).get("hash") if started.exists() else None
            except (OSError, ValueError, AttributeError):  # unreadable: treat the directory as stale
                previous = None
            if previous != self.hashes[stage]:
                stale = path.with_name(f"{stage}.stale-{previous or 'unknown'}-{int(time.time())}")
                shutil.move(str(path), str(stale))
                self.log(f"[rkd] {stage}: config or input files changed, previous output moved to {stale}")
        if self.is_main:
            path.mkdir(parents=True, exist_ok=True)
            if not started.exists():
                atomic_write_json(started, {"hash": self.hashes[stage], "time": time.time()})
        return path

    def finish(self, stage: str, summary: dict) -> None:
        """Write ``stage.json`` last, with the checksums of the stage's outputs."""
        if self.is_main:
            files = {} if stage in SELF_VERIFYING else file_checksums(self.path(stage), skip=_not_an_output)
            atomic_write_json(self.path(stage) / "stage.json", {
                "stage": stage, "hash": self.hashes[stage], "git_commit": git_commit(),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "summary": summary, "files": files,
            })

    def invalidate(self, stage: str) -> None:
        if self.is_main:
            (self.path(stage) / "stage.json").unlink(missing_ok=True)


class Pipeline:
    """Runs the stages in order into one run directory, skipping finished ones.

    Every process runs every stage (training is collective); only the main process writes records.
    """

    def __init__(self, cfg: RunConfig, accelerator) -> None:
        self.cfg = cfg
        self.accelerator = accelerator
        self.run_dir = RunDirectory(cfg, accelerator.is_main_process, log=accelerator.print)
        accelerator.wait_for_everyone()
        self._bundle = None
        self._cache = None
        self._checked = False
        self.summaries: dict = {}

    # -- shared inputs, loaded once -------------------------------------------------------------
    @property
    def bundle(self):
        if self._bundle is None:
            from rkd.data import load_data

            if self.accelerator.is_main_process:  # the first load may convert the dataset
                self._bundle = load_data(self.cfg.data)
            self.accelerator.wait_for_everyone()
            if self._bundle is None:
                self._bundle = load_data(self.cfg.data)
        return self._bundle

    def teacher(self):
        from rkd.teacher_io import load_trained_teacher

        return load_trained_teacher(self.run_dir.path("teacher") / "model", self.cfg.teacher.trust_remote_code)

    @property
    def cache(self):
        if self._cache is None:
            from rkd.cache import CacheError, load_cache

            try:
                self._cache = load_cache(self.run_dir.path("cache"), expected_teacher=self.teacher().identity,
                                         expected_fingerprint=self.bundle.fingerprint)
            except CacheError as exc:
                self.accelerator.print(f"[rkd] teacher cache is not usable ({exc}); rebuilding it")
                self.run_dir.invalidate("cache")
                self.accelerator.wait_for_everyone()
                self._run_stage("cache")
                self._cache = load_cache(self.run_dir.path("cache"), expected_teacher=self.teacher().identity,
                                         expected_fingerprint=self.bundle.fingerprint)
        return self._cache

    # -- stages ---------------------------------------------------------------------------------
    def _teacher(self, out: Path) -> dict:
        from rkd.teacher_training import train_teacher

        return train_teacher(self.cfg, self.bundle, out, self.accelerator)

    def _cache_stage(self, out: Path) -> dict:
        from rkd.cache import build_cache

        teacher = self.teacher()
        t = self.cfg.teacher
        manifest = build_cache(teacher, self.bundle, out, batch_size=t.cache_batch_size, shard_size=t.cache_shard_size,
                               accelerator=self.accelerator, flip_average=t.cache_flip_average)
        self._cache = None
        return {"splits": {k: v for k, v in manifest.get("splits", {}).items()}}

    def _search(self, out: Path) -> dict:
        from rkd.search import run_search

        summary = run_search(self.cfg, self.accelerator, self.bundle, self.cache, out)
        summary.pop("history", None)
        return summary

    def student_genotype(self):
        """The cells stage 1 trains: the searched ones when the search is on, else ``student.genotype``."""
        from rkd.nas.genotype import load_genotype

        if self.cfg.search.enabled:
            return load_genotype(self.run_dir.path("search") / "genotype.json")
        return load_genotype(self.cfg.student.genotype)

    def genotype_origin(self) -> dict:
        """Which cells the student uses (every op, by name) and how they were found, for the report."""
        origin = self._genotype_source()
        cells = describe_cells(self.student_genotype())
        return {**origin, "cells": cells, "how": f"{origin['how']}; cells: {cells}"}

    def _genotype_source(self) -> dict:
        def searched(meta: dict) -> str:
            sweep = (f", chosen by the sweep at val accuracy {100 * meta['sweep_val_accuracy']:.2f}%"
                     if "sweep_val_accuracy" in meta else "")
            return (f"searched by {meta.get('method', 'KDL-DARTS')} ({meta.get('order', '?')} order, complexity "
                    f"{meta.get('complexity', '?')} x {meta.get('complexity_weight', '?')}, derived cells "
                    f"{meta.get('params', 0):,} params / {meta.get('flops', 0):,} FLOPs, supernet val accuracy "
                    f"{100 * meta.get('supernet_val_accuracy', 0.0):.2f}%, {meta.get('seconds', 0.0):.0f} s{sweep})")

        if self.cfg.search.enabled:
            path = self.run_dir.path("search") / "genotype.json"
            meta = read_json(path).get("meta", {})
            return {"source": "search", "genotype": str(path), "how": searched(meta), "meta": meta}
        name = self.cfg.student.genotype
        if name in GENOTYPES:
            return {"source": "config", "genotype": name, "how": f"the packaged genotype {name!r} (rkd.nas.genotype), no search"}
        meta = read_json(Path(name).expanduser()).get("meta", {}) if Path(name).expanduser().is_file() else {}
        if "method" in meta:  # e.g. the sweep's chosen cells, passed as student.genotype
            return {"source": "file", "genotype": name, "how": searched(meta), "meta": meta}
        return {"source": "file", "genotype": name, "how": f"loaded from {name} (student.genotype), no search"}

    def _stage1(self, out: Path) -> dict:
        from rkd.distill import run_stage1

        return run_stage1(self.cfg, self.accelerator, self.bundle, self.cache, out, genotype=self.student_genotype())

    def _stage2(self, out: Path) -> dict:
        from rkd.distill import run_stage2

        return run_stage2(self.cfg, self.accelerator, self.bundle, self.cache, self.run_dir.path("stage1"), out)

    def _eval(self, out: Path) -> dict:
        from rkd.evaluate import evaluate_run

        return evaluate_run(self, out)

    def _run_stage(self, stage: str) -> dict:
        handler = {"teacher": self._teacher, "cache": self._cache_stage, "search": self._search,
                   "stage1": self._stage1, "stage2": self._stage2, "eval": self._eval}[stage]
        if stage == "search" and not self.cfg.search.enabled:
            self.accelerator.print(f"[rkd] search: off (search.enabled=false); stage 1 uses genotype "
                                   f"{self.cfg.student.genotype!r}")
            return {"enabled": False, "genotype": self.cfg.student.genotype}
        if self.run_dir.is_done(stage):
            self.accelerator.print(f"[rkd] {stage}: done for this config, skipping ({self.run_dir.path(stage)})")
            return self.run_dir.record(stage)["summary"]
        self.accelerator.print(f"[rkd] {stage}: running into {self.run_dir.path(stage)}")
        out = self.run_dir.begin(stage)
        self.accelerator.wait_for_everyone()
        # Seed per stage: a stage's initial weights and draws must not depend on which stages ran
        # before it in this process (a resumed pipeline skips them), or a rerun would diverge.
        set_seed(self.cfg.seed + zlib.crc32(stage.encode()) % 10_000)
        started = time.time()
        summary = handler(out)
        summary["seconds"] = time.time() - started
        # provenance: how the stage was launched (processes, DDP/DeepSpeed, precision)
        summary["world_size"] = self.accelerator.num_processes
        summary["distributed_type"] = str(self.accelerator.distributed_type.value)
        summary["mixed_precision"] = str(self.accelerator.mixed_precision)
        self.accelerator.wait_for_everyone()
        self.run_dir.finish(stage, summary)
        self.accelerator.wait_for_everyone()
        return summary

    def sweep(self, index: Optional[int] = None) -> Optional[dict]:
        """The Pareto sweep (all points, or point ``index``) into ``search/sweep``; None until every point is done.

        The sweep lives in the search stage's directory, so a change of search settings moves it aside too.
        """
        from rkd.search import run_sweep

        self.run(until="cache")
        self.run_dir.begin("search")
        self.accelerator.wait_for_everyone()
        return run_sweep(self.cfg, self.accelerator, self.bundle, self.cache, self.run_dir.path("search") / "sweep",
                         index)

    def run(self, until: str = "eval") -> dict:
        if until not in STAGES:
            raise ValueError(f"unknown stage {until!r}; stages are {STAGES}")
        stages = STAGES[: STAGES.index(until) + 1]
        if not self._checked:  # seconds of checks before minutes of training (rkd.preflight)
            record = self.run_dir.record("teacher")
            check_inputs(self.cfg, stages, teacher_done=bool(record) and record.get("hash") == self.run_dir.hashes["teacher"])
            self._checked = True
        for stage in stages:
            self.summaries[stage] = self._run_stage(stage)
        return self.summaries
