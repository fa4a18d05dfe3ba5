"""kube-proxy (iptables mode, as v1.18 writes it) for one node, as a pure function of the cluster.

`build_rules(cluster, node)` gives a small model of the chains kube-proxy programs: the
`KUBE-SERVICES` portal chain (reached from PREROUTING and OUTPUT), one `KUBE-SVC-<hash>` chain per
Service port that has endpoints, picking one `KUBE-SEP-<hash>` endpoint chain with
`-m statistic --mode random --probability` 1/n, 1/(n-1), ..., 1 (the last rule is unconditional),
each endpoint chain DNATing to `ip:port`, `KUBE-NODEPORTS` for NodePort Services, and the
masquerade plumbing (`KUBE-MARK-MASQ` sets mark 0x4000, `KUBE-POSTROUTING` masquerades marked
packets). `render_iptables(cluster, node)` is its text for ``iptables-restore --noflush``: only
KUBE-* chains are declared (so only they are flushed and rewritten); the jumps from the built-in
chains are kube-proxy's "ensure" rules (`JUMPS`), inserted once when missing (see
`missing_jumps`). Antrea's own ANTREA-* rules belong to the agent.

Chain names are kube-proxy's: ``KUBE-SVC-`` + base32(sha256(servicePortName + protocol))[:16] and
``KUBE-SEP-`` + base32(sha256(servicePortName + protocol + "ip:port"))[:16], where
servicePortName is ``ns/name`` or ``ns/name:portname`` and protocol is lower case.

`lookup(rules, protocol, dst, dport)` walks the model for one packet, which is what a trace of the
host leg (Pod -> antrea-gw0 -> iptables DNAT -> antrea-gw0) needs offline.

Deviations from kube-proxy (one line each): Services are written in namespace/name/port order (Go
map order in kube-proxy); no externalIPs, LoadBalancer, session affinity or
externalTrafficPolicy=Local; the cluster CIDR (for the "masquerade off-cluster traffic" rule) is
10.222.0.0/16 when every pod CIDR is inside it, else the smallest network covering them.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pyantrea.k8s.cluster import Cluster

__all__ = [
    "JUMPS",
    "MASQ_MARK",
    "Jump",
    "KubeProxyRules",
    "Match",
    "Rule",
    "ServiceHit",
    "Target",
    "build_rules",
    "cluster_cidr",
    "endpoint_chain",
    "kube_chains_in",
    "lookup",
    "missing_jumps",
    "render_iptables",
    "service_chain",
]

MASQ_MARK = "0x4000"
DEFAULT_CLUSTER_CIDR = ipaddress.IPv4Network("10.222.0.0/16")  # kubeadm --pod-network-cidr of the seed

KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"

TableName = Literal["nat", "filter"]


# ------------------------------------------------------------------------------------ names


def _hash16(s: str) -> str:
    return base64.b32encode(hashlib.sha256(s.encode()).digest()).decode()[:16]


def service_port_name(namespace: str, name: str, port_name: str | None) -> str:
    """kube-proxy's ServicePortName.String(): ``ns/name`` or ``ns/name:port``."""
    return f"{namespace}/{name}" + (f":{port_name}" if port_name else "")


def service_chain(svc_port_name: str, protocol: str) -> str:
    """``KUBE-SVC-`` + base32(sha256(servicePortName + protocol))[:16] (protocol lower case)."""
    return "KUBE-SVC-" + _hash16(svc_port_name + protocol.lower())


def endpoint_chain(svc_port_name: str, protocol: str, endpoint: str) -> str:
    """``KUBE-SEP-`` + base32(sha256(servicePortName + protocol + "ip:port"))[:16]."""
    return "KUBE-SEP-" + _hash16(svc_port_name + protocol.lower() + endpoint)


def cluster_cidr(cluster: Cluster) -> str | None:
    """kube-proxy's --cluster-cidr: 10.222.0.0/16 (the seed's kubeadm pod network) when it holds
    every Node's pod CIDR, else the smallest network that covers them all (None: no pod CIDR)."""
    nets = [ipaddress.IPv4Network(n.pod_cidr) for n in cluster.nodes if n.pod_cidr]
    if not nets:
        return None
    if all(n.subnet_of(DEFAULT_CLUSTER_CIDR) for n in nets):
        return str(DEFAULT_CLUSTER_CIDR)
    lo = min(int(n.network_address) for n in nets)
    hi = max(int(n.broadcast_address) for n in nets)
    prefix = 32
    while prefix > 0 and (lo >> (32 - prefix)) != (hi >> (32 - prefix)):
        prefix -= 1
    return str(ipaddress.IPv4Network((lo, prefix), strict=False))


def probability(n: int) -> str:
    """kube-proxy v1.18's computeProbability: 1/n with 5 decimals."""
    return f"{1.0 / n:0.5f}"


# ------------------------------------------------------------------------------------ model


MatchKind = Literal["comment", "protocol", "src", "not_src", "dst", "dport", "dst_local", "mark", "not_mark",
                    "ctstate", "probability"]


@dataclass(frozen=True)
class Match:
    """The matches of one rule, in the order kube-proxy writes them: ``(kind, value)`` items.

    kinds: comment, protocol (lower case; ``-m P -p P``), src / not_src / dst (CIDRs), dport,
    dst_local (``-m addrtype --dst-type LOCAL``), mark / not_mark (``-m mark [!] --mark X``),
    ctstate (``-m conntrack --ctstate X``), probability (``-m statistic --mode random --probability P``).
    """

    items: tuple[tuple[MatchKind, str], ...] = ()

    def get(self, kind: MatchKind) -> str | None:
        for k, v in self.items:
            if k == kind:
                return v
        return None

    def args(self) -> list[str]:
        a: list[str] = []
        for k, v in self.items:
            if k == "comment":
                a += ["-m", "comment", "--comment", _quote(v)]
            elif k == "protocol":
                a += ["-m", v, "-p", v]
            elif k == "src":
                a += ["-s", v]
            elif k == "not_src":
                a += ["!", "-s", v]
            elif k == "dst":
                a += ["-d", v]
            elif k == "dport":
                a += ["--dport", v]
            elif k == "dst_local":
                a += ["-m", "addrtype", "--dst-type", "LOCAL"]
            elif k == "mark":
                a += ["-m", "mark", "--mark", v]
            elif k == "not_mark":
                a += ["-m", "mark", "!", "--mark", v]
            elif k == "ctstate":
                a += ["-m", "conntrack", "--ctstate", v]
            elif k == "probability":
                a += ["-m", "statistic", "--mode", "random", "--probability", v]
            else:  # pragma: no cover
                raise ValueError(f"unknown match kind {k!r}")
        return a

    def __add__(self, other: Match) -> Match:
        return Match(self.items + other.items)


def M(*items: tuple[MatchKind, str]) -> Match:
    return Match(tuple(items))


@dataclass(frozen=True)
class Target:
    """``-j KIND [extra...]``: a chain (kind="chain", see `Target.to`), or DNAT / MARK / MASQUERADE /
    REJECT / ACCEPT / DROP / RETURN with their options in ``extra`` (e.g. ``--to-destination ip:port``)."""

    kind: str
    chain: str | None = None
    extra: tuple[str, ...] = ()

    @staticmethod
    def to(chain: str) -> Target:
        return Target("chain", chain)

    @property
    def dnat_to(self) -> str | None:
        if self.kind == "DNAT" and "--to-destination" in self.extra:
            return self.extra[self.extra.index("--to-destination") + 1]
        return None

    def args(self) -> list[str]:
        if self.kind == "chain":
            assert self.chain is not None
            return ["-j", self.chain]
        return ["-j", self.kind, *self.extra]


@dataclass(frozen=True)
class Rule:
    table: TableName
    chain: str
    match: Match
    target: Target

    def args(self) -> list[str]:
        """What follows ``-A CHAIN`` in iptables-restore input."""
        return self.match.args() + self.target.args()

    def line(self) -> str:
        return " ".join(["-A", self.chain, *self.args()])


@dataclass(frozen=True)
class Jump:
    """A jump from a built-in chain that kube-proxy ensures exists (inserted at the top, `-I`)."""

    table: TableName
    chain: str  # built-in chain
    target: str  # KUBE-* chain
    comment: str
    extra: tuple[str, ...] = ()

    def args(self) -> list[str]:
        return ["-m", "comment", "--comment", _quote(self.comment), *self.extra, "-j", self.target]

    def line(self) -> str:
        return " ".join(["-I", self.chain, *self.args()])


JUMPS: tuple[Jump, ...] = (
    Jump("filter", "INPUT", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals",
         ("-m", "conntrack", "--ctstate", "NEW")),
    Jump("filter", "FORWARD", KUBE_SERVICES, "kubernetes service portals", ("-m", "conntrack", "--ctstate", "NEW")),
    Jump("filter", "OUTPUT", KUBE_SERVICES, "kubernetes service portals", ("-m", "conntrack", "--ctstate", "NEW")),
    Jump("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals"),
    Jump("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals"),
    Jump("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
    Jump("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
)
"""kube-proxy v1.18's iptablesJumpChains, in its order."""


@dataclass(frozen=True)
class ServicePortInfo:
    """One Service port as kube-proxy sees it, with its endpoints ("ip:port", in order)."""

    name: str  # servicePortName: ns/name[:port]
    protocol: str  # lower case
    cluster_ip: str
    port: int
    node_port: int | None
    endpoints: tuple[str, ...]

    @property
    def chain(self) -> str:
        return service_chain(self.name, self.protocol)

    def endpoint_chains(self) -> tuple[str, ...]:
        return tuple(endpoint_chain(self.name, self.protocol, ep) for ep in self.endpoints)


@dataclass(frozen=True)
class KubeProxyRules:
    """Everything kube-proxy writes on one node: chains declared per table (in order) and the rules."""

    node: str
    cluster_cidr: str | None
    services: tuple[ServicePortInfo, ...]
    chains: dict[TableName, tuple[str, ...]] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()

    def chain_rules(self, table: TableName, chain: str) -> list[Rule]:
        return [r for r in self.rules if r.table == table and r.chain == chain]

    def render(self, existing_chains: Iterable[str] = (), jumps: Iterable[Jump] = ()) -> str:
        """iptables-restore --noflush input. ``existing_chains``: KUBE-* chains now in the nat table
        (from iptables-save); the stale KUBE-SVC-/KUBE-SEP- ones among them are deleted, as
        kube-proxy does. ``jumps``: built-in chain jumps to insert (the missing ones)."""
        out: list[str] = []
        jumps = list(jumps)
        for table in ("filter", "nat"):
            out.append(f"*{table}")
            declared = list(self.chains.get(table, ()))  # type: ignore[call-overload]
            stale: list[str] = []
            if table == "nat":
                active = set(declared)
                stale = sorted(c for c in set(existing_chains)
                               if c not in active and c.startswith(("KUBE-SVC-", "KUBE-SEP-", "KUBE-FW-",
                                                                    "KUBE-XLB-")))
            for c in declared + stale:
                out.append(f":{c} - [0:0]")
            for j in jumps:
                if j.table == table:
                    out.append(j.line())
            for r in self.rules:
                if r.table == table:
                    out.append(r.line())
            for c in stale:
                out.append(f"-X {c}")
            out.append("COMMIT")
        return "\n".join(out) + "\n"


def _quote(s: str) -> str:
    if s and all(ch.isalnum() or ch in "-_./:=" for ch in s):
        return s
    return '"' + s.replace('"', '\\"') + '"'


# ------------------------------------------------------------------------------------ build


def service_ports(cluster: Cluster) -> list[ServicePortInfo]:
    """Every Service port of the cluster with its endpoints, in namespace/name/port order.

    Endpoints of a port are the addresses of the Endpoints subsets that have a port with the same
    name and protocol (kube-proxy's matching), as ``ip:port``, in subset then address order."""
    out: list[ServicePortInfo] = []
    for s in sorted(cluster.services, key=lambda s: (s.namespace, s.name)):
        if not s.cluster_ip:
            continue
        ep = cluster.endpoints_of(s.namespace, s.name)
        for sp in s.ports:
            eps: list[str] = []
            if ep is not None:
                for sub in ep.subsets:
                    for p in sub.ports:
                        if (p.name or None) == (sp.name or None) and p.protocol == sp.protocol:
                            eps.extend(f"{a.ip}:{p.port}" for a in sub.addresses)
            out.append(ServicePortInfo(
                name=service_port_name(s.namespace, s.name, sp.name),
                protocol=sp.protocol.lower(),
                cluster_ip=s.cluster_ip,
                port=sp.port,
                node_port=sp.node_port if s.type == "NodePort" else None,
                endpoints=tuple(dict.fromkeys(eps)),
            ))
    return out


def build_rules(cluster: Cluster, node: str) -> KubeProxyRules:
    """kube-proxy's rules on ``node`` (they are the same on every node in this configuration: no
    externalTrafficPolicy=Local; the node name is kept for the record)."""
    cidr = cluster_cidr(cluster)
    svcs = service_ports(cluster)
    nat_chains: list[str] = [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ]
    filter_chains: list[str] = [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD]
    filt: list[Rule] = []
    nat: list[Rule] = []
    reject = Target("REJECT", extra=("--reject-with", "icmp-port-unreachable"))
    to = Target.to

    # KUBE-POSTROUTING / KUBE-MARK-MASQ (v1.18)
    mm = f"{MASQ_MARK}/{MASQ_MARK}"
    nat.append(Rule("nat", KUBE_POSTROUTING, M(("not_mark", mm)), Target("RETURN")))
    nat.append(Rule("nat", KUBE_POSTROUTING, M(), Target("MARK", extra=("--xor-mark", MASQ_MARK))))
    nat.append(Rule("nat", KUBE_POSTROUTING, M(("comment", "kubernetes service traffic requiring SNAT")),
                    Target("MASQUERADE")))
    nat.append(Rule("nat", KUBE_MARK_MASQ, M(), Target("MARK", extra=("--or-mark", MASQ_MARK))))

    for sp in svcs:
        has_eps = bool(sp.endpoints)
        svc_chain = sp.chain
        proto = sp.protocol
        if has_eps:
            nat_chains.append(svc_chain)
            portal = M(("comment", f"{sp.name} cluster IP"), ("protocol", proto), ("dst", f"{sp.cluster_ip}/32"),
                       ("dport", str(sp.port)))
            if cidr is not None:
                nat.append(Rule("nat", KUBE_SERVICES, portal + M(("not_src", cidr)), to(KUBE_MARK_MASQ)))
            nat.append(Rule("nat", KUBE_SERVICES, portal, to(svc_chain)))
        else:
            filt.append(Rule("filter", KUBE_SERVICES,
                             M(("comment", f"{sp.name} has no endpoints"), ("protocol", proto),
                               ("dst", f"{sp.cluster_ip}/32"), ("dport", str(sp.port))), reject))
        if sp.node_port is not None:
            if has_eps:
                np = M(("comment", sp.name), ("protocol", proto), ("dport", str(sp.node_port)))
                nat.append(Rule("nat", KUBE_NODEPORTS, np, to(KUBE_MARK_MASQ)))
                nat.append(Rule("nat", KUBE_NODEPORTS, np, to(svc_chain)))
            else:
                filt.append(Rule("filter", KUBE_EXTERNAL_SERVICES,
                                 M(("comment", f"{sp.name} has no endpoints"), ("dst_local", ""), ("protocol", proto),
                                   ("dport", str(sp.node_port))), reject))
        if not has_eps:
            continue
        seps = sp.endpoint_chains()
        nat_chains.extend(seps)
        n = len(seps)
        for i, (sep, ep) in enumerate(zip(seps, sp.endpoints)):
            pick = M(("comment", sp.name))
            if i < n - 1:
                pick += M(("probability", probability(n - i)))
            nat.append(Rule("nat", svc_chain, pick, to(sep)))
            ep_ip = ep.rsplit(":", 1)[0]
            nat.append(Rule("nat", sep, M(("comment", sp.name), ("src", f"{ep_ip}/32")), to(KUBE_MARK_MASQ)))
            nat.append(Rule("nat", sep, M(("comment", sp.name), ("protocol", proto)),
                            Target("DNAT", extra=("--to-destination", ep))))

    # Finally the tail call to the nodeports chain (nodeAddresses = 0.0.0.0/0).
    nat.append(Rule("nat", KUBE_SERVICES,
                    M(("comment", "kubernetes service nodeports; NOTE: this must be the last rule in this chain"),
                      ("dst_local", "")),
                    to(KUBE_NODEPORTS)))

    # filter KUBE-FORWARD
    filt.append(Rule("filter", KUBE_FORWARD, M(("ctstate", "INVALID")), Target("DROP")))
    filt.append(Rule("filter", KUBE_FORWARD, M(("comment", "kubernetes forwarding rules"), ("mark", mm)),
                     Target("ACCEPT")))
    if cidr is not None:
        filt.append(Rule("filter", KUBE_FORWARD,
                         M(("src", cidr), ("comment", "kubernetes forwarding conntrack pod source rule"),
                           ("ctstate", "RELATED,ESTABLISHED")), Target("ACCEPT")))
        filt.append(Rule("filter", KUBE_FORWARD,
                         M(("comment", "kubernetes forwarding conntrack pod destination rule"), ("dst", cidr),
                           ("ctstate", "RELATED,ESTABLISHED")), Target("ACCEPT")))
    return KubeProxyRules(node=node, cluster_cidr=cidr, services=tuple(svcs),
                          chains={"filter": tuple(filter_chains), "nat": tuple(nat_chains)},
                          rules=tuple(filt + nat))


def render_iptables(cluster: Cluster, node: str, existing_chains: Iterable[str] = (),
                    jumps: Iterable[Jump] = ()) -> str:
    """The ``iptables-restore --noflush`` input that makes ``node``'s KUBE-* chains what kube-proxy
    would write for ``cluster``. See `KubeProxyRules.render` for the two optional arguments."""
    return build_rules(cluster, node).render(existing_chains, jumps)


# ------------------------------------------------------------------------------------ live helpers


def kube_chains_in(iptables_save: str, table: str = "nat") -> set[str]:
    """The KUBE-* chains declared in ``table`` of an ``iptables-save`` dump."""
    chains: set[str] = set()
    cur = None
    for line in iptables_save.splitlines():
        if line.startswith("*"):
            cur = line[1:].strip()
        elif cur == table and line.startswith(":KUBE-"):
            chains.add(line[1:].split()[0])
    return chains


def missing_jumps(iptables_save: str) -> list[Jump]:
    """The `JUMPS` not present in an ``iptables-save`` dump (matched by table, chain and target)."""
    present: set[tuple[str, str, str]] = set()
    cur = ""
    for line in iptables_save.splitlines():
        if line.startswith("*"):
            cur = line[1:].strip()
        elif line.startswith("-A "):
            parts = line.split()
            if "-j" in parts:
                present.add((cur, parts[1], parts[parts.index("-j") + 1]))
    return [j for j in JUMPS if (j.table, j.chain, j.target) not in present]


# ------------------------------------------------------------------------------------ lookup


@dataclass(frozen=True)
class EndpointHit:
    chain: str  # KUBE-SEP-...
    endpoint: str  # ip:port (the DNAT destination)
    probability: float  # overall chance this endpoint is picked


@dataclass(frozen=True)
class ServiceHit:
    """What the nat table does to a new connection: the chains it crosses and the DNAT choices."""

    service: str  # servicePortName
    via: str  # "cluster IP" or "nodePort"
    chains: tuple[str, ...]  # KUBE-SERVICES [, KUBE-NODEPORTS], KUBE-SVC-...
    mark_masq: bool  # KUBE-MARK-MASQ hit before the DNAT (src outside the cluster CIDR, or nodePort)
    endpoints: tuple[EndpointHit, ...]


def lookup(rules: KubeProxyRules, protocol: str, dst: str, dport: int, src: str | None = None,
           dst_is_local: bool = False) -> ServiceHit | None:
    """The Service (if any) a new ``protocol`` connection to ``dst:dport`` from ``src`` hits on this
    node, and the endpoints it can be DNATed to with their probabilities. ``dst_is_local``: dst is an
    address of the node (for NodePorts). None: no KUBE rule matches (the packet is not NATed)."""
    proto = protocol.lower()
    cidr = ipaddress.IPv4Network(rules.cluster_cidr) if rules.cluster_cidr else None
    off_cluster = src is not None and cidr is not None and ipaddress.IPv4Address(src) not in cidr
    for sp in rules.services:
        if not sp.endpoints:
            continue
        if sp.protocol == proto and sp.cluster_ip == dst and sp.port == dport:
            return ServiceHit(sp.name, "cluster IP", (KUBE_SERVICES, sp.chain), off_cluster, _eps(sp))
    if dst_is_local:
        for sp in rules.services:
            if sp.endpoints and sp.node_port is not None and sp.protocol == proto and sp.node_port == dport:
                return ServiceHit(sp.name, "nodePort", (KUBE_SERVICES, KUBE_NODEPORTS, sp.chain), True, _eps(sp))
    return None


def _eps(sp: ServicePortInfo) -> tuple[EndpointHit, ...]:
    n = len(sp.endpoints)
    return tuple(EndpointHit(c, ep, 1.0 / n) for c, ep in zip(sp.endpoint_chains(), sp.endpoints))
