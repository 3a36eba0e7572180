"""Class names, the dataset's description, per-class accuracy and confusion matrices in the eval outputs."""

import csv
import json

import numpy as np
import torch
from test_export import TRANSFORM, images, tiny_system
from test_pipeline import TINY

from rkd.evaluation.classwise import (
    chosen_snrs,
    classwise_summary,
    confusion_matrix,
    csv_rows,
    per_class_accuracy,
    render_lines,
)

NAMES = ["zéro", "café", "class seven", "九 nine"]


def test_per_class_accuracy_and_confusion_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    preds = torch.tensor([0, 1, 1, 1, 0, 2])
    assert per_class_accuracy(preds, labels, 4) == [0.5, 2 / 3, 1.0, None]
    assert confusion_matrix(preds, labels, 4) == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert chosen_snrs([-10.0, -5.0, 0.0, 5.0]) == ([-10.0, 0.0, 5.0], 0.0)
    assert chosen_snrs([4.0, 8.0]) == ([4.0, 8.0], 4.0)  # no 0 dB on the grid: the lowest


def test_summary_is_seeded_consistent_and_rendered(tmp_path):
    system = tiny_system()
    x = images(40)
    labels = torch.arange(40) % 10
    with torch.no_grad():
        tokens = system.student(TRANSFORM(x))["tokens"]
        student_preds = system.classify(system.student(TRANSFORM(x))["features"]).argmax(-1)
    names = [f"c{i}" for i in range(10)]
    args = (system, tokens, labels, student_preds, names, [-10.0, 0.0, 10.0, 20.0], [2, 8], 16, 3)
    first, again = classwise_summary(*args), classwise_summary(*args)
    assert first == again  # seeded noise
    assert [e["label"] for e in first["entries"]] == ["student (clean)", "RKD-SC -10 dB", "RKD-SC 0 dB", "RKD-SC 20 dB"]
    assert first["channel"] == "awgn" and first["channel_uses"] == 8 and first["low_snr_db"] == 0.0
    assert [("matrix" in e) for e in first["entries"]] == [True, False, True, False]
    for e in first["entries"]:  # overall accuracy = per-class accuracies weighted by class counts
        weighted = sum(a * n for a, n in zip(e["per_class"], first["test_counts"])) / sum(first["test_counts"])
        assert abs(weighted - e["accuracy"]) < 1e-9
        if "matrix" in e:
            m = np.array(e["matrix"])
            assert m.sum() == 40 and abs(np.trace(m) / 40 - e["accuracy"]) < 1e-9
    rows = csv_rows(first)
    assert len(rows) == 4 * 10 and {r["class"] for r in rows} == set(names)
    text = "\n".join(render_lines(first, most=5))
    assert "the 5 classes lowest at 0 dB of 10" in text and "| **all** | 40 |" in text


def _imagefolder(root):
    """4 named classes, told apart by brightness."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 6)):
        for c, name in enumerate(NAMES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.integers(0, 40, (28, 28)) + 60 * c, 0, 255).astype(np.uint8)
                Image.fromarray(pixels, mode="L").save(root / split / name / f"{i}.png")
    return root


def test_eval_outputs_name_the_classes(tmp_path, capsys):
    from rkd.cli import main

    root = _imagefolder(tmp_path / "digits")
    args = [
        "--runs-dir",
        str(tmp_path / "runs"),
        "--name",
        "named",
        f"data.name=imagefolder:{root}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        *TINY,
        "eval.snr_step=15",
    ]
    assert main(["run", *args]) == 0
    out = tmp_path / "runs" / "named" / "eval"
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary["dataset"]["class_names"] == sorted(NAMES)
    assert summary["dataset"]["splits"] == {"train": 77, "val": 19, "test": 24}
    assert summary["dataset"]["image_shape"] == [28, 28, 1] and summary["dataset"]["source"].startswith("imagefolder:")
    cw = summary["classwise"]
    assert cw["class_names"] == sorted(NAMES) and cw["test_counts"] == [6, 6, 6, 6]
    student = cw["entries"][0]
    assert student["label"] == "student (clean)" and abs(student["accuracy"] - summary["student_accuracy"]) < 1e-6
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["class"] for r in rows} == set(NAMES) | {""}
    assert len([r for r in rows if r["class"] == "九 nine"]) == len(cw["entries"])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert all(name in report for name in NAMES) and "## Per-class accuracy" in report
    assert "train 77 / val 19 / test 24" in report and "confusion_matrix.png" in report
    assert (out / "confusion_matrix.png").stat().st_size > 0
    (out / "confusion_matrix.png").unlink()
    assert main(["report", *args]) == 0  # re-rendered from results.json
    assert (out / "confusion_matrix.png").exists()
