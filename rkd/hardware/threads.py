"""Intra-op threads per process, set on purpose: the cores this process may use, shared by the node's processes.

torch starts with one thread per core it sees, in every process: N processes on a node then run N x
cores threads that fight over the cores (and ``torchrun`` falls back to 1 thread each, leaving cores
idle). rkd gives each process ``cores // processes on this node``, where cores are the CPUs this process
may run on (its affinity mask, which SLURM's ``--cpus-per-task`` and ``taskset`` set). ``OMP_NUM_THREADS``
or ``RKD_THREADS`` set by the user win.
"""

from __future__ import annotations

import os

import torch


def cores_available() -> int:
    """CPUs this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def local_processes() -> int:
    """Processes of this run on this node (the launcher's ``LOCAL_WORLD_SIZE``; 1 without a launcher)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def planned_threads() -> tuple[int, str]:
    """``(threads, why)`` for this process."""
    for variable in ("RKD_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").strip()
        if value.isdigit() and int(value) >= 1:
            return int(value), f"{variable}={value}"
    cores, processes = cores_available(), local_processes()
    threads = max(1, cores // processes)
    return threads, f"{cores} cores / {processes} process{'es' if processes > 1 else ''} on this node"


def configure_threads() -> str:
    """Set torch's intra-op threads for this process; returns the reason (for the run's log)."""
    threads, why = planned_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return why


def threads_line() -> str:
    """What the log says about threads, e.g. "2 threads per process (2 cores / 1 process on this node)"."""
    threads = torch.get_num_threads()
    planned, why = planned_threads()
    return f"{threads} thread{'s' if threads != 1 else ''} per process ({why if threads == planned else 'set by the caller'})"
