"""Ablations and the conference student as config variants of the main pipeline, sharing its upstream stages.

Each ablation is a list of ``section.field=value`` overrides on the run's config: the variant runs
the ordinary pipeline (same code, same engine) in ``runs/<name>/ablations/<variant>/``. Stages whose
config hash equals the main run's (the teacher and its cache always; stage 1 unless the variant
changes the stage-1 loss) are linked to the main run's finished output, not retrained.

* ``no-kd``: task loss only in both stages, on the main run's searched cells (their search used the
  teacher; stage 1 and stage 2 do not): KD's gain at the same schedule.
* ``no-robust-kd``: stage 1 as usual; stage 2 with task loss only (KD weights 0; the default
  config already trains stage 2 so, because its KD terms measurably cost accuracy there).
* ``robust-kd``: stage 2 with the paper's KD terms on (every registered term that reads the cached
  teacher: logit KD and feature KD through the projector, weight 1 each), the counterpart when the
  main run has them off.
* ``stage2-logit-kd`` / ``stage2-feature-kd``: stage 2 with one of the two KD terms (weight 1), the other off.
* ``no-channel-training``: stage 2 over an effectively noiseless channel (AWGN at 40-41 dB) with
  the state input off: the codec learns to compress, never to resist noise; stands for
  "RKD-SC without the robust (channel-aware) stage 2".
* ``no-state``: the CAT's channel-state input zeroed in training and test.
* ``fixed-length``: stage 2 trained only at ``k = L`` (codec.max_symbols), evaluated at every k.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from rkd.baselines.context import RunStages
from rkd.config import LossConfig, RunConfig, load_config, save_config, to_dict
from rkd.losses import LOSS_TERMS, teacher_terms
from rkd.run.hashing import STAGES, stage_hashes


def kd_weights(section: str, loss: LossConfig, on: Callable[[str], bool]) -> list:
    """Overrides that switch each KD term of the ``section`` loss (the registered terms that read the
    teacher) on (weight 1) where ``on(name)``, off (weight 0) elsewhere."""
    return [f"{section}.{name}={int(on(name))}" for name in teacher_terms(loss)]


def searched_cells(cfg: RunConfig) -> list:
    """Overrides that train the main run's searched cells without searching again (nothing when the search is off)."""
    if not cfg.search.enabled:
        return []
    return ["search.enabled=false", f"student.genotype={cfg.run_dir.resolve() / 'search' / 'genotype.json'}"]


def no_teacher(cfg: RunConfig) -> list:
    """Overrides that turn every KD term off in both stages: the student never learns from the teacher."""
    return kd_weights("loss", cfg.loss, lambda name: False) + kd_weights(
        "stage2_loss", cfg.stage2_loss, lambda name: False
    )


# the ablation registry: name -> the config changes that make it (see the module docstring); its keys are
# rkd.baselines.names.ABLATIONS, so adding an ablation is one entry here and its name there
ABLATIONS: dict[str, Callable[[RunConfig], list]] = {
    "no-kd": lambda cfg: searched_cells(cfg) + no_teacher(cfg),
    "no-robust-kd": lambda cfg: kd_weights("stage2_loss", cfg.stage2_loss, lambda name: False),
    "robust-kd": lambda cfg: kd_weights("stage2_loss", cfg.stage2_loss, lambda name: True),
    "stage2-logit-kd": lambda cfg: kd_weights("stage2_loss", cfg.stage2_loss, lambda name: name == "logit_kd"),
    "stage2-feature-kd": lambda cfg: kd_weights("stage2_loss", cfg.stage2_loss, lambda name: name == "feature_kd"),
    "no-channel-training": lambda cfg: [
        "channel.channels=[awgn]",
        "channel.snr_min=40",
        "channel.snr_max=41",
        "codec.use_state=false",
    ],
    "no-state": lambda cfg: ["codec.use_state=false"],
    "fixed-length": lambda cfg: [f"codec.train_rates=[{cfg.codec.max_symbols}]"],
}


def ablation_overrides(name: str, cfg: RunConfig) -> list:
    """The config changes that make ablation ``name`` (see the module docstring)."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; known: {sorted(ABLATIONS)}")
    return list(ABLATIONS[name](cfg))


def conference_stage1(cfg: RunConfig) -> dict:
    """The conference student's schedule; under ``baselines.match_budget`` as many epochs as RKD-SC's stage 1."""
    schedule = to_dict(cfg.baselines.conference_stage1)
    if cfg.baselines.match_budget:
        schedule["epochs"] = cfg.stage1.epochs
    return schedule


def conference_student_overrides(cfg: RunConfig) -> list:
    """Stage 1 of the conference design: feature MSE to the teacher only, with its own schedule, on the
    main run's student cells (the searched ones when the search is on: the comparison is of recipes)."""
    only_feature_kd = [f"loss.{name}={int(name == 'feature_kd')}" for name in LOSS_TERMS]
    return searched_cells(cfg) + [
        *only_feature_kd,
        "loss.feature_loss=mse",
        f"stage1={json.dumps(conference_stage1(cfg))}",
    ]


def derive_config(cfg: RunConfig, overrides: list, name: str, parent: str = "ablations") -> RunConfig:
    """``cfg`` with ``overrides`` applied, living in ``<cfg.run_dir>/<parent>/<name>``."""
    fd, tmp = tempfile.mkstemp(suffix=".yaml")
    os.close(fd)
    # a YAML file may not switch remote code on (rkd.config); carry the user's command-line choice as an override
    trusted = ["teacher.trust_remote_code=true"] if cfg.teacher.trust_remote_code else []
    try:
        save_config(dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher, trust_remote_code=False)), tmp)
        return load_config([tmp], [*overrides, *trusted, f"runs_dir={cfg.run_dir / parent}", f"name={name}"])
    finally:
        os.unlink(tmp)


def link_shared_stages(base: RunConfig, variant: RunConfig, upto: str = "stage2") -> list:
    """Symlink each finished main-run stage the variant would recompute identically; returns their names."""
    base_hashes, variant_hashes = stage_hashes(base), stage_hashes(variant)
    linked = []
    variant.run_dir.mkdir(parents=True, exist_ok=True)
    for stage in STAGES[: STAGES.index(upto) + 1]:
        if stage == "search" and not (base.search.enabled or variant.search.enabled):
            continue  # off in both: a stage without a directory
        if base_hashes.get(stage) != variant_hashes.get(stage):
            break  # every later stage depends on this one
        source = (base.run_dir / stage).resolve()
        record = source / "stage.json"
        if not record.exists() or json.loads(record.read_text()).get("hash") != base_hashes[stage]:
            break
        target = variant.run_dir / stage
        if target.is_symlink() or not target.exists():
            if target.is_symlink():
                target.unlink()
            target.symlink_to(source, target_is_directory=True)
        linked.append(stage)
    return linked


def run_variant(base: RunConfig, variant: RunConfig, accelerator, run_stages: RunStages, until: str = "stage2"):
    """Run the variant's stages up to ``until`` (``run_stages``) with shared stages linked; returns its inputs."""
    if accelerator.is_main_process:
        linked = link_shared_stages(base, variant, until)
        accelerator.print(f"[rkd] variant {variant.name}: shares {linked or 'nothing'} with {base.run_dir}")
    accelerator.wait_for_everyone()
    return run_stages(variant, until)


def variant_dir(cfg: RunConfig, name: str) -> Path:
    return cfg.run_dir / "ablations" / name


def seed_config(cfg: RunConfig, seed: int) -> RunConfig:
    """Training seed ``seed`` of every method, in ``<cfg.run_dir>/seeds/seed-<seed>``.

    A full replicate: the seed sets initialisations, data order and training channel draws of every
    stage (the teacher included: its stage hash has the seed), and the sweep's test channel draws
    are reseeded (``eval.seed`` shifted by the same amount). Ablations stay on the main seed.
    """
    return derive_config(
        cfg,
        [
            f"seed={seed}",
            f"eval.seed={cfg.eval.seed + seed - cfg.seed}",
            "baselines.ablations=[]",
            "baselines.seeds=null",
        ],
        f"seed-{seed}",
        parent="seeds",
    )
