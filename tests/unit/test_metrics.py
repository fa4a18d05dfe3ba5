"""Prometheus metrics (issue 13 item 4): Antrea's names, a registry per component, values that move.

The controller runs in-process on a unix socket and is scraped with the real `curl --unix-socket`;
the agent's collectors are checked against a stand-in agent (the live agent's endpoint is scraped in
tests/lab/test_observability.py)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pyantrea.agent.metrics import AgentMetrics, FlowOps, flow_key, instrument_bridge
from pyantrea.apis import controlplane as cp
from pyantrea.controller.controlplane import ControlPlane
from pyantrea.controller.server import build_router, open_store
from pyantrea.httpapi import APIClient, UnixHTTPServer
from pyantrea.metrics import Metrics, parse, value

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"
CURL = shutil.which("curl")

ALLOW_DNS = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-dns, namespace: default}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {role: frontend}}}]
    ports: [{protocol: UDP, port: 53}]
"""


@pytest.fixture
def controller():
    d = Path(tempfile.mkdtemp(prefix="pa-"))
    store = open_store(SEED, d / "state")
    server = UnixHTTPServer(str(d / "c.sock"), build_router(store, ControlPlane(store)))
    server.serve_in_thread()
    yield d / "c.sock"
    server.close()
    shutil.rmtree(d, ignore_errors=True)


def scrape(sock: Path) -> tuple[str, dict[str, Any]]:
    if CURL is not None:  # as a user (or Prometheus through a socket proxy) would
        p = subprocess.run([CURL, "-s", "-i", "--unix-socket", str(sock), "http://localhost/metrics"],
                           capture_output=True, text=True, timeout=30, check=True)
        head, _, body = p.stdout.replace("\r\n", "\n").partition("\n\n")
        assert "Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    else:
        body = APIClient(str(sock)).get("/metrics")
    return body, parse(body)


CONTROLLER_NAMES = [
    "antrea_controller_network_policy_processed", "antrea_controller_address_group_processed",
    "antrea_controller_applied_to_group_processed", "antrea_controller_network_policy_sync_duration_milliseconds",
    "antrea_controller_address_group_sync_duration_milliseconds",
    "antrea_controller_applied_to_group_sync_duration_milliseconds",
    "antrea_controller_length_network_policy_queue", "antrea_controller_length_address_group_queue",
    "antrea_controller_length_applied_to_group_queue", "apiserver_watch_events_total", "process_cpu_seconds_total",
    "process_resident_memory_bytes", "process_open_fds",
]


def test_controller_metrics_have_antreas_names_and_move_with_a_policy(controller: Path) -> None:
    text, m0 = scrape(controller)
    for name in CONTROLLER_NAMES:
        assert f"\n# TYPE {name} " in text, name
    # Antrea's counters carry no _total suffix (the Go client's names), and there is no _created series
    assert "# TYPE antrea_controller_network_policy_processed counter\n" in text
    assert "antrea_controller_network_policy_processed_total" not in text and "_created" not in text
    # the seed's first computation: 2 policies, their AppliedToGroups and AddressGroups
    assert value(m0, "antrea_controller_network_policy_processed") == 2
    assert value(m0, "antrea_controller_applied_to_group_processed") >= 2
    assert value(m0, "antrea_controller_address_group_processed") >= 1
    assert value(m0, "antrea_controller_network_policy_sync_duration_milliseconds_count") == 1

    c = APIClient(str(controller), timeout=10)
    v0 = c.get("/v1/controlplane/list?node=worker1")
    got: dict[str, Any] = {}
    t = threading.Thread(target=lambda: got.update(c.get(
        f"/v1/controlplane/watch?node=worker1&resourceVersion={v0['resourceVersion']}&epoch={v0['epoch']}&timeout=10")))
    t.start()
    c.post("/v1/apply?file=allow-dns.yaml", ALLOW_DNS)
    t.join(15)
    assert got["events"]

    _, m1 = scrape(controller)
    assert value(m1, "antrea_controller_network_policy_processed") == 3
    assert value(m1, "antrea_controller_applied_to_group_processed") > value(m0, "antrea_controller_applied_to_group_processed")
    assert value(m1, "antrea_controller_network_policy_sync_duration_milliseconds_count") == 2
    assert value(m1, "antrea_controller_network_policy_sync_duration_milliseconds_sum") > \
        value(m0, "antrea_controller_network_policy_sync_duration_milliseconds_sum")
    sent = sum(1 for e in got["events"] if e["kind"] == "NetworkPolicy")
    assert value(m1, "apiserver_watch_events_total", kind="NetworkPolicy") == sent >= 1
    assert value(m1, "antrea_controller_length_network_policy_queue") == 0


def test_each_component_has_its_own_registry() -> None:
    a, b = Metrics.new(), Metrics.new()
    ca = a.counter("antrea_agent_ovs_flow_ops_count", "x", ["operation"])
    b.counter("antrea_agent_ovs_flow_ops_count", "x", ["operation"])  # the same name twice: no clash
    ca.labels("add").inc(5)
    assert value(parse(a.text()), "antrea_agent_ovs_flow_ops_count", operation="add") == 5
    assert value(parse(b.text()), "antrea_agent_ovs_flow_ops_count", operation="add") == 0


# ------------------------------------------------------------------------------------- the agent's
class FakeBridge:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, list[str]]] = []
        self.fail = fail

    def _do(self, verb: str, lines: Any) -> None:
        if self.fail:
            raise RuntimeError("ovs-ofctl failed")
        self.sent.append((verb, list(lines)))

    def add_flows(self, lines: Any) -> None:
        self._do("add", lines)

    def bundle(self, lines: Any) -> None:
        self._do("bundle", lines)

    def replace_flows(self, lines: Any) -> None:
        self._do("replace", lines)

    def mod_flows(self, lines: Any, strict: bool = True) -> None:
        self._do("mod", lines)

    def del_flows_strict(self, lines: Any) -> None:
        self._do("del", lines)

    def del_flows(self, match: str = "") -> None:
        self._do("delall", [match])

    def group_ids(self) -> list[int]:
        return []


def fake_agent() -> Any:
    from pyantrea.agent.openflow.client import FlowClient

    pol = cp.NetworkPolicy("uid", "default", "p", (cp.NetworkPolicyRule("In"), cp.NetworkPolicyRule("In"),
                                                   cp.NetworkPolicyRule("Out")), ("atg",))
    a = SimpleNamespace(ifstore=SimpleNamespace(all=lambda: [1, 2, 3]),
                        rules=SimpleNamespace(view=lambda: cp.NodePolicyView("worker1", (pol,), {}, {})),
                        proxy_enabled=False, ovs_rundir=Path("/nonexistent"))
    a.metrics = AgentMetrics(a)  # type: ignore[arg-type]
    bridge = FakeBridge()
    instrument_bridge(bridge, a.metrics)
    a.flows = FlowClient(bridge)  # type: ignore[arg-type]
    return a


def test_flow_ops_are_counted_by_operation_with_latency() -> None:
    from pyantrea.agent.openflow.pipeline import FlowBuilder, PipelineConfig
    from pyantrea.offline import OfflineCluster

    a = fake_agent()
    net = OfflineCluster.load(str(SEED)).cluster.network("worker1")
    b = FlowBuilder(net, PipelineConfig())
    fixed = b.fixed_flows()
    pod = b.pod_flows(net.interfaces[0])
    a.flows.reset({"fixed": fixed})  # replace-flows: all new
    m = parse(a.metrics.text())
    assert value(m, "antrea_agent_ovs_flow_ops_count", operation="add") == len(fixed)
    assert value(m, "antrea_agent_ovs_total_flow_count") == len(fixed)
    a.flows.update({"pod/x": pod})  # a Pod's flows added
    a.flows.update({"pod/x": None})  # and removed
    m = parse(a.metrics.text())
    assert value(m, "antrea_agent_ovs_flow_ops_count", operation="add") == len(fixed) + len(pod)
    assert value(m, "antrea_agent_ovs_flow_ops_count", operation="delete") == len(pod)
    assert value(m, "antrea_agent_ovs_flow_ops_count", operation="modify") == 0
    assert value(m, "antrea_agent_ovs_flow_ops_latency_milliseconds_count", operation="add") == 2
    assert value(m, "antrea_agent_ovs_flow_ops_latency_milliseconds_count", operation="delete") == 1
    # per table, with Antrea's table names
    per = {dict(k)["table_id"]: (dict(k)["table_name"], v) for k, v in m["antrea_agent_ovs_flow_count"].items()}
    assert per["10"][0] == "SpoofGuard" and sum(v for _, v in per.values()) == len(fixed)
    # the same flow with other actions: a modify
    import dataclasses

    changed = dataclasses.replace(fixed[-1], cookie=fixed[-1].cookie + 1)
    a.flows.update({"fixed": fixed[:-1] + [changed]})
    m = parse(a.metrics.text())
    assert value(m, "antrea_agent_ovs_flow_ops_count", operation="modify") == 1
    # state gauges
    assert value(m, "antrea_agent_local_pod_count") == 3
    assert value(m, "antrea_agent_networkpolicy_count") == 1
    assert value(m, "antrea_agent_ingress_networkpolicy_rule_count") == 2
    assert value(m, "antrea_agent_egress_networkpolicy_rule_count") == 1


def test_failed_flow_ops_count_as_errors() -> None:
    a = SimpleNamespace(ifstore=SimpleNamespace(all=lambda: []), proxy_enabled=False,
                        rules=SimpleNamespace(view=lambda: cp.NodePolicyView("w", (), {}, {})),
                        ovs_rundir=Path("/nonexistent"))
    metrics = AgentMetrics(a)  # type: ignore[arg-type]
    bridge = FakeBridge(fail=True)
    instrument_bridge(bridge, metrics)
    with pytest.raises(RuntimeError):
        bridge.add_flows(["add table=0,priority=1,actions=drop", "delete_strict table=0,priority=2"])
    m = parse(metrics.text())
    assert value(m, "antrea_agent_ovs_flow_ops_error_count", operation="add") == 1
    assert value(m, "antrea_agent_ovs_flow_ops_error_count", operation="delete") == 1
    assert value(m, "antrea_agent_ovs_flow_ops_count") == 0
    metrics.cni_request("ADD", 0.012, True)
    m = parse(metrics.text())
    assert value(m, "antrea_agent_cni_request_duration_milliseconds_count", command="ADD", result="success") == 1


def test_flow_keys_ignore_cookie_timeouts_and_actions() -> None:
    assert flow_key("cookie=0x1,table=10,hard_timeout=5,priority=200,ip,in_port=3 actions=drop") == \
        flow_key("table=10,priority=200,ip,in_port=3")
    ops = FlowOps(SimpleNamespace())  # type: ignore[arg-type]
    assert ops.classify(["flow add table=1,priority=2,ip,actions=drop", "group add group_id=1,type=select"]) == \
        {"add": 1}
    assert ops.classify(["add cookie=0x5,table=1,priority=2,ip,actions=resubmit(,3)"]) == {"modify": 1}
    assert ops.classify(["delete_strict table=1,priority=2,ip"]) == {"delete": 1}
