"""The run configuration's sections: plain dataclasses whose annotations pydantic validates on load.

Types carry the choices (``Literal``) and single-field ranges, each with the wording of what is
accepted; checks that relate two fields live in ``rkd.config.validation``. The classes stay plain
dataclasses, so ``dataclasses.replace`` and direct construction in code and tests work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, TypeVar, dataclass_transform

from pydantic import ConfigDict, with_config

from rkd.baselines.names import ABLATIONS, BASELINE_METHODS
from rkd.channels import CHANNEL_NAMES
from rkd.config.choices import (
    Ablation,
    BaselineMethod,
    ChannelName,
    CsiSetting,
    EmbeddedFamily,
    TeacherKindName,
    Tracker,
)
from rkd.config.coerce import (
    Bool,
    Float,
    ImageSize,
    Int,
    LearningRate,
    NonEmptyInts,
    NonNegFloat,
    NonNegInt,
    NullText,
    Numbers,
    PosInt,
    PositiveOrNull,
    Probability,
    SplitCap,
    Str,
    Stride,
    Weight,
    Word,
    YamlList,
    accepts,
    distinct,
)
from rkd.nas.ops import PRIMITIVES

_Section = TypeVar("_Section")


@dataclass_transform(field_specifiers=(field,))
def section(cls: type[_Section]) -> type[_Section]:
    """A config section: a dataclass whose unknown keys pydantic refuses."""
    return with_config(ConfigDict(extra="forbid"))(dataclass(cls))


@section
class DataConfig:
    # "fashion-mnist" (Debian's IDX files, converted once), "hf:<hub id or save_to_disk dir>",
    # or "imagefolder:<dir>" (one sub-folder per class, optional train/ and test/ splits)
    name: Annotated[
        Str,
        accepts(
            "'fashion-mnist', 'hf:<hub id or save_to_disk dir>' or 'imagefolder:<dir>'",
            lambda v: v == "fashion-mnist" or v.startswith(("hf:", "imagefolder:")),
        ),
    ] = "fashion-mnist"
    cache_dir: Str = "~/.cache/rkd/datasets"  # where converted datasets live
    fashion_mnist_dir: Str = "/usr/share/datasets/fashion-mnist"
    image_column: Annotated[Str | None, NullText] = None  # auto-detected when None
    label_column: Annotated[Str | None, NullText] = None
    # carved from train with split_seed; test stays untouched
    val_fraction: Annotated[Float, accepts("a fraction strictly between 0 and 1", lambda v: 0 < v < 1)] = 0.1
    split_seed: Int = 0
    image_size: ImageSize = 28  # the student's input size
    max_train: SplitCap = None  # cap train/val/test sizes for smoke runs
    max_val: SplitCap = None
    max_test: SplitCap = None


@section
class TrainConfig:
    epochs: NonNegInt = 3
    batch_size: PosInt = 256
    lr: LearningRate = 2e-3
    weight_decay: NonNegFloat = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_steps: NonNegInt = 0
    # the warm-up as a share of the run's steps (it scales with epochs and data); exclusive with warmup_steps
    warmup_fraction: Annotated[Float, accepts("a fraction in [0, 1), e.g. 0.05", lambda v: 0 <= v < 1)] = 0.0
    grad_clip: Annotated[
        Annotated[Float, accepts("a number > 0, or null for no clipping", lambda v: v > 0)] | None, NullText
    ] = 5.0
    # stop early (tests, smoke runs)
    max_steps: Annotated[Annotated[Int, accepts("an integer >= 1, or null", lambda v: v >= 1)] | None, NullText] = None
    checkpoint_every: PosInt = 200  # optimiser steps between resumable checkpoints
    log_every: PosInt = 20
    label_smoothing: Annotated[Float, accepts("a number in [0, 1)", lambda v: 0 <= v < 1)] = 0.0
    # stop after this many epochs without a better val accuracy (training to convergence); null = every epoch
    early_stop_patience: Annotated[
        Annotated[Int, accepts("an integer >= 1, or null", lambda v: v >= 1)] | None, NullText
    ] = None


@section
class TeacherConfig:
    # "embedded": an HF classifier built from embedded_* and trained by rkd; anything else is a
    # checkpoint of one of the kinds in rkd.teacher.kinds: a hub id or a save_pretrained dir.
    source: Str = "embedded"
    # the teacher's own training seed; null = the run's. Pinned, runs of other seeds share one teacher and cache
    seed: Annotated[
        Annotated[Int, accepts("an integer >= 0, or null for the run's seed", lambda v: v >= 0)] | None, NullText
    ] = None
    kind: TeacherKindName = "auto"  # auto: the kind the source names
    # Runs the checkpoint's own Python. Only the command line can switch it on (--trust-remote-code
    # or teacher.trust_remote_code=true); a YAML file that sets it is refused.
    trust_remote_code: Bool = False
    # None: whatever the teacher's image processor says
    image_size: Annotated[
        Annotated[Int, accepts("an integer in [8, 1024], or null", lambda v: 8 <= v <= 1024)] | None, NullText
    ] = None
    finetune: Bool = True  # train (embedded) or fine-tune (hub) on the task before caching
    embedded_hidden_sizes: NonEmptyInts = field(default_factory=lambda: [32, 64, 128, 256])
    embedded_depths: NonEmptyInts = field(default_factory=lambda: [1, 1, 1, 1])
    embedded_embedding_size: Annotated[Int, accepts("a positive integer", lambda v: v >= 1)] = 32
    # see rkd.teacher.embedded (regnet/convnext keep 28 px resolution)
    embedded_family: EmbeddedFamily = "resnet"
    # regnet: channels per group (>= widest stage: plain convs)
    embedded_groups_width: Annotated[Int, accepts("a positive integer", lambda v: v >= 1)] = 1024
    channels_last: Bool = False  # embedded teacher weights in channels-last memory (faster CPU convs)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, lr=2e-3))
    augment: Bool = True  # random crop + flip while fine-tuning (the cache is un-augmented)
    random_erasing: Probability = 0.0  # with augment: share of training images with one rectangle set to noise
    # the teacher's training passes (rkd.hardware.precision): auto = bf16 where the device computes it
    # natively and is measured faster, else fp32; bf16 on a CPU without native bf16 runs emulated (warned)
    train_precision: Literal["auto", "fp32", "bf16"] = "auto"
    cache_flip_average: Bool = False  # cache the mean of each image's and its mirror's outputs
    cache_shard_size: PosInt = 16384
    cache_batch_size: PosInt = 512


@section
class StudentConfig:
    genotype: Str = "default"  # a genotype name from rkd.nas.genotype, or a path to a .json
    init_channels: PosInt = 8
    layers: PosInt = 5
    stem_stride: Stride = 2
    drop_path: Probability = 0.0


@section
class LossConfig:
    task: Weight = 1.0
    logit_kd: Weight = 1.0
    feature_kd: Weight = 1.0
    temperature: Annotated[Float, accepts("a temperature > 0", lambda v: v > 0)] = 4.0
    feature_loss: Literal["cosine", "mse"] = "cosine"


@section
class CodecConfig:
    d_model: Int = 32
    encoder_depth: PosInt = 2
    decoder_depth: PosInt = 2
    heads: Annotated[Int, accepts("an integer >= 1 that divides codec.d_model", lambda v: v >= 1)] = 4
    mlp_ratio: Float = 2.0
    max_symbols: PosInt = 32  # L: complex channel symbols the encoder can emit
    rates: Annotated[list[Int], YamlList] = field(default_factory=lambda: [4, 8, 16, 32])  # k values (channel uses)
    dropout: Probability = 0.0
    use_state: Bool = True  # false: the codec's channel-state input is zeroed in training and test (ablation)
    # k drawn in stage 2; null = rates ([max_symbols] = fixed-length ablation)
    train_rates: Annotated[Annotated[list[Int], YamlList] | None, NullText] = None
    # uniform | proportional (P(k) ~ k: the long codes' extra symbols train too)
    rate_sampling: Literal["uniform", "proportional"] = "proportional"
    principal_init: Bool = True  # start the encoder's linear path at the student feature's principal directions


@section
class ChannelTrainConfig:
    channels: Annotated[list[ChannelName], YamlList, accepts(f"a non-empty list drawn from {CHANNEL_NAMES}", bool)] = (
        field(default_factory=lambda: list(CHANNEL_NAMES))
    )
    # perfect | pilot | none, or a list of them: every fading channel is trained in each listed mode
    csi: CsiSetting = "perfect"
    pilots: Annotated[Int, accepts("an integer >= 1 (pilot symbols per packet)", lambda v: v >= 1)] = 1  # counted in k
    k_factor: Annotated[Float, accepts("a Rician K factor >= 0", lambda v: v >= 0)] = 4.0  # Rician K
    snr_min: Float = -10.0
    snr_max: Float = 20.0
    snr_buckets: PosInt = 6  # the SNR range split into buckets; processes or steps rotate over them


@section
class EvalConfig:
    # mappings with name, csi, k_factor, pilots (checked in rkd.config.validation)
    channels: Annotated[list, YamlList] = field(
        default_factory=lambda: [
            {"name": "awgn"},
            {"name": "rayleigh", "csi": "perfect"},
            {"name": "rayleigh", "csi": "pilot", "pilots": 1},
            {"name": "rician", "csi": "perfect", "k_factor": 4.0},
        ]
    )
    snr_min: Float = -10.0
    snr_max: Float = 20.0
    snr_step: Float = 2.0
    rates: Annotated[Annotated[list[Int], YamlList] | None, NullText] = None  # None: codec.rates
    batch_size: PosInt = 1000
    seed: Int = 1234
    # rate policy: the fewest k whose accuracy is within this of the best k's
    rate_margin: Annotated[
        Float, accepts("an accuracy margin in [0, 1), e.g. 0.01 for one point", lambda v: 0 <= v < 1)
    ] = 0.01


@section
class SearchConfig:
    """KDL-DARTS: the distillation-guided, complexity-penalised architecture search for the student's cells."""

    enabled: Bool = (
        False  # False: stage 1 uses student.genotype; True: the search stage runs and stage 1 uses its cells
    )
    init_channels: PosInt = 8  # the search network (the derived cells are priced in the student's own shape)
    layers: PosInt = 5
    nodes: PosInt = 4  # intermediate nodes per cell
    stem_stride: Stride = 2
    # names from rkd.nas.ops.OPS (checked against the registry in rkd.config.validation)
    primitives: Annotated[list[Str], YamlList] = field(default_factory=lambda: list(PRIMITIVES))
    partial_channels: Int = 1  # PC-DARTS k: 1/k of each edge's channels go through the mixed op; 1 = off
    edge_normalization: Bool = False  # PC-DARTS beta weights per edge
    order: Literal["first", "second"] = "first"  # second: one-step unrolled, finite-difference Hessian-vector product
    # weights: DARTS's SGD, lr 0.025 cosine, wd 3e-4, clip 5
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=3, batch_size=64, lr=0.025, weight_decay=3e-4, optimizer="sgd", scheduler="cosine", grad_clip=5.0
        )
    )
    max_train: SplitCap = None  # search on a seeded subset of the train split (weights) ...
    max_val: SplitCap = None  # ... and of the val split (architecture); null = whole split
    warmup_epochs: NonNegInt = 1  # weight-only epochs before the first architecture update
    arch_lr: LearningRate = 3e-4  # DARTS's Adam for the architecture parameters
    arch_betas: Annotated[
        Numbers,
        accepts("two numbers in [0, 1), e.g. [0.5, 0.999]", lambda v: len(v) == 2 and all(0 <= b < 1 for b in v)),
    ] = field(default_factory=lambda: [0.5, 0.999])
    arch_weight_decay: NonNegFloat = 1e-3
    # the loss: task + KD against the cached teacher (the same terms as stage 1) + complexity penalty
    loss: LossConfig = field(default_factory=LossConfig)
    complexity: Literal["params", "flops", "both"] = "params"
    complexity_weight: Weight = 0.1  # 0 = no penalty
    param_budget: PositiveOrNull = None  # a budget turns the penalty into a hinge above it
    flops_budget: PositiveOrNull = None
    # at most this many skip_connect per derived cell; null = no cap
    max_skips: Annotated[
        Annotated[Int, accepts("an integer >= 0, or null for no cap", lambda v: v >= 0)] | None, NullText
    ] = 2
    # candidate selection (rkd.stages.selection): the derived cells and candidates - 1 cells drawn from
    # the architecture weights (no larger than the derived ones, or param_budget), each trained for
    # candidate_epochs with stage 1's loss and optimiser on a seeded subset; the best val accuracy wins
    candidates: NonNegInt = 0  # 0 or 1: off (the derived cells, as DARTS)
    candidate_epochs: PosInt = 3
    candidate_batch_size: PosInt = 64  # smaller than stage 1's: more steps from the few epochs
    candidate_max_train: SplitCap = 4096
    candidate_max_val: SplitCap = 2048
    # screening (successive halving): after candidate_screen_epochs epochs only the candidate_survivors
    # best go on to candidate_epochs (same schedule, resumed); null = every candidate trains them all
    candidate_survivors: Annotated[
        Annotated[Int, accepts("an integer >= 1, or null for no screening", lambda v: v >= 1)] | None, NullText
    ] = None
    candidate_screen_epochs: PosInt = 1
    # the Pareto sweep (rkd search --sweep): one independent search per weight, each briefly trained
    sweep_weights: Annotated[
        Numbers, accepts("a non-empty list of complexity weights >= 0", lambda v: bool(v) and all(w >= 0 for w in v))
    ] = field(default_factory=lambda: [0.0, 0.1, 0.3, 1.0])
    sweep_budget: PositiveOrNull = None  # pick the best val accuracy within this budget (null: best overall)
    sweep_budget_metric: Literal["params", "flops"] = "params"
    sweep_train_epochs: PosInt = 2  # stage-1 epochs per derived genotype


@section
class BaselinesConfig:
    """What `rkd baselines` trains and sweeps beside RKD-SC (rkd.baselines); no pipeline stage reads it."""

    methods: Annotated[
        list[BaselineMethod],
        YamlList,
        accepts(f"distinct names from {BASELINE_METHODS} (an empty list runs none)", distinct),
    ] = field(
        default_factory=lambda: ["deep-jscc", "adjscc", "conference", "label-digital", "feature-digital", "digital"]
    )
    # training seeds: each a full retrain of every method (seed -> init, data order, train and test
    # channel draws); null = [seed]. Seeds other than `seed` run in <run>/seeds/seed-<s>/ (methods only)
    seeds: Annotated[
        Annotated[
            list[Int],
            YamlList,
            accepts(
                "null (= [seed]) or a non-empty list of distinct integers >= 0, e.g. [0, 1, 2]",
                lambda v: bool(v) and all(s >= 0 for s in v) and distinct(v),
            ),
        ]
        | None,
        NullText,
    ] = None
    per_image: Bool = False  # keep per-image correctness (correct.npz) for the paired test of rkd.evaluation.compare
    ablations: Annotated[
        list[Ablation],
        YamlList,
        accepts(f"distinct names from {ABLATIONS} (an empty list runs none)", distinct),
    ] = field(default_factory=lambda: ["no-kd", "robust-kd", "no-channel-training", "no-state", "fixed-length"])
    extra_snrs: Numbers = field(default_factory=lambda: [-5.0, 5.0])  # added to the eval grid for the comparison
    compare_k: Annotated[Int | None, NullText] = None  # k of the comparison table and figure; null = max(codec.rates)
    # the verdicts over seeds: RKD-SC is non-inferior when its mean accuracy over the SNR grid is at most this
    # far below the comparator's (one-sided paired t over seeds, Holm-adjusted)
    noninferiority_margin: Annotated[
        Float, accepts("an accuracy margin in [0, 1), e.g. 0.005 for half a point", lambda v: 0 <= v < 1)
    ] = 0.005
    # Deep JSCC / ADJSCC: conv encoder (width jscc_channels) -> codec.max_symbols symbols; conv+MLP receiver
    jscc_channels: PosInt = 40
    jscc_decoder_channels: PosInt = 32
    jscc_hidden: PosInt = 64
    jscc_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, lr=2e-3))
    match_budget: Bool = False  # true: deep-jscc, adjscc, vfe see RKD-SC's per-seed images (baselines.trained_link)
    vfe_beta: Weight = 1e-3  # VFE's information-bottleneck KL weight (rkd.baselines.vfe; its widths: jscc_*)
    vfe_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, lr=2e-3))
    # the no-teacher controls' learning-rate multiplier, stage 1 and 2 (rkd.baselines.controls)
    control_lr_scale: Annotated[Float, accepts("a multiplier > 0", lambda v: v > 0)] = 1.0
    # the conference RKD-SC: feature-MSE student, then a per-sample attention autoencoder, one epoch per SNR (AWGN)
    conference_snrs: Annotated[Numbers, accepts("a non-empty list of SNRs in dB, one per epoch", bool)] = field(
        default_factory=lambda: [-5.0, -2.0, 0.0, 5.0, 10.0, 15.0, 20.0]
    )
    conference_stage1: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, lr=3e-3))
    conference_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=7, lr=1e-3))
    conference_tokens: PosInt = 16  # the feature vector is cut into this many tokens for attention
    conference_d_model: Annotated[PosInt, accepts("a multiple of 4 (the attention heads)", lambda v: v % 4 == 0)] = 32
    conference_depth: PosInt = 2
    # separate source/channel coding: b-bit uniform quantiser + ideal capacity-achieving code
    digital_bits: Annotated[
        list[Int],
        YamlList,
        accepts(  # candidate b; largest that fits
            "a non-empty list of bit depths in [1, 16]", lambda v: bool(v) and all(1 <= b <= 16 for b in v)
        ),
    ] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])
    digital_fallback: Literal["prior", "uniform"] = (
        "prior"  # prior (most frequent train class) | uniform (a seeded random guess)
    )
    # feature-digital: the block code with the most bits whose block error on AWGN at the nominal SNR is <= this
    digital_target_error: Annotated[Float, accepts("a block error probability in (0, 1)", lambda v: 0 < v < 1)] = 0.01
    # Monte Carlo trials of a code's error probability (feature-digital's block choice; label-digital's P_c
    # and the comparison's yardstick where no closed form applies)
    digital_code_trials: Annotated[Int, accepts("an integer >= 1000", lambda v: v >= 1000)] = 20_000


@section
class TrackingConfig:
    # experiment trackers through Accelerate's log_with, e.g. [tensorboard] or [wandb, mlflow]; [] = log.jsonl only
    log_with: Annotated[list[Tracker], YamlList] = field(default_factory=list)
    project: Str = "rkd"  # W&B / MLflow / Comet project (experiment); TensorBoard's sub-folder
    dir: Annotated[Str | None, NullText] = None  # where file-based trackers write; null = runs/<name>/tracking


@section
class RunConfig:
    name: Annotated[
        Str,
        accepts(
            "a non-empty run name without '/' that does not start with '.'",
            lambda v: bool(v) and "/" not in v and not v.startswith("."),
        ),
    ] = "default"
    runs_dir: Str = "runs"
    seed: Int = 0
    # the student-side stages (rkd.hardware.precision): auto = the launcher's bf16/fp16 if it asks for one, else from
    # the hardware; no (= fp32) | bf16 | fp16 (CUDA only) override it; under DeepSpeed an explicit value must match
    mixed_precision: Annotated[Literal["auto", "no", "fp32", "bf16", "fp16"], Word] = "auto"
    # minutes a process waits in a collective for the others, on every backend; more than any process works alone
    collective_timeout_minutes: PositiveOrNull = 30.0  # (the first data load, a download); null: the backend's own
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    channel: ChannelTrainConfig = field(default_factory=ChannelTrainConfig)
    stage1: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, lr=3e-3))
    stage2: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, lr=1e-3))
    stage2_loss: LossConfig = field(default_factory=LossConfig)  # stage 1's terms, on the received features
    eval: EvalConfig = field(default_factory=EvalConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir).expanduser() / self.name
