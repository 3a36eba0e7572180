"""Helpers for tests that start real processes: `accelerate launch` with the CPU recipe, free ports.

On a CPU machine (docs/cluster.md): a MULTI_CPU launch or
`--cpu` runs ONE process, so every CPU launch here uses launch_configs/cpu_2proc.yaml (MULTI_GPU)
with ACCELERATE_USE_CPU=1, and every test that launches asserts the world size it got.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
PROBE_DIR = REPO / "tests" / "slurm_ci"  # holds rkd_probe.py (RKD_MODULE stand-in)


def free_port() -> int:
    """A TCP port nobody listens on now (parallel launches must not share a rendezvous port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(cpu: bool = True, threads: int = 1, extra: dict | None = None) -> dict:
    """Environment for a launched run: offline hubs, the repo importable, fixed thread count.

    ``cpu=False`` is for DeepSpeed, which ACCELERATE_USE_CPU switches off.
    """
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join([str(REPO), str(PROBE_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "PET_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        }
    )  # accelerate, rkd
    env.pop("ACCELERATE_USE_CPU", None)
    if cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    env.update(extra or {})
    return env


def launch_cmd(
    target: list,
    nproc: int = 2,
    config: str = "launch_configs/cpu_2proc.yaml",
    port: int | None = None,
    extra_flags: list | None = None,
) -> list:
    """`accelerate launch --config_file CONFIG --num_processes N --main_process_port P TARGET...`."""
    return [
        ACCELERATE,
        "launch",
        "--config_file",
        str(REPO / config),
        "--num_processes",
        str(nproc),
        "--main_process_port",
        str(port or free_port()),
        *(extra_flags or []),
        *map(str, target),
    ]


def run_launch(
    target: list,
    log: Path,
    nproc: int = 2,
    config: str = "launch_configs/cpu_2proc.yaml",
    cpu: bool = True,
    timeout: int = 900,
    extra_flags: list | None = None,
    extra_env: dict | None = None,
) -> str:
    """Run a launch to completion, output to ``log``; fail with the log's tail when it exits non-zero."""
    cmd = launch_cmd(target, nproc, config, extra_flags=extra_flags)
    with open(log, "w") as handle:
        proc = subprocess.run(
            cmd,
            cwd=REPO,
            env=launch_env(cpu, extra=extra_env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    text = log.read_text(errors="replace")  # interleaved progress bars can split a character
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{tail(text)}"
    return text


def tail(text: str, lines: int = 60) -> str:
    """The end of a log, with tqdm's carriage-return redraws turned into lines."""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def logged_steps(log: Path) -> list:
    """Training steps in a JSON-lines log that is being written (a half-written last line is skipped)."""
    import json

    steps = []
    text = log.read_text(errors="replace") if log.exists() else ""
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "loss" in record:
            steps.append(record["step"])
    return steps


COLLECTIVE_TIMEOUT_S = 120  # a rank left waiting in a spawned test fails it in minutes, not gloo's 30


class SpawnedRank:
    """What each spawned rank runs: a gloo group over a file store, with a short timeout, then the function.

    accelerate's debug launcher makes the same group with the backend's default timeout, and an Accelerator
    made afterwards cannot change it (its ``InitProcessGroupKwargs`` apply only to a group it creates).
    """

    def __init__(self, function) -> None:
        self.function = function

    def __call__(self, index: int, *args) -> None:
        from datetime import timedelta

        import torch.distributed as dist

        world_size = int(os.environ["WORLD_SIZE"])
        store = dist.FileStore(os.environ["ACCELERATE_DEBUG_RDV_FILE"], world_size)
        timeout = timedelta(seconds=COLLECTIVE_TIMEOUT_S)
        dist.init_process_group("gloo", rank=index, store=store, world_size=world_size, timeout=timeout)
        os.environ["FORK_LAUNCHED"] = "1"
        self.function(*args)


def spawn_ranks(function, args: tuple = (), num_processes: int = 2) -> None:
    """accelerate's ``debug_launcher``, but the ranks are spawned, not forked, with a short collective timeout.

    A child forked from pytest inherits GNU OpenMP's thread pool from whatever the parent ran before, and
    its first parallel region can wait forever on threads that do not exist in it (it did, in a
    cross-entropy, depending on which tests ran first). A spawned rank starts a fresh interpreter; the
    function must be importable (a module-level function of a test module).
    """
    import tempfile

    from accelerate.utils import patch_environment
    from torch.multiprocessing import start_processes

    with (
        tempfile.TemporaryDirectory() as rendezvous,
        patch_environment(
            world_size=num_processes,
            master_addr="127.0.0.1",
            master_port=str(free_port()),
            accelerate_mixed_precision="no",
            accelerate_debug_rdv_file=os.path.join(rendezvous, "store"),  # the ranks remove it when done
            accelerate_use_cpu="yes",
            gloo_socket_ifname="lo",
            omp_num_threads="1",
        ),
    ):
        start_processes(SpawnedRank(function), args=args, nprocs=num_processes, start_method="spawn")
