"""Typed, frozen values for Antrea's own policy API (`crd.antrea.io/v1beta1`): Tier,
ClusterNetworkPolicy (ACNP), NetworkPolicy (Antrea NetworkPolicy, ANP), ClusterGroup and Group.

Only what pyantrea realizes is kept: appliedTo (podSelector, namespaceSelector, group), peers
(podSelector, namespaceSelector, `namespaces.match: Self`, ipBlock, group), ports (TCP, UDP, SCTP,
endPort, named ports), ICMP protocols, rule names and actions. Every object remembers its `Source`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyantrea.apis.k8s import IPBlock, LabelSelector, NetworkPolicyPort, Source

API_VERSION = "crd.antrea.io/v1beta1"
GATE = "AntreaPolicy"

# The Tiers Antrea's controller creates at start (pkg/controller/networkpolicy/tier.go): name -> priority.
# A policy may name them by these names or by their capitalized forms (Emergency, SecurityOps, ...).
BUILTIN_TIERS: dict[str, int] = {
    "emergency": 50,
    "securityops": 100,
    "networkops": 150,
    "platform": 200,
    "application": 250,
    "baseline": 253,
}
STATIC_TIER_NAMES: dict[str, str] = {
    "Emergency": "emergency", "SecurityOps": "securityops", "NetworkOps": "networkops",
    "Platform": "platform", "Application": "application", "Baseline": "baseline",
}
DEFAULT_TIER = "application"
BASELINE_TIER = "baseline"
DEFAULT_TIER_PRIORITY = BUILTIN_TIERS[DEFAULT_TIER]
BASELINE_TIER_PRIORITY = BUILTIN_TIERS[BASELINE_TIER]
RESERVED_TIER_PRIORITIES = (251, 252, 254, 255)
MAX_TIERS = 20
ACTIONS = ("Allow", "Drop", "Reject", "Pass")

# The internal kind names (the loader's and the API server's): Antrea's NetworkPolicy shares its
# kind with Kubernetes' NetworkPolicy, so it is kept as AntreaNetworkPolicy.
ACNP, ANP, TIER, CLUSTER_GROUP, GROUP = "ClusterNetworkPolicy", "AntreaNetworkPolicy", "Tier", "ClusterGroup", "Group"
KINDS = (TIER, CLUSTER_GROUP, GROUP, ACNP, ANP)
# What a manifest calls each of them
MANIFEST_KIND = {ACNP: "ClusterNetworkPolicy", ANP: "NetworkPolicy", TIER: "Tier", CLUSTER_GROUP: "ClusterGroup",
                 GROUP: "Group"}

# controlplane NetworkPolicy types (Antrea's NetworkPolicyType)
TYPE_K8S, TYPE_ACNP, TYPE_ANP = "K8sNetworkPolicy", "AntreaClusterNetworkPolicy", "AntreaNetworkPolicy"
SHORT_TYPE = {TYPE_K8S: "K8sNP", TYPE_ACNP: "ACNP", TYPE_ANP: "ANP"}


def tier_name(name: str | None) -> str:
    """A policy's spec.tier as the Tier's object name (Antrea's mutating webhook: empty -> application;
    the static capitalized names -> their lowercase Tier names)."""
    if not name:
        return DEFAULT_TIER
    return STATIC_TIER_NAMES.get(name, name)


@dataclass(frozen=True)
class Tier:
    name: str
    priority: int
    description: str = ""
    builtin: bool = False
    source: Source = field(default=Source(), compare=False)


BUILTIN_TIER_OBJECTS: tuple[Tier, ...] = tuple(
    Tier(n, p, f"[READ-ONLY]: built-in {n} Tier", builtin=True) for n, p in sorted(BUILTIN_TIERS.items(), key=lambda kv: kv[1]))


@dataclass(frozen=True)
class AppliedTo:
    """One appliedTo entry: selectors, or a (Cluster)Group reference."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    group: str | None = None


@dataclass(frozen=True)
class Peer:
    """One peer of a rule (`from` / `to`)."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    namespaces_self: bool = False  # namespaces: {match: Self}
    ip_block: IPBlock | None = None
    group: str | None = None


@dataclass(frozen=True)
class ICMP:
    icmp_type: int | None = None
    icmp_code: int | None = None


@dataclass(frozen=True)
class Rule:
    action: str  # Allow | Drop | Reject | Pass
    peers: tuple[Peer, ...] = ()  # from (ingress) / to (egress); empty: every address
    ports: tuple[NetworkPolicyPort, ...] = ()
    icmp: tuple[ICMP, ...] = ()  # protocols: [{icmp: ...}]
    name: str = ""
    applied_to: tuple[AppliedTo, ...] = ()


@dataclass(frozen=True)
class AntreaPolicy:
    """A ClusterNetworkPolicy (namespace None) or an Antrea NetworkPolicy (its namespace)."""

    namespace: str | None
    name: str
    priority: float
    tier: str = DEFAULT_TIER  # the Tier's object name
    applied_to: tuple[AppliedTo, ...] = ()
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    uid: str = ""
    source: Source = field(default=Source(), compare=False)

    @property
    def cluster_scoped(self) -> bool:
        return self.namespace is None

    @property
    def kind(self) -> str:
        return ACNP if self.namespace is None else ANP

    @property
    def type(self) -> str:
        return TYPE_ACNP if self.namespace is None else TYPE_ANP

    @property
    def key(self) -> str:
        """`name` for a ClusterNetworkPolicy, `ns/name` for an Antrea NetworkPolicy."""
        return self.name if self.namespace is None else f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ClusterGroup:
    """A ClusterGroup (namespace None) or a namespaced Group."""

    namespace: str | None
    name: str
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_blocks: tuple[IPBlock, ...] = ()
    child_groups: tuple[str, ...] = ()
    uid: str = ""
    source: Source = field(default=Source(), compare=False)

    @property
    def kind(self) -> str:
        return CLUSTER_GROUP if self.namespace is None else GROUP

    @property
    def key(self) -> str:
        return self.name if self.namespace is None else f"{self.namespace}/{self.name}"
