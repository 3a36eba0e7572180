"""Run every benchmark of the comparison issue once and keep their JSON in benchmarks/results/.

    python benchmarks/run_all.py [--only a,b] [--config ...] [overrides]      # or: make bench

Each script runs in its own process with one torch thread (the machine may be shared); the
combined JSON is printed and each script's output is written to benchmarks/results/<name>.json,
with the comparison's figure, tables and rate policy copied beside them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
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
    for name in scripts:
        done = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *argv], capture_output=True, text=True,
                              env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            failed.append(name)
            print(f"[bench] {name} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        result = json.loads(done.stdout[done.stdout.index("{"):])
        (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        combined[name] = result
        if name == "accuracy":  # keep the comparison figure and tables beside the JSON (runs/ is not tracked)
            for item in ("comparison.png", "comparison.md", "rate_policy.json"):
                shutil.copyfile(Path(result["run_dir"]) / "compare" / item, out_dir / item)
    print(json.dumps(combined, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
