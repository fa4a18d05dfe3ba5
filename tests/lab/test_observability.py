"""Observability on the live lab (issue 13 items 4 and 5): the components' Prometheus metrics, scraped
with curl over their sockets, move as Pods and policies change; antctl's commands answer from the
lab's real state.

Brings the seed up in its own run dir (/run/pa-obs) with its own namespace prefix (po-), beside any
lab a user has up, and takes it down at the end. Skipped (failed when CI is set) without root,
`ip netns`, OVS or curl (conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyantrea.metrics import parse, value

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed"
OWN_DIR = Path("/run/pa-obs")  # private run dir and namespace prefix
PREFIX = "po-"
ENV = {**os.environ, "PYANTREA_LAB_DIR": str(OWN_DIR), "PYANTREA_LAB_PREFIX": PREFIX}

pytestmark = [pytest.mark.lab, pytest.mark.lab_needs("curl")]


def _own_netns() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/var/run/netns") if n.startswith(PREFIX))
    except FileNotFoundError:
        return []


def pyantrea(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "pyantrea", *args], capture_output=True, text=True, timeout=timeout,
                       env=ENV, cwd=ROOT)
    if check:
        assert p.returncode == 0, f"pyantrea {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def antctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "pyantrea.antctl.main", *args], capture_output=True, text=True,
                       timeout=300, env=ENV, cwd=ROOT)
    if check:
        assert p.returncode == 0, f"antctl {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def lab() -> Iterator[Path]:
    up = pyantrea("lab", "up", str(SEED), check=False)
    try:
        if up.returncode != 0:
            raise AssertionError(f"`pyantrea lab up` failed (exit {up.returncode}):\n{up.stdout}\n{up.stderr}")
        yield OWN_DIR
    finally:
        down = pyantrea("lab", "down", check=False)
        assert down.returncode == 0 and _own_netns() == [], f"{down.stdout}\n{down.stderr}\nleft: {_own_netns()}"


def agent_sock(node: str) -> Path:
    return OWN_DIR / "nodes" / node / "agent.sock"


CONTROLLER_SOCK = OWN_DIR / "controller" / "controller.sock"


def curl(sock: Path, path: str = "/metrics") -> str:
    p = subprocess.run(["curl", "-sf", "--unix-socket", str(sock), f"http://localhost{path}"], capture_output=True,
                       text=True, timeout=30, check=True)
    return p.stdout


def scrape(sock: Path) -> dict[str, Any]:
    return parse(curl(sock))


AGENT_NAMES = [
    "antrea_agent_local_pod_count", "antrea_agent_networkpolicy_count", "antrea_agent_ingress_networkpolicy_rule_count",
    "antrea_agent_egress_networkpolicy_rule_count", "antrea_agent_ovs_flow_count", "antrea_agent_ovs_total_flow_count",
    "antrea_agent_ovs_flow_ops_count", "antrea_agent_ovs_flow_ops_error_count",
    "antrea_agent_ovs_flow_ops_latency_milliseconds", "antrea_agent_conntrack_total_connection_count",
    "antrea_agent_conntrack_antrea_connection_count", "antrea_agent_conntrack_max_connection_count",
    "antrea_agent_cni_request_duration_milliseconds", "process_resident_memory_bytes",
]

EXTRA_POD = """apiVersion: v1
kind: Pod
metadata: {name: metrics-extra, namespace: default, labels: {app: metrics-extra}}
spec:
  nodeName: worker1
  containers: [{name: extra, image: x, ports: [{name: http, containerPort: 80}]}]
"""
EXTRA_POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: metrics-extra, namespace: default}
spec:
  podSelector: {matchLabels: {app: metrics-extra}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {role: frontend}}}]
    ports: [{protocol: TCP, port: 80}]
"""


def _until(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_metrics_move_with_a_pod_and_a_policy(lab: Path, tmp_path: Path) -> None:
    text = curl(agent_sock("worker1"))
    for name in AGENT_NAMES:
        assert f"\n# TYPE {name} " in text, name
    # also from inside the node, as a user of the lab would
    inside = pyantrea("lab", "exec", "worker1", "--", "curl", "-s", "--unix-socket", str(agent_sock("worker1")),
                      "http://localhost/metrics").stdout
    assert "antrea_agent_ovs_total_flow_count" in inside
    a0, c0 = scrape(agent_sock("worker1")), scrape(CONTROLLER_SOCK)
    pods0 = value(a0, "antrea_agent_local_pod_count")
    assert pods0 == len(json.loads(curl(agent_sock("worker1"), "/v1/podinterfaces")))

    pod = tmp_path / "pod.yaml"
    pod.write_text(EXTRA_POD)
    pyantrea("lab", "apply", "-f", str(pod))
    assert _until(lambda: value(scrape(agent_sock("worker1")), "antrea_agent_local_pod_count") == pods0 + 1)
    a1 = scrape(agent_sock("worker1"))
    assert value(a1, "antrea_agent_ovs_total_flow_count") > value(a0, "antrea_agent_ovs_total_flow_count")
    assert value(a1, "antrea_agent_ovs_flow_count", table_id="10", table_name="SpoofGuard") > \
        value(a0, "antrea_agent_ovs_flow_count", table_id="10", table_name="SpoofGuard")
    assert value(a1, "antrea_agent_ovs_flow_ops_count", operation="add") > \
        value(a0, "antrea_agent_ovs_flow_ops_count", operation="add")
    assert value(a1, "antrea_agent_cni_request_duration_milliseconds_count", command="ADD", result="success") == \
        value(a0, "antrea_agent_cni_request_duration_milliseconds_count", command="ADD", result="success") + 1
    # the flow count is the flows OVS holds
    flows = [ln for ln in pyantrea("lab", "exec", "worker1", "--", "ovs-ofctl", "dump-flows", "br-int").stdout.splitlines()
             if "priority=" in ln]
    assert value(a1, "antrea_agent_ovs_total_flow_count") == len(flows)

    pol = tmp_path / "policy.yaml"
    pol.write_text(EXTRA_POLICY)
    pyantrea("lab", "apply", "-f", str(pol))
    assert _until(lambda: value(scrape(agent_sock("worker1")), "antrea_agent_networkpolicy_count") ==
                  value(a1, "antrea_agent_networkpolicy_count") + 1)
    a2, c2 = scrape(agent_sock("worker1")), scrape(CONTROLLER_SOCK)
    assert value(a2, "antrea_agent_ingress_networkpolicy_rule_count") == \
        value(a1, "antrea_agent_ingress_networkpolicy_rule_count") + 1
    assert value(a2, "antrea_agent_ovs_flow_count", table_id="90", table_name="IngressRule") > \
        value(a1, "antrea_agent_ovs_flow_count", table_id="90", table_name="IngressRule")
    assert value(c2, "antrea_controller_network_policy_processed") > value(c0, "antrea_controller_network_policy_processed")
    assert value(c2, "antrea_controller_applied_to_group_processed") > \
        value(c0, "antrea_controller_applied_to_group_processed")
    assert value(c2, "antrea_controller_network_policy_sync_duration_milliseconds_count") > \
        value(c0, "antrea_controller_network_policy_sync_duration_milliseconds_count")
    assert value(c2, "apiserver_watch_events_total", kind="NetworkPolicy") > \
        value(c0, "apiserver_watch_events_total", kind="NetworkPolicy")

    pyantrea("lab", "delete", "-f", str(pol))
    pyantrea("lab", "delete", "-f", str(pod))
    assert _until(lambda: value(scrape(agent_sock("worker1")), "antrea_agent_local_pod_count") == pods0)
    a3 = scrape(agent_sock("worker1"))
    assert value(a3, "antrea_agent_ovs_flow_ops_count", operation="delete") > \
        value(a2, "antrea_agent_ovs_flow_ops_count", operation="delete")
    assert value(a3, "antrea_agent_ovs_total_flow_count") == value(a0, "antrea_agent_ovs_total_flow_count")
    assert value(a3, "antrea_agent_networkpolicy_count") == value(a0, "antrea_agent_networkpolicy_count")


# ------------------------------------------------------------------------------------- antctl, live
def ovs_lines(node: str, *args: str) -> list[str]:
    out = pyantrea("lab", "exec", node, "--", "ovs-ofctl", "dump-flows", "br-int", *args).stdout
    return [ln for ln in out.splitlines() if "priority=" in ln]


def test_version_live(lab: Path) -> None:
    d = yaml.safe_load(antctl("version").stdout)
    assert set(d) == {"antctlVersion", "controllerVersion"}
    d = yaml.safe_load(antctl("version", "--node", "worker1").stdout)
    assert set(d) == {"antctlVersion", "controllerVersion", "agentVersion"}


def test_agentinfo_and_controllerinfo_live(lab: Path) -> None:
    rows = [ln.split() for ln in antctl("get", "agentinfo").stdout.splitlines()]
    assert rows[0][:3] == ["POD", "NODE", "STATUS"] and len(rows) == 4
    for r in rows[1:]:
        node = r[1]
        ifaces = json.loads(curl(agent_sock(node), "/v1/podinterfaces"))
        pols = json.loads(curl(agent_sock(node), "/v1/networkpolicies"))
        assert r[2] == "Healthy" and r[4] == str(len(pols)) and r[7] == str(len(ifaces)), r
    d = json.loads(antctl("get", "ai", "--node", "worker1", "-o", "json").stdout)
    assert {c["type"]: c["status"] for c in d["agentConditions"]} == {
        "AgentHealthy": "True", "ControllerConnectionUp": "True", "OVSDBConnectionUp": "True",
        "OpenflowConnectionUp": "True"}
    assert sum(d["ovsInfo"]["flowTable"].values()) == len(ovs_lines("worker1"))  # what OVS holds
    assert d["ovsInfo"]["flowTable"]["90"] == len(ovs_lines("worker1", "table=90"))
    assert d["ovsInfo"]["version"] and d["nodeSubnets"] == ["10.222.1.0/24"]
    rows = [ln.split() for ln in antctl("get", "controllerinfo").stdout.splitlines()]
    ctl_pols = json.loads(curl(CONTROLLER_SOCK, "/v1/networkpolicies"))
    assert rows[1][2:] == ["Healthy", str(len(ctl_pols)), str(len(json.loads(curl(CONTROLLER_SOCK, "/v1/addressgroups")))),
                           str(len(json.loads(curl(CONTROLLER_SOCK, "/v1/appliedtogroups")))), "3"]


def test_ovsflows_of_a_pod_a_policy_and_tables_live(lab: Path) -> None:
    ifaces = {i["podName"]: i for i in json.loads(curl(agent_sock("worker1"), "/v1/podinterfaces"))}
    fe = ifaces["frontend"]
    got = antctl("get", "ovsflows", "-p", "frontend", "-n", "default", "-o", "ofctl").stdout.splitlines()
    ovs = [ln.strip() for ln in ovs_lines("worker1", "--no-stats", "--names")]
    mine = [ln for ln in ovs if f'in_port="{fe["interfaceName"]}"' in ln or f"dl_dst={fe['mac']}" in ln
            or f"nw_dst={fe['ip']} " in ln]
    assert sorted(ln.strip() for ln in got) == sorted(mine) and len(got) == 5
    # -N: the flows of the policy's conj_ids in the agent's rules
    ids = {r["conjID"] for r in json.loads(curl(agent_sock("worker2"), "/v1/ofrules"))
           if r["policy"] == "default/backendpolicy"}
    got = antctl("get", "of", "-N", "backendpolicy", "-n", "default", "--node", "worker2", "-o", "ofctl").stdout
    ovs2 = [ln.strip() for ln in ovs_lines("worker2", "--no-stats", "--names")]
    want = [ln for ln in ovs2 if any(f"conj_id={i}," in ln or f"conjunction({i}," in ln for i in ids)]
    assert ids and sorted(ln.strip() for ln in got.splitlines()) == sorted(want)
    got = antctl("get", "of", "--node", "worker1", "-T", "50,60", "-o", "ofctl").stdout.splitlines()
    assert sorted(ln.strip() for ln in got) == sorted(
        ln for ln in ovs if re.search(r"\btable=(50|60),", ln))


def test_podinterface_node_column_live(lab: Path) -> None:
    rows = [ln.split() for ln in antctl("get", "podinterface").stdout.splitlines()]
    assert rows[0][-1] == "NODE"
    want = {(i["podNamespace"], i["podName"], n) for n in ("master", "worker1", "worker2")
            for i in json.loads(curl(agent_sock(n), "/v1/podinterfaces"))}
    assert {(r[0], r[1], r[-1]) for r in rows[1:]} == want


def test_policy_queries_live(lab: Path) -> None:
    rows = [ln.split() for ln in antctl("get", "netpol", "-p", "frontend", "-n", "default").stdout.splitlines()]
    assert [r[1] for r in rows[1:]] == ["frontendpolicy"]
    ep = json.loads(antctl("query", "endpoint", "-p", "backend1", "-o", "json").stdout)["endpoints"][0]
    assert [p["name"] for p in ep["policies"]] == ["backendpolicy"]
    assert [(r["policyref"]["name"], r["ruleindex"]) for r in ep["egressdstrules"]] == [("frontendpolicy", 1)]
    uids = {p["name"]: p["uid"] for p in json.loads(curl(CONTROLLER_SOCK, "/v1/networkpolicies"))}
    assert ep["policies"][0]["uid"] == uids["backendpolicy"]
    d = json.loads(antctl("query", "networkpolicyevaluation", "-S", "default/frontend", "-D", "default/backend2",
                          "-o", "json").stdout)
    assert d["verdict"] == "Delivered"
    assert [(r["networkPolicy"]["name"], r["ruleIndex"], r["direction"], r["action"]) for r in d["rules"]] == [
        ("frontendpolicy", 1, "Out", "Allow"), ("backendpolicy", 0, "In", "Allow")]
    # the conj_ids it names are the agents' own
    ids = {r["conjID"] for r in json.loads(curl(agent_sock("worker2"), "/v1/ofrules")) if r["policy"] == "default/backendpolicy"}
    assert d["rules"][1]["conjID"] in ids
