"""The controller's internal objects (Antrea's controlplane API, networking.antrea.tanzu.vmware.com/v1beta1).

Agents receive these, never Kubernetes selectors: peers arrive as member lists and IP blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyantrea.apis.k8s import ContainerPort, resolve_named_port


@dataclass(frozen=True)
class GroupMemberPod:
    namespace: str
    name: str
    ip: str | None = None
    node: str | None = None
    ports: tuple[ContainerPort, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def resolve(self, name: str, protocol: str) -> int | None:
        return resolve_named_port(self.ports, name, protocol)


@dataclass(frozen=True)
class AppliedToGroup:
    name: str
    selector: str  # the normalized selector string the name is derived from
    pods: tuple[GroupMemberPod, ...] = ()  # every member, sorted by key
    span: tuple[str, ...] = ()  # nodes, sorted

    def pods_on(self, node: str) -> tuple[GroupMemberPod, ...]:
        return tuple(p for p in self.pods if p.node == node)

    def for_node(self, node: str) -> AppliedToGroup:
        """What an agent receives: only the Pods on its node (spec §9.4)."""
        return AppliedToGroup(self.name, self.selector, self.pods_on(node), self.span)


@dataclass(frozen=True)
class AddressGroup:
    name: str
    selector: str
    pods: tuple[GroupMemberPod, ...] = ()  # all members cluster-wide with an IP, sorted by key
    span: tuple[str, ...] = ()


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkPolicyPeer:
    address_groups: tuple[str, ...] = ()
    ip_blocks: tuple[IPBlock, ...] = ()


@dataclass(frozen=True)
class Service:
    protocol: str = "TCP"  # TCP | UDP | SCTP, or ICMP (Antrea-native policies' protocols)
    port: int | str | None = None  # int, a named port, or None for all ports
    end_port: int | None = None
    icmp_type: int | None = None  # ICMP only; None: any
    icmp_code: int | None = None

    @property
    def named(self) -> bool:
        return isinstance(self.port, str)


@dataclass(frozen=True)
class NetworkPolicyRule:
    direction: str  # "In" | "Out"
    from_: NetworkPolicyPeer | None = None
    to: NetworkPolicyPeer | None = None
    services: tuple[Service, ...] | None = None  # None: every port (no service clause)
    priority: int = -1  # Antrea-native: the rule's index among its policy's rules of its direction
    action: str = "Allow"  # Allow | Drop | Reject | Pass (Antrea-native policies)
    name: str | None = None  # Antrea-native: the rule's name
    applied_to_groups: tuple[str, ...] | None = None  # Antrea-native appliedTo per rule (None: the policy's)

    @property
    def peer(self) -> NetworkPolicyPeer:
        p = self.from_ if self.direction == "In" else self.to
        return p if p is not None else NetworkPolicyPeer()


@dataclass(frozen=True)
class NetworkPolicy:
    uid: str
    namespace: str
    name: str
    rules: tuple[NetworkPolicyRule, ...]
    applied_to_groups: tuple[str, ...]
    span: tuple[str, ...] = field(default=())
    # Antrea-native policies (None for a Kubernetes NetworkPolicy): AntreaClusterNetworkPolicy |
    # AntreaNetworkPolicy, the Tier (name and priority) and the policy's priority
    type: str | None = None
    tier: str | None = None
    tier_priority: int | None = None
    priority: float | None = None

    @property
    def key(self) -> str:
        """`ns/name` for a Kubernetes NetworkPolicy, `ACNP:name` and `ANP:ns/name` for Antrea's own (a
        K8s NetworkPolicy and an Antrea NetworkPolicy may share namespace and name)."""
        return policy_key(self.type, self.namespace, self.name)

    @property
    def short_type(self) -> str:
        return {None: "K8sNP", "AntreaClusterNetworkPolicy": "ACNP", "AntreaNetworkPolicy": "ANP"}.get(self.type, "?")

    @property
    def label(self) -> str:
        """How a person names it: `ns/name`, `ACNP name`, `ANP ns/name`."""
        if self.type is None:
            return f"{self.namespace}/{self.name}"
        return f"{self.short_type} {self.name if not self.namespace else self.namespace + '/' + self.name}"


def policy_key(type_: str | None, namespace: str, name: str) -> str:
    if type_ == "AntreaClusterNetworkPolicy":
        return f"ACNP:{name}"
    if type_ == "AntreaNetworkPolicy":
        return f"ANP:{namespace}/{name}"
    return f"{namespace}/{name}"


def to_dict(obj: Any) -> Any:
    """A JSON-friendly form with Kubernetes-style camelCase keys (for antctl -o json|yaml and the API)."""
    from dataclasses import fields, is_dataclass

    if is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in fields(obj):
            v = getattr(obj, f.name)
            if v is None:
                continue
            name = _CAMEL.get(f.name, f.name)
            out[name] = to_dict(v)
        return out
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    return obj


_CAMEL = {
    "from_": "from",
    "except_": "except",
    "address_groups": "addressGroups",
    "ip_blocks": "ipBlocks",
    "applied_to_groups": "appliedToGroups",
    "end_port": "endPort",
    "container_port": "containerPort",
    "icmp_type": "icmpType",
    "icmp_code": "icmpCode",
    "tier_priority": "tierPriority",
}


def member_from_dict(d: dict[str, Any]) -> GroupMemberPod:
    ports = tuple(ContainerPort(p["containerPort"], p.get("protocol", "TCP"), p.get("name"))
                  for p in d.get("ports", []))
    return GroupMemberPod(d["namespace"], d["name"], d.get("ip"), d.get("node"), ports)


def atg_from_dict(d: dict[str, Any]) -> AppliedToGroup:
    return AppliedToGroup(d["name"], d.get("selector", ""), tuple(member_from_dict(m) for m in d.get("pods", [])),
                          tuple(d.get("span", [])))


def ag_from_dict(d: dict[str, Any]) -> AddressGroup:
    return AddressGroup(d["name"], d.get("selector", ""), tuple(member_from_dict(m) for m in d.get("pods", [])),
                        tuple(d.get("span", [])))


def _peer_from(d: dict[str, Any] | None) -> NetworkPolicyPeer | None:
    if d is None:
        return None
    return NetworkPolicyPeer(tuple(d.get("addressGroups", [])),
                             tuple(IPBlock(b["cidr"], tuple(b.get("except", []))) for b in d.get("ipBlocks", [])))


def policy_from_dict(d: dict[str, Any]) -> NetworkPolicy:
    rules = []
    for r in d.get("rules", []):
        svcs = r.get("services")
        rules.append(NetworkPolicyRule(
            r["direction"], _peer_from(r.get("from")), _peer_from(r.get("to")),
            None if svcs is None else tuple(service_from_dict(s) for s in svcs),
            r.get("priority", -1), r.get("action", "Allow"), r.get("name"),
            None if r.get("appliedToGroups") is None else tuple(r["appliedToGroups"])))
    return NetworkPolicy(d["uid"], d["namespace"], d["name"], tuple(rules), tuple(d.get("appliedToGroups", [])),
                         tuple(d.get("span", [])), d.get("type"), d.get("tier"), d.get("tierPriority"),
                         d.get("priority"))


def service_from_dict(s: dict[str, Any]) -> Service:
    return Service(s.get("protocol", "TCP"), s.get("port"), s.get("endPort"), s.get("icmpType"), s.get("icmpCode"))


def policy_key_of(d: dict[str, Any]) -> str:
    """The key of a policy in its wire form."""
    return policy_key(d.get("type"), d["namespace"], d["name"])


@dataclass(frozen=True)
class NodePolicyView:
    """What the controller sends one node: the objects whose span includes it (spec §9.4)."""

    node: str
    policies: tuple[NetworkPolicy, ...]
    applied_to_groups: dict[str, AppliedToGroup]
    address_groups: dict[str, AddressGroup]


# ---------------------------------------------------------------------------------- the watch's client side


def apply_event(view: dict[str, dict[str, Any]], ev: dict[str, Any]) -> tuple[str, str]:
    """Apply one controlplane event to an agent's cache of typed objects.

    `view` maps kind -> name -> typed value. Returns (kind, name) of the object touched.
    """
    kind = ev["kind"]
    store = view[kind]
    if "patch" in ev:
        p = ev["patch"]
        g = store[p["name"]]
        removed = {member_from_dict(m).key for m in p.get("removedPods", [])}
        added = [member_from_dict(m) for m in p.get("addedPods", [])]
        pods = tuple(sorted([m for m in g.pods if m.key not in removed] + added, key=lambda m: m.key))
        store[g.name] = type(g)(g.name, g.selector, pods, g.span)
        return kind, g.name
    obj = ev["object"]
    value: Any
    if kind == "NetworkPolicy":
        value = policy_from_dict(obj)
        name = value.key
    else:
        value = atg_from_dict(obj) if kind == "AppliedToGroup" else ag_from_dict(obj)
        name = value.name
    if ev["type"] == "DELETED":
        store.pop(name, None)
    else:
        store[name] = value
    return kind, name


def view_from_list(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    pols = [policy_from_dict(p) for p in listing.get("networkPolicies", [])]
    return {"NetworkPolicy": {p.key: p for p in pols},
            "AppliedToGroup": {g.name: g for g in (atg_from_dict(d) for d in listing.get("appliedToGroups", []))},
            "AddressGroup": {g.name: g for g in (ag_from_dict(d) for d in listing.get("addressGroups", []))}}
