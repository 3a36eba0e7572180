"""Are two run directories the same run? Weights by sha256, genotype and eval records, as JSON.

A behaviour-neutral change (a refactor) must give bit-identical results for the same config, seed
and thread count. Timings, absolute paths and the config hash (it follows the config's layout) are
left out of the comparison.

    OMP_NUM_THREADS=1 rkd run --quick --runs-dir /tmp/before    # at the old commit
    OMP_NUM_THREADS=1 rkd run --quick --runs-dir /tmp/after     # at the new one
    python benchmarks/same_run.py /tmp/before/quick /tmp/after/quick
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

WEIGHTS = ("teacher/model/model.safetensors", "stage1/model.safetensors", "stage2/model.safetensors")
IGNORED = {"seconds", "config_hash", "genotype", "source", "how"}  # timings, paths, layout-dependent hash


def without_ignored(value):
    if isinstance(value, dict):
        return {k: without_ignored(v) for k, v in value.items() if k not in IGNORED}
    if isinstance(value, list):
        return [without_ignored(v) for v in value]
    return value


def compare(a: Path, b: Path) -> dict:
    checks = {
        rel: hashlib.sha256((a / rel).read_bytes()).hexdigest() == hashlib.sha256((b / rel).read_bytes()).hexdigest()
        for rel in WEIGHTS
    }
    genotypes = [without_ignored(json.loads((d / "search" / "genotype.json").read_text())) for d in (a, b)]
    checks["search/genotype.json"] = genotypes[0] == genotypes[1]
    results = [json.loads((d / "eval" / "results.json").read_text()) for d in (a, b)]
    checks["eval records"] = results[0]["records"] == results[1]["records"]
    checks["eval summary"] = without_ignored(results[0]["summary"]) == without_ignored(results[1]["summary"])
    return {"a": str(a), "b": str(b), "same": all(checks.values()), "checks": checks}


if __name__ == "__main__":
    result = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["same"] else 1)
