"""Nodes of the lab: the underlay, one network namespace per Node with its own OVS (userspace
datapath) and the uplink bridge ``br-phy`` that carries the Node IP (lab-recipe §2-§4, §11).

Names: ``<prefix>`` is the lab's namespace prefix (``pa-`` by default, see `netns.valid_prefix`).
Only namespace names are host-wide: every interface (br-underlay, the uplink veths, br-phy, the
taps) lives inside one of the lab's namespaces, never in the root one (the uplink pair is created
with both ends in their namespaces), so two labs of different prefixes use the same interface
names and the same addresses (10.79.1.x, each in its own underlay) without meeting.

Per node, in this order:

1. namespace ``<prefix><node>``: lo up, IPv6 off, ip_forward=1, send_redirects=0 (all, default);
2. veth ``eth0`` (node side) <-> ``<node>`` in ``<prefix>underlay``, enslaved to the Linux bridge
   ``br-underlay`` there;
3. ``ovsdb-server`` + ``ovs-vswitchd`` (netdev) inside the namespace, rundir ``nodes/<node>/ovs``;
4. ``br-phy`` (netdev, standalone = NORMAL, fixed ``other-config:hwaddr``) with ``eth0`` as its
   port; the Node IP on the br-phy tap (userspace tunnelling needs the IP on an OVS bridge);
5. ``eth0`` isolated from the node's own stack (gotcha A);
6. ``tnl/arp/set br-phy <peer IP> <peer br-phy MAC>`` for every peer (no first-packet drop);
7. then the agent (``pyantrea agent ...``) creates br-int, antrea-gw0, antrea-tun0, routes,
   iptables/ipset and flows.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from pathlib import Path

from pyantrea.lab import netns
from pyantrea.ovs.sandbox import Sandbox
from pyantrea.ovs.vsctl import OVSDB, run_tool

__all__ = [
    "PHY_BRIDGE",
    "UNDERLAY_BRIDGE",
    "UPLINK",
    "NodePlan",
    "namespaces_owner",
    "phy_mac",
    "plan_nodes",
    "seed_tnl_arp",
    "setup_node",
    "setup_underlay",
    "underlay_netns",
    "underlay_network",
]

UNDERLAY_BRIDGE = "br-underlay"  # inside the underlay namespace: not host-wide
PHY_BRIDGE = "br-phy"
UPLINK = "eth0"


def underlay_netns(lab_prefix: str) -> str:
    """The lab's underlay namespace, ``<prefix>underlay`` (no node's: those of a node named
    "underlay" are ``<prefix>n-<hash>``)."""
    return f"{lab_prefix}underlay"


def phy_mac(node_ip: str) -> str:
    """br-phy's fixed MAC: 02:00 + the four bytes of the Node IP (unique, locally administered)."""
    b = ipaddress.IPv4Address(node_ip).packed
    return "02:00:" + ":".join(f"{x:02x}" for x in b)


def underlay_network(node_ips: Iterable[str]) -> ipaddress.IPv4Network:
    """The smallest network of prefix /24 or shorter that holds every Node IP (the seed's
    10.79.1.0/24)."""
    ips = [ipaddress.IPv4Address(i) for i in node_ips]
    if not ips:
        return ipaddress.IPv4Network("10.79.1.0/24")
    prefix = 24
    while prefix > 0:
        net = ipaddress.IPv4Network((int(ips[0]), prefix), strict=False)
        if all(i in net for i in ips):
            return net
        prefix -= 1
    return ipaddress.IPv4Network("0.0.0.0/0")


class NodePlan:
    """What the lab builds for one Node: names and addresses, computed before anything exists."""

    def __init__(self, name: str, ip: str, prefix: int, ns: str, uplink_peer: str):
        self.name = name
        self.ip = ip
        self.prefix = prefix
        self.netns = ns
        self.uplink_peer = uplink_peer  # the veth end in <prefix>underlay
        self.mac = phy_mac(ip)

    def to_json(self) -> dict[str, object]:
        return {"netns": self.netns, "ip": self.ip, "prefix": self.prefix, "phy_mac": self.mac,
                "uplink_peer": self.uplink_peer}


def plan_nodes(nodes: Sequence[tuple[str, str]], prefix: int, taken: Iterable[str] = (), *,
               lab_prefix: str) -> list[NodePlan]:
    """``nodes``: (name, ip) pairs; ``prefix``: the underlay's prefix length; ``lab_prefix``: the
    namespaces'. Underlay port names are the node names when they fit in 15 characters and are
    unique, else ``n-<hash>``."""
    used = {UNDERLAY_BRIDGE, "lo"}
    used_ns = set(taken) | {underlay_netns(lab_prefix)}
    out = []
    for name, ip in nodes:
        peer = name if len(name) <= 15 and name not in used and name.isascii() and "/" not in name \
            and " " not in name else f"n-{netns._short_hash(name, 10)}"
        used.add(peer)
        ns = netns.node_netns_name(name, lab_prefix)
        if ns in used_ns:
            ns = f"{lab_prefix}n-{netns._short_hash(name, 12)}"
        used_ns.add(ns)
        out.append(NodePlan(name, ip, prefix, ns, peer))
    return out


def setup_underlay(owner: str, lab_prefix: str) -> None:
    """``<prefix>underlay`` with the Linux bridge ``br-underlay`` (idempotent). The bridge's alias
    names ``owner`` (the lab's run dir): the ``<prefix>*`` namespaces are host-wide, and this says
    whose they are."""
    ns = underlay_netns(lab_prefix)
    netns.add(ns)
    if not netns.link_exists(ns, UNDERLAY_BRIDGE):
        netns.ip_batch(ns, [f"link add {UNDERLAY_BRIDGE} type bridge"])
    netns.run(["ip", "-n", ns, "link", "set", "dev", UNDERLAY_BRIDGE, "alias", owner])
    netns.ip_batch(ns, [f"link set dev {UNDERLAY_BRIDGE} up"])


def namespaces_owner(lab_prefix: str) -> str | None:
    """The run dir of the lab that owns the ``<prefix>*`` namespaces (br-underlay's alias in
    ``<prefix>underlay``), None if none does. Labs of other prefixes are not looked at."""
    ns = underlay_netns(lab_prefix)
    if not netns.exists(ns):
        return None
    info = netns.link_info(ns, UNDERLAY_BRIDGE)
    alias = info.get("ifalias") if info else None
    return str(alias) if alias else None


def sandbox_for(ovs_rundir: Path, ns: str) -> Sandbox:
    return Sandbox(ovs_rundir, netns=ns, datapath="netdev")


def setup_node(plan: NodePlan, ovs_rundir: Path, underlay: str) -> Sandbox:
    """Steps 1-5 of the module docstring (idempotent); ``underlay``: the lab's underlay namespace.
    Returns the node's running Sandbox."""
    ns = plan.netns
    netns.add(ns, forward=True)
    if not netns.link_exists(ns, UPLINK):
        if netns.link_exists(underlay, plan.uplink_peer):  # half of a pair from an earlier failed run
            netns.ip_batch(underlay, [f"link del dev {plan.uplink_peer}"])
        # both ends are created in their namespaces (one RTM_NEWLINK): neither name is ever in the
        # root namespace, where another lab's (or the host's) interfaces live
        netns.run(["ip", "link", "add", UPLINK, "netns", ns, "type", "veth", "peer", "name", plan.uplink_peer,
                   "netns", underlay])
    netns.ip_batch(underlay, [f"link set dev {plan.uplink_peer} master {UNDERLAY_BRIDGE}",
                              f"link set dev {plan.uplink_peer} up"])
    netns.sysctl(underlay, {f"net.ipv6.conf.{plan.uplink_peer}.disable_ipv6": "1"})
    netns.isolate(ns, UPLINK)
    netns.ip_batch(ns, [f"link set dev {UPLINK} up"])

    sb = sandbox_for(ovs_rundir, ns)
    sb.start()
    sb.db.transact(
        OVSDB.add_br(PHY_BRIDGE, datapath_type="netdev", protocols=None, fail_mode=None,
                     other_config={"hwaddr": plan.mac})
        + OVSDB.add_port(PHY_BRIDGE, UPLINK)
    )
    netns.ip_batch(ns, [f"addr replace {plan.ip}/{plan.prefix} dev {PHY_BRIDGE}",
                        f"link set dev {PHY_BRIDGE} up"])
    return sb


def seed_tnl_arp(sb: Sandbox, peers: Iterable[NodePlan]) -> None:
    """Pre-seed OVS's tunnel neighbour cache with every peer's br-phy MAC (recipe §4)."""
    for p in peers:
        run_tool([*sb.tool_argv("ovs-appctl"), "tnl/arp/set", PHY_BRIDGE, p.ip, p.mac])
