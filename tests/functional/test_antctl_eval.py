"""antctl query networkpolicyevaluation offline (issue 13 item 5): the rules that decide a connection,
found by tracing a packet through the nodes' compiled flows in OVS sandboxes (real OVS, no root)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pyantrea.antctl.main import main as antctl

pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="Open vSwitch is not installed"),
]

SEED = str(Path(__file__).resolve().parents[2] / "examples" / "seed")
DNS1 = "kube-system/coredns-66bff467f8-bclzd"


def evaluate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    rc = antctl(["--cluster", SEED, "query", "networkpolicyevaluation", *args, "-o", "json"])
    out = capsys.readouterr()
    return rc, json.loads(out.out) if rc == 0 else {}, out.err


def rules(doc: dict) -> list[tuple[str, int, str, str, str]]:
    return [(r["networkPolicy"]["name"], r["ruleIndex"], r["direction"], r["action"], r["node"]) for r in doc["rules"]]


@pytest.mark.parametrize("src,dst,flow,verdict,want", [
    # frontend -> backend2 (TCP/80, the Pod's declared port): frontendpolicy's egress rule on worker1 and
    # backendpolicy's ingress rule on worker2 both allow it
    ("default/frontend", "default/backend2", "", "Delivered",
     [("frontendpolicy", 1, "Out", "Allow", "worker1"), ("backendpolicy", 0, "In", "Allow", "worker2")]),
    # backend1 is isolated for egress by backendpolicy (policyTypes Egress, no egress rule)
    ("default/backend1", "default/backend2", "tcp,tcp_dst=80", "Dropped",
     [("backendpolicy", 2**31 - 1, "Out", "Isolate", "worker1")]),
    # frontend's DNS: frontendpolicy's egress rule 2 (UDP/53); coredns is not isolated
    ("default/frontend", DNS1, "udp,udp_dst=53", "Delivered", [("frontendpolicy", 2, "Out", "Allow", "worker1")]),
    # anyone may reach frontend on TCP/80: frontendpolicy's ingress rule 0 (ipBlock 0.0.0.0/0)
    (DNS1, "default/frontend", "tcp,tcp_dst=80", "Delivered", [("frontendpolicy", 0, "In", "Allow", "worker1")]),
    # but not on another port: frontend is isolated for ingress
    (DNS1, "default/frontend", "tcp,tcp_dst=81", "Dropped", [("frontendpolicy", 2**31 - 1, "In", "Isolate", "worker1")]),
])
def test_evaluation_by_tracing(capsys: pytest.CaptureFixture[str], src: str, dst: str, flow: str, verdict: str,
                               want: list[tuple[str, int, str, str, str]]) -> None:
    rc, doc, err = evaluate(capsys, "-S", src, "-D", dst, *(["-f", flow] if flow else []))
    assert rc == 0, err
    assert doc["verdict"] == verdict and rules(doc) == want


def test_evaluation_table_and_no_policy(capsys: pytest.CaptureFixture[str]) -> None:
    rc = antctl(["--cluster", SEED, "query", "netpoleval", "-S", "default/frontend", "-D", "default/backend2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.splitlines()[0].split() == ["NAME", "NAMESPACE", "POLICY-TYPE", "RULE-INDEX", "DIRECTION", "ACTION"]
    assert out.splitlines()[1].split() == ["frontendpolicy", "default", "K8sNP", "1", "Out", "Allow"]
    # between two Pods no policy selects: the sentence says so
    rc = antctl(["--cluster", SEED, "query", "netpoleval", "-S", DNS1, "-D", "kube-system/coredns-66bff467f8-f4nc4",
                 "-f", "udp,udp_dst=53"])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("No NetworkPolicy rule decides") and "Delivered" in out
