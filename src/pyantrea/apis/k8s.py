"""Typed, frozen values for the Kubernetes objects pyantrea reads.

Only the fields Antrea v0.10 looks at are kept. Every object remembers where it came from
(`Source`), so that an error can name the file, the document and the object.
"""

from __future__ import annotations

import hashlib

from collections.abc import Mapping
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]  # sorted (key, value) pairs


REQUESTED_IP = "pyantrea.io/requested-ip"
"""A Pod annotation: the IP the Pod asks the CNI for (the embedded API server keeps a manifest's
`status.podIP` here, as the status itself belongs to the kubelet)."""


def labels_of(d: Mapping[str, str] | None) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in (d or {}).items()))


@dataclass(frozen=True)
class Source:
    """Where an object was read: file path and 1-based document number ('' / 0 when synthesized)."""

    file: str = ""
    doc: int = 0

    def __str__(self) -> str:
        if not self.file:
            return "<derived>"
        return f"{self.file} (document {self.doc})"


@dataclass(frozen=True)
class LabelSelectorRequirement:
    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    """metav1.LabelSelector. An empty selector matches everything."""

    match_labels: Labels = ()
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        for k, v in self.match_labels:
            if labels.get(k) != v:
                return False
        for r in self.match_expressions:
            present = r.key in labels
            if r.operator == "In":
                if not present or labels[r.key] not in r.values:
                    return False
            elif r.operator == "NotIn":
                if present and labels[r.key] in r.values:
                    return False
            elif r.operator == "Exists":
                if not present:
                    return False
            elif r.operator == "DoesNotExist":
                if present:
                    return False
            else:  # validated at load time
                raise ValueError(f"unknown selector operator {r.operator!r}")
        return True

    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def __str__(self) -> str:
        """The Kubernetes string form (labels.Selector.String()): requirements sorted by key."""
        reqs: list[tuple[str, str]] = []
        for k, v in self.match_labels:
            reqs.append((k, f"{k}={v}"))
        for r in self.match_expressions:
            vals = ",".join(sorted(set(r.values)))
            if r.operator == "In":
                reqs.append((r.key, f"{r.key} in ({vals})"))
            elif r.operator == "NotIn":
                reqs.append((r.key, f"{r.key} notin ({vals})"))
            elif r.operator == "Exists":
                reqs.append((r.key, r.key))
            elif r.operator == "DoesNotExist":
                reqs.append((r.key, f"!{r.key}"))
        return ",".join(s for _, s in sorted(reqs, key=lambda t: t[0]))


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Labels = ()
    source: Source = field(default=Source(), compare=False)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class Node:
    name: str
    labels: Labels = ()
    pod_cidr: str | None = None
    internal_ip: str | None = None
    external_ip: str | None = None
    source: Source = field(default=Source(), compare=False)

    @property
    def node_ip(self) -> str | None:
        """Antrea's Node IP: first InternalIP, else ExternalIP."""
        return self.internal_ip or self.external_ip


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    protocol: str = "TCP"
    name: str | None = None


def resolve_named_port(ports: tuple[ContainerPort, ...], name: str, protocol: str) -> int | None:
    for p in ports:
        if p.name == name and p.protocol == protocol:
            return p.container_port
    return None


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Labels = ()
    node_name: str | None = None
    pod_ip: str | None = None
    host_network: bool = False
    phase: str = "Running"
    ports: tuple[ContainerPort, ...] = ()  # all containers' ports, in order
    containers: tuple[str, ...] = ()
    uid: str = ""
    source: Source = field(default=Source(), compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def terminated(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    def resolve_port(self, name: str, protocol: str) -> int | None:
        """A named port -> its number in this Pod's containers (None if no container has it)."""
        return resolve_named_port(self.ports, name, protocol)


@dataclass(frozen=True)
class ServicePort:
    port: int
    protocol: str = "TCP"
    name: str | None = None
    target_port: int | str | None = None  # None: same as port
    node_port: int | None = None


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    type: str = "ClusterIP"  # ClusterIP | NodePort
    cluster_ip: str | None = None
    selector: Labels | None = None  # None: no selector (Endpoints are given by the user)
    ports: tuple[ServicePort, ...] = ()
    labels: Labels = ()
    session_affinity: str = "None"  # None | ClientIP
    affinity_timeout: int = 10800  # sessionAffinityConfig.clientIP.timeoutSeconds (Kubernetes' default)
    source: Source = field(default=Source(), compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class EndpointAddress:
    ip: str
    node_name: str | None = None
    target_pod: str | None = None  # "ns/name"


@dataclass(frozen=True)
class EndpointPort:
    port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True)
class EndpointSubset:
    addresses: tuple[EndpointAddress, ...] = ()
    ports: tuple[EndpointPort, ...] = ()


@dataclass(frozen=True)
class Endpoints:
    namespace: str
    name: str
    subsets: tuple[EndpointSubset, ...] = ()
    source: Source = field(default=Source(), compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkPolicyPeer:
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class NetworkPolicyPort:
    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class NetworkPolicyRule:
    """One ingress (peers = `from`) or egress (peers = `to`) rule. Empty peers: all sources/destinations."""

    peers: tuple[NetworkPolicyPeer, ...] = ()
    ports: tuple[NetworkPolicyPort, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector = LabelSelector()
    ingress: tuple[NetworkPolicyRule, ...] = ()
    egress: tuple[NetworkPolicyRule, ...] = ()
    policy_types: tuple[str, ...] = ("Ingress",)  # defaulted by the loader as the API server does
    uid: str = ""
    source: Source = field(default=Source(), compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class PortPin:
    """What a real node had for its gateway or tunnel port."""

    name: str | None = None
    ofport: int | None = None
    mac: str | None = None


@dataclass(frozen=True)
class PodPin:
    namespace: str
    name: str
    interface: str | None = None
    ofport: int | None = None
    mac: str | None = None
    container_id: str | None = None


@dataclass(frozen=True)
class NodeInterfaces:
    """pyantrea.io/v1alpha1 NodeInterfaces: pins a node's ports so its flows can be reproduced exactly."""

    node: str
    gateway: PortPin = PortPin()
    tunnel: PortPin = PortPin()
    pods: tuple[PodPin, ...] = ()
    source: Source = field(default=Source(), compare=False)


@dataclass(frozen=True)
class AgentConfig:
    """The subset of antrea-agent.conf that matters here. Defaults are the seed's."""

    feature_gates: tuple[tuple[str, bool], ...] = (("Traceflow", True),)
    ovs_bridge: str = "br-int"
    host_gateway: str = "antrea-gw0"
    tunnel_type: str = "geneve"
    traffic_encap_mode: str = "encap"
    service_cidr: str = "10.96.0.0/12"
    default_mtu: int = 0
    pipeline_profile: str = "ARTICLE"  # ARTICLE | RELEASE (spec §0); only ARTICLE is built
    proxy_all: bool = False  # antreaProxy.proxyAll: NodePorts from the host and outside through OVS too

    def gate(self, name: str) -> bool:
        return dict(self.feature_gates).get(name, False)


@dataclass(frozen=True)
class PodInterface:
    """A Pod's port on its node's br-int (interface store entry)."""

    namespace: str
    pod: str
    node: str
    interface: str
    ofport: int
    mac: str  # the Pod-side (eth0) MAC
    ip: str
    container_id: str

    @property
    def pod_key(self) -> str:
        return f"{self.namespace}/{self.pod}"


@dataclass(frozen=True)
class NodeNetwork:
    """Everything about one node's datapath that does not depend on policies."""

    name: str
    node_ip: str
    pod_cidr: str
    gateway_ip: str
    gateway_mac: str
    gateway_name: str = "antrea-gw0"
    gateway_ofport: int = 2
    tunnel_name: str = "antrea-tun0"
    tunnel_ofport: int = 1
    interfaces: tuple[PodInterface, ...] = ()


# ---------------------------------------------------------------------------------- naming rules


def stable_mac(seed: str) -> str:
    """A MAC derived from sha256(seed): locally administered (bit 1 set), unicast (bit 0 clear)."""
    b = bytearray(hashlib.sha256(seed.encode()).digest()[:6])
    b[0] = (b[0] | 0x02) & 0xFE
    return ":".join(f"{x:02x}" for x in b)


def container_id_for(namespace: str, name: str) -> str:
    """A Pod's container (sandbox) id when none is pinned: sha256("<ns>/<name>"), 64 hex characters."""
    return hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()


def interface_name(pod_name: str, container_id: str) -> str:
    """Antrea's host veth name (spec §10 step 4): pod name[:8] + '-' + sha1(container id)[:6]."""
    return f"{pod_name[:8]}-{hashlib.sha1(container_id.encode()).hexdigest()[:6]}"
