"""One live lab of the seed for the whole reliability suite (root only).

`pyantrea lab up examples/seed` in a private run dir and with a private namespace prefix
(PYANTREA_LAB_DIR=/run/pa-reltest, PYANTREA_LAB_PREFIX=pr-) once for the package, beside any lab a
user has up (pa-*, never touched); `test_zz_down.py` (the last module) takes it down and checks
that nothing of it is left; the fixture's teardown runs `lab down` again (idempotent) in case the
suite stopped half-way. Skipped (failed when CI is set) without root, `ip netns` or OVS
(tests/lab/conftest.py).
Tests leave the lab as they found it (extra policies and Pods are deleted, killed daemons restarted).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .reltools import PREFIX, SEED, RelLab, kill_leftovers

LAB_DIR = "/run/pa-reltest"


@pytest.fixture(scope="package")
def lab() -> Iterator[RelLab]:
    rl = RelLab(LAB_DIR, prefix=PREFIX)
    t0 = time.monotonic()
    p = rl.lab("up", str(SEED), check=False, timeout=300)
    if p.returncode != 0:
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
