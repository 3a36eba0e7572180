"""`rkd baselines`: train and sweep every baseline and ablation beside RKD-SC, then write the comparison.

Everything goes through the same pieces as RKD-SC: ``rkd.engine.fit`` trains, the stage-2
objective draws SNR / k / channel per sample, ``rkd.evaluate.channel_sweep`` sweeps with the same
seeded noise. All methods, RKD-SC included, are swept on one grid: the eval grid plus
``baselines.extra_snrs`` (so the comparison table has -5 and 5 dB). Each method writes
``runs/<name>/baselines/<method>/results.json`` (records in the eval format + a summary with
transmitter/receiver parameters and FLOPs per image); a method whose config hash is unchanged is
skipped, one whose hash changed is moved aside, as pipeline stages are. Training is collective
under ``accelerate launch``; the sweeps run on the main process.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from rkd.artifacts import atomic_write_json, read_json
from rkd.config import RunConfig, config_hash
from rkd.evaluate import batched, channel_sweep, count_flops, count_params, snr_grid
from rkd.fingerprint import input_fingerprints

RKD_METHOD = "rkd-sc"
METHOD_LABELS = {"deep-jscc": "deep-jscc", "adjscc": "adjscc", "conference": "conference-rkd", "digital": "digital"}


def comparison_grid(cfg: RunConfig) -> list:
    """The eval grid plus ``baselines.extra_snrs``, sorted."""
    return sorted({float(s) for s in snr_grid(cfg.eval)} | {float(s) for s in cfg.baselines.extra_snrs})


def ablation_label(name: str) -> str:
    return f"ablation:{name}"


class MethodDir:
    """``runs/<name>/baselines/<dir>``: done when ``done.json`` holds the current hash (like a pipeline stage)."""

    def __init__(self, root: Path, name: str, hash_: str) -> None:
        self.path = root / name
        self.hash = hash_

    def done(self) -> Optional[dict]:
        marker = self.path / "done.json"
        if marker.exists() and read_json(marker).get("hash") == self.hash and (self.path / "results.json").exists():
            return read_json(self.path / "results.json")
        return None

    def begin(self) -> Path:
        started = self.path / "started.json"
        if self.path.exists():
            previous = read_json(started)["hash"] if started.exists() else None
            if previous != self.hash:
                stale = self.path.with_name(f"{self.path.name}.stale-{previous or 'unknown'}-{int(time.time())}")
                shutil.move(str(self.path), str(stale))
        self.path.mkdir(parents=True, exist_ok=True)
        if not started.exists():
            atomic_write_json(started, {"hash": self.hash, "time": time.time()})
        return self.path

    def finish(self, results: dict) -> None:
        atomic_write_json(self.path / "results.json", results)
        atomic_write_json(self.path / "done.json", {"hash": self.hash, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})


@dataclass
class Context:
    """What every method needs, loaded once: the main run's data, cache, test inputs and grid."""

    cfg: RunConfig
    accelerator: object
    pipeline: object
    grid: list

    @property
    def bundle(self):
        return self.pipeline.bundle

    @property
    def cache(self):
        return self.pipeline.cache

    @property
    def teacher_dim(self) -> int:
        return int(self.cache.features["test"].shape[1])

    @property
    def transform(self):
        from rkd.data import student_transform

        return student_transform(self.cfg.data, self.bundle)

    def inputs(self, split: str) -> torch.Tensor:
        return self.transform(self.bundle.splits[split].images)

    @property
    def labels(self) -> torch.Tensor:
        return self.bundle.splits["test"].labels

    @property
    def rates(self) -> list:
        return list(self.cfg.eval.rates or self.cfg.codec.rates)

    def sweep(self, model, inputs, rates, method) -> list:
        e = self.cfg.eval
        return channel_sweep(model, inputs, self.labels, e.channels, self.grid, rates, e.batch_size, e.seed,
                             progress=self.accelerator.is_local_main_process, method=method)


def link_sizes(tx_params: int, rx_params: int, tx_call: Callable, rx_call: Callable) -> dict:
    """Parameters and FLOPs per image of both ends of a link (each call runs on one image)."""
    return {"tx_params": int(tx_params), "rx_params": int(rx_params),
            "tx_flops": count_flops(tx_call), "rx_flops": count_flops(rx_call)}


def _receiver_probe(model, z: torch.Tensor) -> Callable:
    mask = torch.ones(z.shape, dtype=torch.bool)
    state = torch.zeros(z.shape[0], 2)
    return lambda: model.classify(model.decoder(z, mask, state))


def _student_params(student) -> int:
    """The student as a feature extractor: without its classifier head (which the transmitter never runs)."""
    return count_params(student) - count_params(student.classifier)


# ----------------------------------------------------------------------------- RKD-SC systems (main + ablations)


def rkd_system_results(ctx: Context, cfg: RunConfig, method: str) -> dict:
    from rkd.distill import load_stage2

    system = load_stage2(cfg, ctx.bundle, ctx.teacher_dim, cfg.run_dir / "stage1", cfg.run_dir / "stage2").eval()
    x = ctx.inputs("test")
    tokens = batched(lambda t: system.student(t)["tokens"], x, cfg.eval.batch_size)
    records = ctx.sweep(system, tokens, ctx.rates, method)
    one = x[:1]
    z = system.transmit(system.student(one)["tokens"], torch.zeros(1)).detach()
    sizes = link_sizes(_student_params(system.student) + count_params(system.encoder),
                       count_params(system.decoder) + count_params(system.student.classifier),
                       lambda: system.transmit(system.student(one)["tokens"], torch.zeros(1)),
                       _receiver_probe(system, z))
    return {"summary": {"method": method, "max_symbols": cfg.codec.max_symbols, "rates": ctx.rates, **sizes,
                        "input_values": int(one.numel()),
                        "train_rates": cfg.codec.train_rates or cfg.codec.rates, "use_state": cfg.codec.use_state},
            "records": records}


# ----------------------------------------------------------------------------- Deep JSCC / ADJSCC


def train_deep_jscc(ctx: Context, out_dir: Path, adaptive: bool):
    from rkd.baselines.deep_jscc import DeepJSCCClassifier
    from rkd.baselines.link import NoTeacher
    from rkd.channels import training_channel_specs
    from rkd.data import make_loader
    from rkd.distill import DistillObjective, save_model
    from rkd.engine import fit
    from rkd.losses import build_kd_loss

    cfg, b, acc = ctx.cfg, ctx.cfg.baselines, ctx.accelerator
    model = DeepJSCCClassifier(ctx.bundle.channels, ctx.bundle.num_classes, training_channel_specs(cfg.channel),
                               cfg.codec.max_symbols, width=b.jscc_channels, decoder_width=b.jscc_decoder_channels,
                               hidden=b.jscc_hidden, adaptive=adaptive)
    loss = build_kd_loss(task=1.0, logit_kd=0.0, feature_kd=0.0, label_smoothing=b.jscc_train.label_smoothing)
    objective = DistillObjective(ctx.transform, NoTeacher(), loss, channel_cfg=cfg.channel, rates=cfg.codec.rates,
                                 rank=acc.process_index, world_size=acc.num_processes, seed=cfg.seed)
    train_loader = make_loader(ctx.bundle.splits["train"], b.jscc_train.batch_size, shuffle=True, seed=cfg.seed + 1,
                               drop_last=True)
    val_loader = make_loader(ctx.bundle.splits["val"], cfg.eval.batch_size, shuffle=False, seed=cfg.seed)
    summary = fit(acc, model, objective, train_loader, val_loader, b.jscc_train, out_dir,
                  desc="adjscc" if adaptive else "deep-jscc")
    model = acc.unwrap_model(model).eval()
    if acc.is_main_process:
        save_model(model, out_dir / "model.safetensors")
    return model, summary


def deep_jscc_results(ctx: Context, out_dir: Path, adaptive: bool) -> dict:
    method = METHOD_LABELS["adjscc" if adaptive else "deep-jscc"]
    model, train_summary = train_deep_jscc(ctx, out_dir, adaptive)
    if not ctx.accelerator.is_main_process:
        return {}
    x = ctx.inputs("test")
    records = ctx.sweep(model, x, ctx.rates, method)
    one = x[:1]
    z = model.transmit(one, torch.zeros(1)).detach()
    sizes = link_sizes(sum(count_params(m) for m in model.transmitter_modules()),
                       sum(count_params(m) for m in model.receiver_modules()),
                       lambda: model.transmit(one, torch.zeros(1)), _receiver_probe(model, z))
    return {"summary": {"method": method, "adaptive": adaptive, "max_symbols": ctx.cfg.codec.max_symbols,
                        "rates": ctx.rates, **sizes, "best_val_accuracy": train_summary["best_val_accuracy"],
                        "train_seconds": train_summary["seconds"]},
            "records": records}


# ----------------------------------------------------------------------------- the conference design


def conference_results(ctx: Context, out_dir: Path) -> dict:
    from rkd.baselines.conference import ConferenceAutoencoder, SNRScheduleObjective
    from rkd.baselines.variants import conference_student_overrides, derive_config, run_variant
    from rkd.data import make_loader
    from rkd.distill import load_stage1, save_model
    from rkd.engine import fit
    from rkd.losses import build_kd_loss

    cfg, b, acc = ctx.cfg, ctx.cfg.baselines, ctx.accelerator
    student_cfg = derive_config(cfg, conference_student_overrides(cfg), "conference-student")
    run_variant(cfg, student_cfg, acc, until="stage1")
    stage1 = load_stage1(student_cfg, ctx.bundle, ctx.teacher_dim, student_cfg.run_dir / "stage1").eval()
    for p in stage1.parameters():
        p.requires_grad_(False)
    features = {split: batched(lambda t: stage1(t)["projected"], ctx.inputs(split), cfg.eval.batch_size)
                for split in ("train", "val", "test")}
    model = ConferenceAutoencoder(ctx.teacher_dim, ctx.bundle.num_classes, [{"name": "awgn"}],
                                  tokens=b.conference_tokens, d_model=b.conference_d_model, depth=b.conference_depth)
    train_loader = make_loader(ctx.bundle.splits["train"], b.conference_train.batch_size, shuffle=True,
                               seed=cfg.seed + 2, drop_last=True)
    val_loader = make_loader(ctx.bundle.splits["val"], cfg.eval.batch_size, shuffle=False, seed=cfg.seed)
    loss = build_kd_loss(task=1.0, logit_kd=0.0, feature_kd=1.0, feature_loss="mse")
    objective = SNRScheduleObjective(features, ctx.cache, loss, b.conference_snrs,
                                     max(1, len(train_loader) // acc.num_processes), cfg.channel.snr_min,
                                     cfg.channel.snr_max, seed=cfg.seed)
    train_summary = fit(acc, model, objective, train_loader, val_loader, b.conference_train, out_dir, desc="conference")
    model = acc.unwrap_model(model).eval()
    if not acc.is_main_process:
        return {}
    save_model(model, out_dir / "model.safetensors")
    method = METHOD_LABELS["conference"]
    records = ctx.sweep(model, features["test"], [model.max_symbols], method)
    one = ctx.inputs("test")[:1]
    z = model.transmit(features["test"][:1], torch.zeros(1)).detach()
    tx_params = (_student_params(stage1.student) + count_params(stage1.projector)
                 + sum(count_params(m) for m in model.transmitter_modules()))
    sizes = link_sizes(tx_params, sum(count_params(m) for m in model.receiver_modules()),
                       lambda: model.transmit(stage1(one)["projected"], torch.zeros(1)), _receiver_probe(model, z))
    return {"summary": {"method": method, "max_symbols": model.max_symbols, "rates": [model.max_symbols],
                        "feature_dim": ctx.teacher_dim, "train_snrs": list(b.conference_snrs), "train_channel": "awgn",
                        **sizes, "best_val_accuracy": train_summary["best_val_accuracy"],
                        "student_run": str(student_cfg.run_dir)},
            "records": records}


# ----------------------------------------------------------------------------- separate source/channel coding


def digital_results(ctx: Context) -> dict:
    from rkd.baselines.digital import UniformQuantizer, digital_sweep, fallback_predictions
    from rkd.distill import load_stage1

    cfg, b = ctx.cfg, ctx.cfg.baselines
    stage1 = load_stage1(cfg, ctx.bundle, ctx.teacher_dim, cfg.run_dir / "stage1").eval()
    student = stage1.student
    train = batched(lambda t: student(t)["features"], ctx.inputs("train"), cfg.eval.batch_size)
    x = ctx.inputs("test")
    test = batched(lambda t: student(t)["features"], x, cfg.eval.batch_size)
    quantizer = UniformQuantizer.fit(train)
    prior = int(torch.bincount(ctx.bundle.splits["train"].labels, minlength=ctx.bundle.num_classes).argmax())
    fallback = fallback_predictions(test.shape[0], ctx.bundle.num_classes, b.digital_fallback, prior, cfg.eval.seed)
    with torch.no_grad():
        records = digital_sweep(test, ctx.labels, student.classifier, quantizer, cfg.eval.channels, ctx.grid,
                                ctx.rates, b.digital_bits, fallback, cfg.eval.seed, method=METHOD_LABELS["digital"])
        quantized = {str(bits): float((student.classifier(quantizer(test, bits)).argmax(-1) == ctx.labels).float().mean())
                     for bits in b.digital_bits}
        fallback_acc = float((fallback == ctx.labels).float().mean())
    one = x[:1]
    feature_one = student(one)["features"].detach()
    sizes = link_sizes(_student_params(student), count_params(student.classifier),
                       lambda: student(one)["features"], lambda: student.classifier(feature_one))
    return {"summary": {"method": METHOD_LABELS["digital"], "feature_dim": int(test.shape[1]), "rates": ctx.rates,
                        "candidate_bits": list(b.digital_bits), "fallback": b.digital_fallback,
                        "fallback_class": prior, "fallback_accuracy": fallback_acc,
                        "quantized_clean_accuracy": quantized, **sizes,
                        "note": "ideal capacity-achieving code; receiver CSI assumed for decoding on every channel"},
            "records": records}


# ----------------------------------------------------------------------------- orchestration


def method_hash(ctx: Context, name: str, hashes: dict) -> str:
    cfg, b = ctx.cfg, ctx.cfg.baselines
    common = (name, ctx.grid, cfg.eval)
    if name in ("deep-jscc", "adjscc"):
        return config_hash(*common, hashes["cache"], cfg.codec.max_symbols, cfg.codec.rates, cfg.channel,
                           {k: getattr(b, k) for k in ("jscc_channels", "jscc_decoder_channels", "jscc_hidden")},
                           b.jscc_train)
    if name == "conference":
        student = input_fingerprints(cfg)["student"]  # a genotype file by content, not path
        return config_hash(*common, hashes["cache"], student, cfg.channel.snr_min, cfg.channel.snr_max,
                           b.conference_snrs, b.conference_stage1, b.conference_train, b.conference_tokens,
                           b.conference_d_model, b.conference_depth)
    if name == "digital":
        return config_hash(*common, hashes["stage1"], b.digital_bits, b.digital_fallback)
    return config_hash(*common, hashes["stage2"])  # rkd-sc and the ablations: their own stage-2 hash


def run_baselines(cfg: RunConfig, accelerator, only: Optional[list] = None) -> dict:
    """Main pipeline up to eval, every configured method and ablation, then the comparison report.

    ``only``: run just these of ``baselines.methods`` / ``ablation:<name>`` / ``rkd-sc`` (all by default);
    without ``rkd-sc`` the main run goes only up to stage 1 (what the others need), so two processes
    can split the methods. The comparison is written when the main evaluation exists.
    Returns ``{method: summary}``.
    """
    from rkd.baselines.variants import ablation_overrides, derive_config, run_variant
    from rkd.pipeline import Pipeline, stage_hashes

    pipeline = Pipeline(cfg, accelerator)
    pipeline.run(until="eval" if only is None or RKD_METHOD in only else "stage1")
    ctx = Context(cfg, accelerator, pipeline, comparison_grid(cfg))
    root = cfg.run_dir / "baselines"
    hashes = stage_hashes(cfg)
    jobs: list = [(RKD_METHOD, lambda out: rkd_system_results(ctx, cfg, RKD_METHOD), hashes)]
    for name in cfg.baselines.methods:
        runner = {"deep-jscc": lambda out: deep_jscc_results(ctx, out, adaptive=False),
                  "adjscc": lambda out: deep_jscc_results(ctx, out, adaptive=True),
                  "conference": lambda out: conference_results(ctx, out),
                  "digital": lambda out: digital_results(ctx)}[name]
        jobs.append((name, runner, hashes))
    for name in cfg.baselines.ablations:
        variant = derive_config(cfg, ablation_overrides(name, cfg), name)

        def run_ablation(out, variant=variant, name=name):
            run_variant(cfg, variant, accelerator, until="stage2")
            return rkd_system_results(ctx, variant, ablation_label(name)) if accelerator.is_main_process else {}

        jobs.append((ablation_label(name), run_ablation, stage_hashes(variant)))
    summaries = {}
    for name, runner, job_hashes in jobs:
        if only is not None and name not in only:
            continue
        directory = MethodDir(root, name.replace(":", "-"), method_hash(ctx, name, job_hashes))
        results = directory.done()
        if results is not None:
            accelerator.print(f"[rkd] baseline {name}: done for this config, skipping ({directory.path})")
        else:
            accelerator.print(f"[rkd] baseline {name}: running into {directory.path}")
            if accelerator.is_main_process:
                directory.begin()
            accelerator.wait_for_everyone()
            started = time.time()
            results = runner(directory.path)
            if accelerator.is_main_process:
                results["summary"]["seconds"] = time.time() - started
                directory.finish(results)
            accelerator.wait_for_everyone()
        summaries[name] = results.get("summary", {})
    if accelerator.is_main_process and (cfg.run_dir / "eval" / "results.json").exists():
        from rkd.compare import write_comparison

        path = write_comparison(cfg.run_dir, cfg.baselines.compare_k or max(cfg.codec.rates), cfg.eval.rate_margin)
        accelerator.print(f"[rkd] comparison: {path}")
    accelerator.wait_for_everyone()
    return summaries
