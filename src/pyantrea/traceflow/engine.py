"""The traceflow engine: walk one packet from end to end across nodes, through each node's real
pipeline (ofproto/trace in that node's OVS: a sandbox offline, the node's own OVS live), the host leg
(kube-proxy's rules and the node's routes) and the Geneve tunnel.

Each pipeline pass is an `antctl trace-packet` request, so every pass can be replayed by hand. The
engine keeps the conntrack state the passes leave: each pass that commits a connection (a
`ct(commit...)` action, table 105) records its tuple and ct_mark on that node, and the host legs
record their NAT. A later pass of the same connection (a reply) is then traced with
`--ct-next trk,est,rpl` and the committed `ct_mark` in the flow (spec §7, "Reproducing the walks"),
and a reply crossing a host is un-NATed as conntrack would.

With the AntreaProxy gate, a Pod's packet to a Service is load-balanced in the pass itself: the
Service port's select group picks a bucket from the datapath's hash, so the engine traces with
`dp_hash=N`, one N per endpoint (the first N whose trace DNATs to it), and walks each endpoint in
turn (`--endpoint` picks one); ofproto/trace simulates the DNAT, and the packet leaves the pass as
the final flow has it. The connection is kept under its DNATed tuple, so the endpoint's reply is
found, and un-DNATed after its pass.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import Any

from pyantrea.agent.openflow import tables as T
from pyantrea.agent.openflow.pipeline import GLOBAL_VMAC
from pyantrea.apis.k8s import NodeNetwork, Pod
from pyantrea.errors import InvalidArgument, PyantreaError
from pyantrea.traceflow import hostleg
from pyantrea.traceflow.model import (
    L4,
    HostStep,
    LBChoice,
    Outcome,
    Packet,
    PassRequest,
    PassStep,
    Path,
    Step,
    TraceBackend,
)

MAX_STEPS = 16
# Tables whose conj_id action flows can be an Antrea-native rule's (Baseline rules sit in the default
# rule tables, under the isolation drops)
ANTREA_RULE_TABLES = (T.ANP_EGRESS_RULE, T.ANP_INGRESS_RULE, T.EGRESS_DEFAULT, T.INGRESS_DEFAULT)
MAX_DP_HASH = 64  # the datapath hashes tried to reach every bucket of a Service's group
HAIRPIN_IP = "169.254.169.252"  # AntreaProxy's hairpin source (agent/openflow/service.py)
ONLY_FORWARD = ("tcp_flags", "icmp_type", "icmp_code")
RESERVED = ("in_port", "dl_src", "dl_dst", "nw_src", "nw_dst", "tun_src", "tun_dst", "ct_state", "ct_mark")


class TraceflowError(PyantreaError):
    """A trace that cannot be done (bad input, OVS rejected the flow...)."""


# ------------------------------------------------------------------------------------ conntrack


@dataclass
class Conntrack:
    """What the passes and host legs left behind, per node."""

    ovs: dict[str, dict[tuple[Any, ...], int]] = field(default_factory=dict)  # node -> tuple -> ct_mark
    nat: dict[str, list[tuple[tuple[Any, ...], Packet, Packet, str]]] = field(default_factory=dict)
    # node -> [(original key, original packet, translated packet, what)]
    ovs_nat: dict[str, dict[tuple[Any, ...], Packet]] = field(default_factory=dict)
    # AntreaProxy: node -> DNATed key -> the packet before the DNAT (its replies are un-DNATed)

    def copy(self) -> "Conntrack":
        return copy.deepcopy(self)


# ------------------------------------------------------------------------------------ helpers


def flow_fields(text: str) -> dict[str, str]:
    """`k=v` fields of an OVS flow text (the protocol words map to "")."""
    out: dict[str, str] = {}
    for tok in text.split(","):
        tok = tok.strip()
        if not tok:
            continue
        k, sep, v = tok.partition("=")
        out[k] = v if sep else ""
    return out


def parse_packet_flow(flow: str) -> tuple[str, int | None, int | None, tuple[str, ...]]:
    """antctl traceflow's `-f` (Antrea: icmp|tcp|udp, tcp_src, tcp_dst, tcp_flags, udp_src, udp_dst;
    pyantrea also takes sctp and tp_src/tp_dst) -> (protocol, sport, dport, other fields verbatim).
    Fields OVS does not know are kept: ofproto/trace reports them."""
    proto: str | None = None
    sport = dport = None
    extra: list[str] = []
    for tok in (t.strip() for t in (flow or "").split(",")):
        if not tok:
            continue
        if tok in ("icmp", "tcp", "udp", "sctp"):
            if proto is not None and proto != tok:
                raise InvalidArgument(f"-f names two protocols: {proto} and {tok}")
            proto = tok
            continue
        if tok == "ip":
            continue
        m = re.fullmatch(r"(tcp|udp|sctp|tp)_(src|dst)\s*=\s*(\d+)", tok)
        if m:
            if m[1] != "tp":
                if proto is not None and proto != m[1]:
                    raise InvalidArgument(f"-f: {tok} does not go with protocol {proto}")
                proto = m[1]
            if int(m[3]) > 65535:
                raise InvalidArgument(f"-f: port {m[3]} is out of range")
            if m[2] == "src":
                sport = int(m[3])
            else:
                dport = int(m[3])
            continue
        name = tok.split("=", 1)[0].strip()
        if name in RESERVED:
            raise InvalidArgument(f"-f: {name} is set by traceflow from -S/-D and the path; leave it out")
        extra.append(tok)
    proto = proto or ("tcp" if (sport or dport) else "icmp")
    if proto == "icmp" and (sport or dport):
        raise InvalidArgument("-f: ports need tcp, udp or sctp")
    return proto, sport, dport, tuple(extra)


def ovs_message(text: str, flow: str) -> str:
    """OVS's own message out of a failed ofproto/trace (without the ovs-appctl command line)."""
    text = text.strip()
    m = re.search(r"(Bad openflow flow syntax:.*|.*(?:unknown|invalid|not supported|prerequisites).*)", text)
    if flow and f"{flow}: " in text:
        return text.split(f"{flow}: ", 1)[1]
    return m[1] if m else text


def _in(ip: str, cidr: str) -> bool:
    try:
        return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(cidr, strict=False)
    except ValueError:
        return False


def hop_flow(h: Any) -> str:
    from pyantrea.ovs.trace import hop_flow as hf

    return str(hf(h))


_CT_MARK = re.compile(r"load:(0x[0-9a-fA-F]+|\d+)->NXM_NX_CT_MARK\[\]")


def _commit_of(hops: Any) -> tuple[bool, int | None]:
    for h in hops:
        for a in h.flow_actions:
            if a.startswith("ct(") and "commit" in a:
                m = _CT_MARK.search(a)
                return True, int(m[1], 0) if m else None
    return False, None


# ------------------------------------------------------------------------------------ engine


class Engine:
    def __init__(self, backend: TraceBackend):
        self.b = backend
        self.cluster = backend.cluster
        self._nets: dict[str, NodeNetwork] = {}
        self._rules: dict[str, Any] = {}
        self._kp: dict[str, Any] = {}
        self._routes: dict[str, hostleg.NodeRoutes] = {}
        self._services: dict[str, list[Any]] = {}
        self.proxy = self.cluster.config.gate("AntreaProxy")
        self.traces = 0

    # ----------------------------------------------------------------------------- lookups
    def net(self, node: str) -> NodeNetwork:
        if node not in self._nets:
            self._nets[node] = self.b.node_network(node)
        return self._nets[node]

    def rules(self, node: str) -> Any:
        if node not in self._rules:
            self._rules[node] = {r.conj_id: r for r in self.b.policy_rules(node)}
        return self._rules[node]

    def kube_proxy(self, node: str) -> Any:
        if node not in self._kp:
            self._kp[node] = self.b.kube_proxy_rules(node)
        return self._kp[node]

    def routes(self, node: str) -> hostleg.NodeRoutes:
        if node not in self._routes:
            n = self.net(node)
            peers = []
            for other in self.cluster.networks:
                if other.name != node and other.pod_cidr and other.node_ip:
                    peers.append((other.name, other.pod_cidr, other.gateway_ip, other.node_ip))
            self._routes[node] = hostleg.NodeRoutes(node, n.node_ip, n.pod_cidr, n.gateway_ip, n.gateway_name,
                                                    tuple(sorted(peers)))
        return self._routes[node]

    def node_of_ip(self, node_ip: str) -> str | None:
        for n in self.cluster.networks:
            if n.node_ip == node_ip:
                return n.name
        return None

    def pod_of_ip(self, ip: str) -> Pod | None:
        for p in self.cluster.pods:
            if p.pod_ip == ip and not p.host_network and not p.terminated:
                return p
        return None

    def iface_pod(self, node: str, port: str) -> str | None:
        for i in self.net(node).interfaces:
            if i.interface == port:
                return i.pod_key
        return None

    def pod_iface(self, node: str, key: str) -> Any:
        for i in self.net(node).interfaces:
            if i.pod_key == key:
                return i
        return None

    def services(self, node: str) -> list[Any]:
        """AntreaProxy's Service ports on `node` (with the gate on): from the cluster's Services and
        Endpoints, as the node's agent computes them."""
        if node not in self._services:
            from pyantrea.agent.proxy.model import cluster_entries

            net = self.net(node)
            ents = cluster_entries(self.cluster.services, {e.key: e for e in self.cluster.endpoints}, node,
                                   net.pod_cidr)
            self._services[node] = [e for es in ents.values() for e in es]
        return self._services[node]

    def service_port(self, node: str, pkt: Packet) -> Any:
        """The Service port AntreaProxy serves `pkt` as on `node` (its ClusterIP and port), or None."""
        if not self.proxy or pkt.protocol not in L4:
            return None
        for e in self.services(node):
            if e.cluster_ip == pkt.dst and e.port == pkt.dport and e.proto == pkt.protocol:
                return e
        return None

    def _tname(self, t: int | None) -> str:
        return _table_name(t, self.proxy)

    # ----------------------------------------------------------------------------- a pass
    def _ct_for(self, ct: Conntrack, node: str, pkt: Packet) -> tuple[str, tuple[str, ...], int | None]:
        table = ct.ovs.get(node, {})
        if pkt.key in table:
            m = table[pkt.key]
            return "established", ("trk,est",), m
        look = pkt.with_(dst=pkt.src) if pkt.dst == HAIRPIN_IP else pkt  # a hairpin reply, as conntrack has it
        if look.reverse_key in table:
            m = table[look.reverse_key]
            return "reply", ("trk,est,rpl",), m
        return "new", (), None

    def run_pass(self, ct: Conntrack, node: str, entry: str, pkt: Packet, *, pod: str | None = None,
                 dl_src: str | None = None, dl_dst: str | None = None, tun_src: str | None = None,
                 dp_hash: int | None = None, lb: Any = None) -> PassStep:
        net = self.net(node)
        state, ct_next, mark = self._ct_for(ct, node, pkt)
        fields = pkt.l4_fields()
        if mark:
            fields.insert(1, f"ct_mark=0x{mark:x}")
        if dp_hash is not None:
            fields.append(f"dp_hash={dp_hash}")
        port = source = destination = None
        if entry == "pod":
            source, destination = pod, pkt.dst
            iface = self.pod_iface(node, pod or "")
            in_port = iface.interface if iface is not None else str(pod)
        elif entry == "gateway":
            port = in_port = net.gateway_name
            fields.append(f"nw_src={pkt.src}")
            if dl_dst:
                fields = [f"dl_dst={dl_dst}"] + fields + [f"nw_dst={pkt.dst}"]
            else:
                destination = pkt.dst
        else:
            port = in_port = net.tunnel_name
            pre = []
            if dl_src:
                pre.append(f"dl_src={dl_src}")
            pre.append(f"dl_dst={dl_dst or GLOBAL_VMAC}")
            fields = pre + fields + [f"nw_src={pkt.src}", f"nw_dst={pkt.dst}"]
            if tun_src:
                fields += [f"tun_src={tun_src}", f"tun_dst={net.node_ip}"]
        flow = ",".join(fields)
        req = PassRequest(node, port, source, destination, flow, ct_next)
        res = self.b.trace_packet(node, port, source, destination, flow, list(ct_next))
        self.traces += 1
        if res.trace is None:
            raise TraceflowError(f"ofproto/trace on {node} rejected the flow: {ovs_message(res.text, res.flow)}")
        committed, cmark = _commit_of(res.trace.hops) if state == "new" else (False, None)
        unnat = None
        if committed:
            ct.ovs.setdefault(node, {})[pkt.key] = cmark or 0
            dnat = _dnat_of(res.trace.hops)
            if dnat is not None:  # AntreaProxy's EndpointDNAT: conntrack knows the connection DNATed
                key = pkt.with_(dst=dnat[0], dport=dnat[1] if pkt.protocol in L4 else pkt.dport).key
                ct.ovs[node][key] = cmark or 0
                ct.ovs_nat.setdefault(node, {})[key] = pkt
        elif state == "reply":
            look = pkt.with_(dst=pkt.src) if pkt.dst == HAIRPIN_IP else pkt
            orig = ct.ovs_nat.get(node, {}).get(look.reverse_key)
            if orig is not None:
                unnat = (f"conntrack reverses the Service's DNAT: the reply's source becomes "
                         f"{orig.dst}" + (f":{orig.dport}" if orig.dport is not None else "") + f" ({self.who(pkt.src)} "
                         "answered)")
        return PassStep(node, entry, in_port, req, res, pkt, state, mark, cmark, committed, lb,  # type: ignore[arg-type]
                        unnat)

    def _left(self, p: PassStep, ct: Conntrack) -> Packet:
        """The packet as it leaves a pass: its TTL, and with AntreaProxy its addresses as the pass left
        them (a DNAT, the hairpin SNAT, a reply's un-DNAT)."""
        t = p.result.trace
        assert t is not None
        pkt = p.packet
        ff = flow_fields(t.final_flow)
        ttl = int(ff.get("nw_ttl", pkt.ttl) or pkt.ttl)
        left = pkt.with_(ttl=ttl)
        if not self.proxy:
            return left
        if ff.get("nw_src") and ff.get("nw_dst"):
            left = left.with_(src=ff["nw_src"], dst=ff["nw_dst"])
            if pkt.protocol in L4 and ff.get("tp_dst", "").isdigit() and ff.get("tp_src", "").isdigit():
                left = left.with_(sport=int(ff["tp_src"]) if pkt.sport is not None else None,
                                  dport=int(ff["tp_dst"]) if pkt.dport is not None else None)
        if p.unnat is not None:
            look = pkt.with_(dst=pkt.src) if pkt.dst == HAIRPIN_IP else pkt
            orig = ct.ovs_nat.get(p.node, {}).get(look.reverse_key)
            if orig is not None:
                left = left.with_(src=orig.dst, sport=orig.dport)
        return left

    def lb_passes(self, ct: Conntrack, node: str, pkt: Packet, pod: str, endpoint: str | None
                  ) -> list[tuple[PassStep, Conntrack, float]] | None:
        """A Pod's packet to a Service port with AntreaProxy: one pass per endpoint the group can pick
        (only `endpoint`'s when given), each with its own conntrack copy and probability. None: `pkt`
        is not for a Service port OVS serves."""
        e = self.service_port(node, pkt)
        if e is None:
            return None
        addr = f"{e.cluster_ip}:{e.port}"
        if not e.endpoints:
            if endpoint is not None:
                raise TraceflowError(f"Service {e.name} ({e.protocol} {addr}) has no ready endpoint on {node}")
            ct2 = ct.copy()
            p = self.run_pass(ct2, node, "pod", pkt, pod=pod, dp_hash=1)
            gid = _group_of(p.result.text)
            return [(replace(p, lb=LBChoice(e.name, e.protocol, addr, gid or 0, None, None, 0, 1)), ct2, 1.0)]
        wanted = [ep.address for ep in e.endpoints]
        if endpoint is not None:
            wanted = [a for a in wanted if a == endpoint or a.rsplit(":", 1)[0] == endpoint]
            if not wanted:
                eps = ", ".join(ep.address for ep in e.endpoints)
                raise TraceflowError(f"{endpoint} is not an endpoint of {e.name} on {node} (AntreaProxy's "
                                     f"endpoints: {eps})")
        found: dict[str, tuple[PassStep, Conntrack]] = {}
        for h in range(1, MAX_DP_HASH + 1):
            ct2 = ct.copy()
            p = self.run_pass(ct2, node, "pod", pkt, pod=pod, dp_hash=h)
            t = p.result.trace
            assert t is not None
            d = _dnat_of(t.hops)
            got = f"{d[0]}:{d[1]}" if d else None
            if got is not None and got in wanted and got not in found:
                gid, bucket = _group_of(p.result.text), _bucket_of(p.result.text)
                lb = LBChoice(e.name, e.protocol, addr, gid or 0, bucket, got, len(e.endpoints), h)
                found[got] = (replace(p, lb=lb), ct2)
            if d is None or len(found) == len(wanted):
                break
        if not found:  # no DNAT at all (e.g. the affinity learned another endpoint): the plain pass
            ct2 = ct.copy()
            return [(self.run_pass(ct2, node, "pod", pkt, pod=pod, dp_hash=1), ct2, 1.0)]
        n = len(e.endpoints)
        return [(found[a][0], found[a][1], 1.0 / n) for a in wanted if a in found]
    # ----------------------------------------------------------------------------- outcomes of a pass
    def _drop_outcome(self, p: PassStep) -> Outcome:
        t = p.result.trace
        assert t is not None
        node = p.node
        if any("decrement TTL" in n for n in t.notes):
            h = t.hops[-1] if t.hops else None
            return Outcome("Dropped", node, table=h.table if h else None,
                           table_name=self._tname(h.table) if h else None, flow=hop_flow(h) if h else None,
                           reason="the TTL ran out (dec_ttl on a packet with TTL 1)")
        last = t.hops[-1] if t.hops else None
        if last is None or (t.no_match_table is not None and (last is None or t.no_match_table != last.table)):
            tb = t.no_match_table if t.no_match_table is not None else 0
            return Outcome("Dropped", node, table=tb, table_name=self._tname(tb),
                           reason=f"no flow of table {tb} ({self._tname(tb)}) matches")
        tb = last.table
        flow = hop_flow(last)
        pols: tuple[str, ...] = ()
        rules: tuple[str, ...] = ()
        reason = f"dropped by table {tb} ({self._tname(tb)})"
        antrea = self.antrea_rule(p.node, last)
        if antrea is not None:  # an Antrea-native Drop or Reject rule decided
            r, label = antrea
            verb = "rejects" if r.action == "Reject" else "drops"
            answer = (": the agent answers the client with a TCP RST (TCP) or an ICMP port unreachable"
                      if r.action == "Reject" else "")
            return Outcome("Rejected" if r.action == "Reject" else "Dropped", node, table=tb,
                           table_name=self._tname(tb), flow=flow, policies=(self.policy_label(r.policy),),
                           rules=(label,), reason=f"{label} {verb} it{answer}", passed=self.passes(p))
        if tb == T.EGRESS_DEFAULT and last.priority > 0:
            src = flow_fields(last.match).get("nw_src", p.packet.src)
            iso = [r for r in self.rules(node).values() if r.direction == "Out"
                   and any(a.kind == "net" and _in(src, a.value) for a in r.from_)]
            pols = tuple(sorted({r.policy for r in iso}))
            rules = tuple(self.rule_label(r) for r in sorted(iso, key=lambda r: r.conj_id))
            who = self.who(src)
            reason = (f"{who} is isolated for egress by {', '.join(pols) or 'a policy'} and no egress rule "
                      f"allows this packet")
        elif tb == T.INGRESS_DEFAULT and last.priority > 0:
            reg1 = flow_fields(last.match).get("reg1")
            port = int(reg1, 0) if reg1 else None
            iso = [r for r in self.rules(node).values() if r.direction == "In"
                   and any(a.kind == "ofport" and port is not None and int(a.value) == port for a in r.to)]
            pols = tuple(sorted({r.policy for r in iso}))
            rules = tuple(self.rule_label(r) for r in sorted(iso, key=lambda r: r.conj_id))
            who = self.who(p.packet.dst)
            reason = (f"{who} is isolated for ingress by {', '.join(pols) or 'a policy'} and no ingress rule "
                      f"allows this packet")
        elif tb == T.ENDPOINT_DNAT and self.proxy and p.lb is not None and p.lb.endpoint is None:
            reason = (f"Service {p.lb.service} ({p.lb.protocol} {p.lb.address}) has no ready endpoint: EndpointDNAT "
                      "sends the packet to the agent, which rejects the connection (TCP RST / ICMP port "
                      "unreachable)")
        elif tb == T.SPOOF_GUARD:
            reason = "the source MAC/IP do not belong to the input port (SpoofGuard)"
        elif tb == T.CT_STATE:
            reason = "conntrack says the packet is invalid"
        elif tb == T.OUTPUT:
            reason = "no output port was resolved for this destination (table 110's miss flow)"
        return Outcome("Dropped", node, table=tb, table_name=self._tname(tb), flow=flow, policies=pols,
                       rules=rules, reason=reason, passed=self.passes(p))

    # ----------------------------------------------------------------------------- Antrea-native rules
    def antrea_rule(self, node: str, h: Any) -> tuple[Any, str] | None:
        """(rule, label) when hop `h` is the action flow of an Antrea-native rule (of any tier)."""
        if h.table not in ANTREA_RULE_TABLES or not h.match.startswith("conj_id="):
            return None
        cid = int(flow_fields(h.match)["conj_id"])
        r = self.rules(node).get(cid)
        if r is None or getattr(r, "priority", None) is None:
            return None
        return r, self.rule_label(r)

    def passes(self, p: PassStep) -> tuple[str, ...]:
        """Labels of the Pass rules a pass went through ("passed from tier X")."""
        out = []
        for h in p.hops:
            got = self.antrea_rule(p.node, h)
            if got is not None and got[0].action == "Pass":
                out.append(got[1])
        return tuple(out)

    def allowed_by(self, steps: list[Step]) -> tuple[str, ...]:
        """Labels of the Antrea-native Allow rules that let the packet through on its way."""
        out = []
        for s in steps:
            if isinstance(s, PassStep):
                for h in s.hops:
                    got = self.antrea_rule(s.node, h)
                    if got is not None and got[0].action == "Allow":
                        out.append(got[1])
        return tuple(out)

    def policy_label(self, key: str) -> str:
        """`ns/name` (a Kubernetes NetworkPolicy), `ACNP name`, `ANP ns/name`."""
        try:
            return str(self.b.policy_state().policies[key].label)
        except (KeyError, AttributeError):
            return key

    def who(self, ip: str) -> str:
        p = self.pod_of_ip(ip)
        return f"Pod {p.key} ({ip})" if p else ip

    def rule_label(self, r: Any) -> str:
        """`ns/name ingress rule 1 (conj_id 3)`: the K8s rule of the policy that became this OpenFlow rule."""
        direction = "ingress" if r.direction == "In" else "egress"
        if getattr(r, "priority", None) is not None:  # Antrea-native: its name, tier, priority and action
            return (f"{self.policy_label(r.policy)} {direction} rule {r.name or '#' + str(r.rule_index)} (tier "
                    f"{r.tier}, priority {r.priority[1]:g}, action {r.action}, conj_id {r.conj_id})")
        label = f"{r.policy} {direction} rule"
        try:
            pol = self.b.policy_state().policies[r.policy]
            same = [i for i, x in enumerate(pol.rules) if x.direction == r.direction]
            rule = pol.rules[r.rule_index]
            peer = rule.peer
            if not peer.address_groups and not peer.ip_blocks and rule.services is None:
                label = f"{r.policy} deny-all {direction} (policyTypes has {direction.capitalize()}, no {direction} rules)"
            else:
                label = f"{label} {same.index(r.rule_index) + 1}"
        except (KeyError, ValueError, IndexError, AttributeError):
            label = f"{label} #{r.rule_index}"
        return f"{label} (conj_id {r.conj_id})"

    # ----------------------------------------------------------------------------- the walk
    def walk(self, pkt: Packet, start: tuple[str, ...], ct: Conntrack | None = None,
             endpoint: str | None = None, direction: str = "forward") -> list[Path]:
        """Every way `pkt` can go from `start` (("pod", node, ns/pod) | ("host", node)): one Path per
        kube-proxy endpoint choice (only `endpoint`'s when given)."""
        ct = ct or Conntrack()
        out: list[Path] = []
        self._walk(pkt, start, ct, [], endpoint, 1.0, None, out, pkt, direction)
        return out

    def _walk(self, pkt: Packet, loc: tuple[Any, ...], ct: Conntrack, steps: list[Step], endpoint: str | None,
              prob: float, chosen: str | None, out: list[Path], first: Packet, direction: str) -> None:
        while True:
            if len(steps) > MAX_STEPS:
                node = loc[1]
                out.append(Path(steps, Outcome("Dropped", node, reason="the path loops (more than "
                                                                        f"{MAX_STEPS} steps)"),
                                first, chosen, prob, ct, direction))
                return
            kind, node = loc[0], loc[1]
            if kind == "host":
                res = self._host(ct, node, pkt, endpoint)
                if isinstance(res, list):  # kube-proxy branches: one walk per endpoint
                    for nat, prob_i in res:
                        ct2 = ct.copy()
                        step, nxt, pkt2 = self._host_after_nat(ct2, node, pkt, nat)
                        self._walk_from_host(step, nxt, pkt2, ct2, list(steps), endpoint, prob * prob_i,
                                             nat.dnat_to, out, first, direction)
                    return
                step, nxt, pkt2 = res
                self._walk_from_host(step, nxt, pkt2, ct, steps, endpoint, prob, chosen, out, first, direction)
                return
            # a pipeline pass
            if kind == "pod":
                lbs = self.lb_passes(ct, node, pkt, loc[2], endpoint)
                if lbs is not None:  # AntreaProxy: one walk per endpoint the Service's group picks
                    for p_i, ct_i, prob_i in lbs:
                        ep = p_i.lb.endpoint if p_i.lb is not None else None
                        steps_i = list(steps)
                        went = self._after_pass(p_i, ct_i, steps_i, out, first, ep or chosen, prob * prob_i,
                                                direction)
                        if went is not None:
                            self._walk(went[1], went[0], ct_i, steps_i, endpoint, prob * prob_i, ep or chosen, out,
                                       first, direction)
                    return
                p = self.run_pass(ct, node, "pod", pkt, pod=loc[2])
            elif kind == "gateway":
                p = self.run_pass(ct, node, "gateway", pkt, dl_dst=loc[2])
            else:
                p = self.run_pass(ct, node, "tunnel", pkt, dl_src=loc[2], dl_dst=loc[3], tun_src=loc[4])
            went = self._after_pass(p, ct, steps, out, first, chosen, prob, direction)
            if went is None:
                return
            loc, pkt = went

    def _after_pass(self, p: PassStep, ct: Conntrack, steps: list[Step], out: list[Path], first: Packet,
                    chosen: str | None, prob: float, direction: str) -> tuple[tuple[Any, ...], Packet] | None:
        """Where the packet goes after a pass: (next location, packet), or None when the walk ended
        there (its Path appended to `out`)."""
        node = p.node
        steps.append(p)
        t = p.result.trace
        assert t is not None
        if t.verdict == "drop" or t.out_port is None:
            out.append(Path(steps, self._drop_outcome(p), first, chosen, prob, ct, direction))
            return None
        net = self.net(node)
        out_name = p.result.port_names.get(t.out_port, str(t.out_port))
        ff = flow_fields(t.final_flow)
        left = self._left(p, ct)
        if out_name == net.tunnel_name or t.out_port == net.tunnel_ofport:
            tun_dst = t.tun_dst
            peer = self.node_of_ip(tun_dst) if tun_dst else None
            if peer is None:
                out.append(Path(steps, Outcome("ForwardedOutOfOverlay", node, port=out_name,
                                               reason=f"sent into the tunnel to {tun_dst}, which is no Node"),
                                first, chosen, prob, ct, direction))
                return None
            return ("tunnel", peer, ff.get("dl_src"), ff.get("dl_dst"), net.node_ip), left
        if out_name == net.gateway_name or t.out_port == net.gateway_ofport:
            return ("host", node), left
        pod = self.iface_pod(node, out_name)
        if pod is not None:
            passed = tuple(x for s in steps if isinstance(s, PassStep) for x in self.passes(s))
            out.append(Path(steps, Outcome("Delivered", node, pod=pod, port=out_name,
                                           reason=f"delivered to Pod {pod} on port {out_name}", passed=passed,
                                           allowed_by=self.allowed_by(steps)),
                            first, chosen, prob, ct, direction))
            return None
        out.append(Path(steps, Outcome("Delivered", node, port=out_name, reason=f"output to port {out_name}"),
                        first, chosen, prob, ct, direction))
        return None

    def _walk_from_host(self, step: HostStep, nxt: tuple[Any, ...] | Outcome, pkt: Packet, ct: Conntrack,
                        steps: list[Step], endpoint: str | None, prob: float, chosen: str | None,
                        out: list[Path], first: Packet, direction: str) -> None:
        steps.append(step)
        if isinstance(nxt, Outcome):
            out.append(Path(steps, nxt, first, chosen, prob, ct, direction))
            return
        self._walk(pkt, nxt, ct, steps, endpoint, prob, chosen, out, first, direction)

    # ----------------------------------------------------------------------------- the host leg
    def _host(self, ct: Conntrack, node: str, pkt: Packet, endpoint: str | None
              ) -> list[tuple[hostleg.NatOutcome, float]] | tuple[HostStep, tuple[Any, ...] | Outcome, Packet]:
        r = self.routes(node)
        # conntrack: a packet of a connection the host already NATed (a reply: reverse translation)
        for orig_key, orig, trans, what in ct.nat.get(node, []):
            if pkt.key == trans.reverse_key:
                back = Packet(pkt.protocol, orig.dst, orig.src, orig.dport, orig.sport, pkt.ttl, pkt.icmp_type,
                              pkt.extra)
                note = f"reverses the {what}: {pkt.describe()} becomes {back.describe()}"
                return self._route(ct, node, pkt, back, unnat=note)
        kp = self.kube_proxy(node)
        nat_pkt = hostleg.NatPacket(pkt.protocol, pkt.src, pkt.dst, pkt.dport, pkt.dst in r.local_addresses())
        outs = [o for o in hostleg.nat_outcomes(kp, nat_pkt) if o.dnat_to]
        if outs:
            if endpoint is not None:
                sel = [o for o in outs if o.dnat_to and (o.dnat_to == endpoint or o.dnat_to.rsplit(":", 1)[0] == endpoint)]
                if not sel:
                    eps = ", ".join(o.dnat_to or "" for o in outs)
                    raise TraceflowError(f"{endpoint} is not an endpoint of {outs[0].service or pkt.dst} "
                                         f"on {node} (kube-proxy's endpoints: {eps})")
                outs = sel
            return [(o, o.probability) for o in outs]
        rej = [o for o in hostleg.filter_outcomes(kp, nat_pkt) if o.target is not None and o.target.kind == "REJECT"]
        if rej:
            o = rej[0]
            svc = (o.rules[-1].match.get("comment") or "").removesuffix(" has no endpoints") if o.rules else ""
            step = HostStep(node, pkt, pkt, reject=o,
                            notes=(f"kube-proxy rejects it: {svc} has no endpoints ({o.rules[-1].line()})",))
            return step, Outcome("Dropped", node, reason=f"kube-proxy on {node} rejects it: Service {svc} has no "
                                                         "endpoints"), pkt
        return self._route(ct, node, pkt, pkt)

    def _host_after_nat(self, ct: Conntrack, node: str, pkt: Packet, nat: hostleg.NatOutcome
                        ) -> tuple[HostStep, tuple[Any, ...] | Outcome, Packet]:
        ip, _, port = (nat.dnat_to or "").rpartition(":")
        translated = pkt.with_(dst=ip, dport=int(port) if port.isdigit() and pkt.protocol in L4 else pkt.dport)
        return self._route(ct, node, pkt, translated, nat=nat)

    def _route(self, ct: Conntrack, node: str, pkt_in: Packet, pkt: Packet, *, nat: hostleg.NatOutcome | None = None,
               unnat: str | None = None) -> tuple[HostStep, tuple[Any, ...] | Outcome, Packet]:
        r = self.routes(node)
        net = self.net(node)
        rt = hostleg.route(r, pkt.dst)
        notes: list[str] = []
        masq = None
        new_src = None
        if nat is not None and nat.masquerade and hostleg.postrouting_masquerades(self.kube_proxy(node), nat.mark):
            masq = "KUBE-POSTROUTING (KUBE-MARK-MASQ set mark 0x4000)"
        elif rt.kind == "underlay" and unnat is None and hostleg.antrea_masquerades(r, pkt.src, pkt.dst):
            masq = f"ANTREA-POSTROUTING (-s {r.pod_cidr} -m set ! --match-set ANTREA-POD-IP dst -j MASQUERADE)"
        if masq:
            new_src = r.node_ip if rt.kind == "underlay" else r.gateway_ip
        out_pkt = pkt if rt.kind == "local" else pkt.with_(ttl=pkt.ttl - 1)
        if new_src and new_src != pkt.src:
            out_pkt = out_pkt.with_(src=new_src)
        if (nat is not None or masq) and unnat is None:
            what = "DNAT" if nat is not None else "masquerade"
            if nat is not None and masq:
                what = "DNAT and masquerade"
            ct.nat.setdefault(node, []).append((pkt_in.key, pkt_in, out_pkt.with_(ttl=pkt_in.ttl), what))
        if out_pkt.ttl <= 0:
            step = HostStep(node, pkt_in, out_pkt, nat=nat, unnat=unnat, masquerade=masq, route=rt)
            return step, Outcome("Dropped", node, reason="the TTL ran out in the host"), out_pkt
        if rt.kind == "local":
            step = HostStep(node, pkt_in, out_pkt, nat=nat, unnat=unnat, masquerade=masq, route=rt)
            return step, Outcome("ForwardedOutOfOverlay", node,
                                 reason=f"delivered to {node}'s own network stack ({pkt.dst})"), out_pkt
        if rt.kind == "underlay":
            step = HostStep(node, pkt_in, out_pkt, nat=nat, unnat=unnat, masquerade=masq, route=rt)
            peer = self.node_of_ip(pkt.dst)
            where = f"Node {peer} ({pkt.dst})" if peer else pkt.dst
            return step, Outcome("ForwardedOutOfOverlay", node,
                                 reason=f"leaves the overlay: {node} routes it out of its own interface to {where}"), out_pkt
        if rt.kind == "pod":
            step = HostStep(node, pkt_in, out_pkt, nat=nat, unnat=unnat, masquerade=masq, route=rt)
            return step, ("gateway", node, None), out_pkt
        # a peer's podCIDR: onlink via the peer's gateway; the host ARPs for it through br-int
        assert rt.via is not None
        arp_flow = (f"arp,dl_dst=ff:ff:ff:ff:ff:ff,arp_spa={net.gateway_ip},arp_sha={net.gateway_mac},"
                    f"arp_tpa={rt.via},arp_op=1")
        arp = self.b.trace_packet(node, net.gateway_name, None, None, arp_flow, [])
        self.traces += 1
        mac = None
        if arp.trace is not None and arp.trace.verdict == "output":
            mac = flow_fields(arp.trace.final_flow).get("arp_sha") or flow_fields(arp.trace.final_flow).get("dl_src")
        step = HostStep(node, pkt_in, out_pkt, nat=nat, unnat=unnat, masquerade=masq, route=rt, arp=arp, arp_mac=mac,
                        notes=tuple(notes))
        if not mac:
            return step, Outcome("Dropped", node, reason=f"nobody answers the host's ARP request for {rt.via}"), out_pkt
        return step, ("gateway", node, mac), out_pkt


def _table_name(t: int | None, proxy: bool = False) -> str:
    if t is None:
        return ""
    return T.table_name(t, proxy)


_NAT_DST = re.compile(r"nat\(dst=([0-9.]+)(?::(\d+))?\)")
_GROUP = re.compile(r"^\s*group:(\d+)\s*$", re.M)
_BUCKET = re.compile(r"-> using bucket (\d+)")


def _dnat_of(hops: Any) -> tuple[str, int | None] | None:
    """The DNAT of AntreaProxy's EndpointDNAT commit in these hops: (ip, port), or None."""
    for h in hops:
        for a in h.flow_actions:
            if a.startswith("ct(") and "commit" in a:
                m = _NAT_DST.search(a)
                if m:
                    return m[1], int(m[2]) if m[2] else None
    return None


def _group_of(text: str) -> int | None:
    m = _GROUP.search(text)
    return int(m[1]) if m else None


def _bucket_of(text: str) -> int | None:
    m = _BUCKET.search(text)
    return int(m[1]) if m else None
