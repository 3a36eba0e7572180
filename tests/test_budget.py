"""Training budgets from finished stages, and the budget-matched Deep JSCC schedule."""

import json

import pytest

from rkd.baselines.budget import matched_schedule, part_cost, pipeline_costs, rkd_budget, total
from rkd.config import load_config


def test_costs_from_stage_records(tmp_path):
    cfg = load_config(
        None,
        [
            f"runs_dir={tmp_path}",
            "name=b",
            "teacher.train.batch_size=64",
            "stage1.batch_size=32",
            "stage2.batch_size=16",
        ],
    )
    for stage, summary in {
        "teacher": {"steps": 10, "seconds": 5.0},
        "cache": {"seconds": 1.0},
        "stage1": {"steps": 4, "seconds": 2.0, "world_size": 2},
        "stage2": {"steps": 8, "seconds": 3.0},
    }.items():
        (cfg.run_dir / stage).mkdir(parents=True)
        (cfg.run_dir / stage / "stage.json").write_text(json.dumps({"summary": summary}))
    parts = pipeline_costs(cfg, cfg.run_dir, ("teacher", "cache", "search", "stage1", "stage2"), n_train=320)
    assert set(parts) == {"teacher", "cache", "stage1", "stage2"}  # no search stage ran
    assert parts["teacher"]["images_seen"] == 640 and parts["teacher"]["epochs"] == pytest.approx(2.0)
    assert parts["stage1"]["images_seen"] == 4 * 32 * 2 and parts["cache"]["images_seen"] == 0
    budget = rkd_budget(cfg, None, 320)
    assert budget["images_seen"] == 640 + 256 + 128 and budget["seconds"] == pytest.approx(11.0)
    assert total({"x": part_cost(3, 10, 1, 1.5, 30)}, 30)["epochs"] == pytest.approx(1.0)


def test_matched_schedule():
    # 1,024 images at batch 32 on one process: 32 steps; 320 train images = 10 steps/epoch -> 4 epochs
    assert matched_schedule(1024, 32, 1, 320) == {"epochs": 4, "max_steps": 32}
    assert matched_schedule(1000, 32, 2, 320)["max_steps"] == 16  # ceil(1000 / 64)
    with pytest.raises(ValueError, match="rkd-sc"):
        matched_schedule(0, 32, 1, 320)
