"""Values of a traceflow: the packet, the steps of its path (pipeline passes and host legs), the outcome."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from pyantrea.agent.networkpolicy import OFRule
    from pyantrea.apis.k8s import NodeNetwork
    from pyantrea.k8s.cluster import Cluster
    from pyantrea.kubeproxy import KubeProxyRules
    from pyantrea.ovs.trace import TraceResult
    from pyantrea.traceflow.hostleg import NatOutcome, Route

L4 = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class Packet:
    """The IPv4 packet being walked. `extra`: the user's other `-f` fields, passed to OVS verbatim."""

    protocol: str  # icmp | tcp | udp | sctp
    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    ttl: int = 64
    icmp_type: int | None = None
    extra: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.protocol, self.src, self.sport, self.dst, self.dport)

    @property
    def reverse_key(self) -> tuple[Any, ...]:
        return (self.protocol, self.dst, self.dport, self.src, self.sport)

    def reply(self) -> "Packet":
        it = 0 if self.protocol == "icmp" else None
        return Packet(self.protocol, self.dst, self.src, self.dport, self.sport, 64, it,
                      tuple(e for e in self.extra if not e.startswith(("tcp_flags", "icmp_type", "icmp_code"))))

    def with_(self, **kw: Any) -> "Packet":
        return replace(self, **kw)

    def l4_fields(self) -> list[str]:
        """The ofproto/trace fields of the packet's protocol, ports, TTL and extras (no addresses)."""
        out = [self.protocol]
        out += list(self.extra)
        if self.protocol in L4:
            if self.sport is not None:
                out.append(f"{self.protocol}_src={self.sport}")
            if self.dport is not None:
                out.append(f"{self.protocol}_dst={self.dport}")
        elif self.protocol == "icmp" and self.icmp_type is not None and not any(
                e.startswith("icmp_type") for e in self.extra):
            out.append(f"icmp_type={self.icmp_type}")
        out.append(f"nw_ttl={self.ttl}")
        return out

    def describe(self) -> str:
        p = self.protocol.upper()
        if self.protocol in L4:
            s = f":{self.sport}" if self.sport is not None else ""
            d = f":{self.dport}" if self.dport is not None else ""
            return f"{p} {self.src}{s} -> {self.dst}{d}"
        return f"{p} {self.src} -> {self.dst}"


@dataclass(frozen=True)
class PassRequest:
    """One ofproto/trace request, in antctl trace-packet's terms."""

    node: str
    port: str | None
    source: str | None
    destination: str | None
    flow: str
    ct_next: tuple[str, ...] = ()

    def command(self) -> str:
        """The equivalent `antctl trace-packet` command line."""
        parts = ["antctl", "trace-packet", "--node", self.node]
        if self.port:
            parts += ["-p", self.port]
        if self.source:
            parts += ["-S", self.source]
        if self.destination:
            parts += ["-D", self.destination]
        if self.flow:
            parts += ["-f", f"'{self.flow}'"]
        for c in self.ct_next:
            parts += ["--ct-next", c]
        return " ".join(parts)


Entry = Literal["pod", "gateway", "tunnel"]


@dataclass(frozen=True)
class PassStep:
    """One pass through a node's br-int pipeline."""

    node: str
    entry: Entry
    in_port: str
    request: PassRequest
    result: "TraceResult"
    packet: Packet  # as it entered
    conntrack: str  # "new" | "established" | "reply" (the --ct-next given)
    ct_mark: int | None  # the ct_mark put in the flow (replies of a gateway connection)
    committed_mark: int | None = None  # the ct_mark the pass committed, when it committed the connection
    committed: bool = False
    lb: "LBChoice | None" = None  # AntreaProxy: the Service port, group and bucket this pass went through
    unnat: str | None = None  # AntreaProxy: conntrack reversed the Service's DNAT of this reply (a sentence)

    @property
    def hops(self) -> tuple[Any, ...]:
        t = self.result.trace
        return t.hops if t is not None else ()


@dataclass(frozen=True)
class LBChoice:
    """AntreaProxy's load balancing in a pass: the Service port's select group picked this endpoint (the
    trace gets the datapath hash `dp_hash` that makes OVS pick that bucket)."""

    service: str  # ns/name[:port]
    protocol: str
    address: str  # the Service address traced (clusterIP:port, or the NodePort virtual IP:nodePort)
    group_id: int
    bucket: int | None  # None: the port has no ready endpoint
    endpoint: str | None  # ip:port
    buckets: int
    dp_hash: int


@dataclass(frozen=True)
class HostStep:
    """The Linux side of a node between two passes (or at the end): NAT, routing, ARP."""

    node: str
    packet_in: Packet
    packet_out: Packet
    nat: "NatOutcome | None" = None  # kube-proxy DNAT of a new connection
    reject: "NatOutcome | None" = None  # kube-proxy REJECT (Service without endpoints)
    unnat: str | None = None  # "un-DNAT ..." for a reply
    masquerade: str | None = None  # which rule masqueraded the source, if any
    route: "Route | None" = None
    arp: "TraceResult | None" = None  # the ARP resolution of the next hop, traced through br-int
    arp_mac: str | None = None
    notes: tuple[str, ...] = ()


Step = PassStep | HostStep
Action = Literal["Delivered", "Dropped", "Rejected", "ForwardedOutOfOverlay"]


@dataclass(frozen=True)
class Outcome:
    action: Action
    node: str
    pod: str | None = None  # ns/name, when delivered to a Pod
    port: str | None = None
    table: int | None = None  # where it was dropped
    table_name: str | None = None
    flow: str | None = None  # the dropping flow
    policies: tuple[str, ...] = ()  # policies that isolate (drop in 60/100)
    rules: tuple[str, ...] = ()  # the policy rules that decided (labels)
    reason: str = ""  # one sentence
    # Antrea-native policies: the rules that passed the packet on (a Pass rule: "passed from tier X")
    # and the Antrea-native rule that allowed it, when one did (labels)
    passed: tuple[str, ...] = ()
    allowed_by: tuple[str, ...] = ()


@dataclass
class Path:
    """One walk: the steps in order and how it ended."""

    steps: list[Step]
    outcome: Outcome
    packet: Packet  # the first packet
    endpoint: str | None = None  # the backend ip:port kube-proxy picked, when there was a Service
    probability: float = 1.0
    conntrack: Any = None  # the conntrack state the walk left (for --reply)
    direction: str = "forward"
    extras: dict[str, Any] = field(default_factory=dict)


class TraceBackend(Protocol):
    """What the engine needs from antctl's backend (offline or lab); traceflow imports neither."""

    cluster: "Cluster"

    def trace_packet(self, node: str, port: str | None, source: str | None, destination: str | None,
                     flow: str, ct_next: list[str]) -> "TraceResult": ...

    def node_network(self, node: str) -> "NodeNetwork": ...

    def policy_rules(self, node: str) -> "list[OFRule]": ...

    def kube_proxy_rules(self, node: str) -> "KubeProxyRules": ...

    def policy_state(self) -> Any: ...
