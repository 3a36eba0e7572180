"""Two jobs, one run directory: the second refuses naming the holder; a dead holder is taken over (and said so);
sweep array tasks share the lock and build the teacher and cache once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from multiproc import REPO, launch_env
from test_pipeline import TINY

from rkd.run.lock import LOCK_DIR, RunLock, RunLockError


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_holder(run_dir, **fields) -> None:
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": None,
        "array_job_id": None,
        "array_task_id": None,
        "command": "run",
        "group": None,
        "started": time.time(),
        "heartbeat": time.time(),
        "token": "other",
        **fields,
    }
    path = run_dir / LOCK_DIR / "run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"lock": "run", "holders": [holder]}))


def test_a_second_job_refuses_in_one_line_naming_the_holder(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    first = RunLock(tmp_path, "run").acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    with pytest.raises(RunLockError) as info:
        RunLock(tmp_path, "distill").acquire()
    message = str(info.value)
    assert "\n" not in message
    assert f"in use by host {socket.gethostname()} pid {os.getpid()} (SLURM job 41)" in message
    assert "rkd run" in message and "use another --name" in message
    first.release()
    RunLock(tmp_path, "distill").acquire().release()  # free again


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"pid": None}, "its process is no longer running"),
        ({"host": "node-17", "heartbeat": time.time() - 3600}, "no heartbeat for"),
        ({"host": "node-17", "pid": 1, "slurm_job_id": "77"}, "an earlier run of this SLURM job (requeued)"),
    ],
)
def test_a_gone_holder_is_taken_over_and_said_so(tmp_path, monkeypatch, fields, reason):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    write_holder(tmp_path, **{**fields, "pid": fields["pid"] if fields.get("pid") is not None else dead_pid()})
    lines = []
    lock = RunLock(tmp_path, "run", log=lines.append).acquire()
    assert len(lines) == 1 and "taking over the run lock of" in lines[0] and reason in lines[0], lines
    holders = json.loads((tmp_path / LOCK_DIR / "run.json").read_text())["holders"]
    assert [h["pid"] for h in holders] == [os.getpid()]
    lock.release()
    assert not (tmp_path / LOCK_DIR / "run.json").exists()


def test_a_live_holder_on_another_node_is_respected(tmp_path):
    write_holder(tmp_path, host="node-17", pid=1, heartbeat=time.time() - 10)
    with pytest.raises(RunLockError, match="host node-17 pid 1"):
        RunLock(tmp_path, "run").acquire()


def test_heartbeat_keeps_the_lease_fresh(tmp_path):
    lock = RunLock(tmp_path, "run", heartbeat_s=0.05).acquire()
    first = json.loads((tmp_path / LOCK_DIR / "run.json").read_text())["holders"][0]["heartbeat"]
    time.sleep(0.3)
    later = json.loads((tmp_path / LOCK_DIR / "run.json").read_text())["holders"][0]["heartbeat"]
    lock.release()
    assert later > first


def test_sweep_points_share_the_lock_and_exclude_everyone_else(tmp_path):
    a = RunLock(tmp_path, "search --sweep-index", group="sweep").acquire()
    b = RunLock(tmp_path, "search --sweep-index", group="sweep").acquire()  # an array sibling: shares
    with pytest.raises(RunLockError, match=r"rkd search --sweep-index"):
        RunLock(tmp_path, "run").acquire()
    a.release()
    b.release()
    whole = RunLock(tmp_path, "run").acquire()
    with pytest.raises(RunLockError, match="rkd run"):
        RunLock(tmp_path, "search --sweep-index", group="sweep").acquire()
    whole.release()


def _rkd(args, log, extra_env=None):
    env = launch_env(cpu=True, extra=extra_env)
    env.pop("ACCELERATE_USE_CPU")
    return subprocess.Popen(
        [sys.executable, "-m", "rkd.cli", *map(str, args)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )


@pytest.mark.slow
def test_two_rkd_processes_on_one_run_directory(tmp_path, fake_fashion_dir):
    """A real second `rkd run` refuses while the first runs; after the first is killed (SIGKILL: no clean-up),
    the next run takes its lock over and says so."""
    args = ["run", "--runs-dir", tmp_path / "runs", "--name", "same", f"data.fashion_mnist_dir={fake_fashion_dir}"]
    args += [f"data.cache_dir={tmp_path / 'datasets'}", *TINY, "teacher.train.epochs=50"]
    lock_file = tmp_path / "runs" / "same" / LOCK_DIR / "run.json"
    with open(tmp_path / "first.log", "w") as log:
        first = _rkd(args, log)
        try:
            deadline = time.time() + 300
            while not lock_file.exists() and time.time() < deadline:
                assert first.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
                time.sleep(0.5)
            second = subprocess.run(
                [sys.executable, "-m", "rkd.cli", *map(str, args)],
                cwd=REPO,
                env=launch_env(cpu=True),
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert second.returncode == 2, second.stderr[-2000:]
            assert second.stderr.strip().splitlines()[-1].startswith("rkd: error: run directory ")
            assert f"pid {first.pid}" in second.stderr and "rkd run" in second.stderr
        finally:
            first.kill()
            first.wait()
    third = subprocess.run(
        [sys.executable, "-m", "rkd.cli", *map(str, args[:-1]), "teacher.train.max_steps=1"],
        cwd=REPO,
        env=launch_env(cpu=True),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"taking over the run lock of host {socket.gethostname()} pid {first.pid}" in third.stdout
    assert "its process is no longer running" in third.stdout
    assert not lock_file.exists()  # released at the end


SWEEP = [
    "search.sweep_weights=[0,1]",
    "search.train.epochs=1",
    "search.train.batch_size=32",
    "search.train.max_steps=2",
    "search.warmup_epochs=0",
    "search.init_channels=4",
    "search.layers=2",
    "search.sweep_train_epochs=1",
    "search.max_train=64",
    "search.max_val=32",
]


@pytest.mark.slow
def test_sweep_array_tasks_started_together_build_the_teacher_once(tmp_path, fake_fashion_dir):
    """`sbatch slurm/search.sh` before the cache exists: array tasks 0 and 1 start at once; before the upstream
    lock both trained the teacher and wrote the cache into the same directory."""
    args = ["search", "--runs-dir", tmp_path / "runs", "--name", "sw", f"data.fashion_mnist_dir={fake_fashion_dir}"]
    args += [f"data.cache_dir={tmp_path / 'datasets'}", *TINY, *SWEEP]
    procs, logs = [], []
    for task in (0, 1):
        logs.append(open(tmp_path / f"task{task}.log", "w"))
        env = {"SLURM_ARRAY_JOB_ID": "500", "SLURM_ARRAY_TASK_ID": str(task), "SLURM_JOB_ID": str(501 + task)}
        procs.append(_rkd([*args[:1], "--sweep-index", task, *args[1:]], logs[-1], env))
    for proc, log in zip(procs, logs):
        assert proc.wait(timeout=900) == 0, (tmp_path / f"{log.name}").read_text()[-3000:]
        log.close()
    texts = [(tmp_path / f"task{t}.log").read_text() for t in (0, 1)]
    trained = [t for t in texts if "[rkd] teacher: running into" in t]
    assert len(trained) == 1, texts  # one task built the teacher; the other waited for it
    waited = texts[1 - texts.index(trained[0])]
    assert "waiting for host" in waited and "upstream lock" in waited and "teacher: done for this config" in waited
    run = tmp_path / "runs" / "sw"
    assert sorted(p.name for p in (run / "search" / "sweep").iterdir() if p.is_dir()) == ["point-00", "point-01"]
