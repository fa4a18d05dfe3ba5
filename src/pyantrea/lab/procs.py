"""Processes the lab starts: started detached, identified by (pid, start time), stopped only by that.

A pid alone can be recycled; the start time (field 22 of /proc/PID/stat, in clock ticks since
boot) cannot be the same for two processes with the same pid, so `ProcRef.alive()` and
`ProcRef.kill()` never touch a process the lab did not start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ProcRef", "start_detached", "start_time"]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    try:
        return stat[stat.rindex(")") + 2:].split()
    except ValueError:
        return None


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), None if there is no such process."""
    f = _stat_fields(pid)
    if f is None or len(f) < 20:
        return None
    return int(f[19])


def cmdline(pid: int) -> str:
    """The process's argv joined with NULs ("" if gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


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
        """The very process we started is running (a zombie counts as gone)."""
        if self.pid <= 1 or self.pid == os.getpid():
            return False
        f = _stat_fields(self.pid)
        if f is None or len(f) < 20:
            return False
        if f[0] in ("Z", "X"):
            return False
        if self.start is not None:
            return int(f[19]) == self.start
        return self.hint is None or self.hint in cmdline(self.pid)

    def kill(self, sig: int = signal.SIGKILL, wait: float = 5.0) -> bool:
        """Send ``sig`` if it is still our process; wait until it is gone (reaping it if it is our
        child). True when it is gone."""
        if not self.alive():
            self._reap()
            return True
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            self._reap()
            if not self.alive():
                return True
            time.sleep(0.01)
        return not self.alive()

    def stop(self, grace: float = 2.0) -> bool:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.kill(signal.SIGTERM, grace):
            return True
        return self.kill(signal.SIGKILL, 3.0)

    def _reap(self) -> None:
        try:
            os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pass
        except OSError:
            pass


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
