"""The agent's Prometheus metrics (`GET /metrics` on agent.sock), named as Antrea's agent names them
(docs/prometheus-integration.md, "Antrea Agent Metrics").

Read at each scrape from the agent's state:
- antrea_agent_local_pod_count: Pods with an interface on this node (the interface store);
- antrea_agent_networkpolicy_count, antrea_agent_ingress_networkpolicy_rule_count,
  antrea_agent_egress_networkpolicy_rule_count: the NetworkPolicies (and their rules by direction)
  the agent received for its node (its rule cache);
- antrea_agent_ovs_flow_count{table_id,table_name}, antrea_agent_ovs_total_flow_count: the flows the
  agent installed on br-int, per table (its flow client's cache, as Antrea counts them);
- antrea_agent_conntrack_total_connection_count, antrea_agent_conntrack_antrea_connection_count
  (zone 65520), antrea_agent_conntrack_max_connection_count: the datapath's conntrack table
  (`dpctl/dump-conntrack`, `dpctl/ct-get-maxconns` of the node's ovs-vswitchd).

Counted as they happen:
- antrea_agent_ovs_flow_ops_count{operation}, antrea_agent_ovs_flow_ops_error_count{operation},
  antrea_agent_ovs_flow_ops_latency_milliseconds{operation}: every flow mod the agent sends, by
  operation (add, modify: an add over an installed flow, as OVS treats it; delete), and the time of
  each batch (one bundle) per operation it holds;
- antrea_agent_cni_request_duration_milliseconds{command,result}: pyantrea's addition (Antrea has no
  CNI metric): the agent's handling time of each CNI ADD/DEL/CHECK.
"""

from __future__ import annotations

import re
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from pyantrea.agent.openflow import tables as T
from pyantrea.metrics import Metrics, gauge
from pyantrea.ovs.ofctl import strip_actions

if TYPE_CHECKING:
    from pyantrea.agent.daemon import Agent

OPERATIONS = ("add", "modify", "delete")
_NOT_KEY = re.compile(r"(cookie|hard_timeout|idle_timeout)=")
_VERB = re.compile(r"^(add|modify|modify_strict|delete|delete_strict)\s+")
ANTREA_CT_ZONE = 65520


def flow_key(line: str) -> str:
    """A flow line's identity for OVS (table, priority, match): no actions, cookie or timeouts."""
    parts = strip_actions(line).replace(" ", ",").split(",")
    return ",".join(p for p in parts if p and not _NOT_KEY.match(p))


class FlowOps:
    """Classifies and counts the flow mods sent to one bridge: `installed` maps each flow's key to its
    line as last sent (an `add` over an installed key is a modify, as OVS applies it)."""

    def __init__(self, metrics: "AgentMetrics"):
        self.m = metrics
        self.installed: dict[str, int] = {}

    def classify(self, lines: Iterable[str]) -> Tally[str]:
        ops: Tally[str] = Tally()
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("flow "):
                line = line[5:].lstrip()
            elif line.startswith("group "):
                continue  # group mods are not flow operations
            m = _VERB.match(line)
            verb = m.group(1) if m else "add"
            body = line[m.end():] if m else line
            key = flow_key(body)
            if verb.startswith("delete"):
                ops["delete"] += 1
                self.installed.pop(key, None)
            elif verb.startswith("modify"):
                ops["modify"] += 1
                self.installed[key] = hash(body)
            else:
                ops["modify" if key in self.installed else "add"] += 1
                self.installed[key] = hash(body)
        return ops

    def replace(self, lines: Iterable[str]) -> Tally[str]:
        """`replace-flows`: the bridge becomes these flows; unchanged flows are no operation."""
        new = {flow_key(ln): hash(ln.strip()) for ln in lines if ln.strip() and not ln.strip().startswith("#")}
        ops: Tally[str] = Tally()
        for k, h in new.items():
            old = self.installed.get(k)
            if old is None:
                ops["add"] += 1
            elif old != h:
                ops["modify"] += 1
        ops["delete"] += sum(1 for k in self.installed if k not in new)
        self.installed = new
        return ops

    def timed(self, ops: Tally[str], call: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            res = call()
        except Exception:
            for op, n in ops.items():
                if n:
                    self.m.flow_op_errors.labels(op).inc()
            raise
        ms = (time.perf_counter() - t0) * 1000
        for op, n in ops.items():
            if n:
                self.m.flow_ops.labels(op).inc(n)
                self.m.flow_op_latency.labels(op).observe(ms)
        return res


def instrument_bridge(bridge: Any, metrics: "AgentMetrics") -> None:
    """Count and time the flow mods that go through `bridge` (an `OFBridge`): its change methods are
    wrapped on this instance; what they do is unchanged."""
    ops = FlowOps(metrics)

    def wrap(name: str, classify: Callable[[list[str]], Tally[str]]) -> None:
        orig = getattr(bridge, name)

        def method(lines: Iterable[str], *args: Any, **kw: Any) -> Any:
            lines = list(lines)
            return ops.timed(classify(lines), lambda: orig(lines, *args, **kw))

        setattr(bridge, name, method)

    wrap("add_flows", ops.classify)
    wrap("bundle", ops.classify)
    wrap("replace_flows", ops.replace)
    wrap("mod_flows", lambda lines: ops.classify(["modify " + ln for ln in lines]))
    wrap("del_flows_strict", lambda lines: ops.classify(["delete " + ln for ln in lines]))
    orig_del = bridge.del_flows

    def del_flows(match: str = "") -> Any:  # non-strict (the stale sweep): one operation
        return ops.timed(Tally({"delete": 1}), lambda: orig_del(match))

    bridge.del_flows = del_flows
    metrics.flow_ops_state = ops


class AgentMetrics:
    def __init__(self, agent: "Agent"):
        self.a = agent
        m = self.m = Metrics.new()
        self.flow_ops = m.counter("antrea_agent_ovs_flow_ops_count",
                                  "Number of OVS flow operations, partitioned by operation type (add, modify and "
                                  "delete).", ["operation"])
        self.flow_op_errors = m.counter("antrea_agent_ovs_flow_ops_error_count",
                                        "Number of OVS flow operation errors, partitioned by operation type (add, "
                                        "modify and delete).", ["operation"])
        self.flow_op_latency = m.histogram("antrea_agent_ovs_flow_ops_latency_milliseconds",
                                           "The latency of OVS flow operations, partitioned by operation type (add, "
                                           "modify and delete).", ["operation"])
        self.cni = m.histogram("antrea_agent_cni_request_duration_milliseconds",
                               "The time the agent took to handle a CNI request, partitioned by command (ADD, DEL, "
                               "CHECK) and result (success, error). pyantrea's addition.", ["command", "result"])
        for op in OPERATIONS:  # every operation shows from the start, at 0
            self.flow_ops.labels(op)
            self.flow_op_errors.labels(op)
        self.flow_ops_state: FlowOps | None = None
        m.add_state(self._pods, self._policies, self._flows, self._conntrack)

    def text(self) -> str:
        return self.m.text()

    def cni_request(self, command: str, seconds: float, ok: bool) -> None:
        self.cni.labels(command, "success" if ok else "error").observe(seconds * 1000)

    # ------------------------------------------------------------------------------ state
    def _pods(self) -> Iterator[Any]:
        yield gauge("antrea_agent_local_pod_count",
                    "Number of Pods on local Node which are managed by the Antrea Agent.",
                    samples=[((), len(self.a.ifstore.all()))])

    def _policies(self) -> Iterator[Any]:
        view = self.a.rules.view()
        dirs = Tally(r.direction for p in view.policies for r in p.rules)
        yield gauge("antrea_agent_networkpolicy_count",
                    "Number of NetworkPolicies on local Node which are managed by the Antrea Agent.",
                    samples=[((), len(view.policies))])
        yield gauge("antrea_agent_ingress_networkpolicy_rule_count",
                    "Number of ingress NetworkPolicy rules on local Node which are managed by the Antrea Agent.",
                    samples=[((), dirs["In"])])
        yield gauge("antrea_agent_egress_networkpolicy_rule_count",
                    "Number of egress NetworkPolicy rules on local Node which are managed by the Antrea Agent.",
                    samples=[((), dirs["Out"])])

    def _flows(self) -> Iterator[Any]:
        flows = getattr(self.a, "flows", None)
        if flows is None:  # not initialized yet
            return
        with flows.lock:
            per = Tally(f.table for fam in flows.families.values() for f in fam.values())
        yield gauge("antrea_agent_ovs_flow_count",
                    "Flow count for each OVS flow table. The TableID and TableName are used as labels.",
                    ["table_id", "table_name"],
                    [((str(t), T.table_name(t, self.a.proxy_enabled)), n) for t, n in sorted(per.items())])
        yield gauge("antrea_agent_ovs_total_flow_count", "Total flow count of all OVS flow tables.",
                    samples=[((), sum(per.values()))])

    def _conntrack(self) -> Iterator[Any]:
        from pyantrea.ovs.unixctl import Unixctl

        ctl = self.a.ovs_rundir / "ovs-vswitchd.ctl"
        if not ctl.exists():
            return
        with Unixctl(ctl, timeout=5) as u:
            conns = [ln for ln in u.call("dpctl/dump-conntrack", []).splitlines() if ln.strip()]
            maxconns = u.call("dpctl/ct-get-maxconns", []).strip()
        antrea = sum(1 for ln in conns if re.search(rf"\bzone={ANTREA_CT_ZONE}\b", ln))
        yield gauge("antrea_agent_conntrack_total_connection_count",
                    "Number of connections in the conntrack table.", samples=[((), len(conns))])
        yield gauge("antrea_agent_conntrack_antrea_connection_count",
                    "Number of connections in the Antrea ZoneID of the conntrack table.", samples=[((), antrea)])
        if maxconns.isdigit():
            yield gauge("antrea_agent_conntrack_max_connection_count", "Size of the conntrack table.",
                        samples=[((), int(maxconns))])
