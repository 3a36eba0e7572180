"""2-rank CPU stand-ins for every multi-process path, each under `accelerate launch` with 2 gloo processes that
assert world size 2 and distinct ranks: the whole pipeline with every baseline and ablation, export, a NaN on one
rank, a SIGTERM on one rank, the frozen student's tokens computed in blocks, and the teacher loaded by one
process per node first. Equal results: every trained stage ends with the same weights on both ranks (fit's
replica check), the 2-rank tokens and export equal the 1-rank ones, both ranks stop at the same step.
(tests/test_distributed.py: the 2-rank evaluation equals the 1-rank one; the cache, DeepSpeed, two "nodes".)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from multiproc import REPO, launch_cmd, launch_env, logged_steps, run_launch, tail
from test_baselines import SMALL_BASELINES
from test_pipeline import TINY

pytestmark = pytest.mark.slow

ALL_METHODS = "baselines.methods=[deep-jscc,adjscc,deep-jscc-budget,conference,conference-awgn,label-digital,feature-digital,digital]"
ALL_ABLATIONS = "baselines.ablations=[no-kd,no-robust-kd,robust-kd,no-channel-training,no-state,fixed-length]"
TINY_SEARCH = [
    "search.enabled=true",
    "search.init_channels=4",
    "search.layers=2",
    "search.nodes=2",
    "search.train.epochs=1",
    "search.train.batch_size=16",
    "search.train.max_steps=2",
    "search.warmup_epochs=0",
    "search.max_train=64",
    "search.max_val=32",
]


def run_args(tmp_path: Path, fake: Path, name: str, *extra) -> list:
    return [
        "--runs-dir",
        tmp_path / "runs",
        "--name",
        name,
        f"data.fashion_mnist_dir={fake}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        *TINY,
        *extra,
    ]


def stage_record(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "stage.json").read_text())["summary"]


def test_pipeline_every_baseline_and_ablation_and_export_on_two_ranks(tmp_path, fake_fashion_dir):
    """`rkd baselines` (the pipeline with the search, then every method and ablation) and `rkd export` under 2
    ranks. Before: DDP failed at the conference student's and the no-kd ablation's step 2, and a 2-rank export
    hung in a barrier only rank 0 reached."""
    args = run_args(tmp_path, fake_fashion_dir, "b", *TINY_SEARCH, *SMALL_BASELINES, ALL_METHODS, ALL_ABLATIONS)
    log = run_launch(["-m", "rkd.cli", "baselines", *args], tmp_path / "baselines.log", nproc=2, timeout=1500)
    run = tmp_path / "runs" / "b"
    for stage in ("teacher", "cache", "search", "stage1", "stage2", "eval"):
        summary = stage_record(run, stage)
        assert summary["world_size"] == 2 and summary["distributed_type"] == "MULTI_CPU", (stage, summary)
    for stage in ("stage1", "stage2"):
        assert stage_record(run, stage)["replicas_identical"] is True
    variants = [run / "ablations" / "no-kd", *(run / "ablations").glob("conference-student*")]
    assert len(variants) == 2, sorted((run / "ablations").iterdir())
    for variant in variants:  # the heads no loss reads: frozen, said once
        assert stage_record(variant, "stage1")["replicas_identical"] is True
    assert "no loss term reads ['projected']" in log and "no loss term reads ['logits']" in log
    methods = json.loads((run / "compare" / "results.json").read_text())["methods"]
    assert len(methods) == 1 + 8 + 6, sorted(methods)
    rkd_parts = methods["rkd-sc"]["budget"]["parts"]  # training FLOPs under 2 ranks: both ranks' images x per image
    assert all(rkd_parts[stage]["flops"] > 0 for stage in ("teacher", "stage1", "stage2")), rkd_parts
    # this search screens candidates for one step each, before the step the engine counts: not counted, not guessed
    assert rkd_parts["search"]["flops"] is None and methods["rkd-sc"]["budget"]["flops"] is None
    per_image = stage_record(run, "stage1")["throughput"]["flops_per_image"]
    assert rkd_parts["stage1"]["flops"] == round(rkd_parts["stage1"]["images_seen"] * per_image)
    assert methods["deep-jscc"]["budget"]["flops"] > 0 and methods["conference-rkd"]["budget"]["flops"] > 0
    assert stage_record(run, "eval")["evaluated_on"]["processes"] == 2

    # TorchScript only: the ONNX exporter is a single-process step on the main rank (tests/test_export.py)
    run_launch(["-m", "rkd.cli", "export", "--no-onnx", *args], tmp_path / "export2.log", nproc=2, timeout=600)
    two = json.loads((run / "export" / "export.json").read_text())
    (run / "export").rename(run / "export.two")
    run_launch(["-m", "rkd.cli", "export", "--no-onnx", *args], tmp_path / "export1.log", nproc=1, timeout=600)
    one = json.loads((run / "export" / "export.json").read_text())
    assert two["check"] == one["check"] and two["transmitter"] == one["transmitter"]


RANK_JOB = """
import json, signal, sys, time
from pathlib import Path
import torch
from accelerate.utils import gather_object
from rkd.config import DataConfig, load_config
from rkd.data import load_data, student_transform
from rkd.commands import leave
from rkd.engine import NonFiniteLossError, Step, fit, make_accelerator
from rkd.models.factory import create_stage1_model
from rkd.models.frozen_tokens import shared_tokens, student_tokens
import rkd.teacher.training as training

fake, out, overrides = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
accelerator = make_accelerator(cpu=True)
rank, world = accelerator.process_index, accelerator.num_processes
ranks = sorted(gather_object([rank]))
record = {"rank": rank, "world": world, "ranks": ranks}
cfg = load_config(None, [*overrides, f"data.fashion_mnist_dir={fake}", f"data.cache_dir={out / 'datasets'}"])
with accelerator.main_process_first():
    bundle = load_data(cfg.data)

# the frozen student's tokens: one block per rank, gathered; equal to one process computing them all
torch.manual_seed(0)
student = create_stage1_model(cfg, bundle, 12).student
transform = student_transform(cfg.data, bundle)
images = bundle.splits["train"].images
rows = []
student.register_forward_hook(lambda module, inputs, output: rows.append(inputs[0].shape[0]))
tokens = shared_tokens(accelerator, student, transform, images, 40)
record["token_rows_computed"] = sum(rows)
record["tokens_equal"] = bool(torch.allclose(tokens, student_tokens(student, transform, images, 40), atol=1e-5))

# the teacher: built by one process per node first (a hub download fills the node's cache once)
real = training.build_teacher
def recording_build(*args, **kwargs):
    started = time.time()
    time.sleep(0.5)
    teacher = real(*args, **kwargs)
    record["build"] = [started, time.time()]
    return teacher
training.build_teacher = recording_build
training.train_teacher(load_config(None, [*overrides, "teacher.train.max_steps=1"]), bundle, out / f"teacher", accelerator)

# a NaN on rank 1 only: both ranks stop at that step with the same error
class NanOnRankOne:
    step = 0
    def set_step(self, step):
        self.step = step
    def __call__(self, model, batch, train):
        logits = model(batch["x"])
        loss = torch.nn.functional.cross_entropy(logits, batch["label"])
        if train and rank == 1 and self.step == 2:
            loss = loss * float("nan")
        return Step(loss=loss, logits=logits.detach(), labels=batch["label"])
x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
data = [{"x": x[i], "label": (x[i, 0] > 0).long()} for i in range(64)]
loader = torch.utils.data.DataLoader(data, batch_size=4)
try:
    fit(accelerator, torch.nn.Linear(4, 2), NanOnRankOne(), loader, loader, cfg.stage1, out / "nan")
    record["nan"] = "finished"
except NonFiniteLossError as exc:
    record["nan"] = str(exc)
Path(out, f"rank{rank}.json").write_text(json.dumps(record))
accelerator.end_training()  # and leave as rkd.cli does: the interpreter's shutdown can abort a rank
leave(0, distributed=True)
"""


def test_tokens_teacher_load_and_a_nan_on_two_ranks(tmp_path, fake_fashion_dir):
    """Before: every rank computed every token on the CPU; every rank built the teacher at once; rank 0 went on
    into DDP's all-reduce after a NaN on rank 1 only."""
    script = tmp_path / "rank_job.py"
    script.write_text(RANK_JOB)
    overrides = json.dumps(["data.val_fraction=0.2", *TINY[1:]])
    run_launch([script, fake_fashion_dir, tmp_path, overrides], tmp_path / "ranks.log", nproc=2, timeout=900)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world"], r["ranks"]) for r in ranks] == [(0, 2, [0, 1]), (1, 2, [0, 1])]
    assert [r["token_rows_computed"] for r in ranks] == [120, 120]  # 240 train rows: one block each
    assert all(r["tokens_equal"] for r in ranks)
    first, second = sorted(ranks, key=lambda r: r["build"][0])
    assert first["rank"] == 0 and second["build"][0] >= first["build"][1]
    for r in ranks:
        assert "non-finite loss on rank(s) [1] of 2 at step 2" in r["nan"], r["nan"]


def worker_pids(launcher: int) -> dict:
    """``{rank: pid}`` of the training processes under an `accelerate launch` process."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (proc / "environ").read_bytes().split(b"\0") if parent == launcher else []
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
        env = dict(item.decode(errors="replace").split("=", 1) for item in environ if b"=" in item)
        if "RANK" in env:
            found[int(env["RANK"])] = int(proc.name)
    return found


def test_sigterm_on_one_rank_checkpoints_both_and_the_relaunch_resumes(tmp_path, fake_fashion_dir):
    """SLURM signals the processes of a job one at a time: SIGTERM to rank 1 only stops both at one step."""
    args = ["rkd/distill.py", *run_args(tmp_path, fake_fashion_dir, "t")]
    args += ["stage2.max_steps=60", "stage2.epochs=30", "stage2.log_every=1", "stage2.checkpoint_every=1000"]
    run = tmp_path / "runs" / "t"
    log = tmp_path / "t1.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(launch_cmd(args), cwd=REPO, env=launch_env(), stdout=handle, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 900
            while not (
                logged_steps(run / "stage2" / "log.jsonl") and max(logged_steps(run / "stage2" / "log.jsonl")) >= 3
            ):
                assert proc.poll() is None and time.time() < deadline, tail(log.read_text(errors="replace"))
                time.sleep(0.5)
            pids = worker_pids(proc.pid)
            assert sorted(pids) == [0, 1], pids
            os.kill(pids[1], signal.SIGTERM)
            assert proc.wait(timeout=300) == 0, tail(log.read_text(errors="replace"))
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text(errors="replace")
    assert text.count("checkpoint saved at step") == 1  # printed by the main process, for both
    stopped = json.loads((run / "stage2" / "checkpoints" / "latest.json").read_text())["global_step"]
    assert 3 <= stopped < 60
    resumed = run_launch(args, tmp_path / "t2.log", nproc=2, timeout=900)
    assert f"(step {stopped}/60)" in resumed
    summary = stage_record(run, "stage2")
    assert summary["steps"] == 60 and summary["world_size"] == 2 and summary["replicas_identical"] is True
