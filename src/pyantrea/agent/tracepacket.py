"""antctl trace-packet: build the ofproto/trace flow for a node (spec §12.7, design §3).

The flow is built as antrea-agent builds it:
`[in_port=<port>,][dl_src=<mac>,][dl_dst=<mac>,][ip,]<user flow>[,nw_ttl=64][,nw_src=<ip>][,nw_dst=<ip>]`,
with pyantrea's required deviation: every IP trace without `nw_ttl=` gets `nw_ttl=64`.
`tp_src`/`tp_dst` in the user flow become the protocol's own field (`udp_dst`, ...), which
ofproto/trace in OVS 3.1 needs for UDP and SCTP.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from pyantrea.agent.openflow.pipeline import GLOBAL_VMAC
from pyantrea.apis.k8s import NodeNetwork
from pyantrea.errors import InvalidArgument, NotFoundError
from pyantrea.k8s.cluster import Cluster

NON_IP_WORDS = ("arp", "rarp", "ip6", "dl_type=")
IP_PROTOS = ("ip", "icmp", "tcp", "udp", "sctp")


@dataclass(frozen=True)
class Endpoint:
    """A resolved -p/-S/-D argument."""

    ip: str | None = None
    port: str | None = None  # OVS port name, when the endpoint is a local port
    mac: str | None = None
    remote: bool = False  # a Pod on another node
    node_ip: str | None = None  # its node's IP, when remote


def _is_ip(s: str) -> bool:
    try:
        ipaddress.IPv4Address(s)
        return True
    except ValueError:
        return False


def resolve(cluster: Cluster, net: NodeNetwork, spec: str, allow_service: bool) -> Endpoint:
    """An OVS port name, `ns/name` of a Pod (or Service, for -D), or an IPv4 address."""
    spec = spec.strip()
    if not spec:
        raise InvalidArgument("empty source/destination")
    if _is_ip(spec):
        for i in net.interfaces:
            if i.ip == spec:
                return Endpoint(ip=spec, port=i.interface, mac=i.mac)
        if spec == net.gateway_ip:
            return Endpoint(ip=spec, port=net.gateway_name, mac=net.gateway_mac)
        return Endpoint(ip=spec)
    if "/" not in spec:
        for i in net.interfaces:
            if i.interface == spec:
                return Endpoint(ip=i.ip, port=i.interface, mac=i.mac)
        if spec == net.gateway_name:
            return Endpoint(ip=net.gateway_ip, port=spec, mac=net.gateway_mac)
        if spec == net.tunnel_name:
            return Endpoint(port=spec, mac=GLOBAL_VMAC)
        if re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", spec) is None:
            raise InvalidArgument(f"malformed source/destination {spec!r}: want a port name, ns/pod or an IPv4 address")
        spec = f"default/{spec}"
    ns, _, name = spec.partition("/")
    if not ns or not name or "/" in name:
        raise InvalidArgument(f"malformed source/destination {spec!r}: want a port name, ns/pod or an IPv4 address")
    try:
        pod = cluster.pod(ns, name)
    except NotFoundError:
        if allow_service:
            try:
                svc = cluster.service(ns, name)
            except NotFoundError:
                raise NotFoundError(f"no Pod or Service {ns}/{name}") from None
            if not svc.cluster_ip:
                raise NotFoundError(f"Service {ns}/{name} has no ClusterIP")
            return Endpoint(ip=svc.cluster_ip)
        raise NotFoundError(f"pod {ns}/{name} not found") from None
    if pod.host_network:
        return Endpoint(ip=pod.pod_ip)
    if pod.node_name == net.name:
        for i in net.interfaces:
            if i.namespace == ns and i.pod == name:
                return Endpoint(ip=i.ip, port=i.interface, mac=i.mac)
    node_ip = None
    try:
        node_ip = cluster.network(pod.node_name).node_ip if pod.node_name else None
    except NotFoundError:
        pass
    return Endpoint(ip=pod.pod_ip, remote=True, node_ip=node_ip)


def _has(flow: str, field: str) -> bool:
    return re.search(rf"(^|,)\s*{field}\s*=", flow) is not None


def normalize_tp_fields(flow: str) -> str:
    """`tp_src`/`tp_dst` -> `tcp_src`/`udp_dst`/... depending on the protocol named in the flow."""
    proto = None
    for word in ("tcp", "udp", "sctp"):
        if re.search(rf"(^|,)\s*{word}\s*(,|$)", flow):
            proto = word
    if proto is None:
        return flow
    return re.sub(r"(^|,)(\s*)tp_(src|dst)(\s*=)", lambda m: f"{m.group(1)}{m.group(2)}{proto}_{m.group(3)}{m.group(4)}",
                  flow)


def build_flow(cluster: Cluster, node: str, port: str | None, source: str | None,
               destination: str | None, user_flow: str = "") -> str:
    net = cluster.network(node)
    user_flow = user_flow.strip().strip(",")
    src = resolve(cluster, net, source, False) if source else None
    dst = resolve(cluster, net, destination, True) if destination else None
    non_ip = any(w in user_flow for w in NON_IP_WORDS)
    if non_ip and (source or destination):
        raise InvalidArgument("source and destination must not be specified for non-IP packet")
    parts: list[str] = []
    in_port = None
    src_mac = None
    tunnel_in = False
    if port:
        if _has(user_flow, "in_port"):
            raise InvalidArgument("duplicated 'in_port': given with -p and in -f")
        p = resolve(cluster, net, port, False)
        if not p.port:
            raise NotFoundError(f"{port!r} is not a port on node {node}")
        in_port, src_mac = p.port, p.mac
        tunnel_in = p.port == net.tunnel_name
    elif src is not None:
        if src.port:
            in_port, src_mac = src.port, src.mac
        elif src.remote:
            in_port, src_mac, tunnel_in = net.tunnel_name, GLOBAL_VMAC, True
        else:
            in_port, src_mac = net.gateway_name, net.gateway_mac
    elif not _has(user_flow, "in_port"):
        in_port, src_mac = net.gateway_name, net.gateway_mac
    if in_port and not _has(user_flow, "in_port"):
        parts.append(f"in_port={in_port}")
    if src_mac and not _has(user_flow, "dl_src"):
        parts.append(f"dl_src={src_mac}")
    if not _has(user_flow, "dl_dst"):
        if tunnel_in:
            parts.append(f"dl_dst={GLOBAL_VMAC}")
        elif dst is not None and dst.port and dst.mac:
            parts.append(f"dl_dst={dst.mac}")
        elif not non_ip:
            parts.append(f"dl_dst={net.gateway_mac}")
    if not non_ip and not any(re.search(rf"(^|,)\s*{p}\s*(,|$)", user_flow) for p in IP_PROTOS):
        parts.append("ip")
    if user_flow:
        parts.append(normalize_tp_fields(user_flow))
    if tunnel_in and src is not None and src.node_ip and not _has(user_flow, "tun_src"):
        parts.append(f"tun_src={src.node_ip}")
        parts.append(f"tun_dst={net.node_ip}")
    if not non_ip and not _has(user_flow, "nw_ttl"):
        parts.append("nw_ttl=64")
    if src is not None and src.ip and not non_ip:
        if _has(user_flow, "nw_src"):
            raise InvalidArgument("duplicated 'nw_src': given with -S and in -f")
        parts.append(f"nw_src={src.ip}")
    if dst is not None and dst.ip and not non_ip:
        if _has(user_flow, "nw_dst"):
            raise InvalidArgument("duplicated 'nw_dst': given with -D and in -f")
        parts.append(f"nw_dst={dst.ip}")
    return ",".join(parts)
