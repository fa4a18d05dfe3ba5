"""What every lab test needs from the host, and what happens when it is missing.

Each lab test module brings up its own lab, beside any lab a user has up (`make demo`'s, run dir
/run/pyantrea-lab, namespaces pa-*): its own run dir and its own namespace prefix
(``PYANTREA_LAB_PREFIX``), so a running lab neither blocks the tests nor is touched by them.

A lab test needs root, `ip netns` and Open vSwitch (and whatever its module's ``lab_needs`` marker
names, e.g. tcpdump). Without them it is skipped, unless ``CI`` is set (to anything but "", "0",
"false" or "no"): in CI a lab test that cannot run fails.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@functools.lru_cache(maxsize=None)
def _netns_usable() -> bool:
    if shutil.which("ip") is None:
        return False
    try:
        return subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def missing(tools: tuple[str, ...] = ()) -> str | None:
    """Why the lab cannot run on this host (None: it can)."""
    if os.geteuid() != 0:
        return "the lab needs root"
    if not _netns_usable():
        return "`ip netns` is not available"
    if shutil.which("ovs-vswitchd") is None:
        return "Open vSwitch is not installed (ovs-vswitchd)"
    for t in tools:
        if shutil.which(t) is None:
            return f"{t} is not installed"
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab_needs(*tools): tools a lab test needs besides root, ip netns and OVS")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.lab)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture (the module's `lab up`): skip, or in CI fail, a test the host cannot run."""
    tools = tuple(t for m in item.iter_markers("lab_needs") for t in m.args)
    why = missing(tools)
    if why is None:
        return
    if in_ci():
        pytest.fail(f"{why}, and CI is set: lab tests must run in CI", pytrace=False)
    pytest.skip(why)
