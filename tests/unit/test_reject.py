"""Reject answers (agent/openflow/reject.py): a TCP RST back to the client, ICMP port unreachable for
UDP and echo requests, nothing for a RST or an ICMP error."""

from __future__ import annotations

from os_ken.lib.packet import ethernet, icmp, ipv4, packet, tcp, udp

from pyantrea.agent.openflow.reject import reject_reply

CLIENT = ("be:2c:bf:e4:ec:c5", "10.222.1.48")
SERVER = ("f2:32:d8:07:e2:a6", "10.222.1.47")


def frame(l4: object, proto: int, payload: bytes = b"") -> bytes:
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet(dst=SERVER[0], src=CLIENT[0], ethertype=0x0800))
    p.add_protocol(ipv4.ipv4(src=CLIENT[1], dst=SERVER[1], proto=proto, ttl=64))
    p.add_protocol(l4)
    if payload:
        p.add_protocol(payload)
    p.serialize()
    return bytes(p.data)


def test_syn_gets_rst_ack() -> None:
    out = packet.Packet(reject_reply(frame(tcp.tcp(src_port=40000, dst_port=80, seq=1000, bits=tcp.TCP_SYN), 6)))
    e, ip, t = out.get_protocol(ethernet.ethernet), out.get_protocol(ipv4.ipv4), out.get_protocol(tcp.tcp)
    assert (e.src, e.dst) == (SERVER[0], CLIENT[0]) and (ip.src, ip.dst) == (SERVER[1], CLIENT[1])
    assert (t.src_port, t.dst_port) == (80, 40000)
    assert t.bits == tcp.TCP_RST | tcp.TCP_ACK and t.ack == 1001 and t.seq == 0


def test_segment_with_ack_gets_rst_at_its_ack() -> None:
    seg = tcp.tcp(src_port=40000, dst_port=80, seq=5, ack=777, bits=tcp.TCP_ACK | tcp.TCP_PSH)
    t = packet.Packet(reject_reply(frame(seg, 6, b"GET / HTTP/1.1\r\n"))).get_protocol(tcp.tcp)
    assert t.bits == tcp.TCP_RST and t.seq == 777


def test_udp_gets_icmp_port_unreachable_quoting_the_packet() -> None:
    f = frame(udp.udp(src_port=5353, dst_port=53), 17, b"\x00" * 12)
    out = packet.Packet(reject_reply(f))
    ip, m = out.get_protocol(ipv4.ipv4), out.get_protocol(icmp.icmp)
    assert (ip.src, ip.dst, ip.proto) == (SERVER[1], CLIENT[1], 1)
    assert (m.type, m.code) == (icmp.ICMP_DEST_UNREACH, 3)
    assert m.data.data == f[14:14 + 20 + 8]  # the original IP header and 8 bytes


def test_no_answer_to_a_rst_or_an_icmp_error() -> None:
    assert reject_reply(frame(tcp.tcp(src_port=1, dst_port=2, bits=tcp.TCP_RST), 6)) is None
    err = icmp.icmp(type_=icmp.ICMP_DEST_UNREACH, code=3, data=icmp.dest_unreach(data=b"\x00" * 28))
    assert reject_reply(frame(err, 1)) is None
    echo = icmp.icmp(type_=icmp.ICMP_ECHO_REQUEST, data=icmp.echo(id_=1, seq=1))
    assert packet.Packet(reject_reply(frame(echo, 1))).get_protocol(icmp.icmp).type == icmp.ICMP_DEST_UNREACH
