"""What antctl asks, answered offline (a cluster folder) or live (the lab). Same questions, same shapes."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pyantrea import __version__
from pyantrea.agent.openflow import tables as T
from pyantrea.agent.tracepacket import build_flow
from pyantrea.apis import controlplane as cp
from pyantrea.errors import InvalidArgument, NotFoundError
from pyantrea.k8s.cluster import Cluster
from pyantrea.ovs.flow import Flow
from pyantrea.ovs.trace import Trace


@dataclass(frozen=True)
class TraceResult:
    node: str
    flow: str
    text: str
    trace: Trace | None
    port_names: dict[int, str]
    tunnel_ofport: int

    def as_json(self) -> dict[str, Any]:
        t = self.trace
        if t is None:
            return {"node": self.node, "hops": [], "verdict": "drop", "out_port": None, "tun_dst": None,
                    "error": self.text.strip()}
        out_port = self.port_names.get(t.out_port, str(t.out_port)) if t.out_port is not None else None
        tun = t.tun_dst if t.out_port == self.tunnel_ofport else None
        return {
            "node": self.node,
            "hops": [{"table": h.table, "priority": h.priority, "flow": hop_flow(h)} for h in t.hops],
            "verdict": t.verdict,
            "out_port": out_port,
            "tun_dst": tun,
        }


def hop_flow(h: Any) -> str:
    """A matched flow as one line: `priority=P[,match] actions=...` (ports numeric, as in the trace)."""
    head = f"priority={h.priority}" + (f",{h.match}" if h.match else "")
    acts = h.flow_actions
    return head + " actions=" + (",".join(acts) if acts else "drop")


class Backend(Protocol):
    def version(self) -> dict[str, str]: ...
    def pick_node(self, node: str | None) -> str: ...
    def resolve_table(self, spec: str) -> int: ...
    def ovsflows_ofctl(self, node: str, table: int | None) -> list[str]: ...
    def ovsflows_of13(self, node: str, table: int | None) -> list[str]: ...
    def ovsflows_json(self, node: str, table: int | None) -> list[dict[str, Any]]: ...
    def networkpolicies(self, node: str | None, name: str | None, ns: str | None) -> list[cp.NetworkPolicy]: ...
    def appliedtogroups(self, node: str | None, name: str | None) -> list[cp.AppliedToGroup]: ...
    def addressgroups(self, node: str | None, name: str | None) -> list[cp.AddressGroup]: ...
    def podinterfaces(self, node: str | None, name: str | None, ns: str | None) -> list[dict[str, Any]]: ...
    def trace_packet(self, node: str, port: str | None, source: str | None, destination: str | None,
                     flow: str, ct_next: list[str]) -> TraceResult: ...


def flow_json(f: Flow) -> dict[str, Any]:
    return {"table": f.table, "priority": f.priority, "cookie": f"0x{f.cookie:x}",
            "match": ",".join(f.match.dump_parts(True)), "actions": f.of13_text(stats=None).split(" actions=", 1)[1],
            "flow": f.dump_text().strip()}


def _filter_name(objs: list[Any], name: str | None, kind: str) -> list[Any]:
    if name is None:
        return objs
    got = [o for o in objs if o.name == name]
    if not got:
        raise NotFoundError(f"{kind} {name!r} not found")
    return got


class ClusterQueries:
    """Answers that only need the cluster and the controller's state (shared by offline and lab)."""

    cluster: Cluster

    def policy_state(self) -> Any:
        raise NotImplementedError

    def version(self) -> dict[str, str]:
        return {"controllerVersion": f"v{__version__}"}

    def pick_node(self, node: str | None) -> str:
        names = [n.name for n in self.cluster.nodes]
        if node is None:
            raise InvalidArgument(f"this command is per node: give --node (nodes: {', '.join(names)})")
        self.cluster.node(node)
        return node

    def resolve_table(self, spec: str) -> int:
        return T.ARTICLE.resolve(spec)

    def networkpolicies(self, node: str | None, name: str | None, ns: str | None) -> list[cp.NetworkPolicy]:
        st = self.policy_state()
        if node is not None:
            self.cluster.node(node)
            pols = list(st.node_view(node).policies)
        else:
            pols = [p for _, p in sorted(st.policies.items())]
        if ns is not None:
            pols = [p for p in pols if p.namespace == ns]
        return _filter_name(pols, name, "networkpolicy")

    def appliedtogroups(self, node: str | None, name: str | None) -> list[cp.AppliedToGroup]:
        st = self.policy_state()
        if node is not None:
            self.cluster.node(node)
            groups = [g for _, g in sorted(st.node_view(node).applied_to_groups.items())]
        else:
            groups = [g for _, g in sorted(st.applied_to_groups.items())]
        return _filter_name(groups, name, "appliedtogroup")

    def addressgroups(self, node: str | None, name: str | None) -> list[cp.AddressGroup]:
        st = self.policy_state()
        if node is not None:
            self.cluster.node(node)
            groups = [g for _, g in sorted(st.node_view(node).address_groups.items())]
        else:
            groups = [g for _, g in sorted(st.address_groups.items())]
        return _filter_name(groups, name, "addressgroup")


class OfflineBackend(ClusterQueries):
    """antctl --cluster DIR: flows from the compiler; traces in a private dummy-datapath OVS per node."""

    def __init__(self, path: str):
        from pyantrea.offline import OfflineCluster

        self.offline = OfflineCluster.load(path)
        self.cluster = self.offline.cluster
        self._stack = contextlib.ExitStack()
        self._sandboxes: dict[str, Any] = {}

    def policy_state(self) -> Any:
        return self.offline.policy_state

    def close(self) -> None:
        self._stack.close()

    def _flows(self, node: str, table: int | None) -> list[Flow]:
        flows = list(self.offline.node_flows(node).flows)
        return [f for f in flows if table is None or f.table == table]

    def ovsflows_ofctl(self, node: str, table: int | None) -> list[str]:
        return [f.dump_text() for f in self._flows(node, table)]

    def ovsflows_of13(self, node: str, table: int | None) -> list[str]:
        return [f.of13_text() for f in self._flows(node, table)]

    def ovsflows_json(self, node: str, table: int | None) -> list[dict[str, Any]]:
        return [flow_json(f) for f in self._flows(node, table)]

    def podinterfaces(self, node: str | None, name: str | None, ns: str | None) -> list[dict[str, Any]]:
        nets = [self.cluster.network(node)] if node else list(self.cluster.networks)
        out = []
        for net in nets:
            for i in net.interfaces:
                if (name is None or i.pod == name) and (ns is None or i.namespace == ns):
                    out.append({"podNamespace": i.namespace, "podName": i.pod, "interfaceName": i.interface,
                                "ip": i.ip, "mac": i.mac,
                                "portUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pyantrea:{net.name}:{i.interface}")),
                                "ofPort": i.ofport, "containerID": i.container_id, "node": net.name})
        if name is not None and not out:
            raise NotFoundError(f"podinterface {name!r} not found")
        return out

    def sandbox(self, node: str) -> Any:
        """A started dummy-datapath OVS holding `node`'s ports and flows (kept for this backend's life)."""
        if node not in self._sandboxes:
            from pyantrea.offline import NodeSandbox

            sb = NodeSandbox(self.offline, node)
            self._stack.enter_context(sb)
            self._sandboxes[node] = sb
        return self._sandboxes[node]

    def trace_packet(self, node: str, port: str | None, source: str | None, destination: str | None,
                     flow: str, ct_next: list[str]) -> TraceResult:
        text_flow = build_flow(self.cluster, node, port, source, destination, flow)
        sb = self.sandbox(node)
        return sb.trace(text_flow, ct_next)

    # ---------------------------------------------------------------- traceflow / reachability (issue 4)
    def node_network(self, node: str) -> Any:
        """The node's br-int ports as the compiler sees them (gateway, tunnel, Pod interfaces)."""
        return self.cluster.network(node)

    def policy_rules(self, node: str) -> list[Any]:
        """The node's OpenFlow policy rules (conj_id -> policy and rule), as its flows were compiled."""
        return list(self.offline.node_flows(node).rules)

    def kube_proxy_rules(self, node: str) -> Any:
        """kube-proxy's iptables rules on the node: the model the lab programs (pyantrea/kubeproxy/)."""
        from pyantrea.kubeproxy import build_rules

        return build_rules(self.cluster, node)

    def start_sandboxes(self, nodes: list[str]) -> None:
        """Start several nodes' sandboxes at once (each is its own ovsdb-server + ovs-vswitchd)."""
        from concurrent.futures import ThreadPoolExecutor

        from pyantrea.offline import NodeSandbox

        todo = [n for n in nodes if n not in self._sandboxes]
        if not todo:
            return
        sbs = {n: NodeSandbox(self.offline, n) for n in todo}
        with ThreadPoolExecutor(max_workers=len(todo)) as ex:
            futs = {n: ex.submit(sb.start) for n, sb in sbs.items()}
            errors = []
            for n, f in futs.items():
                try:
                    f.result()
                    self._stack.callback(sbs[n].stop)
                    self._sandboxes[n] = sbs[n]
                except Exception as e:  # noqa: BLE001 - reported below, after the others are registered
                    errors.append(e)
        if errors:
            raise errors[0]


@contextlib.contextmanager
def backend_for(cluster_dir: str | None, lab_dir: str | None = None) -> Iterator[Backend]:
    if cluster_dir:
        b = OfflineBackend(cluster_dir)
        try:
            yield b
        finally:
            b.close()
        return
    from pyantrea.antctl.backends.live import LabBackend  # the live lab

    lb = LabBackend(lab_dir)
    try:
        yield lb
    finally:
        lb.close()
