"""Entry script: `accelerate launch rkd/evaluate.py [--config ...] [section.field=value ...]` runs
the evaluation (sweeps, plots, report), after every stage it needs: the same as `rkd evaluate ...`. The stage code is the library's (`rkd.stages`); nothing imports this file.
"""

import sys
from pathlib import Path

if __name__ == "__main__":  # launched by path: import rkd.* from this checkout, never rkd/ itself as top level
    sys.path[:] = [str(Path(__file__).resolve().parents[1])] + [
        p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent
    ]
    from rkd.cli import main  # after the path fix, so this checkout's rkd is the one imported

    raise SystemExit(main(["evaluate", *sys.argv[1:]]))
