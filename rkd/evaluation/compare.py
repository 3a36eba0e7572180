"""The comparison report: RKD-SC against its baselines and ablations, one figure and one markdown file.

Reads what ``rkd baselines`` wrote for every training seed (``runs/<name>/baselines/*/`` for the
run's own seed, ``runs/<name>/seeds/seed-<s>/baselines/*/`` for the others: ``results.json`` and,
with ``baselines.per_image``, ``correct.npz``) and the main evaluation (for the teacher's accuracy
and size), and writes ``runs/<name>/compare/``: ``results.json`` (seed-averaged records with 95%
intervals, the verdicts over seeds, the yardstick, the per-cell paired tests, budgets),
``comparison.png`` (accuracy vs SNR with interval bands and reference curves, a panel per channel),
``lead.png`` (the few curves a reader sees first, where their panels were swept), ``comparison.md`` and
``rate_policy.json``. Every cell asked for (method x seed x channel) must exist,
else one ``ComparisonError`` names the missing ones and the command that makes them, and nothing is
written; everything is computed before the first file is (each written atomically).
Statistics: ``rkd.evaluation.stats``, ``rkd.evaluation.verdicts``, ``rkd.evaluation.paired``.
``rkd report`` re-renders it.
"""

from __future__ import annotations

from pathlib import Path

from rkd.config.yaml_io import load_yaml
from rkd.evaluation.compare_plot import comparison_png, lead_png
from rkd.evaluation.compare_render import (
    KEPT_SNR,
    RKD,
    curve,
    is_bound,
    render_budgets,
    render_tables,
    render_targets,
    render_verdicts,
    render_yardstick,
)
from rkd.evaluation.paired import averaged_records, dominance, index_cells, load_seed
from rkd.evaluation.rate_policy import rate_policy
from rkd.evaluation.verdicts import seed_verdicts
from rkd.evaluation.yardstick import yardstick_at, yardstick_gaps
from rkd.run.artifacts import atomic_write, atomic_write_json, atomic_write_text, read_json

TARGET_CHANNELS = ("awgn", "rayleigh")
NONINFERIORITY_MARGIN = 0.005  # half a point


class ComparisonError(ValueError):
    """A comparison asked for cells (method x seed x channel) that were not run."""


def load_method_results(run_dir: Path) -> dict:
    """``{method: {"summary", "records"}}`` for every finished method under ``baselines/`` (the run's own seed)."""
    return {m: {"summary": d["summary"], "records": d["records"]} for m, d in load_seed(run_dir).items()}


def run_config(run_dir: Path) -> dict:
    return load_yaml((Path(run_dir) / "config.yaml").read_text())


def seed_dirs(run_dir: Path, seeds: list) -> dict:
    """``{seed: run directory}``: the run's own seed at the top, ``seeds/seed-<s>`` for the others."""
    own = int(run_config(run_dir).get("seed", 0))
    return {s: Path(run_dir) if s == own else Path(run_dir) / "seeds" / f"seed-{s}" for s in [own, *seeds]}


def missing_cells(per_seed: dict, own: int, methods: list, channels: list) -> list:
    """``"<method> at seed <s>[ on <channel>]"`` for every asked-for cell that has no finished result."""
    missing = []
    for seed, results in per_seed.items():
        for method in methods:
            if method.startswith("ablation:") and seed != own:
                continue  # ablations run on the main seed only
            if method not in results:
                missing.append(f"{method} at seed {seed}")
                continue
            swept = {r["channel_label"] for r in results[method]["records"] if r["snr_db"] is not None}
            missing += [f"{method} at seed {seed} on {c}" for c in channels if c not in swept]
    return missing


def gather(run_dir: Path, seeds: list | None, methods: list | None, channels: list | None) -> tuple:
    """``(per_seed results, method order)`` for the asked-for cells, or a ``ComparisonError`` naming the missing ones.

    Defaults: seeds ``baselines.seeds`` of the run's config (else its seed); methods whatever finished at the
    run's own seed; channels those RKD-SC was swept on.
    """
    cfg = run_config(run_dir)
    own = int(cfg.get("seed", 0))
    seeds = list(seeds or (cfg.get("baselines") or {}).get("seeds") or [own])
    per_seed = {seed: load_seed(path) for seed, path in seed_dirs(run_dir, seeds).items()}
    methods = list(methods or per_seed[own]) or [RKD]
    if channels is None:
        channels = sorted({r["channel_label"] for r in per_seed[own].get(RKD, {"records": []})["records"]})
    missing = missing_cells(per_seed, own, methods, list(channels))
    if missing:
        shown = ", ".join(missing[:12]) + (f" and {len(missing) - 12} more" if len(missing) > 12 else "")
        raise ComparisonError(
            f"comparison of {run_dir}: {len(missing)} asked-for cells were not run ({shown}); make them with: "
            f"rkd baselines --config {Path(run_dir) / 'config.yaml'} baselines.seeds=[{','.join(map(str, sorted(per_seed)))}]"
            " (a method or channel the config lacks goes into baselines.methods / eval.channels)"
        )
    order = [RKD] + sorted(m for m in methods if m != RKD and not m.startswith("ablation:"))
    order += sorted(m for m in methods if m.startswith("ablation:"))
    return per_seed, [m for m in order if m in per_seed[own]]


def check_targets(records: list, cells: dict, summary: dict, summaries: dict, baselines: list, k_values: list) -> dict:
    """Sizes and 10 dB AWGN accuracy against their targets, and the per-cell paired tests (descriptive)."""
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
        "dominance_cells": check["cells"],
        "outside_training": check["outside"],
    }


def student_accuracy(per_seed_dirs: dict) -> float | None:
    """The stage-1 student's clean accuracy averaged over the seeds whose evaluation exists."""
    found = [
        read_json(path / "eval" / "results.json")["summary"]["student_accuracy"]
        for path in per_seed_dirs.values()
        if (path / "eval" / "results.json").exists()
    ]
    return sum(found) / len(found) if found else None


def yardstick(run_dir: Path, records: list, k: int, summary: dict, summaries: dict) -> list:
    """The yardstick at the figure's k on every channel and on AWGN at every k (empty if the class count is unknown)."""
    cfg = run_config(run_dir)
    classes = summary.get("num_classes") or summaries.get("label-digital", {}).get("codewords")
    a = student_accuracy(seed_dirs(run_dir, (cfg.get("baselines") or {}).get("seeds") or []))
    if not classes or a is None:
        return []
    mine = [r for r in records if r["method"] == RKD]
    return yardstick_at(cfg, mine, lambda r: r["channel_uses"] == k or r["channel_label"] == "awgn", a, int(classes))


def build_comparison(run_dir: Path, k: int, seeds, methods, channels, noninferiority_margin: float) -> dict:
    """Everything the comparison reports, computed from the asked-for cells (nothing written)."""
    main = read_json(run_dir / "eval" / "results.json")
    summary = main["summary"]
    per_seed, order = gather(run_dir, seeds, methods, channels)
    results = per_seed[int(run_config(run_dir).get("seed", 0))]
    cells = index_cells({seed: {m: d for m, d in found.items() if m in order} for seed, found in per_seed.items()})
    averaged = averaged_records(cells)
    records = [r for r in main["records"] if r["snr_db"] is None] + [
        r for m in order for r in averaged if r["method"] == m
    ]
    summaries = {m: results[m]["summary"] for m in order}
    comparators = [m for m in order if m != RKD and not is_bound(summaries[m])]
    k_values = sorted({r["channel_uses"] for r in results[RKD]["records"]})
    targets = check_targets(records, cells, summary, summaries, [m for m in comparators if ":" not in m], k_values)
    trained = {m: s.get("trained_on") for m, s in summaries.items()}
    targets["verdicts"] = seed_verdicts(cells, trained, RKD, comparators, noninferiority_margin)
    reference = yardstick(run_dir, records, k, summary, summaries)
    targets["yardstick"] = yardstick_gaps([r for r in records if r["method"] == RKD], reference) if reference else None
    swept_rates = {m: {r["channel_uses"] for r in results[m]["records"]} for m in order}
    return {
        "k": k,
        "seeds": sorted(per_seed),
        "summary": summary,
        "methods": summaries,
        "targets": targets,
        "records": records,
        "yardstick": reference,
        "order": order,
        "multi_rate": [m for m in order if len(swept_rates[m]) > 1],
    }


def write_comparison(
    run_dir: Path,
    k: int,
    margin: float,
    seeds: list | None = None,
    methods: list | None = None,
    channels: list | None = None,
    noninferiority_margin: float = NONINFERIORITY_MARGIN,
) -> Path:
    """Gather every asked-for cell (see ``gather``) and write ``compare/``; returns the markdown path.

    ``margin``: the rate policy's accuracy margin; ``noninferiority_margin``: the verdicts' (both fractions).
    """
    run_dir = Path(run_dir)
    c = build_comparison(run_dir, k, seeds, methods, channels, noninferiority_margin)
    records, summaries, targets = c["records"], c["methods"], c["targets"]
    lead = lead_png(records, c["summary"], summaries)
    policies = {m: rate_policy([r for r in records if r["method"] == m], margin, m) for m in c["multi_rate"]}
    text = (
        render_tables(records, summaries, c["summary"], k, _input_size(run_dir, summaries))
        + render_budgets(summaries)
        + render_targets(targets)
        + render_verdicts(targets["verdicts"])
        + render_yardstick(targets["yardstick"])
        + [
            "Figure: `comparison.png` (bands: 95% intervals over seeds; dashed grey: the yardstick and label-digital's "
            "reference curves). Statistics: `rkd/evaluation/stats.py`, `rkd/evaluation/verdicts.py`.",
            "",
        ]
        + (
            [
                "Lead figure: `lead.png` (AWGN and Rayleigh with CSI at k = 8 and 32; of RKD-SC, the no-teacher control "
                "at matched budget (or the no-KD ablation), Deep JSCC with the whole budget, Deep JSCC + KD and label-digital, those that ran).",
                "",
            ]
            if lead is not None
            else []
        )
    )
    png = comparison_png(records, c["yardstick"], c["order"], k, c["summary"], summaries)
    out = run_dir / "compare"
    atomic_write_json(out / "rate_policy.json", {"margin": margin, "policy": policies})
    atomic_write_json(out / "results.json", {key: v for key, v in c.items() if key not in ("order", "multi_rate")})
    atomic_write(out / "comparison.png", lambda target: target.write_bytes(png))
    if lead is not None:
        atomic_write(out / "lead.png", lambda target: target.write_bytes(lead))
    elif (out / "lead.png").exists():
        (out / "lead.png").unlink()  # a previous comparison's lead figure would not match this one
    return atomic_write_text(out / "comparison.md", "\n".join(text))


def _input_size(run_dir: Path, summaries: dict) -> int:
    """Values per input image (C * H * W of the student's input): recorded by the RKD-SC sweep, else from the config."""
    recorded = summaries.get(RKD, {}).get("input_values")
    if recorded:
        return int(recorded)
    size = int(run_config(run_dir)["data"]["image_size"])
    return size * size


def report_comparison(run_dir: Path) -> Path | None:
    """Re-render the comparison when baseline results exist (what ``rkd report`` calls); None otherwise."""
    run_dir = Path(run_dir)
    previous = run_dir / "compare" / "results.json"
    if not load_method_results(run_dir) or not (run_dir / "eval" / "results.json").exists():
        return None
    cfg = run_config(run_dir)
    k = read_json(previous)["k"] if previous.exists() else None
    if k is None:
        k = (cfg.get("baselines") or {}).get("compare_k") or max(cfg["codec"]["rates"])
    policy = run_dir / "compare" / "rate_policy.json"
    margin = read_json(policy)["margin"] if policy.exists() else 0.01
    ni_margin = (cfg.get("baselines") or {}).get("noninferiority_margin", NONINFERIORITY_MARGIN)
    return write_comparison(run_dir, k, margin, noninferiority_margin=ni_margin)
