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
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
