"""Build and load the trained models of a run, by stage: one place that knows how a config becomes a model.

Stage 1's model is the DARTS-cell student with its feature projector (``DistilledStudent``); stage
2's adds the CAT codec and its decoder (``RKDSystem``). Loading rebuilds the model from the config
and the genotype recorded beside the weights, then reads the safetensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rkd.config import RunConfig
from rkd.data import DataBundle
from rkd.draws import training_channel_specs
from rkd.models.system import DistilledStudent, RKDSystem
from rkd.nas.complexity import NetworkShape
from rkd.nas.genotype import genotype_from_dict, load_genotype
from rkd.run.artifacts import atomic_write, read_json
from rkd.run.hashing import STUDENT_SIZE_FIELDS


def create_stage1_model(
    cfg: RunConfig, bundle: DataBundle, teacher_feature_dim: int, genotype=None
) -> DistilledStudent:
    """The student (``genotype``, or ``student.genotype``) with a projector into the teacher's feature space."""
    genotype = genotype if genotype is not None else load_genotype(cfg.student.genotype)
    student = student_shape(cfg, bundle).build(genotype, drop_path=cfg.student.drop_path)
    return DistilledStudent(student, teacher_feature_dim)


def student_shape(cfg: RunConfig, bundle: DataBundle) -> NetworkShape:
    """The shape ``student`` gives the derived cells: what the search's complexity penalty prices."""
    sizes = {name: getattr(cfg.student, name) for name in STUDENT_SIZE_FIELDS}
    return NetworkShape(bundle.channels, bundle.num_classes, cfg.data.image_size, **sizes)


def create_stage2_model(cfg: RunConfig, stage1: DistilledStudent) -> RKDSystem:
    """Stage 1's model joined to a CAT codec sized by ``codec`` for the channels in ``channel``."""
    specs = training_channel_specs(cfg.channel)
    c = cfg.codec
    return RKDSystem(
        stage1,
        specs,
        d_model=c.d_model,
        encoder_depth=c.encoder_depth,
        decoder_depth=c.decoder_depth,
        heads=c.heads,
        mlp_ratio=c.mlp_ratio,
        max_symbols=c.max_symbols,
        dropout=c.dropout,
        use_state=c.use_state,
    )


def save_model(model: torch.nn.Module, path: Path) -> None:
    """The state dict as safetensors, written atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda p: save_file(state, str(p)))


def load_stage1(cfg: RunConfig, bundle: DataBundle, teacher_dim: int, stage1_dir: Path) -> DistilledStudent:
    """Stage 1's trained model from ``stage1_dir`` (its genotype comes from ``student.json`` there)."""
    genotype = genotype_from_dict(read_json(Path(stage1_dir) / "student.json")["genotype"])
    model = create_stage1_model(cfg, bundle, teacher_dim, genotype)
    model.load_state_dict(load_file(str(Path(stage1_dir) / "model.safetensors")))
    return model


def load_stage2(cfg: RunConfig, bundle: DataBundle, teacher_dim: int, stage1_dir: Path, stage2_dir: Path) -> RKDSystem:
    """Stage 2's trained system: stage 1's model rebuilt, then every weight read from ``stage2_dir``."""
    system = create_stage2_model(cfg, load_stage1(cfg, bundle, teacher_dim, stage1_dir))
    system.load_state_dict(load_file(str(Path(stage2_dir) / "model.safetensors")))
    return system
