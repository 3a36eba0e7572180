"""The comparison on a synthetic run directory: the cells it asks for, its one-line error and atomic outputs,
the verdicts over seeds and the yardstick it reports."""

import json

import pytest
import yaml

from rkd.coding.bounds import decision_accuracy, simplex_success
from rkd.evaluation.compare import ComparisonError, write_comparison
from rkd.evaluation.compare_plot import lead_panels
from rkd.evaluation.records import channel_record

SPECS = [{"name": "awgn"}, {"name": "rayleigh", "csi": "perfect"}]
SNRS = [-10.0, 0.0, 10.0]


def write_method(root, method, accuracy, specs=SPECS, trained=("awgn", "rayleigh-csi")):
    directory = root / "baselines" / method.replace(":", "-")
    directory.mkdir(parents=True)
    records = [channel_record(method, s, snr, 8, accuracy + 0.01 * snr / 10, 1000) for snr in SNRS for s in specs]
    summary = {
        "method": method,
        "kind": "scheme",
        "tx_params": 10,
        "tx_flops": 20,
        "rx_params": 5,
        "rx_flops": 7,
        "trained_on": list(trained),
    }
    (directory / "results.json").write_text(json.dumps({"summary": summary, "records": records}))
    (directory / "done.json").write_text(json.dumps({"hash": "x"}))


def write_eval(root, student=0.9):
    (root / "eval").mkdir(parents=True)
    summary = {
        "teacher_accuracy": 0.93,
        "teacher_params": 1000,
        "teacher_flops": 5000,
        "student_accuracy": student,
        "student_params": 40,
        "student_flops": 100,
        "n_test": 1000,
        "num_classes": 10,
    }
    (root / "eval" / "results.json").write_text(json.dumps({"summary": summary, "records": []}))


def make_run(tmp_path, seeds=(0, 1), methods=("rkd-sc", "deep-jscc")):
    run = tmp_path / "run"
    run.mkdir()
    cfg = {
        "seed": 0,
        "baselines": {"seeds": list(seeds)},
        "data": {"image_size": 28},
        "codec": {"rates": [8]},
        "eval": {"channels": SPECS, "seed": 1234},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    for seed in seeds:
        root = run if seed == 0 else run / "seeds" / f"seed-{seed}"
        write_eval(root)
        for i, method in enumerate(methods):
            write_method(root, method, 0.7 + 0.003 * seed - 0.05 * i)
    return run


def test_missing_cells_are_named_and_nothing_is_written(tmp_path):
    run = make_run(tmp_path, seeds=(0,))
    with pytest.raises(ComparisonError) as err:
        write_comparison(run, 8, 0.01, seeds=[0, 1], methods=["rkd-sc", "deep-jscc"])
    message = str(err.value)
    assert "\n" not in message and "rkd-sc at seed 1" in message and "deep-jscc at seed 1" in message
    assert f"rkd baselines --config {run / 'config.yaml'} baselines.seeds=[0,1]" in message
    assert not (run / "compare").exists()
    with pytest.raises(ComparisonError, match="adjscc at seed 0"):
        write_comparison(run, 8, 0.01, seeds=[0], methods=["rkd-sc", "adjscc"])
    with pytest.raises(ComparisonError, match="deep-jscc at seed 0 on rician-k4-csi"):
        write_comparison(run, 8, 0.01, seeds=[0], channels=["awgn", "rician-k4-csi"])
    write_comparison(run, 8, 0.01, seeds=[0])  # what exists: written
    before = (run / "compare" / "results.json").read_bytes()
    with pytest.raises(ComparisonError):
        write_comparison(run, 8, 0.01, seeds=[0, 2])
    assert (run / "compare" / "results.json").read_bytes() == before  # the previous comparison stays whole
    assert not list((run / "compare").glob(".*.tmp"))


def test_verdicts_and_yardstick_in_the_comparison(tmp_path):
    run = make_run(tmp_path, seeds=(0, 1, 2))
    path = write_comparison(run, 8, 0.01, noninferiority_margin=0.005)
    data = json.loads((run / "compare" / "results.json").read_text())
    assert data["seeds"] == [0, 1, 2]
    verdicts = data["targets"]["verdicts"]
    target = verdicts["families"]["target"]
    assert {(r["method"], r["channel_label"]) for r in target} == {("deep-jscc", "awgn"), ("deep-jscc", "rayleigh-csi")}
    assert all(r["verdict"] == "superior" and r["mean_difference"] == pytest.approx(0.05) for r in target)
    assert verdicts["noninferior_everywhere"]
    yardstick = {(r["channel_label"], r["snr_db"]): r for r in data["yardstick"]}
    expected = float(decision_accuracy(0.9, simplex_success(10, 8, -10.0), 10))
    assert yardstick[("awgn", -10.0)]["accuracy"] == pytest.approx(expected)
    gaps = data["targets"]["yardstick"]
    assert [g["snr_db"] for g in gaps["cells"]] == [-10.0, 0.0]  # AWGN at SNR <= 0 dB only
    assert gaps["cells"][0]["gap"] == pytest.approx(0.693 - expected)  # seeds 0, 1, 2: 0.69 + 0.003 * seed
    text = path.read_text()
    assert "## Verdicts over seeds" in text and "superior" in text and "## The yardstick" in text
    assert (run / "compare" / "comparison.png").stat().st_size > 0


def test_the_lead_figure_shows_its_methods_on_the_panels_that_ran(tmp_path):
    methods = ("rkd-sc", "deep-jscc", "ablation:no-kd", "label-digital", "deep-jscc-kd")
    run = make_run(tmp_path, seeds=(0, 1), methods=methods)
    path = write_comparison(run, 8, 0.01)
    records = json.loads((run / "compare" / "results.json").read_text())["records"]
    panels, shown = lead_panels(records)
    assert panels == [("awgn", 8), ("rayleigh-csi", 8)]  # k = 32 was not swept
    assert shown == ["rkd-sc", "ablation:no-kd", "deep-jscc-kd", "label-digital"]  # plain Deep JSCC is not a lead curve
    assert (run / "compare" / "lead.png").stat().st_size > 0 and "`lead.png`" in path.read_text()
    tuned = [dict(r, method="no-teacher") for r in records if r["method"] == "ablation:no-kd"]
    assert lead_panels(records + tuned)[1] == ["rkd-sc", "no-teacher", "deep-jscc-kd", "label-digital"]  # one curve
    for record in records:  # RKD-SC swept at another k only: no panel, so no lead figure
        if record["method"] == "rkd-sc" and record["channel_uses"] == 8:
            record["channel_uses"] = 4
    assert lead_panels(records)[0] == []


def test_the_yardstick_cells_come_in_order_of_k_then_snr():
    """Records arrive in whatever order the sweep wrote them; the table reads from low k and low SNR up."""
    from rkd.evaluation.yardstick import yardstick_gaps

    cells = [(32, -2.0), (4, -10.0), (32, -10.0), (4, 0.0), (16, -4.0)]
    records = [{"channel_label": "awgn", "channel_uses": k, "snr_db": snr, "accuracy": 0.5} for k, snr in cells]
    gaps = yardstick_gaps(records, list(reversed(records)))["cells"]
    assert [(g["k"], g["snr_db"]) for g in gaps] == sorted(cells)
