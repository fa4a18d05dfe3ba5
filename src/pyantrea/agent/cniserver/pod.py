"""A Pod's network plumbing: the veth pair, the container side's address and routes (spec §10 step 5).

With iproute2 (`ip`, `nsenter --net=NETNS ip ...`), one process per step, nothing kept between CNI
calls. (pyroute2 0.9 keeps a few KiB for every netlink request, on a shared socket as on a fresh
one, and a socket for every thread that touches a shared one: with one thread per CNI request the
agent grew by ~15 KiB and a file descriptor per Pod add/delete cycle.)
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess

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


def _in_netns(netns: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={netns}", *argv]


def link_mac(name: str) -> str:
    """The MAC of a link of this (the node's) namespace."""
    try:
        with open(f"/sys/class/net/{name}/address") as f:
            return f.read().strip()
    except OSError:
        p = _sh(["ip", "-j", "link", "show", "dev", name])
        return str(json.loads(p.stdout)[0]["address"])


def create_veth(host_name: str, netns: str, ifname: str, mtu: int, pod_mac: str | None) -> tuple[str, str]:
    """Create host_name <-> netns:ifname. Returns (host MAC, pod MAC)."""
    if os.path.exists(f"/sys/class/net/{host_name}"):
        _sh(["ip", "link", "del", host_name], check=False)  # a leftover of an interrupted ADD of the same name
    peer = ["name", ifname, "mtu", str(mtu)] + (["address", pod_mac] if pod_mac else []) + ["netns", netns]
    _sh(["ip", "link", "add", host_name, "mtu", str(mtu), "type", "veth", "peer", *peer])
    p = _sh(_in_netns(netns, ["ip", "-j", "link", "show", "dev", ifname]))
    return link_mac(host_name), str(json.loads(p.stdout)[0]["address"])


def configure_pod(netns: str, ifname: str, ip: str, prefix: int, gateway: str, tx_off: bool) -> None:
    batch = (f"link set lo up\nlink set {ifname} up\naddr replace {ip}/{prefix} dev {ifname}\n"
             f"route replace default via {gateway} dev {ifname}\n")
    p = subprocess.run(_in_netns(netns, ["ip", "-batch", "-"]), input=batch, capture_output=True, text=True,
                       timeout=15)
    if p.returncode != 0:
        raise CNIError(5, f"configuring {ifname} in {netns} failed: {p.stderr.strip()}")
    if tx_off:
        # Userspace OVS forwards CHECKSUM_PARTIAL frames from AF_PACKET unfixed (lab-recipe gotcha B).
        _sh(_in_netns(netns, ["ethtool", "-K", ifname, "tx", "off"]))


def isolate(dev: str) -> None:
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


def host_up(host_name: str) -> None:
    _sh(["ip", "link", "set", "dev", host_name, "up"])


def delete_veth(host_name: str) -> None:
    if os.path.exists(f"/sys/class/net/{host_name}"):
        _sh(["ip", "link", "del", host_name], check=False)


def pod_state(netns: str, ifname: str) -> tuple[str, list[str], list[str]] | None:
    """(MAC, addresses "ip/prefix", default gateways) of the Pod's interface, or None if it is gone."""
    if not os.path.exists(netns):
        return None
    p = subprocess.run(_in_netns(netns, ["ip", "-j", "addr", "show", "dev", ifname]), capture_output=True,
                       text=True, timeout=15)
    if p.returncode != 0 or not p.stdout.strip():
        return None
    link = json.loads(p.stdout)[0]
    addrs = [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if a.get("family") == "inet"]
    r = _sh(_in_netns(netns, ["ip", "-j", "-4", "route", "show", "default", "dev", ifname]))
    gws = [str(x["gateway"]) for x in json.loads(r.stdout or "[]") if x.get("gateway")]
    return str(link.get("address")), addrs, gws


def prefix_of(cidr: str) -> int:
    return ipaddress.IPv4Network(cidr).prefixlen
