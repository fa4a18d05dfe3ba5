"""One live lab of the seed for the whole reliability suite (root only).

`pyantrea lab up examples/seed` in a private run dir (PYANTREA_LAB_DIR=/run/pa-reltest) once for the
package; `test_zz_down.py` (the last module) takes it down and checks that nothing is left; the
fixture's teardown runs `lab down` again (idempotent) in case the suite stopped half-way.
Tests leave the lab as they found it (extra policies and Pods are deleted, killed daemons restarted).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from .reltools import SEED, RelLab, kill_leftovers, lab_netns

LAB_DIR = "/run/pa-reltest"


def _netns_usable() -> bool:
    if shutil.which("ip") is None:
        return False
    try:
        return subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.lab)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="the lab needs root"))
            elif not _netns_usable():
                item.add_marker(pytest.mark.skip(reason="`ip netns` is not available"))
            elif shutil.which("ovs-vswitchd") is None:
                item.add_marker(pytest.mark.skip(reason="Open vSwitch is not installed"))


@pytest.fixture(scope="package")
def lab() -> Iterator[RelLab]:
    other = lab_netns()
    if other:
        pytest.skip(f"a lab is already up on this host ({', '.join(other[:4])} ...): `pyantrea lab down` it first")
    rl = RelLab(LAB_DIR)
    t0 = time.monotonic()
    p = rl.lab("up", str(SEED), check=False, timeout=300)
    if p.returncode != 0:
        if "another lab is up" in p.stderr:
            pytest.skip(p.stderr.strip())
        rl.lab("down", check=False)
        raise AssertionError(f"lab up failed ({time.monotonic() - t0:.1f} s)\n{p.stdout}\n{p.stderr}")
    print(f"\nlab up: {time.monotonic() - t0:.1f} s")
    try:
        yield rl.refresh()
    finally:
        kill_leftovers()
        rl.lab("down", check=False)


@pytest.fixture(autouse=True)
def _no_leftover_probes() -> Iterator[None]:
    yield
    kill_leftovers()
