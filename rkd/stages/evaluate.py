"""The evaluation stage: accuracy x channel x SNR x channel uses, model sizes and FLOPs, and the report.

The student's tokens for the test set are computed once (the student is deterministic in eval
mode) and swept by ``rkd.evaluation.sweep``. Under N processes the SNR grid is dealt round-robin
(process r takes SNR points r, r+N, ...), each process sweeps every channel and k at its SNRs, and
the main process gathers the records back into grid order, adds the clean accuracies, sizes, FLOPs
and diagnostics, and writes the outputs (``rkd.evaluation.report``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from accelerate.utils import gather_object

from rkd.config import RunConfig
from rkd.data import student_transform
from rkd.draws import symbol_mask
from rkd.evaluation.classwise import chosen_snrs, classwise_summary, dataset_description, shared_predictions
from rkd.evaluation.diagnostics import effective_dimensions, rate_gains, summarise_rate_gains
from rkd.evaluation.rate_policy import write_rate_policy
from rkd.evaluation.records import clean_record
from rkd.evaluation.report import write_outputs
from rkd.evaluation.sweep import METHOD, channel_sweep, my_share, snr_grid
from rkd.hardware.decide import accelerator_precision
from rkd.measure import count_flops, count_params
from rkd.models.factory import load_stage1, load_stage2
from rkd.models.frozen_tokens import batched
from rkd.run.artifacts import read_json
from rkd.run.collective import on_main
from rkd.run.diskspace import DiskFullError
from rkd.stages.inputs import RunInputs

CODE_DIAGNOSTIC_SNR = 10.0  # nominal SNR (dB) the transmitter is told while its code's dimension is measured


def run(cfg: RunConfig, accelerator, inputs: RunInputs, out_dir: Path) -> dict:
    """Writes results.json, results.csv, plots and report.md into ``out_dir``.

    Collective: every process sweeps its round-robin share of the SNR grid, and of the per-class SNRs,
    on its device; the main process gathers them, adds clean accuracies, sizes and FLOPs (on its
    device), and writes the outputs, while the others wait for seconds, not for a CPU pass over the
    test set. A failure there (a full disk) raises on every process.
    """
    out_dir = Path(out_dir)
    bundle, cache = inputs.bundle, inputs.cache
    test = bundle.splits["test"]
    x = student_transform(cfg.data, bundle)(test.images)
    system = load_stage2(cfg, bundle, cache.features["test"].shape[1], inputs.path("stage1"), inputs.path("stage2"))
    system = system.eval().to(accelerator.device)
    tokens = batched(lambda t: system.student(t)["tokens"], x, cfg.eval.batch_size, accelerator.device)
    rates = cfg.eval.rates or cfg.codec.rates
    grid = snr_grid(cfg.eval)

    def share(points: list) -> list:
        return my_share(points, accelerator.process_index, accelerator.num_processes)

    swept = channel_sweep(
        system,
        tokens,
        test.labels,
        cfg.eval.channels,
        share(grid),
        rates,
        cfg.eval.batch_size,
        cfg.eval.seed,
        progress=accelerator.is_local_main_process,
    )
    snrs, _ = chosen_snrs(grid)
    per_class = shared_predictions(system, tokens, snrs, max(rates), cfg.eval.batch_size, cfg.eval.seed, share)
    if accelerator.num_processes > 1:
        swept, per_class = gather_object(swept), {k: v for part in gather_object([per_class]) for k, v in part.items()}
    position = {float(snr): i for i, snr in enumerate(grid)}
    swept = sorted(swept, key=lambda r: position[r["snr_db"]])  # stable: channel x k order within an SNR stays
    shared = {"tokens": tokens, "swept": swept, "per_class": per_class, "ranks": accelerator.num_processes}
    shared["precision"] = str(accelerator_precision(accelerator, cfg.mixed_precision))
    summary = on_main(accelerator, lambda: summarise(cfg, inputs, system, x, shared, out_dir), DiskFullError)
    if summary is not None:  # the stage record keeps the headline numbers; matrices stay in results.json
        return {k: v for k, v in summary.items() if k not in ("csi_assumption", "classwise")}
    return read_json(out_dir / "results.json")["summary"]


def summarise(cfg: RunConfig, inputs: RunInputs, system, x: torch.Tensor, shared: dict, out_dir: Path) -> dict:
    """Main process: clean accuracies, sizes, FLOPs and diagnostics beside the swept records; write everything.

    ``shared``: what every rank computed (the test tokens, the swept records, the per-class predictions)."""
    bundle, cache = inputs.bundle, inputs.cache
    labels = bundle.splits["test"].labels
    rates = cfg.eval.rates or cfg.codec.rates
    tokens = shared["tokens"]
    device = next(system.parameters()).device
    teacher_acc = float((cache.logits["test"].float().argmax(-1) == labels).float().mean())
    stage1 = load_stage1(cfg, bundle, cache.features["test"].shape[1], inputs.path("stage1")).eval().to(device)
    student_logits = batched(lambda t: stage1(t)["logits"], x, cfg.eval.batch_size, device)
    student_acc = float((student_logits.argmax(-1) == labels).float().mean())
    records = [
        clean_record("teacher", teacher_acc, int(labels.numel())),
        clean_record("student", student_acc, int(labels.numel())),
    ]
    records += shared["swept"]
    cpu = copy.deepcopy(system).cpu()  # sizes and FLOPs per image: counted on one image, on the CPU
    summary = {
        **model_costs(cfg, inputs.teacher().eval(), cpu, bundle.splits["test"].images[:1], x[:1], tokens[:1]),
        "teacher_accuracy": teacher_acc,
        "student_accuracy": student_acc,
        "n_test": int(labels.numel()),
        "num_classes": int(bundle.num_classes),
        "max_symbols": cfg.codec.max_symbols,
        "rates": rates,
        "teacher_source": cfg.teacher.source,
        "teacher_trust_remote_code": cfg.teacher.trust_remote_code,
        "cache_augmentation": cache.manifest.get("augmentation", "none"),
        "csi_assumption": {spec_label["channel_label"]: spec_label["csi"] for spec_label in records[2:]},
        "config_hash": inputs.hashes["eval"],
        "student_genotype": inputs.genotype_origin(),
        "code_diagnostics": code_diagnostics(system, tokens.to(device), records, rates),
        "evaluated_on": {"device": str(device), "processes": shared["ranks"]},
        "precision": {**run_precisions(inputs), "eval": shared["precision"]},
    }
    summary["compression_ratio"] = summary["teacher_params"] / max(1, summary["student_params"])
    summary["dataset"] = dataset_description(bundle, cfg.data.image_size)
    summary["classwise"] = classwise_summary(
        system,
        tokens,
        labels,
        student_logits.argmax(-1),
        bundle.class_names,
        snr_grid(cfg.eval),
        rates,
        cfg.eval.batch_size,
        cfg.eval.seed,
        rkd_preds=shared["per_class"],
    )
    write_outputs(out_dir, records, summary)
    write_rate_policy(out_dir / "rate_policy.json", records, cfg.eval.rate_margin, method=METHOD)
    return summary


def run_precisions(inputs: RunInputs) -> dict:
    """Each stage's number format and why, from the stage records (this stage's is written after it)."""
    found = {}
    for stage in ("teacher", "cache", "search", "stage1", "stage2"):
        path = inputs.path(stage) / "stage.json"
        summary = read_json(path).get("summary", {}) if path.exists() else {}
        if "precision" in summary:
            found[stage] = f"{summary['precision']}: {summary.get('precision_reason', '')}"
    return found


def model_costs(
    cfg: RunConfig, teacher, system, one_image: torch.Tensor, one_x: torch.Tensor, one_tokens: torch.Tensor
) -> dict:
    """Parameters and FLOPs per image of the teacher, the student, and each end of the link."""
    z = system.transmit(one_tokens, torch.zeros(1))
    mask = symbol_mask(torch.tensor([cfg.codec.max_symbols]), cfg.codec.max_symbols)
    state = torch.zeros(1, 2)
    return {
        "teacher_params": count_params(teacher),
        "student_params": count_params(system.student),
        "codec_tx_params": count_params(system.encoder),
        "receiver_params": count_params(system.decoder) + count_params(system.student.classifier),
        "teacher_flops": count_flops(teacher, one_image),
        "student_flops": count_flops(system.student, one_x),
        "codec_tx_flops": count_flops(system.transmit, one_tokens, torch.zeros(1)),
        "receiver_flops": count_flops(lambda: system.classify(system.decoder(z, mask, state))),
    }


def code_diagnostics(system, tokens: torch.Tensor, records: list, rates: list) -> dict:
    """Effective dimension of the transmitted code per k, and AWGN accuracy over the energy-only prediction."""
    return {
        "effective_dimension_snr_db": CODE_DIAGNOSTIC_SNR,
        "effective_dimension": effective_dimensions(system.transmit, tokens, rates, CODE_DIAGNOSTIC_SNR),
        "awgn_rate_gain": summarise_rate_gains(rate_gains(records, METHOD, "awgn")),
    }
