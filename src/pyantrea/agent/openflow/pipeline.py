"""One small builder per flow family of the ARTICLE pipeline (spec §6).

Every builder returns a list of `Flow` values; nothing here talks to OVS. The families mirror the
ownership groups Antrea keeps (spec §5.4): fixed/default flows, gateway flows, the tunnel flow, the
Service-CIDR flow, per-peer-Node flows and per-Pod flows. Policy flows live in `policy.py`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pyantrea.agent.openflow import tables as T
from pyantrea.agent.openflow.cookie import Category, cookie
from pyantrea.apis.k8s import NodeNetwork, PodInterface
from pyantrea.ovs.flow import (
    CT,
    Action,
    DecTTL,
    Flow,
    Goto,
    InPort,
    Load,
    Match,
    Move,
    NAT,
    Normal,
    OutputReg,
    Port,
    SetField,
    ip_match,
    match,
    reg_match,
)

GLOBAL_VMAC = "aa:bb:cc:dd:ee:ff"
CT_ZONE = 0xFFF0
GATEWAY_CT_MARK = 0x20

PRIORITY_HIGH, PRIORITY_NORMAL, PRIORITY_LOW, PRIORITY_MISS = 210, 200, 190, 0
# The Antrea-native policy tables (AntreaPolicy gate): bypass flows above every rule (spec §16's
# "top Antrea policy" priority); rules get priorities from agent/openflow/priority.py
PRIORITY_TOP_ANTREA_POLICY = 64990

# reg0[0..15] traffic source marks
MARK_TUNNEL, MARK_GATEWAY, MARK_POD = 0, 1, 2
SOURCE_BITS = (0, 15)
OUTPUT_RESOLVED_BIT = 16
REWRITE_MAC_BIT = 19


@dataclass(frozen=True)
class PeerNode:
    """A peer Node as the node route controller sees it (spec §4.1)."""

    name: str
    node_ip: str
    pod_cidr: str

    @property
    def gateway_ip(self) -> str:
        net = ipaddress.IPv4Network(self.pod_cidr, strict=False)
        return str(net.network_address + 1)


@dataclass(frozen=True)
class PipelineConfig:
    service_cidr: str = "10.96.0.0/12"
    traceflow: bool = True
    round_num: int = 1
    proxy: bool = False  # the AntreaProxy gate: Services in OVS (agent/openflow/service.py)
    proxy_all: bool = False  # antreaProxy.proxyAll: NodePorts too
    antrea_policy: bool = False  # the AntreaPolicy gate: tables 45 and 85 for Antrea-native policies


class FlowBuilder:
    """Builds one node's flows. `seq` numbers flows in creation order for deterministic output."""

    def __init__(self, net: NodeNetwork, cfg: PipelineConfig, pipeline: T.Pipeline | None = None):
        self.net = net
        self.cfg = cfg
        self.p = pipeline or T.pipeline_for(cfg.proxy, cfg.antrea_policy)
        self.gw = Port(net.gateway_ofport, net.gateway_name)
        self.tun = Port(net.tunnel_ofport, net.tunnel_name)
        self._seq = 0

    # -------------------------------------------------------------------------------- helpers
    def cookie(self, cat: Category) -> int:
        return cookie(self.cfg.round_num, cat)

    def flow(self, table: int, priority: int, m: Match, actions: list[Action], cat: Category,
             hard_timeout: int = 0, object_id: int = 0) -> Flow:
        self._seq += 1
        return Flow(table, priority, m, tuple(actions), cookie(self.cfg.round_num, cat, object_id), hard_timeout,
                    self._seq)

    def goto_next(self, table: int) -> Goto:
        return Goto(self.p.next(table))

    # -------------------------------------------------------------------------------- fixed flows
    def table_miss_flows(self) -> list[Flow]:
        out = []
        for t in self.p.tables:
            if t.miss == "none":
                continue
            actions: list[Action] = [] if t.miss == "drop" else [self.goto_next(t.id)]
            out.append(self.flow(t.id, PRIORITY_MISS, match(), actions, Category.DEFAULT))
        return out

    def arp_normal_flow(self) -> list[Flow]:
        return [self.flow(T.ARP_RESPONDER, PRIORITY_LOW, match(proto="arp"), [Normal()], Category.DEFAULT)]

    def l2_output_flow(self) -> list[Flow]:
        m = match(proto="ip", reg0=reg_match(1, (OUTPUT_RESOLVED_BIT, OUTPUT_RESOLVED_BIT)))
        return [self.flow(T.OUTPUT, PRIORITY_NORMAL, m, [OutputReg("NXM_NX_REG1[]")], Category.DEFAULT)]

    def conntrack_flows(self) -> list[Flow]:
        src_gw = reg_match(MARK_GATEWAY, SOURCE_BITS)
        commit_next = self.p.next(T.CT_COMMIT)
        # AntreaProxy: conntrack also applies the connections' NAT (a Service's DNAT, its reverse)
        nat = NAT() if self.cfg.proxy else None
        return [
            self.flow(T.CT_ZONE, PRIORITY_NORMAL, match(proto="ip"),
                      [CT(table=T.CT_STATE, zone=CT_ZONE, nat=nat)], Category.DEFAULT),
            self.flow(T.CT_STATE, PRIORITY_HIGH,
                      match(ct_state="-new+trk", ct_mark=f"0x{GATEWAY_CT_MARK:x}", proto="ip", reg0=src_gw),
                      [self.goto_next(T.CT_STATE)], Category.DEFAULT),
            self.flow(T.CT_STATE, PRIORITY_LOW, match(ct_state="+inv+trk", proto="ip"), [], Category.DEFAULT),
            self.flow(T.CT_COMMIT, PRIORITY_NORMAL, match(ct_state="+new+trk", proto="ip", reg0=src_gw),
                      [CT(commit=True, table=commit_next, zone=CT_ZONE,
                          exec_=(Load(GATEWAY_CT_MARK, "NXM_NX_CT_MARK"),))], Category.DEFAULT),
            self.flow(T.CT_COMMIT, PRIORITY_LOW, match(ct_state="+new+trk", proto="ip"),
                      [CT(commit=True, table=commit_next, zone=CT_ZONE)], Category.DEFAULT),
        ]

    def established_bypass_flows(self) -> list[Flow]:
        est = match(ct_state="-new+est", proto="ip")
        out = [
            self.flow(T.EGRESS_RULE, PRIORITY_HIGH, est, [self.goto_next(T.EGRESS_DEFAULT)], Category.DEFAULT),
            self.flow(T.INGRESS_RULE, PRIORITY_HIGH, est, [self.goto_next(T.INGRESS_DEFAULT)],
                      Category.DEFAULT),
        ]
        if self.cfg.antrea_policy:  # connections already allowed skip the Antrea-native tables too
            out += [
                self.flow(T.ANP_EGRESS_RULE, PRIORITY_TOP_ANTREA_POLICY, est, [self.goto_next(T.EGRESS_DEFAULT)],
                          Category.DEFAULT),
                self.flow(T.ANP_INGRESS_RULE, PRIORITY_TOP_ANTREA_POLICY, est,
                          [self.goto_next(T.INGRESS_DEFAULT)], Category.DEFAULT),
            ]
        return out

    # -------------------------------------------------------------------------------- gateway
    def gateway_flows(self) -> list[Flow]:
        n = self.net
        gw = self.gw
        return [
            self.flow(T.CLASSIFIER, PRIORITY_NORMAL, match(in_port=gw),
                      [Load(MARK_GATEWAY, "NXM_NX_REG0", SOURCE_BITS), Goto(T.SPOOF_GUARD)], Category.DEFAULT),
            self.flow(T.SPOOF_GUARD, PRIORITY_NORMAL, match(proto="ip", in_port=gw), [self.goto_next(T.SPOOF_GUARD)],
                      Category.DEFAULT),
            self.flow(T.SPOOF_GUARD, PRIORITY_NORMAL,
                      match(proto="arp", in_port=gw, arp_spa=n.gateway_ip, arp_sha=n.gateway_mac),
                      [Goto(T.ARP_RESPONDER)], Category.DEFAULT),
            self.flow(T.CT_STATE, PRIORITY_NORMAL,
                      match(ct_state="-new+trk", ct_mark=f"0x{GATEWAY_CT_MARK:x}", proto="ip"),
                      [Load(int(n.gateway_mac.replace(":", ""), 16), "NXM_OF_ETH_DST"),
                       self.goto_next(T.CT_STATE)], Category.DEFAULT),
            self.flow(T.L3_FORWARDING, PRIORITY_NORMAL,
                      match(proto="ip", dl_dst=GLOBAL_VMAC, nw_dst=n.gateway_ip),
                      [SetField("eth_dst", n.gateway_mac), Goto(T.L2_FORWARDING)], Category.DEFAULT),
            self.flow(T.L2_FORWARDING, PRIORITY_NORMAL, match(dl_dst=n.gateway_mac),
                      [Load(n.gateway_ofport, "NXM_NX_REG1"),
                       Load(1, "NXM_NX_REG0", OUTPUT_RESOLVED_BIT),
                       self.goto_next(T.L2_FORWARDING)], Category.DEFAULT),
            self.flow(T.INGRESS_RULE, PRIORITY_HIGH, match(proto="ip", nw_src=n.gateway_ip),
                      [Goto(T.CT_COMMIT)], Category.DEFAULT),
        ] + ([  # the host's own traffic (kubelet probes) bypasses Antrea-native ingress rules as K8s ones
            self.flow(T.ANP_INGRESS_RULE, PRIORITY_TOP_ANTREA_POLICY, match(proto="ip", nw_src=n.gateway_ip),
                      [Goto(T.CT_COMMIT)], Category.DEFAULT)] if self.cfg.antrea_policy else [])

    # -------------------------------------------------------------------------------- tunnel
    def tunnel_classifier_flow(self) -> list[Flow]:
        actions: list[Action] = []
        if self.cfg.traceflow:
            actions.append(Move("NXM_NX_TUN_METADATA0[28..31]", "NXM_NX_REG9[28..31]"))
        actions += [Load(MARK_TUNNEL, "NXM_NX_REG0", SOURCE_BITS), Load(1, "NXM_NX_REG0", REWRITE_MAC_BIT),
                    Goto(T.CT_ZONE)]
        return [self.flow(T.CLASSIFIER, PRIORITY_NORMAL, match(in_port=self.tun), actions, Category.DEFAULT)]

    # -------------------------------------------------------------------------------- service
    def service_cidr_flow(self) -> list[Flow]:
        return [self.flow(T.DNAT, PRIORITY_NORMAL, match(proto="ip", nw_dst=ip_match(self.cfg.service_cidr)),
                          [SetField("eth_dst", self.net.gateway_mac),  # [ART] only (spec §14 #6)
                           Load(self.net.gateway_ofport, "NXM_NX_REG1"),
                           Load(1, "NXM_NX_REG0", OUTPUT_RESOLVED_BIT),
                           Goto(T.CT_COMMIT)], Category.SERVICE)]

    # -------------------------------------------------------------------------------- peer nodes
    def peer_node_flows(self, peer: PeerNode) -> list[Flow]:
        gw_ip = peer.gateway_ip
        return [
            self.flow(T.ARP_RESPONDER, PRIORITY_NORMAL, match(proto="arp", arp_tpa=gw_ip, arp_op=1), [
                Move("NXM_OF_ETH_SRC[]", "NXM_OF_ETH_DST[]"),
                SetField("eth_src", GLOBAL_VMAC),
                Load(2, "NXM_OF_ARP_OP"),
                Move("NXM_NX_ARP_SHA[]", "NXM_NX_ARP_THA[]"),
                SetField("arp_sha", GLOBAL_VMAC),
                Move("NXM_OF_ARP_SPA[]", "NXM_OF_ARP_TPA[]"),
                SetField("arp_spa", gw_ip),
                InPort(),
            ], Category.NODE),
            self.flow(T.L3_FORWARDING, PRIORITY_NORMAL, match(proto="ip", nw_dst=ip_match(peer.pod_cidr)), [
                DecTTL(),
                SetField("eth_src", self.net.gateway_mac),
                SetField("eth_dst", GLOBAL_VMAC),
                Load(self.net.tunnel_ofport, "NXM_NX_REG1"),
                Load(1, "NXM_NX_REG0", OUTPUT_RESOLVED_BIT),
                SetField("tun_dst", peer.node_ip),
                Goto(T.CT_COMMIT),
            ], Category.NODE),
        ]

    # -------------------------------------------------------------------------------- pods
    def pod_flows(self, i: PodInterface) -> list[Flow]:
        port = Port(i.ofport, i.interface)
        return [
            self.flow(T.CLASSIFIER, PRIORITY_LOW, match(in_port=port),
                      [Load(MARK_POD, "NXM_NX_REG0", SOURCE_BITS), Goto(T.SPOOF_GUARD)], Category.POD),
            self.flow(T.SPOOF_GUARD, PRIORITY_NORMAL,
                      match(proto="ip", in_port=port, dl_src=i.mac, nw_src=i.ip), [self.goto_next(T.SPOOF_GUARD)],
                      Category.POD),
            self.flow(T.SPOOF_GUARD, PRIORITY_NORMAL,
                      match(proto="arp", in_port=port, arp_spa=i.ip, arp_sha=i.mac), [Goto(T.ARP_RESPONDER)],
                      Category.POD),
            self.flow(T.L3_FORWARDING, PRIORITY_NORMAL, self._to_local_pod(i.ip),
                      [SetField("eth_src", self.net.gateway_mac), SetField("eth_dst", i.mac), DecTTL(),
                       Goto(T.L2_FORWARDING)], Category.POD),
            self.flow(T.L2_FORWARDING, PRIORITY_NORMAL, match(dl_dst=i.mac),
                      [Load(i.ofport, "NXM_NX_REG1"), Load(1, "NXM_NX_REG0", OUTPUT_RESOLVED_BIT),
                       self.goto_next(T.L2_FORWARDING)], Category.POD),
        ]

    def _to_local_pod(self, ip: str) -> Match:
        """Table 70's "to this local Pod, rewrite the MACs" match: packets from the tunnel carry the
        virtual MAC; with AntreaProxy, reg0[19] instead, which the tunnel classifier and the Service
        tables set (a DNATed packet still has the gateway's MAC, spec §16)."""
        if self.cfg.proxy:
            return match(proto="ip", reg0=reg_match(1, (REWRITE_MAC_BIT, REWRITE_MAC_BIT)), nw_dst=ip)
        return match(proto="ip", dl_dst=GLOBAL_VMAC, nw_dst=ip)

    # -------------------------------------------------------------------------------- init
    def fixed_flows(self) -> list[Flow]:
        """What the agent installs at start-up, before Pods, peers and policies (spec §2 step 6)."""
        if self.cfg.proxy:  # the Service CIDR flow gives way to AntreaProxy's own tables
            from pyantrea.agent.openflow.service import ServiceFlowBuilder

            services = ServiceFlowBuilder(self).fixed_flows()
        else:
            services = self.service_cidr_flow()
        return (self.table_miss_flows() + self.arp_normal_flow() + self.l2_output_flow()
                + self.conntrack_flows() + self.established_bypass_flows() + self.gateway_flows()
                + self.tunnel_classifier_flow() + services)
