"""Stopping the lab's processes (pyantrea.process, lab.procs): every stop returns only when the
process is gone, every thread of it; SIGKILL after the grace period; a bounded wait; only the
process that was started (pid + start time), never another one under a recycled pid."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from pyantrea import process
from pyantrea.lab.procs import ProcRef, start_detached, stop_all

# A child that says "ready" in its log once its SIGTERM behaviour is in place.
LATE = """
import signal, sys, time
def term(*_):
    time.sleep(float(sys.argv[1]))   # takes its time to exit on SIGTERM
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
print("ready", flush=True)
while True:
    time.sleep(1)
"""
IGNORES = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(1)
"""
# The main thread exits first (pthread_exit): /proc/PID/stat says Z while another thread runs on,
# as when ovs-vswitchd's main thread has exited and its other threads are still closing ports.
LEADER_EXITS_FIRST = """
import ctypes, os, signal, sys, threading, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
def worker():
    time.sleep(float(sys.argv[1]))
    os._exit(0)
threading.Thread(target=worker).start()
print("ready", flush=True)
ctypes.CDLL(None).pthread_exit(None)
"""


def start(tmp_path: Path, code: str, *args: str) -> ProcRef:
    log = tmp_path / f"child-{time.monotonic_ns()}.log"
    ref = start_detached([sys.executable, "-c", code, *args], log)
    deadline = time.monotonic() + 20
    while "ready" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the child did not start"
        time.sleep(0.01)
    return ref


def gone(ref: ProcRef) -> bool:
    return process.exited(ref.pid, ref.start)


def test_stop_returns_only_after_a_slow_sigterm_exit(tmp_path: Path) -> None:
    ref = start(tmp_path, LATE, "0.5")
    t0 = time.monotonic()
    assert ref.stop(grace=5.0) is True
    took = time.monotonic() - t0
    assert gone(ref) and not ref.alive()
    assert 0.45 <= took < 4.0, took  # waited for it, and it needed no SIGKILL


def test_stop_kills_after_the_grace_period(tmp_path: Path) -> None:
    ref = start(tmp_path, IGNORES)
    t0 = time.monotonic()
    assert ref.stop(grace=0.3) is True
    took = time.monotonic() - t0
    assert gone(ref)
    assert 0.3 <= took < 2.0, took


def test_a_zombie_leader_with_a_running_thread_is_not_gone(tmp_path: Path) -> None:
    ref = start(tmp_path, LEADER_EXITS_FIRST, "0.8")
    deadline = time.monotonic() + 5
    while process.stat_fields(ref.pid)[0] != "Z":  # type: ignore[index]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert ref.alive() and not gone(ref)  # /proc/PID/stat says Z, yet a thread is running
    t0 = time.monotonic()
    assert ref.stop(grace=5.0) is True  # SIGTERM is ignored: the thread exits on its own
    assert gone(ref)
    assert 0.3 <= time.monotonic() - t0 < 4.0


def test_a_pidfile_ref_is_checked_by_its_hint_then_waited_on(tmp_path: Path) -> None:
    ref = start(tmp_path, LATE, "0.3")
    assert not ProcRef(ref.pid, None, "not-this-process").alive()
    assert ProcRef(ref.pid, None, "not-this-process").stop(grace=0.1) is True  # not ours: untouched
    assert ref.alive()
    t0 = time.monotonic()
    assert ProcRef(ref.pid, None, "signal.SIGTERM").stop(grace=5.0) is True  # its cmdline has it
    assert gone(ref) and time.monotonic() - t0 >= 0.25


def test_another_process_under_the_pid_is_never_signalled(tmp_path: Path) -> None:
    ref = start(tmp_path, IGNORES)
    assert ref.start is not None
    other = ProcRef(ref.pid, ref.start + 1)  # the pid, but not the process that was started
    assert not other.alive() and other.stop(grace=0.1) is True and other.kill() is True
    assert ref.alive()
    assert ref.kill(signal.SIGKILL, wait=3.0) is True and gone(ref)


def test_stop_all_stops_together_within_the_bound(tmp_path: Path) -> None:
    refs = [start(tmp_path, IGNORES) for _ in range(3)] + [start(tmp_path, LATE, "0.2")]
    t0 = time.monotonic()
    assert stop_all([(f"p{i}", r) for i, r in enumerate(refs)] + [("none", None), ("again", refs[0])],
                    grace=0.5, kill_wait=3.0) == []
    took = time.monotonic() - t0
    assert all(gone(r) for r in refs)
    assert took < 2.5, took  # one grace period for all of them, not one each


def test_stop_all_names_a_process_still_there_after_its_sigkill(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ref = start(tmp_path, IGNORES)
    real = process.exited

    def stuck(pid: int, start: int | None) -> bool:  # as if it were stuck in the kernel (D state)
        return False if pid == ref.pid else real(pid, start)

    monkeypatch.setattr(process, "exited", stuck)
    t0 = time.monotonic()
    assert stop_all([("agent worker1", ref)], grace=0.2, kill_wait=0.3) == [f"agent worker1 (pid {ref.pid})"]
    assert time.monotonic() - t0 < 2.0  # bounded
    monkeypatch.undo()
    deadline = time.monotonic() + 3
    while not gone(ref):  # it did get the SIGKILL
        process.reap(ref.pid)
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_exited() -> None:
    assert not process.exited(os.getpid(), None)
    assert not process.exited(os.getpid(), process.start_time(os.getpid()))
    assert process.exited(os.getpid(), -1)  # another start time: another process
    assert process.exited(2 ** 22 + 1, None)  # above pid_max: no such process
