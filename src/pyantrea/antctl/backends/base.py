"""What antctl asks, answered offline (a cluster folder) or live (the lab). Same questions, same shapes.

The questions (`Backend`) and the answers that only need the cluster and the controller's state
(`ClusterQueries`); the backends are `offline.OfflineBackend` and `live.LabBackend`.
"""

from __future__ import annotations

from typing import Any, Protocol

from pyantrea import __version__
from pyantrea.agent.openflow import tables as T
from pyantrea.apis import controlplane as cp
from pyantrea.errors import InvalidArgument, NotFoundError
from pyantrea.k8s.cluster import Cluster
from pyantrea.ovs.flow import Flow
from pyantrea.ovs.trace import TraceResult, hop_flow

__all__ = ["Backend", "ClusterQueries", "TraceResult", "flow_json", "hop_flow"]


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
