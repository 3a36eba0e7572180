"""The benchmark's machinery: resumable cells, the tuning grid, one teacher per comparison, the cost model.

The cells here are run by a launcher that writes the record a finished cell writes (its fingerprint,
teacher hash and val accuracy) without training, so the scheduler, plan, tuning and records are the
real ones and each test takes seconds; the slow test at the end trains every method for real.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rkd.bench.catalogue import RKD, method, parse_methods
from rkd.bench.costs import PER_IMAGE, estimate, method_steps, seed_images, simulate, unit_costs, with_measured
from rkd.bench.layout import TEACHER, Cell, base_config, cell_config, cell_dir, parse_cell, rkd_config
from rkd.bench.plan import comparison_cells, dropped_ablations, parse_seeds
from rkd.bench.records import BenchError, check_complete, check_one_teacher, read_record, write_record
from rkd.bench.report import write_report
from rkd.bench.scheduler import Bench, Finished, run_cells
from rkd.bench.tuning import choose, grid_as_it_stands, parse_grid
from rkd.config import load_config


def make_bench(tmp_path, names, seeds=(0, 1), grid=(1.0,), overrides=()):
    cfg = load_config(["default"], [f"runs_dir={tmp_path}", "name=bench", *overrides])
    return Bench(base_config(cfg), list(names), list(seeds), tuple(grid))


def fake_launcher(bench, launched, val=lambda cell: 0.5, fail=(), teacher=lambda cell: "teacher-a"):
    """Writes the record a finished cell writes, with ``val(cell)`` as its val accuracy; cells in ``fail`` fail."""

    def launch(cell, rkd_scale, threads):
        launched.append(cell.key)
        if cell.key in fail:
            return Finished(1)
        record = {
            "cell": cell.key,
            "done": True,
            "fingerprint": bench.fingerprint(cell, rkd_scale),
            "val_accuracy": val(cell),
            "teacher_hash": teacher(cell),
            "rkd_scale": rkd_scale,
            "seconds": 1.0,
        }
        write_record(cell_dir(bench.base, cell), record)
        return Finished(0)

    return launch


def run(bench, launched, **kwargs):
    return run_cells(bench, fake_launcher(bench, launched, **kwargs), parallel=2, threads=1, log=lambda text: None)


def test_cells_resume_where_they_stopped(tmp_path):
    bench = make_bench(tmp_path, ["deep-jscc", "label-digital"])
    launched = []
    outcome = run(bench, launched, fail={"deep-jscc@seed1@x1"})
    assert outcome["failed"] == ["deep-jscc@seed1@x1"] and not outcome["waiting"]
    assert launched[0] == TEACHER and len(launched) == 7  # teacher, rkd-sc x2, deep-jscc x2, label-digital x2
    assert launched.index("deep-jscc@seed1@x1") > launched.index("rkd-sc@seed1@x1")  # waits for its seed's RKD-SC
    launched.clear()
    assert run(bench, launched)["failed"] == [] and launched == ["deep-jscc@seed1@x1"]  # only what did not finish
    launched.clear()
    run(bench, launched)
    assert launched == []  # everything done: no process started
    edited = make_bench(tmp_path, ["deep-jscc", "label-digital"], overrides=["baselines.jscc_train.batch_size=128"])
    run(edited, launched)
    assert sorted(launched) == ["deep-jscc@seed0@x1", "deep-jscc@seed1@x1"]  # only the cells whose config changed


def test_a_cell_that_exits_0_without_its_fingerprint_fails_instead_of_starting_again(tmp_path):
    """A worker that writes another fingerprint (its code or config changed under the scheduler) is not relaunched."""
    bench = make_bench(tmp_path, ["label-digital"], seeds=(0,))
    honest = fake_launcher(bench, [])
    launched = []

    def stale(cell, rkd_scale, threads):
        assert cell.key not in launched, f"{cell.key} launched again"  # fail, rather than loop, if relaunched
        launched.append(cell.key)
        honest(cell, rkd_scale, threads)
        if cell.method == "label-digital":
            path = cell_dir(bench.base, cell) / "cell.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), "fingerprint": "from-other-code"}))
        return Finished(0)

    messages = []
    outcome = run_cells(bench, stale, parallel=2, threads=1, log=messages.append)
    assert outcome["failed"] == ["label-digital@seed0@x1"] and launched.count("label-digital@seed0@x1") == 1
    assert any("does not hold this plan's fingerprint" in m for m in messages)


def test_a_cell_made_again_says_why_in_the_plan_and_when_it_starts(tmp_path):
    launched, messages = [], []
    run(make_bench(tmp_path, ["deep-jscc"], seeds=(0,)), launched)
    tuned = make_bench(tmp_path, ["deep-jscc"], seeds=(0,), grid=(1, 2))
    higher = fake_launcher(tuned, launched, val=lambda cell: cell.scale)  # x2 wins: the x1 cell builds on x2
    run_cells(tuned, higher, parallel=1, threads=1, log=messages.append)
    again = [m for m in messages if "made again" in m]
    assert (
        len(again) == 1
        and "deep-jscc@seed0@x1" in again[0]
        and "made on RKD-SC at x1, this plan builds on x2" in again[0]
    )
    assert tuned.remade(*tuned.state()) == {}
    edited = make_bench(
        tmp_path, ["deep-jscc"], seeds=(0,), grid=(1, 2), overrides=["baselines.jscc_train.batch_size=128"]
    )
    reasons = edited.remade(*edited.state())
    assert sorted(reasons) == ["deep-jscc@seed0@x1", "deep-jscc@seed0@x2"]
    assert all("a field it reads differs" in why for why in reasons.values())


def test_how_long_processes_wait_for_each_other_leaves_the_cells_done(tmp_path):
    bench = make_bench(tmp_path, ["label-digital"], seeds=(0,))
    launched = []
    run(bench, launched)
    waits = make_bench(tmp_path, ["label-digital"], seeds=(0,), overrides=["collective_timeout_minutes=90"])
    launched.clear()
    run(waits, launched)
    assert launched == []


def test_the_same_bench_reached_by_another_path_keeps_its_cells_done(tmp_path):
    launched = []
    run(make_bench(tmp_path, ["deep-jscc", "label-digital"], seeds=(0,)), launched)
    link = tmp_path.with_name(tmp_path.name + "-link")
    link.symlink_to(tmp_path)
    launched.clear()
    run(make_bench(link, ["deep-jscc", "label-digital"], seeds=(0,)), launched)
    assert launched == []


def test_tuning_grid_chooses_on_val_then_runs_every_seed_at_the_choice(tmp_path):
    bench = make_bench(tmp_path, ["deep-jscc", "ablation:no-kd", "label-digital"], seeds=(0, 1, 2), grid=(0.5, 1, 2))
    best = {RKD: 2.0, "deep-jscc": 0.5}
    launched = []
    outcome = run(bench, launched, val=lambda c: 0.9 - abs(c.scale - best.get(c.method, 1.0)))
    assert outcome["chosen"] == {RKD: 2.0, "deep-jscc": 0.5, "ablation:no-kd": 1.0, "label-digital": 1.0}
    grid_cells = {f"{RKD}@seed0@x{x}" for x in ("0.5", "1", "2")}
    assert grid_cells <= set(launched[1:4]) | set(launched[1:5])  # RKD-SC's grid right after the teacher
    first_other = min(i for i, k in enumerate(launched) if not k.startswith((RKD, TEACHER)))
    assert all(launched.index(k) < first_other for k in grid_cells)  # nothing else before RKD-SC's choice
    expected = {f"{RKD}@seed{s}@x2" for s in (1, 2)} | {f"deep-jscc@seed0@x{x}" for x in ("0.5", "1", "2")}
    expected |= {f"deep-jscc@seed{s}@x0.5" for s in (1, 2)} | {f"ablation:no-kd@seed{s}@x1" for s in (0, 1, 2)}
    assert expected <= set(launched) and len(launched) == 1 + 3 + 2 + 3 + 2 + 3 + 3
    cfg = cell_config(rkd_config(bench.base, 1, 2.0), Cell("deep-jscc", 1, 0.5))
    assert cfg.baselines.jscc_train.lr == pytest.approx(0.5 * bench.base.baselines.jscc_train.lr)
    assert cfg.stage1.lr == pytest.approx(2 * bench.base.stage1.lr) and cfg.run_dir.name == "seed-1-x2"
    record = read_record(cell_dir(bench.base, Cell("deep-jscc", 2, 0.5)))
    assert record["rkd_scale"] == 2.0  # every cell of a seed builds on RKD-SC at its chosen rates
    records, chosen, _ = bench.state()  # the estimate follows the choices made: nothing is left
    left = estimate(bench.base, bench.names, bench.seeds, bench.grid, {}, {}, 2, set(records), chosen)
    assert left["cells"] == len(records) and left["cpu_seconds"] == 0
    with pytest.raises(BenchError, match="no results"):  # the fake cells trained nothing
        write_report(bench, "bench")
    tuning = json.loads((bench.base.run_dir / "tuning.json").read_text())
    assert tuning["methods"]["deep-jscc"]["chosen"] == 0.5 and tuning["methods"][RKD]["chosen"] == 2.0
    assert tuning["methods"]["deep-jscc"]["val_accuracy"] == {"0.5": 0.9, "1": 0.4, "2": pytest.approx(-0.6)}


def test_a_grid_extended_by_a_multiplier_shows_its_choices_before_its_dependents_are_made_again(tmp_path):
    launched = []
    run(make_bench(tmp_path, ["deep-jscc"], seeds=(0,), grid=(1, 2)), launched, val=lambda c: c.scale / 10)
    for cell in (Cell(RKD, 0, 2.0), Cell("deep-jscc", 0, 1.0)):  # two of them were swept
        records = [{"snr_db": s, "accuracy": a} for s, a in ((-10.0, 0.5), (20.0, 0.9), (25.0, 0.0))]
        (cell_dir(make_bench(tmp_path, []).base, cell) / "results.json").write_text(json.dumps({"records": records}))
    wider = make_bench(tmp_path, ["deep-jscc"], seeds=(0,), grid=(1, 2, 4))
    # RKD-SC's x4 cell alone, as `bench.py cell rkd-sc@seed0@x4 --rkd-scale 4` makes it; it wins by a little
    fake_launcher(wider, launched, val=lambda c: 0.201)(Cell(RKD, 0, 4.0), 4.0, 1)
    grid = grid_as_it_stands(wider.base, wider.names, wider.grid, 0)
    assert grid["chosen"] == {RKD: 4.0} and grid["missing"] == ["deep-jscc@seed0@x4"]
    assert {k: v["built_on_rkd_sc"] for k, v in grid["cells"].items() if k.startswith("deep-jscc")} == {
        "deep-jscc@seed0@x1": 2.0,
        "deep-jscc@seed0@x2": 2.0,
    }
    assert grid["cells"][f"{RKD}@seed0@x2"]["test_mean"] == pytest.approx(0.7)  # -10..20 dB only
    assert grid["cells"][f"{RKD}@seed0@x4"]["test_mean"] is None  # not swept
    assert grid["cells"][f"{RKD}@seed0@x4"]["val_accuracy"] == 0.201
    assert wider.remade(*wider.state()) == {
        "deep-jscc@seed0@x1": "it was made on RKD-SC at x2, this plan builds on x4",
        "deep-jscc@seed0@x2": "it was made on RKD-SC at x2, this plan builds on x4",
    }
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
    args = ["grid", "--grid", "1,2,4", "--seeds", "0,", "--only", "deep-jscc", f"runs_dir={tmp_path}"]
    done = subprocess.run([sys.executable, str(script), *args, "--results", str(tmp_path / "out")], capture_output=True)
    written = json.loads((tmp_path / "out" / "grid.json").read_text())
    assert done.returncode == 0 and {k: written[k] for k in grid} == grid
    assert written["command"] == f"python benchmarks/bench.py grid --grid 1,2,4 --only deep-jscc runs_dir={tmp_path}"


def test_choice_ties_and_grid_errors():
    assert choose({0.5: 0.8, 1.0: 0.8, 2.0: 0.8}) == 1.0  # a tie keeps the shipped rates
    assert choose({0.5: 0.8, 2.0: 0.8}) == 0.5
    assert parse_grid("2,0.5,1") == (0.5, 1.0, 2.0) and parse_grid(None) == (0.5, 1.0, 2.0)
    for bad in ("0.5,2", "0,1", "a"):
        with pytest.raises(ValueError, match="--grid"):
            parse_grid(bad)
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("4,2") == [4, 2] and parse_seeds("0,") == [0]
    with pytest.raises(ValueError, match="--seeds 0, "):  # the count of none says how to ask for seed 0
        parse_seeds("0")
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds("1,1")
    with pytest.raises(ValueError, match="--only nope"):
        parse_methods("vfe,nope")
    assert parse_cell("ablation:no-kd@seed3@x0.5") == Cell("ablation:no-kd", 3, 0.5)
    assert parse_cell(Cell("vfe", 2, 2.0).key) == Cell("vfe", 2, 2.0)


def test_the_comparison_refuses_missing_cells_and_mixed_teachers(tmp_path):
    bench = make_bench(tmp_path, ["vfe"])
    launched = []
    run(bench, launched, teacher=lambda c: "teacher-b" if c.key == "vfe@seed1@x1" else "teacher-a")
    with pytest.raises(BenchError, match=r"different teachers .*teacher-b.*: vfe@seed1@x1") as error:
        write_report(bench, "python benchmarks/bench.py run")
    assert "\n" not in str(error.value)
    assert not (bench.base.run_dir / "view" / "compare" / "results.json").exists()  # nothing half-written
    records, chosen, _ = bench.state()
    expected = comparison_cells(bench.names, bench.seeds, bench.grid, chosen)
    del records["vfe@seed0@x1"]
    with pytest.raises(BenchError, match=r"vfe@seed0@x1; make them with `python b.py run --only vfe --seeds 0`"):
        check_complete(expected, records, "python b.py run")
    assert check_one_teacher({"a": {"teacher_hash": "h"}, "b": {"teacher_hash": "h"}}) == "h"


def test_identical_stage2_ablations_are_dropped():
    base = base_config(load_config(["default"]))
    names = ["ablation:no-robust-kd", "ablation:robust-kd", "ablation:stage2-logit-kd"]
    assert list(dropped_ablations(base, names)) == ["ablation:no-robust-kd"]  # the default's stage 2 is task-only
    kd = base_config(load_config(["default"], ["stage2_loss.logit_kd=1"]))
    assert list(dropped_ablations(kd, names)) == ["ablation:stage2-logit-kd"]


def test_cost_model_counts_each_methods_budget_rule():
    cfg = base_config(load_config(["default"]))
    sizes = {"train": 54000, "val": 6000, "test": 10000}
    images = seed_images(cfg, 54000)
    assert images["stage1"] == 15 * 210 * 256 and images["teacher"] == 28 * 211 * 256
    assert images["candidates"] == 4096 * (16 * 1 + 4 * 2)  # 16 screened for 1 epoch, 4 finish 3
    per_seed = images["supernet"] + images["candidates"] + images["stage1"] + images["stage2"]
    assert method_steps(cfg, "deep-jscc", sizes)["fit:deep-jscc"] == math.ceil(per_seed / 256)
    whole = method_steps(cfg, "deep-jscc-budget", sizes)["fit:deep-jscc-budget"]
    assert whole == math.ceil((per_seed + images["teacher"]) / 256)
    assert method_steps(cfg, "no-teacher", sizes)["stage1"] == math.ceil((per_seed - images["stage2"]) / 256)
    assert method_steps(cfg, "ablation:robust-kd", sizes) == {"stage2": 8 * 210, "sweep": 10000}
    units = unit_costs(
        [
            {
                "method": RKD,
                "seconds": 10.0,
                "sizes": {"train": 4, "val": 1, "test": 5},
                "parts": {
                    "stage2": {"steps": 4, "seconds": 2.0, "flops": 4e6},
                    "sweep": {"steps": 9, "seconds": 5.0, "flops": None},
                },
            },
        ]
    )
    assert units["per_unit"][RKD] == {"sweep": 1.0} and units["overhead"] == 3.0
    assert units["per_unit"]["pipeline"] == {"stage2": 0.5}  # the stages' costs are pooled over methods
    assert units["flops_per_step"] == {RKD: {"stage2": 1e6}, "pipeline": {"stage2": 1e6}}  # a sweep trains nothing
    two = [
        {
            "method": method,
            "seconds": 1.0,
            "sizes": {},
            "parts": {"stage1": {"steps": steps, "seconds": 1.0, "flops": f}},
        }
        for method, steps, f in ((RKD, 1, 1e6), ("random-cells", 3, 9e6))
    ]
    per_step = unit_costs(two)["flops_per_step"]
    assert per_step[RKD] == {"stage1": 1e6} and per_step["random-cells"] == {"stage1": 3e6}  # each its own model
    assert per_step["pipeline"] == {"stage1": 2.5e6}  # pooled for the rest: all FLOPs over all steps
    est = estimate(cfg, ["ablation:robust-kd"], [0, 1], (1.0,), sizes, units, workers=2)
    assert est["uncalibrated"] == [RKD, TEACHER]  # no teacher or search costs in this calibration
    assert est["per_method"]["ablation:robust-kd"]["seconds"] == pytest.approx(2 * (3 + 0.5 * 1680 + 10000))
    assert est["per_method"]["ablation:robust-kd"]["flops_per_cell"] == pytest.approx(1e6 * 1680)  # full-size steps
    assert est["per_method"][RKD]["flops_per_cell"] is None  # its search's and stage 1's FLOPs were not counted
    # a finished full-size cell's costs replace the calibration's for the parts it measured, and its overhead
    full = {
        "method": RKD,
        "seconds": 20200.0,
        "sizes": sizes,
        "parts": {"stage2": {"steps": 1680, "seconds": 84.0}, "sweep": {"steps": 9, "seconds": 20000.0}},
    }
    merged, replaced = with_measured(units, [full])
    assert replaced == 2 and merged["overhead"] == pytest.approx(20200.0 - 84.0 - 20000.0)
    assert merged["per_unit"]["pipeline"]["stage2"] == pytest.approx(84.0 / 1680)
    assert merged["per_unit"][RKD]["sweep"] == pytest.approx(2.0)
    assert units["per_unit"]["pipeline"] == {"stage2": 0.5}  # the calibration itself is left as it was
    assert with_measured(units, []) == (units, 0)
    a, b, c = "a", "b", "c"
    assert simulate([a, b, c], {a: (), b: (a,), c: ()}, {a: 2.0, b: 1.0, c: 2.5}, workers=2) == 3.0


# the benchmark at toy size: the default's config with tiny models, data, search and schedules
SMOKE = [
    "data.val_fraction=0.2",
    "teacher.embedded_hidden_sizes=[8,16]",
    "teacher.embedded_depths=[1,1]",
    "teacher.embedded_embedding_size=8",
    "teacher.train.epochs=1",
    "teacher.train.batch_size=32",
    "teacher.train_precision=fp32",
    "teacher.cache_shard_size=64",
    "student.init_channels=4",
    "student.layers=3",
    "stage1.epochs=1",
    "stage1.batch_size=32",
    "codec.d_model=16",
    "codec.heads=2",
    "codec.encoder_depth=1",
    "codec.decoder_depth=1",
    "codec.max_symbols=8",
    "codec.rates=[2,8]",
    "stage2.epochs=1",
    "stage2.batch_size=32",
    "eval.snr_step=10",
    "eval.batch_size=50",
    "search.init_channels=4",
    "search.layers=3",
    "search.nodes=2",
    "search.train.epochs=1",
    "search.train.batch_size=16",
    "search.warmup_epochs=0",
    "search.max_train=48",
    "search.max_val=32",
    "search.candidates=2",
    "search.candidate_epochs=1",
    "search.candidate_batch_size=16",
    "search.candidate_max_train=64",
    "search.candidate_max_val=32",
    "search.candidate_survivors=null",
    "baselines.jscc_channels=8",
    "baselines.jscc_decoder_channels=8",
    "baselines.jscc_hidden=16",
    "baselines.jscc_train.batch_size=32",
    "baselines.vfe_train.batch_size=32",
    "baselines.conference_stage1.batch_size=32",
    "baselines.conference_snrs=[0,10]",
    "baselines.conference_train.epochs=2",
    "baselines.conference_train.batch_size=32",
    "baselines.conference_tokens=4",
    "baselines.conference_d_model=8",
    "baselines.conference_depth=1",
]


def test_a_cell_records_the_commit_it_started_on(tmp_path, monkeypatch):
    """A merge while a cell trains must not relabel the code it ran; the later commit is noted beside it."""
    from types import SimpleNamespace

    import rkd.bench.cell as cell_module

    bench = make_bench(tmp_path, ["deep-jscc"])
    commits = iter(["commit-at-start", "commit-after-a-merge"])
    monkeypatch.setattr(cell_module, "git_commit", lambda: next(commits))
    monkeypatch.setattr(cell_module, "run_teacher", lambda base, accelerator, run_stages: {"parts": {}})
    teacher = Cell(TEACHER, 0)
    accelerator = SimpleNamespace(is_main_process=True, mixed_precision="no")
    record = cell_module.run_cell(bench.base, teacher, 1.0, accelerator, run_stages=None, threads=1)
    assert record["git_commit"] == "commit-at-start"
    assert record["git_commit_at_finish"] == "commit-after-a-merge"
    assert read_record(cell_dir(bench.base, teacher))["git_commit"] == "commit-at-start"


def test_a_recheck_that_trains_nothing_keeps_the_first_runs_cost(tmp_path, monkeypatch):
    """A re-check skips every finished part; its few seconds must not replace what the cell cost."""
    from types import SimpleNamespace

    import rkd.bench.cell as cell_module

    bench = make_bench(tmp_path, ["deep-jscc"])
    teacher, accelerator = Cell(TEACHER, 0), SimpleNamespace(is_main_process=True, mixed_precision="no")
    trained_part = {"teacher": {"steps": 10, "seconds": 600.0}}

    def run(parts: dict, trained: bool, commit: str) -> dict:
        monkeypatch.setattr(cell_module, "git_commit", lambda: commit)
        monkeypatch.setattr(cell_module, "run_teacher", lambda *_: {"parts": parts, "trained": trained})
        cell_module.run_cell(bench.base, teacher, 1.0, accelerator, run_stages=None, threads=1)
        return read_record(cell_dir(bench.base, teacher))

    first = run(trained_part, True, "first")
    again = run({}, False, "recheck")
    assert again["parts"] == trained_part and again["seconds"] == first["seconds"]
    assert again["git_commit"] == "first" and again["finished"] == first["finished"]
    assert again["rechecked"]["git_commit"] == "recheck" and "git_commit_at_finish" not in again
    redone = run(trained_part, True, "redone")  # work done again is the cell's new cost
    assert redone["git_commit"] == "redone" and "rechecked" not in redone and redone["parts"] == trained_part


def test_a_plan_with_bad_seeds_says_so_in_one_line():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
    done = subprocess.run([sys.executable, str(script), "plan", "--seeds", "0"], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "[bench] --seeds 0 is a count of none: for seed 0 alone write --seeds 1 (a count) or --seeds 0, (a list)"
    ]


def test_a_plan_prints_each_methods_training_flops_the_calibrations_machine_and_runs_its_own_checkout(
    tmp_path, fake_fashion_dir
):
    pipeline = ("teacher", "search", "candidates", "stage1", "stage2")
    costs = {
        "machine": {"model": "Test CPU", "flags": ["avx2", "fma"], "cpus_available": 2, "torch_threads": 1},
        "units": {
            "per_unit": {
                "pipeline": {**{part: 1.0 for part in pipeline}, "cache": 0.001, "eval": 0.01},
                "deep-jscc": {"fit:deep-jscc": 1.0, "sweep": 0.01},
                RKD: {"sweep": 0.01},
            },
            "overhead": 1.0,
            "flops_per_step": {"pipeline": {part: 1e9 for part in pipeline}},  # none for Deep JSCC's fit
        },
    }
    (tmp_path / "costs.json").write_text(json.dumps(costs))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
    options = ["--only", "deep-jscc", "--seeds", "1", "--grid", "1", "--costs", str(tmp_path / "costs.json")]
    common = [f"runs_dir={tmp_path}", f"data.fashion_mnist_dir={fake_fashion_dir}", f"data.cache_dir={tmp_path / 'd'}"]
    other = tmp_path / "other-checkout" / "rkd"  # what an editable install of another checkout puts first
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("raise ImportError('imported the other checkout')\n")
    env = {**os.environ, "PYTHONPATH": str(other.parent)}
    done = subprocess.run(
        [sys.executable, str(script), "plan", *options, *common], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = {line.split()[1]: line for line in done.stderr.splitlines() if "CPU-h" in line}
    assert "training TFLOPs a cell" in lines[RKD] and "training TFLOPs a cell" in lines[TEACHER]
    assert "training FLOPs not counted" in lines["deep-jscc"]
    assert "calibrated on Test CPU [avx2, fma]" in done.stderr


@pytest.mark.slow  # every method and ablation trained and swept on two seeds: a few minutes on a shared 2-core machine
def test_bench_end_to_end_on_toy_settings(tmp_path, fake_fashion_dir):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
    common = [
        f"runs_dir={tmp_path / 'runs'}",
        f"data.fashion_mnist_dir={fake_fashion_dir}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        *SMOKE,
    ]
    options = ["--seeds", "2", "--grid", "1", "--costs", str(tmp_path / "none.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script), "run", "--in-process", *options, *common], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    bench = make_bench(tmp_path / "runs", parse_methods(None), overrides=common)
    names = [n for n in bench.names if n != "ablation:no-robust-kd"]  # the default's own stage 2: dropped
    data = json.loads((bench.base.run_dir / "view" / "compare" / "results.json").read_text())
    assert data["seeds"] == [0, 1] and set(result["report"]["cells"]) == {Cell(n, s).key for n in names for s in (0, 1)}
    labels = {"conference": "conference-rkd"}
    assert set(data["methods"]) == {labels.get(n, n) for n in names}
    records, _, _ = bench.state()
    assert len({r["teacher_hash"] for r in records.values()}) == 1  # one teacher, trained once
    teacher_runs = [r for r in records.values() if "teacher" in r.get("parts", {})]
    assert [r["cell"] for r in teacher_runs] == [TEACHER]
    tuned = [r for r in records.values() if r["method"] != TEACHER and method(r["method"]).lr_fields]
    assert tuned and all(r["val_accuracy"] is not None for r in tuned)  # what a grid would choose by
    assert all(r["machine"]["model"] and r["precision"]["mixed_precision"] for r in records.values())
    vfe = json.loads((cell_dir(bench.base, Cell("vfe", 1)) / "results.json").read_text())["summary"]
    assert vfe["budget_rule"] == "per-seed" and set(vfe["active_dims"]["per_k"]) == {"2", "8"}
    units = unit_costs(list(records.values()))
    sizes = {"train": 240, "val": 60, "test": 100}
    est = estimate(bench.base, names, [0, 1], (0.5, 1, 2), sizes, units, workers=2)
    assert est["uncalibrated"] == []
    trains = [n for n in est["per_method"] if set(method_steps(bench.base, n, sizes)) - set(PER_IMAGE)]
    assert "rkd-sc" in trains and "deep-jscc" in trains and "label-digital" not in trains  # the digital train nothing
    uncounted = {
        n: est["per_method"][n]["flops_per_cell"] for n in trains if not est["per_method"][n]["flops_per_cell"]
    }
    assert not uncounted  # every part that trains counted its FLOPs
    # a lost cell is made again by a worker process; the finished ones start nothing
    (cell_dir(bench.base, Cell("label-digital", 1)) / "cell.json").unlink()
    again = subprocess.run(
        [sys.executable, str(script), "run", "--parallel", "2", *options, *common],
        env=env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("[bench] start ") == 1 and "start label-digital@seed1@x1" in again.stderr
