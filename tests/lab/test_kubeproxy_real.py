"""pyantrea.kubeproxy's model against the real kube-proxy of a `lab up --kubernetes` lab (issue 9,
item 5): on every node, `iptables-save -t nat` in the node's namespace against
`render_iptables(seed, node)`, chain by chain (`pyantrea.kubeproxy.compare.compare_nat`: the same
KUBE-* chains, each with the same matches and targets; the known differences of the newer
kube-proxy are the module's explained exceptions, and tests/unit/test_kubeproxy_vs_real.py checks
they are needed and hide nothing). Its own lab (/run/pa-kpx, prefix pkx-). Root only; needs
Kubernetes' programs (skipped without them, failed when CI is set).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyantrea.kubeproxy.compare import compare_nat, parse_nat
from pyantrea.kubeproxy.rules import render_iptables
from pyantrea.lab.kubernetes import bin_dir, missing_programs
from pyantrea.offline import OfflineCluster

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed"
LAB_DIR = "/run/pa-kpx"
PREFIX = "pkx-"
ENV = {**os.environ, "PYANTREA_LAB_DIR": LAB_DIR, "PYANTREA_LAB_PREFIX": PREFIX}
NODES = ("master", "worker1", "worker2")

pytestmark = [pytest.mark.lab]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def lab(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "pyantrea", "lab", *args], capture_output=True, text=True,
                       env=ENV, cwd=ROOT, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"pyantrea lab {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def up() -> Iterator[None]:
    gone = missing_programs()
    if gone:
        why = f"{', '.join(gone)} not in {bin_dir()} (make kubernetes)"
        if in_ci():
            pytest.fail(f"{why}, and CI is set", pytrace=False)
        pytest.skip(why)
    lab("down", check=False)
    p = lab("up", "--kubernetes", str(SEED), check=False)
    if p.returncode != 0:
        lab("down", check=False)
        raise AssertionError(f"lab up --kubernetes failed\n{p.stdout}\n{p.stderr}")
    try:
        yield
    finally:
        lab("down", check=False)


def test_model_equals_the_real_kube_proxy_on_every_node(up: None) -> None:
    cluster = OfflineCluster.load(str(SEED)).cluster
    for node in NODES:
        real = subprocess.run(["ip", "netns", "exec", f"{PREFIX}{node}", "iptables-save", "-t", "nat"],
                              capture_output=True, text=True, check=True, timeout=30).stdout
        model = render_iptables(cluster, node)
        assert compare_nat(model, real) == [], node
        chains = parse_nat(real)
        assert set(chains) - set(parse_nat(model)) == {"KUBE-PROXY-CANARY"}, node
        assert sum(c.startswith("KUBE-SEP-") for c in chains) == 9, node
