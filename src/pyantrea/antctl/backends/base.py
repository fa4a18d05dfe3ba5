"""What antctl asks, answered offline (a cluster folder) or live (the lab). Same questions, same shapes.

The questions (`Backend`) and the answers that only need the cluster and the controller's state
(`ClusterQueries`); the backends are `offline.OfflineBackend` and `live.LabBackend`.
"""

from __future__ import annotations

from typing import Any, Protocol

from pyantrea.agent.openflow import tables as T
from pyantrea.apis import controlplane as cp
from pyantrea.errors import InvalidArgument, NotFoundError
from pyantrea.k8s.cluster import Cluster
from pyantrea.ovs.flow import Flow
from pyantrea.ovs.trace import TraceResult, hop_flow

__all__ = ["Backend", "ClusterQueries", "TraceResult", "flow_json", "hop_flow"]


class Backend(Protocol):
    def version(self, node: str | None = None) -> dict[str, str]: ...
    def pick_node(self, node: str | None) -> str: ...
    def resolve_table(self, spec: str) -> int: ...
    def ovsflows_ofctl(self, node: str, table: int | None, pod: str | None = None) -> list[str]: ...
    def ovsflows_of13(self, node: str, table: int | None, pod: str | None = None) -> list[str]: ...
    def ovsflows_json(self, node: str, table: int | None, pod: str | None = None) -> list[dict[str, Any]]: ...
    def policy_rules(self, node: str) -> list[Any]: ...
    def pod_node(self, ns: str, name: str) -> str: ...
    def agentinfo(self, node: str | None) -> list[dict[str, Any]]: ...
    def controllerinfo(self) -> dict[str, Any]: ...
    def query_endpoint(self, ns: str, name: str) -> dict[str, Any]: ...
    def node_names(self) -> list[str]: ...
    def ovsgroups(self, node: str, ids: list[int] | None) -> list[dict[str, Any]]: ...
    def networkpolicies(self, node: str | None, name: str | None, ns: str | None) -> list[cp.NetworkPolicy]: ...
    def tiers(self, name: str | None = None) -> list[Any]: ...
    def appliedtogroups(self, node: str | None, name: str | None) -> list[cp.AppliedToGroup]: ...
    def addressgroups(self, node: str | None, name: str | None) -> list[cp.AddressGroup]: ...
    def podinterfaces(self, node: str | None, name: str | None, ns: str | None) -> list[dict[str, Any]]: ...
    def trace_packet(self, node: str, port: str | None, source: str | None, destination: str | None,
                     flow: str, ct_next: list[str]) -> TraceResult: ...


def flow_json(f: Flow) -> dict[str, Any]:
    return {"table": f.table, "priority": f.priority, "cookie": f"0x{f.cookie:x}",
            "match": ",".join(f.match.dump_parts(True)), "actions": f.of13_text(stats=None).split(" actions=", 1)[1],
            "flow": f.dump_text().strip()}


def group_json(line: str, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """One `dump-groups` line (OpenFlow 1.3) as JSON: id, type, buckets (weight, actions, and with
    `stats` each bucket's packet and byte counters)."""
    body = line.strip()
    head, _, rest = body.partition(",bucket=")
    fields = dict(kv.split("=", 1) for kv in head.split(",") if "=" in kv)
    buckets = []
    for i, b in enumerate(("bucket=" + rest).split(",bucket=") if rest else []):
        b = b.removeprefix("bucket=")
        weight, _, actions = b.partition(",actions=")
        d: dict[str, Any] = {"weight": int(weight.removeprefix("weight:")), "actions": actions}
        if stats is not None and i < len(stats.get("buckets", [])):
            d["packets"], d["bytes"] = stats["buckets"][i]
        buckets.append(d)
    out: dict[str, Any] = {"groupID": int(fields.get("group_id", -1)), "type": fields.get("type", ""),
                           "buckets": buckets, "group": body}
    if stats is not None:
        out["packets"], out["bytes"] = stats.get("packets", 0), stats.get("bytes", 0)
    return out


def parse_group_ids(spec: str) -> list[int] | None:
    """antctl's -G: `all` (None) or comma-separated group ids."""
    if spec.strip().lower() == "all":
        return None
    try:
        ids = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise InvalidArgument(f"-G/--groups {spec!r}: comma-separated group ids or 'all'") from None
    if not ids or any(i < 0 for i in ids):
        raise InvalidArgument(f"-G/--groups {spec!r}: comma-separated group ids or 'all'")
    return ids


def rule_summary(index: int, r: cp.NetworkPolicyRule) -> dict[str, Any]:
    """A controlplane rule in words: direction, peers (AddressGroups, ipBlocks) and ports."""
    peer = r.peer
    peers = [f"addressGroup {g}" for g in peer.address_groups] + \
        [f"ipBlock {b.cidr}" + (f" except {','.join(b.except_)}" if b.except_ else "") for b in peer.ip_blocks]
    ports = "any" if r.services is None else ",".join(
        f"{s.protocol}/{s.port if s.port is not None else '*'}" + (f"-{s.end_port}" if s.end_port else "")
        for s in r.services) or "none"
    if not peers and r.services is None:  # policyTypes names the direction, no rule of it: isolation only
        return {"index": index, "direction": r.direction, "peers": ["none"], "ports": "none", "action": "Isolate"}
    return {"index": index, "direction": r.direction, "peers": peers or ["none"], "ports": ports, "action": r.action}


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

    def version(self, node: str | None = None) -> dict[str, str]:
        """The versions of the components antctl reached (none offline: there is no controller or agent)."""
        return {}

    def node_names(self) -> list[str]:
        return [n.name for n in self.cluster.nodes]

    def pod_node(self, ns: str, name: str) -> str:
        """The node a Pod runs on (antctl get ovsflows -p without --node)."""
        p = self.cluster.pod(ns, name)
        if not p.node_name:
            raise InvalidArgument(f"Pod {ns}/{name} is not scheduled on a node")
        return p.node_name

    def antrea_pod(self, component: str, node: str | None = None) -> dict[str, str]:
        """The kube-system Pod of an Antrea component (label component=antrea-agent|antrea-controller) as
        an object reference, when the cluster has one (the seed's DaemonSet and Deployment Pods)."""
        for p in self.cluster.pods:
            if p.namespace == "kube-system" and dict(p.labels).get("component") == component and \
                    (node is None or p.node_name == node):
                return {"kind": "Pod", "namespace": p.namespace, "name": p.name}
        return {}

    def query_endpoint(self, ns: str, name: str) -> dict[str, Any]:
        """antctl query endpoint: the policies applied to the Pod (its AppliedToGroups) and the rules that
        select it as a peer (its AddressGroups): an ingress rule's source, an egress rule's destination.
        Antrea's EndpointQueryResponse fields, and each rule's peers and ports (pyantrea's addition)."""
        self.cluster.pod(ns, name)  # NotFound for an unknown Pod
        st = self.policy_state()
        key = f"{ns}/{name}"
        atgs = {g.name for g in st.applied_to_groups.values() if any(p.key == key for p in g.pods)}
        ags = {g.name for g in st.address_groups.values() if any(p.key == key for p in g.pods)}
        applied: list[dict[str, Any]] = []
        ingress: list[dict[str, Any]] = []
        egress: list[dict[str, Any]] = []
        for _, pol in sorted(st.policies.items()):
            ref = {"type": pol.short_type, "namespace": pol.namespace, "name": pol.name, "uid": pol.uid}
            if atgs & set(pol.applied_to_groups):
                applied.append({**ref, "rules": [rule_summary(i, r) for i, r in enumerate(pol.rules)]})
            for i, r in enumerate(pol.rules):
                if not ags & set(r.peer.address_groups):
                    continue
                entry = {"policyref": ref, "direction": r.direction, "ruleindex": i, **rule_summary(i, r)}
                (ingress if r.direction == "In" else egress).append(entry)
        return {"endpoints": [{"namespace": ns, "name": name, "policies": applied, "ingresssrcrules": ingress,
                               "egressdstrules": egress}]}

    def pick_node(self, node: str | None) -> str:
        names = [n.name for n in self.cluster.nodes]
        if node is None:
            raise InvalidArgument(f"this command is per node: give --node (nodes: {', '.join(names)})")
        self.cluster.node(node)
        return node

    def resolve_table(self, spec: str) -> int:
        cfg = self.cluster.config
        return T.pipeline_for(cfg.gate("AntreaProxy"), cfg.gate("AntreaPolicy")).resolve(spec)

    def tiers(self, name: str | None = None) -> list[Any]:
        """The Tiers: Antrea's built-in ones and the cluster's own, by priority."""
        from pyantrea.apis.crd import BUILTIN_TIER_OBJECTS

        tiers = sorted(BUILTIN_TIER_OBJECTS + tuple(self.cluster.tiers), key=lambda t: (t.priority, t.name))
        return _filter_name(tiers, name, "tier")

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
