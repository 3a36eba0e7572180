"""The comparison report: RKD-SC against its baselines and ablations, one figure and one markdown file.

Reads what ``rkd baselines`` wrote (``runs/<name>/baselines/*/results.json``) and the main
evaluation (``runs/<name>/eval/results.json``, for the teacher's accuracy and size), and writes
``runs/<name>/compare/``: ``results.json`` (all records), ``comparison.png`` (accuracy vs SNR, a
panel per channel, a line per method at the chosen k), ``comparison.md`` (tables and the targets
check) and ``rate_policy.json`` (per method with several k). ``rkd report`` re-renders it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rkd.artifacts import atomic_write_json, atomic_write_text, read_json
from rkd.ratepolicy import rate_policy

TABLE_SNRS = (-10.0, -5.0, 0.0, 5.0, 10.0, 20.0)
KEPT_SNR = 10.0  # "fraction of the teacher's accuracy kept" is read at this SNR
TARGET_CHANNELS = ("awgn", "rayleigh")
RKD = "rkd-sc"


def load_method_results(run_dir: Path) -> dict:
    """``{method: {"summary", "records"}}`` for every finished method under ``baselines/``."""
    out = {}
    root = Path(run_dir) / "baselines"
    for path in sorted(root.glob("*/results.json")) if root.exists() else []:
        if ".stale-" in path.parent.name or not (path.parent / "done.json").exists():
            continue
        data = read_json(path)
        out[data["summary"]["method"]] = data
    return out


def nearest(values: list, target: float) -> Optional[float]:
    return min(values, key=lambda v: (abs(v - target), v)) if values else None


def curve(records: list, method: str, label: str, k: int) -> dict:
    return {r["snr_db"]: r["accuracy"] for r in records
            if r["method"] == method and r["channel_label"] == label and r["channel_uses"] == k and r["snr_db"] is not None}


def method_k(records: list, method: str, k: int) -> Optional[int]:
    """``k`` if the method was swept at it, else its only / largest k (the conference design sends all its symbols)."""
    ks = sorted({r["channel_uses"] for r in records if r["method"] == method and r["channel_uses"] is not None})
    if not ks:
        return None
    return k if k in ks else ks[-1]


def check_targets(records: list, summary: dict, methods: list, k_values: list) -> dict:
    """The issue's targets, measured: sizes, 10 dB AWGN accuracy, and RKD-SC >= each baseline at equal k."""
    teacher = summary["teacher_accuracy"]
    size_ratio = summary["student_params"] / summary["teacher_params"]
    awgn10 = {k: curve(records, RKD, "awgn", k).get(KEPT_SNR) for k in k_values}
    labels = sorted({r["channel_label"] for r in records if r["channel"] in TARGET_CHANNELS})
    violations, compared = [], 0
    for method in methods:
        for label in labels:
            for k in k_values:
                ours, theirs = curve(records, RKD, label, k), curve(records, method, label, k)
                for snr in sorted(set(ours) & set(theirs)):
                    if not -10.0 <= snr <= 20.0:
                        continue
                    compared += 1
                    if ours[snr] < theirs[snr]:
                        violations.append({"method": method, "channel_label": label, "k": k, "snr_db": snr,
                                           "rkd_sc": ours[snr], "baseline": theirs[snr]})
    return {
        "student_over_teacher_params": size_ratio, "student_size_met": size_ratio <= 1 / 20,
        "awgn_10db_over_teacher": {str(k): (None if v is None else v / teacher) for k, v in awgn10.items()},
        "awgn_10db_met": {str(k): (v is not None and v >= 0.97 * teacher) for k, v in awgn10.items()},
        "dominance_cells_compared": compared, "dominance_violations": violations,
        "dominance_met": compared > 0 and not violations,
    }


def plot_comparison(path: Path, records: list, methods: list, k: int, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r["channel_label"] for r in records if r["snr_db"] is not None))
    fig, axes = plt.subplots(1, len(labels), figsize=(4.6 * len(labels), 4.2), sharey=True, squeeze=False)
    for ax, label in zip(axes[0], labels):
        for method in methods:
            mk = method_k(records, method, k)
            pts = sorted(curve(records, method, label, mk).items()) if mk is not None else []
            if not pts:
                continue
            style = {"lw": 2.2, "color": "k"} if method == RKD else ({"ls": "--", "lw": 1} if method.startswith("ablation:") else {"lw": 1.3})
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", ms=2.5, label=f"{method} (k={mk})", **style)
        ax.axhline(100 * summary["teacher_accuracy"], color="gray", ls=":", lw=1, label="teacher (clean)")
        ax.set_title(label)
        ax.set_xlabel("SNR (dB)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize=6.5, loc="lower right")
    fig.suptitle(f"accuracy vs SNR at k = {k} channel uses (conference design: all its symbols)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render_comparison(records: list, summaries: dict, summary: dict, k: int, targets: dict, image_size: int) -> str:
    teacher_acc, teacher_params = summary["teacher_accuracy"], summary["teacher_params"]
    methods = list(summaries)
    snrs = sorted({r["snr_db"] for r in records if r["snr_db"] is not None})
    shown = [nearest(snrs, s) for s in TABLE_SNRS]
    kept_snr = nearest(snrs, KEPT_SNR)
    lines = [
        "# RKD-SC vs baselines and ablations", "",
        f"Teacher: {100 * teacher_acc:.2f}% clean test accuracy, {teacher_params:,} parameters, "
        f"{summary['teacher_flops']:,} FLOPs/image; stage-1 student {100 * summary['student_accuracy']:.2f}% clean. "
        f"Test images: {summary['n_test']}. Table at k = {k} channel uses (methods without that k: their own).", "",
        "Columns: accuracy (%) at each SNR; TX/RX = transmitter/receiver parameters and FLOPs per image; "
        f"kept = accuracy at {kept_snr:g} dB / teacher's clean accuracy; model compression = teacher parameters / "
        f"TX parameters; bandwidth ratio = k / n, n = {image_size} input values per image.", "",
    ]
    labels = list(dict.fromkeys(r["channel_label"] for r in records if r["snr_db"] is not None))
    for label in labels:
        lines += [f"## {label}", "",
                  "| method | k | " + " | ".join(f"{s:g} dB" for s in shown)
                  + " | TX params | TX FLOPs | RX params | RX FLOPs | kept | model compression | bandwidth ratio |",
                  "|---|---:|" + "---:|" * len(shown) + "---:|---:|---:|---:|---:|---:|---:|"]
        for method in methods:
            mk = method_k(records, method, k)
            row = curve(records, method, label, mk) if mk is not None else {}
            if not row:
                continue
            s = summaries[method]
            cells = " | ".join(f"{100 * row[v]:.2f}" if v in row else "" for v in shown)
            kept = row.get(kept_snr)
            lines.append(
                f"| {method} | {mk} | {cells} | {s['tx_params']:,} | {s['tx_flops']:,} | {s['rx_params']:,} | "
                f"{s['rx_flops']:,} | {'' if kept is None else f'{kept / teacher_acc:.3f}'} | "
                f"{teacher_params / max(1, s['tx_params']):.1f}x | {mk / image_size:.4f} |")
        lines.append("")
    t = targets
    lines += ["## Targets", "",
              f"- student encoder / teacher parameters = {t['student_over_teacher_params']:.4f} "
              f"(target <= 0.05): {'met' if t['student_size_met'] else 'missed'}",
              "- RKD-SC accuracy at 10 dB AWGN / teacher clean accuracy (target >= 0.97): "
              + ", ".join(f"k={k_}: {'n/a' if v is None else f'{v:.3f}'} ({'met' if t['awgn_10db_met'][k_] else 'missed'})"
                          for k_, v in t["awgn_10db_over_teacher"].items()),
              f"- RKD-SC >= every baseline at every SNR in [-10, 20] dB at equal channel uses on AWGN and Rayleigh: "
              f"{'met' if t['dominance_met'] else 'missed'} ({len(t['dominance_violations'])} of "
              f"{t['dominance_cells_compared']} (baseline, channel, k, SNR) cells below a baseline)", ""]
    if t["dominance_violations"]:
        worst = sorted(t["dominance_violations"], key=lambda v: v["rkd_sc"] - v["baseline"])[:15]
        lines += ["Largest shortfalls (RKD-SC below a baseline):", "",
                  "| baseline | channel | k | SNR (dB) | RKD-SC | baseline |", "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {v['method']} | {v['channel_label']} | {v['k']} | {v['snr_db']:g} | {100 * v['rkd_sc']:.2f} | "
                  f"{100 * v['baseline']:.2f} |" for v in worst]
        lines.append("")
    lines += ["Figure: `comparison.png`. Per-method notes are in each `baselines/<method>/results.json` summary.", ""]
    return "\n".join(lines)


def write_comparison(run_dir: Path, k: int, margin: float) -> Path:
    """Gather the method results and write ``compare/``; returns the markdown path."""
    run_dir = Path(run_dir)
    main = read_json(run_dir / "eval" / "results.json")
    summary = main["summary"]
    results = load_method_results(run_dir)
    if not results:
        raise FileNotFoundError(f"no finished baseline results under {run_dir / 'baselines'}; run `rkd baselines` first")
    order = [RKD] + sorted(m for m in results if m != RKD and not m.startswith("ablation:")) \
        + sorted(m for m in results if m.startswith("ablation:"))
    order = [m for m in order if m in results]
    clean = [r for r in main["records"] if r["snr_db"] is None]
    records = clean + [r for m in order for r in results[m]["records"]]
    summaries = {m: results[m]["summary"] for m in order}
    baselines = [m for m in order if m != RKD and not m.startswith("ablation:")]
    k_values = sorted({r["channel_uses"] for r in results.get(RKD, {"records": []})["records"]})
    targets = check_targets(records, summary, baselines, k_values)
    image_size = _input_size(run_dir, summaries)
    out = run_dir / "compare"
    out.mkdir(parents=True, exist_ok=True)
    policies = {m: rate_policy(results[m]["records"], margin, m) for m in order
                if len({r["channel_uses"] for r in results[m]["records"]}) > 1}
    atomic_write_json(out / "rate_policy.json", {"margin": margin, "policy": policies})
    atomic_write_json(out / "results.json", {"k": k, "summary": summary, "methods": summaries, "targets": targets,
                                             "records": records})
    plot_comparison(out / "comparison.png", records, order, k, summary)
    path = out / "comparison.md"
    atomic_write_text(path, render_comparison(records, summaries, summary, k, targets, image_size))
    return path


def _input_size(run_dir: Path, summaries: dict) -> int:
    """Values per input image (C * H * W of the student's input): recorded by the RKD-SC sweep, else from the config."""
    recorded = summaries.get(RKD, {}).get("input_values")
    if recorded:
        return int(recorded)
    import yaml

    size = int(yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["image_size"])
    return size * size


def report_comparison(run_dir: Path) -> Optional[Path]:
    """Re-render the comparison when baseline results exist (what ``rkd report`` calls); None otherwise."""
    run_dir = Path(run_dir)
    previous = run_dir / "compare" / "results.json"
    if not load_method_results(run_dir) or not (run_dir / "eval" / "results.json").exists():
        return None
    k = read_json(previous)["k"] if previous.exists() else None
    if k is None:
        import yaml

        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        k = (cfg.get("baselines") or {}).get("compare_k") or max(cfg["codec"]["rates"])
    margin = (read_json(run_dir / "compare" / "rate_policy.json")["margin"]
              if (run_dir / "compare" / "rate_policy.json").exists() else 0.01)
    return write_comparison(run_dir, k, margin)
