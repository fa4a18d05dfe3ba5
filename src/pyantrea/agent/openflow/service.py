"""AntreaProxy's flows and groups (the `AntreaProxy` gate; v0.10.1's proxy profile, spec §16).

A new connection to a Service port goes: ConntrackState's miss flow resubmits to SessionAffinity
(which only marks reg4[16..18]=0b001 "needs load balancing", or, for a ClientIP-affinity client it
has seen within the timeout, loads the endpoint it chose then) and to ServiceLB, whose flow for the
Service's IP and port hands the packet to the port's select group. The group's bucket (one per ready
endpoint, equal weights) loads the endpoint's IP into reg3 and port into reg4[0..15], marks the
selection made (reg4[16..18]=0b010, or 0b011 "to learn" with affinity: back to ServiceLB, whose
learn flow records the choice in SessionAffinity) and reg0[19] "rewrite the MACs", and resubmits to
EndpointDNAT: `ct(commit,nat(dst=IP:PORT))` with ct_mark 0x21, continuing in EgressRule with the
DNATed packet, so NetworkPolicy applies to the endpoint. Later packets and replies are NATed by the
`ct(nat)` of ConntrackZone and skip the Service tables (ConntrackState, ct_mark 0x21).

Hairpin (a Pod reaching itself through its Service): HairpinSNAT rewrites the source to
169.254.169.252 and Output sends it back in on its own port; the reply, addressed to that IP, has its
destination restored in ServiceHairpin before conntrack un-NATs it.

A Service port without a ready endpoint still has its group, with one bucket that marks reg4[19];
EndpointDNAT sends such packets to the agent (packet-in), which answers with a TCP RST or an ICMP
port unreachable as if the Service had (`agent/proxy/proxier.py`, `agent/openflow/reject.py`).

NodePorts (with `antreaProxy.proxyAll`): the host DNATs NodeIP:nodePort to the virtual IP
169.254.0.252 and routes it into antrea-gw0 (`agent/route/client.py`); ServiceLB has a flow for
(169.254.0.252, nodePort) into the same group as the Service's ClusterIP port.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyantrea.agent.openflow import tables as T
from pyantrea.agent.openflow.cookie import Category, cookie
from pyantrea.agent.proxy.model import Endpoint, ServicePortEntry
from pyantrea.ovs.flow import (
    CT,
    NAT,
    Bucket,
    Controller,
    Flow,
    Goto,
    Group,
    GroupAction,
    InPort,
    Learn,
    LearnSpec,
    Load,
    Match,
    Move,
    Resubmit,
    SetField,
    ip_int,
    match,
    reg_match,
)

if TYPE_CHECKING:
    from pyantrea.agent.openflow.pipeline import FlowBuilder

SERVICE_CT_MARK = 0x21
HAIRPIN_IP = "169.254.169.252"
NODEPORT_VIRTUAL_IP = "169.254.0.252"

# reg4[16..18]: where a packet is in the Service tables
EP_STATE_BITS = (16, 18)
NEED_LB, SELECTED, NEED_LEARN = 0b001, 0b010, 0b011
EP_PORT_BITS = (0, 15)
NO_ENDPOINT_BIT = 19  # reg4[19]: the Service port has no ready endpoint
HAIRPIN_BIT = 18  # reg0[18]: send back out of the input port
REWRITE_MAC_BIT = 19  # reg0[19]
REJECT_MAX_LEN = 128  # enough of the packet for the reject answer (IP and TCP headers, or IP + 8 bytes)

_IP_PROTO = {"tcp": 6, "udp": 17, "sctp": 132}
_L4_DST = {"tcp": "NXM_OF_TCP_DST[]", "udp": "NXM_OF_UDP_DST[]", "sctp": "OXM_OF_SCTP_DST[]"}

PRIORITY_HIGH, PRIORITY_NORMAL, PRIORITY_LOW, PRIORITY_MISS = 210, 200, 190, 0


def endpoint_key(protocol: str, ep: Endpoint) -> str:
    return f"{protocol.lower()}/{ep.ip}:{ep.port}"


class ServiceFlowBuilder:
    """AntreaProxy's flow families, built with a node's FlowBuilder (same cookies, creation order)."""

    def __init__(self, fb: FlowBuilder):
        self.fb = fb
        self.p = fb.p

    def _svc(self) -> Category:
        return Category.SERVICE

    def fixed_flows(self) -> list[Flow]:
        """Installed once with the gate on (InstallClusterServiceFlows and the proxy part of the
        conntrack flows in Antrea), in place of the table-40 Service CIDR flow."""
        f = self.fb.flow
        svc = self._svc()
        state = lambda v: reg_match(v, EP_STATE_BITS)  # noqa: E731
        return [
            f(T.OUTPUT, PRIORITY_HIGH, match(proto="ip", reg0=reg_match(1, (HAIRPIN_BIT, HAIRPIN_BIT))),
              [InPort()], svc),
            f(T.SERVICE_HAIRPIN, PRIORITY_NORMAL, match(proto="ip", nw_dst=HAIRPIN_IP),
              [Move("NXM_OF_IP_SRC[]", "NXM_OF_IP_DST[]"), Load(1, "NXM_NX_REG0", HAIRPIN_BIT), Goto(T.CT_ZONE)], svc),
            f(T.CT_STATE, PRIORITY_MISS, match(),
              [Resubmit(T.SESSION_AFFINITY), Resubmit(T.SERVICE_LB)], Category.DEFAULT),
            f(T.SESSION_AFFINITY, PRIORITY_MISS, match(), [Load(NEED_LB, "NXM_NX_REG4", EP_STATE_BITS)], svc),
            f(T.ENDPOINT_DNAT, PRIORITY_LOW, match(reg4=state(SELECTED)),
              [Load(NEED_LB, "NXM_NX_REG4", EP_STATE_BITS), Resubmit(T.SERVICE_LB)], svc),
            f(T.CT_STATE, PRIORITY_NORMAL,
              match(ct_state="-new+trk", ct_mark=f"0x{SERVICE_CT_MARK:x}", proto="ip"),
              [Load(1, "NXM_NX_REG0", REWRITE_MAC_BIT), Goto(T.EGRESS_RULE)], svc),
            # EndpointDNAT committed the connection (with its DNAT and ct_mark 0x21): no second commit,
            # which from the gateway would overwrite the mark with 0x20 (docs/decisions.md)
            f(T.CT_COMMIT, PRIORITY_HIGH,
              match(ct_state="+trk", ct_mark=f"0x{SERVICE_CT_MARK:x}", proto="ip", reg4=state(SELECTED)),
              [self.fb.goto_next(T.CT_COMMIT)], Category.DEFAULT),
            # a Service port without ready endpoints: to the agent, which rejects the connection
            f(T.ENDPOINT_DNAT, PRIORITY_NORMAL, match(reg4=reg_match(1, (NO_ENDPOINT_BIT, NO_ENDPOINT_BIT))),
              [Controller(max_len=REJECT_MAX_LEN)], svc),
        ]

    # ------------------------------------------------------------------------------ per Service port
    def _lb_match(self, e: ServicePortEntry, ip: str, port: int, state: int) -> Match:
        return match(proto=e.proto, reg4=reg_match(state, EP_STATE_BITS), nw_dst=ip, tp_dst=port)

    def _addresses(self, e: ServicePortEntry) -> list[tuple[str, int]]:
        out = [(e.cluster_ip, e.port)]
        if self.fb.cfg.proxy_all and e.node_port:
            out.append((NODEPORT_VIRTUAL_IP, e.node_port))
        return out

    def learn_action(self, e: ServicePortEntry, group_id: int) -> Learn:
        return Learn(
            table=T.SESSION_AFFINITY, priority=PRIORITY_NORMAL, hard_timeout=e.affinity_timeout,
            delete_learned=True, cookie=cookie(self.fb.cfg.round_num, Category.SERVICE, group_id),
            specs=(LearnSpec("eth_type", "0x800"), LearnSpec("nw_proto", str(_IP_PROTO[e.proto])),
                   LearnSpec(_L4_DST[e.proto]), LearnSpec("NXM_OF_IP_DST[]"), LearnSpec("NXM_OF_IP_SRC[]"),
                   LearnSpec("NXM_NX_REG3[]", load_src="NXM_NX_REG3[]"),
                   LearnSpec("NXM_NX_REG4[0..15]", load_src="NXM_NX_REG4[0..15]"),
                   LearnSpec("NXM_NX_REG4[16..18]", load_value=SELECTED),
                   LearnSpec("NXM_NX_REG0[19]", load_value=1)))

    def service_port_flows(self, e: ServicePortEntry, group_id: int) -> list[Flow]:
        """ServiceLB's flows of one Service port: into its group (and the learn flow with affinity),
        for its ClusterIP and, with proxyAll, its NodePort."""
        out = []
        for ip, port in self._addresses(e):
            m = self._lb_match(e, ip, port, NEED_LB)
            out.append(self.fb.flow(T.SERVICE_LB, PRIORITY_NORMAL, m, [GroupAction(group_id)], self._svc()))
            if e.affinity_timeout:  # its cookie carries the group id, as the learned flows' (Antrea's)
                lm = self._lb_match(e, ip, port, NEED_LEARN)
                out.append(self.fb.flow(T.SERVICE_LB, PRIORITY_LOW, lm,
                                        [self.learn_action(e, group_id),
                                         Load(SELECTED, "NXM_NX_REG4", EP_STATE_BITS), Goto(T.ENDPOINT_DNAT)],
                                        self._svc(), object_id=group_id))
        return out

    def group(self, e: ServicePortEntry, group_id: int) -> Group:
        """The Service port's select group: one bucket per ready endpoint, weight 100 each."""
        if not e.endpoints:
            return Group(group_id, (Bucket((Load(1, "NXM_NX_REG4", NO_ENDPOINT_BIT), Resubmit(T.ENDPOINT_DNAT))),))
        state, back = (NEED_LEARN, T.SERVICE_LB) if e.affinity_timeout else (SELECTED, T.ENDPOINT_DNAT)
        return Group(group_id, tuple(
            Bucket((Load(ip_int(ep.ip), "NXM_NX_REG3"), Load(ep.port, "NXM_NX_REG4", EP_PORT_BITS),
                    Load(state, "NXM_NX_REG4", EP_STATE_BITS), Load(1, "NXM_NX_REG0", REWRITE_MAC_BIT),
                    Resubmit(back)))
            for ep in e.endpoints))

    # ------------------------------------------------------------------------------ per endpoint
    def endpoint_flows(self, protocol: str, ep: Endpoint) -> list[Flow]:
        """EndpointDNAT's flow for one endpoint (shared by every Service port that has it)."""
        proto = protocol.lower()
        m = match(proto=proto, reg3=f"0x{ip_int(ep.ip):x}",
                  reg4=f"0x{(SELECTED << 16) | ep.port:x}/0x7ffff")
        return [self.fb.flow(T.ENDPOINT_DNAT, PRIORITY_NORMAL, m, [
            CT(commit=True, table=self.p.next(T.ENDPOINT_DNAT), zone=0xFFF0, nat=NAT("dst", ep.ip, ep.port),
               exec_=(Load(SERVICE_CT_MARK, "NXM_NX_CT_MARK"),))], self._svc())]

    def hairpin_flow(self, ip: str) -> list[Flow]:
        """HairpinSNAT's flow for a local endpoint: a Pod that reached itself through a Service."""
        return [self.fb.flow(T.HAIRPIN_SNAT, PRIORITY_NORMAL, match(proto="ip", nw_src=ip, nw_dst=ip), [
            SetField("ip_src", HAIRPIN_IP), Load(1, "NXM_NX_REG0", HAIRPIN_BIT), Goto(T.OUTPUT)], self._svc())]


def node_service_state(fb: FlowBuilder, entries: dict[str, list[ServicePortEntry]], group_ids: dict[str, int]
                       ) -> tuple[dict[str, list[Flow]], list[Flow], list[Group]]:
    """A node's Service flow families from its entries: (service key -> its ServiceLB flows, the shared
    endpoint flows (DNAT per protocol/endpoint, hairpin per local endpoint IP), the groups), in the
    compiler's order (Services by key, then endpoints by key)."""
    sb = ServiceFlowBuilder(fb)
    fams: dict[str, list[Flow]] = {}
    groups: list[Group] = []
    eps: dict[str, tuple[str, Endpoint]] = {}
    hairpins: set[str] = set()
    for key in sorted(entries):
        flows: list[Flow] = []
        for e in entries[key]:
            gid = group_ids[e.key]
            flows += sb.service_port_flows(e, gid)
            groups.append(sb.group(e, gid))
            for ep in e.endpoints:
                eps.setdefault(endpoint_key(e.protocol, ep), (e.protocol, ep))
                if ep.local:
                    hairpins.add(ep.ip)
        fams[key] = flows
    shared: list[Flow] = []
    for k in sorted(eps):
        proto, ep = eps[k]
        shared += sb.endpoint_flows(proto, ep)
    for ip in sorted(hairpins):
        shared += sb.hairpin_flow(ip)
    return fams, shared, sorted(groups, key=lambda g: g.group_id)
