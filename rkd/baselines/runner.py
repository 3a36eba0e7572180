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

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from rkd.artifacts import atomic_write_json, read_json
from rkd.baselines import budget
from rkd.channels import channel_label, training_channel_specs
from rkd.config import RunConfig, config_hash
from rkd.evaluate import batched, channel_sweep, count_flops, count_params, snr_grid
from rkd.paired import save_correct
from rkd.fingerprint import input_fingerprints

RKD_METHOD = "rkd-sc"
METHOD_LABELS = {"deep-jscc": "deep-jscc", "adjscc": "adjscc", "deep-jscc-budget": "deep-jscc-budget",
                 "conference": "conference-rkd", "conference-awgn": "conference-rkd-awgn",
                 "label-digital": "label-digital", "feature-digital": "feature-digital", "digital": "digital"}


def trained_labels(channel_cfg) -> list:
    """The eval labels of the channels (and CSI modes) a method was trained on (its training mixture)."""
    return sorted({channel_label(spec) for spec in training_channel_specs(channel_cfg)})


def receiver_csi_labels(channel_specs: list) -> list:
    """The eval channels a digital scheme is designed for: those where its receiver knows the channel exactly."""
    return [channel_label(s) for s in channel_specs if s["name"] == "awgn" or s.get("csi", "perfect") == "perfect"]


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
    kept: Optional[list] = None  # per-image correctness of each swept record (baselines.per_image)

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

    @property
    def n_train(self) -> int:
        return int(self.bundle.splits["train"].labels.numel())

    def upstream_budget(self, stages: tuple = ("teacher", "cache", "search", "stage1")) -> dict:
        """The main run's finished stages a method builds on (teacher, cache, search, stage 1)."""
        return budget.pipeline_costs(self.cfg, self.cfg.run_dir, stages, self.n_train)

    def sweep(self, model, inputs, rates, method) -> list:
        e = self.cfg.eval
        return channel_sweep(model, inputs, self.labels, e.channels, self.grid, rates, e.batch_size, e.seed,
                             progress=self.accelerator.is_local_main_process, method=method, keep=self.kept)


def link_sizes(tx_params: int, rx_params: int, tx_call: Callable, rx_call: Callable) -> dict:
    """Parameters and FLOPs per image of both ends of a link (each call runs on one image)."""
    return {"tx_params": int(tx_params), "rx_params": int(rx_params),
            "tx_flops": count_flops(tx_call), "rx_flops": count_flops(rx_call)}


def _receiver_probe(model, z: torch.Tensor) -> Callable:
    mask = torch.ones(z.shape, dtype=torch.bool)
    state = torch.zeros(z.shape[0], 2)
    return lambda: model.classify(model.decoder(z, mask, state))


def student_params(student) -> int:
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
    sizes = link_sizes(student_params(system.student) + count_params(system.encoder),
                       count_params(system.decoder) + count_params(system.student.classifier),
                       lambda: system.transmit(system.student(one)["tokens"], torch.zeros(1)),
                       _receiver_probe(system, z))
    return {"summary": {"method": method, "max_symbols": cfg.codec.max_symbols, "rates": ctx.rates, **sizes,
                        "input_values": int(one.numel()),
                        "train_rates": cfg.codec.train_rates or cfg.codec.rates, "use_state": cfg.codec.use_state,
                        "kind": "scheme", "trained_on": trained_labels(cfg.channel),
                        "budget": budget.rkd_budget(cfg, cfg.run_dir, ctx.n_train)},
            "records": records}


# ----------------------------------------------------------------------------- Deep JSCC / ADJSCC


def train_deep_jscc(ctx: Context, out_dir: Path, adaptive: bool, train_cfg=None):
    from rkd.baselines.deep_jscc import DeepJSCCClassifier
    from rkd.baselines.link import NoTeacher
    from rkd.channels import training_channel_specs
    from rkd.data import make_loader
    from rkd.distill import DistillObjective, save_model
    from rkd.engine import fit
    from rkd.losses import build_kd_loss

    cfg, b, acc = ctx.cfg, ctx.cfg.baselines, ctx.accelerator
    tcfg = train_cfg or b.jscc_train
    model = DeepJSCCClassifier(ctx.bundle.channels, ctx.bundle.num_classes, training_channel_specs(cfg.channel),
                               cfg.codec.max_symbols, width=b.jscc_channels, decoder_width=b.jscc_decoder_channels,
                               hidden=b.jscc_hidden, adaptive=adaptive)
    loss = build_kd_loss(task=1.0, logit_kd=0.0, feature_kd=0.0, label_smoothing=tcfg.label_smoothing)
    objective = DistillObjective(ctx.transform, NoTeacher(), loss, channel_cfg=cfg.channel, rates=cfg.codec.rates,
                                 rank=acc.process_index, world_size=acc.num_processes, seed=cfg.seed,
                                 proportional_rates=cfg.codec.rate_sampling == "proportional")  # as RKD-SC's stage 2
    train_loader = make_loader(ctx.bundle.splits["train"], tcfg.batch_size, shuffle=True, seed=cfg.seed + 1,
                               drop_last=True)
    val_loader = make_loader(ctx.bundle.splits["val"], cfg.eval.batch_size, shuffle=False, seed=cfg.seed)
    summary = fit(acc, model, objective, train_loader, val_loader, tcfg, out_dir,
                  desc="adjscc" if adaptive else "deep-jscc")
    model = acc.unwrap_model(model).eval()
    if acc.is_main_process:
        save_model(model, out_dir / "model.safetensors")
    return model, summary


def deep_jscc_results(ctx: Context, out_dir: Path, adaptive: bool, budget_matched: bool = False) -> dict:
    """Deep JSCC / ADJSCC; ``budget_matched``: Deep JSCC trained on RKD-SC's total images seen (deep-jscc-budget)."""
    b, world = ctx.cfg.baselines, ctx.accelerator.num_processes
    method = METHOD_LABELS["deep-jscc-budget" if budget_matched else "adjscc" if adaptive else "deep-jscc"]
    tcfg = b.jscc_train
    if budget_matched:
        rkd = budget.rkd_budget(ctx.cfg, ctx.cfg.run_dir, ctx.n_train)
        if "stage2" not in rkd["parts"]:
            raise RuntimeError(f"deep-jscc-budget needs RKD-SC's finished stage 2 in {ctx.cfg.run_dir / 'stage2'} "
                               f"(its budget is matched); run it with rkd-sc (e.g. without --only)")
        schedule = budget.matched_schedule(rkd["images_seen"], tcfg.batch_size, world, ctx.n_train)
        tcfg = dataclasses.replace(tcfg, **schedule)
    model, train_summary = train_deep_jscc(ctx, out_dir, adaptive, tcfg)
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
                        "train_seconds": train_summary["seconds"], "kind": "scheme",
                        "trained_on": trained_labels(ctx.cfg.channel), "train_schedule": {"epochs": tcfg.epochs,
                                                                                        "max_steps": tcfg.max_steps},
                        "budget": budget.total({method: budget.fit_cost(train_summary, tcfg.batch_size, world,
                                                                        ctx.n_train)}, ctx.n_train)},
            "records": records}


# ----------------------------------------------------------------------------- the conference design


def conference_results(ctx: Context, out_dir: Path, awgn_only: bool = False) -> dict:
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
    specs = [{"name": "awgn"}] if awgn_only else training_channel_specs(cfg.channel)
    model = ConferenceAutoencoder(ctx.teacher_dim, ctx.bundle.num_classes, specs,
                                  tokens=b.conference_tokens, d_model=b.conference_d_model, depth=b.conference_depth)
    train_loader = make_loader(ctx.bundle.splits["train"], b.conference_train.batch_size, shuffle=True,
                               seed=cfg.seed + 2, drop_last=True)
    val_loader = make_loader(ctx.bundle.splits["val"], cfg.eval.batch_size, shuffle=False, seed=cfg.seed)
    loss = build_kd_loss(task=1.0, logit_kd=0.0, feature_kd=1.0, feature_loss="mse")
    objective = SNRScheduleObjective(features, ctx.cache, loss, b.conference_snrs,
                                     max(1, len(train_loader) // acc.num_processes), cfg.channel.snr_min,
                                     cfg.channel.snr_max, seed=cfg.seed, n_channels=len(specs))
    train_summary = fit(acc, model, objective, train_loader, val_loader, b.conference_train, out_dir, desc="conference")
    model = acc.unwrap_model(model).eval()
    if not acc.is_main_process:
        return {}
    save_model(model, out_dir / "model.safetensors")
    method = METHOD_LABELS["conference-awgn" if awgn_only else "conference"]
    records = ctx.sweep(model, features["test"], [model.max_symbols], method)
    one = ctx.inputs("test")[:1]
    z = model.transmit(features["test"][:1], torch.zeros(1)).detach()
    tx_params = (student_params(stage1.student) + count_params(stage1.projector)
                 + sum(count_params(m) for m in model.transmitter_modules()))
    sizes = link_sizes(tx_params, sum(count_params(m) for m in model.receiver_modules()),
                       lambda: model.transmit(stage1(one)["projected"], torch.zeros(1)), _receiver_probe(model, z))
    return {"summary": {"method": method, "max_symbols": model.max_symbols, "rates": [model.max_symbols],
                        "feature_dim": ctx.teacher_dim, "train_snrs": list(b.conference_snrs), "kind": "scheme",
                        "trained_on": sorted({channel_label(s) for s in specs}),
                        "budget": budget.total({**ctx.upstream_budget(("teacher", "cache")),
                                                **budget.pipeline_costs(student_cfg, student_cfg.run_dir, ("stage1",),
                                                                        ctx.n_train),
                                                method: budget.fit_cost(train_summary, b.conference_train.batch_size,
                                                                        acc.num_processes, ctx.n_train)}, ctx.n_train),
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
    sizes = link_sizes(student_params(student), count_params(student.classifier),
                       lambda: student(one)["features"], lambda: student.classifier(feature_one))
    return {"summary": {"method": METHOD_LABELS["digital"], "feature_dim": int(test.shape[1]), "rates": ctx.rates,
                        "candidate_bits": list(b.digital_bits), "fallback": b.digital_fallback,
                        "fallback_class": prior, "fallback_accuracy": fallback_acc,
                        "quantized_clean_accuracy": quantized, **sizes,
                        "kind": "bound", "trained_on": receiver_csi_labels(cfg.eval.channels),
                        "budget": budget.total(ctx.upstream_budget(), ctx.n_train),
                        "note": "ideal capacity-achieving code; receiver CSI assumed for decoding on every channel"},
            "records": records}


# ----------------------------------------------------------------------------- orchestration


def method_hash(ctx: Context, name: str, hashes: dict) -> str:
    cfg, b = ctx.cfg, ctx.cfg.baselines
    common = (name, ctx.grid, cfg.eval, b.per_image)
    if name in ("deep-jscc", "adjscc", "deep-jscc-budget"):
        return config_hash(*common, hashes["cache"], cfg.codec.max_symbols, cfg.codec.rates, cfg.channel,
                           {k: getattr(b, k) for k in ("jscc_channels", "jscc_decoder_channels", "jscc_hidden")},
                           b.jscc_train, hashes["stage2"] if name == "deep-jscc-budget" else None)
    if name in ("label-digital", "feature-digital"):
        return config_hash(*common, hashes["stage1"], b.digital_bits, b.digital_fallback, b.digital_target_error)
    if name in ("conference", "conference-awgn"):
        student = input_fingerprints(cfg)["student"]  # a genotype file by content, not path
        return config_hash(*common, hashes["cache"], student, cfg.channel.snr_min, cfg.channel.snr_max,
                           b.conference_snrs, b.conference_stage1, b.conference_train, b.conference_tokens,
                           b.conference_d_model, b.conference_depth, cfg.channel if name == "conference" else "awgn")
    if name == "digital":
        return config_hash(*common, hashes["stage1"], b.digital_bits, b.digital_fallback)
    return config_hash(*common, hashes["stage2"])  # rkd-sc and the ablations: their own stage-2 hash


def method_jobs(ctx: Context, cfg: RunConfig, accelerator) -> list:
    """``(name, runner(out_dir) -> results, stage hashes)`` for RKD-SC, every configured method and ablation."""
    from rkd.baselines.digital_schemes import feature_digital_results, label_digital_results  # it imports this module
    from rkd.baselines.variants import ablation_overrides, derive_config, run_variant
    from rkd.pipeline import stage_hashes

    hashes = stage_hashes(cfg)
    table = {"deep-jscc": lambda out: deep_jscc_results(ctx, out, adaptive=False),
             "adjscc": lambda out: deep_jscc_results(ctx, out, adaptive=True),
             "deep-jscc-budget": lambda out: deep_jscc_results(ctx, out, adaptive=False, budget_matched=True),
             "conference": lambda out: conference_results(ctx, out),
             "conference-awgn": lambda out: conference_results(ctx, out, awgn_only=True),
             "label-digital": lambda out: label_digital_results(ctx, METHOD_LABELS["label-digital"]),
             "feature-digital": lambda out: feature_digital_results(ctx, METHOD_LABELS["feature-digital"]),
             "digital": lambda out: digital_results(ctx)}
    jobs: list = [(RKD_METHOD, lambda out: rkd_system_results(ctx, cfg, RKD_METHOD), hashes)]
    jobs += [(name, table[name], hashes) for name in cfg.baselines.methods]
    for name in cfg.baselines.ablations:
        variant = derive_config(cfg, ablation_overrides(name, cfg), name)

        def run_ablation(out, variant=variant, name=name):
            run_variant(cfg, variant, accelerator, until="stage2")
            return rkd_system_results(ctx, variant, ablation_label(name)) if accelerator.is_main_process else {}

        jobs.append((ablation_label(name), run_ablation, stage_hashes(variant)))
    return jobs


def run_job(ctx: Context, directory: MethodDir, name: str, runner: Callable) -> dict:
    """One method into its directory (skipped when done for this config); per-image correctness beside it."""
    accelerator = ctx.accelerator
    results = directory.done()
    if results is not None:
        accelerator.print(f"[rkd] baseline {name}: done for this config, skipping ({directory.path})")
        return results
    accelerator.print(f"[rkd] baseline {name}: running into {directory.path}")
    if accelerator.is_main_process:
        directory.begin()
    accelerator.wait_for_everyone()
    started = time.time()
    ctx.kept = [] if ctx.cfg.baselines.per_image else None
    results = runner(directory.path)
    if accelerator.is_main_process:
        results["summary"]["seconds"] = time.time() - started
        if ctx.kept and len(ctx.kept) == len(results["records"]):  # the capacity bound keeps none
            save_correct(directory.path, ctx.kept)
        directory.finish(results)
    ctx.kept = None
    accelerator.wait_for_everyone()
    return results


def run_baselines(cfg: RunConfig, accelerator, only: Optional[list] = None, report: bool = True) -> dict:
    """Main pipeline up to eval, every configured method and ablation, each extra seed, then the comparison report.

    ``only``: run just these of ``baselines.methods`` / ``ablation:<name>`` / ``rkd-sc`` (all by default);
    without ``rkd-sc`` the main run goes only up to stage 1 (what the others need), so two processes
    can split the methods. Every seed of ``baselines.seeds`` other than ``seed`` reruns the methods
    (not the ablations) in ``<run>/seeds/seed-<s>`` (``report=False`` there). The comparison is
    written when the main evaluation exists. Returns ``{method: summary}`` of this seed.
    """
    from rkd.baselines.variants import seed_config
    from rkd.pipeline import Pipeline

    pipeline = Pipeline(cfg, accelerator)
    pipeline.run(until="eval" if only is None or RKD_METHOD in only else "stage1")
    ctx = Context(cfg, accelerator, pipeline, comparison_grid(cfg))
    summaries = {}
    jobs = [job for job in method_jobs(ctx, cfg, accelerator) if only is None or job[0] in only]
    for i, (name, runner, job_hashes) in enumerate(jobs):
        accelerator.print(f"[rkd] seed {cfg.seed}, method {i + 1}/{len(jobs)}: {name}")
        directory = MethodDir(cfg.run_dir / "baselines", name.replace(":", "-"), method_hash(ctx, name, job_hashes))
        summaries[name] = run_job(ctx, directory, name, runner).get("summary", {})
    if not report:
        return summaries
    for seed in cfg.baselines.seeds or [cfg.seed]:
        if seed != cfg.seed:
            accelerator.print(f"[rkd] seed {seed}: every method retrained and swept in {cfg.run_dir / 'seeds'}")
            run_baselines(seed_config(cfg, seed), accelerator, only, report=False)
    if accelerator.is_main_process and (cfg.run_dir / "eval" / "results.json").exists():
        from rkd.compare import write_comparison

        path = write_comparison(cfg.run_dir, cfg.baselines.compare_k or max(cfg.codec.rates), cfg.eval.rate_margin,
                                seeds=cfg.baselines.seeds or [cfg.seed])
        accelerator.print(f"[rkd] comparison: {path}")
    accelerator.wait_for_everyone()
    return summaries
