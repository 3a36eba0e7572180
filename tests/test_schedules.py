"""Warm-ups as a fraction of each run's steps, and training to convergence (early stopping on val accuracy)."""

import math

import pytest
import torch
from test_engine import Objective, model, toy_data

from rkd.config import ConfigError, TrainConfig, load_config
from rkd.engine import fit, make_accelerator
from rkd.optim import build_scheduler, warmup_steps


def lrs(cfg: TrainConfig, total: int) -> list:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, cfg, total)
    out = []
    for _ in range(total):
        out.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return out


def test_a_warmup_fraction_scales_with_the_run():
    cfg = TrainConfig(warmup_fraction=0.25)
    assert [warmup_steps(cfg, n) for n in (8, 40, 400)] == [2, 10, 100]  # a quarter of whatever the run is
    assert warmup_steps(TrainConfig(warmup_steps=7), 8) == warmup_steps(TrainConfig(warmup_steps=7), 400) == 7
    assert lrs(cfg, 8)[:3] == [0.5, 1.0, 1.0]  # ramp over 2 steps, then the cosine from its top
    assert lrs(cfg, 8)[-1] < 0.1
    long = lrs(cfg, 40)
    assert long[9] == 1.0 and long[8] < 1.0  # 10 warm-up steps when the run is 5x longer


def test_the_shipped_fractions_keep_the_measured_step_counts():
    """The default's warm-ups were 215 teacher and 200 stage-2 steps; as fractions they give those on its
    data (54,000 train images) and scale down on the quick profile's 3,000 (the teacher: 2 steps, as before)."""
    default = load_config(["default"])
    teacher = default.teacher.train
    assert warmup_steps(teacher, teacher.epochs * math.ceil(54000 / teacher.batch_size)) == 215
    assert warmup_steps(default.stage2, default.stage2.epochs * (54000 // default.stage2.batch_size)) == 200
    quick = load_config(["default", "quick"])
    assert warmup_steps(quick.teacher.train, math.ceil(3000 / 256)) == 2
    assert warmup_steps(quick.stage2, quick.stage2.epochs * (3000 // 256)) == 3  # was 200: longer than the run


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["stage2.warmup_steps=10", "stage2.warmup_fraction=0.1"], "stage2.warmup_fraction"),
        (["teacher.train.warmup_steps=5"], "teacher.train.warmup_fraction"),  # the default already has a fraction
        (["stage1.warmup_fraction=1.0"], "stage1.warmup_fraction"),
        (["baselines.vfe_train.warmup_fraction=-0.1"], "baselines.vfe_train.warmup_fraction"),
    ],
)
def test_a_warmup_is_given_once_and_as_a_share(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(["default"], overrides)
    assert load_config(["default"], ["teacher.train.warmup_steps=5", "teacher.train.warmup_fraction=0"])


def test_early_stopping_ends_after_patience_flat_epochs(tmp_path):
    accelerator = make_accelerator(cpu=True)
    train, val = toy_data()
    frozen = TrainConfig(epochs=10, lr=1e-12, early_stop_patience=2, log_every=100)  # val accuracy never moves
    summary = fit(accelerator, model(), Objective(), train, val, frozen, tmp_path / "flat")
    assert summary["stopped_early"] and summary["epochs"] == 3 and len(summary["history"]) == 3
    learning = TrainConfig(epochs=3, lr=1e-2, early_stop_patience=5, log_every=100)
    summary = fit(accelerator, model(), Objective(), train, val, learning, tmp_path / "learning")
    assert not summary["stopped_early"] and summary["epochs"] == 3
    resumed = fit(accelerator, model(), Objective(), train, val, frozen, tmp_path / "flat")  # finished: stays stopped
    assert resumed["stopped_early"] and resumed["steps"] == 3 * 16
