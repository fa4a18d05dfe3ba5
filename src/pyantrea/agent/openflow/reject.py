"""The answer the agent sends for a rejected packet (Antrea's Reject action, and AntreaProxy's
Service without endpoints): a TCP RST for TCP, an ICMP destination-unreachable for the others,
addressed back to the sender as if the destination had answered. Built with os-ken's packet library.
"""

from __future__ import annotations

from os_ken.lib.packet import ethernet, icmp, ipv4, packet, tcp

ICMP_PORT_UNREACHABLE = 3
ICMP_HOST_ADMIN_PROHIBITED = 10


def reject_reply(frame: bytes, icmp_code: int = ICMP_PORT_UNREACHABLE) -> bytes | None:
    """The reply to `frame` (an Ethernet frame carrying IPv4), or None if there is none to send (not
    IPv4, a TCP RST itself, or an ICMP error: never answer those)."""
    pkt = packet.Packet(frame)
    eth = pkt.get_protocol(ethernet.ethernet)
    ip = pkt.get_protocol(ipv4.ipv4)
    if eth is None or ip is None:
        return None
    out = packet.Packet()
    out.add_protocol(ethernet.ethernet(dst=eth.src, src=eth.dst, ethertype=eth.ethertype))
    seg = pkt.get_protocol(tcp.tcp)
    if seg is not None:
        if seg.bits & tcp.TCP_RST:
            return None
        data_len = ip.total_length - ip.header_length * 4 - seg.offset * 4
        out.add_protocol(ipv4.ipv4(src=ip.dst, dst=ip.src, proto=6, ttl=64))
        if seg.bits & tcp.TCP_ACK:
            # RFC 793: a RST for a segment with ACK takes its sequence number from that ACK
            out.add_protocol(tcp.tcp(src_port=seg.dst_port, dst_port=seg.src_port, seq=seg.ack, ack=0,
                                     bits=tcp.TCP_RST, window_size=0))
        else:
            ack = (seg.seq + max(data_len, 0) + (1 if seg.bits & tcp.TCP_SYN else 0)
                   + (1 if seg.bits & tcp.TCP_FIN else 0)) & 0xFFFFFFFF
            out.add_protocol(tcp.tcp(src_port=seg.dst_port, dst_port=seg.src_port, seq=0, ack=ack,
                                     bits=tcp.TCP_RST | tcp.TCP_ACK, window_size=0))
    else:
        if ip.proto == 1:
            msg = pkt.get_protocol(icmp.icmp)
            if msg is None or msg.type not in (icmp.ICMP_ECHO_REQUEST,):
                return None  # never answer an ICMP error (or anything but a request) with one
        # ICMP destination unreachable: the original IP header and the first 8 bytes of its data
        start = ethernet.ethernet._MIN_LEN  # 14: the frames the pipeline hands up carry no VLAN tag
        orig = frame[start:start + ip.header_length * 4 + 8]
        out.add_protocol(ipv4.ipv4(src=ip.dst, dst=ip.src, proto=1, ttl=64))
        out.add_protocol(icmp.icmp(type_=icmp.ICMP_DEST_UNREACH, code=icmp_code, csum=0,
                                   data=icmp.dest_unreach(data=orig)))
    out.serialize()
    return bytes(out.data)
