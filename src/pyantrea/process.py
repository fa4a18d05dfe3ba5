"""Stopping a process by pid and waiting until it is gone (Linux /proc). No names: a process is
its pid and its start time (field 22 of /proc/PID/stat, clock ticks after boot), which a recycled
pid cannot share.

A process is *gone* when /proc/PID is not there, belongs to another process (another start time),
or is a zombie whose threads have all exited. The last case matters: when the thread-group leader
has exited (its /proc/PID/stat says Z) the other threads may still be running or tearing down
(ovs-vswitchd's handler and PMD threads closing their ports): the process still holds its files,
sockets and taps until the last thread is done.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping

__all__ = ["cmdline", "exited", "reap", "send", "start_time", "stat_fields", "terminate", "wait_exited"]

POLL = 0.01


def stat_fields(pid: int, tid: int | None = None) -> list[str] | None:
    """The fields of /proc/PID/stat (or /proc/PID/task/TID/stat) after the command name: [0] is the
    state, [19] the start time. None if there is no such process."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path, "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    try:
        fields = stat[stat.rindex(")") + 2:].split()
    except ValueError:
        return None
    return fields if len(fields) >= 20 else None


def cmdline(pid: int) -> str:
    """The process's argv joined with NULs ("" if gone). When the thread-group leader has exited
    (its own cmdline is then empty) but another thread is still running, that thread's."""
    text = _read(f"/proc/{pid}/cmdline")
    if text:
        return text
    try:
        tids = [t for t in os.listdir(f"/proc/{pid}/task") if t != str(pid)]
    except OSError:
        return ""
    for t in tids:
        text = _read(f"/proc/{pid}/task/{t}/cmdline")
        if text:
            return text
    return ""


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), None if there is no such process."""
    f = stat_fields(pid)
    return int(f[19]) if f is not None else None


def exited(pid: int, start: int | None) -> bool:
    """The process ``pid`` started at ``start`` (None: whichever has that pid) is gone: no such
    pid, another process under it, or a zombie with no thread left (see the module docstring)."""
    f = stat_fields(pid)
    if f is None or (start is not None and int(f[19]) != start):
        return True
    if f[0] not in ("Z", "X"):
        return False
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for tid in tids:
        if tid == str(pid) or not tid.isdigit():
            continue
        t = stat_fields(pid, int(tid))
        if t is not None and t[0] not in ("Z", "X"):
            return False  # the leader has exited, this thread has not (yet)
    return True


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child (else nothing happens)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except OSError:  # not our child (ChildProcessError), or already collected
        pass


def wait_exited(procs: Mapping[int, int | None], timeout: float) -> dict[int, int | None]:
    """Wait until every process of ``procs`` ({pid: start}) is gone, for at most ``timeout``
    seconds (reaping our children on the way). Returns those still there ({} when all are gone)."""
    left = dict(procs)
    deadline = time.monotonic() + timeout
    while True:
        for pid in list(left):
            reap(pid)
            if exited(pid, left[pid]):
                del left[pid]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL)


def send(pid: int, start: int | None, sig: int) -> bool:
    """Send ``sig`` to the process (pid, start) if it is still there. False if it is gone (or not
    ours to signal)."""
    if exited(pid, start):
        return False
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def terminate(procs: Mapping[int, int | None], grace: float, kill_wait: float = 3.0,
              sig: int = signal.SIGTERM) -> dict[int, int | None]:
    """Stop every process of ``procs`` ({pid: start}), all at once: ``sig`` (SIGTERM), wait up to
    ``grace`` seconds until each is gone, SIGKILL those left, wait up to ``kill_wait``. Returns
    those still there after that ({} unless one is stuck in the kernel). The wait is bounded by
    ``grace + kill_wait``."""
    for pid, start in procs.items():
        send(pid, start, sig)
    left = wait_exited(procs, grace)
    if not left or sig == signal.SIGKILL:
        return left
    for pid, start in left.items():
        send(pid, start, signal.SIGKILL)
    return wait_exited(left, kill_wait)
