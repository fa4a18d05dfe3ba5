"""AntreaProxy's flows and groups in a real OVS (dummy datapath, no root): OVS prints them back as
pyantrea renders them, and ofproto/trace walks a packet through each point of issue 11."""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyantrea.offline import NodeSandbox, OfflineCluster
from pyantrea.ovs.trace import Trace, parse_trace

pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="Open vSwitch is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
SEED_PROXY = ROOT / "examples" / "seed-proxy"
MIX = ROOT / "tests" / "data" / "proxy"

FRONTEND = "in_port=49,dl_src=be:2c:bf:e4:ec:c5,dl_dst=4e:99:08:c1:53:be"  # worker1's frontend, to the gateway
WEB1 = "web1"  # an unpinned Pod of tests/data/proxy (port number from the interface store)


@pytest.fixture(scope="module")
def mix() -> OfflineCluster:
    return OfflineCluster.load(MIX)


@pytest.fixture(scope="module")
def w1(mix: OfflineCluster) -> Iterator[NodeSandbox]:
    with NodeSandbox(mix, "worker1") as sb:
        yield sb


def per_table(lines: list[str]) -> dict[int, Counter[str]]:
    out: dict[int, Counter[str]] = {}
    for line in lines:
        m = re.search(r"table=(\d+)", line.split(" actions=")[0])
        out.setdefault(int(m.group(1)) if m else 0, Counter())[line] += 1
    return out


@pytest.mark.parametrize("folder,node", [(SEED_PROXY, "worker1"), (SEED_PROXY, "master"), (MIX, "worker1"),
                                         (MIX, "worker2")])
def test_ovs_prints_flows_and_groups_back(folder: Path, node: str) -> None:
    oc = OfflineCluster.load(folder)
    nf = oc.node_flows(node)
    with NodeSandbox(oc, node) as sb:
        br = sb.sandbox.bridge("br-int")
        dumped = br.dump_flows(names=True, no_stats=True)
        dumped13 = br.dump_flows(names=True, no_stats=False, of13=True)
        dumped_groups = br.dump_groups()
    assert per_table(dumped) == per_table([f.dump_text() for f in nf.flows])
    cut = sorted(re.sub(r"^.*?table=", "table=", re.sub(r"duration=[^,]*, ", "", line)) for line in dumped13)
    assert cut == sorted(f.of13_text() for f in nf.flows)
    assert dumped_groups == [g.dump_text() for g in nf.groups]


def port_of(oc: OfflineCluster, node: str, pod: str) -> tuple[int, str, str]:
    i = next(i for i in oc.cluster.network(node).interfaces if i.pod == pod)
    return i.ofport, i.mac, i.ip


def trace(sb: NodeSandbox, flow: str, ct_next: list[str] | None = None) -> tuple[Trace, str]:
    r = sb.trace(flow + ",nw_ttl=64", ct_next)
    assert r.trace is not None, r.text
    return r.trace, r.text


def dnat_of(text: str) -> str | None:
    m = re.findall(r"nat\(dst=([0-9.]+:\d+)\)", text)
    return m[0] if m else None


def buckets_reached(sb: NodeSandbox, flow: str) -> dict[str, int]:
    """The endpoint each dp_hash (1..16) picks: the group's select, as the datapath's hash would."""
    out: dict[str, int] = {}
    for h in range(1, 17):
        _, text = trace(sb, f"{flow},dp_hash={h}")
        ep = dnat_of(text)
        assert ep is not None, text
        out.setdefault(ep, h)
    return out


def test_clusterip_load_balances_over_the_group(w1: NodeSandbox) -> None:
    flow = f"{FRONTEND},tcp,nw_src=10.222.1.48,nw_dst=10.104.65.133,tp_src=40000,tp_dst=80"
    eps = buckets_reached(w1, flow)
    assert set(eps) == {"10.222.1.47:80", "10.222.2.34:80"}
    # the local backend: EndpointDNAT, frontend's egress rule (after DNAT), MACs rewritten, backend1's port
    t, text = trace(w1, f"{flow},dp_hash={eps['10.222.1.47:80']}")
    assert t.tables == (0, 10, 29, 30, 31, 40, 41, 42, 50, 70, 80, 90, 105, 106, 110)
    assert "group:1" in text and t.verdict == "output" and t.out_port == 48
    assert "dl_dst=f2:32:d8:07:e2:a6" in t.final_flow and "nw_dst=10.222.1.47" in t.final_flow
    # the remote one: into the tunnel to worker2, no host leg
    t, _ = trace(w1, f"{flow},dp_hash={eps['10.222.2.34:80']}")
    assert t.out_port == 1 and t.tun_dst == "10.79.1.202" and "nw_dst=10.222.2.34" in t.final_flow


def test_named_target_port_udp_and_sctp(mix: OfflineCluster, w1: NodeSandbox) -> None:
    src = "in_port=3,dl_src=f2:82:cc:96:da:bd,dl_dst=4e:99:08:c1:53:be"  # worker1's coredns Pod (no policy)
    tcp = buckets_reached(w1, f"{src},tcp,nw_src=10.222.1.2,nw_dst=10.96.100.1,tp_src=1000,tp_dst=80")
    assert set(tcp) == {"10.222.1.60:8080", "10.222.2.60:9090"}
    udp = buckets_reached(w1, f"{src},udp,nw_src=10.222.1.2,nw_dst=10.96.100.1,udp_src=1000,udp_dst=53")
    assert set(udp) == {"10.222.1.60:5353", "10.222.2.60:5353"}
    sctp = buckets_reached(w1, f"{src},sctp,nw_src=10.222.1.2,nw_dst=10.96.100.1,sctp_src=1000,sctp_dst=3868")
    assert set(sctp) == {"10.222.1.60:3868", "10.222.2.60:3868"}
    web1_port = port_of(mix, "worker1", WEB1)[0]
    t, _ = trace(w1, f"{src},udp,nw_src=10.222.1.2,nw_dst=10.96.100.1,udp_src=1000,udp_dst=53,"
                     f"dp_hash={udp['10.222.1.60:5353']}")
    assert t.out_port == web1_port and "tp_dst=5353" in t.final_flow


def test_nodeport_from_the_gateway(mix: OfflineCluster, w1: NodeSandbox) -> None:
    """What the host sends into antrea-gw0 after its DNAT to the virtual IP (proxyAll)."""
    gw = "in_port=2,dl_src=4e:99:08:c1:53:be,dl_dst=aa:bb:cc:dd:ee:ff"
    for proto, node_port, want in (("tcp", 30081, {"10.222.1.60:8080", "10.222.2.60:9090"}),
                                   ("udp", 30053, {"10.222.1.60:5353", "10.222.2.60:5353"}),
                                   ("sctp", 30868, {"10.222.1.60:3868", "10.222.2.60:3868"})):
        eps = buckets_reached(w1, f"{gw},{proto},nw_src=10.222.1.1,nw_dst=169.254.0.252,{proto}_src=5000,"
                                  f"{proto}_dst={node_port}")
        assert set(eps) == want
    flow = f"{gw},tcp,nw_src=10.222.1.1,nw_dst=169.254.0.252,tp_src=5000,tp_dst=30081"
    t, _ = trace(w1, f"{flow},dp_hash={buckets_reached(w1, flow)['10.222.1.60:8080']}")
    assert t.out_port == port_of(mix, "worker1", WEB1)[0]
    assert 105 in t.tables and "ct(commit" not in " ".join(a for h in t.hops if h.table == 105 for a in h.actions)


def test_policy_applies_to_the_endpoint_after_dnat(w1: NodeSandbox) -> None:
    # frontend may reach role=backend on TCP 80 (backendsvc), not web1/web2 behind the web Service
    flow = f"{FRONTEND},tcp,nw_src=10.222.1.48,nw_dst=10.96.100.1,tp_src=40000,tp_dst=80"
    for h in buckets_reached(w1, flow).values():
        t, _ = trace(w1, f"{flow},dp_hash={h}")
        assert t.verdict == "drop" and t.hops[-1].table == 60 and t.hops[-1].priority == 200
    # UDP 53 is allowed to anywhere, but the endpoint port is 5353 after DNAT: dropped too
    flow = f"{FRONTEND},udp,nw_src=10.222.1.48,nw_dst=10.96.100.1,udp_src=40000,udp_dst=53"
    t, _ = trace(w1, f"{flow},dp_hash=1")
    assert t.verdict == "drop" and t.hops[-1].table == 60


def test_hairpin_to_itself_and_back(mix: OfflineCluster, w1: NodeSandbox) -> None:
    port, mac, ip = port_of(mix, "worker1", WEB1)
    flow = f"in_port={port},dl_src={mac},dl_dst=4e:99:08:c1:53:be,tcp,nw_src={ip},nw_dst=10.96.100.1,tp_src=2000,tp_dst=80"
    h = buckets_reached(w1, flow)[f"{ip}:8080"]
    t, text = trace(w1, f"{flow},dp_hash={h}")
    assert 106 in t.tables and "set_field:169.254.169.252->ip_src" in text
    assert t.verdict == "output" and t.out_port == port  # IN_PORT: back into the Pod itself
    assert "nw_src=169.254.169.252" in t.final_flow and f"nw_dst={ip}" in t.final_flow
    # its reply, to the hairpin IP: ServiceHairpin restores the destination, conntrack un-NATs
    reply = (f"in_port={port},dl_src={mac},dl_dst=4e:99:08:c1:53:be,tcp,ct_mark=0x21,nw_src={ip},"
             f"nw_dst=169.254.169.252,tp_src=8080,tp_dst=2000")
    t, _ = trace(w1, reply, ["trk,est,rpl"])
    assert t.tables[:4] == (0, 10, 29, 30) and t.out_port == port
    assert any(h.table == 31 and h.priority == 200 for h in t.hops)


def test_reply_of_a_service_connection(w1: NodeSandbox) -> None:
    """backend1 answering frontend (conntrack un-DNATs it): ct_mark 0x21 skips the Service tables."""
    flow = ("in_port=48,dl_src=f2:32:d8:07:e2:a6,dl_dst=be:2c:bf:e4:ec:c5,tcp,ct_mark=0x21,nw_src=10.222.1.47,"
            "nw_dst=10.222.1.48,tp_src=80,tp_dst=40000")
    t, _ = trace(w1, flow, ["trk,est,rpl"])
    assert t.tables == (0, 10, 29, 30, 31, 50, 70, 80, 90, 105, 106, 110) and t.out_port == 49
    assert "dl_src=4e:99:08:c1:53:be" in t.final_flow  # routed by table 70 (reg0[19])


def test_service_without_endpoints_goes_to_the_agent(w1: NodeSandbox) -> None:
    t, text = trace(w1, f"{FRONTEND},tcp,nw_src=10.222.1.48,nw_dst=10.96.100.3,tp_src=1,tp_dst=80,dp_hash=1")
    assert t.verdict == "drop" and t.hops[-1].table == 42 and "reg4=0x80000/0x80000" in t.hops[-1].match
    assert t.hops[-1].flow_actions == ("CONTROLLER:128",)


def test_service_without_endpoints_is_rejected(mix: OfflineCluster, w1: NodeSandbox) -> None:
    """A real SYN to the Service without endpoints: the packet-in reaches the proxier's handler, whose
    RST goes back out of frontend's port (the agent's OpenFlow connection, agent/openflow/ofconn.py)."""
    from os_ken.lib.packet import ethernet, ipv4, packet, tcp

    from pyantrea.agent.openflow.ofconn import OFConnection, PacketIn, wait_for
    from pyantrea.agent.proxy.proxier import Proxier

    sent: list[tuple[bytes, int]] = []
    got: list[bool] = []
    px = Proxier("worker1", None, None, lambda: None, lambda: None, lambda: None)  # type: ignore[arg-type]
    conn: OFConnection

    def on_packet_in(pi: PacketIn) -> None:
        got.append(px.handle_packet_in(pi, lambda d, p: (sent.append((d, p)), conn.packet_out(d, out_port=p))))

    conn = OFConnection(w1.sandbox.mgmt_socket("br-int"), on_packet_in)
    conn.start()
    try:
        assert conn.wait_connected(5)
        p = packet.Packet()
        p.add_protocol(ethernet.ethernet(dst="4e:99:08:c1:53:be", src="be:2c:bf:e4:ec:c5", ethertype=0x0800))
        p.add_protocol(ipv4.ipv4(src="10.222.1.48", dst="10.96.100.3", proto=6, ttl=64))
        p.add_protocol(tcp.tcp(src_port=41000, dst_port=80, seq=7, bits=tcp.TCP_SYN))
        p.serialize()
        w1.sandbox.appctl("netdev-dummy/receive", "frontend-a3ba2f", bytes(p.data).hex())
        assert wait_for(lambda: bool(got), 5), conn.stats()
        assert got == [True] and px.rejects == 1
        data, port = sent[0]
        assert port == 49
        ans = packet.Packet(data)
        ip, seg = ans.get_protocol(ipv4.ipv4), ans.get_protocol(tcp.tcp)
        assert (ip.src, ip.dst, seg.src_port, seg.dst_port) == ("10.96.100.3", "10.222.1.48", 80, 41000)
        assert seg.bits & tcp.TCP_RST and seg.ack == 8
    finally:
        conn.close()


def test_session_affinity_learns_then_forgets(tmp_path: Path) -> None:
    for f in MIX.iterdir():
        (tmp_path / f.name).write_text(f.read_text())
    svc = tmp_path / "proxy-services.yaml"
    svc.write_text(svc.read_text().replace("timeoutSeconds: 60", "timeoutSeconds: 1"))
    oc = OfflineCluster.load(tmp_path)
    flow = f"{FRONTEND},tcp,nw_src=10.222.1.48,nw_dst=10.96.100.2,tp_dst=80"
    with NodeSandbox(oc, "worker1") as sb:
        eps = buckets_reached(sb, flow + ",tp_src=1")
        assert set(eps) == {"10.222.1.47:80", "10.222.2.34:80"}
        first, other = sorted(eps.items())
        # a real packet (-generate: with side effects) runs the learn action
        sb.sandbox.appctl("ofproto/trace", "br-int", f"{flow},tp_src=1,nw_ttl=64,dp_hash={first[1]}", "-generate")
        learned = sb.sandbox.bridge("br-int").dump_flows(table=40, of13=True, no_stats=True)
        assert any("hard_timeout=1, priority=200,tcp,nw_src=10.222.1.48,nw_dst=10.96.100.2,tp_dst=80" in x
                   for x in learned), learned
        # a new connection of the same client, whatever bucket its hash would pick, keeps the endpoint
        t, text = trace(sb, f"{flow},tp_src=2,dp_hash={other[1]}")
        assert dnat_of(text) == first[0] and "group:" not in text
        time.sleep(2.5)  # the learned flow's hard timeout
        _, text = trace(sb, f"{flow},tp_src=3,dp_hash={other[1]}")
        assert dnat_of(text) == other[0] and "group:" in text


def test_parse_trace_keeps_the_group_hop(w1: NodeSandbox) -> None:
    _, text = trace(w1, f"{FRONTEND},tcp,nw_src=10.222.1.48,nw_dst=10.104.65.133,tp_src=1,tp_dst=80,dp_hash=1")
    t = parse_trace(text)
    lb = next(h for h in t.hops if h.table == 41)
    assert lb.flow_actions[0] == "group:1"
    dnat = next(h for h in t.hops if h.table == 42)
    assert dnat.depth >= 1 and dnat.flow_actions[0].startswith("ct(commit,table=50")
