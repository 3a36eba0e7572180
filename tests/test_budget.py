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


def test_training_flops_are_images_times_the_counted_flops_per_image_and_unknown_when_a_step_was_not_counted(tmp_path):
    cfg = load_config(
        None,
        [
            f"runs_dir={tmp_path}",
            "name=f",
            "teacher.train.batch_size=64",
            "stage1.batch_size=32",
            "search.candidate_batch_size=16",
        ],
    )
    counted = {"throughput": {"flops_per_image": 1000.0}}
    selection = {"train_rows": 40, "candidates": 2, "survivors": 1, "epochs": 3, "screened": True, "screen_epochs": 1}
    for stage, summary in {
        "teacher": {"steps": 10, "seconds": 5.0, **counted},
        "cache": {"seconds": 1.0},
        "search": {"steps": 2, "seconds": 1.0, "selection": selection, "throughput": {"flops_per_image": 50.0}},
        "stage1": {"steps": 4, "seconds": 2.0, "world_size": 2, "throughput": {"flops_per_image": 10.0}},
    }.items():
        (cfg.run_dir / stage).mkdir(parents=True)
        (cfg.run_dir / stage / "stage.json").write_text(json.dumps({"summary": summary}))
    # the candidates: 32 images an epoch (two full batches of 40 rows); one screened for 1 epoch, one kept to 3
    for i, (scored, per_image) in enumerate(((["1"], 7.0), (["1", "3"], 3.0))):
        where = cfg.run_dir / "search" / "candidates" / f"candidate-{i}"
        where.mkdir(parents=True)
        record = {"val_accuracy": {e: 0.5 for e in scored}, "seconds": 1.0, "flops_per_image": per_image}
        (where / "candidate.json").write_text(json.dumps(record))
    parts = pipeline_costs(cfg, cfg.run_dir, ("teacher", "cache", "search", "stage1"), n_train=320)
    assert parts["teacher"]["flops"] == 640 * 1000 and parts["cache"]["flops"] is None
    assert parts["stage1"]["flops"] == 4 * 32 * 2 * 10
    supernet = 2 * cfg.search.train.batch_size * 50
    assert parts["search"]["flops"] == supernet + 32 * 1 * 7 + 32 * 3 * 3
    budget = rkd_budget(cfg, None, 320, ("teacher", "cache", "search", "stage1"))
    assert budget["flops"] == 640_000 + parts["search"]["flops"] + 2560  # the cache pass trains nothing
    resumed = {"steps": 4, "seconds": 2.0}  # a stage resumed past its counted step has no count
    (cfg.run_dir / "stage1" / "stage.json").write_text(json.dumps({"summary": resumed}))
    assert rkd_budget(cfg, None, 320, ("teacher", "stage1"))["flops"] is None
