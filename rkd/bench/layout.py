"""Cells, their configs and where they live under ``runs/bench``.

A cell is (method, training seed, multiplier of the method's own learning rates). Its config is
the shipped config with the benchmark's settings (``base_config``), then the seed and RKD-SC's
chosen learning rates (``rkd_config``: the run every cell of that seed builds on), then the
method's own multiplier (``cell_config``, which keeps the RKD-SC run's directory).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from rkd.baselines.variants import derive_config
from rkd.bench.catalogue import RKD, method
from rkd.config import RunConfig, config_hash, to_dict
from rkd.run.hashing import teacher_seed

TEACHER = "teacher"  # the pseudo-method of the one cell that trains the shared teacher and its cache


@dataclass(frozen=True, order=True)
class Cell:
    method: str
    seed: int
    scale: float = 1.0  # multiplier of the method's own learning rates (the tuning grid); 1 for untuned methods

    @property
    def key(self) -> str:
        return self.method if self.method == TEACHER else f"{self.method}@seed{self.seed}@x{self.scale:g}"

    @property
    def dirname(self) -> str:
        return f"seed-{self.seed}-x{self.scale:g}"


def parse_cell(key: str) -> Cell:
    """``method@seed<s>@x<m>`` (what ``Cell.key`` writes) -> the cell; ``teacher`` -> the teacher cell."""
    if key == TEACHER:
        return Cell(TEACHER, 0)
    try:
        name, seed, scale = key.rsplit("@", 2)
        return Cell(name, int(seed.removeprefix("seed")), float(scale.removeprefix("x")))
    except ValueError:
        raise ValueError(f"cell {key!r} is invalid: expected method@seed<s>@x<multiplier>, e.g. vfe@seed0@x1") from None


def with_overrides(cfg: RunConfig, overrides: list) -> RunConfig:
    """``cfg`` with ``overrides`` applied, in the same run directory."""
    changed = derive_config(cfg, overrides, cfg.name, parent="unused")
    return dataclasses.replace(changed, runs_dir=cfg.runs_dir)


def field_value(cfg: RunConfig, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def scaled(cfg: RunConfig, fields: tuple, scale: float) -> list:
    """Overrides that multiply each of ``fields`` by ``scale``."""
    return [f"{f}={field_value(cfg, f) * scale!r}" for f in fields] if scale != 1 else []


def base_config(cfg: RunConfig) -> RunConfig:
    """The benchmark's settings on the shipped config: one teacher for every seed, budget-matched baselines,
    per-image results for the paired statistics; the methods come from the cells, not from the config."""
    return with_overrides(
        cfg,
        [
            f"teacher.seed={teacher_seed(cfg)}",
            "baselines.match_budget=true",
            "baselines.per_image=true",
            "baselines.methods=[]",
            "baselines.ablations=[]",
            "baselines.seeds=null",
        ],
    )


def rkd_config(base: RunConfig, seed: int, scale: float) -> RunConfig:
    """RKD-SC at training seed ``seed`` and learning-rate multiplier ``scale``: ``runs/bench/rkd/seed-<s>-x<m>``."""
    overrides = [f"seed={seed}", f"eval.seed={base.eval.seed + seed - base.seed}"]
    overrides += scaled(base, method(RKD).lr_fields, scale)
    return derive_config(base, overrides, Cell(RKD, seed, scale).dirname, parent="rkd")


def cell_config(rkd: RunConfig, cell: Cell) -> RunConfig:
    """The config a cell's method runs with: the RKD-SC run's, the method selected and its own rates scaled."""
    if cell.method == RKD:
        return rkd
    overrides = scaled(rkd, method(cell.method).lr_fields, cell.scale)
    if cell.method.startswith("ablation:"):
        overrides.append(f"baselines.ablations=[{cell.method.split(':', 1)[1]}]")
    else:
        overrides.append(f"baselines.methods=[{cell.method}]")
    return with_overrides(rkd, overrides)


# the baselines fields (by prefix) each method reads; the others never reach its results
BASELINE_FIELDS = {
    "deep-jscc": ("jscc_", "match_budget"),
    "adjscc": ("jscc_", "match_budget"),
    "deep-jscc-budget": ("jscc_",),
    "deep-jscc-kd": ("jscc_",),
    "vfe": ("jscc_channels", "jscc_hidden", "vfe_", "match_budget"),
    "conference": ("conference_", "match_budget"),
    "label-digital": ("digital_",),
    "feature-digital": ("digital_",),
    "no-teacher": ("control_lr_scale",),
    "no-teacher-converged": ("control_lr_scale", "convergence_"),
}
SWEEP_FIELDS = ("extra_snrs", "per_image", "compare_k")  # every method's sweep


NOT_IN_RESULTS = ("collective_timeout_minutes",)  # how long processes wait for each other, not what they compute


def where_kept(cfg: RunConfig, base: RunConfig) -> str:
    """``cfg.runs_dir`` as if the benchmark's runs lived in the default folder: where the runs are kept is not
    what they compute, so the same benchmark reached another way (an absolute path, a link) keeps its cells."""
    path, home = Path(cfg.runs_dir).expanduser(), Path(base.runs_dir).expanduser()
    try:
        return str(RunConfig.runs_dir / path.relative_to(home))
    except ValueError:  # not under the benchmark's folder: hashed as given
        return cfg.runs_dir


def cell_fingerprint(base: RunConfig, cfg: RunConfig, name: str, rkd_scale: float) -> str:
    """What a finished cell was made from: unchanged = done. The teacher cell: the data, the teacher and its
    seed; any other: its config ``cfg`` (of the ``baselines`` section, the fields its method reads; its folder
    relative to the benchmark's ``base``) and RKD-SC's multiplier."""
    values = {k: v for k, v in to_dict(cfg).items() if k not in NOT_IN_RESULTS}
    if name == TEACHER:
        return config_hash(teacher_seed(cfg), values["data"], values["teacher"])
    values["runs_dir"] = where_kept(cfg, base)
    keep = SWEEP_FIELDS + BASELINE_FIELDS.get(name, ())
    values["baselines"] = {k: v for k, v in values["baselines"].items() if k.startswith(keep)}
    return config_hash(values, float(rkd_scale))  # a grid of ints names the same cells as one of floats


def cell_dir(base: RunConfig, cell: Cell) -> Path:
    if cell.method == TEACHER:
        return base.run_dir
    return base.run_dir / "cells" / cell.method.replace(":", "-") / cell.dirname


def view_dir(base: RunConfig) -> Path:
    return base.run_dir / "view"


def logs_dir(base: RunConfig) -> Path:
    return base.run_dir / "logs"
