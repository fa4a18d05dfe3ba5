"""The agent's OpenFlow connection (agent/openflow/ofconn.py) against a real OVS (dummy datapath, no
root): packet-ins of the `controller` action reach the callback with their packet and registers,
packet-outs leave by the port they name, and the connection comes back after ovs-vswitchd restarts."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from os_ken.lib.packet import ethernet, ipv4, packet, tcp

from pyantrea.agent.openflow.ofconn import OFConnection, PacketIn, wait_for
from pyantrea.ovs.sandbox import Sandbox

pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="ovs-vswitchd is not installed"),
]


def frame(src_ip: str = "10.222.1.48", dst_ip: str = "10.222.1.47", dport: int = 80) -> bytes:
    p = packet.Packet()
    p.add_protocol(ethernet.ethernet(dst="f2:32:d8:07:e2:a6", src="be:2c:bf:e4:ec:c5", ethertype=0x0800))
    p.add_protocol(ipv4.ipv4(src=src_ip, dst=dst_ip, proto=6, ttl=64))
    p.add_protocol(tcp.tcp(src_port=40000, dst_port=dport, seq=1, bits=tcp.TCP_SYN))
    p.serialize()
    return bytes(p.data)


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    rundir = Path(tempfile.mkdtemp(prefix="pa-"))
    sandbox = Sandbox(rundir)
    try:
        sandbox.start()
        db = sandbox.db
        db.transact(db.add_br("br-int", "netdev", ["OpenFlow10", "OpenFlow13"], fail_mode="secure")
                    + db.add_port("br-int", "p1", type="dummy", ofport_request=1)
                    + db.add_port("br-int", "p2", type="dummy", ofport_request=2,
                                  options={"tx_pcap": str(rundir / "p2.pcap")}))
        db.wait_ofport("p2")
        yield sandbox
    finally:
        sandbox.stop()
        shutil.rmtree(rundir, ignore_errors=True)


def tx_packets(sb: Sandbox, port: str) -> int:
    out = subprocess.run([*sb.tool_argv("ovs-ofctl"), "-O", "OpenFlow13", "dump-ports", "br-int", port],
                         capture_output=True, text=True, env=sb.env(), check=True).stdout
    m = re.search(r"tx pkts=(\d+)", out)
    return int(m.group(1)) if m else -1


def test_packet_in_and_packet_out(sb: Sandbox) -> None:
    got: list[PacketIn] = []
    conn = OFConnection(sb.mgmt_socket("br-int"), got.append)
    conn.start()
    try:
        assert conn.wait_connected(5)
        br = sb.bridge("br-int")
        br.add_flows(["add table=0,priority=100,in_port=1,tcp,actions=load:0x2a->NXM_NX_REG0[],"
                      "controller(max_len=65535,reason=action)"])
        sb.appctl("netdev-dummy/receive", "p1", frame().hex())
        assert wait_for(lambda: len(got) == 1, 5), conn.stats()
        pi = got[0]
        assert pi.in_port == 1 and pi.fields.get("reg0") == 0x2A and pi.table_id == 0
        pkt = packet.Packet(pi.data)
        assert pkt.get_protocol(ipv4.ipv4).dst == "10.222.1.47"
        assert pkt.get_protocol(tcp.tcp).dst_port == 80
        before = tx_packets(sb, "p2")
        conn.packet_out(frame("10.222.1.47", "10.222.1.48", 40000), out_port=2)
        assert wait_for(lambda: tx_packets(sb, "p2") == before + 1, 5)
        assert conn.stats()["packetIns"] == 1 and conn.stats()["packetOuts"] == 1
    finally:
        conn.close()


def test_reconnects_after_vswitchd_restart(sb: Sandbox) -> None:
    got: list[PacketIn] = []
    conn = OFConnection(sb.mgmt_socket("br-int"), got.append)
    conn.start()
    try:
        assert conn.wait_connected(5)
        sb.restart_vswitchd()
        sb.bridge("br-int").add_flows(["add table=0,priority=100,in_port=1,tcp,actions=controller"])
        assert wait_for(lambda: conn.stats()["reconnects"] >= 1 and conn.connected.is_set(), 10), conn.stats()
        sb.appctl("netdev-dummy/receive", "p1", frame().hex())
        assert wait_for(lambda: len(got) == 1, 5), conn.stats()
    finally:
        conn.close()
