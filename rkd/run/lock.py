"""One run directory, one job: a lease on ``runs/<name>`` naming its holder, with a heartbeat.

Two ``rkd run --name X`` (two terminals, a resubmitted ``sbatch``) would otherwise write the same
stage directories at once. The holder is recorded in ``runs/<name>/.rkd-lock/<lock>.json`` (host,
pid, SLURM job and array task, command, heartbeat); a second job refuses in one line naming it.
A holder that is gone is taken over, with a line saying so: its process no longer runs on this
host, or its heartbeat stopped (another node: ``stale_after`` seconds), or it is an earlier run of
this very SLURM job (a requeued job keeps its job id).

A lock is exclusive, or shared within a group: the sweep's array tasks (``rkd search
--sweep-index i``) write distinct points and hold the run's lock together (group ``sweep``); the
teacher and cache they need first are built under a second, exclusive ``upstream`` lock, which the
other tasks wait for (and then find the stages done) instead of building them at once.

Changes to a lock file happen under an ``fcntl.flock`` on ``.rkd-lock/guard`` (held for
milliseconds); on a network file system this needs working file locks across nodes (NFS with
lockd, Lustre mounted with ``-o flock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from accelerate.utils import broadcast_object_list

from rkd.run.artifacts import atomic_write_json

LOCK_DIR = ".rkd-lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 180.0  # a holder on another host whose heartbeat is older than this is gone
WAIT_POLL_S = 5.0


class RunLockError(RuntimeError):
    """The run directory is held by another live job."""


def this_process(command: str, group: str | None) -> dict:
    """The holder record of this process (``token`` tells two records of one process apart)."""
    env = os.environ
    now = time.time()
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": env.get("SLURM_ARRAY_TASK_ID"),
        "command": command,
        "group": group,
        "started": now,
        "heartbeat": now,
        "token": uuid.uuid4().hex,
    }


def describe(holder: dict) -> str:
    """``host h pid p (SLURM job j, array task t)``."""
    slurm = [f"SLURM job {holder['slurm_job_id']}"] if holder.get("slurm_job_id") else []
    if holder.get("array_task_id") is not None:
        slurm.append(f"array task {holder['array_task_id']}")
    return f"host {holder['host']} pid {holder['pid']}" + (f" ({', '.join(slurm)})" if slurm else "")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def gone_reason(holder: dict, me: dict, stale_after: float, now: float) -> str | None:
    """Why ``holder`` no longer holds the lock, or None while it is alive."""
    if holder.get("slurm_job_id") and holder["slurm_job_id"] == me["slurm_job_id"] and holder["pid"] != me["pid"]:
        return "an earlier run of this SLURM job (requeued)"
    if holder["host"] == me["host"] and not _pid_alive(int(holder["pid"])):
        return "its process is no longer running"
    age = now - float(holder.get("heartbeat", 0))
    if holder["host"] != me["host"] and age > stale_after:
        return f"no heartbeat for {age:.0f} s"
    return None


class RunLock:
    """The lease ``name`` on ``run_dir`` for ``command``; ``group`` set: shared with holders of the same group."""

    def __init__(
        self,
        run_dir: Path,
        command: str,
        name: str = "run",
        group: str | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
        log: Callable[[str], None] = print,
    ) -> None:
        self.dir = Path(run_dir) / LOCK_DIR
        self.path = self.dir / f"{name}.json"
        self.run_dir, self.name, self.group = Path(run_dir), name, group
        self.heartbeat_s, self.stale_after_s, self.log = heartbeat_s, stale_after_s, log
        self.me = this_process(command, group)
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "guard", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _holders(self) -> list:
        try:
            return list(json.loads(self.path.read_text()).get("holders", []))
        except (OSError, ValueError):
            return []

    def _write(self, holders: list) -> None:
        if holders:
            atomic_write_json(self.path, {"lock": self.name, "run_dir": str(self.run_dir), "holders": holders})
        else:
            self.path.unlink(missing_ok=True)

    def _live_holders(self) -> list:
        """The holders still alive; the gone ones are dropped, each with a line saying so."""
        live, now = [], time.time()
        for holder in self._holders():
            reason = gone_reason(holder, self.me, self.stale_after_s, now)
            if reason is None:
                live.append(holder)
            else:
                self.log(f"[rkd] {self.run_dir}: taking over the {self.name} lock of {describe(holder)}: {reason}")
        return live

    def try_acquire(self) -> dict | None:
        """Take the lock and return None, or return the live holder that prevents it."""
        with self._guard():
            live = self._live_holders()
            blocking = [h for h in live if self.group is None or h.get("group") != self.group]
            if blocking:
                self._write(live)
                return blocking[0]
            self._write([*live, self.me])
        self._start_heartbeat()
        return None

    def refusal(self, holder: dict) -> str:
        age = time.time() - float(holder.get("heartbeat", 0))
        return (
            f"run directory {self.run_dir} is in use by {describe(holder)} (rkd {holder.get('command')}, "
            f"heartbeat {age:.0f} s ago): wait for it to finish or use another --name; if that job is gone, "
            f"delete {self.path}"
        )

    def acquire(self, wait_while: Callable[[dict], bool] = lambda holder: False) -> RunLock:
        """Take the lock, or raise ``RunLockError``; wait (polling) as long as ``wait_while(holder)`` is true."""
        told = False
        while (holder := self.try_acquire()) is not None:
            if not wait_while(holder):
                raise RunLockError(self.refusal(holder))
            if not told:
                self.log(f"[rkd] {self.run_dir}: waiting for {describe(holder)} ({self.name} lock)")
                told = True
            time.sleep(WAIT_POLL_S)
        return self

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"rkd-lock-{self.name}", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._guard():
                holders = self._holders()
                for holder in holders:
                    if holder["token"] == self.me["token"]:
                        holder["heartbeat"] = time.time()
                if any(h["token"] == self.me["token"] for h in holders):
                    self._write(holders)

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        with self._guard():
            self._write([h for h in self._holders() if h["token"] != self.me["token"]])

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _main_attempt(lock: RunLock, wait_while: Callable[[dict], bool], told: bool) -> list:
    """The main process's try: ``["held"]``, ``["wait", line]`` or ``["refused", line]``."""
    holder = lock.try_acquire()
    if holder is None:
        return ["held", ""]
    if wait_while(holder):
        if not told:
            lock.log(f"[rkd] {lock.run_dir}: waiting for {describe(holder)} to finish ({lock.name} lock)")
        return ["wait", ""]
    return ["refused", lock.refusal(holder)]


@contextlib.contextmanager
def held(accelerator, lock: RunLock, wait_while: Callable[[dict], bool] = lambda holder: False) -> Iterator[None]:
    """``lock`` held by the main process around the block; every rank raises ``RunLockError`` on a refusal.

    While ``wait_while(holder)`` is true the main process polls; every poll is one broadcast, so the
    other ranks never sit in one collective for longer than ``WAIT_POLL_S``.
    """
    told = False
    while True:
        state = _main_attempt(lock, wait_while, told) if accelerator.is_main_process else ["", ""]
        if accelerator.num_processes > 1:
            broadcast_object_list(state, from_process=0)
        if state[0] == "refused":
            raise RunLockError(state[1])
        if state[0] == "held":
            break
        told = True
        time.sleep(WAIT_POLL_S)
    try:
        yield
    finally:
        if accelerator.is_main_process:
            lock.release()
