"""rkd under several processes: precision, signal agreement, the split evaluation sweep, and real
2-process launches of the stages (DDP over gloo, DeepSpeed ZeRO-2, a 2-"node" rendezvous).

What is compared with a 1-process run, and why:
- evaluation records of one stage-2 model: identical (the SNR grid is split over processes, but each
  cell's noise comes from its own seeded CPU generator, so the split cannot change a draw);
- the teacher cache of one teacher: same shards and indices, values equal within fp16 rounding;
- training results: NOT compared. With N processes each step sees N batches (the global batch
  grows), so the trajectory differs by design; the tests check world size, synchronisation, the
  SNR-bucket assignment, and that training finishes and resumes.

Every launch asserts the world size it got (a wrong CPU launch silently runs 1 process, or N
unsynchronised rank-0 processes) and that the ranks exchanged data.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from multiproc import REPO, launch_cmd, launch_env, logged_steps, run_launch, spawn_ranks, tail
from test_pipeline import TINY

# ----------------------------------------------------------------------------- helpers


def _tiny_cfg(fake_fashion_dir, tmp_path, extra=()):
    from rkd.config import load_config

    return load_config(
        None, [*TINY, f"data.fashion_mnist_dir={fake_fashion_dir}", f"data.cache_dir={tmp_path / 'datasets'}", *extra]
    )


class _FakeCache:
    """Teacher targets for any index, fixed by the index (stands in for a built cache)."""

    def __init__(self, classes: int = 10, dim: int = 16) -> None:
        self.classes, self.dim = classes, dim

    def targets(self, split, index):
        g = torch.Generator().manual_seed(int(index.sum()))
        return {
            "teacher_logits": torch.randn(len(index), self.classes, generator=g) * 3,
            "teacher_features": torch.randn(len(index), self.dim, generator=g),
        }


def _stage2_system(cfg, bundle):
    from rkd.models.factory import create_stage1_model, create_stage2_model

    torch.manual_seed(0)
    return create_stage2_model(cfg, create_stage1_model(cfg, bundle, teacher_feature_dim=16))


# ----------------------------------------------------------------------------- fast, in-process


def test_stage2_trains_under_bf16_autocast_on_cpu(fashion_bundle, fake_fashion_dir, tmp_path, fresh_accelerate_state):
    """The CAT codec + student, prepared by an Accelerator with mixed_precision=bf16: finite, sane losses."""
    from rkd.data import make_loader, student_transform
    from rkd.engine import make_accelerator
    from rkd.losses import build_kd_loss
    from rkd.stages.objective import DistillObjective

    cfg = _tiny_cfg(fake_fashion_dir, tmp_path)
    batch = next(iter(make_loader(fashion_bundle.splits["train"], 32, shuffle=True, seed=0)))
    losses = {}
    for precision in ("no", "bf16"):
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(True)
        accelerator = make_accelerator(precision, cpu=True, seed=0)
        assert accelerator.mixed_precision == precision
        system = _stage2_system(cfg, fashion_bundle)
        objective = DistillObjective(
            student_transform(cfg.data, fashion_bundle),
            _FakeCache(),
            build_kd_loss(cfg.stage2_loss),
            channel_cfg=cfg.channel,
            rates=cfg.codec.rates,
            seed=0,
        )
        model = accelerator.prepare(system)
        step = objective(model, batch, True)
        accelerator.backward(step.loss)
        grads = [p.grad for p in system.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert torch.isfinite(step.loss) and step.loss.dtype == torch.float32
        assert all(torch.isfinite(torch.as_tensor(v)) for v in step.terms.values())
        losses[precision] = float(step.loss.detach())
    # same weights, same draws: bf16 autocast changes the loss by rounding only
    assert losses["bf16"] == pytest.approx(losses["no"], rel=0.05), losses


def test_auto_precision_follows_the_launcher(monkeypatch, fresh_accelerate_state):
    from accelerate.state import AcceleratorState

    from rkd.engine import make_accelerator

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch` exports from a config file
    assert make_accelerator("auto", cpu=True).mixed_precision == "bf16"
    AcceleratorState._reset_state(True)
    assert make_accelerator("no", cpu=True).mixed_precision == "no"  # rkd's config overrides the launcher


def test_deepspeed_launch_refuses_what_would_silently_disable_it(monkeypatch, fresh_accelerate_state):
    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra (make slow-deps installs it)")
    from rkd.engine import make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    with pytest.raises(RuntimeError, match="ACCELERATE_USE_CPU.*turns DeepSpeed off"):
        make_accelerator("no", cpu=True)


def test_split_sweep_equals_one_process_sweep(fashion_bundle, fake_fashion_dir, tmp_path):
    """Round-robin SNR shares, swept separately and merged like the eval stage (rkd.stages.evaluate) does, give the same records."""
    from rkd.data import student_transform
    from rkd.evaluation.sweep import channel_sweep, my_share, snr_grid
    from rkd.models.frozen_tokens import batched

    cfg = _tiny_cfg(fake_fashion_dir, tmp_path, ["eval.snr_step=6"])
    system = _stage2_system(cfg, fashion_bundle).eval()
    test = fashion_bundle.splits["test"]
    x = student_transform(cfg.data, fashion_bundle)(test.images[:60])
    labels = test.labels[:60]
    tokens = batched(lambda t: system.student(t)["tokens"], x, 30)
    grid = snr_grid(cfg.eval)
    channels = cfg.eval.channels[1:3]  # the fading ones: their draws matter most
    whole = channel_sweep(system, tokens, labels, channels, grid, [2, 8], 30, cfg.eval.seed, progress=False)
    for world in (2, 4):
        parts = [
            channel_sweep(
                system, tokens, labels, channels, my_share(grid, r, world), [2, 8], 30, cfg.eval.seed, progress=False
            )
            for r in range(world)
        ]
        assert sorted(sum((my_share(grid, r, world) for r in range(world)), [])) == sorted(grid)
        position = {float(s): i for i, s in enumerate(grid)}
        merged = sorted(sum(parts, []), key=lambda r: position[r["snr_db"]])
        assert merged == whole
    assert len({r["accuracy"] for r in whole}) > 1  # the noise matters, so equality above means equal draws


def _agreement_worker(signalled_rank):
    from accelerate import Accelerator

    from rkd.commands import leave
    from rkd.run.collective import vote
    from rkd.run.preemption import SignalFlag

    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2
    flag = SignalFlag()
    if accelerator.process_index == signalled_rank:
        flag.received = signal.SIGUSR1
    outcome = vote(accelerator, torch.tensor(1.0), flag.received is not None)
    assert outcome.stop == (signalled_rank is not None), (accelerator.process_index, outcome.stop)
    assert outcome.non_finite_ranks == [] and outcome.world_size == 2
    accelerator.end_training()  # then leave as rkd.cli does (rkd.commands.leave)
    leave(0, distributed=True)


@pytest.mark.parametrize("signalled_rank", [1, None])
def test_ranks_agree_on_a_stop_signal(signalled_rank):
    """SLURM signals processes one by one: a signal seen by rank 1 only must stop rank 0 at the same step."""
    spawn_ranks(_agreement_worker, args=(signalled_rank,), num_processes=2)


# ----------------------------------------------------------------------------- slow, real launches


def _records(path: Path) -> list:
    return json.loads(path.read_text())["records"]


def _stage_summary(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "stage.json").read_text())["summary"]


@pytest.mark.slow
def test_two_process_distill_and_evaluate(fake_fashion_dir, tmp_path):
    """`accelerate launch` x 2 CPU processes runs every stage; SNR buckets per rank follow the rule; the split
    evaluation gives exactly the records of a 1-process evaluation of the same stage-2 model."""
    args = [
        "--runs-dir",
        tmp_path / "runs",
        "--name",
        "two",
        f"data.fashion_mnist_dir={fake_fashion_dir}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        *TINY,
        "stage2.max_steps=6",
        "stage2.epochs=2",
    ]
    run = tmp_path / "runs" / "two"
    run_launch(["rkd/distill.py", *args], tmp_path / "distill.log", nproc=2)
    for stage in ("teacher", "cache", "stage1", "stage2"):
        summary = _stage_summary(run, stage)
        assert summary["world_size"] == 2 and summary["distributed_type"] == "MULTI_CPU", (stage, summary)

    buckets = json.loads((run / "stage2" / "snr_buckets.json").read_text())
    assert buckets["world_size"] == 2 and [r["rank"] for r in buckets["ranks"]] == [0, 1]  # gathered from both ranks
    n, edges = buckets["n_buckets"], buckets["edges"]
    by_step: dict = {}
    for entry in buckets["ranks"]:
        assert len(entry["steps"]) == _stage_summary(run, "stage2")["steps"]
        for step, chosen, snr_lo, snr_hi in entry["steps"]:
            assert chosen == [(entry["rank"] + step * 2) % n]  # SNRSampler's rule
            lo, hi = edges[chosen[0]]
            assert lo - 1e-4 <= snr_lo <= snr_hi <= hi + 1e-4
            by_step.setdefault(step, []).append(chosen[0])
    assert all(len(set(b)) == 2 for b in by_step.values())  # the two ranks never share a bucket at a step
    assert len({b for bs in by_step.values() for b in bs}) == min(n, 2 * len(by_step))

    run_launch(["rkd/evaluate.py", *args], tmp_path / "evaluate2.log", nproc=2)
    assert _stage_summary(run, "eval")["world_size"] == 2
    two = _records(run / "eval" / "results.json")
    classwise_two = json.loads((run / "eval" / "results.json").read_text())["summary"]["classwise"]
    (run / "eval").rename(run / "eval.two-process")
    run_launch(["rkd/evaluate.py", *args], tmp_path / "evaluate1.log", nproc=1)
    assert _stage_summary(run, "eval")["world_size"] == 1
    one = _records(run / "eval" / "results.json")
    assert two == one
    # the per-class sweeps are dealt over the ranks too (not left to rank 0 while the others wait): same numbers
    assert json.loads((run / "eval" / "results.json").read_text())["summary"]["classwise"] == classwise_two
    swept = [r for r in one if r["method"] == "rkd-sc"]
    assert len(swept) == 4 * 4 * 2 and len({r["accuracy"] for r in swept}) > 1


CACHE_JOB = """
import json, sys
from pathlib import Path
import torch
from rkd.config import DataConfig
from rkd.data import load_data
from rkd.commands import leave
from rkd.engine import make_accelerator
from rkd.teacher.cache_build import build_cache
from rkd.teacher.io import load_trained_teacher

fake, data_cache, teacher_dir, out = sys.argv[1:5]
accelerator = make_accelerator(cpu=True)
rank, world = accelerator.process_index, accelerator.num_processes
total = float(accelerator.reduce(torch.tensor([rank + 1.0]), reduction="sum"))
if accelerator.is_main_process:
    bundle = load_data(DataConfig(fashion_mnist_dir=fake, cache_dir=data_cache, val_fraction=0.2))
accelerator.wait_for_everyone()
bundle = load_data(DataConfig(fashion_mnist_dir=fake, cache_dir=data_cache, val_fraction=0.2))
manifest = build_cache(load_trained_teacher(teacher_dir), bundle, Path(out), batch_size=50, shard_size=64,
                       accelerator=accelerator, progress=False)
Path(out, f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world": world, "sum": total,
                                                    "splits": manifest["splits"]}))
accelerator.end_training()  # and leave as rkd.cli does: the interpreter's shutdown can abort a rank
leave(0, distributed=True)
"""


@pytest.mark.slow
def test_two_process_teacher_cache_matches_one_process_and_resumes(fashion_bundle, fake_fashion_dir, tmp_path):
    from rkd.config import TeacherConfig
    from rkd.teacher.cache import load_cache
    from rkd.teacher.cache_build import build_cache
    from rkd.teacher.io import save_teacher
    from rkd.teacher.model import build_teacher

    torch.manual_seed(3)
    teacher = build_teacher(
        TeacherConfig(embedded_hidden_sizes=[8, 16], embedded_depths=[1, 1], embedded_embedding_size=8),
        fashion_bundle.num_classes,
        fashion_bundle.class_names,
        fashion_bundle.channels,
    )
    save_teacher(teacher, tmp_path / "teacher")
    reference = build_cache(teacher, fashion_bundle, tmp_path / "cache1", batch_size=50, shard_size=64, progress=False)
    script = tmp_path / "cache_job.py"
    script.write_text(CACHE_JOB)
    out = tmp_path / "cache2"
    job = [script, fake_fashion_dir, tmp_path / "datasets", tmp_path / "teacher", out]
    run_launch(job, tmp_path / "cache.log", nproc=2)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world"], r["sum"]) for r in ranks] == [(0, 2, 3.0), (1, 2, 3.0)]
    assert ranks[0]["splits"] == ranks[1]["splits"]  # every process returns the merged manifest
    merged, ref = ranks[0]["splits"], reference["splits"]
    assert {s: [(x["file"], x["start"], x["stop"]) for x in e["shards"]] for s, e in merged.items()} == {
        s: [(x["file"], x["start"], x["stop"]) for x in e["shards"]] for s, e in ref.items()
    }
    two, one = load_cache(out), load_cache(tmp_path / "cache1", expected_teacher=teacher.identity)
    for split in one.logits:
        assert torch.allclose(two.logits[split].float(), one.logits[split].float(), atol=2e-2, rtol=1e-2)
        assert torch.allclose(two.features[split].float(), one.features[split].float(), atol=2e-2, rtol=1e-2)

    # resume: a lost shard is rebuilt by its process, nothing else is rewritten, the manifest is the same
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    (out / "train-00001.safetensors").unlink()
    run_launch(job, tmp_path / "cache-resume.log", nproc=2)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    assert sorted(n for n in after if after[n] != before.get(n)) == ["train-00001.safetensors"]
    assert json.loads((out / "rank0.json").read_text())["splits"] == merged


def _wait_for_step(log: Path, step: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the run ended before step {step}"
        steps = logged_steps(log)
        if steps and max(steps) >= step:
            return
        time.sleep(0.5)
    raise AssertionError(f"no training step {step} in {log} after {timeout}s")


@pytest.mark.slow
def test_deepspeed_zero2_stage2_checkpoints_and_resumes(fake_fashion_dir, tmp_path):
    """ZeRO stage 2 through Accelerate on 2 CPU processes (gloo): SIGUSR1 mid stage 2 -> partitioned
    checkpoint -> relaunch resumes and finishes."""
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install -c constraints.txt deepspeed)")
    args = [
        "rkd/distill.py",
        "--runs-dir",
        tmp_path / "runs",
        "--name",
        "ds",
        f"data.fashion_mnist_dir={fake_fashion_dir}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        *TINY,
        "stage2.max_steps=40",
        "stage2.epochs=20",
        "stage2.log_every=1",
        "stage2.checkpoint_every=1000",
    ]
    run = tmp_path / "runs" / "ds"
    cmd = launch_cmd(args, nproc=2, config="launch_configs/deepspeed_zero2.yaml")
    log = tmp_path / "ds-1.log"
    with open(log, "w") as handle:  # the first compile of DeepSpeed's CPU comm op takes minutes (cached afterwards)
        proc = subprocess.Popen(cmd, cwd=REPO, env=launch_env(cpu=False), stdout=handle, stderr=subprocess.STDOUT)
        try:
            _wait_for_step(run / "stage2" / "log.jsonl", 4, proc, timeout=900)
            proc.send_signal(signal.SIGUSR1)  # the launcher's agent forwards it (PET_SIGNALS_TO_HANDLE)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text(errors="replace")
    assert "checkpoint saved at step" in text, tail(text)
    pointer = json.loads((run / "stage2" / "checkpoints" / "latest.json").read_text())
    stopped_at = pointer["global_step"]
    assert 4 <= stopped_at < 40
    shards = sorted(p.name for p in (run / "stage2" / "checkpoints" / pointer["dir"]).rglob("*optim_states.pt"))
    assert shards == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]

    text = run_launch(args, tmp_path / "ds-2.log", nproc=2, config="launch_configs/deepspeed_zero2.yaml", cpu=False)
    assert f"resumed from {pointer['dir']} (step {stopped_at}/40)" in text
    summary = _stage_summary(run, "stage2")
    assert summary["distributed_type"] == "DEEPSPEED" and summary["world_size"] == 2 and summary["steps"] == 40
    # DeepSpeed clipped at the stage's grad_clip, as DDP does (its JSON's "auto" used to become 1.0)
    assert summary["grad_clip"] == 5.0
    assert (run / "stage2" / "model.safetensors").exists()


@pytest.mark.slow
def test_two_nodes_rendezvous_through_node_launch(tmp_path):
    """slurm/node_launch.sh as two "nodes" on this machine (SLURM_NODEID 0 and 1): one group of 2 ranks."""
    from multiproc import free_port

    port = free_port()
    procs = []
    for node in (0, 1):
        env = launch_env(
            extra={
                "SLURM_NNODES": "2",
                "SLURM_NODEID": str(node),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "NPROC_PER_NODE": "1",
                "GPUS_PER_NODE": "0",
                "RKD_LAUNCH_CONFIG": "launch_configs/cpu_2proc.yaml",
                "RKD_MODULE": "rkd_probe",
            }
        )
        log = open(tmp_path / f"node{node}.log", "w")
        procs.append(
            (
                subprocess.Popen(
                    [
                        "bash",
                        str(REPO / "slurm" / "node_launch.sh"),
                        "distill",
                        "--runs-dir",
                        str(tmp_path),
                        "--name",
                        "nodes",
                    ],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    for proc, log in procs:
        rc = proc.wait(timeout=600)
        log.close()
        assert rc == 0, tail(Path(log.name).read_text(errors="replace"))
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "nodes" / "probe").glob("distill-0-rank*.json"))]
    assert [(r["rank"], r["world_size"], r["reduce_sum"]) for r in records] == [(0, 2, 3.0), (1, 2, 3.0)]
    assert sorted(r["group_rank"] for r in records) == ["0", "1"]  # one process per "node"


@pytest.mark.slow
def test_deepspeed_bf16_json_pairs_with_mixed_precision_bf16_and_owns_the_teachers_precision(
    fake_fashion_dir, tmp_path
):
    """The paper configs' ``mixed_precision: bf16`` under deepspeed_zero2_bf16.yaml runs (it was refused at start), the
    teacher follows the JSON without an autocast of its own, and against the fp32 JSON bf16 is one line naming both."""
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install -c constraints.txt deepspeed)")
    common = [f"data.fashion_mnist_dir={fake_fashion_dir}", f"data.cache_dir={tmp_path / 'datasets'}", *TINY]
    args = ["rkd/distill.py", "--runs-dir", tmp_path / "runs", "--name", "ds", *common, "mixed_precision=bf16"]
    text = run_launch(
        args, tmp_path / "ds-bf16.log", nproc=2, config="launch_configs/deepspeed_zero2_bf16.yaml", cpu=False
    )
    assert "torch.autocast is already enabled outside DeepSpeed" not in text
    assert "torch.autocast is enabled outside DeepSpeed" not in text
    for stage in ("teacher", "stage1", "stage2"):
        summary = _stage_summary(tmp_path / "runs" / "ds", stage)
        assert summary["distributed_type"] == "DEEPSPEED" and summary["precision"] == "bf16", (stage, summary)
        assert "deepspeed_zero2_bf16.json" in summary["precision_reason"]
    refused = subprocess.run(
        launch_cmd([*args[:4], "refused", *args[5:]], nproc=2, config="launch_configs/deepspeed_zero2.yaml"),
        cwd=REPO,
        env=launch_env(cpu=False),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert refused.returncode != 0
    lines = [line for line in refused.stderr.splitlines() if line.startswith("rkd: configuration error")]
    assert lines and "'mixed_precision' = 'bf16'" in lines[0] and "deepspeed_zero2_bf16.yaml" in lines[0], (
        refused.stderr[-3000:]
    )
    assert not (tmp_path / "runs" / "refused" / "teacher").exists()
