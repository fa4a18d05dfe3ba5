"""Re-capture the ofproto/trace fixtures of tests/unit/data/traces from a fresh sandbox and check
that the live text parses exactly like the saved text (so the unit tests stay representative of
the OVS installed here)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyantrea.ovs.sandbox import Sandbox
from pyantrea.ovs.trace import Trace, parse_trace

pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="ovs-vswitchd is not installed"),
]

DATA = Path(__file__).parent.parent / "unit" / "data" / "traces"
FE = "in_port=48,tcp,dl_src=be:2c:bf:e4:ec:c5,dl_dst=4e:99:08:c1:53:be,nw_src=10.222.1.48,nw_dst=10.222.2.34,tp_dst=80"
UDP = "in_port=49,udp,dl_src=e2:ab:47:6a:c2:8f,nw_src=10.222.1.49,nw_dst=10.0.0.1,nw_ttl=64"

# fixture file -> (flow, --ct-next states)
CAPTURES: dict[str, tuple[str, list[str]]] = {
    "tcp_new_remote.txt": (FE + ",nw_ttl=64", ["trk,new"]),
    "tcp_est_remote.txt": (FE + ",nw_ttl=64", ["trk,est"]),
    "ttl_exception.txt": (FE, ["trk,est"]),
    "arp_responder_in_port.txt": (
        ("in_port=48,arp,dl_src=be:2c:bf:e4:ec:c5,dl_dst=ff:ff:ff:ff:ff:ff,arp_spa=10.222.1.48,"
         "arp_sha=be:2c:bf:e4:ec:c5,arp_tpa=10.222.2.1,arp_op=1"), []),
    "gw_to_local_new.txt": (
        ("in_port=2,tcp,dl_src=4e:99:08:c1:53:be,dl_dst=e2:ab:47:6a:c2:8f,nw_src=10.222.1.1,"
         "nw_dst=10.222.1.49,tp_dst=80,nw_ttl=64"), ["trk,new", "trk,new"]),
    "from_tunnel_est.txt": (
        ("in_port=1,tun_src=192.168.77.101,tun_dst=192.168.77.100,tcp,dl_src=aa:bb:cc:dd:ee:ff,"
         "dl_dst=e2:ab:47:6a:c2:8f,nw_src=10.222.2.34,nw_dst=10.222.1.49,tp_dst=80,nw_ttl=64"), ["trk,est"]),
    "nested_resubmit_patch.txt": (UDP + ",udp_dst=53", []),
    "nested_no_match.txt": (UDP + ",udp_dst=54", []),
    "no_match_top.txt": ("in_port=49,icmp,nw_ttl=64", []),
    "drop_default.txt": ("in_port=49,sctp,nw_ttl=64", []),
    "skip_in_port.txt": ("in_port=49,tcp,tp_dst=1,nw_ttl=64", []),
    "nonexistent_port.txt": ("in_port=49,tcp,tp_dst=2,nw_ttl=64", []),
    "normal_flood.txt": ("in_port=49,tcp,tp_dst=3,nw_ttl=64", []),
    "controller.txt": ("in_port=49,tcp,tp_dst=4,nw_ttl=64", []),
    "output_then_ct_drop.txt": ("in_port=49,tcp,tp_dst=5,nw_ttl=64", []),
}


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    rundir = Path(tempfile.mkdtemp(prefix="pa-"))
    s = Sandbox(rundir)
    try:
        s.start()
        db = s.db
        db.transact(
            db.add_br("br-int", "netdev", ["OpenFlow10", "OpenFlow13"])
            + db.add_port("br-int", "antrea-tun0", type="geneve", ofport_request=1,
                          options={"key": "flow", "remote_ip": "flow", "csum": "true"})
            + db.add_port("br-int", "antrea-gw0", type="internal", ofport_request=2)
            + db.add_port("br-int", "p48", ofport_request=48)
            + db.add_port("br-int", "p49", ofport_request=49)
            + db.add_br("br-phy", "netdev", None, fail_mode=None)
            + db.add_port("br-phy", "eth0", ofport_request=7)
            + db.add_port("br-int", "patch-phy", type="patch", ofport_request=60, options={"peer": "patch-int"})
            + db.add_port("br-phy", "patch-int", type="patch", ofport_request=61, options={"peer": "patch-phy"})
        )
        flows = [ln for ln in (DATA / "pipeline.flows").read_text().splitlines() if ln and not ln.startswith("#")]
        s.bridge("br-int").replace_flows(flows)
        yield s
    finally:
        s.stop()
        shutil.rmtree(rundir)


def essence(t: Trace) -> tuple[object, ...]:
    """Everything but run-specific numbers (recirculation ids, datapath port numbers)."""
    return (t.hops, t.verdict, t.out_port, t.out_ports, t.tun_dst, t.no_match_table, t.notes,
            len(t.datapath_actions))


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_live_trace_parses_like_fixture(sb: Sandbox, name: str) -> None:
    flow, ct_next = CAPTURES[name]
    live = sb.trace("br-int", flow, ct_next)
    saved = (DATA / name).read_text()
    assert essence(parse_trace(live)) == essence(parse_trace(saved))
    for bridge in ("br-phy",):
        assert parse_trace(live, bridge).hops == parse_trace(saved, bridge).hops


def test_local_output_live(sb: Sandbox) -> None:
    t = parse_trace(sb.trace("br-int", "in_port=49,tcp,tp_dst=6,nw_ttl=64"))
    assert t.verdict == "output" and t.out_port == 0xFFFE and t.hops[0].actions == ("LOCAL",)


def test_many_traces_over_one_connection(sb: Sandbox) -> None:
    u = sb.unixctl()
    for i in range(200):
        t = parse_trace(u.call("ofproto/trace", ["br-int", f"in_port=49,tcp,tp_dst={1 + i % 5},nw_ttl=64"]))
        assert t.hops[0].table == 0
