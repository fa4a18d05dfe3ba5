"""SpoofGuard with real crafted frames (issue 5 §5, spec §6.2).

coredns1 (10.222.1.2, worker1; no policy selects it, so only SpoofGuard can drop its traffic)
sends raw Ethernet frames from an AF_PACKET socket on its eth0 (`netprobe.py send`). Receivers
(AF_PACKET, `netprobe.py recv`) count what arrives at antrea-octant (10.222.1.3, same node), at
coredns2 (10.222.2.2, worker2: across the tunnel) and at worker1's gateway antrea-gw0. Every spoofed
frame is sent 3 times and must arrive 0 times; the same frame without the spoof is sent 3 times
and must arrive. ARP spoofs must not change the victims' neighbour tables, and table 10's miss flow
counts the dropped frames.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from .reltools import COREDNS1, COREDNS2, FRONTEND, OCTANT, RelLab, arp_frame, eth, udp_frame

SENDER = COREDNS1
FOREIGN_MAC = "02:00:de:ad:be:ef"
BCAST = "ff:ff:ff:ff:ff:ff"
COPIES = 3


def _marker(case: str) -> bytes:
    return f"PAREL:{case}:".encode() + b"x" * 16


@pytest.fixture(scope="module")
def spoof(lab: RelLab) -> dict[str, Any]:
    lab.refresh()
    gw_ip = "10.222.1.1"
    s_ip, s_mac = lab.ip(SENDER), lab.mac(SENDER)
    t1_ip, t1_mac = lab.ip(OCTANT), lab.mac(OCTANT)
    t2_ip = lab.ip(COREDNS2)
    fe_ip = lab.ip(FRONTEND)
    gw_mac = lab.mac("worker1", "antrea-gw0")

    # neighbour entries that a delivered spoof would overwrite (Linux replaces an entry only if it is
    # older than locktime, 1 s: wait for that before spoofing)
    assert lab.sh(OCTANT, "ping", "-c1", "-W1", gw_ip).returncode == 0
    for ip in (t1_ip, fe_ip, s_ip):
        lab.sh("worker1", "ping", "-c1", "-W1", ip)
    neigh_t1 = lab.neigh(OCTANT, "eth0")
    neigh_gw = lab.neigh("worker1", "antrea-gw0")
    assert neigh_t1.get(gw_ip) == gw_mac and neigh_gw.get(t1_ip) == t1_mac and fe_ip in neigh_gw, \
        (neigh_t1, neigh_gw)
    time.sleep(1.2)

    spoofs = {  # case -> frame
        "ip-src-other-pod-same-node": udp_frame(t1_mac, s_mac, fe_ip, t1_ip, _marker("ipsrc1")),
        "ip-src-other-pod-cross-node": udp_frame(gw_mac, s_mac, fe_ip, t2_ip, _marker("ipsrc2")),
        "foreign-mac-same-node": udp_frame(t1_mac, FOREIGN_MAC, s_ip, t1_ip, _marker("mac1")),
        "foreign-mac-cross-node": udp_frame(gw_mac, FOREIGN_MAC, s_ip, t2_ip, _marker("mac2")),
        "arp-reply-claiming-gateway-ip": arp_frame(t1_mac, s_mac, 2, s_mac, gw_ip, t1_mac, t1_ip),
        "garp-claiming-gateway-ip": arp_frame(BCAST, s_mac, 1, s_mac, gw_ip, "00:00:00:00:00:00", gw_ip),
        "garp-claiming-other-pod-ip": arp_frame(BCAST, s_mac, 1, s_mac, fe_ip, "00:00:00:00:00:00", fe_ip),
        "arp-reply-to-gateway-claiming-pod-ip": arp_frame(gw_mac, s_mac, 2, s_mac, t1_ip, gw_mac, gw_ip),
        "arp-own-ip-foreign-mac": arp_frame(BCAST, s_mac, 1, FOREIGN_MAC, s_ip, "00:00:00:00:00:00", s_ip),
        "non-ip-ethertype-0x88b5-broadcast": eth(BCAST, s_mac, 0x88B5, _marker("nonip_b")),
        "non-ip-ethertype-0x88b5-unicast": eth(t1_mac, s_mac, 0x88B5, _marker("nonip_u")),
        "ipv6-ethertype": eth(t1_mac, s_mac, 0x86DD, _marker("ipv6")),
    }
    controls = {
        "ctl-ip-same-node": udp_frame(t1_mac, s_mac, s_ip, t1_ip, _marker("ctl1")),
        "ctl-ip-cross-node": udp_frame(gw_mac, s_mac, s_ip, t2_ip, _marker("ctl2")),
        "ctl-arp-reply-own-ip": arp_frame(t1_mac, s_mac, 2, s_mac, s_ip, t1_mac, t1_ip),
        "ctl-garp-own-ip": arp_frame(BCAST, s_mac, 1, s_mac, s_ip, "00:00:00:00:00:00", s_ip),
    }
    rx = {
        "octant": lab.probe(OCTANT, "recv", "--iface", "eth0"),
        "coredns2": lab.probe(COREDNS2, "recv", "--iface", "eth0"),
        "gateway": lab.probe("worker1", "recv", "--iface", "antrea-gw0"),
    }

    def miss() -> int:
        return next(f.n_packets for f in lab.flows("worker1", stats=True) if f.table == 10 and f.priority == 0)

    def send(frames: dict[str, bytes]) -> None:
        body = json.dumps([{"hex": f.hex(), "count": COPIES} for f in frames.values()])
        out = lab.probe(SENDER, "send", "--iface", "eth0", stdin=body).wait()
        assert out["sent"] == COPIES * len(frames)

    try:
        miss0 = miss()
        send(spoofs)
        time.sleep(0.5)
        miss1 = miss()
        after_t1 = lab.neigh(OCTANT, "eth0")
        after_gw = lab.neigh("worker1", "antrea-gw0")
        send(controls)
        time.sleep(0.5)
    finally:
        got = {k: p.stop() for k, p in rx.items()}
    ctx = dict(s_ip=s_ip, s_mac=s_mac, t1_ip=t1_ip, t1_mac=t1_mac, gw_ip=gw_ip, gw_mac=gw_mac, fe_ip=fe_ip)
    print(f"\nreceived: {json.dumps(got, sort_keys=True)}\ntable 10 miss: +{miss1 - miss0} "
          f"({COPIES * len(spoofs)} spoofed frames sent)")
    return {"got": got, "miss": miss1 - miss0, "sent": COPIES * len(spoofs), "ctx": ctx,
            "neigh_before": (neigh_t1, neigh_gw), "neigh_after": (after_t1, after_gw)}


def _arrived(spoof: dict[str, Any], where: str, key: str) -> int:
    return int(spoof["got"][where].get(key, 0))


# case -> [(receiver, key fmt)] where it must not arrive; (receiver, key fmt) of its control
SPOOF_CASES = {
    "ip-src-other-pod-same-node": ([("octant", "mark:ipsrc1")], ("octant", "mark:ctl1")),
    "ip-src-other-pod-cross-node": ([("coredns2", "mark:ipsrc2")], ("coredns2", "mark:ctl2")),
    "foreign-mac-same-node": ([("octant", "mark:mac1")], ("octant", "mark:ctl1")),
    "foreign-mac-cross-node": ([("coredns2", "mark:mac2")], ("coredns2", "mark:ctl2")),
    "arp-reply-claiming-gateway-ip": ([("octant", "arp:2:{gw_ip}:{s_mac}")], ("octant", "arp:2:{s_ip}:{s_mac}")),
    "garp-claiming-gateway-ip": ([("octant", "arp:1:{gw_ip}:{s_mac}"), ("gateway", "arp:1:{gw_ip}:{s_mac}")],
                                 ("octant", "arp:1:{s_ip}:{s_mac}")),
    "garp-claiming-other-pod-ip": ([("octant", "arp:1:{fe_ip}:{s_mac}"), ("gateway", "arp:1:{fe_ip}:{s_mac}")],
                                   ("gateway", "arp:1:{s_ip}:{s_mac}")),
    "arp-reply-to-gateway-claiming-pod-ip": ([("gateway", "arp:2:{t1_ip}:{s_mac}")],
                                             ("gateway", "arp:1:{s_ip}:{s_mac}")),
    "arp-own-ip-foreign-mac": ([("octant", "arp:1:{s_ip}:" + FOREIGN_MAC), ("gateway", "arp:1:{s_ip}:" + FOREIGN_MAC)],
                               ("octant", "arp:1:{s_ip}:{s_mac}")),
    "non-ip-ethertype-0x88b5-broadcast": ([("octant", "mark:nonip_b"), ("gateway", "mark:nonip_b"),
                                           ("coredns2", "mark:nonip_b")], ("octant", "mark:ctl1")),
    "non-ip-ethertype-0x88b5-unicast": ([("octant", "mark:nonip_u")], ("octant", "mark:ctl1")),
    "ipv6-ethertype": ([("octant", "mark:ipv6")], ("octant", "mark:ctl1")),
}


@pytest.mark.parametrize("case", sorted(SPOOF_CASES))
def test_spoofed_frame_is_dropped_and_the_honest_one_delivered(spoof: dict[str, Any], case: str) -> None:
    nowhere, control = SPOOF_CASES[case]
    ctx = spoof["ctx"]
    for where, key in nowhere:
        assert _arrived(spoof, where, key.format(**ctx)) == 0, (case, where, spoof["got"][where])
    where, key = control
    assert _arrived(spoof, where, key.format(**ctx)) >= COPIES, (case, "control", where, spoof["got"][where])


def test_arp_spoofs_poison_no_neighbour_table(spoof: dict[str, Any]) -> None:
    ctx = spoof["ctx"]
    (_, gw_before), (t1_after, gw_after) = spoof["neigh_before"], spoof["neigh_after"]
    assert t1_after.get(ctx["gw_ip"]) == ctx["gw_mac"], t1_after  # octant's gateway entry
    assert gw_after.get(ctx["t1_ip"]) == ctx["t1_mac"], gw_after  # the gateway's entry of octant
    assert gw_after.get(ctx["fe_ip"]) == gw_before[ctx["fe_ip"]], gw_after  # and of frontend
    assert ctx["s_mac"] not in {v for k, v in {**t1_after, **gw_after}.items() if k != ctx["s_ip"]}


def test_table_10_miss_flow_counts_the_spoofs(spoof: dict[str, Any]) -> None:
    assert spoof["miss"] >= spoof["sent"], spoof["miss"]
