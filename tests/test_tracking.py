"""Experiment tracking through Accelerate's log_with: TensorBoard event files read back."""

import json

import pytest
from accelerate.utils import LoggerType
from test_pipeline import TINY

from rkd.config import TRACKERS, ConfigError, load_config
from rkd.run.tracking import accelerator_kwargs, flat_config


def test_tracker_names_are_accelerates():
    assert set(TRACKERS) == {t.value for t in LoggerType}


def test_bad_or_missing_tracker_is_refused_naming_the_field(monkeypatch):
    with pytest.raises(ConfigError, match="tracking.log_with.*'tensorbored'.*tensorboard"):
        load_config(None, ["tracking.log_with=[tensorbored]"])
    assert accelerator_kwargs(load_config(None)) == {}  # none by default
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_mlflow_available", lambda: False)
    with pytest.raises(ConfigError, match="tracking.log_with.*'mlflow'.*not installed"):
        accelerator_kwargs(load_config(None, ["tracking.log_with=[mlflow]"]))


def test_flat_config_holds_only_scalars():
    flat = flat_config(load_config(None, ["name=exp7"]))
    assert flat["run_name"] == "exp7" and flat["stage1.lr"] == load_config(None).stage1.lr
    assert json.loads(flat["codec.rates"]) == load_config(None).codec.rates
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())


def test_tensorboard_run_reads_back_the_log_jsonl_scalars(fake_fashion_dir, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rkd.cli import main

    args = [
        "--runs-dir",
        str(tmp_path / "runs"),
        "--name",
        "tb",
        f"data.fashion_mnist_dir={fake_fashion_dir}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        *TINY,
        "teacher.train.epochs=2",
        "teacher.train.log_every=3",
        "tracking.log_with=[tensorboard]",
        "tracking.project=rkdtest",
    ]
    assert main(["teacher", *args]) == 0
    run = tmp_path / "runs" / "tb"
    events = EventAccumulator(str(run / "tracking" / "rkdtest"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    records = [json.loads(line) for line in (run / "teacher" / "log.jsonl").read_text().splitlines()]
    expected = {}
    for r in records:
        for key, value in r.items():
            if key not in ("stage", "step"):
                expected.setdefault(f"teacher/{key}", []).append((r["step"], value))
    assert {"teacher/loss", "teacher/lr", "teacher/val_accuracy", "teacher/val_loss"} <= tags
    assert tags == set(expected)  # the same numbers as log.jsonl, nothing else
    for tag, points in expected.items():
        read = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in read] == [s for s, _ in points]
        assert all(abs(a - b) <= 1e-5 * max(1.0, abs(b)) for (_, a), (_, b) in zip(read, points))
    hparams = list((run / "tracking" / "rkdtest").rglob("hparams.yml"))
    assert hparams and "run_name: tb" in hparams[0].read_text()
    print(f"read back {len(tags)} TensorBoard tags; teacher/val_accuracy = {events.Scalars('teacher/val_accuracy')}")
