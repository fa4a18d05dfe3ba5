"""A Pod's links, addresses, routes, TX checksum offload and nft isolation chain, through netlink
from inside the agent (rtnetlink, nf_tables' nfnetlink, the ethtool ioctl), standard library only.

Each function opens its own socket and closes it before it returns: nothing is kept between CNI
calls and nothing is shared between the threads that serve them (pyroute2 0.9 kept a socket per
thread and a few KiB per request, `cniserver.pod`). A socket in a Pod's namespace is opened by a
short-lived thread that enters the namespace (``setns``, which moves only the calling thread),
creates the socket and ends; a socket stays in the namespace it was created in.

Each message is the one iproute2, ethtool or nft sends for the command named in its docstring, so
the result is the same as theirs.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_OIF, RTA_GATEWAY = 4, 5
IFF_UP, IFF_NOARP = 0x1, 0x80
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
NLA_F_NESTED = 0x8000

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big endian)

# nf_tables
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 16, 17
NFT_MSG_NEWTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN = 0, 3, 5
NFPROTO_NETDEV = 5
NFTA_TABLE_NAME, NFTA_TABLE_FLAGS = 1, 2
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_POLICY, NFTA_CHAIN_TYPE = 1, 3, 4, 5, 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY, NFTA_HOOK_DEV = 1, 2, 3
NF_NETDEV_INGRESS = 0
NF_DROP = 0

SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17
CLONE_NEWNET = 0x40000000


class NetlinkError(OSError):
    """A netlink request the kernel refused; ``errno`` is the kernel's."""


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def _str(kind: int, s: str) -> bytes:
    return _attr(kind, s.encode() + b"\0")


def _u32(kind: int, v: int) -> bytes:
    return _attr(kind, struct.pack("=I", v))


def _be32(kind: int, v: int) -> bytes:
    return _attr(kind, struct.pack("!i", v))


def _nest(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(attrs))


def _mac(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def parse_attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    while i + 4 <= len(data):
        n, kind = struct.unpack_from("=HH", data, i)
        if n < 4:
            break
        out[kind & 0x3FFF] = data[i + 4:i + n]
        i += (n + 3) & ~3
    return out


class Netlink:
    """One netlink socket (NETLINK_ROUTE by default) of the namespace it was created in."""

    def __init__(self, proto: int = NETLINK_ROUTE, sock: socket.socket | None = None):
        self.sock = sock or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, proto)
        self.sock.settimeout(10.0)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request (with NLM_F_ACK) and return the (type, payload) answers before the ACK;
        NetlinkError when the kernel refuses it."""
        seq = self._next()
        self.sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0)
                       + body)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(65536)
            i = 0
            while i + NLMSGHDR.size <= len(data):
                n, t, _, s, _ = NLMSGHDR.unpack_from(data, i)
                payload = data[i + NLMSGHDR.size:i + n]
                i += (n + 3) & ~3
                if s != seq:
                    continue
                if t == NLMSG_ERROR:
                    code = struct.unpack_from("=i", payload)[0]
                    if code:
                        raise NetlinkError(-code, os.strerror(-code))
                    return out
                if t != NLMSG_DONE:
                    out.append((t, payload))

    def batch(self, messages: Sequence[tuple[int, int, bytes]], subsys: int) -> None:
        """An nfnetlink batch (one transaction): BEGIN, the messages (each acknowledged), END.
        NetlinkError with the first refusal."""
        begin = self._next()
        parts = [NLMSGHDR.pack(NLMSGHDR.size + NFGENMSG.size, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, begin, 0)
                 + NFGENMSG.pack(socket.AF_UNSPEC, 0, socket.htons(subsys))]
        pending: set[int] = set()
        for kind, flags, body in messages:
            seq = self._next()
            pending.add(seq)
            parts.append(NLMSGHDR.pack(NLMSGHDR.size + len(body), (subsys << 8) | kind,
                                       flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body)
        end = self._next()
        parts.append(NLMSGHDR.pack(NLMSGHDR.size + NFGENMSG.size, NFNL_MSG_BATCH_END, NLM_F_REQUEST, end, 0)
                     + NFGENMSG.pack(socket.AF_UNSPEC, 0, socket.htons(subsys)))
        self.sock.send(b"".join(parts))
        failure: NetlinkError | None = None
        while pending:
            try:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT if failure else 0)
            except BlockingIOError:
                break  # a refused batch acknowledges only its errors
            i = 0
            while i + NLMSGHDR.size <= len(data):
                n, t, _, s, _ = NLMSGHDR.unpack_from(data, i)
                payload = data[i + NLMSGHDR.size:i + n]
                i += (n + 3) & ~3
                if t == NLMSG_ERROR and s in pending:
                    pending.discard(s)
                    code = struct.unpack_from("=i", payload)[0]
                    if code and failure is None:
                        failure = NetlinkError(-code, os.strerror(-code))
        if failure is not None:
            raise failure

    # ------------------------------------------------------------------ links

    def link(self, name: str) -> tuple[int, str, int]:
        """(index, MAC, flags) of link ``name`` (``ip -j link show dev NAME``)."""
        answers = self.request(RTM_GETLINK, 0, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _str(IFLA_IFNAME, name))
        for t, payload in answers:
            if t == RTM_NEWLINK:
                _, _, index, flags, _ = IFINFOMSG.unpack_from(payload)
                attrs = parse_attrs(payload[IFINFOMSG.size:])
                mac = ":".join(f"{b:02x}" for b in attrs.get(IFLA_ADDRESS, b""))
                return index, mac, flags
        raise NetlinkError(errno.ENODEV, f"no link {name}")

    def add_veth(self, name: str, mtu: int, peer: str, peer_netns_fd: int, peer_mac: str | None) -> None:
        """``ip link add NAME mtu MTU type veth peer name PEER mtu MTU [address MAC] netns NETNS``."""
        peer_attrs = _str(IFLA_IFNAME, peer) + _u32(IFLA_MTU, mtu)
        if peer_mac:
            peer_attrs += _attr(IFLA_ADDRESS, _mac(peer_mac))
        peer_attrs += _u32(IFLA_NET_NS_FD, peer_netns_fd)
        body = (IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _str(IFLA_IFNAME, name) + _u32(IFLA_MTU, mtu)
                + _nest(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "veth"),
                        _nest(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
                                                    + peer_attrs))))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)

    def set_flags(self, name: str, flags: int, mask: int) -> None:
        """``ip link set dev NAME up`` (IFF_UP) / ``arp off`` (IFF_NOARP): the ``mask`` bits set to ``flags``."""
        self.request(RTM_NEWLINK, 0, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, flags, mask) + _str(IFLA_IFNAME, name))

    def del_link(self, name: str) -> bool:
        """``ip link del NAME``; False if there is no such link."""
        try:
            self.request(RTM_DELLINK, 0, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _str(IFLA_IFNAME, name))
        except NetlinkError as e:
            if e.errno == errno.ENODEV:
                return False
            raise
        return True

    def replace_addr(self, index: int, ip: str, prefix: int) -> None:
        """``ip addr replace IP/PREFIX dev DEV``."""
        a = socket.inet_aton(ip)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE,
                     IFADDRMSG.pack(socket.AF_INET, prefix, 0, 0, index) + _attr(IFA_LOCAL, a) + _attr(IFA_ADDRESS, a))

    def replace_default_route(self, gateway: str, index: int) -> None:
        """``ip route replace default via GATEWAY dev DEV``."""
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE,
                     RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST, 0)
                     + _attr(RTA_GATEWAY, socket.inet_aton(gateway)) + _u32(RTA_OIF, index))


# ---------------------------------------------------------------------------------- namespaces

_libc = ctypes.CDLL(None, use_errno=True)


def sockets_in_netns(netns: str, specs: Sequence[tuple[int, int, int]]) -> list[socket.socket]:
    """Sockets (family, type, proto) created inside the network namespace at path ``netns``, by a
    thread of their own (the caller's threads never change namespace)."""
    out: list[socket.socket] = []
    err: list[BaseException] = []

    def make() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({netns}): {os.strerror(e)}")
            finally:
                os.close(fd)
            for family, kind, proto in specs:
                out.append(socket.socket(family, kind | socket.SOCK_CLOEXEC, proto))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            err.append(e)
            for s in out:
                s.close()

    t = threading.Thread(target=make, name="netns-socket", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out


@contextmanager
def in_netns(netns: str) -> Iterator[tuple[Netlink, socket.socket]]:
    """A route netlink socket and an ioctl socket (AF_INET datagram) of the namespace ``netns``."""
    nl_sock, io_sock = sockets_in_netns(netns, [(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE),
                                                (socket.AF_INET, socket.SOCK_DGRAM, 0)])
    nl = Netlink(sock=nl_sock)
    try:
        yield nl, io_sock
    finally:
        nl.close()
        io_sock.close()


def tx_checksum_off(io_sock: socket.socket, ifname: str) -> None:
    """``ethtool -K IFNAME tx off`` (ETHTOOL_STXCSUM 0: the kernel turns off every tx-checksum-*
    feature, and with them the offloads that need them) on the namespace of ``io_sock``."""
    value = ctypes.create_string_buffer(struct.pack("=II", ETHTOOL_STXCSUM, 0), 8)
    ifreq = struct.pack("=16sQ", ifname.encode(), ctypes.addressof(value)).ljust(40, b"\0")
    fcntl.ioctl(io_sock.fileno(), SIOCETHTOOL, ifreq)


# ---------------------------------------------------------------------------------- nftables


def nft_add_ingress_drop(table: str, chain: str, dev: str) -> None:
    """``nft add table netdev TABLE`` and ``nft add chain netdev TABLE CHAIN { type filter hook ingress
    device "DEV" priority 0; policy drop; }``, in one nf_tables transaction."""
    fam = NFGENMSG.pack(NFPROTO_NETDEV, 0, 0)
    new_table = fam + _str(NFTA_TABLE_NAME, table) + _be32(NFTA_TABLE_FLAGS, 0)
    new_chain = (fam + _str(NFTA_CHAIN_TABLE, table) + _str(NFTA_CHAIN_NAME, chain)
                 + _nest(NFTA_CHAIN_HOOK, _be32(NFTA_HOOK_HOOKNUM, NF_NETDEV_INGRESS), _be32(NFTA_HOOK_PRIORITY, 0),
                         _str(NFTA_HOOK_DEV, dev))
                 + _be32(NFTA_CHAIN_POLICY, NF_DROP) + _str(NFTA_CHAIN_TYPE, "filter"))
    with Netlink(NETLINK_NETFILTER) as nl:
        nl.batch([(NFT_MSG_NEWTABLE, NLM_F_CREATE, new_table), (NFT_MSG_NEWCHAIN, NLM_F_CREATE, new_chain)],
                 NFNL_SUBSYS_NFTABLES)


def nft_del_chain(table: str, chain: str) -> bool:
    """``nft delete chain netdev TABLE CHAIN``; False if there was no such chain (or table)."""
    body = NFGENMSG.pack(NFPROTO_NETDEV, 0, 0) + _str(NFTA_CHAIN_TABLE, table) + _str(NFTA_CHAIN_NAME, chain)
    try:
        with Netlink(NETLINK_NETFILTER) as nl:
            nl.batch([(NFT_MSG_DELCHAIN, 0, body)], NFNL_SUBSYS_NFTABLES)
    except NetlinkError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True
