"""Two-stage robust knowledge distillation (RKD), the stage functions and their entry script.

Stage 1 distils the cached teacher into the student (logit KD + feature KD through a projector +
task loss). Stage 2 adds the CAT codec and trains student, codec and decoder over simulated
channels (SNR drawn per sample across the configured range, channel type and channel uses k drawn
per sample), against the same cached teacher targets. Both go through ``rkd.engine.fit``.

    accelerate launch rkd/distill.py --config rkd/configs/default.yaml [section.field=value ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # launched by path: import rkd.* from this checkout, never rkd/ as top level
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import torch
from safetensors.torch import load_file, save_file

from rkd.artifacts import atomic_write, atomic_write_json, read_json
from rkd.channels import SNRSampler, training_channel_specs
from rkd.config import RunConfig
from rkd.data import DataBundle, make_loader, student_transform
from rkd.engine import Step, fit
from rkd.frozen_features import freeze, student_tokens, token_loader
from rkd.losses import build_kd_loss
from rkd.models.cat import sample_rates
from rkd.models.system import DistilledStudent, RKDSystem
from rkd.models.student import Student
from rkd.nas.genotype import genotype_from_dict, genotype_to_dict, load_genotype


def build_stage1_model(cfg: RunConfig, bundle: DataBundle, teacher_feature_dim: int, genotype=None) -> DistilledStudent:
    genotype = genotype if genotype is not None else load_genotype(cfg.student.genotype)
    student = Student(genotype, in_channels=bundle.channels, num_classes=bundle.num_classes,
                      init_channels=cfg.student.init_channels, layers=cfg.student.layers,
                      stem_stride=cfg.student.stem_stride, drop_path=cfg.student.drop_path)
    return DistilledStudent(student, teacher_feature_dim)


def build_stage2_model(cfg: RunConfig, stage1: DistilledStudent) -> RKDSystem:
    specs = training_channel_specs(cfg.channel)
    c = cfg.codec
    return RKDSystem(stage1, specs, d_model=c.d_model, encoder_depth=c.encoder_depth, decoder_depth=c.decoder_depth,
                     heads=c.heads, mlp_ratio=c.mlp_ratio, max_symbols=c.max_symbols, dropout=c.dropout,
                     use_state=c.use_state)


def kd_loss(loss_cfg, label_smoothing: float = 0.0):
    return build_kd_loss(task=loss_cfg.task, logit_kd=loss_cfg.logit_kd, feature_kd=loss_cfg.feature_kd,
                         temperature=loss_cfg.temperature, feature_loss=loss_cfg.feature_loss,
                         label_smoothing=label_smoothing)


class DistillObjective:
    """Batch -> student input -> model -> KD loss against the cached teacher rows of that batch.

    Training batches come from the train split, evaluation batches from ``eval_split``.
    With ``channel`` settings it is the stage-2 objective: it draws SNR (from this process's SNR
    bucket at this step), channel type and channel uses k per sample.
    """

    def __init__(self, transform, cache, loss, channel_cfg=None, rates=None, rank: int = 0, world_size: int = 1,
                 seed: int = 0, proportional_rates: bool = False) -> None:
        self.transform = transform
        self.cache = cache
        self.loss = loss
        self.channel_cfg = channel_cfg
        self.rates = list(rates or [])
        self.proportional_rates = proportional_rates
        self.n_channels = len(training_channel_specs(channel_cfg)) if channel_cfg is not None else 0
        self.eval_split = "val"
        self.step = 0
        self.seed = seed
        self.bucket_log: list = []  # [step, [buckets], min SNR, max SNR] per training batch (see write_snr_bucket_log)
        if channel_cfg is not None:
            self.sampler = SNRSampler(channel_cfg.snr_min, channel_cfg.snr_max, channel_cfg.snr_buckets,
                                      rank=rank, world_size=world_size)
        self.generator = torch.Generator().manual_seed(seed * 1000 + rank)

    def set_step(self, step: int) -> None:
        self.step = step

    def channel_draw(self, batch_size: int, train: bool, first_index: int) -> tuple:
        """SNR, k and channel id per sample; evaluation draws are a fixed function of the batch."""
        if train:
            gen = self.generator
            snr = self.sampler.sample(batch_size, self.step, generator=gen)
            self.bucket_log.append([self.step, self.sampler.buckets_for(self.step), float(snr.min()), float(snr.max())])
        else:
            gen = torch.Generator().manual_seed(10_007 * first_index + self.seed)
            lo, hi = self.channel_cfg.snr_min, self.channel_cfg.snr_max
            snr = lo + (hi - lo) * torch.rand(batch_size, generator=gen)
        k = sample_rates(batch_size, self.rates, generator=gen, proportional=self.proportional_rates and train)
        channel_ids = torch.randint(0, self.n_channels, (batch_size,), generator=gen)
        return snr, k, channel_ids, gen

    def __call__(self, model, batch: dict, train: bool) -> Step:
        split = "train" if train else self.eval_split
        tokens = batch.get("tokens")  # stage 2 over a frozen student: its tokens, computed once
        x = self.transform(batch["pixels"]) if tokens is None else None
        targets = self.cache.targets(split, batch["index"])
        if self.channel_cfg is None:
            outputs = model(x)
        else:
            snr, k, channel_ids, gen = self.channel_draw(batch["label"].shape[0], train, int(batch["index"][0]))
            device = batch["label"].device
            extra = {} if tokens is None else {"tokens": tokens}  # the baselines' links take images only
            outputs = model(x, snr.to(device), k.to(device), channel_ids.to(device),
                            generator=None if train else gen, **extra)
        full_batch = {"label": batch["label"], **targets}
        total, parts = self.loss(outputs, full_batch)
        return Step(loss=total, logits=outputs["logits"], labels=batch["label"], terms=parts)


SNR_LOG_STEPS = 5000  # steps kept per process in snr_buckets.json


def write_snr_bucket_log(accelerator, objective: DistillObjective, path: Path) -> None:
    """Gather which SNR buckets every process drew from at each step into one JSON on the main process.

    The bucket rule lives in ``SNRSampler``; this record lets a real multi-process run be checked
    against it (each rank's buckets, and the SNRs it drew staying inside them). Collective: every
    process must call it. After a resume it covers the steps since the resume.
    """
    from accelerate.utils import gather_object

    mine = {"rank": accelerator.process_index, "steps": objective.bucket_log[-SNR_LOG_STEPS:]}
    everyone = gather_object([mine]) if accelerator.num_processes > 1 else [mine]
    if accelerator.is_main_process:
        sampler = objective.sampler
        atomic_write_json(path, {"world_size": accelerator.num_processes, "n_buckets": sampler.n_buckets,
                                 "edges": sampler.buckets(), "rule": "bucket = (rank + step * world_size) mod n_buckets",
                                 "ranks": sorted(everyone, key=lambda r: r["rank"])})


def save_model(model: torch.nn.Module, path: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda p: save_file(state, str(p)))


def run_stage1(cfg: RunConfig, accelerator, bundle: DataBundle, cache, out_dir: Path, genotype=None) -> dict:
    out_dir = Path(out_dir)
    teacher_dim = cache.features["train"].shape[1]
    genotype = genotype if genotype is not None else load_genotype(cfg.student.genotype)
    model = build_stage1_model(cfg, bundle, teacher_dim, genotype)
    objective = DistillObjective(student_transform(cfg.data, bundle), cache,
                                 kd_loss(cfg.loss, cfg.stage1.label_smoothing), seed=cfg.seed)
    train_loader = make_loader(bundle.splits["train"], cfg.stage1.batch_size, shuffle=True, seed=cfg.seed, drop_last=True)
    val_loader = make_loader(bundle.splits["val"], cfg.eval.batch_size, shuffle=False, seed=cfg.seed)
    summary = fit(accelerator, model, objective, train_loader, val_loader, cfg.stage1, out_dir, desc="stage1")
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), out_dir / "model.safetensors")
        atomic_write_json(out_dir / "student.json", {"genotype": genotype_to_dict(genotype)})
    summary["student_params"] = sum(p.numel() for p in model.student.parameters())
    return summary


def load_stage1(cfg: RunConfig, bundle: DataBundle, teacher_dim: int, stage1_dir: Path) -> DistilledStudent:
    genotype = genotype_from_dict(read_json(Path(stage1_dir) / "student.json")["genotype"])
    model = build_stage1_model(cfg, bundle, teacher_dim, genotype)
    model.load_state_dict(load_file(str(Path(stage1_dir) / "model.safetensors")))
    return model


def run_stage2(cfg: RunConfig, accelerator, bundle: DataBundle, cache, stage1_dir: Path, out_dir: Path) -> dict:
    """Stage 2, phase A: the codec learns over the channel on the frozen stage-1 student's tokens.

    The student, its classifier and projector keep their stage-1 weights (frozen), so the clean
    accuracy cannot be forgotten, and their tokens are computed once: a codec step then costs the
    codec alone, and the schedule can afford thousands of steps with warm-up.
    """
    out_dir = Path(out_dir)
    teacher_dim = cache.features["train"].shape[1]
    system = build_stage2_model(cfg, load_stage1(cfg, bundle, teacher_dim, stage1_dir))
    for part in (system.student, system.projector):
        freeze(part)
    transform = student_transform(cfg.data, bundle)
    tokens = {split: student_tokens(system.student, transform, bundle.splits[split].images, cfg.eval.batch_size)
              for split in ("train", "val")}
    if cfg.codec.principal_init:
        system.encoder.init_principal(tokens["train"].mean(dim=1))
    objective = DistillObjective(None, cache, kd_loss(cfg.stage2_loss, cfg.stage2.label_smoothing), channel_cfg=cfg.channel,
                                 rates=cfg.codec.train_rates or cfg.codec.rates, rank=accelerator.process_index,
                                 world_size=accelerator.num_processes, seed=cfg.seed,
                                 proportional_rates=cfg.codec.rate_sampling == "proportional")
    train_loader = token_loader(tokens["train"], bundle.splits["train"].labels, cfg.stage2.batch_size, shuffle=True,
                                seed=cfg.seed + 1, drop_last=True)
    val_loader = token_loader(tokens["val"], bundle.splits["val"].labels, cfg.eval.batch_size, shuffle=False, seed=cfg.seed)
    trainable = [p for p in system.parameters() if p.requires_grad]
    summary = fit(accelerator, system, objective, train_loader, val_loader, cfg.stage2, out_dir, desc="stage2",
                  parameters=trainable)
    write_snr_bucket_log(accelerator, objective, out_dir / "snr_buckets.json")
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(system), out_dir / "model.safetensors")
    summary["codec_tx_params"] = sum(p.numel() for p in system.encoder.parameters())
    summary["codec_rx_params"] = sum(p.numel() for p in system.decoder.parameters())
    summary["trainable_params"] = sum(p.numel() for p in trainable)
    return summary


def load_stage2(cfg: RunConfig, bundle: DataBundle, teacher_dim: int, stage1_dir: Path, stage2_dir: Path) -> RKDSystem:
    system = build_stage2_model(cfg, load_stage1(cfg, bundle, teacher_dim, stage1_dir))
    system.load_state_dict(load_file(str(Path(stage2_dir) / "model.safetensors")))
    return system


def main(argv=None) -> int:
    from rkd.cli import main as cli_main

    return cli_main(["distill", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
