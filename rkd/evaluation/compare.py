"""The comparison report: RKD-SC against its baselines and ablations, one figure and one markdown file.

Reads what ``rkd baselines`` wrote for every training seed (``runs/<name>/baselines/*/`` for the
run's own seed, ``runs/<name>/seeds/seed-<s>/baselines/*/`` for the others: ``results.json`` and,
with ``baselines.per_image``, ``correct.npz``) and the main evaluation (for the teacher's accuracy
and size), and writes ``runs/<name>/compare/``: ``results.json`` (seed-averaged records with 95%
intervals, the paired verdicts, budgets), ``comparison.png`` (accuracy vs SNR with interval bands,
a panel per channel), ``comparison.md`` (tables, budgets, verdicts) and ``rate_policy.json``.
Statistics: ``rkd.evaluation.stats`` and ``rkd.evaluation.paired``. ``rkd report`` re-renders it.
"""

from __future__ import annotations

from pathlib import Path

from rkd.evaluation.paired import averaged_records, dominance, index_cells, load_seed
from rkd.evaluation.rate_policy import rate_policy
from rkd.run.artifacts import atomic_write_json, atomic_write_text, read_json

TABLE_SNRS = (-10.0, -5.0, 0.0, 5.0, 10.0, 20.0)
KEPT_SNR = 10.0  # "fraction of the teacher's accuracy kept" is read at this SNR
TARGET_CHANNELS = ("awgn", "rayleigh")
RKD = "rkd-sc"


def load_method_results(run_dir: Path) -> dict:
    """``{method: {"summary", "records"}}`` for every finished method under ``baselines/`` (the run's own seed)."""
    return {m: {"summary": d["summary"], "records": d["records"]} for m, d in load_seed(run_dir).items()}


def seed_dirs(run_dir: Path, seeds: list | None) -> dict:
    """``{seed: run directory}``: the run's own seed first, then ``seeds/seed-<s>`` for the others that exist."""
    import yaml

    own = int(yaml.safe_load((Path(run_dir) / "config.yaml").read_text()).get("seed", 0))
    dirs = {own: Path(run_dir)}
    for seed in seeds or []:
        path = Path(run_dir) / "seeds" / f"seed-{seed}"
        if seed != own and (path / "baselines").exists():
            dirs[seed] = path
    return dirs


def is_bound(summary: dict) -> bool:
    return summary.get("kind") == "bound"


def nearest(values: list, target: float) -> float | None:
    return min(values, key=lambda v: (abs(v - target), v)) if values else None


def curve(records: list, method: str, label: str, k: int) -> dict:
    return {
        r["snr_db"]: r["accuracy"]
        for r in records
        if r["method"] == method and r["channel_label"] == label and r["channel_uses"] == k and r["snr_db"] is not None
    }


def method_k(records: list, method: str, k: int) -> int | None:
    """``k`` if the method was swept at it, else its only / largest k (the conference design sends all its symbols)."""
    ks = sorted({r["channel_uses"] for r in records if r["method"] == method and r["channel_uses"] is not None})
    if not ks:
        return None
    return k if k in ks else ks[-1]


def check_targets(records: list, cells: dict, summary: dict, summaries: dict, baselines: list, k_values: list) -> dict:
    """The issue's targets, measured: sizes, 10 dB AWGN accuracy, and RKD-SC >= each baseline where both trained.

    ">=" is "not significantly worse" by the paired test (``rkd.evaluation.paired``); bounds are not schemes and
    are left out.
    """
    teacher = summary["teacher_accuracy"]
    size_ratio = summary["student_params"] / summary["teacher_params"]
    awgn10 = {k: curve(records, RKD, "awgn", k).get(KEPT_SNR) for k in k_values}
    trained = {m: s.get("trained_on") for m, s in summaries.items()}
    schemes = [m for m in baselines if not is_bound(summaries[m])]
    check = dominance(cells, trained, RKD, schemes, k_values, TARGET_CHANNELS)
    return {
        "student_over_teacher_params": size_ratio,
        "student_size_met": size_ratio <= 1 / 20,
        "awgn_10db_over_teacher": {str(k): (None if v is None else v / teacher) for k, v in awgn10.items()},
        "awgn_10db_met": {str(k): (v is not None and v >= 0.97 * teacher) for k, v in awgn10.items()},
        "dominance_cells_compared": check["compared"],
        "dominance_violations": check["losses"],
        "dominance_wins": check["wins"],
        "dominance_ties": check["ties"],
        "dominance_met": check["met"],
        "dominance_cells": check["cells"],
        "outside_training": check["outside"],
    }


def band(records: list, method: str, label: str, k: int) -> dict:
    """``{snr: (low, high)}``: the 95% interval of each point of a curve (seed-averaged records)."""
    return {
        r["snr_db"]: (r["low"], r["high"])
        for r in records
        if r["method"] == method
        and r["channel_label"] == label
        and r["channel_uses"] == k
        and r["snr_db"] is not None
        and r.get("low") is not None
    }


def plot_comparison(path: Path, records: list, methods: list, k: int, summary: dict, summaries: dict) -> None:
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
            bound = is_bound(summaries.get(method, {}))
            style = (
                {"lw": 2.2, "color": "k"}
                if method == RKD
                else (
                    {"ls": "--", "lw": 1}
                    if method.startswith("ablation:")
                    else {"ls": ":", "lw": 1.2}
                    if bound
                    else {"lw": 1.3}
                )
            )
            name = f"{method} (bound)" if bound else method
            (line,) = ax.plot(
                [p[0] for p in pts], [100 * p[1] for p in pts], marker="o", ms=2.5, label=f"{name} (k={mk})", **style
            )
            ci = sorted(band(records, method, label, mk).items())
            if ci and not method.startswith("ablation:"):
                ax.fill_between(
                    [c[0] for c in ci],
                    [100 * c[1][0] for c in ci],
                    [100 * c[1][1] for c in ci],
                    color=line.get_color(),
                    alpha=0.15,
                    lw=0,
                )
        ax.axhline(100 * summary["teacher_accuracy"], color="gray", ls=":", lw=1, label="teacher (clean)")
        ax.set_title(label)
        ax.set_xlabel("SNR (dB)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize=6.5, loc="lower right")
    fig.suptitle(
        f"accuracy vs SNR at k = {k} channel uses (conference design: all its symbols); bands: 95% CI", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cell(record: dict | None) -> str:
    if record is None:
        return ""
    if record.get("low") is None:
        return f"{100 * record['accuracy']:.2f}"
    half = max(record["accuracy"] - record["low"], record["high"] - record["accuracy"])
    return f"{100 * record['accuracy']:.2f} ±{100 * half:.2f}"


def _display(method: str, summary: dict) -> str:
    return f"{method} (capacity bound, not a scheme)" if is_bound(summary) else method


def render_tables(records: list, summaries: dict, summary: dict, k: int, image_size: int) -> list:
    """One accuracy table per channel: mean ±95% half-width per SNR, sizes and ratios per method."""
    teacher_acc, teacher_params = summary["teacher_accuracy"], summary["teacher_params"]
    snrs = sorted({r["snr_db"] for r in records if r["snr_db"] is not None})
    shown = [nearest(snrs, s) for s in TABLE_SNRS]
    kept_snr = nearest(snrs, KEPT_SNR)
    seeds = max((r.get("seeds", 1) for r in records if r["snr_db"] is not None), default=1)
    lines = [
        "# RKD-SC vs baselines and ablations",
        "",
        f"Teacher: {100 * teacher_acc:.2f}% clean test accuracy, {teacher_params:,} parameters, "
        f"{summary['teacher_flops']:,} FLOPs/image; stage-1 student {100 * summary['student_accuracy']:.2f}% clean. "
        f"Test images: {summary['n_test']}; training seeds: up to {seeds}. Table at k = {k} channel uses "
        f"(methods without that k: their own).",
        "",
        "Columns: accuracy (%) at each SNR as mean over seeds ±95% interval half-width (t over seeds with >= 2 "
        "seeds, Wilson with one); TX/RX = transmitter/receiver parameters and FLOPs per image; "
        f"kept = accuracy at {kept_snr:g} dB / teacher's clean accuracy; model compression = teacher parameters / "
        f"TX parameters; bandwidth ratio = k / n, n = {image_size} input values per image; trained = whether the "
        "method was trained (digital: designed, with receiver CSI) for this channel.",
        "",
    ]
    labels = list(dict.fromkeys(r["channel_label"] for r in records if r["snr_db"] is not None))
    for label in labels:
        lines += [
            f"## {label}",
            "",
            "| method | trained | k | "
            + " | ".join(f"{s:g} dB" for s in shown)
            + " | TX params | TX FLOPs | RX params | RX FLOPs | kept | model compression | bandwidth ratio |",
            "|---|---|---:|" + "---:|" * len(shown) + "---:|---:|---:|---:|---:|---:|---:|",
        ]
        for method, s in summaries.items():
            mk = method_k(records, method, k)
            row = {
                r["snr_db"]: r
                for r in records
                if r["method"] == method
                and r["channel_label"] == label
                and r["channel_uses"] == mk
                and r["snr_db"] is not None
            }
            if not row:
                continue
            trained = "?" if s.get("trained_on") is None else ("yes" if label in s["trained_on"] else "no")
            kept = row[kept_snr]["accuracy"] if kept_snr in row else None
            lines.append(
                f"| {_display(method, s)} | {trained} | {mk} | {' | '.join(_cell(row.get(v)) for v in shown)} | "
                f"{s['tx_params']:,} | {s['tx_flops']:,} | {s['rx_params']:,} | {s['rx_flops']:,} | "
                f"{'' if kept is None else f'{kept / teacher_acc:.3f}'} | "
                f"{teacher_params / max(1, s['tx_params']):.1f}x | {mk / image_size:.4f} |"
            )
        lines.append("")
    return lines


def render_budgets(summaries: dict) -> list:
    """Training cost per method: images seen, epoch equivalents, wall time, and what they include."""
    lines = [
        "## Training budgets",
        "",
        "Per method (its own seed run): training images seen (steps x batch x processes), their equivalent in "
        "epochs of the train split, and wall time; the parts list every trained piece it depends on "
        "(teacher and stage 1 counted where used).",
        "",
        "| method | images seen | epochs (equiv.) | wall time (s) | parts |",
        "|---|---:|---:|---:|---|",
    ]
    for method, s in summaries.items():
        b = s.get("budget")
        if not b:
            continue
        parts = ", ".join(f"{name} {p['images_seen']:,} img / {p['seconds']:.0f} s" for name, p in b["parts"].items())
        lines.append(
            f"| {_display(method, s)} | {b['images_seen']:,} | {b['epochs']:.2f} | {b['seconds']:.0f} | {parts} |"
        )
    return lines + [""]


def _verdict_rows(rows: list) -> list:
    out = [
        "| baseline | channel | k | SNR (dB) | RKD-SC | baseline | p | test | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    out += [
        f"| {v['method']} | {v['channel_label']} | {v['k']} | {v['snr_db']:g} | {100 * v['rkd_sc']:.2f} | "
        f"{100 * v['baseline']:.2f} | {v['p']:.3g} | {v['test']} | {v['verdict']} |"
        for v in rows
    ]
    return out + [""]


def render_targets(t: dict) -> list:
    """The targets, the paired verdicts where both trained, and the cells outside training (labelled)."""
    lines = [
        "## Targets",
        "",
        f"- student encoder / teacher parameters = {t['student_over_teacher_params']:.4f} "
        f"(target <= 0.05): {'met' if t['student_size_met'] else 'missed'}",
        "- RKD-SC accuracy at 10 dB AWGN / teacher clean accuracy (target >= 0.97): "
        + ", ".join(
            f"k={k_}: {'n/a' if v is None else f'{v:.3f}'} ({'met' if t['awgn_10db_met'][k_] else 'missed'})"
            for k_, v in t["awgn_10db_over_teacher"].items()
        ),
        f"- RKD-SC >= every baseline (not significantly worse, paired test at 5%) at every SNR in [-10, 20] dB at "
        f"equal channel uses on AWGN and Rayleigh, where both were trained: "
        f"{'met' if t['dominance_met'] else 'missed'}: of {t['dominance_cells_compared']} (baseline, channel, k, "
        f"SNR) cells, RKD-SC wins {t['dominance_wins']}, ties {t['dominance_ties']}, "
        f"loses {len(t['dominance_violations'])} (significantly worse)",
        "",
    ]
    if t["dominance_violations"]:
        worst = sorted(t["dominance_violations"], key=lambda v: v["rkd_sc"] - v["baseline"])[:15]
        lines += ["Largest significant shortfalls (RKD-SC below a baseline):", ""] + _verdict_rows(worst)
    outside = t.get("outside_training") or []
    if outside:
        lines += [
            f"### Outside training ({len(outside)} cells, not counted above)",
            "",
            "Channels at least one of the two methods was not trained (or designed) for, e.g. Rayleigh without "
            "CSI; shown for information only.",
            "",
        ] + _verdict_rows(outside[:30])
    return lines


def write_comparison(run_dir: Path, k: int, margin: float, seeds: list | None = None) -> Path:
    """Gather every seed's method results and write ``compare/``; returns the markdown path.

    ``seeds``: the training seeds to include (null: ``baselines.seeds`` of the run's config.yaml).
    """
    run_dir = Path(run_dir)
    main = read_json(run_dir / "eval" / "results.json")
    summary = main["summary"]
    if seeds is None:
        import yaml

        seeds = (yaml.safe_load((run_dir / "config.yaml").read_text()).get("baselines") or {}).get("seeds")
    per_seed = {seed: load_seed(path) for seed, path in seed_dirs(run_dir, seeds).items()}
    results = next(iter(per_seed.values()))  # the run's own seed: summaries, sizes, budgets
    if not results:
        raise FileNotFoundError(
            f"no finished baseline results under {run_dir / 'baselines'}; run `rkd baselines` first"
        )
    order = (
        [RKD]
        + sorted(m for m in results if m != RKD and not m.startswith("ablation:"))
        + sorted(m for m in results if m.startswith("ablation:"))
    )
    order = [m for m in order if m in results]
    cells = index_cells(per_seed)
    clean = [r for r in main["records"] if r["snr_db"] is None]
    averaged = averaged_records(cells)
    records = clean + [r for m in order for r in averaged if r["method"] == m]
    summaries = {m: results[m]["summary"] for m in order}
    baselines = [m for m in order if m != RKD and not m.startswith("ablation:")]
    k_values = sorted({r["channel_uses"] for r in results.get(RKD, {"records": []})["records"]})
    targets = check_targets(records, cells, summary, summaries, baselines, k_values)
    image_size = _input_size(run_dir, summaries)
    out = run_dir / "compare"
    out.mkdir(parents=True, exist_ok=True)
    policies = {
        m: rate_policy([r for r in records if r["method"] == m], margin, m)
        for m in order
        if len({r["channel_uses"] for r in results[m]["records"]}) > 1
    }
    atomic_write_json(out / "rate_policy.json", {"margin": margin, "policy": policies})
    atomic_write_json(
        out / "results.json",
        {
            "k": k,
            "seeds": sorted(per_seed),
            "summary": summary,
            "methods": summaries,
            "targets": targets,
            "records": records,
        },
    )
    plot_comparison(out / "comparison.png", records, order, k, summary, summaries)
    text = (
        render_tables(records, summaries, summary, k, image_size)
        + render_budgets(summaries)
        + render_targets(targets)
        + [
            "Figure: `comparison.png` (bands: 95% intervals). Per-method notes are in each "
            "`baselines/<method>/results.json` summary; statistics: `rkd/evaluation/stats.py`, `rkd/evaluation/paired.py`.",
            "",
        ]
    )
    path = out / "comparison.md"
    atomic_write_text(path, "\n".join(text))
    return path


def _input_size(run_dir: Path, summaries: dict) -> int:
    """Values per input image (C * H * W of the student's input): recorded by the RKD-SC sweep, else from the config."""
    recorded = summaries.get(RKD, {}).get("input_values")
    if recorded:
        return int(recorded)
    import yaml

    size = int(yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["image_size"])
    return size * size


def report_comparison(run_dir: Path) -> Path | None:
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
    margin = (
        read_json(run_dir / "compare" / "rate_policy.json")["margin"]
        if (run_dir / "compare" / "rate_policy.json").exists()
        else 0.01
    )
    return write_comparison(run_dir, k, margin)
