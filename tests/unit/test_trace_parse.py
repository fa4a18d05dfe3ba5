"""pyantrea.ovs.trace on real OVS 3.1 ofproto/trace text (tests/unit/data/traces, see README there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyantrea.errors import OVSError
from pyantrea.ovs.trace import OFPP_LOCAL, Hop, Trace, parse_trace

DATA = Path(__file__).parent / "data" / "traces"
COOKIE = 0x1000000000000


def load(name: str, bridge: str = "br-int") -> Trace:
    return parse_trace((DATA / name).read_text(), bridge)


def summary(t: Trace) -> list[tuple[int, int, int]]:
    return [(h.table, h.priority, h.section) for h in t.hops]


def test_new_connection_to_remote_pod_three_sections() -> None:
    t = load("tcp_new_remote.txt")
    assert summary(t) == [
        (0, 190, 0), (10, 200, 0), (30, 200, 0),
        (31, 0, 1), (40, 0, 1), (50, 190, 1), (70, 200, 1), (105, 190, 1),
        (110, 200, 2),
    ]
    assert t.verdict == "output"
    assert t.out_port == 1 and t.out_ports == (1,)
    assert t.tun_dst == "192.168.77.101"
    assert t.no_match_table is None
    assert len(t.datapath_actions) == 3
    assert t.datapath_actions[0] == "ct(zone=65520),recirc(0x7)"
    assert t.datapath_actions[-1] == "1"
    assert t.notes == ()
    assert t.flow.startswith("tcp,in_port=48,")
    assert "tun_dst=192.168.77.101" in t.final_flow  # "Final flow: unchanged" -> the section's Flow


def test_hop_fields() -> None:
    t = load("tcp_new_remote.txt")
    h0 = t.hops[0]
    assert h0 == Hop(0, 190, "in_port=48", COOKIE, ("load:0x2->NXM_NX_REG0[0..15]", "goto_table:10"), 0, 0)
    # a flow without match fields
    assert t.hops[3].match == "" and t.hops[3].table == 31 and t.hops[3].actions == ("goto_table:40",)
    # a conjunction hit shows the conj_id flow
    conj = t.hops[5]
    assert (conj.table, conj.priority, conj.match) == (50, 190, "conj_id=1,ip")
    assert conj.actions == ("load:0x1->NXM_NX_REG0[20]", "goto_table:70")
    # ct(): OVS prints the ct action, then "drop"; the "->" notes are not actions
    assert t.hops[2].actions == ("ct(table=31,zone=65520)", "drop")
    assert t.hops[6].actions == (
        "dec_ttl",
        "set_field:4e:99:08:c1:53:be->eth_src",
        "set_field:aa:bb:cc:dd:ee:ff->eth_dst",
        "set_field:192.168.77.101->tun_dst",
        "load:0x1->NXM_NX_REG1[]",
        "load:0x1->NXM_NX_REG0[16]",
        "goto_table:105",
    )
    assert t.hops[-1].actions == ("output:NXM_NX_REG1[]",)
    assert t.tables == (0, 10, 30, 31, 40, 50, 70, 105, 110)
    # flow_actions drops the trace's echo of ct()'s (empty) nested actions
    assert t.hops[2].flow_actions == ("ct(table=31,zone=65520)",)
    assert t.hops[7].actions == ("ct(commit,table=110,zone=65520)", "drop")
    assert t.hops[7].flow_actions == ("ct(commit,table=110,zone=65520)",)
    assert t.hops[6].flow_actions == t.hops[6].actions


def test_established_connection_two_sections() -> None:
    t = load("tcp_est_remote.txt")
    assert [h.table for h in t.hops] == [0, 10, 30, 31, 40, 50, 70, 105, 110]
    assert [h.section for h in t.hops] == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert t.verdict == "output" and t.out_port == 1
    assert t.tun_dst == "192.168.77.101"
    assert len(t.datapath_actions) == 2


def test_gateway_to_local_pod_ct_commit_with_mark() -> None:
    t = load("gw_to_local_new.txt")
    assert [h.table for h in t.hops] == [0, 10, 30, 31, 40, 50, 60, 70, 80, 90, 100, 105, 110]
    h105 = t.hops[11]
    assert h105.match == "ct_state=+new+trk,ip,reg0=0x1/0xffff"
    # OVS prints the exec() actions again, indented like actions, and no "drop" here
    assert h105.actions == (
        "ct(commit,table=110,zone=65520,exec(load:0x20->NXM_NX_CT_MARK[]))",
        "load:0x20->NXM_NX_CT_MARK[]",
    )
    assert h105.flow_actions == ("ct(commit,table=110,zone=65520,exec(load:0x20->NXM_NX_CT_MARK[]))",)
    assert t.verdict == "output" and t.out_port == 49
    assert t.tun_dst is None


def test_from_tunnel_reports_incoming_tun_dst() -> None:
    t = load("from_tunnel_est.txt")
    assert t.hops[0].match == "in_port=1"
    assert t.verdict == "output" and t.out_port == 49
    # tun_dst is that of the final flow: here the local end of the incoming tunnel; callers
    # only use it when the output port is a tunnel
    assert t.tun_dst == "192.168.77.100"


def test_ttl_exception_is_a_drop() -> None:
    t = load("ttl_exception.txt")
    assert t.verdict == "drop" and t.out_port is None
    assert t.hops[-1].table == 70 and t.hops[-1].actions == ("dec_ttl",)
    assert t.notes == ("IPv4 decrement TTL exception",)
    # tun_dst was never set: the flow's set_field comes after dec_ttl
    assert t.tun_dst is None
    assert t.datapath_actions[-1].startswith("userspace(")


def test_arp_responder_in_port() -> None:
    t = load("arp_responder_in_port.txt")
    assert [h.table for h in t.hops] == [0, 10, 20]
    assert t.hops[2].actions[-1] == "IN_PORT"
    assert "set_field:10.222.2.1->arp_spa" in t.hops[2].actions
    assert "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]" in t.hops[2].actions
    assert all(not a.startswith("->") for a in t.hops[2].actions)
    assert t.verdict == "output" and t.out_port == 48  # IN_PORT resolves to the input port


def test_default_drop_flow() -> None:
    t = load("drop_default.txt")
    assert [(h.table, h.priority, h.match, h.cookie) for h in t.hops] == [
        (0, 300, "sctp,in_port=49", 0),  # cookie 0: OVS prints no ", cookie"
        (10, 0, "", COOKIE),
    ]
    assert t.verdict == "drop" and t.out_port is None and t.no_match_table is None
    assert t.hops[1].actions == ("drop",) and t.hops[1].flow_actions == ("drop",)


def test_no_match_top_level() -> None:
    t = load("no_match_top.txt")
    assert [h.table for h in t.hops] == [0]
    assert t.no_match_table == 130
    assert t.verdict == "drop"


def test_nested_resubmit_and_other_bridge() -> None:
    t = load("nested_resubmit_patch.txt")
    assert [(h.table, h.depth) for h in t.hops] == [(0, 0), (120, 1), (121, 2)]
    # actions after a nested resubmit return to their own hop
    assert t.hops[0].actions == ("resubmit(,120)", "output:48")
    assert t.hops[1].actions == ("resubmit(,121)", "load:0x5->NXM_NX_REG3[]")
    assert t.hops[2].actions == ("output:60",)
    # br-phy (through the patch port) contributes no hops; its NORMAL is not our output
    assert t.out_ports == (60, 48) and t.out_port == 48 and t.verdict == "output"


def test_nested_no_match() -> None:
    t = load("nested_no_match.txt")
    assert [(h.table, h.depth) for h in t.hops] == [(0, 0), (120, 1)]
    assert t.no_match_table == 121
    assert t.verdict == "output" and t.out_port == 48


def test_other_bridge_view() -> None:
    t = load("nested_resubmit_patch.txt", bridge="br-phy")
    assert [(h.table, h.priority, h.match, h.actions) for h in t.hops] == [(0, 0, "", ("NORMAL",))]
    assert t.verdict == "output" and t.out_port is None
    t2 = load("br_phy_only.txt")  # a trace of br-phy alone, read for br-int
    assert t2.hops == () and t2.verdict == "drop" and t2.datapath_actions == ()


def test_output_refused_by_openflow_is_a_drop() -> None:
    t = load("skip_in_port.txt")
    assert t.verdict == "drop" and t.out_port is None
    assert t.notes == ("skipping output to input port",)
    t = load("nonexistent_port.txt")
    assert t.verdict == "drop" and t.notes == ("Nonexistent output port",)


def test_normal_flood_is_output_without_port() -> None:
    t = load("normal_flood.txt")
    assert t.hops[0].actions == ("NORMAL",)
    assert t.verdict == "output" and t.out_port is None and t.out_ports == ()


def test_controller_is_not_output() -> None:
    t = load("controller.txt")
    assert t.hops[0].actions == ("CONTROLLER:128",)
    assert t.verdict == "drop"


def test_output_in_an_earlier_section_counts() -> None:
    t = load("output_then_ct_drop.txt")
    assert [(h.table, h.section) for h in t.hops] == [(0, 0), (110, 1)]
    assert t.hops[0].flow_actions == ("output:48", "ct(table=110,zone=65520)")
    assert t.verdict == "output" and t.out_port == 48


def test_native_tunnel_egress() -> None:
    t = load("native_tunnel_est.txt")
    assert t.hops[-1].table == 110
    assert t.hops[-1].actions == ("output:NXM_NX_REG1[]",)
    assert t.verdict == "output" and t.out_port == 1
    assert t.tun_dst == "10.79.1.202"
    assert "tnl_push(" in t.datapath_actions[-1]
    assert all(h.table != 0 or h.section == 0 for h in t.hops)  # br-phy's table 0 is not a hop


def test_native_tunnel_ct_commit_artifact_keeps_openflow_verdict() -> None:
    t = load("native_tunnel_new.txt")
    assert t.notes == ("Not tunneling to our own address",)
    assert t.datapath_actions[-1] == "drop"
    assert t.verdict == "output" and t.out_port == 1 and t.tun_dst == "10.79.1.202"


def test_bad_syntax_is_an_error() -> None:
    with pytest.raises(OVSError, match="Bad openflow flow syntax"):
        load("bad_syntax.txt")


def test_tun_dst_from_load_action_when_not_output() -> None:
    text = (DATA / "ttl_exception.txt").read_text().replace(
        "    dec_ttl\n     >> IPv4 decrement TTL exception",
        "    load:0xc0a84d65->NXM_NX_TUN_IPV4_DST[]\n    dec_ttl\n     >> IPv4 decrement TTL exception",
    )
    t = parse_trace(text)
    assert t.verdict == "drop" and t.tun_dst == "192.168.77.101"


def test_flow_actions_with_several_exec_actions() -> None:
    h = Hop(105, 200, "ip", 0, (
        "ct(commit,table=110,zone=65520,exec(load:0x20->NXM_NX_CT_MARK[],load:0x1->NXM_NX_CT_LABEL[0..31]))",
        "load:0x20->NXM_NX_CT_MARK[]",
        "load:0x1->NXM_NX_CT_LABEL[0..31]",
        "load:0x1->NXM_NX_REG0[16]",
    ))
    assert h.flow_actions == (h.actions[0], "load:0x1->NXM_NX_REG0[16]")
    # what OVS 3.1 prints for ct(...,nat): the nat is a nested action, echoed instead of "drop"
    h = Hop(5, 10, "ip", 0, ("ct(table=6,zone=65520,nat)", "nat"))
    assert h.flow_actions == ("ct(table=6,zone=65520,nat)",)
    h = Hop(5, 10, "ip", 0, ("ct(commit,zone=65520,nat(src=10.0.0.1),exec(set_field:0x1->ct_mark))",
                             "nat(src=10.0.0.1)", "set_field:0x1->ct_mark"))
    assert h.flow_actions == h.actions[:1]


def test_local_output() -> None:
    text = """Flow: tcp,in_port=49,vlan_tci=0x0000,nw_ttl=64

bridge("br-int")
----------------
 0. tcp,in_port=49,tp_dst=6, priority 300
    LOCAL

Final flow: unchanged
Megaflow: recirc_id=0,eth,tcp,in_port=49,nw_frag=no,tp_dst=6
Datapath actions: 3
"""
    t = parse_trace(text)
    assert t.verdict == "output" and t.out_port == OFPP_LOCAL


def test_every_fixture_parses() -> None:
    for f in sorted(DATA.glob("*.txt")):
        if f.name == "bad_syntax.txt":
            continue
        parse_trace(f.read_text())
