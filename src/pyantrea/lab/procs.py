"""Processes the lab starts: started detached, identified by (pid, start time), stopped only by that.

A pid alone can be recycled; the start time (field 22 of /proc/PID/stat, in clock ticks since
boot) cannot be the same for two processes with the same pid, so `ProcRef.alive()` and
`ProcRef.kill()` never touch a process the lab did not start. Every stop waits until the process
is gone, every thread of it (`pyantrea.process`), with SIGKILL after the grace period and a
bounded wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyantrea.process import cmdline, exited, reap, send, stat_fields, terminate, wait_exited
from pyantrea.process import start_time as start_time

__all__ = ["ProcRef", "start_detached", "start_time", "stop_all"]


@dataclass(frozen=True)
class ProcRef:
    """A process the lab started. ``start``: its start time (None: unknown, e.g. read from a
    pidfile); ``hint``: a string its command line must contain (checked when ``start`` is None)."""

    pid: int
    start: int | None
    hint: str | None = None

    @classmethod
    def from_pidfile(cls, path: Path, hint: str) -> ProcRef | None:
        try:
            pid = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return cls(pid, None, hint) if pid > 0 else None

    @classmethod
    def of(cls, pid: int) -> ProcRef:
        return cls(pid, start_time(pid))

    @classmethod
    def from_json(cls, d: Any) -> ProcRef | None:
        if isinstance(d, dict) and isinstance(d.get("pid"), int):
            st = d.get("start")
            hint = d.get("hint")
            return cls(d["pid"], st if isinstance(st, int) else None, hint if isinstance(hint, str) else None)
        return None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"pid": self.pid, "start": self.start}
        if self.hint is not None:
            d["hint"] = self.hint
        return d

    def alive(self) -> bool:
        """The very process we started is running (a zombie counts as gone once its every thread
        has exited)."""
        if self.pid <= 1 or self.pid == os.getpid():
            return False
        f = stat_fields(self.pid)
        if f is None:
            return False
        if self.start is not None:
            return int(f[19]) == self.start and not exited(self.pid, self.start)
        if exited(self.pid, None):
            return False
        return self.hint is None or self.hint in cmdline(self.pid)

    def identity(self) -> int | None:
        """The start time to wait on: the recorded one, else (a pidfile's ref) the current one of a
        process `alive()` has just said is ours."""
        return self.start if self.start is not None else start_time(self.pid)

    def kill(self, sig: int = signal.SIGKILL, wait: float = 5.0) -> bool:
        """Send ``sig`` if it is still our process; wait until it is gone (reaping it if it is our
        child), at most ``wait`` seconds. True when it is gone."""
        if not self.alive():
            self._reap()
            return True
        start = self.identity()
        send(self.pid, start, sig)
        return not wait_exited({self.pid: start}, wait)

    def stop(self, grace: float = 2.0, kill_wait: float = 3.0) -> bool:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns when the process is gone (True)
        or ``kill_wait`` seconds after the SIGKILL (False: it is stuck in the kernel)."""
        return not stop_all([("", self)], grace, kill_wait)

    def _reap(self) -> None:
        reap(self.pid)


def stop_all(procs: Iterable[tuple[str, ProcRef | None]], grace: float = 2.0, kill_wait: float = 3.0) -> list[str]:
    """Stop every process of ``procs`` ((name, ref) pairs; None refs and refs that are no longer
    the lab's processes are skipped, each pid once) all at once: SIGTERM, SIGKILL after ``grace``
    seconds to those left, then wait at most ``kill_wait``. Returns "NAME (pid N)" of every process
    still there after that: [] unless one is stuck in the kernel."""
    targets: dict[int, int | None] = {}
    names: dict[int, str] = {}
    for name, ref in procs:
        if ref is None or ref.pid in targets:
            continue
        if not ref.alive():
            ref._reap()
            continue
        start = ref.identity()
        if start is None:
            continue  # gone between the two reads
        targets[ref.pid] = start
        names[ref.pid] = name
    left = terminate(targets, grace, kill_wait)
    return [f"{names[pid]} (pid {pid})".lstrip() for pid in sorted(left)]


def start_detached(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
                   pass_fds: Sequence[int] = (), cwd: str | None = None, pidfile: Path | None = None) -> ProcRef:
    """Start ``argv`` in its own session, stdin from /dev/null, stdout+stderr appended to ``log``.
    It outlives the caller (it is re-parented when the caller exits)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with open(log, "ab") as out:
        p = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env=full_env, start_new_session=True, close_fds=True, pass_fds=tuple(pass_fds),
                             cwd=cwd)
    # The Popen object is dropped on purpose: the child is a daemon (subprocess reaps it if it
    # exits while we still run). Its identity is recorded now, while it certainly exists.
    if pidfile is not None:
        pidfile.write_text(f"{p.pid}\n")
    return ProcRef(p.pid, start_time(p.pid))
