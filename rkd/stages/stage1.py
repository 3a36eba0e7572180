"""Stage 1 of robust KD: distil the cached teacher into the student (task + logit KD + feature KD).

The student is the DARTS-cell network of the searched (or configured) genotype with a projector
into the teacher's feature space; it trains through ``rkd.engine.fit`` on augmented images.
"""

from __future__ import annotations

from pathlib import Path

from rkd.config import RunConfig
from rkd.data import DataBundle, make_loader, student_transform, subset_loader
from rkd.engine import fit
from rkd.losses import build_kd_loss
from rkd.measure import count_params
from rkd.models.factory import create_stage1_model, save_model
from rkd.nas.genotype import genotype_to_dict, load_genotype
from rkd.run.artifacts import atomic_write_json
from rkd.stages.inputs import RunInputs
from rkd.stages.objective import DistillObjective


def run(cfg: RunConfig, accelerator, inputs: RunInputs, out_dir: Path) -> dict:
    return train_student(cfg, accelerator, inputs.bundle, inputs.cache, out_dir, genotype=inputs.student_genotype())


def train_student(
    cfg: RunConfig,
    accelerator,
    bundle: DataBundle,
    cache,
    out_dir: Path,
    genotype=None,
    rows: dict | None = None,
    desc: str = "stage1",
    until_epoch: int | None = None,
) -> dict:
    """Train ``genotype``'s student (default ``student.genotype``) into ``out_dir``; the sweep, the search's
    candidate selection and ablations call it too. ``rows``: ``{"train": indices, "val": indices}``
    to train and validate on those rows of the splits only; ``until_epoch``: stop after that many epochs
    (``fit``: a later call resumes)."""
    out_dir = Path(out_dir)
    teacher_dim = cache.features["train"].shape[1]
    genotype = genotype if genotype is not None else load_genotype(cfg.student.genotype)
    model = create_stage1_model(cfg, bundle, teacher_dim, genotype)
    objective = DistillObjective(
        student_transform(cfg.data, bundle), cache, build_kd_loss(cfg.loss, cfg.stage1.label_smoothing), seed=cfg.seed
    )
    train, val = bundle.splits["train"], bundle.splits["val"]
    if rows is None:
        train_loader = make_loader(train, cfg.stage1.batch_size, shuffle=True, seed=cfg.seed, drop_last=True)
        val_loader = make_loader(val, cfg.eval.batch_size, shuffle=False, seed=cfg.seed)
    else:
        train_loader = subset_loader(
            train,
            rows["train"],
            cfg.stage1.batch_size,
            shuffle=True,
            seed=cfg.seed,
            drop_last=len(rows["train"]) >= cfg.stage1.batch_size,
        )
        val_loader = subset_loader(val, rows["val"], cfg.eval.batch_size, shuffle=False, seed=cfg.seed)
    summary = fit(
        accelerator, model, objective, train_loader, val_loader, cfg.stage1, out_dir, desc=desc, until_epoch=until_epoch
    )
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), out_dir / "model.safetensors")
        atomic_write_json(out_dir / "student.json", {"genotype": genotype_to_dict(genotype)})
    summary["student_params"] = count_params(model.student)
    return summary
