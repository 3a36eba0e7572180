"""Accuracy vs SNR for every method x channel x channel uses, with transmitter/receiver sizes and FLOPs.

Runs (or, when already done for the same config, only re-reads) ``rkd baselines`` on the chosen
config - by default the CPU-sized comparison profile ``--config default --config compare`` - and
prints the comparison as JSON: per method, its summary (parameters, FLOPs per image of transmitter
and receiver) and, per channel, the accuracy at every SNR of the comparison grid for each k, plus
the targets check. The full tables and figure are in ``runs/<name>/compare/``.

    python benchmarks/accuracy.py [--config ...] [overrides]
"""

from __future__ import annotations

import json

from common import parse_config


def main() -> dict:
    from rkd.baselines.runner import run_baselines
    from rkd.engine import make_accelerator
    from rkd.run.artifacts import read_json
    from rkd.run.pipeline import stage_runner

    cfg, _ = parse_config(__doc__)
    accelerator = make_accelerator(cfg.mixed_precision, seed=cfg.seed)
    run_baselines(cfg, accelerator, stage_runner(accelerator))
    data = read_json(cfg.run_dir / "compare" / "results.json")
    curves: dict = {}
    for r in data["records"]:
        if r["snr_db"] is None:
            continue
        key = (
            curves.setdefault(r["method"], {}).setdefault(r["channel_label"], {}).setdefault(str(r["channel_uses"]), {})
        )
        key[f"{r['snr_db']:g}"] = r["accuracy"]  # the mean over seeds; intervals are in compare/results.json
    s = data["summary"]
    return {
        "benchmark": "accuracy",
        "config": cfg.name,
        "run_dir": str(cfg.run_dir),
        "compare_k": data["k"],
        "teacher": {"accuracy": s["teacher_accuracy"], "params": s["teacher_params"], "flops": s["teacher_flops"]},
        "student": {"accuracy": s["student_accuracy"], "params": s["student_params"], "flops": s["student_flops"]},
        "n_test": s["n_test"],
        "seeds": data.get("seeds"),
        "methods": {
            m: {
                k: v
                for k, v in summary.items()
                if k
                in (
                    "tx_params",
                    "tx_flops",
                    "rx_params",
                    "rx_flops",
                    "max_symbols",
                    "rates",
                    "kind",
                    "trained_on",
                    "budget",
                )
            }
            for m, summary in data["methods"].items()
        },
        "accuracy": curves,
        "targets": data["targets"],
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
