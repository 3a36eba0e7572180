"""Time said up front (rkd.run.estimate, rkd.run.plan): the projection's logic on a fake clock, the plans' step
counts against the loaders the stages really build, and a real run's lines and records."""

from __future__ import annotations

import json
import math

import pytest

from rkd.run.estimate import LONG_RUN, StageClock, StagePlan, advance, plan_lines, stage_clock, timing_record


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def two_phase_plan() -> StagePlan:
    plan = StagePlan("search")
    plan.add("search:train", 10, 1.0)  # weight-only steps
    plan.add("search:train", 10, 2.0)  # steps with an architecture update: the same name, twice the cost
    plan.add("candidate:train", 40, 0.5)
    plan.add("candidate:val", 1000, 0.001)
    return plan


def test_projection_scales_the_rest_of_the_plan_by_how_the_work_so_far_went():
    time, said = FakeTime(), []
    clock = StageClock(two_phase_plan(), said.append, after=30.0, now=time)
    assert clock.plan.seconds == 10 + 20 + 20 + 1
    time.t = 5.0  # set-up before the first step (loading, allocation): paid once, not a pace
    for _ in range(10):  # each step takes one and a half times the calibrated second
        time.t += 1.5
        clock.advance("search:train")
    assert not said  # 20 s: not yet
    for _ in range(4):
        time.t += 3.0
        clock.advance("search:train")
    # at 32 s: 18 planned seconds done, paced from the first report (6.5 s, 1 planned second) on
    assert clock.projected == pytest.approx(32 + (6 * 2 + 20 + 1) * (32 - 6.5) / (18 - 1))
    assert len(said) == 1 and said[0].startswith("[rkd] search: projected 0:01:22 in all (0:00:50 to go)")
    assert "from its first 32 s; the plan said 0:00:51" in said[0]
    clock.advance("search:train")
    assert len(said) == 1  # said once


def test_each_kind_of_work_is_priced_by_its_own_pace_once_it_has_one():
    """Stage 2 begins with the student's tokens (forward passes, here faster than planned), then trains (here
    slower than planned): the training left is priced by the training's pace, not by a mix of the two."""
    time, said = FakeTime(), []
    plan = StagePlan("stage2")
    plan.add("tokens", 100, 0.1)
    plan.add("stage2:train", 40, 1.0)
    plan.add("stage2:val", 10, 0.1)
    clock = StageClock(plan, said.append, after=30.0, now=time)
    time.t = 1.0
    for _ in range(10):
        time.t += 0.25
        clock.advance("tokens", 10)
    for _ in range(18):  # past a quarter of the training's plan: its own pace
        time.t += 1.5
        clock.advance("stage2:train")
    truth = 30.5 + 22 * 1.5 + 1 * (30.5 - 1.25) / (28 - 1)  # the val, not yet seen, at the pace of all work so far
    assert clock.projected == pytest.approx(truth)
    assert len(said) == 1


def after_the_supernet() -> tuple:
    """A search clock past its 40 supernet steps at the plan's pace (140 s projected), before any candidate."""
    time, said = FakeTime(), []
    plan = StagePlan("search")
    plan.add("search:train", 40, 1.0)
    plan.add("candidate:train", 100, 1.0)
    clock = StageClock(plan, said.append, after=30.0, now=time)
    for _ in range(40):
        time.t += 1.0
        clock.advance("search:train")
    return plan, clock, time, said


def test_the_projection_is_revised_once_unseen_work_is_timed():
    """The search's candidates start after its first 30 s; here each costs twice its planned second. Their
    pace is trusted once a quarter of them ran (the first few candidates' cells need not price the rest)."""
    _, clock, time, said = after_the_supernet()
    assert clock.projected == pytest.approx(140.0) and len(said) == 1  # the plan's pace: 140 s
    for _ in range(24):  # 24 planned seconds of 100: not yet a pace of its own
        time.t += 2.0
        clock.advance("candidate 1/16:train")
    assert len(said) == 1
    time.t += 2.0
    clock.advance("candidate 2/16:train")
    assert clock.revised == pytest.approx(90.0 + 75 * 2.0)
    assert said[1] == (
        "[rkd] search: revised projection 0:04:00 in all (0:02:30 to go), now that candidate:train is timed; "
        "said before: 0:02:20"
    )
    for _ in range(10):
        time.t += 2.0
        clock.advance("candidate 2/16:train")
    assert len(said) == 2  # the pace stayed: nothing new to say


def test_a_rescaled_plan_revises_a_projection_that_moved_and_leaves_the_callers_plan_alone():
    plan, clock, _, said = after_the_supernet()
    clock.rescale("candidate", 0.9, "14 candidates drawn")
    assert len(said) == 1  # 130 s for 140 s: within REVISE_BY, not said again
    clock.rescale("candidate", 0.5, "7 candidates drawn")
    assert clock.revised == pytest.approx(40.0 + 45.0)
    assert said[1].endswith("7 candidates drawn; said before: 0:02:20")
    assert plan.seconds == 140.0 and clock.plan.seconds == 85.0
    assert timing_record(plan, clock) == {"planned_seconds": 140.0, "projected_seconds": 140.0, "revised_seconds": 85.0}


def test_reports_fill_phases_in_order_and_candidates_match_by_their_first_word():
    time = FakeTime()
    clock = StageClock(two_phase_plan(), lambda line: None, after=1e9, now=time)
    clock.advance("search:train", 12)
    assert clock.done[:2] == [10, 2]
    clock.advance("candidate 3/16 (1 of 3 epochs):train", 5)
    clock.advance("candidate 3/16 (1 of 3 epochs):val", 250)
    assert clock.done[2:] == [5, 250]
    clock.advance("teacher:train")  # not this stage's work: ignored
    assert sum(clock.done) == 12 + 5 + 250


def test_a_stage_that_did_nothing_yet_or_runs_outside_a_clock_projects_nothing():
    time = FakeTime()
    clock = StageClock(two_phase_plan(), lambda line: None, after=0.0, now=time)
    time.t = 40.0
    assert clock.projection() is None
    advance("search:train")  # no active clock: a no-op
    with stage_clock(None, print) as none:
        assert none is None
        advance("search:train")


def test_plan_lines_say_the_total_and_past_two_hours_what_is_quicker():
    short = [StagePlan("teacher", []), StagePlan("stage1", [])]
    short[0].add("teacher:train", 100, 3.0)
    short[1].add("stage1:train", 100, 6.0)
    lines = plan_lines(short)
    assert lines[0].startswith("[rkd] plan: teacher  ~0:05:00") and "the whole run ~0:15:00" in lines[-1]
    long = [StagePlan("teacher", []), StagePlan("stage1", [])]
    long[0].add("teacher:train", 5000, 1.0)
    long[1].add("stage1:train", 2000, 2.0)
    lines = plan_lines(long, quick_seconds=600)
    assert sum(p.seconds for p in long) > LONG_RUN
    assert "rkd run --quick` (a smoke run) ~0:10:00" in lines[-1] and "longest stage is teacher" in lines[-1]


def test_plan_counts_match_the_loaders_the_stages_build(fashion_bundle):
    """The plan's step counts are the loaders' lengths (drop_last where the stage drops, subsets where it searches)."""
    from rkd.config import load_config
    from rkd.data import make_loader, subset_indices, subset_loader
    from rkd.run.plan import stage_plan

    cfg = load_config(
        ["default"],
        ["teacher.train.batch_size=32", "stage1.batch_size=32", "search.max_train=100", "search.train.batch_size=16"],
    )
    costs = {k: (1.0, 1) for k in ("teacher", "supernet", "supernet_arch", "candidate", "stage1", "stage2")}
    units = lambda plan, name: sum(p.units for p in plan.phases if p.name == name)  # noqa: E731
    train = fashion_bundle.splits["train"]
    teacher = stage_plan("teacher", cfg, fashion_bundle, costs)
    assert units(teacher, "teacher:train") == cfg.teacher.train.epochs * len(make_loader(train, 32, True, 0))
    stage1 = stage_plan("stage1", cfg, fashion_bundle, costs)
    assert units(stage1, "stage1:train") == cfg.stage1.epochs * len(make_loader(train, 32, True, 0, drop_last=True))
    search = stage_plan("search", cfg, fashion_bundle, costs)
    rows = subset_indices(len(train), 100, 0)
    per_epoch = len(subset_loader(train, rows, 16, shuffle=True, seed=0, drop_last=True))
    assert [p.units for p in search.phases if p.name == "search:train"] == [
        cfg.search.warmup_epochs * per_epoch,
        (cfg.search.train.epochs - cfg.search.warmup_epochs) * per_epoch,
    ]
    c_rows = min(len(train), cfg.search.candidate_max_train)
    c_epochs = cfg.search.candidates * cfg.search.candidate_screen_epochs + cfg.search.candidate_survivors * (
        cfg.search.candidate_epochs - cfg.search.candidate_screen_epochs
    )
    c_per_epoch = c_rows // cfg.search.candidate_batch_size if c_rows >= cfg.search.candidate_batch_size else 1
    assert units(search, "candidate:train") == c_epochs * c_per_epoch
    evaluation = stage_plan("eval", cfg, fashion_bundle, costs)
    snrs = math.floor((cfg.eval.snr_max - cfg.eval.snr_min) / cfg.eval.snr_step) + 1
    cells = len(cfg.eval.channels) * snrs * len(cfg.codec.rates)
    assert units(evaluation, "sweep") == cells * len(fashion_bundle.splits["test"].labels)


@pytest.mark.parametrize("stages", [["teacher", "cache", "search", "stage1", "stage2", "eval"]])
def test_costs_are_measured_without_touching_the_run_random_state(fashion_bundle, stages):
    import torch

    from rkd.config import load_config
    from rkd.run.plan import measure_costs, needed_costs

    cfg = load_config(
        None,
        [
            "teacher.embedded_hidden_sizes=[8,16]",
            "teacher.embedded_depths=[1,1]",
            "teacher.embedded_embedding_size=8",
            "teacher.train.batch_size=16",
            "student.init_channels=4",
            "student.layers=3",
            "search.init_channels=4",
            "search.layers=3",
            "search.enabled=true",
            "search.train.batch_size=8",
            "search.candidate_batch_size=8",
            "stage1.batch_size=16",
            "stage2.batch_size=16",
            "codec.d_model=16",
            "codec.heads=2",
            "codec.max_symbols=8",
            "codec.rates=[2,8]",
        ],
    )
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    costs = measure_costs(cfg, fashion_bundle, needed_costs(stages), {"teacher": "fp32", "student": "fp32"})
    assert torch.equal(torch.random.get_rng_state(), before)
    assert set(costs) == {"teacher", "supernet", "supernet_arch", "candidate", "stage1", "stage2", "sweep"}
    assert all(seconds > 0 and batch >= 1 for seconds, batch in costs.values())
    # how the costs compare with each other is the machine's to say (a loaded one reorders them): not tested


def test_a_run_says_its_plan_and_records_each_stage_estimate(fake_fashion_dir, tmp_path, capsys):
    """A real (tiny) run: the plan lines before the first stage, and each stage record's planned seconds."""
    from test_pipeline import TINY

    from rkd.cli import main

    args = ["run", "--runs-dir", str(tmp_path / "runs"), "--name", "plan", f"data.fashion_mnist_dir={fake_fashion_dir}"]
    args += [f"data.cache_dir={tmp_path / 'datasets'}", *TINY]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[rkd] plan: teacher" in out and "[rkd] plan: the whole run ~" in out
    assert out.index("[rkd] plan: the whole run") < out.index("[rkd] teacher: running into")
    for stage in ("teacher", "stage1", "stage2"):
        summary = json.loads((tmp_path / "runs" / "plan" / stage / "stage.json").read_text())["summary"]
        assert summary["planned_seconds"] > 0 and summary["precision"] in ("fp32", "bf16")
        assert summary["throughput"]["images_per_s"] > 0 and summary["throughput"]["achieved_gflops"] > 0


def test_step_flops_count_what_torch_counts_and_allow_autograd_grad():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from rkd.hardware.efficiency import StepFlops, Throughput

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 4)
    )
    x = torch.randn(2, 3, 8, 8)
    with FlopCounterMode(display=False) as reference:
        model(x).sum().backward()
    with StepFlops() as ours:
        model(x).sum().backward()
    assert ours.get_total_flops() == reference.get_total_flops() > 0
    with StepFlops() as ours:  # the architect's autograd.grad: FlopCounterMode's module tracker refuses it
        torch.autograd.grad(model(x).sum(), list(model.parameters()))
    assert ours.get_total_flops() == reference.get_total_flops()
    throughput = Throughput()
    for step in range(4):
        throughput.step(lambda: model(x).sum().backward(), 2, step)
    summary = throughput.summary(processes=2)
    assert summary["timed_steps"] == 3 and summary["gflop_per_image"] == round(reference.get_total_flops() / 2 / 1e9, 4)
    assert summary["flops_per_image"] == reference.get_total_flops() / 2
    assert summary["images_per_s"] > 0 and "achieved_gflops" in summary
    resumed = Throughput()  # a process resumed at step 2 counts no step: the counted one ran before the stop
    for step in range(2, 5):
        resumed.step(lambda: model(x).sum().backward(), 2, step)
    assert resumed.summary()["timed_steps"] == 3 and "gflop_per_image" not in resumed.summary()
