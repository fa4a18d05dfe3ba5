"""antctl --cluster DIR: the offline backend (the compiler's flows, traces in private OVS sandboxes)."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from pyantrea.agent.tracepacket import build_flow
from pyantrea.antctl.backends.base import ClusterQueries, flow_json, group_json
from pyantrea.errors import NotFoundError
from pyantrea.ovs.flow import Flow
from pyantrea.ovs.trace import TraceResult

__all__ = ["OfflineBackend"]


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

    def _flows(self, node: str, table: int | None, pod: str | None = None) -> list[Flow]:
        flows = list(self.offline.node_flows(node).flows)
        if pod is not None:  # the Pod's interface flows (the agent's pod/<interface> family)
            from pyantrea.agent.openflow.pipeline import FlowBuilder
            from pyantrea.offline import pipeline_config

            ns, _, name = pod.rpartition("/")
            iface = next((i for i in self.cluster.network(node).interfaces
                          if i.namespace == (ns or "default") and i.pod == name), None)
            if iface is None:
                raise NotFoundError(f"Pod {ns or 'default'}/{name} has no interface on node {node}")
            own = {f.dump_text() for f in FlowBuilder(self.cluster.network(node),
                                                      pipeline_config(self.cluster)).pod_flows(iface)}
            flows = [f for f in flows if f.dump_text() in own]
        return [f for f in flows if table is None or f.table == table]

    def ovsflows_ofctl(self, node: str, table: int | None, pod: str | None = None) -> list[str]:
        return [f.dump_text() for f in self._flows(node, table, pod)]

    def ovsflows_of13(self, node: str, table: int | None, pod: str | None = None) -> list[str]:
        return [f.of13_text() for f in self._flows(node, table, pod)]

    def ovsflows_json(self, node: str, table: int | None, pod: str | None = None) -> list[dict[str, Any]]:
        return [flow_json(f) for f in self._flows(node, table, pod)]

    # ---------------------------------------------------------------- agentinfo / controllerinfo
    def agentinfo(self, node: str | None) -> list[dict[str, Any]]:
        """What the folder says each node's agent would report: its subnet, its compiled flows per
        table, the policies and groups its span holds, its Pods (no conditions: no agent runs)."""
        from collections import Counter

        from pyantrea import __version__

        out = []
        for n in [node] if node else self.node_names():
            net = self.cluster.network(n)
            view = self.policy_state().node_view(n)
            tables = Counter(f.table for f in self.offline.node_flows(n).flows)
            out.append({"version": f"v{__version__}", "podRef": self.antrea_pod("antrea-agent", n),
                        "nodeRef": {"kind": "Node", "name": n}, "nodeSubnets": [net.pod_cidr] if net.pod_cidr else [],
                        "ovsInfo": {"bridgeName": self.cluster.config.ovs_bridge,
                                    "flowTable": {str(t): c for t, c in sorted(tables.items())}},
                        "networkPolicyControllerInfo": {"networkPolicyNum": len(view.policies),
                                                        "addressGroupNum": len(view.address_groups),
                                                        "appliedToGroupNum": len(view.applied_to_groups)},
                        "localPodNum": len(net.interfaces)})
        return out

    def controllerinfo(self) -> dict[str, Any]:
        from pyantrea import __version__

        st = self.policy_state()
        pod = self.antrea_pod("antrea-controller")
        node = next((p.node_name for p in self.cluster.pods if pod and p.namespace == pod["namespace"]
                     and p.name == pod["name"]), None)
        return {"version": f"v{__version__}", "podRef": pod, "nodeRef": {"kind": "Node", "name": node} if node else {},
                "networkPolicyControllerInfo": {"networkPolicyNum": len(st.policies),
                                                "addressGroupNum": len(st.address_groups),
                                                "appliedToGroupNum": len(st.applied_to_groups)},
                "connectedAgentNum": 0}

    def ovsgroups(self, node: str, ids: list[int] | None) -> list[dict[str, Any]]:
        groups = self.offline.node_flows(node).groups
        return [group_json(g.dump_text()) for g in groups if ids is None or g.group_id in ids]

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

        # What a sandbox's start imports is imported here, in this thread: the Python `ovs` package
        # imports eventlet (greenlet), and a worker thread that first imports greenlet never finishes
        # exiting, so the pool's shutdown would wait for it forever.
        import pyantrea.agent.bridge  # noqa: F401
        import pyantrea.ovs.sandbox  # noqa: F401
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
