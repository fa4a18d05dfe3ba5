"""pyantrea.kubeproxy's model against the rules a real kube-proxy (v1.37.2, iptables mode) wrote on
worker1 of `lab up --kubernetes examples/seed` (tests/unit/data/kube-proxy-v1.37.2-worker1-nat.txt,
its `iptables-save -t nat`), chain by chain (`pyantrea.kubeproxy.compare`): the same KUBE-* chains
with the same rules once the known differences of a newer kube-proxy (KUBE-PROXY-CANARY, the
masquerade rule's place, endpoint comments, --random-fully, MARK's printed form) are accounted
for; and each of those exceptions is needed (without it the comparison reports it) and none hides
a real difference (a changed DNAT, probability, chain or missing rule is reported).
tests/lab/test_kubeproxy_real.py does the same against a live lab's kube-proxy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyantrea.kubeproxy.compare import compare_nat, parse_nat
from pyantrea.kubeproxy.rules import render_iptables
from pyantrea.offline import OfflineCluster

ROOT = Path(__file__).resolve().parents[2]
REAL = (Path(__file__).parent / "data" / "kube-proxy-v1.37.2-worker1-nat.txt").read_text()


@pytest.fixture(scope="module")
def model() -> str:
    return render_iptables(OfflineCluster.load(str(ROOT / "examples" / "seed")).cluster, "worker1")


def test_model_equals_the_real_kube_proxy_chain_by_chain(model: str) -> None:
    assert compare_nat(model, REAL) == []
    m, r = parse_nat(model), parse_nat(REAL)
    assert set(r) - set(m) == {"KUBE-PROXY-CANARY"}
    assert sum(c.startswith("KUBE-SVC-") for c in m) == 5 and sum(c.startswith("KUBE-SEP-") for c in m) == 9


@pytest.mark.parametrize("evidence", [":KUBE-PROXY-CANARY - ", "-j MASQUERADE --random-fully",
                                      '"default/backendsvc -> 10.222.1.47:80"',
                                      "-A KUBE-SVC-SQRBXEDPJTJWMLH3 ! -s 10.222.0.0/16", "--set-xmark 0x4000/0x0"])
def test_each_known_difference_is_really_there(evidence: str) -> None:
    """The real dump has each difference the comparison allows for (none is dead code)."""
    assert evidence in REAL


@pytest.mark.parametrize("change", [
    ("--to-destination 10.222.2.34:80", "--to-destination 10.222.2.34:8080"),
    ("--probability 0.50000000000 -j KUBE-SEP-AH4WVKQXDDYC7TRU", "--probability 0.25000000000 -j KUBE-SEP-AH4WVKQXDDYC7TRU"),
    ("-A KUBE-SEP-7TWJCQ5U5RFBWI7L -s 10.222.2.34/32", "-A KUBE-SEP-7TWJCQ5U5RFBWI7L -s 10.222.2.35/32"),
    ("! -s 10.222.0.0/16 -d 10.104.65.133/32", "-d 10.104.65.133/32"),
    ('-A KUBE-SVC-SQRBXEDPJTJWMLH3 -m comment --comment "default/backendsvc -> 10.222.2.34:80" '
     "-j KUBE-SEP-7TWJCQ5U5RFBWI7L\n", ""),
    ("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n", ""),
    ("--dport 80 -j KUBE-SVC-SQRBXEDPJTJWMLH3", "--dport 81 -j KUBE-SVC-SQRBXEDPJTJWMLH3"),
])
def test_a_real_difference_is_reported(model: str, change: tuple[str, str]) -> None:
    assert change[0] in REAL
    assert compare_nat(model, REAL.replace(change[0], change[1], 1)) != []
