"""A Pod's network plumbing: the veth pair, the container side's address and routes (spec §10 step 5).

Through netlink from inside the agent (`cniserver.netlink`: the messages `ip`, `ethtool` and `nft`
send, a socket per call, nothing kept between CNI calls), not one process per step: the ten
processes an ADD started were most of its time. (pyroute2 0.9 keeps a few KiB for every netlink
request, on a shared socket as on a fresh one, and a socket for every thread that touches a shared
one: with one thread per CNI request the agent grew by ~15 KiB and a file descriptor per Pod
add/delete cycle.) CHECK still reads the Pod's state with `ip -j`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess

from pyantrea.agent.cniserver import netlink
from pyantrea.errors import CNIError

ISOLATE_TABLE = "ovs-isolate"  # the nft netdev table of the Pod veths' ingress drop chains


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
    """Create host_name <-> netns:ifname (``ip link add HOST mtu M type veth peer name IFNAME mtu M
    [address MAC] netns NETNS``). Returns (host MAC, pod MAC)."""
    what = f"ip link add {host_name} type veth peer name {ifname} netns {netns}"
    try:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CNIError(5, f"{what} failed: {e.strerror}") from None
    try:
        with netlink.Netlink() as nl:
            nl.del_link(host_name)  # a leftover of an interrupted ADD of the same name
            nl.add_veth(host_name, mtu, ifname, fd, pod_mac)
            host_mac = nl.link(host_name)[1]
    except OSError as e:
        raise CNIError(5, f"{what} failed: {e.strerror}") from None
    finally:
        os.close(fd)
    try:
        with netlink.in_netns(netns) as (nl, _):
            pod_mac_now = nl.link(ifname)[1]
    except OSError as e:
        raise CNIError(5, f"reading {ifname} in {netns} failed: {e.strerror}") from None
    return host_mac, pod_mac_now


def configure_pod(netns: str, ifname: str, ip: str, prefix: int, gateway: str, tx_off: bool) -> None:
    """In the Pod: ``ip link set lo up``, ``ip link set IFNAME up``, ``ip addr replace IP/PREFIX dev
    IFNAME``, ``ip route replace default via GATEWAY dev IFNAME`` and, with ``tx_off``, ``ethtool -K
    IFNAME tx off``."""
    step = "entering the namespace"
    try:
        with netlink.in_netns(netns) as (nl, io):
            step = "link set lo up"
            nl.set_flags("lo", netlink.IFF_UP, netlink.IFF_UP)
            step = f"link set {ifname} up"
            nl.set_flags(ifname, netlink.IFF_UP, netlink.IFF_UP)
            index = nl.link(ifname)[0]
            step = f"addr replace {ip}/{prefix} dev {ifname}"
            nl.replace_addr(index, ip, prefix)
            step = f"route replace default via {gateway} dev {ifname}"
            nl.replace_default_route(gateway, index)
            if tx_off:
                # Userspace OVS forwards CHECKSUM_PARTIAL frames from AF_PACKET unfixed (lab-recipe gotcha B).
                step = f"ethtool -K {ifname} tx off"
                netlink.tx_checksum_off(io, ifname)
    except OSError as e:
        raise CNIError(5, f"configuring {ifname} in {netns} failed: {step}: {e.strerror}") from None


def isolate(dev: str) -> None:
    """Make an OVS-attached veth dead to the node's own IP stack (userspace datapath only, lab-recipe A):
    IPv6 off, ``ip link set dev DEV arp off``, and the nft chain ``netdev ovs-isolate in-DEV`` that
    drops everything at ingress (after the AF_PACKET taps OVS reads it through)."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass
    step = f"ip link set dev {dev} arp off"
    try:
        with netlink.Netlink() as nl:
            nl.set_flags(dev, netlink.IFF_NOARP, netlink.IFF_NOARP)
        step = f"nft add chain netdev {ISOLATE_TABLE} in-{dev}"
        netlink.nft_add_ingress_drop(ISOLATE_TABLE, f"in-{dev}", dev)
    except OSError as e:
        raise CNIError(5, f"{step} failed: {e.strerror}") from None


def unisolate(dev: str) -> None:
    try:
        netlink.nft_del_chain(ISOLATE_TABLE, f"in-{dev}")
    except OSError:
        pass  # best effort, as `nft delete chain` without a check was


def host_up(host_name: str) -> None:
    try:
        with netlink.Netlink() as nl:
            nl.set_flags(host_name, netlink.IFF_UP, netlink.IFF_UP)
    except OSError as e:
        raise CNIError(5, f"ip link set dev {host_name} up failed: {e.strerror}") from None


def delete_veth(host_name: str) -> None:
    try:
        with netlink.Netlink() as nl:
            nl.del_link(host_name)
    except OSError:
        pass  # best effort, as `ip link del` without a check was


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
