"""Stage hashes: what each stage's output depends on, so a finished stage is reused only when nothing it read changed.

Each hash covers the stage's own settings and, through chaining, everything upstream. File inputs
(dataset, teacher directory, genotype JSON) enter by content, not by path (``rkd.run.fingerprint``):
an edited file reruns the stages after it, a moved one does not.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from rkd.config import RunConfig, config_hash, to_dict
from rkd.run.fingerprint import input_fingerprints

# The student's settings that fix its size: what the search's complexity penalty prices, so the search's hash.
STUDENT_SIZE_FIELDS = ("init_channels", "layers", "stem_stride")

STAGES = ("teacher", "cache", "search", "stage1", "stage2", "eval")  # in run order; each has a hash

# settings of the sweep (``rkd search --sweep``) and the on/off switch do not change what one search finds
SEARCH_FIELDS_NOT_HASHED = ("enabled", "sweep_weights", "sweep_budget", "sweep_budget_metric", "sweep_train_epochs")


def teacher_seed(cfg: RunConfig) -> int:
    """The teacher's training seed: ``teacher.seed``, or the run's seed when that is null."""
    return cfg.seed if cfg.teacher.seed is None else cfg.teacher.seed


def stage_hashes(cfg: RunConfig) -> dict:
    """``{stage: hash}`` for teacher, cache, search, stage1, stage2 and eval."""
    inputs = input_fingerprints(cfg)
    teacher = {k: v for k, v in inputs["teacher"].items() if k != "seed"}  # the seed enters as teacher_seed
    h = {}
    h["teacher"] = config_hash(teacher_seed(cfg), inputs["data"], teacher)
    h["cache"] = config_hash(h["teacher"], cfg.teacher.cache_shard_size)
    # what the student's stages build on: the cache, and the run's seed when the teacher has its own
    student_base = h["cache"] if cfg.teacher.seed is None else config_hash(h["cache"], cfg.seed)
    search = {k: v for k, v in to_dict(cfg.search).items() if k not in SEARCH_FIELDS_NOT_HASHED}
    student_shape = {k: getattr(cfg.student, k) for k in STUDENT_SIZE_FIELDS}  # what is priced
    h["search"] = config_hash(student_base, search, student_shape)
    if cfg.search.candidates > 1:  # the candidates train with stage 1's loss and optimiser
        h["search"] = config_hash(h["search"], cfg.loss, cfg.stage1)
    h["stage1"] = config_hash(student_base, inputs["student"], cfg.loss, cfg.stage1)
    if cfg.search.enabled:
        h["stage1"] = config_hash(h["stage1"], h["search"])
    h["stage2"] = config_hash(h["stage1"], cfg.codec, cfg.channel, cfg.stage2, cfg.stage2_loss)
    h["eval"] = config_hash(h["stage2"], cfg.eval)
    return h


def git_commit() -> str:
    """The checkout's commit, recorded with every finished stage ("unknown" outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
