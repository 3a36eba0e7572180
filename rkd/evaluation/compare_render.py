"""The comparison report's markdown: accuracy tables, budgets, verdicts over seeds, the yardstick, the targets.

Also the small record lookups the figure (``rkd.evaluation.compare_plot``) shares with the tables.
"""

from __future__ import annotations

TABLE_SNRS = (-10.0, -5.0, 0.0, 5.0, 10.0, 20.0)
KEPT_SNR = 10.0  # "fraction of the teacher's accuracy kept" is read at this SNR
RKD = "rkd-sc"


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
        f"(methods without that k: their own; the conference design sends all its symbols, at equal energy per "
        f"image where k is smaller: its SNR lowered by 10 log10(symbols / k)).",
        "",
        "Columns: accuracy (%) at each SNR as mean over seeds ±95% interval half-width (t over seeds with >= 2 "
        "seeds, Wilson with one); TX/RX = transmitter/receiver parameters and FLOPs per image; "
        f"kept = accuracy at {kept_snr:g} dB / teacher's clean accuracy; model compression = teacher parameters / "
        f"TX parameters; bandwidth ratio = symbols sent / n, n = {image_size} input values per image; trained = "
        "whether the method was trained (digital: designed, with receiver CSI or its own pilots) for this channel.",
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
            sent = next(iter(row.values())).get("symbols_sent", mk)
            lines.append(
                f"| {_display(method, s)} | {trained} | {mk} | {' | '.join(_cell(row.get(v)) for v in shown)} | "
                f"{s['tx_params']:,} | {s['tx_flops']:,} | {s['rx_params']:,} | {s['rx_flops']:,} | "
                f"{'' if kept is None else f'{kept / teacher_acc:.3f}'} | "
                f"{teacher_params / max(1, s['tx_params']):.1f}x | {sent / image_size:.4f} |"
            )
        lines.append("")
    return lines


def _tflops(flops: float | None) -> str:
    return "n/a" if flops is None else f"{flops / 1e12:,.2f}"


def render_budgets(summaries: dict) -> list:
    """Training cost per method: images seen, epoch equivalents, wall time, and what they include."""
    lines = [
        "## Training budgets",
        "",
        "Per method (its own seed run): training images seen (steps x batch x processes), their equivalent in "
        "epochs of the train split, wall time, and training FLOPs (images x the FLOPs per image counted on one "
        "training step of each part: forward, backward and the rest of its objective; n/a where a part's step was "
        "not counted, as in a stage resumed past it); the parts list every trained piece it depends on "
        "(teacher and stage 1 counted where used).",
        "",
        "| method | images seen | epochs (equiv.) | wall time (s) | training TFLOPs | parts |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for method, s in summaries.items():
        b = s.get("budget")
        if not b:
            continue
        parts = ", ".join(
            f"{name} {p['images_seen']:,} img / {p['seconds']:.0f} s"
            + (f" / {_tflops(p.get('flops'))} TFLOPs" if p["images_seen"] else "")  # the cache pass trains nothing
            for name, p in b["parts"].items()
        )
        lines.append(
            f"| {_display(method, s)} | {b['images_seen']:,} | {b['epochs']:.2f} | {b['seconds']:.0f} | "
            f"{_tflops(b.get('flops'))} | {parts} |"
        )
    return lines + [""]


def _cell_rows(rows: list) -> list:
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


def _p(value) -> str:
    return "" if value is None else f"{value:.3g}"


def _difference(row: dict) -> str:
    if row["low"] is None:
        return f"{100 * row['mean_difference']:+.2f}"
    return f"{100 * row['mean_difference']:+.2f} [{100 * row['low']:+.2f}, {100 * row['high']:+.2f}]"


def render_verdicts(v: dict) -> list:
    """The verdicts over seeds: one table per family (target, outside training, ablations)."""
    lines = [
        "## Verdicts over seeds",
        "",
        f"Per comparator and (channel, k): the {v['summary']} per training seed; RKD-SC minus the comparator, "
        f"mean over seeds with its 95% t interval (points); {v['test']}; non-inferiority margin "
        f"{100 * v['margin']:g} points, alpha {v['alpha']:g}. Verdict: superior, else non-inferior, else inferior "
        "(significantly worse), else inconclusive.",
        "",
    ]
    titles = {
        "target": "Channels both were trained (or designed) for",
        "outside": "Outside training (information only)",
        "ablations": "Ablations",
    }
    for family, rows in v["families"].items():
        if not rows:
            continue
        lines += [
            f"### {titles[family]}",
            "",
            "| comparator | channel | k | seeds | RKD-SC | comparator | difference [95% CI] | p non-inf. (Holm) "
            "| p sup. (Holm) | verdict |",
            "|---|---|---:|---:|---:|---:|---|---:|---:|---|",
        ]
        lines += [
            f"| {r['method']} | {r['channel_label']} | {r['k']} | {len(r['seeds'])} | {100 * r['rkd_sc']:.2f} | "
            f"{100 * r['baseline']:.2f} | {_difference(r)} | {_p(r['p_noninferior_holm'])} | "
            f"{_p(r['p_superior_holm'])} | {r['verdict']} |"
            for r in rows
        ]
        lines.append("")
    return lines


def render_yardstick(gaps: dict | None) -> list:
    """RKD-SC against the yardstick (the student's decision sent with the best known code) on AWGN at low SNR."""
    if gaps is None:
        return []
    lines = [
        "## The yardstick: the student's decision sent with the best known code",
        "",
        "Student accuracy a x P_c + (1 - a)(1 - P_c)/(C - 1), P_c of the regular simplex (C <= 2k + 1; else the "
        "best spherical code) at (k, SNR); AWGN, SNR <= 0 dB.",
        "",
        "| k | SNR (dB) | RKD-SC | yardstick | RKD-SC - yardstick |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {g['k']} | {g['snr_db']:g} | {100 * g['rkd_sc']:.2f} | {100 * g['yardstick']:.2f} | {100 * g['gap']:+.2f} |"
        for g in gaps["cells"]
    ]
    return lines + [""]


def render_targets(t: dict) -> list:
    """The targets; the per-cell McNemar tests follow as a descriptive column."""
    v = t["verdicts"]
    lines = [
        "## Targets",
        "",
        f"- student encoder / teacher parameters = {t['student_over_teacher_params']:.4f} "
        f"(target <= 0.05): {'met' if t['student_size_met'] else 'missed'}",
        "- RKD-SC accuracy at 10 dB AWGN / teacher clean accuracy (target >= 0.97): "
        + ", ".join(
            f"k={k_}: {'n/a' if val is None else f'{val:.3f}'} ({'met' if t['awgn_10db_met'][k_] else 'missed'})"
            for k_, val in t["awgn_10db_over_teacher"].items()
        ),
        f"- RKD-SC non-inferior (margin {100 * v['margin']:g} points, verdict over seeds) to every baseline on every "
        f"(channel, k) both were trained for: {'met' if v['noninferior_everywhere'] else 'missed'}"
        + (
            ": not shown for "
            + ", ".join(f"{r['method']} {r['channel_label']} k={r['k']}" for r in v["not_noninferior"])
            if v["not_noninferior"]
            else ""
        ),
    ]
    if t.get("yardstick") is not None:
        lines.append(
            f"- RKD-SC within 1 point of the yardstick on AWGN at every k and SNR <= 0 dB: "
            f"{'met' if t['yardstick']['met'] else 'missed'}"
        )
    lines += [
        "",
        f"Per-cell paired tests (descriptive; McNemar mid-p pooled over seeds, conditional on the trained models): of "
        f"{t['dominance_cells_compared']} (baseline, channel, k, SNR) cells, RKD-SC is significantly better in "
        f"{t['dominance_wins']}, not significantly different in {t['dominance_ties']}, significantly worse in "
        f"{len(t['dominance_violations'])}.",
        "",
    ]
    if t["dominance_violations"]:
        worst = sorted(t["dominance_violations"], key=lambda c: c["rkd_sc"] - c["baseline"])[:15]
        lines += ["Largest per-cell shortfalls (RKD-SC below a baseline):", ""] + _cell_rows(worst)
    return lines
