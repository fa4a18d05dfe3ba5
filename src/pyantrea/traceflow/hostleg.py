"""The host leg of a trace: what a node's Linux stack does with a packet that br-int sent out of
antrea-gw0 (kube-proxy's iptables NAT, then routing), worked out from the rules the lab programs.

kube-proxy: the rules are `pyantrea.kubeproxy.build_rules(cluster, node)`, the model that
`render_iptables` writes into the lab's nodes. This module does not know what a Service is: it
*runs* those rules for one packet (nat PREROUTING -> KUBE-SERVICES and the chains it jumps to),
following every `-m statistic --probability` branch, so each KUBE-SEP endpoint chain that can be
picked comes out with the DNAT it applies, the chains crossed, its probability and whether
KUBE-MARK-MASQ marked the packet. The filter table's KUBE-SERVICES is run the same way to find
kube-proxy's REJECT for a Service without endpoints.

Routing: the node's table as the agent writes it (spec §4.1): its own podCIDR connected on
antrea-gw0, every peer podCIDR `via <peer gateway> dev antrea-gw0 onlink`, everything else out of
the underlay; plus Antrea's ANTREA-POSTROUTING masquerade of Pod traffic leaving the cluster (§4.2).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Iterable

from pyantrea.kubeproxy import KubeProxyRules, Match, Rule, Target

MASQ_MARK = 0x4000


@dataclass(frozen=True)
class NatPacket:
    protocol: str  # lower case: tcp | udp | sctp | icmp
    src: str
    dst: str
    dport: int | None
    dst_local: bool  # dst is one of the node's own addresses (for NodePorts)


@dataclass(frozen=True)
class NatOutcome:
    """One way the nat table can treat a new connection."""

    target: Target | None  # the terminating target (DNAT, REJECT...); None: no rule terminated
    chains: tuple[str, ...]  # chains entered, in order (KUBE-SERVICES, KUBE-SVC-..., KUBE-SEP-...)
    rules: tuple[Rule, ...]  # the rules that matched, in order
    probability: float
    mark: int = 0

    @property
    def dnat_to(self) -> str | None:
        return self.target.dnat_to if self.target is not None else None

    @property
    def masquerade(self) -> bool:
        return bool(self.mark & MASQ_MARK)

    @property
    def endpoint_chain(self) -> str | None:
        for c in reversed(self.chains):
            if c.startswith("KUBE-SEP-"):
                return c
        return None

    @property
    def service_chain(self) -> str | None:
        for c in self.chains:
            if c.startswith("KUBE-SVC-"):
                return c
        return None

    @property
    def service(self) -> str | None:
        """The servicePortName, from the comment of the rule that entered KUBE-SVC-..."""
        for r in self.rules:
            if r.target.kind == "chain" and r.target.chain and r.target.chain.startswith("KUBE-SVC-"):
                c = r.match.get("comment")
                if c:
                    return c.removesuffix(" cluster IP")
        return None


def _in(ip: str, cidr: str) -> bool:
    return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(cidr, strict=False)


def _static_match(m: Match, pkt: NatPacket, mark: int) -> tuple[bool, float | None]:
    """(matches?, probability of a statistic match or None)."""
    prob: float | None = None
    for kind, v in m.items:
        if kind == "comment" or kind == "ctstate":
            continue  # every packet we walk is the first of its connection (NEW)
        if kind == "protocol" and v != pkt.protocol:
            return False, None
        if kind == "src" and not _in(pkt.src, v):
            return False, None
        if kind == "not_src" and _in(pkt.src, v):
            return False, None
        if kind == "dst" and not _in(pkt.dst, v):
            return False, None
        if kind == "dport" and (pkt.dport is None or int(v) != pkt.dport):
            return False, None
        if kind == "dst_local" and not pkt.dst_local:
            return False, None
        if kind in ("mark", "not_mark"):
            val, _, mask = v.partition("/")
            want, msk = int(val, 0), int(mask or "0xffffffff", 0)
            hit = (mark & msk) == want
            if (kind == "mark") != hit:
                return False, None
        if kind == "probability":
            prob = float(v)
    return True, prob


@dataclass
class _State:
    chains: tuple[str, ...]
    rules: tuple[Rule, ...] = ()
    prob: float = 1.0
    mark: int = 0


def _mark_of(t: Target, mark: int) -> int:
    ex = list(t.extra)
    for op in ("--or-mark", "--xor-mark", "--set-mark", "--and-mark"):
        if op in ex:
            v = int(ex[ex.index(op) + 1], 0)
            if op == "--or-mark":
                return mark | v
            if op == "--xor-mark":
                return mark ^ v
            if op == "--and-mark":
                return mark & v
            return v
    return mark


def _run(rules: KubeProxyRules, table: str, chain: str, pkt: NatPacket, st: _State, depth: int = 0
         ) -> tuple[list[tuple[_State, Target]], list[_State]]:
    """(terminated outcomes, states that returned from the chain)."""
    if depth > 16:
        return [], [st]
    done: list[tuple[_State, Target]] = []
    returned: list[_State] = []
    frontier = [st]
    for r in rules.chain_rules(table, chain):  # type: ignore[arg-type]
        nxt: list[_State] = []
        for s in frontier:
            ok, prob = _static_match(r.match, pkt, s.mark)
            if not ok:
                nxt.append(s)
                continue
            if prob is not None:
                if prob < 1.0:
                    nxt.append(replace(s, prob=s.prob * (1.0 - prob)))
                s = replace(s, prob=s.prob * prob)
            s = replace(s, rules=s.rules + (r,))
            t = r.target
            if t.kind == "chain" and t.chain:
                sub_done, sub_ret = _run(rules, table, t.chain, pkt, replace(s, chains=s.chains + (t.chain,)), depth + 1)
                done += sub_done
                nxt += sub_ret
            elif t.kind == "MARK":
                nxt.append(replace(s, mark=_mark_of(t, s.mark)))
            elif t.kind == "RETURN":
                returned.append(s)
            else:
                done.append((s, t))
        frontier = [s for s in nxt if s.prob > 0]
    return done, frontier + returned


def nat_outcomes(rules: KubeProxyRules, pkt: NatPacket) -> list[NatOutcome]:
    """Run nat PREROUTING's jump to KUBE-SERVICES for the first packet of a connection: every way
    it can end (a DNAT per endpoint), with probabilities. Empty: no KUBE rule NATs it."""
    done, _ = _run(rules, "nat", "KUBE-SERVICES", pkt, _State(("KUBE-SERVICES",)))
    return [NatOutcome(t, s.chains, s.rules, s.prob, s.mark) for s, t in done]


def filter_outcomes(rules: KubeProxyRules, pkt: NatPacket) -> list[NatOutcome]:
    """filter FORWARD/OUTPUT's jump to KUBE-SERVICES: kube-proxy's REJECT of Services without endpoints."""
    done, _ = _run(rules, "filter", "KUBE-SERVICES", pkt, _State(("KUBE-SERVICES",)))
    return [NatOutcome(t, s.chains, s.rules, s.prob, s.mark) for s, t in done]


def postrouting_masquerades(rules: KubeProxyRules, mark: int) -> bool:
    """KUBE-POSTROUTING: masquerade packets KUBE-MARK-MASQ marked."""
    pkt = NatPacket("tcp", "0.0.0.0", "0.0.0.0", None, False)
    done, _ = _run(rules, "nat", "KUBE-POSTROUTING", pkt, _State(("KUBE-POSTROUTING",), mark=mark))
    return any(t.kind == "MASQUERADE" for _, t in done)


# ------------------------------------------------------------------------------------ routing


@dataclass(frozen=True)
class NodeRoutes:
    """One node's host view (spec §4): addresses, the podCIDR routes the agent writes, the masquerade."""

    node: str
    node_ip: str
    pod_cidr: str
    gateway_ip: str
    gateway_name: str
    peers: tuple[tuple[str, str, str, str], ...] = field(default=())  # (node, pod_cidr, gateway_ip, node_ip)

    def local_addresses(self) -> tuple[str, ...]:
        return (self.node_ip, self.gateway_ip)

    def all_pod_cidrs(self) -> tuple[str, ...]:
        return (self.pod_cidr,) + tuple(p[1] for p in self.peers)


@dataclass(frozen=True)
class Route:
    kind: str  # "local" (an address of the node) | "pod" (own podCIDR) | "peer" (via peer gateway) | "underlay"
    text: str  # as `ip route get` would say it, roughly
    device: str
    via: str | None = None  # next hop
    peer: str | None = None  # the peer node, for "peer"


def route(r: NodeRoutes, dst: str) -> Route:
    if dst in r.local_addresses():
        return Route("local", f"local {dst} dev lo table local", "lo")
    if _in(dst, r.pod_cidr):
        return Route("pod", f"{r.pod_cidr} dev {r.gateway_name} proto kernel scope link src {r.gateway_ip}",
                     r.gateway_name)
    for node, cidr, gw, _ in r.peers:
        if _in(dst, cidr):
            return Route("peer", f"{cidr} via {gw} dev {r.gateway_name} onlink", r.gateway_name, gw, node)
    return Route("underlay", f"default route (out of the Node's own interface, {r.node_ip})", "underlay")


def antrea_masquerades(r: NodeRoutes, src: str, dst: str) -> bool:
    """ANTREA-POSTROUTING (spec §4.2): `-s <podCIDR> -m set ! --match-set ANTREA-POD-IP dst -j MASQUERADE`."""
    return _in(src, r.pod_cidr) and not any(_in(dst, c) for c in r.all_pod_cidrs())


def describe_chain_walk(o: NatOutcome) -> str:
    return " -> ".join(o.chains)


def outcome_lines(o: NatOutcome) -> list[str]:
    """The iptables rules that matched, as iptables-save prints them."""
    return [f"-t nat {r.line()}" for r in o.rules]


def endpoint_ips(outcomes: Iterable[NatOutcome]) -> list[str]:
    return [o.dnat_to.rsplit(":", 1)[0] for o in outcomes if o.dnat_to]
