"""`antctl traceflow -o text`: each hop in a sentence or two, as the seed article explains its walk —
which table, what it is for, which flow matched and why, what it did.

The explanations read the matched flow (its match and actions, as ofproto/trace printed them) and a
little context (the node's ports, its policy rules, the packet's MACs as the actions rewrote them);
nothing here decides where the packet goes.
"""

from __future__ import annotations

import re
from typing import Any

from pyantrea.agent.openflow import tables as T
from pyantrea.agent.openflow.pipeline import GLOBAL_VMAC
from pyantrea.traceflow.engine import Engine, flow_fields
from pyantrea.traceflow.model import HostStep, PassStep, Path

PURPOSE = {
    0: "sorts packets by the port they came in on",
    10: "checks that a Pod sends with its own MAC and IP",
    20: "answers ARP for the peer Nodes' gateways and switches other ARP normally",
    30: "sends every IP packet through conntrack (zone 65520)",
    31: "acts on the connection state conntrack returned",
    40: "sends traffic for Service (ClusterIP) addresses to the gateway, for kube-proxy",
    50: "holds the egress rules of the NetworkPolicies that apply to this node's Pods",
    60: "drops what a Pod isolated for egress sends when no egress rule allowed it",
    70: "routes: to the peer Nodes through the tunnel, and from the tunnel to local Pods",
    80: "picks the output port from the destination MAC",
    90: "holds the ingress rules of the NetworkPolicies that apply to this node's Pods",
    100: "drops what goes to a Pod isolated for ingress when no ingress rule allowed it",
    105: "commits new connections to conntrack",
    110: "sends the packet out of the port chosen in reg1",
    45: "holds the egress rules of the Antrea-native policies of every tier, ordered by priority",
    85: "holds the ingress rules of the Antrea-native policies of every tier, ordered by priority",
}


# AntreaProxy (the gate on): what differs
PROXY_PURPOSE = {
    29: "restores the destination of replies to the hairpin address",
    30: "sends every IP packet through conntrack (zone 65520), which also applies the connections' NAT",
    40: "holds the endpoints ClientIP session affinity remembered; else marks the packet for load balancing",
    41: "sends a new connection to a Service port to that port's select group",
    42: "DNATs to the endpoint the group picked, committing the connection with ct_mark 0x21",
    106: "rewrites the source of a Pod that reached itself through a Service (hairpin)",
}


def table_name(t: int, proxy: bool = False) -> str:
    return T.table_name(t, proxy)


def purpose(t: int, proxy: bool = False) -> str:
    if proxy and t in PROXY_PURPOSE:
        return PROXY_PURPOSE[t]
    return PURPOSE.get(t, "")


def _mac_int(v: str) -> str:
    n = int(v, 0)
    return ":".join(f"{(n >> s) & 0xFF:02x}" for s in range(40, -1, -8))


class _State:
    """The packet's MACs and output register as the actions change them (for the sentences), and with
    AntreaProxy the packet after the Service's DNAT."""

    def __init__(self, flow: str, pkt: Any = None):
        f = flow_fields(flow)
        self.dl_src = f.get("dl_src", "")
        self.dl_dst = f.get("dl_dst", "")
        self.reg1: int | None = None
        self.pkt = pkt

    def apply(self, actions: tuple[str, ...]) -> None:
        for a in actions:
            m = re.search(r"nat\(dst=([0-9.]+)(?::(\d+))?\)", a)
            if m and a.startswith("ct(") and self.pkt is not None:
                self.pkt = self.pkt.with_(dst=m[1], dport=int(m[2]) if m[2] else self.pkt.dport)
            m = re.match(r"set_field:([0-9.]+)->ip_src", a)
            if m and self.pkt is not None:
                self.pkt = self.pkt.with_(src=m[1])
            m = re.match(r"set_field:([0-9a-f:]{17})->eth_(src|dst)", a)
            if m:
                setattr(self, "dl_" + m[2], m[1])
            m = re.match(r"load:(0x[0-9a-fA-F]+)->NXM_OF_ETH_DST\[\]", a)
            if m:
                self.dl_dst = _mac_int(m[1])
            m = re.match(r"move:NXM_OF_ETH_SRC\[\]->NXM_OF_ETH_DST\[\]", a)
            if m:
                self.dl_dst = self.dl_src
            m = re.match(r"load:(0x[0-9a-fA-F]+|\d+)->NXM_NX_REG1\[\]", a)
            if m:
                self.reg1 = int(m[1], 0)


class Explainer:
    def __init__(self, engine: Engine):
        self.e = engine

    # ----------------------------------------------------------------------------- helpers
    def port_name(self, step: PassStep, ofport: int | str | None) -> str:
        if ofport is None:
            return "?"
        n = int(ofport, 0) if isinstance(ofport, str) else ofport
        return step.result.port_names.get(n, str(n))

    def mac_owner(self, node: str, mac: str) -> str:
        net = self.e.net(node)
        if mac == net.gateway_mac:
            return "the gateway antrea-gw0"
        if mac == GLOBAL_VMAC:
            return "the virtual MAC"
        for i in net.interfaces:
            if i.mac == mac:
                return f"Pod {i.pod_key}"
        return mac

    def port_owner(self, node: str, name: str) -> str:
        net = self.e.net(node)
        if name == net.gateway_name:
            return "the gateway to the host"
        if name == net.tunnel_name:
            return "the Geneve tunnel"
        pod = self.e.iface_pod(node, name)
        return f"Pod {pod}'s port" if pod else "a port"

    def peer_of_cidr(self, cidr: str) -> tuple[str, str]:
        for n in self.e.cluster.networks:
            if n.pod_cidr == cidr:
                return n.name, n.node_ip
        return "?", "?"

    def peer_of_gw(self, gw: str) -> str:
        for n in self.e.cluster.networks:
            if n.gateway_ip == gw:
                return n.name
        return "?"

    def rule_text(self, node: str, cid: int) -> str:
        r = self.e.rules(node).get(cid)
        return self.e.rule_label(r) if r is not None else f"conjunction {cid}"

    # ----------------------------------------------------------------------------- one hop
    def hop(self, step: PassStep, h: Any, st: _State) -> str:
        t, prio = h.table, h.priority
        f = flow_fields(h.match)
        acts = h.flow_actions
        node = step.node
        net = self.e.net(node)
        pkt = st.pkt if st.pkt is not None else step.packet
        proxy = self.e.proxy
        head = f"table {t} {table_name(t, proxy)} ({purpose(t, proxy)}), priority {prio}"
        if h.match:
            head += f" [{h.match}]"
        s = ""
        drop = acts == ("drop",)
        proxied = self._proxy_hop(step, h, f, pkt, st) if proxy else None
        if proxied is not None:
            s = proxied
        elif t == T.CLASSIFIER:
            if "in_port" in f:
                name = self.port_name(step, f["in_port"])
                if name == net.tunnel_name:
                    s = (f"It came in on {name} (port {f['in_port']}), the Geneve tunnel from {self.tunnel_peer(step)}: "
                         "reg0[0..15]=0 marks it as tunnel traffic, reg0[19]=1, the Traceflow tag is copied from the "
                         "Geneve option, and it skips SpoofGuard.")
                elif name == net.gateway_name:
                    s = (f"It came in on {name} (port {f['in_port']}), the gateway to the host: reg0[0..15]=1 marks it "
                         "as gateway traffic.")
                else:
                    s = (f"It came in on {name} (port {f['in_port']}), {self.port_owner(node, name)}: reg0[0..15]=2 "
                         "marks it as sent by a local Pod.")
            else:
                s = "No port flow matched this input port: dropped."
        elif t == T.SPOOF_GUARD:
            if drop:
                s = "No flow accepts this source MAC/IP on this port (spoofed, or neither IP nor ARP): dropped."
            elif "arp" in f:
                who = "the host, with the gateway's own" if f.get("arp_spa") == net.gateway_ip else "the Pod, with its own"
                s = f"An ARP packet from {who} address {f.get('arp_spa')} and MAC {f.get('arp_sha')}: on to the ARP responder."
            elif "dl_src" in f:
                s = (f"The source MAC {f['dl_src']} and IP {f.get('nw_src')} are those of "
                     f"{self.port_owner(node, self.port_name(step, f.get('in_port')))}: on to conntrack.")
            else:
                s = ("Packets from the gateway are not checked: kube-proxy's DNATed packets come back through it "
                     "with Pod source addresses. On to conntrack.")
        elif t == T.ARP_RESPONDER:
            if "arp_tpa" in f:
                peer = self.peer_of_gw(f["arp_tpa"])
                s = (f"The request asks who has {f['arp_tpa']}, the gateway of {peer} (the next hop of the onlink route "
                     f"to its Pod CIDR). The flow answers it itself: the request becomes a reply from the virtual MAC "
                     f"{GLOBAL_VMAC}, sent back out of the port it came in on (IN_PORT).")
            elif prio == 190:
                s = "Other ARP is switched by OVS's NORMAL action (MAC learning), e.g. a Pod asking for its gateway."
            else:
                s = "Dropped."
        elif t == T.CT_ZONE and not proxy:
            st_txt = {"new": "new (trk|new)", "established": "established (trk,est)",
                      "reply": "a reply of an established connection (trk,est,rpl)"}[step.conntrack]
            mk = f" with ct_mark=0x{step.ct_mark:x}" if step.ct_mark else ""
            s = (f"ct(table=31,zone=65520): conntrack looks the packet up and the pipeline resumes in table 31; "
                 f"the connection is {st_txt}{mk}.")
        elif t == T.CT_STATE:
            if prio == 200:
                s = (f"A reply (-new+trk) of a connection first seen from the gateway (ct_mark=0x20, committed by table "
                     f"105 on this node): its destination MAC becomes the gateway's ({net.gateway_mac}), so it goes back "
                     "to the host, where conntrack reverses kube-proxy's DNAT.")
            elif prio == 210:
                s = ("A later packet of a connection first seen from the gateway, from the gateway again: its "
                     "destination MAC is kept.")
            elif prio == 190:
                s = "conntrack says the packet is invalid: dropped."
            elif step.conntrack == "new":
                s = "A new connection: nothing to do here."
            else:
                s = ("The connection did not enter this node through the gateway (no ct_mark 0x20): nothing to "
                     "change.")
        elif t == T.DNAT:
            if prio == 200:
                s = (f"{pkt.dst} is in the Service CIDR {f.get('nw_dst')}: a ClusterIP, which only kube-proxy knows. "
                     "The packet goes to the gateway (destination MAC the gateway's, reg1=2, reg0[16]=1) and jumps to "
                     "table 105, skipping the policy tables: they apply when it comes back DNATed.")
            else:
                s = f"{pkt.dst} is not a Service address: on to the egress rules."
        elif t in (T.ANP_EGRESS_RULE, T.ANP_INGRESS_RULE):
            s = self._antrea_table(step, h, f, "egress" if t == T.ANP_EGRESS_RULE else "ingress", pkt)
        elif t in (T.EGRESS_DEFAULT, T.INGRESS_DEFAULT) and "conj_id" in f:  # a Baseline tier rule
            s = self._antrea_table(step, h, f, "egress" if t == T.EGRESS_DEFAULT else "ingress", pkt)
        elif t == T.EGRESS_RULE:
            s = self._rule_table(step, h, f, "egress", pkt)
        elif t == T.EGRESS_DEFAULT:
            if drop:
                o = self._iso(step, "Out", f.get("nw_src", pkt.src))
                s = (f"The source {self.e.who(f.get('nw_src', pkt.src))} is isolated for egress{o}; no egress rule "
                     "allowed this packet: dropped.")
            else:
                s = "The source is not isolated for egress: the packet may go."
        elif t == T.L3_FORWARDING:
            s = self._l3(step, h, f, st)
        elif t == T.L2_FORWARDING:
            if "dl_dst" in f:
                port = None
                for a in acts:
                    m = re.match(r"load:(0x[0-9a-fA-F]+|\d+)->NXM_NX_REG1\[\]", a)
                    if m:
                        port = int(m[1], 0)
                s = (f"The destination MAC {f['dl_dst']} is {self.mac_owner(node, f['dl_dst'])}'s: output port "
                     f"{port} ({self.port_name(step, port)}) goes into reg1, and reg0[16]=1 marks it resolved.")
            else:
                s = (f"No port has the destination MAC {st.dl_dst}: the output port stays unresolved, and table 110 "
                     "will drop the packet.")
        elif t == T.INGRESS_RULE:
            s = self._rule_table(step, h, f, "ingress", pkt)
        elif t == T.INGRESS_DEFAULT:
            if drop:
                reg1 = f.get("reg1")
                port = int(reg1, 0) if reg1 else None
                o = self._iso(step, "In", port)
                s = (f"The destination {self.e.who(pkt.dst)}, on port {port}, is isolated for ingress{o}; no ingress "
                     "rule allowed this packet: dropped.")
            else:
                s = "The destination is not isolated for ingress: the packet may go."
        elif t == T.CT_COMMIT:
            if prio == 200:
                s = ("A new connection that came in from the gateway: committed to conntrack with ct_mark=0x20, so "
                     "that its replies are sent back to the gateway (table 31).")
            elif prio == 190:
                s = "A new connection: committed to conntrack (no mark)."
            else:
                s = "Not a new connection: nothing to commit."
        elif t == T.OUTPUT:
            if drop:
                s = "No output port was resolved (reg0[16]=0): dropped."
            else:
                tr = step.result.trace
                port = tr.out_port if tr is not None else st.reg1
                name = self.port_name(step, port)
                extra = ""
                if name == net.tunnel_name and tr is not None and tr.tun_dst:
                    extra = f", Geneve to {tr.tun_dst} ({self.e.node_of_ip(tr.tun_dst) or '?'})"
                s = f"Output to the port in reg1: {port} ({name}, {self.port_owner(node, name)}{extra})."
        else:
            s = f"Actions: {','.join(acts)}."
        st.apply(acts)
        return f"{head}: {s}"

    def _proxy_hop(self, step: PassStep, h: Any, f: dict[str, str], pkt: Any, st: _State) -> str | None:
        """AntreaProxy's sentences (the gate on); None: the table's usual one."""
        t, prio, acts = h.table, h.priority, h.flow_actions
        lb = step.lb
        if t == T.SERVICE_HAIRPIN:
            if prio == 200:
                return ("A reply to the hairpin address 169.254.169.252: its destination becomes its own source "
                        "again (the Pod that reached itself), reg0[18]=1 sends it back where it came from.")
            return "Not addressed to the hairpin address: on to conntrack."
        if t == T.CT_ZONE:
            st_txt = {"new": "new (trk|new)", "established": "established (trk,est)",
                      "reply": "a reply of an established connection (trk,est,rpl)"}[step.conntrack]
            mk = f" with ct_mark=0x{step.ct_mark:x}" if step.ct_mark else ""
            un = f" {step.unnat[0].upper()}{step.unnat[1:]}." if step.unnat else ""
            return (f"ct(table=31,zone=65520,nat): conntrack looks the packet up (and applies the connection's "
                    f"NAT to its later packets and replies); the connection is {st_txt}{mk}.{un}")
        if t == T.CT_STATE:
            if prio == 200 and f.get("ct_mark") == "0x21":
                return ("A later packet or a reply of a Service connection (ct_mark 0x21, NATed by conntrack): "
                        "reg0[19]=1 (rewrite the MACs) and straight to the egress rules, skipping the Service tables.")
            if prio == 0:
                return ("Not a tracked Service connection: SessionAffinity, then ServiceLB (resubmits) decide "
                        "whether it goes to a Service.")
            return None
        if t == T.SESSION_AFFINITY:
            if prio == 200:
                ep = _reg_ip(acts)
                return (f"ClientIP session affinity: this client reached the Service within the timeout, so it "
                        f"keeps the endpoint learned then ({ep}); reg4[16..18]=0b010 (selected).")
            return "No affinity entry for this client: reg4[16..18]=0b001 marks it for load balancing."
        if t == T.SERVICE_LB:
            if prio == 0:
                return f"{pkt.dst} is not a Service port: no load balancing."
            if any(a.startswith("learn(") for a in acts):
                return ("ClientIP session affinity: the learn action remembers the endpoint the group picked for "
                        "this client in SessionAffinity (for the Service's timeout), then on to EndpointDNAT.")
            group = next((a for a in acts if a.startswith("group:")), "")
            if lb is None:
                return f"{f.get('nw_dst')}:{f.get('tp_dst')} is a Service port: {group}."
            if lb.endpoint is None:
                return (f"{lb.address} is Service {lb.service}'s port ({lb.protocol}): group {lb.group_id}, which "
                        "has no ready endpoint: its only bucket marks reg4[19].")
            return (f"{lb.address} is Service {lb.service}'s port ({lb.protocol}): its select group {lb.group_id} "
                    f"(one bucket per ready endpoint, equal weights) picks bucket {lb.bucket} of {lb.buckets}, "
                    f"endpoint {lb.endpoint}: reg3/reg4 get its IP and port, reg0[19]=1. (Traced with "
                    f"dp_hash={lb.dp_hash}, the datapath hash that picks that bucket.)")
        if t == T.ENDPOINT_DNAT:
            if any(a.startswith(("CONTROLLER", "controller")) for a in acts):
                return ("The Service port has no ready endpoint (reg4[19]): the packet goes to the agent, which "
                        "rejects the connection (TCP RST / ICMP port unreachable).")
            m = re.search(r"nat\(dst=([0-9.:]+)\)", ",".join(acts))
            if m:
                return (f"DNAT to {m[1]} ({self.e.who(m[1].split(':')[0])}): ct(commit,nat) commits the connection "
                        "with ct_mark 0x21; the pipeline resumes at the egress rules with the DNATed packet, so "
                        "NetworkPolicy applies to the endpoint.")
            if prio == 190:
                return "The endpoint affinity remembered is gone: back to ServiceLB to pick another."
            return "No endpoint selected: not Service traffic."
        if t == T.L3_FORWARDING and "reg0" in f and "dl_dst" not in f:
            return (f"reg0[19] is set (a Service's DNAT, or the tunnel) and {f.get('nw_dst')} is local "
                    f"{self.e.who(f.get('nw_dst', ''))}: the source MAC becomes the gateway's, the destination MAC "
                    "the Pod's, and the TTL is decremented.")
        if t == T.CT_COMMIT and prio == 210:
            return "A Service connection EndpointDNAT already committed (ct_mark 0x21): no second commit."
        if t == T.HAIRPIN_SNAT:
            if prio == 200:
                return ("The Pod reached itself through a Service: its source becomes 169.254.169.252 (so the "
                        "reply comes back through br-int), reg0[18]=1.")
            return "Not a hairpin: on to output."
        if t == T.OUTPUT and prio == 210:
            return "reg0[18] (hairpin): output back into the port it came in on (IN_PORT)."
        return None

    def tunnel_peer(self, step: PassStep) -> str:
        f = flow_fields(step.result.flow)
        src = f.get("tun_src")
        n = self.e.node_of_ip(src) if src else None
        return f"{n} ({src})" if n else "a peer Node"

    def _iso(self, step: PassStep, direction: str, key: Any) -> str:
        from pyantrea.traceflow.engine import _in

        rules = []
        for r in self.e.rules(step.node).values():
            if r.direction != direction:
                continue
            if direction == "Out" and any(a.kind == "net" and _in(str(key), a.value) for a in r.from_):
                rules.append(r)
            if direction == "In" and any(a.kind == "ofport" and key is not None and int(a.value) == key for a in r.to):
                rules.append(r)
        if not rules:
            return ""
        pols = sorted({r.policy for r in rules})
        return f" by {', '.join(pols)} [{'; '.join(self.e.rule_label(r) for r in rules)}]"

    def _antrea_table(self, step: PassStep, h: Any, f: dict[str, str], direction: str, pkt: Any) -> str:
        """A hop of the Antrea-native tables (45, 85) or a Baseline rule (60, 100)."""
        nxt = "l3Forwarding" if direction == "egress" else "ConntrackCommit"
        if "conj_id" not in f:
            if h.priority == 0:
                k8s = "EgressRule" if direction == "egress" else "IngressRule"
                return (f"No Antrea-native {direction} rule of any tier matches: on to {k8s}, the Kubernetes "
                        "NetworkPolicies.")
            if "nw_src" in f:
                return (f"The source is this node's gateway IP {f['nw_src']} (kubelet probes, host traffic): "
                        "Antrea-native ingress rules are skipped.")
            return (f"An established connection: its first packet was checked, so the Antrea-native {direction} "
                    "rules are skipped.")
        cid = int(f["conj_id"])
        got = self.e.antrea_rule(step.node, h)
        label = got[1] if got is not None else f"conjunction {cid}"
        action = got[0].action if got is not None else "?"
        port = f"{pkt.protocol.upper()}/{pkt.dport}" if pkt.dport is not None else pkt.protocol.upper()
        what = (f"{pkt.src} -> {pkt.dst} {port}" if pkt is not None else "the packet")
        head = (f"The packet ({what}) completes conjunction {cid} at OpenFlow priority {h.priority}: the first "
                f"{direction} rule it matches in tier, policy priority and rule order is {label}.")
        reg = "reg5" if direction == "egress" else "reg6"
        if action == "Allow":
            return f"{head} Allow: {reg}={cid} records the rule; on to {nxt}, past the remaining policy tables."
        if action == "Drop":
            return f"{head} Drop: dropped."
        if action == "Reject":
            return (f"{head} Reject: the packet goes to the agent (packet-in), which sends the client a TCP RST "
                    "(TCP) or an ICMP port unreachable (other protocols) in its place.")
        if action == "Pass":
            tier = got[0].tier if got is not None else "?"
            k8s = "EgressRule" if direction == "egress" else "IngressRule"
            return (f"{head} Pass: the remaining Antrea-native tiers are skipped (passed from tier {tier}); on to "
                    f"{k8s}: Kubernetes NetworkPolicies, then the Baseline tier, decide.")
        return head

    def _rule_table(self, step: PassStep, h: Any, f: dict[str, str], direction: str, pkt: Any = None) -> str:
        pkt = pkt if pkt is not None else step.packet
        nxt = "l3Forwarding" if direction == "egress" else "ConntrackCommit"
        dflt = "EgressDefaultRule" if direction == "egress" else "IngressDefaultRule"
        if h.priority == 210 and "nw_src" in f:
            return (f"The source is this node's gateway IP {f['nw_src']} (kubelet probes, host traffic): ingress "
                    "rules are skipped.")
        if h.priority == 210:
            return f"An established connection: its first packet was checked, so the {direction} rules are skipped."
        if "conj_id" in f:
            cid = int(f["conj_id"])
            reg = "reg5" if direction == "egress" else "reg6"
            port = f"{pkt.protocol.upper()}/{pkt.dport}" if pkt.dport is not None else pkt.protocol.upper()
            if direction == "egress":
                why = f"its source {pkt.src} is a Pod the rule applies to, and {pkt.dst} with {port} is allowed"
            else:
                why = f"its source {pkt.src} and {port} are allowed to reach {self.e.who(pkt.dst)}"
            return (f"The packet completes conjunction {cid}, {self.rule_text(step.node, cid)}: {why}. {reg}={cid} "
                    f"records the rule for Traceflow; on to {nxt}, skipping {dflt}.")
        src_pod = self.e.pod_of_ip(pkt.src)
        local_src = src_pod is not None and self.e.pod_iface(step.node, src_pod.key) is not None
        if direction == "egress" and step.entry != "pod" and not local_src:
            return (f"No egress rule matches: the source {pkt.src} is not a Pod of this node, so no egress conjunction "
                    f"can complete. On to {dflt}.")
        return f"No {direction} rule allows this packet: on to {dflt}, which drops it if the Pod is isolated."

    def _l3(self, step: PassStep, h: Any, f: dict[str, str], st: _State) -> str:
        net = self.e.net(step.node)
        acts = h.flow_actions
        if any("tun_dst" in a for a in acts):
            cidr = f.get("nw_dst", "")
            peer, ip = self.peer_of_cidr(cidr)
            dst = st.pkt.dst if st.pkt is not None else step.packet.dst
            return (f"{dst} is in {peer}'s Pod CIDR {cidr}: decrement the TTL, set the source MAC to this "
                    f"gateway's and the destination MAC to the virtual MAC, and send it to the tunnel (reg1=1) with "
                    f"tun_dst={ip}. It skips L2 forwarding and the ingress tables: {peer} enforces ingress.")
        if f.get("dl_dst") == GLOBAL_VMAC:
            dst = f.get("nw_dst", "")
            if dst == net.gateway_ip:
                return "Arrived from the tunnel for this node's gateway IP: the destination MAC becomes the gateway's."
            return (f"Arrived with the virtual MAC for local {self.e.who(dst)}: the source MAC becomes the gateway's, the "
                    "destination MAC the Pod's, and the TTL is decremented (the tunnel hop counts as a router).")
        owner = self.mac_owner(step.node, st.dl_dst)
        why = ""
        if st.dl_dst == net.gateway_mac and step.entry == "tunnel":
            why = (" The tunnel-to-Pod flow does not match: it needs the virtual MAC, and table 31 set the gateway's, "
                   "so the packet goes to the host.")
        return f"No routing needed: the destination MAC {st.dl_dst} already names the next hop ({owner}).{why}"

    # ----------------------------------------------------------------------------- host legs
    def host(self, step: HostStep) -> list[str]:
        out: list[str] = []
        node = step.node
        if step.unnat:
            out.append(f"conntrack on {node} {step.unnat}.")
        if step.nat is not None:
            n = step.nat
            sep = n.endpoint_chain or "?"
            svc_chain = n.service_chain or "?"
            out.append(f"kube-proxy's iptables on {node} (nat PREROUTING): KUBE-SERVICES matches the cluster IP of "
                       f"{n.service} ({step.packet_in.protocol.upper()} {step.packet_in.dst}:{step.packet_in.dport}), "
                       f"{svc_chain} picks {sep} (probability {n.probability:.5g}), which DNATs to {n.dnat_to}.")
            for r in n.rules:
                out.append(f"    -t nat {r.line()}")
        if step.reject is not None:
            out.append(f"kube-proxy's iptables on {node} (filter KUBE-SERVICES) rejects the packet: "
                       f"{step.reject.rules[-1].line()}")
            return out
        if step.masquerade:
            out.append(f"{step.masquerade} rewrites the source to {step.packet_out.src}.")
        rt = step.route
        if rt is None:
            return out
        ttl = (f" TTL {step.packet_in.ttl} -> {step.packet_out.ttl}." if step.packet_out.ttl != step.packet_in.ttl
               else "")
        if rt.kind == "peer":
            out.append(f"The kernel routes {step.packet_out.dst} by `{rt.text}` (the route the agent writes for "
                       f"{rt.peer}).{ttl}")
            if step.arp is not None:
                t = step.arp.trace
                hops = " -> ".join(f"{h.table}" for h in (t.hops if t else ()))
                out.append(f"To reach the onlink next hop {rt.via} it ARPs out of antrea-gw0; br-int answers "
                           f"(tables {hops}, IN_PORT) with {step.arp_mac}, so the packet re-enters br-int from the "
                           f"gateway with dl_dst={step.arp_mac}.")
        elif rt.kind == "pod":
            i = None
            p = self.e.pod_of_ip(step.packet_out.dst)
            if p is not None:
                i = self.e.pod_iface(node, p.key)
            mac = f", and its neighbour entry is {i.mac} (Pod {p.key if p else '?'})" if i else ""
            out.append(f"The kernel routes {step.packet_out.dst} by `{rt.text}`{mac}: back into br-int from the "
                       f"gateway.{ttl}")
        elif rt.kind == "local":
            out.append(f"{step.packet_out.dst} is an address of {node}: the host itself receives the packet.")
        else:
            out.append(f"The kernel routes {step.packet_out.dst} by the {rt.text}: it leaves the overlay.{ttl}")
        return out

    # ----------------------------------------------------------------------------- a whole path
    def path(self, path: Path, title: str) -> str:
        lines = [title]
        fwd = path.extras.get("forward")
        if path.extras.get("noReply"):
            lines.append(f"No reply: {path.extras['noReply']}")
            return "\n".join(lines) + "\n"
        lb = next((s.lb for s in path.steps if isinstance(s, PassStep) and s.lb is not None), None)
        if lb is not None:
            if lb.endpoint is None:
                lines.append(f"AntreaProxy: Service {lb.service} ({lb.protocol} {lb.address}) has no ready endpoint "
                             f"(group {lb.group_id})")
            else:
                lines.append(f"AntreaProxy endpoint: {lb.endpoint} (group {lb.group_id}, bucket {lb.bucket} of "
                             f"{lb.buckets}, probability {path.probability:.5g}; no host leg)")
        elif path.endpoint:
            lines.append(f"kube-proxy endpoint: {path.endpoint} (picked with probability {path.probability:.5g})")
        if fwd is not None:
            lines.append(f"Request: {fwd.packet.describe()}: {fwd.outcome.action} ({fwd.outcome.reason}); "
                         f"the reply starts from the conntrack state it left.")
        o = path.outcome
        lines.append(f"Result: {o.action} on {o.node}: {o.reason}")
        cur = None
        n = 0
        for s in path.steps:
            if s.node != cur:
                cur = s.node
                lines.append("")
                lines.append(f"{s.node}")
            n += 1
            if isinstance(s, PassStep):
                who = self.port_owner(s.node, s.in_port)
                mk = f", ct_mark=0x{s.ct_mark:x}" if s.ct_mark else ""
                lines.append(f"  {n}. br-int pass: in from {s.in_port} ({who}), {s.packet.describe()}, "
                             f"conntrack: {s.conntrack}{mk}")
                lines.append(f"     $ {s.request.command()}")
                st = _State(s.result.flow, s.packet)
                for h in s.hops:
                    lines.append("     - " + self.hop(s, h, st))
                t = s.result.trace
                if t is not None and t.verdict == "output" and t.out_port is not None:
                    lines.append(f"     => out of {self.port_name(s, t.out_port)}")
                elif t is not None:
                    notes = "; ".join(t.notes)
                    lines.append("     => dropped" + (f" ({notes})" if notes else ""))
            else:
                lines.append(f"  {n}. host: {s.packet_in.describe()}")
                for x in self.host(s):
                    lines.append(f"     {x}")
        lines.append("")
        lines.append(f"=> {o.action}" + (f": Pod {o.pod}" if o.pod else "") + f" ({o.node})")
        for r in o.allowed_by:
            lines.append(f"   allowed by: {r}")
        for r in o.passed:
            lines.append(f"   passed by: {r}")
        if o.action in ("Dropped", "Rejected"):
            if o.table is not None:
                lines.append(f"   table {o.table} {o.table_name}" + (f": {o.flow}" if o.flow else ""))
            if o.policies:
                lines.append(f"   policies: {', '.join(o.policies)}")
            for r in o.rules:
                lines.append(f"   rule: {r}")
        return "\n".join(lines) + "\n"


def _reg_ip(acts: tuple[str, ...]) -> str:
    for a in acts:
        m = re.match(r"load:(0x[0-9a-fA-F]+)->NXM_NX_REG3\[\]", a)
        if m:
            n = int(m[1], 16)
            return ".".join(str((n >> sh) & 0xFF) for sh in (24, 16, 8, 0))
    return "?"


def render_text(engine: Engine, spec: Any, paths: list[Path]) -> str:
    ex = Explainer(engine)
    parts = []
    for p in paths:
        d = " (reply)" if p.direction == "reply" else ""
        title = f"Traceflow {spec.source} -> {spec.destination}{d}: {p.packet.describe()}"
        parts.append(ex.path(p, title))
    return "\n".join(parts)
