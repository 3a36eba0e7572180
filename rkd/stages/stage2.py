"""Stage 2 of robust KD, phase A: the CAT codec learns over simulated channels on the frozen student.

The student, its classifier and projector keep their stage-1 weights (frozen), so the clean
accuracy cannot be forgotten, and their tokens are computed once (``rkd.models.frozen_tokens``): a codec
step then costs the codec alone, and the schedule can afford thousands of steps with warm-up.
SNR is drawn per sample from this process's SNR bucket, channel type and channel uses k per sample.
"""

from __future__ import annotations

from pathlib import Path

from rkd.config import RunConfig
from rkd.data import DataBundle, student_transform
from rkd.engine import fit
from rkd.losses import build_kd_loss
from rkd.measure import count_params
from rkd.models.factory import create_stage2_model, load_stage1, save_model
from rkd.models.frozen_tokens import freeze, shared_tokens, token_loader
from rkd.stages.inputs import RunInputs
from rkd.stages.objective import DistillObjective, write_snr_bucket_log


def run(cfg: RunConfig, accelerator, inputs: RunInputs, out_dir: Path) -> dict:
    return train_codec(cfg, accelerator, inputs.bundle, inputs.cache, inputs.path("stage1"), out_dir)


def train_codec(cfg: RunConfig, accelerator, bundle: DataBundle, cache, stage1_dir: Path, out_dir: Path) -> dict:
    """Train the codec on top of the stage-1 model in ``stage1_dir`` into ``out_dir``; ablations call it too."""
    out_dir = Path(out_dir)
    teacher_dim = cache.features["train"].shape[1]
    system = create_stage2_model(cfg, load_stage1(cfg, bundle, teacher_dim, stage1_dir))
    for part in (system.student, system.projector):
        freeze(part)
    transform = student_transform(cfg.data, bundle)
    tokens = {
        split: shared_tokens(accelerator, system.student, transform, bundle.splits[split].images, cfg.eval.batch_size)
        for split in ("train", "val")
    }
    if cfg.codec.principal_init:
        system.encoder.init_principal(tokens["train"].float().mean(dim=1).cpu())
    objective = DistillObjective(
        None,
        cache,
        build_kd_loss(cfg.stage2_loss, cfg.stage2.label_smoothing),
        channel_cfg=cfg.channel,
        rates=cfg.codec.train_rates or cfg.codec.rates,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        seed=cfg.seed,
        proportional_rates=cfg.codec.rate_sampling == "proportional",
    )
    train_loader = token_loader(
        tokens["train"],
        bundle.splits["train"].labels,
        cfg.stage2.batch_size,
        shuffle=True,
        seed=cfg.seed + 1,
        drop_last=True,
    )
    val_loader = token_loader(
        tokens["val"], bundle.splits["val"].labels, cfg.eval.batch_size, shuffle=False, seed=cfg.seed
    )
    trainable = [p for p in system.parameters() if p.requires_grad]
    summary = fit(
        accelerator,
        system,
        objective,
        train_loader,
        val_loader,
        cfg.stage2,
        out_dir,
        desc="stage2",
        parameters=trainable,
    )
    write_snr_bucket_log(accelerator, objective, out_dir / "snr_buckets.json")
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(system), out_dir / "model.safetensors")
    summary["codec_tx_params"] = count_params(system.encoder)
    summary["codec_rx_params"] = count_params(system.decoder)
    summary["trainable_params"] = count_params(system, trainable_only=True)
    return summary
