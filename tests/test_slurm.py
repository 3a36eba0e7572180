"""The slurm/ job scripts on a real single-node SLURM cluster (Debian's slurmctld/slurmd + munge).

The session fixture starts the cluster with tests/slurm_ci/setup_slurm.sh (as root: it installs the
packages with apt when missing) and stops it afterwards. The jobs run the real templates on the
tiny config of tests/test_pipeline.py:
- slurm/pipeline.sh: cache_teacher -> distill -> evaluate chained with afterok, all completing;
- slurm/search.sh: a job array, one sweep point per task (the real `rkd search --sweep-index`);
- slurm/distill.sh on 2 processes, sent SIGUSR1 mid stage 2 (what --signal=B:USR1@... delivers
  before a time limit): it checkpoints, requeues itself, resumes from the checkpoint and finishes,
  and an evaluate job waiting on it (afterok) then runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from multiproc import REPO, logged_steps, tail
from test_pipeline import TINY

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]  # collected first: see conftest.py

SETUP = REPO / "tests" / "slurm_ci" / "setup_slurm.sh"
TEARDOWN = REPO / "tests" / "slurm_ci" / "teardown_slurm.sh"
FINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}
SEARCH_TINY = [
    "search.train.epochs=1",
    "search.train.batch_size=32",
    "search.train.max_steps=2",
    "search.init_channels=4",
    "search.layers=2",
    "search.nodes=2",
    "search.warmup_epochs=0",
    "search.sweep_train_epochs=1",
    "search.max_train=64",
    "search.max_val=32",
    "search.primitives=[none,max_pool_3x3,skip_connect,sep_conv_3x3]",
    "search.sweep_weights=[0.0,1.0]",
]


@pytest.fixture(scope="session")
def slurm_cluster():
    if sys.platform != "linux" or not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("SLURM tests need root on Linux (tests/slurm_ci/setup_slurm.sh installs and starts the daemons)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("SLURM tests need Debian's slurm packages and apt-get to install them")
    proc = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        if "apt-get install failed" in proc.stderr:
            pytest.skip(f"apt could not install slurm (no package mirror?): {proc.stderr[-800:]}")
        pytest.fail(f"setup_slurm.sh failed:\n{proc.stderr[-3000:]}")
    yield
    subprocess.run(["bash", str(TEARDOWN)], capture_output=True, text=True, timeout=300)


def _read(path: Path) -> str:
    """A job log: two processes' progress bars can interleave mid-character, so undecodable bytes are replaced."""
    return path.read_text(errors="replace") if path.exists() else ""


def _scontrol(job: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S+)", out))


def _state(job: str) -> str:
    return _scontrol(job).get("JobState", "UNKNOWN")


def _wait(job: str, timeout: float = 1200, log: Path | None = None) -> dict:
    """Poll until the job (every task of an array) has left the queue; return its scontrol record."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
            return _scontrol(job)
        time.sleep(1)
    raise AssertionError(
        f"job {job} still queued after {timeout}s; state {_state(job)}\n"
        + (tail(_read(log)) if log and log.exists() else "")
    )


def _logs(directory: Path) -> str:
    return "\n".join(f"== {p.name}\n{tail(_read(p), 40)}" for p in sorted(directory.glob("*.out")))


@pytest.fixture(scope="module")
def job_env(fake_fashion_dir, tmp_path_factory):
    """Environment of every submission: the tiny run in a tmp runs dir, this checkout, this venv."""
    root = tmp_path_factory.mktemp("slurm")
    overrides = [f"data.fashion_mnist_dir={fake_fashion_dir}", f"data.cache_dir={root / 'datasets'}", *TINY]
    venv = Path(sys.prefix)
    env = dict(
        os.environ,
        RKD_HOME=str(REPO),
        RKD_VENV=str(venv) if (venv / "bin" / "activate").exists() else "",
        RKD_RUNS_DIR=str(root / "runs"),
        RKD_NAME="tiny",
        RKD_OVERRIDES=" ".join(overrides),
        RKD_LOG_DIR=str(root / "logs"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    env.pop("ACCELERATE_USE_CPU", None)
    (root / "logs").mkdir()
    return env


def _sbatch(env: dict, *args) -> str:
    proc = subprocess.run(["sbatch", "--parsable", *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


@pytest.fixture(scope="module")
def pipeline_jobs(slurm_cluster, job_env):
    """slurm/pipeline.sh submitted once; the jobs' ids after all of them have left the queue."""
    proc = subprocess.run(
        ["bash", str(REPO / "slurm" / "pipeline.sh")],
        cwd=REPO,
        env=job_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    jobs = dict(re.findall(r"(\w+)=(\d+)", line))
    assert set(jobs) == {"cache_teacher", "distill", "evaluate"}, line
    records = {name: _wait(job, log=Path(job_env["RKD_LOG_DIR"])) for name, job in jobs.items()}
    return jobs, records


def test_pipeline_chain_completes(pipeline_jobs, job_env):
    jobs, records = pipeline_jobs
    logs = Path(job_env["RKD_LOG_DIR"])
    for name, record in records.items():
        assert record.get("JobState") == "COMPLETED" and record.get("ExitCode") == "0:0", (
            f"{name}: {record}\n{_logs(logs)}"
        )
    assert records["distill"]["Dependency"] == "(null)"  # satisfied and cleared
    # afterok: each job started only after the one before it ended
    assert records["distill"]["StartTime"] >= records["cache_teacher"]["EndTime"]
    assert records["evaluate"]["StartTime"] >= records["distill"]["EndTime"]
    run = Path(job_env["RKD_RUNS_DIR"]) / "tiny"
    for stage in ("teacher", "cache", "stage1", "stage2", "eval"):
        assert json.loads((run / stage / "stage.json").read_text())["hash"], stage
    results = json.loads((run / "eval" / "results.json").read_text())
    assert len([r for r in results["records"] if r["method"] == "rkd-sc"]) == 4 * 4 * 2
    distill_log = _read(logs / f"rkd-distill-{jobs['distill']}.out")
    assert "[rkd] teacher: done for this config, skipping" in distill_log  # the cache job did it


def _search_supports_sweep_index() -> bool:
    from rkd.cli import build_parser

    try:
        return build_parser().parse_args(["search", "--sweep-index", "0"]).sweep_index == 0
    except SystemExit:
        return False


def test_search_array_runs_one_sweep_point_per_task(pipeline_jobs, job_env):
    """Two array tasks, one CPU each (so they run side by side): each writes its sweep point.

    Uses the real `rkd search --sweep-index`; where rkd has no search command yet, the stand-in
    tests/slurm_ci/rkd_probe.py (RKD_MODULE) checks the array mechanics alone.
    """
    real = _search_supports_sweep_index()
    env = dict(job_env, RKD_OVERRIDES=job_env["RKD_OVERRIDES"] + " " + " ".join(SEARCH_TINY))
    if not real:
        env.update(RKD_MODULE="rkd_probe", PYTHONPATH=str(REPO / "tests" / "slurm_ci"))
    logs = Path(job_env["RKD_LOG_DIR"])
    job = _sbatch(
        env, "--array=0-1", "--cpus-per-task=1", f"--output={logs}/%x-%A_%a.out", REPO / "slurm" / "search.sh"
    )
    _wait(job, log=logs)
    run = Path(job_env["RKD_RUNS_DIR"]) / "tiny"
    for task in (0, 1):
        record = _scontrol(f"{job}_{task}")
        log = logs / f"rkd-search-{job}_{task}.out"
        assert record.get("JobState") == "COMPLETED" and record.get("ExitCode") == "0:0", (
            f"task {task}: {tail(_read(log))}"
        )
        text = _read(log)
        assert f"search --sweep-index {task}" in text
        if real:
            point = json.loads((run / "search" / "sweep" / f"point-{task:02d}" / "point.json").read_text())
            assert point["complexity_weight"] == [0.0, 1.0][task] and f"sweep point {task}" in text
        else:
            probe = json.loads((run / "probe" / f"search-{task}-rank0.json").read_text())
            assert probe["slurm_array_task_id"] == str(task) and probe["world_size"] == 1


def test_requeued_job_resumes_from_its_checkpoint(pipeline_jobs, job_env):
    """SIGUSR1 to the batch shell mid stage 2 -> the 2 processes checkpoint -> requeue -> resume -> finish."""
    logs = Path(job_env["RKD_LOG_DIR"])
    steps = 60
    env = dict(
        job_env,
        NPROC_PER_NODE="2",
        RKD_OVERRIDES=job_env["RKD_OVERRIDES"] + f" stage2.max_steps={steps} "
        "stage2.epochs=40 stage2.log_every=1 stage2.checkpoint_every=1000",
    )
    distill = _sbatch(env, f"--output={logs}/requeue-%j.out", REPO / "slurm" / "distill.sh")
    evaluate = _sbatch(
        env,
        f"--output={logs}/requeue-eval-%j.out",
        f"--dependency=afterok:{distill}",
        "--kill-on-invalid-dep=yes",
        REPO / "slurm" / "evaluate.sh",
    )
    log = logs / f"requeue-{distill}.out"
    train_log = Path(job_env["RKD_RUNS_DIR"]) / "tiny" / "stage2" / "log.jsonl"
    deadline = time.time() + 900
    while True:  # wait until stage 2 of THIS job is training (an older stage 2 is moved aside first)
        assert time.time() < deadline, f"stage 2 never reached step 5\n{tail(_read(log)) if log.exists() else ''}"
        assert _state(distill) in ("PENDING", "RUNNING"), tail(_read(log))
        trained = logged_steps(train_log)
        if trained and max(trained) >= 5 and "stage2.max_steps" in (_read(log) if log.exists() else ""):
            break
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR1", "--batch", distill], check=True)
    deadline = time.time() + 600
    while _scontrol(distill).get("Restarts", "0") == "0" or _state(distill) == "RUNNING":
        assert time.time() < deadline, f"job {distill} did not requeue\n{tail(_read(log))}"
        time.sleep(1)
    assert _state(distill) in ("PENDING", "REQUEUED", "RUNNING")
    # SLURM holds a requeued batch job ~2 minutes (BeginTime); release it now, but not within the second
    # of the requeue: in CI a job allocated 0.9 s after its requeue (the same second) was killed as
    # "non-startable batch job: Job credential revoked", while releases in the next second always ran
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={distill}", "StartTime=now"], capture_output=True)
    record = _wait(distill, log=log)
    text = _read(log).replace("\r", "\n")
    assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0" and record["Restarts"] == "1", tail(text)
    saved = re.search(r"\[stage2\] signal .*: checkpoint saved at step (\d+); exiting", text)
    assert saved, tail(text)
    stopped = int(saved.group(1))
    assert 5 <= stopped < steps
    assert "requeueing job" in text and f"[stage2] resumed from step-{stopped:08d} (step {stopped}/{steps})" in text
    assert text.count("job " + distill + " (restart 1)") == 1
    run = Path(job_env["RKD_RUNS_DIR"]) / "tiny"
    summary = json.loads((run / "stage2" / "stage.json").read_text())["summary"]
    assert summary["steps"] == steps and summary["world_size"] == 2
    record = _wait(evaluate, log=logs / f"requeue-eval-{evaluate}.out")
    assert record["JobState"] == "COMPLETED", tail(_read(logs / f"requeue-eval-{evaluate}.out"))
    assert json.loads((run / "eval" / "stage.json").read_text())["hash"]
    assert (run / "eval" / "results.json").exists()
