"""The Reject action of Antrea-native policies: the agent answers the client in the server's place.

A Reject rule's action flow sends the packet to the agent (`controller`, a packet-in from one of
the policy tables with a Policy cookie). The agent builds the answer with `reject_reply` (a TCP RST
for TCP, an ICMP port unreachable for the other protocols, addressed from the destination to the
client) and sends it back where the packet came from (packet-out):
- out of the input port when the client is on this node (a local Pod's port, or the gateway);
- back through the tunnel when the packet came from another node (an ingress rule on the server's
  node): to the client's node (the peer whose Pod CIDR holds the client's IP), with the virtual MAC
  as destination, as every packet between nodes carries it, so that the peer's pipeline delivers it.

The answer is not run through the pipeline (Antrea 2.x injects it into its own with a mark that lets
it pass the policy tables; sending it straight out needs no such mark, docs/decisions.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from pyantrea.agent.openflow import tables as T
from pyantrea.agent.openflow.cookie import Category, category_of
from pyantrea.agent.openflow.ofconn import PacketIn
from pyantrea.agent.openflow.pipeline import GLOBAL_VMAC
from pyantrea.agent.openflow.reject import ICMP_PORT_UNREACHABLE, reject_reply

POLICY_TABLES = frozenset({T.ANP_EGRESS_RULE, T.ANP_INGRESS_RULE, T.EGRESS_DEFAULT, T.INGRESS_DEFAULT})


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


class PolicyRejecter:
    """The packet-in handler for Reject rules. `peers()` gives (node IP, pod CIDR) of the peer nodes."""

    def __init__(self, tunnel_ofport: Callable[[], int], gateway_mac: Callable[[], str],
                 peers: Callable[[], list[tuple[str, str]]], send: Callable[..., None],
                 log: Callable[[str], None] = lambda s: None):
        self.tunnel_ofport = tunnel_ofport
        self.gateway_mac = gateway_mac
        self.peers = peers
        self.send = send  # send(data, out_port, actions=None)
        self.log = log
        self.rejects = 0
        self.unanswered = 0  # rejected packets with no answer to send (a RST, an ICMP error...)

    def handle(self, pi: PacketIn) -> bool:
        """False: not a Reject rule's packet."""
        if pi.table_id not in POLICY_TABLES or category_of(pi.cookie) != Category.POLICY:
            return False
        reply = reject_reply(pi.data, ICMP_PORT_UNREACHABLE)
        if reply is None or pi.in_port is None:
            self.unanswered += 1
            return True
        if pi.in_port == self.tunnel_ofport():
            self._to_peer(reply)
        else:
            self.send(reply, pi.in_port)
        self.rejects += 1
        return True

    def _to_peer(self, reply: bytes) -> None:
        from os_ken.ofproto import ofproto_v1_3_parser as parser

        dst = ipaddress.IPv4Address(reply[30:34])  # the client: the reply's IPv4 destination
        node_ip = next((ip for ip, cidr in self.peers() if dst in ipaddress.IPv4Network(cidr, strict=False)), None)
        if node_ip is None:
            self.unanswered += 1
            self.log(f"reject: no peer Node has {dst} in its Pod CIDR; no answer sent")
            return
        frame = _mac_bytes(GLOBAL_VMAC) + _mac_bytes(self.gateway_mac()) + reply[12:]
        port = self.tunnel_ofport()
        self.send(frame, port, [parser.OFPActionSetField(tun_ipv4_dst=node_ip), parser.OFPActionOutput(port)])

    def stats(self) -> dict[str, Any]:
        return {"rejects": self.rejects, "unanswered": self.unanswered}
