"""`rkd baselines`: train and sweep every baseline and ablation beside RKD-SC, then write the comparison.

Everything goes through the same pieces as RKD-SC: ``rkd.engine.fit`` trains, the stage-2
objective draws SNR / k / channel per sample, one channel sweep sweeps with the same seeded noise.
All methods, RKD-SC included, are swept on one grid: the eval grid plus ``baselines.extra_snrs``
(so the comparison table has -5 and 5 dB). Each method writes
``runs/<name>/baselines/<method>/results.json`` (records in the eval format + a summary with
transmitter/receiver parameters and FLOPs per image); a method whose config hash is unchanged is
skipped, one whose hash changed is moved aside, as pipeline stages are. Training is collective
under ``accelerate launch``; the sweeps run on the main process. Methods are looked up by name in
``rkd.baselines.registry.METHODS``, ablations in ``rkd.baselines.variants.ABLATIONS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rkd.baselines.context import (
    RKD_METHOD,
    Context,
    MethodDir,
    RunStages,
    ablation_label,
    comparison_grid,
    method_path,
)
from rkd.baselines.registry import METHODS
from rkd.baselines.rkd_sc import rkd_system_results
from rkd.baselines.variants import ablation_overrides, derive_config, run_variant, seed_config
from rkd.config import RunConfig, config_hash
from rkd.evaluation.compare import ComparisonError, write_comparison
from rkd.evaluation.paired import save_correct
from rkd.run.hashing import stage_hashes


def method_hash(ctx: Context, name: str, hashes: dict) -> str:
    """The settings a method's results depend on: the sweep, then its own (RKD-SC and ablations: their stage 2)."""
    cfg = ctx.cfg
    common = (name, ctx.grid, cfg.eval, cfg.baselines.per_image)
    own = METHODS[name].settings(ctx, hashes) if name in METHODS else (hashes["stage2"],)
    return config_hash(*common, *own)


def method_jobs(ctx: Context) -> list:
    """``(name, runner(out_dir) -> results, stage hashes)`` for RKD-SC, every configured method and ablation."""
    cfg, accelerator = ctx.cfg, ctx.accelerator
    hashes = stage_hashes(cfg)
    jobs: list = [(RKD_METHOD, lambda out: rkd_system_results(ctx, cfg, RKD_METHOD), hashes)]
    for name in cfg.baselines.methods:
        method = METHODS[name]
        jobs.append((name, lambda out, method=method: method.run(ctx, out, method.label), hashes))
    for name in cfg.baselines.ablations:
        variant = derive_config(cfg, ablation_overrides(name, cfg), name)

        def run_ablation(out, variant=variant, name=name):
            run_variant(cfg, variant, accelerator, ctx.run_stages, until="stage2")
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


def expected_methods(cfg: RunConfig) -> list:
    """The method labels a full ``rkd baselines`` run of ``cfg`` produces (what its comparison requires)."""
    labels = [RKD_METHOD] + [METHODS[name].label for name in cfg.baselines.methods]
    return labels + [ablation_label(name) for name in cfg.baselines.ablations]


def write_report(cfg: RunConfig, accelerator, only: list | None) -> None:
    """The comparison of every configured method and seed (with ``only``, a share of the methods: of whatever
    exists). Cells missing are told in one line, not raised: the other processes wait at a barrier."""
    try:
        path = write_comparison(
            cfg.run_dir,
            cfg.baselines.compare_k or max(cfg.codec.rates),
            cfg.eval.rate_margin,
            seeds=cfg.baselines.seeds or [cfg.seed],
            methods=expected_methods(cfg) if only is None else None,
            noninferiority_margin=cfg.baselines.noninferiority_margin,
        )
    except ComparisonError as exc:
        accelerator.print(f"[rkd] comparison not written: {exc}")
        return
    accelerator.print(f"[rkd] comparison: {path}")


def run_baselines(
    cfg: RunConfig, accelerator, run_stages: RunStages, only: list | None = None, report: bool = True
) -> dict:
    """Main pipeline up to eval, every configured method and ablation, each extra seed, then the comparison report.

    ``run_stages(cfg, until)`` runs a config's pipeline stages up to ``until`` and returns its inputs
    (``bundle``, ``cache``; see ``rkd.baselines.context``). ``only``: run just these of
    ``baselines.methods`` / ``ablation:<name>`` / ``rkd-sc`` (all by default); without ``rkd-sc``
    the main run goes only up to stage 1 (what the others need), so two processes can split the
    methods. Every seed of ``baselines.seeds`` other than ``seed`` reruns the methods (not the
    ablations) in ``<run>/seeds/seed-<s>`` (``report=False`` there). The comparison is written when
    the main evaluation exists. Returns ``{method: summary}`` of this seed.
    """
    run = run_stages(cfg, "eval" if only is None or RKD_METHOD in only else "stage1")
    ctx = Context(cfg, accelerator, run, run_stages, comparison_grid(cfg))
    summaries = {}
    jobs = [job for job in method_jobs(ctx) if only is None or job[0] in only]
    for i, (name, runner, job_hashes) in enumerate(jobs):
        accelerator.print(f"[rkd] seed {cfg.seed}, method {i + 1}/{len(jobs)}: {name}")
        directory = MethodDir(method_path(cfg.run_dir / "baselines", name), method_hash(ctx, name, job_hashes))
        summaries[name] = run_job(ctx, directory, name, runner).get("summary", {})
    if not report:
        return summaries
    for seed in cfg.baselines.seeds or [cfg.seed]:
        if seed != cfg.seed:
            accelerator.print(f"[rkd] seed {seed}: every method retrained and swept in {cfg.run_dir / 'seeds'}")
            run_baselines(seed_config(cfg, seed), accelerator, run_stages, only, report=False)
    if accelerator.is_main_process and (cfg.run_dir / "eval" / "results.json").exists():
        write_report(cfg, accelerator, only)
    accelerator.wait_for_everyone()
    return summaries
