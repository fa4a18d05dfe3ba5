"""The OVS process/tool layer against a real, private OVS (dummy datapath, no root)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyantrea.errors import OVSError
from pyantrea.ovs.ofctl import OFBridge
from pyantrea.ovs.sandbox import Sandbox
from pyantrea.ovs.trace import parse_trace
from pyantrea.ovs.unixctl import HAVE_OVS_PY, Unixctl
from pyantrea.ovs.vsctl import OVSDB

pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="ovs-vswitchd is not installed"),
]

PIPELINE = Path(__file__).parent.parent / "unit" / "data" / "traces" / "pipeline.flows"
GW_MAC = "4e:99:08:c1:53:be"
C = "cookie=0x1000000000000, "


def pipeline() -> list[str]:
    return [ln for ln in PIPELINE.read_text().splitlines() if ln and not ln.startswith("#")]


def setup_br_int(db: OVSDB) -> None:
    """Antrea's br-int: protocols OpenFlow10,OpenFlow13, fail-mode secure, ports at chosen ofports;
    plus br-phy reached through a patch port (ofport 60). One OVSDB transaction."""
    db.transact(
        db.add_br("br-int", "netdev", ["OpenFlow10", "OpenFlow13"], fail_mode="secure")
        + db.add_port("br-int", "antrea-tun0", type="geneve", ofport_request=1,
                      options={"key": "flow", "remote_ip": "flow", "csum": "true"})
        + db.add_port("br-int", "antrea-gw0", type="internal", ofport_request=2, mtu_request=1450)
        + db.add_port("br-int", "frontend-a3ba2f", ofport_request=48,
                      port_external_ids={"attached-mac": "be:2c:bf:e4:ec:c5", "ip-address": "10.222.1.48",
                                         "pod-name": "frontend", "pod-namespace": "default"})
        + db.add_port("br-int", "p49", ofport_request=49)
        + db.add_br("br-phy", "netdev", None, fail_mode=None)
        + db.add_port("br-phy", "eth0", ofport_request=7)
        + db.add_port("br-int", "patch-phy", type="patch", ofport_request=60, options={"peer": "patch-int"})
        + db.add_port("br-phy", "patch-int", type="patch", ofport_request=61, options={"peer": "patch-phy"})
    )


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    rundir = Path(tempfile.mkdtemp(prefix="pa-"))
    sandbox = Sandbox(rundir)
    try:
        sandbox.start()
        setup_br_int(sandbox.db)
        yield sandbox
    finally:
        sandbox.stop()
        shutil.rmtree(rundir)


@pytest.fixture
def br(sb: Sandbox) -> OFBridge:
    b = sb.bridge("br-int")
    b.replace_flows(pipeline())
    return b


# ---------------------------------------------------------------------------- OVSDB


def test_ports_get_requested_ofports(sb: Sandbox) -> None:
    assert sb.db.wait_ofport("p49") == 49
    ports = {p.name: p for p in sb.db.list_ports("br-int")}
    assert {n: p.ofport for n, p in ports.items()} == {
        "antrea-tun0": 1, "antrea-gw0": 2, "frontend-a3ba2f": 48, "p49": 49, "patch-phy": 60, "br-int": 65534,
    }
    tun = ports["antrea-tun0"]
    assert tun.type == "geneve" and tun.options == {"key": "flow", "remote_ip": "flow", "csum": "true"}
    fe = ports["frontend-a3ba2f"]
    assert fe.external_ids["attached-mac"] == "be:2c:bf:e4:ec:c5"  # on the Port record
    assert fe.external_ids["ip-address"] == "10.222.1.48"
    assert fe.interface_external_ids == {}
    assert fe.mac_in_use and re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", fe.mac_in_use)
    assert re.fullmatch(r"[0-9a-f-]{36}", fe.uuid)
    assert sb.bridge("br-int").show() == {n: p.ofport for n, p in ports.items()}
    lines = sb.db.transact(sb.db.get("Bridge", "br-int", "protocols", "fail_mode", "datapath_type"))
    assert lines == ["[OpenFlow10, OpenFlow13]", "secure", "netdev"]
    assert sb.db.transact(sb.db.get("Interface", "antrea-gw0", "mtu_request")) == ["1450"]


def test_add_port_may_exist_and_del_port(sb: Sandbox) -> None:
    db = sb.db
    db.transact(db.add_port("br-int", "tmp-port", ofport_request=77))
    db.transact(db.add_port("br-int", "tmp-port", ofport_request=77))  # --may-exist: no error
    assert db.wait_ofport("tmp-port") == 77
    with pytest.raises(OVSError, match="already exists"):
        db.transact(db.add_port("br-int", "tmp-port", may_exist=False))
    db.transact(db.del_port("br-int", "tmp-port"))
    db.transact(db.del_port("br-int", "tmp-port"))  # --if-exists
    assert "tmp-port" not in sb.bridge("br-int").show()


def test_bridge_external_ids(sb: Sandbox) -> None:
    db = sb.db
    assert db.get_bridge_external_id("br-int", "roundNum") is None
    db.set_bridge_external_ids("br-int", {"roundNum": "3"})
    db.set_bridge_external_ids("br-int", {"other": "a b:c=d"})
    assert db.get_bridge_external_id("br-int", "roundNum") == "3"
    assert db.bridge_external_ids("br-int") == {"roundNum": "3", "other": "a b:c=d"}
    db.transact(db.remove("Bridge", "br-int", "external_ids", "other"))
    assert db.bridge_external_ids("br-int") == {"roundNum": "3"}


def test_vsctl_error_has_command_and_stderr(sb: Sandbox) -> None:
    with pytest.raises(OVSError) as ei:
        sb.db.transact(sb.db.get("Interface", "no-such-port", "ofport"))
    msg = str(ei.value)
    assert "ovs-vsctl" in msg and "get Interface no-such-port ofport" in msg
    assert 'no row "no-such-port" in table Interface' in msg
    with pytest.raises(OVSError, match="no-such-port"):
        sb.db.wait_ofport("no-such-port", timeout=0.1)


# ---------------------------------------------------------------------------- flows


def test_bundle_install_and_of10_dump(br: OFBridge) -> None:
    flows = br.dump_flows()  # plain ovs-ofctl: OpenFlow 1.0, --names --no-stats
    assert len(flows) == len(pipeline())
    assert all(f.startswith(" ") and not f.startswith("  ") for f in flows)  # one leading space
    s = set(flows)
    # goto_table:N prints as resubmit(,N); names are quoted unless purely alphanumeric
    assert f' {C}priority=200,in_port="antrea-gw0" actions=load:0x1->NXM_NX_REG0[0..15],resubmit(,10)' in s
    assert f" {C}priority=190,in_port=p49 actions=load:0x2->NXM_NX_REG0[0..15],resubmit(,10)" in s
    # table 0 has no "table=" with --no-stats; priority=0 without match prints "priority=0 actions=drop"
    assert f" {C}priority=0 actions=drop" in s
    assert f" {C}table=110, priority=0 actions=drop" in s
    # set_field:mac->eth_src/arp_sha, ip->arp_spa
    assert (f" {C}table=20, priority=200,arp,arp_tpa=10.222.2.1,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->"
            "NXM_OF_ETH_DST[],mod_dl_src:aa:bb:cc:dd:ee:ff,load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->"
            "NXM_NX_ARP_THA[],load:0xaabbccddeeff->NXM_NX_ARP_SHA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],"
            "load:0xade0201->NXM_OF_ARP_SPA[],IN_PORT") in s
    # set_field:ip->tun_dst, mod_dl_dst
    assert (f" {C}table=70, priority=200,ip,nw_dst=10.222.2.0/24 actions=dec_ttl,mod_dl_src:{GW_MAC},"
            "mod_dl_dst:aa:bb:cc:dd:ee:ff,load:0xc0a84d65->NXM_NX_TUN_IPV4_DST[],load:0x1->NXM_NX_REG1[],"
            "load:0x1->NXM_NX_REG0[16],resubmit(,105)") in s
    # ct exec load; load to ETH_DST stays a load
    assert (f" {C}table=105, priority=200,ct_state=+new+trk,ip,reg0=0x1/0xffff "
            "actions=ct(commit,table=110,zone=65520,exec(load:0x20->NXM_NX_CT_MARK[]))") in s
    assert (f" {C}table=31, priority=200,ct_state=-new+trk,ct_mark=0x20,ip "
            "actions=load:0x4e9908c153be->NXM_OF_ETH_DST[],resubmit(,40)") in s
    assert f" {C}table=50, priority=190,conj_id=1,ip actions=load:0x1->NXM_NX_REG0[20],resubmit(,70)" in s
    assert f" {C}table=50, priority=200,tcp,tp_dst=80 actions=conjunction(1,2/2)" in s
    # cookie 0 prints no cookie at all
    assert " priority=300,tcp,in_port=p49,tp_dst=3 actions=NORMAL" in s
    # --no-names prints numbers
    assert f" {C}priority=200,in_port=2 actions=load:0x1->NXM_NX_REG0[0..15],resubmit(,10)" in br.dump_flows(
        names=False, table=0)


def test_of13_dump_keeps_openflow13_spelling(br: OFBridge) -> None:
    s = set(br.dump_flows(of13=True))
    assert f' {C}priority=200,in_port="antrea-gw0" actions=load:0x1->NXM_NX_REG0[0..15],goto_table:10' in s
    assert (f" {C}table=70, priority=200,ip,nw_dst=10.222.2.0/24 actions=dec_ttl,set_field:{GW_MAC}->eth_src,"
            "set_field:aa:bb:cc:dd:ee:ff->eth_dst,set_field:192.168.77.101->tun_dst,load:0x1->NXM_NX_REG1[],"
            "load:0x1->NXM_NX_REG0[16],goto_table:105") in s
    assert any("set_field:aa:bb:cc:dd:ee:ff->arp_sha" in f and "set_field:10.222.2.1->arp_spa" in f for f in s)
    assert f" {C}table=31, priority=0 actions=goto_table:40" in s
    only70 = br.dump_flows(of13=True, table=70)
    assert only70 and all("table=70," in f for f in only70)


def test_dump_with_stats_strips_header(br: OFBridge) -> None:
    for of13 in (False, True):
        lines = br.dump_flows(no_stats=False, of13=of13, table=0)
        # with stats even cookie 0 is printed (cookie=0x0), and table=0 too
        assert lines and all(re.match(r"^ cookie=0x[0-9a-f]+, duration=[0-9.]+s, table=0, n_packets=", f)
                             for f in lines), lines
        if of13:
            assert not any("idle_age=" in f for f in lines)  # OF1.3 has no idle_age/hard_age


def _stats(br: OFBridge) -> dict[str, tuple[float, int]]:
    """flow (without the stats) -> (duration, n_packets)."""
    out = {}
    for f in br.dump_flows(no_stats=False, of13=True):
        d = re.search(r"duration=([0-9.]+)s", f)
        n = re.search(r"n_packets=(\d+)", f)
        key = re.sub(r" duration=[^,]+,| n_packets=\d+,| n_bytes=\d+,", "", f)
        assert d and n
        out[key] = (float(d[1]), int(n[1]))
    return out


def test_replace_flows_is_idempotent(sb: Sandbox, br: OFBridge) -> None:
    # one packet through the real (dummy) datapath, so that counters are non-zero
    sb.appctl("netdev-dummy/receive", "frontend-a3ba2f",
              f"in_port(48),eth(src=be:2c:bf:e4:ec:c5,dst={GW_MAC}),eth_type(0x0800),ipv4(src=10.222.1.48,"
              "dst=10.222.2.34,proto=6,tos=0,ttl=64,frag=no),tcp(src=40000,dst=80),tcp_flags(syn)")
    time.sleep(0.05)
    before = _stats(br)
    hit = [k for k, (_, n) in before.items() if n > 0]
    assert any("table=110" in k for k in hit), hit
    time.sleep(0.15)
    br.replace_flows(pipeline())  # same flows: nothing may change
    after = _stats(br)
    assert after.keys() == before.keys()
    for k, (dur, n) in after.items():
        assert n == before[k][1], k  # counters survive
        assert dur >= before[k][0] + 0.1, k  # durations were not reset
    # a changed flow is replaced (and only that one)
    changed = [ln.replace("actions=drop", "actions=controller(max_len=128)") if "table=110,priority=0," in ln
               else ln for ln in pipeline()]
    br.replace_flows(changed)
    after2 = _stats(br)
    fresh = [k for k, (dur, _) in after2.items() if dur < 0.1]
    assert len(fresh) == 1 and "table=110" in fresh[0] and "CONTROLLER:128" in fresh[0]


def test_add_mod_del_flows(br: OFBridge) -> None:
    br.add_flows(["cookie=0x2000000000000,table=200,priority=10,ip,actions=drop",
                  "cookie=0x2000000000000,table=200,priority=20,tcp,actions=goto_table:201"])
    assert len(br.dump_flows(table=200)) == 2
    br.mod_flows(["cookie=0x3000000000000,table=200,priority=10,ip,actions=output:2"])  # cookie kept (OF1.3)
    assert ' cookie=0x2000000000000, table=200, priority=10,ip actions=output:"antrea-gw0"' in br.dump_flows(
        table=200)
    # full flow lines are fine: actions and the (unmasked) cookie are dropped
    br.del_flows_strict(["cookie=0x2000000000000,table=200,priority=20,tcp,actions=goto_table:201"])
    assert [f for f in br.dump_flows(table=200, names=False)] == [
        " cookie=0x2000000000000, table=200, priority=10,ip actions=output:2"]
    br.add_flows(["cookie=0x2000000000000,table=201,priority=1,actions=drop"])
    br.del_flows_strict([" cookie=0x2000000000000, table=201, priority=1 actions=drop"])  # a dump line
    assert br.dump_flows(table=201) == []
    br.add_flows(["cookie=0x2000000000001,table=201,priority=1,actions=drop"])
    br.del_flows("cookie=0x2000000000000/0xffff000000000000")
    assert br.dump_flows(table=200) == [] and br.dump_flows(table=201) == []
    assert len(br.dump_flows()) == len(pipeline())


def test_bundle_is_atomic(br: OFBridge) -> None:
    with pytest.raises(OVSError) as ei:
        br.add_flows(["table=200,priority=1,ip,actions=drop", "table=200,priority=2,bogus=1,actions=drop"])
    msg = str(ei.value)
    assert "--bundle add-flows" in msg and "unknown keyword bogus" in msg
    assert br.dump_flows(table=200) == []
    # a flow OVS rejects at commit time (inconsistent prerequisites) also rejects the whole bundle
    with pytest.raises(OVSError, match="OFPBAC_MATCH_INCONSISTENT"):
        br.add_flows(["table=200,priority=1,ip,actions=drop",
                      "table=200,priority=2,ip,actions=set_field:10.0.0.1->arp_spa"])
    assert br.dump_flows(table=200) == []


def test_add_tlv_map(br: OFBridge) -> None:
    spec = "{class=0x0104,type=0x80,len=4}->tun_metadata0"
    br.add_tlv_map(spec)
    br.add_tlv_map(spec)  # already mapped identically: fine
    assert (0x104, 0x80, 4, "tun_metadata0") in br.dump_tlv_map()
    with pytest.raises(OVSError, match="ALREADY_MAPPED"):
        br.add_tlv_map(spec, may_exist=False)
    with pytest.raises(OVSError):
        br.add_tlv_map("{class=0x0104,type=0x81,len=4}->tun_metadata0")  # field taken by another option


# ---------------------------------------------------------------------------- trace


def test_trace_through_ct_recirculation(sb: Sandbox, br: OFBridge) -> None:
    text = sb.trace("br-int", f"in_port=48,tcp,dl_src=be:2c:bf:e4:ec:c5,dl_dst={GW_MAC},nw_src=10.222.1.48,"
                    "nw_dst=10.222.2.34,tp_dst=80,nw_ttl=64", ct_next=["trk,new", "trk,new"])
    assert text.startswith("Flow: tcp,in_port=48,")
    assert text.count("=" * 79) == 4 and "Resuming from table 31" in text and "Resuming from table 110" in text
    t = parse_trace(text)
    assert [(h.table, h.section) for h in t.hops] == [
        (0, 0), (10, 0), (30, 0), (31, 1), (40, 1), (50, 1), (70, 1), (105, 1), (110, 2)]
    assert t.hops[5].match == "conj_id=1,ip"
    assert t.verdict == "output" and t.out_port == 1 and t.tun_dst == "192.168.77.101"
    assert len(t.datapath_actions) == 3


def test_trace_bad_syntax_raises_ovs_text(sb: Sandbox) -> None:
    with pytest.raises(OVSError) as ei:
        sb.trace("br-int", "in_port=48,foo=1")
    msg = str(ei.value)
    assert "ofproto/trace br-int in_port=48,foo=1" in msg
    assert "Bad openflow flow syntax: in_port=48,foo=1: unknown field foo" in msg


@pytest.mark.parametrize("transport", ["socket", "subprocess"] + (["ovs"] if HAVE_OVS_PY else []))
def test_unixctl_transports_agree(sb: Sandbox, br: OFBridge, transport: str) -> None:
    flow = "in_port=48,tcp,nw_src=10.222.1.48,nw_dst=10.222.2.34,tp_dst=80,nw_ttl=64"
    expected = sb.trace("br-int", flow, ["trk,new"])
    with Unixctl(sb.vswitchd_ctl, transport=transport) as u:  # type: ignore[arg-type]
        got = u.call("ofproto/trace", ["br-int", flow, "--ct-next", "trk,new"])
        with pytest.raises(OVSError, match="Bad openflow flow syntax"):
            u.call("ofproto/trace", ["br-int", "foo=1"])
        assert u.call("version").startswith("ovs-vswitchd")
    # ovs-appctl adds nothing but maybe a final newline; recirc ids differ from call to call
    norm = [re.sub(r"recirc\(0x[0-9a-f]+\)|recirc_id=0x[0-9a-f]+", "R", x.rstrip("\n")) for x in (got, expected)]
    assert norm[0] == norm[1]


def test_unixctl_errors(sb: Sandbox) -> None:
    with pytest.raises(OVSError, match="is not a valid command"):
        sb.appctl("no/such-command")
    assert sb.appctl("version").startswith("ovs-vswitchd (Open vSwitch) ")
    with pytest.raises(OVSError, match="cannot connect"):
        Unixctl(sb.rundir / "nothing.ctl").call("version")


def test_unixctl_is_faster_than_appctl(sb: Sandbox, br: OFBridge) -> None:
    flow = "in_port=48,tcp,nw_src=10.222.1.48,nw_dst=10.222.2.34,tp_dst=80,nw_ttl=64"
    u = sb.unixctl()
    u.call("ofproto/trace", ["br-int", flow])
    t0 = time.perf_counter()
    for _ in range(20):
        u.call("ofproto/trace", ["br-int", flow])
    per_py = (time.perf_counter() - t0) / 20
    t0 = time.perf_counter()
    for _ in range(5):
        subprocess.run(["ovs-appctl", "-t", str(sb.vswitchd_ctl), "ofproto/trace", "br-int", flow],
                       capture_output=True, check=True)
    per_sub = (time.perf_counter() - t0) / 5
    assert per_py < per_sub


# ---------------------------------------------------------------------------- shell access


def test_plain_tools_with_env(sb: Sandbox, br: OFBridge) -> None:
    env = dict(os.environ, **sb.env())

    def run(*argv: str) -> str:
        return subprocess.run(list(argv), env=env, capture_output=True, text=True, check=True).stdout

    assert run("ovs-vsctl", "br-exists", "br-int") == ""
    assert run("ovs-vsctl", "get", "Interface", "p49", "ofport").strip() == "49"
    assert run("ovs-ofctl", "--no-stats", "--names", "dump-flows", "br-int").splitlines() == br.dump_flows()
    assert run("ovs-appctl", "version").startswith("ovs-vswitchd")
    assert "bridge(\"br-int\")" in run("ovs-appctl", "ofproto/trace", "br-int", "in_port=2")
    assert run(*sb.tool_argv("ovs-vsctl"), "br-exists", "br-int") == ""
    assert run(*sb.tool_argv("ovs-appctl"), "version").startswith("ovs-vswitchd")


# ---------------------------------------------------------------------------- lifecycle


def test_restart_vswitchd_keeps_db_loses_flows(sb: Sandbox, br: OFBridge) -> None:
    u = sb.unixctl()
    u.call("version")
    old = sb.vswitchd_pid
    sb.restart_vswitchd()
    assert sb.is_running() and sb.vswitchd_pid not in (None, old)
    assert sb.db.wait_ofport("p49") == 49
    assert sb.bridge("br-int").show()["antrea-tun0"] == 1
    assert br.dump_flows() == []  # flows are in-memory only
    assert "No match" in sb.trace("br-int", "in_port=49,ip")
    # a Unixctl opened before the restart reconnects by itself
    assert u.call("version").startswith("ovs-vswitchd")
    env = dict(os.environ, **sb.env())
    assert subprocess.run(["ovs-appctl", "version"], env=env, capture_output=True, check=False).returncode == 0


def test_start_stop_leaves_nothing() -> None:
    rundir = Path(tempfile.mkdtemp(prefix="pa-"))
    try:
        with Sandbox(rundir) as s:
            pids = [s.vswitchd_pid, s.ovsdb_pid]
            assert all(pids) and s.is_running()
            s.db.transact(s.db.add_br("br0", "netdev", ["OpenFlow13"]))
            s.start()  # already running: no-op
        assert not s.is_running()
        for pid, name in zip(pids, ("ovs-vswitchd", "ovsdb-server")):
            assert pid is not None
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except FileNotFoundError:
                continue
            comm, state = stat[stat.index("(") + 1:stat.rindex(")")], stat.rsplit(")", 1)[1].split()[0]
            # gone, or a zombie re-parented to init (reaped lazily), or the pid was reused
            assert state == "Z" or comm != name, (pid, comm, state)
        s.stop()  # idempotent
        left = sorted(p.name for p in rundir.iterdir())
        assert not [n for n in left if n.endswith((".ctl", ".sock", ".mgmt", ".snoop"))], left
        # and it can start again on the same database
        with Sandbox(rundir) as s2:
            assert s2.db.transact(s2.db.get("Bridge", "br0", "protocols")) == ["[OpenFlow13]"]
    finally:
        shutil.rmtree(rundir)


def test_rundir_too_long() -> None:
    with pytest.raises(OVSError, match="too long"):
        Sandbox("/tmp/" + "x" * 90)
