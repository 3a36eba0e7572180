"""The evaluation's outputs: results.json and .csv, accuracy-vs-SNR plots, and report.md.

``rkd report`` re-renders the plots and the report from an existing results.json, so a change of
presentation never needs a rerun.
"""

from __future__ import annotations

import csv
from pathlib import Path

from rkd.evaluation.classwise import csv_rows, describe_dataset, plot_confusion
from rkd.evaluation.classwise import render_lines as render_classwise
from rkd.run.artifacts import atomic_write, atomic_write_json, atomic_write_text, read_json


def write_outputs(out_dir: Path, records: list, summary: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "results.json", {"summary": summary, "records": records})
    fields = [
        "method",
        "channel",
        "csi",
        "k_factor",
        "channel_label",
        "snr_db",
        "channel_uses",
        "accuracy",
        "n_test",
        "class",
    ]  # empty on the overall rows; the per-class rows (rkd.evaluation.classwise) name their class

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
                pts = sorted(
                    (r["snr_db"], r["accuracy"]) for r in rows if r["method"] == method and r["channel_uses"] == k
                )
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


def render_code_diagnostics(d: dict) -> list:
    """The report's section that shows whether extra symbols carry new information."""
    dims = d["effective_dimension"]
    lines = [
        "## Does the code use its symbols?",
        "",
        f"Effective dimension (participation ratio of the 2k reals sent, test set, nominal "
        f"{d['effective_dimension_snr_db']:g} dB): a repetition code stays near 2 for every k.",
        "",
        "| k | " + " | ".join(str(k) for k in dims) + " |",
        "|---|" + "---:|" * len(dims),
        "| effective dimension | " + " | ".join(f"{v:.1f}" for v in dims.values()) + " |",
        "",
    ]
    gains = d.get("awgn_rate_gain")
    if gains:
        lines += [
            "AWGN accuracy minus the energy-only prediction (the shortest code at the same total energy, "
            "SNR + 10 log10(k / k_min)), in points, over the SNRs where it can be read off the grid:",
            "",
            "| k | mean gain | min gain | SNRs |",
            "|---:|---:|---:|---:|",
        ]
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
    lines += [
        "## Accuracy (%) over the channel",
        "",
        "CSI: `csi` = perfect means the receiver equalises with the true fading gain; pilot means it estimates "
        "the gain from pilot symbols counted in k (LMMSE) and MMSE-equalises; none means it does not equalise.",
        "",
        "| method | channel | csi | k (channel uses) | " + " | ".join(f"{v:g} dB" for v in shown) + " |",
        "|---|---|---|---:|" + "---:|" * len(shown),
    ]
    keys = list(
        dict.fromkeys(
            (r["method"], r["channel_label"], r["channel"], r["csi"], r["channel_uses"]) for r in channel_records
        )
    )
    for method, label, _channel, csi, k in keys:
        row = {
            r["snr_db"]: r["accuracy"]
            for r in channel_records
            if (r["method"], r["channel_label"], r["channel_uses"]) == (method, label, k)
        }
        cells = " | ".join(f"{100 * row[v]:.2f}" if v in row else "" for v in shown)
        lines.append(f"| {method} | {label} | {csi} | {k} | {cells} |")
    if "classwise" in s:
        lines += [""] + render_classwise(s["classwise"])[:-1]
    lines += [
        "",
        "Plots: `accuracy_vs_snr.png` (all channels) and one `accuracy_vs_snr_<channel>.png` per channel.",
        "",
    ]
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
