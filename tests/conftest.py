"""Suite-wide guard: the tests must leave no OVS daemon of their own behind (clean host rule)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

DAEMONS = ("ovs-vswitchd", "ovsdb-server")
# Sandboxes live in mkdtemp(prefix="pa-") directories; the lab's daemons are checked by its own tests
# (`lab down` must leave nothing), and a lab someone else runs at the same time is not ours.
SANDBOX_MARK = os.path.join(tempfile.gettempdir(), "pa-")


def _ovs_daemons() -> dict[int, str]:
    out: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            comm = (d / "comm").read_text().strip()
            if comm not in DAEMONS:
                continue
            if (d / "stat").read_text().split(") ")[1].startswith("Z"):
                continue  # a zombie: exited, waiting for init to reap it
            out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return out


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._ovs_before = _ovs_daemons()  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = getattr(session.config, "_ovs_before", {})
    if os.environ.get("PYANTREA_ALLOW_LEFTOVERS"):
        return
    left = {pid: cmd for pid, cmd in _ovs_daemons().items() if pid not in before and SANDBOX_MARK in cmd}
    if left:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = "tests left OVS daemons running:\n" + "\n".join(f"  {pid} {cmd[:160]}" for pid, cmd in left.items())
        if tr is not None:
            tr.write_line(msg, red=True)
        session.exitstatus = 1
