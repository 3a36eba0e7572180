"""The run directory: stage order, skipping what is already done, resuming what is not.

``runs/<name>/<stage>/stage.json`` is written last, when a stage finishes, with the stage's hash
(``rkd.run.hashing``: the config sections and input files it depends on, chained through its upstream
stages). A stage whose record matches is skipped; an unfinished stage with the same hash resumes
from its checkpoints; a stage whose hash changed is moved aside to ``<stage>.stale-<old hash>``
(nothing is deleted) and rerun. The stages themselves are ``rkd.stages``.

The "search" stage (KDL-DARTS) runs only with ``search.enabled``; otherwise it is passed over
without a directory and stage 1 uses ``student.genotype``. When it runs, stage 1 uses
``search/genotype.json`` and stage 1's hash covers the search's.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from pathlib import Path

from accelerate.utils import set_seed

from rkd.config import RunConfig, save_config
from rkd.hardware.decide import accelerator_precision, device_type_of, teacher_precision
from rkd.hardware.efficiency import against_peak
from rkd.hardware.precision import Precision, warn_once
from rkd.hardware.probe import cached as cached_probe
from rkd.hardware.probe import peak_gflops, probe
from rkd.hardware.threads import threads_line
from rkd.run.artifacts import IntegrityError, atomic_write_json, file_checksums, read_record, verify_checksums
from rkd.run.collective import on_main
from rkd.run.diskspace import DiskFullError
from rkd.run.estimate import stage_clock, timing_record
from rkd.run.hashing import STAGES, git_commit, stage_hashes, teacher_seed
from rkd.run.plan import Planner
from rkd.run.preflight import check_inputs
from rkd.run.rundir import ResumableDir
from rkd.stages import cache, evaluate, search, stage1, stage2, sweep, teacher
from rkd.stages.inputs import RunInputs

STAGE_FUNCTIONS = {
    "teacher": teacher.run,
    "cache": cache.run,
    "search": search.run,
    "stage1": stage1.run,
    "stage2": stage2.run,
    "eval": evaluate.run,
}
# The cache checks its own shards against its manifest and is rebuilt when they do not match,
# so its stage record does not hash them a second time.
SELF_VERIFYING = ("cache",)


def _not_an_output(rel: Path) -> bool:
    """Files a finished stage's checksums leave out: records, checkpoints (they carry their own),
    renderings that ``rkd report`` rewrites, and the sweep that ``rkd search --sweep`` adds later."""
    return (
        rel.parts[0] in ("checkpoints", "sweep")
        or rel.name in ("stage.json", "started.json")
        or rel.suffix in (".png", ".md")
        or rel.name.startswith(".")
    )


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
        return (
            f"rkd will not use it. To redo the stage, move or delete {self.path(stage)} and rerun the same "
            f"command: the stages before it are kept."
        )

    def record(self, stage: str) -> dict | None:
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
                raise IntegrityError(
                    f"{self.path(stage) / 'stage.json'} has no checksums of the stage's outputs "
                    f"(written by an older rkd, or edited). {self._redo(stage)}"
                )
            verify_checksums(self.path(stage), record["files"], str(self.path(stage) / "stage.json"), self._redo(stage))
        return True

    def begin(self, stage: str) -> Path:
        """Prepare the stage directory: keep a same-hash partial run (to resume), move a stale one aside."""
        if self.is_main:
            ResumableDir(self.path(stage), self.hashes[stage]).begin(
                log=lambda stale: self.log(
                    f"[rkd] {stage}: config or input files changed, previous output moved to {stale}"
                )
            )
        return self.path(stage)

    def finish(self, stage: str, summary: dict) -> None:
        """Write ``stage.json`` last, with the checksums of the stage's outputs."""
        if self.is_main:
            files = {} if stage in SELF_VERIFYING else file_checksums(self.path(stage), skip=_not_an_output)
            atomic_write_json(
                self.path(stage) / "stage.json",
                {
                    "stage": stage,
                    "hash": self.hashes[stage],
                    "git_commit": git_commit(),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "summary": summary,
                    "files": files,
                },
            )

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
        self.inputs = RunInputs(
            cfg, accelerator, self.run_dir.root, self.run_dir.hashes, rebuild_cache=self._rebuild_cache
        )
        self._checked = False
        self.summaries: dict = {}
        self.planner = Planner(cfg, accelerator, lambda: self.inputs.bundle, self._precisions)

    def _precisions(self) -> dict:
        return {"teacher": self.precision("teacher").name, "student": self.precision("stage1").name}

    def _rebuild_cache(self, error: Exception) -> None:
        self.accelerator.print(f"[rkd] teacher cache is not usable ({error}); rebuilding it")
        self.run_dir.invalidate("cache")
        self.accelerator.wait_for_everyone()
        self._run_stage("cache")

    def _run_stage(self, stage: str) -> dict:
        if stage == "search" and not self.cfg.search.enabled:
            self.accelerator.print(
                f"[rkd] search: off (search.enabled=false); stage 1 uses genotype {self.cfg.student.genotype!r}"
            )
            return {"enabled": False, "genotype": self.cfg.student.genotype}
        if self.run_dir.is_done(stage):
            self.accelerator.print(f"[rkd] {stage}: done for this config, skipping ({self.run_dir.path(stage)})")
            return (self.run_dir.record(stage) or {})["summary"]
        precision = self.precision(stage)
        warn_once(precision, self.accelerator.print)
        self.accelerator.print(f"[rkd] {stage}: running into {self.run_dir.path(stage)}; {precision}; {threads_line()}")
        self.accelerator.wait_for_everyone()  # every process has read the stage's record before it is moved aside
        out = self.run_dir.begin(stage)
        self.accelerator.wait_for_everyone()
        if self.planner.enabled or self.accelerator.num_processes > 1:
            self.inputs.bundle  # noqa: B018 - loaded by every process together, before the main one plans alone
        plan = self.planner.stage(stage)
        # Seed per stage: a stage's initial weights and draws must not depend on which stages ran
        # before it in this process (a resumed pipeline skips them), or a rerun would diverge.
        seed = teacher_seed(self.cfg) if stage in ("teacher", "cache") else self.cfg.seed  # a shared teacher: its own
        set_seed(seed + zlib.crc32(stage.encode()) % 10_000)
        started = time.time()
        with stage_clock(plan, self.accelerator.print) as clock:
            summary = STAGE_FUNCTIONS[stage](self.cfg, self.accelerator, self.inputs, out)
        summary["seconds"] = time.time() - started
        summary.update(timing_record(plan, clock))
        if summary.get("throughput"):
            summary["throughput"] = against_peak(summary["throughput"], self._peak(precision.name))
        # provenance: how the stage was launched (processes, DDP/DeepSpeed, precision)
        summary["world_size"] = self.accelerator.num_processes
        summary["distributed_type"] = str(self.accelerator.distributed_type.value)
        summary["mixed_precision"] = str(self.accelerator.mixed_precision)
        summary.update(precision.record())
        self.accelerator.wait_for_everyone()
        on_main(self.accelerator, lambda: self.run_dir.finish(stage, summary), DiskFullError)
        return summary

    def _peak(self, precision: str) -> float | None:
        """The probe's peak GFLOP/s in ``precision`` on this machine (the main process measures it once)."""
        device = device_type_of(self.accelerator)
        measured = probe(device) if self.accelerator.is_main_process else cached_probe(device)
        return peak_gflops(measured, precision) if measured else None

    def precision(self, stage: str) -> Precision:
        """The format ``stage`` computes in and why: the teacher's own, else the Accelerator's (student side)."""
        if stage == "teacher":
            return teacher_precision(self.cfg.teacher.train_precision, device_type_of(self.accelerator))
        return accelerator_precision(self.accelerator, self.cfg.mixed_precision)

    def _will_run(self, stage: str) -> bool:
        if stage == "search" and not self.cfg.search.enabled:
            return False
        record = self.run_dir.record(stage)
        return not (record and record.get("hash") == self.run_dir.hashes[stage])

    def sweep(self, index: int | None = None) -> dict | None:
        """The Pareto sweep (all points, or point ``index``) into ``search/sweep``; None until every point is done.

        The sweep lives in the search stage's directory, so a change of search settings moves it aside too.
        """
        self.run(until="cache")
        self.run_dir.begin("search")
        self.accelerator.wait_for_everyone()
        return sweep.run_sweep(
            self.cfg,
            self.accelerator,
            self.inputs.bundle,
            self.inputs.cache,
            self.run_dir.path("search") / "sweep",
            index,
        )

    def run(self, until: str = "eval") -> dict:
        if until not in STAGES:
            raise ValueError(f"unknown stage {until!r}; stages are {STAGES}")
        stages = STAGES[: STAGES.index(until) + 1]
        if not self._checked:  # seconds of checks before minutes of training (rkd.run.preflight)
            for stage in stages:  # a precision the device or the launcher cannot run stops here, not mid-run
                self.precision(stage)
            record = self.run_dir.record("teacher") or {}
            with self.accelerator.local_main_process_first():  # a hub teacher's config: one download per node
                check_inputs(self.cfg, stages, teacher_done=record.get("hash") == self.run_dir.hashes["teacher"])
            self._checked = True
            remaining = [s for s in stages if self._will_run(s)]
            if len(remaining) > 1:
                self.inputs.bundle  # noqa: B018 - every process loads it together before the main one plans alone
                self.planner.announce(remaining)
        for stage in stages:
            self.summaries[stage] = self._run_stage(stage)
        return self.summaries


def stage_runner(accelerator) -> Callable[[RunConfig, str], RunInputs]:
    """``run_stages(cfg, until)``: ``cfg``'s pipeline run up to stage ``until``, handing back its inputs.

    How ``rkd.baselines`` runs the main run and its variants (ablations, the conference student,
    other seeds) without importing this module.
    """

    def run_stages(cfg: RunConfig, until: str) -> RunInputs:
        pipeline = Pipeline(cfg, accelerator)
        pipeline.run(until=until)
        return pipeline.inputs

    return run_stages
