"""Evaluation: accuracy x channel x SNR x channel uses, model sizes and FLOPs, plots and a report.

The student's tokens for the test set are computed once (the student is deterministic in eval
mode); the transmitter output is computed once per SNR; each channel/k pair then only costs a
channel draw and the receiver, run on the first k symbols. Every noise draw is seeded.

Under N processes the SNR grid is dealt round-robin (process r takes SNR points r, r+N, ...), each
process sweeps every channel and k at its SNRs, and the main process gathers the records back into
grid order. Each (SNR, channel, k) cell draws its noise from a generator seeded with
``eval.seed`` alone, on the CPU, so a cell's records do not depend on which process ran it or how
many there were.

    accelerate launch rkd/evaluate.py --config <yaml>      # or: rkd evaluate / rkd report
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

if __package__ in (None, ""):  # launched by path: import rkd.* from this checkout, never rkd/ as top level
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from rkd.artifacts import atomic_write, atomic_write_json, atomic_write_text, read_json
from rkd.channels import channel_from_spec, channel_label
from rkd.classwise import classwise_summary, csv_rows, dataset_description, describe_dataset, plot_confusion
from rkd.classwise import render_lines as render_classwise
from rkd.code_diagnostics import effective_dimensions, rate_gains, summarise_rate_gains
from rkd.data import student_transform
from rkd.frozen_features import batched
from rkd.models.cat import symbol_mask
from rkd.progress import progress_bar

METHOD = "rkd-sc"


def snr_grid(eval_cfg) -> list:
    count = int(round((eval_cfg.snr_max - eval_cfg.snr_min) / eval_cfg.snr_step)) + 1
    return [round(eval_cfg.snr_min + i * eval_cfg.snr_step, 6) for i in range(count)]


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(fn, *args) -> int:
    """FLOPs of one forward call, counted by torch's dispatcher (per image when args hold one image).

    Runs with autograd on: the counter's module tracker hooks the graph and fails without it.
    """
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


def my_share(items: list, rank: int, world_size: int) -> list:
    """Round-robin: process ``rank`` of ``world_size`` takes items rank, rank + world_size, ..."""
    return list(items)[rank::world_size]


@torch.no_grad()
def channel_sweep(system, tokens: torch.Tensor, labels: torch.Tensor, channel_specs: list, snrs: list, rates: list,
                  batch_size: int, seed: int, progress: bool = True, method: str = METHOD,
                  keep: list | None = None) -> list:
    """Accuracy records of an RKD system for every channel x SNR x k, on precomputed student tokens.

    Any model with ``transmit(inputs, snr)``, ``decoder(y, mask, state)`` and ``classify(features)``
    sweeps the same way under its own ``method`` name (the baselines do), with the same seeded noise.
    ``keep``: a list that receives each record's per-image correctness (bool ``[n]``, for paired tests).
    """
    system.eval()
    records = []
    n = tokens.shape[0]
    device = next(system.parameters()).device
    tokens, labels = tokens.to(device), labels.to(device)
    channels = [channel_from_spec(spec) for spec in channel_specs]
    bar = progress_bar(len(snrs) * len(channels) * len(rates), "evaluate", enabled=progress, unit="cells")
    for snr in snrs:
        snr_all = torch.full((n,), float(snr), device=device)
        z = batched(lambda t: system.transmit(t, snr_all[: t.shape[0]]), tokens, batch_size)
        for spec, channel in zip(channel_specs, channels):
            for k in rates:
                generator = torch.Generator().manual_seed(seed)
                correct, hits = 0, []
                for start in range(0, n, batch_size):
                    zb = z[start:start + batch_size, :k]
                    snr_b = snr_all[start:start + zb.shape[0]]
                    mask = torch.ones(zb.shape, dtype=torch.bool, device=device)
                    out = channel.transmit(zb, snr_b, mask, generator=generator)
                    features = system.decoder(out.y, out.mask, out.state.float())
                    preds = system.classify(features).argmax(-1)
                    hit = preds == labels[start:start + zb.shape[0]]
                    correct += int(hit.sum())
                    hits.append(hit.cpu())
                if keep is not None:
                    keep.append(torch.cat(hits))
                records.append({
                    "method": method, "channel": spec["name"], "csi": spec.get("csi", "perfect") if spec["name"] != "awgn" else "n/a",
                    "k_factor": spec.get("k_factor") if spec["name"] == "rician" else None,
                    "channel_label": channel_label(spec), "snr_db": float(snr), "channel_uses": int(k),
                    "accuracy": correct / n, "n_test": n,
                })
                bar.update(1)
    bar.close()
    return records


def evaluate_run(pipeline, out_dir: Path) -> dict:
    """The eval stage of a pipeline: writes results.json, results.csv, plots and report.md.

    Collective: every process sweeps its round-robin share of the SNR grid on its device; the main
    process gathers the records, adds clean accuracies, sizes and FLOPs, and writes the outputs.
    """
    from accelerate.utils import gather_object

    from rkd.distill import load_stage1, load_stage2

    cfg, accelerator = pipeline.cfg, pipeline.accelerator
    out_dir = Path(out_dir)
    device = accelerator.device
    summary: dict = {}
    bundle, cache = pipeline.bundle, pipeline.cache
    test = bundle.splits["test"]
    labels = test.labels
    teacher_dim = cache.features["test"].shape[1]
    x = student_transform(cfg.data, bundle)(test.images)
    system = load_stage2(cfg, bundle, teacher_dim, pipeline.run_dir.path("stage1"), pipeline.run_dir.path("stage2"))
    system = system.eval().to(device)
    tokens = batched(lambda t: system.student(t)["tokens"], x, cfg.eval.batch_size, device)
    rates = cfg.eval.rates or cfg.codec.rates
    grid = snr_grid(cfg.eval)
    swept = channel_sweep(system, tokens, labels, cfg.eval.channels,
                          my_share(grid, accelerator.process_index, accelerator.num_processes), rates,
                          cfg.eval.batch_size, cfg.eval.seed, progress=accelerator.is_local_main_process)
    if accelerator.num_processes > 1:
        swept = gather_object(swept)
    if accelerator.is_main_process:
        position = {float(snr): i for i, snr in enumerate(grid)}
        swept = sorted(swept, key=lambda r: position[r["snr_db"]])  # stable: channel x k order within an SNR stays
        system = system.cpu()
        teacher_acc = float((cache.logits["test"].float().argmax(-1) == labels).float().mean())
        stage1 = load_stage1(cfg, bundle, teacher_dim, pipeline.run_dir.path("stage1")).eval()
        student_logits = batched(lambda t: stage1(t)["logits"], x, cfg.eval.batch_size)
        student_acc = float((student_logits.argmax(-1) == labels).float().mean())
        records = [
            {"method": "teacher", "channel": "clean", "csi": "n/a", "k_factor": None, "channel_label": "clean",
             "snr_db": None, "channel_uses": None, "accuracy": teacher_acc, "n_test": int(labels.numel())},
            {"method": "student", "channel": "clean", "csi": "n/a", "k_factor": None, "channel_label": "clean",
             "snr_db": None, "channel_uses": None, "accuracy": student_acc, "n_test": int(labels.numel())},
        ]
        records += swept
        teacher = pipeline.teacher().eval()
        one_image = test.images[:1]
        one_x = x[:1]
        one_tokens = tokens[:1]
        z = system.transmit(one_tokens, torch.zeros(1))
        mask = symbol_mask(torch.tensor([cfg.codec.max_symbols]), cfg.codec.max_symbols)
        state = torch.zeros(1, 2)
        summary = {
            "teacher_params": count_params(teacher),
            "student_params": count_params(system.student),
            "codec_tx_params": count_params(system.encoder),
            "receiver_params": count_params(system.decoder) + count_params(system.student.classifier),
            "teacher_flops": count_flops(teacher, one_image),
            "student_flops": count_flops(system.student, one_x),
            "codec_tx_flops": count_flops(system.transmit, one_tokens, torch.zeros(1)),
            "receiver_flops": count_flops(lambda: system.classify(system.decoder(z, mask, state))),
            "teacher_accuracy": teacher_acc,
            "student_accuracy": student_acc,
            "n_test": int(labels.numel()),
            "max_symbols": cfg.codec.max_symbols,
            "rates": rates,
            "teacher_source": cfg.teacher.source,
            "teacher_trust_remote_code": cfg.teacher.trust_remote_code,
            "cache_augmentation": cache.manifest.get("augmentation", "none"),
            "csi_assumption": {spec_label["channel_label"]: spec_label["csi"] for spec_label in records[2:]},
            "config_hash": pipeline.run_dir.hashes["eval"],
            "student_genotype": pipeline.genotype_origin(),
            "code_diagnostics": code_diagnostics(system, tokens.cpu(), records, rates),
        }
        summary["compression_ratio"] = summary["teacher_params"] / max(1, summary["student_params"])
        summary["dataset"] = dataset_description(bundle, cfg.data.image_size)
        summary["classwise"] = classwise_summary(system, tokens, labels, student_logits.argmax(-1), bundle.class_names,
                                                 grid, rates, cfg.eval.batch_size, cfg.eval.seed)
        write_outputs(out_dir, records, summary)
        from rkd.ratepolicy import write_rate_policy

        write_rate_policy(out_dir / "rate_policy.json", records, cfg.eval.rate_margin, method=METHOD)
    accelerator.wait_for_everyone()
    if summary:  # the stage record keeps the headline numbers; matrices stay in results.json
        return {k: v for k, v in summary.items() if k not in ("csi_assumption", "classwise")}
    return read_json(out_dir / "results.json")["summary"]


def write_outputs(out_dir: Path, records: list, summary: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "results.json", {"summary": summary, "records": records})
    fields = ["method", "channel", "csi", "k_factor", "channel_label", "snr_db", "channel_uses", "accuracy", "n_test",
              "class"]  # empty on the overall rows; the per-class rows (rkd.classwise) name their class

    def write_csv(path: Path) -> None:
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(records + csv_rows(summary.get("classwise")))

    atomic_write(out_dir / "results.csv", write_csv)
    plot_results(out_dir, records, summary)
    atomic_write_text(out_dir / "report.md", render_report(records, summary))


def plot_results(out_dir: Path, records: list, summary: dict) -> list:
    """One PNG per channel (a line per k) and one figure with a panel per channel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    channel_records = [r for r in records if r["snr_db"] is not None]
    labels = list(dict.fromkeys(r["channel_label"] for r in channel_records))
    paths = []

    def draw(ax, label):
        rows = [r for r in channel_records if r["channel_label"] == label]
        for method in dict.fromkeys(r["method"] for r in rows):
            for k in sorted({r["channel_uses"] for r in rows if r["method"] == method}):
                pts = sorted((r["snr_db"], r["accuracy"]) for r in rows if r["method"] == method and r["channel_uses"] == k)
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", ms=3, label=f"{method} k={k}")
        ax.axhline(100 * summary["teacher_accuracy"], color="k", ls="--", lw=1, label="teacher (clean)")
        ax.axhline(100 * summary["student_accuracy"], color="gray", ls=":", lw=1, label="student (clean)")
        ax.set_title(label)
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)

    for label in labels:
        fig, ax = plt.subplots(figsize=(6, 4))
        draw(ax, label)
        ax.legend(fontsize=7)
        path = out_dir / f"accuracy_vs_snr_{label}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    if labels:
        fig, axes = plt.subplots(1, len(labels), figsize=(4.5 * len(labels), 4), sharey=True, squeeze=False)
        for ax, label in zip(axes[0], labels):
            draw(ax, label)
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / "accuracy_vs_snr.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths + plot_confusion(out_dir, summary.get("classwise"))


CODE_DIAGNOSTIC_SNR = 10.0  # nominal SNR (dB) the transmitter is told while its code's dimension is measured


def code_diagnostics(system, tokens: torch.Tensor, records: list, rates: list) -> dict:
    """Effective dimension of the transmitted code per k, and AWGN accuracy over the energy-only prediction."""
    return {
        "effective_dimension_snr_db": CODE_DIAGNOSTIC_SNR,
        "effective_dimension": effective_dimensions(system.transmit, tokens, rates, CODE_DIAGNOSTIC_SNR),
        "awgn_rate_gain": summarise_rate_gains(rate_gains(records, METHOD, "awgn")),
    }


def render_code_diagnostics(d: dict) -> list:
    """The report's section that shows whether extra symbols carry new information."""
    dims = d["effective_dimension"]
    lines = ["## Does the code use its symbols?", "",
             f"Effective dimension (participation ratio of the 2k reals sent, test set, nominal "
             f"{d['effective_dimension_snr_db']:g} dB): a repetition code stays near 2 for every k.", "",
             "| k | " + " | ".join(str(k) for k in dims) + " |", "|---|" + "---:|" * len(dims),
             "| effective dimension | " + " | ".join(f"{v:.1f}" for v in dims.values()) + " |", ""]
    gains = d.get("awgn_rate_gain")
    if gains:
        lines += ["AWGN accuracy minus the energy-only prediction (the shortest code at the same total energy, "
                  "SNR + 10 log10(k / k_min)), in points, over the SNRs where it can be read off the grid:", "",
                  "| k | mean gain | min gain | SNRs |", "|---:|---:|---:|---:|"]
        lines += [f"| {k} | {100 * g['mean']:+.2f} | {100 * g['min']:+.2f} | {g['n_snrs']} |" for k, g in gains.items()]
        lines.append("")
    return lines


def render_report(records: list, summary: dict) -> str:
    s = summary
    lines = [
        "# RKD-SC evaluation report",
        "",
        f"Config hash `{s.get('config_hash', '?')}`; teacher `{s.get('teacher_source', '?')}`"
        f"{' (its remote code was run: --trust-remote-code)' if s.get('teacher_trust_remote_code') else ''}; "
        f"teacher cache: {s.get('cache_augmentation', '?')}; test images: {s['n_test']}.",
        "",
        "| model | parameters | FLOPs / image | clean test accuracy |",
        "|---|---:|---:|---:|",
        f"| teacher | {s['teacher_params']:,} | {s['teacher_flops']:,} | {100 * s['teacher_accuracy']:.2f}% |",
        f"| student encoder (stage 1) | {s['student_params']:,} | {s['student_flops']:,} | {100 * s['student_accuracy']:.2f}% |",
        f"| CAT encoder (transmitter) | {s['codec_tx_params']:,} | {s['codec_tx_flops']:,} | |",
        f"| CAT decoder + head (receiver) | {s['receiver_params']:,} | {s['receiver_flops']:,} | |",
        "",
        f"Student / teacher parameters: 1/{s['compression_ratio']:.1f}.",
        "",
    ]
    if "dataset" in s:
        lines += [describe_dataset(s["dataset"]), ""]
    if "student_genotype" in s:
        g = s["student_genotype"]
        lines += [f"Student cells: `{g['genotype']}`, {g['how']}.", ""]
    channel_records = [r for r in records if r["snr_db"] is not None]
    snrs = sorted({r["snr_db"] for r in channel_records})
    shown = [v for v in (-10, -6, -2, 0, 4, 10, 20) if v in snrs] or snrs
    lines += ["## Accuracy (%) over the channel", "",
              "CSI: `csi` = perfect means the receiver equalises with the true fading gain; pilot means it estimates "
              "the gain from pilot symbols counted in k (LMMSE) and MMSE-equalises; none means it does not equalise.", "",
              "| method | channel | csi | k (channel uses) | " + " | ".join(f"{v:g} dB" for v in shown) + " |",
              "|---|---|---|---:|" + "---:|" * len(shown)]
    keys = list(dict.fromkeys((r["method"], r["channel_label"], r["channel"], r["csi"], r["channel_uses"]) for r in channel_records))
    for method, label, channel, csi, k in keys:
        row = {r["snr_db"]: r["accuracy"] for r in channel_records
               if (r["method"], r["channel_label"], r["channel_uses"]) == (method, label, k)}
        cells = " | ".join(f"{100 * row[v]:.2f}" if v in row else "" for v in shown)
        lines.append(f"| {method} | {label} | {csi} | {k} | {cells} |")
    if "classwise" in s:
        lines += [""] + render_classwise(s["classwise"])[:-1]
    lines += ["", "Plots: `accuracy_vs_snr.png` (all channels) and one `accuracy_vs_snr_<channel>.png` per channel.", ""]
    if "code_diagnostics" in s:
        lines += render_code_diagnostics(s["code_diagnostics"])
    return "\n".join(lines)


def report(run_dir: Path) -> Path:
    """Re-render plots and the markdown report from an existing results.json."""
    eval_dir = Path(run_dir) / "eval"
    data = read_json(eval_dir / "results.json")
    plot_results(eval_dir, data["records"], data["summary"])
    atomic_write_text(eval_dir / "report.md", render_report(data["records"], data["summary"]))
    return eval_dir / "report.md"


def main(argv=None) -> int:
    from rkd.cli import main as cli_main

    return cli_main(["evaluate", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
