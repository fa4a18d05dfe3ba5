"""A Pod's network plumbing: the veth pair, the container side's address and routes (spec §10 step 5).

Netlink through pyroute2: the node side uses the agent's long-lived socket; the Pod side opens one
socket for the duration of one CNI call.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess

from pyroute2 import IPRoute

from pyantrea.errors import CNIError


def _sh(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    if check and p.returncode != 0:
        raise CNIError(5, f"{' '.join(argv)} failed: {p.stderr.strip()}")
    return p


def check_netns(path: str) -> None:
    if not path:
        raise CNIError(4, "required env variable CNI_NETNS is missing")
    if not os.path.exists(path):
        raise CNIError(3, f"network namespace {path} does not exist")


def create_veth(node: IPRoute, host_name: str, netns: str, ifname: str, mtu: int,
                pod_mac: str | None) -> tuple[str, str]:
    """Create host_name <-> netns:ifname. Returns (host MAC, pod MAC)."""
    if node.link_lookup(ifname=host_name):
        node.link("del", ifname=host_name)  # a leftover of an interrupted ADD of the same name
    node.link("add", ifname=host_name, kind="veth", mtu=mtu, peer={"ifname": ifname, "net_ns_fd": netns, "mtu": mtu})
    idx = node.link_lookup(ifname=host_name)[0]
    with IPRoute(netns=netns) as pod:
        pidx = pod.link_lookup(ifname=ifname)[0]
        if pod_mac:
            pod.link("set", index=pidx, address=pod_mac)
        pod_mac_now = str(pod.get_links(pidx)[0].get("address"))
    host_mac = str(node.get_links(idx)[0].get("address"))
    return host_mac, pod_mac_now


def configure_pod(netns: str, ifname: str, ip: str, prefix: int, gateway: str, tx_off: bool) -> None:
    with IPRoute(netns=netns) as pod:
        lo = pod.link_lookup(ifname="lo")
        if lo:
            pod.link("set", index=lo[0], state="up")
        idx = pod.link_lookup(ifname=ifname)[0]
        pod.link("set", index=idx, state="up")
        have = {(a.get("address"), a["prefixlen"]) for a in pod.get_addr(index=idx, family=2)}
        if (ip, prefix) not in have:
            pod.addr("add", index=idx, address=ip, prefixlen=prefix)
        pod.route("replace", dst="0.0.0.0", dst_len=0, gateway=gateway, oif=idx)
    if tx_off:
        # Userspace OVS forwards CHECKSUM_PARTIAL frames from AF_PACKET unfixed (lab-recipe gotcha B).
        _sh(["nsenter", f"--net={netns}", "ethtool", "-K", ifname, "tx", "off"])


def isolate(node: IPRoute, dev: str) -> None:
    """Make an OVS-attached veth dead to the node's own IP stack (userspace datapath only, lab-recipe A)."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass
    _sh(["ip", "link", "set", "dev", dev, "arp", "off"])
    _sh(["nft", "add", "table", "netdev", "ovs-isolate"])
    _sh(["nft", "add", "chain", "netdev", "ovs-isolate", f"in-{dev}",
         f'{{ type filter hook ingress device "{dev}" priority 0; policy drop; }}'])


def unisolate(dev: str) -> None:
    _sh(["nft", "delete", "chain", "netdev", "ovs-isolate", f"in-{dev}"], check=False)


def host_up(node: IPRoute, host_name: str) -> None:
    idx = node.link_lookup(ifname=host_name)[0]
    node.link("set", index=idx, state="up")


def delete_veth(node: IPRoute, host_name: str) -> None:
    if node.link_lookup(ifname=host_name):
        node.link("del", ifname=host_name)


def pod_state(netns: str, ifname: str) -> tuple[str, list[str], list[str]] | None:
    """(MAC, addresses "ip/prefix", default gateways) of the Pod's interface, or None if it is gone."""
    if not os.path.exists(netns):
        return None
    with IPRoute(netns=netns) as pod:
        idx = pod.link_lookup(ifname=ifname)
        if not idx:
            return None
        mac = str(pod.get_links(idx[0])[0].get("address"))
        addrs = [f"{a.get('address')}/{a['prefixlen']}" for a in pod.get_addr(index=idx[0], family=2)]
        gws = [str(r.get("gateway")) for r in pod.get_routes(family=2, oif=idx[0]) if r["dst_len"] == 0]
    return mac, addrs, gws


def prefix_of(cidr: str) -> int:
    return ipaddress.IPv4Network(cidr).prefixlen
