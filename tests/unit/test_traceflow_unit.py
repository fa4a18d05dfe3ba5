"""traceflow pieces that need no OVS: -f parsing, the kube-proxy rule walker, host routes, ports, rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyantrea.errors import InvalidArgument
from pyantrea.k8s.complete import load_cluster
from pyantrea import kubeproxy as kp
from pyantrea.traceflow import hostleg
from pyantrea.traceflow.engine import flow_fields, ovs_message, parse_packet_flow
from pyantrea.traceflow.model import Packet, PassRequest
from pyantrea.traceflow.reachability import PortSpec, parse_ports, render_table

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"


@pytest.fixture(scope="module")
def seed_rules() -> kp.KubeProxyRules:
    return kp.build_rules(load_cluster(SEED), "worker1")


# ----------------------------------------------------------------------------- -f
@pytest.mark.parametrize("flow,want", [
    ("", ("icmp", None, None, ())),
    ("tcp", ("tcp", None, None, ())),
    ("tcp,tcp_dst=80", ("tcp", None, 80, ())),
    ("tcp_dst=80", ("tcp", None, 80, ())),
    ("udp,udp_src=1234,udp_dst=53", ("udp", 1234, 53, ())),
    ("sctp,tp_dst=132", ("sctp", None, 132, ())),
    ("tcp,tcp_dst=80,tcp_flags=+syn", ("tcp", None, 80, ("tcp_flags=+syn",))),
    ("tcp,tcp_dstt=80", ("tcp", None, None, ("tcp_dstt=80",))),  # OVS will say what is wrong
    ("icmp,icmp_type=8", ("icmp", None, None, ("icmp_type=8",))),
])
def test_parse_packet_flow(flow: str, want: tuple[object, ...]) -> None:
    assert parse_packet_flow(flow) == want


@pytest.mark.parametrize("flow,msg", [
    ("tcp,udp", "two protocols"),
    ("tcp,udp_dst=53", "does not go with"),
    ("icmp,tp_dst=80", "ports need tcp"),
    ("tcp,nw_src=1.2.3.4", "nw_src is set by traceflow"),
    ("tcp,in_port=3", "in_port is set by traceflow"),
    ("tcp,tcp_dst=70000", "out of range"),
])
def test_parse_packet_flow_errors(flow: str, msg: str) -> None:
    with pytest.raises(InvalidArgument, match=msg):
        parse_packet_flow(flow)


def test_packet_fields_and_reply() -> None:
    p = Packet("tcp", "10.0.0.1", "10.0.0.2", 40000, 80, 64, None, ("tcp_flags=+syn",))
    assert p.l4_fields() == ["tcp", "tcp_flags=+syn", "tcp_src=40000", "tcp_dst=80", "nw_ttl=64"]
    r = p.reply()
    assert (r.src, r.dst, r.sport, r.dport, r.extra) == ("10.0.0.2", "10.0.0.1", 80, 40000, ())
    assert r.key == p.reverse_key
    icmp = Packet("icmp", "10.0.0.1", "10.0.0.2", icmp_type=8)
    assert icmp.l4_fields() == ["icmp", "icmp_type=8", "nw_ttl=64"]
    assert icmp.reply().icmp_type == 0
    assert p.describe() == "TCP 10.0.0.1:40000 -> 10.0.0.2:80"


def test_pass_request_command_is_antctl() -> None:
    r = PassRequest("worker1", "antrea-gw0", None, "10.222.1.48", "tcp,tcp_src=80,nw_ttl=62", ("trk,est,rpl",))
    assert r.command() == ("antctl trace-packet --node worker1 -p antrea-gw0 -D 10.222.1.48 "
                           "-f 'tcp,tcp_src=80,nw_ttl=62' --ct-next trk,est,rpl")


def test_flow_fields_and_ovs_message() -> None:
    f = flow_fields("recirc_id=0x1,ct_state=new|trk,eth,tcp,dl_src=aa:bb:cc:dd:ee:ff,nw_ttl=63")
    assert f["tcp"] == "" and f["dl_src"] == "aa:bb:cc:dd:ee:ff" and f["nw_ttl"] == "63"
    flow = "in_port=2,tcp,tcp_dstt=80"
    text = f"ovs-appctl -t /tmp/x/ovs-vswitchd.ctl ofproto/trace br-int {flow}: Bad openflow flow syntax: {flow}: " \
           "unknown field tcp_dstt"
    assert ovs_message(text, flow) == f"Bad openflow flow syntax: {flow}: unknown field tcp_dstt"


# ----------------------------------------------------------------------------- kube-proxy rules, run
def test_nat_outcomes_are_the_endpoint_chains(seed_rules: kp.KubeProxyRules) -> None:
    pkt = hostleg.NatPacket("tcp", "10.222.1.48", "10.104.65.133", 80, False)
    outs = hostleg.nat_outcomes(seed_rules, pkt)
    assert [o.dnat_to for o in outs] == ["10.222.1.47:80", "10.222.2.34:80"]
    assert [o.probability for o in outs] == [0.5, 0.5]
    assert all(o.service == "default/backendsvc" and not o.masquerade for o in outs)
    # the same answer as the model's own lookup (the walker runs the rules; lookup reads the services)
    hit = kp.lookup(seed_rules, "tcp", "10.104.65.133", 80, src="10.222.1.48")
    assert hit is not None
    assert [e.endpoint for e in hit.endpoints] == [o.dnat_to for o in outs]
    assert [e.chain for e in hit.endpoints] == [o.endpoint_chain for o in outs]
    assert outs[0].chains[:2] == ("KUBE-SERVICES", hit.chains[-1])


def test_nat_hairpin_and_off_cluster_sources_are_masqueraded(seed_rules: kp.KubeProxyRules) -> None:
    # backend1 -> backendsvc -> itself: the KUBE-SEP rule `-s 10.222.1.47/32 -j KUBE-MARK-MASQ`
    outs = hostleg.nat_outcomes(seed_rules, hostleg.NatPacket("tcp", "10.222.1.47", "10.104.65.133", 80, False))
    assert [(o.dnat_to, o.masquerade) for o in outs] == [("10.222.1.47:80", True), ("10.222.2.34:80", False)]
    assert hostleg.postrouting_masquerades(seed_rules, outs[0].mark)
    assert not hostleg.postrouting_masquerades(seed_rules, 0)
    # a source outside the cluster CIDR is marked by KUBE-SERVICES itself
    outs = hostleg.nat_outcomes(seed_rules, hostleg.NatPacket("tcp", "10.79.1.5", "10.104.65.133", 80, False))
    assert all(o.masquerade for o in outs)


def test_nat_no_match_and_no_endpoints(tmp_path: Path, seed_rules: kp.KubeProxyRules) -> None:
    assert hostleg.nat_outcomes(seed_rules, hostleg.NatPacket("tcp", "10.222.1.48", "10.104.65.133", 81, False)) == []
    assert hostleg.nat_outcomes(seed_rules, hostleg.NatPacket("udp", "10.222.1.48", "10.222.2.34", 53, False)) == []
    d = tmp_path / "c"
    d.mkdir()
    for f in SEED.iterdir():
        (d / f.name).write_text(f.read_text())
    (d / "empty.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: e, namespace: default}\n"
                                  "spec: {selector: {a: b}, ports: [{port: 8080}]}\n")
    c = load_cluster(d)
    rules = kp.build_rules(c, "worker1")
    ip = c.service("default", "e").cluster_ip
    assert ip is not None
    pkt = hostleg.NatPacket("tcp", "10.222.1.48", ip, 8080, False)
    assert hostleg.nat_outcomes(rules, pkt) == []
    rej = hostleg.filter_outcomes(rules, pkt)
    assert [o.target.kind for o in rej if o.target] == ["REJECT"]


def test_routes() -> None:
    r = hostleg.NodeRoutes("worker1", "10.79.1.201", "10.222.1.0/24", "10.222.1.1", "antrea-gw0",
                           (("master", "10.222.0.0/24", "10.222.0.1", "10.79.1.200"),
                            ("worker2", "10.222.2.0/24", "10.222.2.1", "10.79.1.202")))
    assert hostleg.route(r, "10.222.2.34").text == "10.222.2.0/24 via 10.222.2.1 dev antrea-gw0 onlink"
    assert hostleg.route(r, "10.222.2.34").peer == "worker2"
    assert hostleg.route(r, "10.222.1.47").kind == "pod"
    assert hostleg.route(r, "10.222.1.1").kind == "local"
    assert hostleg.route(r, "8.8.8.8").kind == "underlay"
    assert hostleg.antrea_masquerades(r, "10.222.1.48", "8.8.8.8")
    assert not hostleg.antrea_masquerades(r, "10.222.1.48", "10.222.2.34")
    assert not hostleg.antrea_masquerades(r, "10.222.2.34", "8.8.8.8")


# ----------------------------------------------------------------------------- reachability ports and table
def test_parse_ports() -> None:
    assert parse_ports(None) == [PortSpec("TCP", 80)]
    assert parse_ports(["tcp/80,UDP/53", "8080", "TCP/80"]) == [PortSpec("TCP", 80), PortSpec("UDP", 53),
                                                                  PortSpec("TCP", 8080)]
    for bad in ("ICMP/1", "TCP/0", "TCP/x", "80/TCP"):
        with pytest.raises(InvalidArgument):
            parse_ports([bad])


def test_render_table() -> None:
    res = [
        {"from": "a/x", "to": "a/y", "protocol": "TCP", "port": 80, "verdict": "allow"},
        {"from": "a/y", "to": "a/x", "protocol": "TCP", "port": 80, "verdict": "deny",
         "reason": {"node": "n1", "table": 100, "tableName": "IngressDefaultRule", "rules": ["a/p ingress rule 1"]}},
    ]
    out = render_table(res, [PortSpec("TCP", 80)])
    lines = out.splitlines()
    assert lines[0].startswith("TCP/80: ")
    assert lines[2].split() == ["1.", "a/x", "-", "."]
    assert lines[3].split() == ["2.", "a/y", "X", "-"]
    assert "  a/y -> a/x: n1 table 100 IngressDefaultRule: a/p ingress rule 1" in lines
