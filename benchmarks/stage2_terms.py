"""What each stage-2 loss term does: stage 2 retrained on one finished run's stage 1, one term at a time.

Variants (stage 2 + evaluation only; the run's teacher, cache, search and stage 1 are linked, not
retrained): task only, task + each KD term of ``rkd.losses.LOSS_TERMS`` alone (logit KD from the
cached teacher, feature KD through the projector), task + all of them (the paper's stage 2). Each variant runs in
``<run>/stage2_terms/<variant>/`` through the ordinary pipeline; the JSON gives AWGN and Rayleigh
accuracy per k and SNR on the full test set, the student's clean accuracy and the code diagnostics.

    python benchmarks/stage2_terms.py --config default [--variants task logit_kd] [--jobs 2] [overrides]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from common import parse_config

from rkd.config import LossConfig
from rkd.losses import teacher_terms


def term_variants(kd_terms: list) -> dict:
    """Task only, each KD term alone beside the task loss, and all of them together (``all_kd``)."""

    def on(chosen: list) -> list:
        return [f"stage2_loss.{name}={int(name in chosen)}" for name in kd_terms]

    return {"task": on([]), **{name: on([name]) for name in kd_terms}, "all_kd": on(kd_terms)}


VARIANTS = term_variants(teacher_terms(LossConfig()))  # the registered terms that read the teacher
SHOWN = {"awgn", "rayleigh-csi", "rayleigh-pilot1"}


def run_variant(cfg, args, name: str) -> subprocess.Popen:
    """One variant as its own process (so variants can run side by side, one thread each)."""
    from rkd.baselines.variants import derive_config, link_shared_stages
    from rkd.config import save_config

    variant = derive_config(cfg, VARIANTS[name], name, parent="stage2_terms")
    link_shared_stages(cfg, variant, upto="stage1")
    config_path = variant.run_dir / "variant.yaml"  # the exact derived config, so the linked stages' hashes match
    save_config(variant, config_path)
    cmd = [sys.executable, "-m", "rkd.cli", "run", "--config", str(config_path)]
    log = open(variant.run_dir / "stage2_terms.log", "w")
    env = {**__import__("os").environ, "OMP_NUM_THREADS": str(args.threads), "RKD_PROGRESS": "lines"}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), variant


def summarise(run_dir: Path) -> dict:
    data = json.loads((run_dir / "eval" / "results.json").read_text())
    rows = {}
    for r in data["records"]:
        if r["snr_db"] is None or r["channel_label"] not in SHOWN:
            continue
        rows.setdefault(r["channel_label"], {}).setdefault(str(r["channel_uses"]), {})[f"{r['snr_db']:g}"] = r[
            "accuracy"
        ]
    s = data["summary"]
    stage2 = json.loads((run_dir / "stage2" / "stage.json").read_text())["summary"]
    return {
        "student_accuracy": s["student_accuracy"],
        "teacher_accuracy": s["teacher_accuracy"],
        "n_test": s["n_test"],
        "stage2_seconds": stage2.get("seconds"),
        "code_diagnostics": s.get("code_diagnostics"),
        "accuracy": rows,
    }


def main() -> int:
    def add(parser):
        parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
        parser.add_argument("--jobs", type=int, default=2, help="variants run side by side")
        parser.add_argument("--out", default="benchmarks/results/stage2_terms.json")

    cfg, args = parse_config(__doc__.splitlines()[0], add, default_configs=("default",))
    if not (cfg.run_dir / "stage1" / "stage.json").exists():
        raise SystemExit(f"no finished stage 1 in {cfg.run_dir}: run `rkd run` with the same config first")
    started, results, pending = time.time(), {}, list(args.variants)
    while pending:
        batch, pending = pending[: args.jobs], pending[args.jobs :]
        jobs = [(name, *run_variant(cfg, args, name)) for name in batch]
        for name, proc, variant in jobs:
            if proc.wait() != 0:
                raise SystemExit(f"variant {name} failed: see {variant.run_dir / 'stage2_terms.log'}")
            results[name] = {"overrides": VARIANTS[name], **summarise(variant.run_dir)}
            print(f"[stage2_terms] {name}: done ({time.time() - started:.0f} s)", flush=True)
    out = {
        "config": args.config or ["default"],
        "overrides": args.overrides,
        "threads": args.threads,
        "seconds": time.time() - started,
        "variants": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(
        json.dumps(
            {
                name: {
                    lab: r["accuracy"].get(lab, {}).get(str(max(map(int, r["accuracy"][lab]))), {})
                    for lab in r["accuracy"]
                }
                for name, r in results.items()
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
