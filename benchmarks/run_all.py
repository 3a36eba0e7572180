"""Run every comparison benchmark once and keep their JSON in benchmarks/results/.

    python benchmarks/run_all.py [--only a,b] [--config ...] [overrides]      # or: make bench

Each script runs in its own process with one torch thread (the machine may be shared); its
progress (the ``[rkd] ...`` lines and progress bars) is shown as it runs, with the elapsed time;
the combined JSON is printed and each script's output is written to benchmarks/results/<name>.json,
with the comparison's figure, tables, rate policy and results copied beside them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("accuracy", "distill_cost", "inference")


def main() -> int:
    argv = sys.argv[1:]
    scripts = SCRIPTS
    if argv[:1] == ["--only"]:  # e.g. --only distill_cost,inference
        scripts, argv = tuple(argv[1].split(",")), argv[2:]
        unknown = sorted(set(scripts) - set(SCRIPTS))
        if unknown:
            raise SystemExit(f"--only {unknown} is invalid: expected names from {SCRIPTS}")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    combined, failed = {}, []
    started = time.time()
    for i, name in enumerate(scripts):
        print(
            f"[bench] {i + 1}/{len(scripts)} {name}: starting ({(time.time() - started) / 60:.1f} min elapsed)",
            file=sys.stderr,
            flush=True,
        )
        returncode, stdout = run_streaming([sys.executable, str(HERE / f"{name}.py"), *argv])
        if returncode != 0:
            failed.append(name)
            print(f"[bench] {name} failed (exit {returncode}); its output is above", file=sys.stderr)
            continue
        result = json.loads(stdout if stdout.startswith("{") else stdout[stdout.index("\n{") + 1 :])  # the last print
        (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        combined[name] = result
        if name == "accuracy":  # keep the comparison figure and tables beside the JSON (runs/ is not tracked)
            for item, target in (
                ("comparison.png", "comparison.png"),
                ("comparison.md", "comparison.md"),
                ("rate_policy.json", "rate_policy.json"),
                ("results.json", "comparison.json"),
            ):
                shutil.copyfile(Path(result["run_dir"]) / "compare" / item, out_dir / target)
        print(f"[bench] {name}: done ({(time.time() - started) / 60:.1f} min elapsed)", file=sys.stderr, flush=True)
    print(json.dumps(combined, indent=2))
    return 1 if failed else 0


def run_streaming(command: list) -> tuple:
    """Run a benchmark script: its stderr (progress bars) passes through, its stdout is shown line by line and kept."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    kept = []
    for line in process.stdout:
        kept.append(line)
        if not line.startswith((" ", "{", "}")):  # progress lines, not the result's indented JSON
            print(line, end="", file=sys.stderr, flush=True)
    return process.wait(), "".join(kept)


if __name__ == "__main__":
    raise SystemExit(main())
