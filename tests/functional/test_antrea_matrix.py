"""The 9-Pod matrix (Namespaces x, y, z; Pods a, b, c) with ClusterNetworkPolicy cases in the style of
Antrea's e2e tests (tests/data/antrea_matrix.py), checked offline by `antctl reachability`: every
ordered pair of Pods traced through both nodes' flows in OVS sandboxes. A Reject is a deny whose
outcome is Rejected, naming the rule; a Drop by an Antrea-native rule names its rule and tier.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from pyantrea.antctl.backends import OfflineBackend
from pyantrea.traceflow.reachability import PortSpec, reachability

pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="Open vSwitch is not installed"),
]

_spec = importlib.util.spec_from_file_location("antrea_matrix", Path(__file__).parents[1] / "data" / "antrea_matrix.py")
assert _spec is not None and _spec.loader is not None
M = importlib.util.module_from_spec(_spec)
sys.modules["antrea_matrix"] = M
_spec.loader.exec_module(M)


def folder(tmp: Path, case: Any) -> Path:
    d = tmp / case.name
    d.mkdir()
    (d / "cluster.yaml").write_text(M.cluster_manifests())
    (d / "policies.yaml").write_text(case.manifests)
    (d / "antrea-agent.conf").write_text(M.AGENT_CONF)
    return d


def verdict(r: dict[str, Any]) -> str:
    if r["verdict"] == "allow":
        return "allow"
    return "reject" if r["reason"].get("action") == "Rejected" else "drop"


@pytest.mark.parametrize("case", M.CASES, ids=[c.name for c in M.CASES])
def test_matrix(case: Any, tmp_path: Path) -> None:
    b = OfflineBackend(str(folder(tmp_path, case)))
    try:
        res = reachability(b, [PortSpec(p, n) for p, n in case.ports])
    finally:
        b.close()
    assert len(res) == 72 * len(case.ports)
    wrong = []
    for r in res:
        want = case.expect(r["from"], r["to"], r["protocol"], r["port"])
        if verdict(r) != want:
            wrong.append(f"{r['from']} -> {r['to']} {r['protocol']}/{r['port']}: {verdict(r)}, want {want} "
                         f"({r.get('reason', {}).get('message', '')})")
    assert not wrong, "\n".join(wrong)
    # every deny by an Antrea-native rule names the rule, its tier and its action
    for r in res:
        if r["verdict"] == "deny" and r["reason"].get("tableName", "").startswith("AntreaPolicy"):
            (rule,) = r["reason"]["rules"]
            assert rule.startswith("ACNP ") and "(tier " in rule and ", action " in rule, rule


def test_reject_and_baseline_reasons(tmp_path: Path) -> None:
    cases = {c.name: c for c in M.CASES}
    b = OfflineBackend(str(folder(tmp_path, cases["reject"])))
    try:
        res = {(r["from"], r["to"]): r for r in reachability(b, [PortSpec("TCP", 80)])}
    finally:
        b.close()
    r = res[("x/a", "y/b")]["reason"]
    assert r["action"] == "Rejected" and r["tableName"] == "AntreaPolicyEgressRule"
    assert r["rules"][0].startswith("ACNP acnp-reject-a-to-y egress rule egress-reject-")
    assert "(tier application, priority 1, action Reject, conj_id " in r["rules"][0]
    r = res[("y/a", "z/c")] if ("y/a", "z/c") in res else None
    assert r is not None and r["verdict"] == "allow"
    b = OfflineBackend(str(folder(tmp_path, cases["baseline-isolation"])))
    try:
        res = {(x["from"], x["to"]): x for x in reachability(b, [PortSpec("TCP", 80)])}
    finally:
        b.close()
    r = res[("y/a", "x/b")]["reason"]
    assert r["tableName"] == "IngressDefaultRule" and "(tier baseline, priority 1, action Drop" in r["rules"][0]
