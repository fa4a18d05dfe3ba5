"""Filling in what a cluster folder leaves out (design §3), deterministically.

`complete(raw)` turns a `RawCluster` (what the folder says) into a `Cluster` (what a running
cluster would have): Node pod CIDRs and IPs, Pod placement and IPs, Service cluster IPs and node
ports, Endpoints of selector Services, and each Node's datapath (gateway, tunnel and one
`PodInterface` per Pod with an OVS port). Values pinned by the folder (including NodeInterfaces)
are kept and reserved first; the rest is allocated in name order. Every problem is collected and
raised at once as a `ManifestError`; each line names the object and where it was read.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from dataclasses import replace

from pyantrea.apis.k8s import (
    container_id_for,
    interface_name,
    stable_mac,
    Endpoints,
    Namespace,
    Node,
    NodeInterfaces,
    NodeNetwork,
    Pod,
    PodInterface,
    PodPin,
    Service,
    ServicePort,
)
from pyantrea.errors import ManifestError
from pyantrea.k8s.cluster import Cluster
from pyantrea.k8s.endpoints import derive_endpoints
from pyantrea.k8s.loader import NODE_PORT_RANGE, RawCluster, load_folder

__all__ = [
    "FIRST_POD_OFPORT",
    "NODE_IP_POOL",
    "POD_CIDR_POOL",
    "complete",
    "container_id_for",
    "interface_name",
    "load_cluster",
    "stable_mac",
]

POD_CIDR_POOL = ipaddress.IPv4Network("10.222.0.0/16")  # kubeadm --pod-network-cidr of the seed
POD_CIDR_PREFIX = 24
NODE_IP_POOL = ipaddress.IPv4Network("10.79.1.0/24")  # the seed's underlay
NODE_IP_FIRST = 200  # master is 10.79.1.200 in the seed
FIRST_POD_OFPORT = 3
MAX_OFPORT = 0xFF00 - 1
DEFAULT_TUNNEL = "antrea-tun0"
DEFAULT_GATEWAY_OFPORT = 2
DEFAULT_TUNNEL_OFPORT = 1


# ---------------------------------------------------------------------------------------- helpers


def _pod_id(p: Pod) -> str:
    return f"{p.source}: Pod {p.key}"


def _node_id(n: Node) -> str:
    return f"{n.source}: Node {n.name}"


def _svc_id(s: Service) -> str:
    return f"{s.source}: Service {s.key}"


def _ni_id(ni: NodeInterfaces) -> str:
    return f"{ni.source}: NodeInterfaces {ni.node}"


def _ip(s: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(s)


def _net(s: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(s)


def _by_key(objs: Iterable[Pod]) -> list[Pod]:
    return sorted(objs, key=lambda o: (o.namespace, o.name))


class _Completer:
    def __init__(self, raw: RawCluster):
        self.raw = raw
        self.cfg = raw.config
        self.problems: list[str] = []
        self.warnings: list[str] = list(raw.warnings)

    def err(self, msg: str) -> None:
        self.problems.append(msg)

    # ------------------------------------------------------------------------------------ run

    def run(self) -> Cluster:
        nodes = self.nodes(sorted(self.raw.nodes, key=lambda n: n.name))
        node_by_name = {n.name: n for n in nodes}
        pins = self.pins(node_by_name)
        pods = self.schedule(_by_key(self.raw.pods), nodes, pins)
        pods = self.pod_ips(pods, node_by_name)
        services = self.services(sorted(self.raw.services, key=lambda s: (s.namespace, s.name)))
        endpoints = self.endpoints(services, pods)
        networks = self.networks(nodes, pods, pins)
        if self.problems:
            raise ManifestError(self.problems)
        return Cluster(
            config=self.cfg,
            namespaces=self.namespaces(pods, services, endpoints),
            nodes=tuple(nodes),
            pods=tuple(pods),
            services=tuple(services),
            endpoints=tuple(endpoints),
            policies=tuple(sorted(self.raw.policies, key=lambda p: (p.namespace, p.name))),
            networks=tuple(networks),
            warnings=tuple(self.warnings),
            tiers=tuple(sorted(self.raw.tiers, key=lambda t: t.name)),
            groups=tuple(sorted(self.raw.groups, key=lambda g: (g.namespace or "", g.name))),
            antrea_policies=tuple(sorted(self.raw.antrea_policies, key=lambda p: (p.namespace or "", p.name))),
        )

    # ---------------------------------------------------------------------------------- nodes

    def nodes(self, nodes: list[Node]) -> list[Node]:
        # Pod CIDRs: given ones must not overlap; the others get /24s from the pool in name order.
        given: list[tuple[ipaddress.IPv4Network, Node]] = []
        for n in nodes:
            if n.pod_cidr is None:
                continue
            net = _net(n.pod_cidr)
            for other_net, other in given:
                if net.overlaps(other_net):
                    self.err(f"{_node_id(n)}: spec.podCIDR {n.pod_cidr} overlaps {other_net} of Node "
                             f"{other.name} ({other.source})")
            given.append((net, n))
        used = [net for net, _ in given]
        candidates = iter(POD_CIDR_POOL.subnets(new_prefix=POD_CIDR_PREFIX))
        out: list[Node] = []
        for n in nodes:
            if n.pod_cidr is None:
                cidr = next((c for c in candidates if not any(c.overlaps(u) for u in used)), None)
                if cidr is None:
                    self.err(f"{_node_id(n)}: no free /{POD_CIDR_PREFIX} left in {POD_CIDR_POOL} for its "
                             "spec.podCIDR (CIDR exhausted)")
                else:
                    used.append(cidr)
                    n = replace(n, pod_cidr=str(cidr))
            out.append(n)
        # Node IPs: given ones must be distinct; nodes with none get one from the seed's underlay.
        ip_owner: dict[str, Node] = {}
        for n in out:
            for ip in dict.fromkeys(x for x in (n.internal_ip, n.external_ip) if x):
                if ip in ip_owner:
                    o = ip_owner[ip]
                    self.err(f"{_node_id(n)}: address {ip} is also an address of Node {o.name} ({o.source})")
                else:
                    ip_owner[ip] = n
        hosts = (h for h in NODE_IP_POOL.hosts() if int(h) - int(NODE_IP_POOL.network_address) >= NODE_IP_FIRST)
        final: list[Node] = []
        for n in out:
            if n.node_ip is None:
                free = next((str(h) for h in hosts if str(h) not in ip_owner), None)
                if free is None:
                    self.err(f"{_node_id(n)}: has no InternalIP or ExternalIP and no free address is left in "
                             f"{NODE_IP_POOL} from .{NODE_IP_FIRST} (exhausted)")
                else:
                    ip_owner[free] = n
                    n = replace(n, internal_ip=free)
                    self.warnings.append(f"{_node_id(n)}: no InternalIP or ExternalIP in status.addresses; "
                                         f"using InternalIP {free}")
            final.append(n)
        return final

    # ----------------------------------------------------------------------------------- pins

    def pins(self, node_by_name: dict[str, Node]) -> dict[str, tuple[NodeInterfaces, PodPin]]:
        """Pod key -> (the NodeInterfaces that pins it, the pin). Checks pins name known objects."""
        pods = {p.key: p for p in self.raw.pods}
        seen_nodes: dict[str, NodeInterfaces] = {}
        out: dict[str, tuple[NodeInterfaces, PodPin]] = {}
        for ni in sorted(self.raw.node_interfaces, key=lambda x: x.node):
            if ni.node not in node_by_name:
                self.err(f"{_ni_id(ni)}: there is no Node named {ni.node}")
                continue
            if ni.node in seen_nodes:  # the loader rejects duplicates; RawCluster built by hand may not
                self.err(f"{_ni_id(ni)}: duplicate NodeInterfaces (also {seen_nodes[ni.node].source})")
                continue
            seen_nodes[ni.node] = ni
            for pin in ni.pods:
                key = f"{pin.namespace}/{pin.name}"
                pod = pods.get(key)
                if pod is None:
                    self.err(f"{_ni_id(ni)}: pins Pod {key}, which is not in the cluster")
                    continue
                if key in out:
                    other = out[key][0]
                    where = "twice" if other is ni else f"also by NodeInterfaces {other.node} ({other.source})"
                    self.err(f"{_ni_id(ni)}: Pod {key} is pinned {where}")
                    continue
                out[key] = (ni, pin)
                if pod.node_name is not None and pod.node_name != ni.node:
                    self.err(f"{_ni_id(ni)}: pins Pod {key} on node {ni.node}, but the Pod's spec.nodeName is "
                             f"{pod.node_name} ({pod.source})")
                if pod.host_network:
                    self.err(f"{_ni_id(ni)}: pins Pod {key}, which is a hostNetwork Pod and has no OVS port")
                elif pod.terminated:
                    self.err(f"{_ni_id(ni)}: pins Pod {key}, which is terminated (phase {pod.phase}) and has "
                             "no OVS port")
        return out

    # ------------------------------------------------------------------------------ pods

    def schedule(self, pods: list[Pod], nodes: list[Node],
                 pins: dict[str, tuple[NodeInterfaces, PodPin]]) -> list[Pod]:
        names = {n.name for n in nodes}
        cidrs = [(_net(n.pod_cidr), n.name) for n in nodes if n.pod_cidr is not None]
        out: list[Pod] = []
        rr = 0
        for p in pods:
            home = None  # the node the Pod's given IP belongs to (its pod CIDR, or its address if hostNetwork)
            if p.pod_ip is not None and p.host_network:
                home = next((n.name for n in nodes if p.pod_ip in (n.internal_ip, n.external_ip)), None)
            elif p.pod_ip is not None:
                home = next((name for net, name in cidrs if _ip(p.pod_ip) in net), None)
            if p.node_name is not None:
                if p.node_name not in names:
                    self.err(f"{_pod_id(p)}: spec.nodeName {p.node_name} is not a Node")
            elif p.key in pins:
                p = replace(p, node_name=pins[p.key][0].node)
            elif home is not None:
                p = replace(p, node_name=home)
            elif not nodes:
                self.err(f"{_pod_id(p)}: has no spec.nodeName and there is no Node to schedule it on")
            else:
                p = replace(p, node_name=nodes[rr % len(nodes)].name)
                rr += 1
            out.append(p)
        return out

    def pod_ips(self, pods: list[Pod], node_by_name: dict[str, Node]) -> list[Pod]:
        owners: dict[str, Pod] = {}  # IP -> Pod, non-terminated Pods with an OVS port
        # 1. hostNetwork Pods use their node's IP.
        pods = list(pods)
        for i, p in enumerate(pods):
            if not p.host_network or p.node_name not in node_by_name:
                continue
            node = node_by_name[p.node_name]
            node_ips = [x for x in (node.internal_ip, node.external_ip) if x]
            if p.pod_ip is None:
                pods[i] = replace(p, pod_ip=node.node_ip)
            elif p.pod_ip not in node_ips:
                self.err(f"{_pod_id(p)}: hostNetwork Pod has status.podIP {p.pod_ip}, but its node {node.name} "
                         f"has {', '.join(node_ips)}")
        # 2. Given Pod IPs: inside the node's CIDR, not its network/gateway/broadcast, not used twice.
        for p in pods:
            if p.host_network or p.terminated or p.pod_ip is None or p.node_name not in node_by_name:
                continue
            cidr = node_by_name[p.node_name].pod_cidr
            if cidr is None:
                continue
            net, ip = _net(cidr), _ip(p.pod_ip)
            if ip not in net:
                self.err(f"{_pod_id(p)}: status.podIP {p.pod_ip} is outside the pod CIDR {cidr} of its node "
                         f"{p.node_name}")
            elif ip == net.network_address or ip == net.broadcast_address:
                self.err(f"{_pod_id(p)}: status.podIP {p.pod_ip} is the network or broadcast address of {cidr}")
            elif ip == net.network_address + 1:
                self.err(f"{_pod_id(p)}: status.podIP {p.pod_ip} is the gateway address of node {p.node_name}")
            if p.pod_ip in owners:
                o = owners[p.pod_ip]
                self.err(f"{_pod_id(p)}: status.podIP {p.pod_ip} is also the IP of Pod {o.key} ({o.source})")
            else:
                owners[p.pod_ip] = p
        # 3. The others get the lowest free address of their node's CIDR, in namespace/name order.
        cursor: dict[str, int] = {}
        for i, p in enumerate(pods):
            if p.host_network or p.terminated or p.pod_ip is not None or p.node_name not in node_by_name:
                continue
            cidr = node_by_name[p.node_name].pod_cidr
            if cidr is None:
                continue
            net = _net(cidr)
            k = cursor.get(p.node_name, 2)
            while k < net.num_addresses - 1 and str(net.network_address + k) in owners:
                k += 1
            if k >= net.num_addresses - 1:
                self.err(f"{_pod_id(p)}: no free address left in pod CIDR {cidr} of node {p.node_name} "
                         "(CIDR exhausted)")
                cursor[p.node_name] = k
                continue
            new_ip = str(net.network_address + k)
            cursor[p.node_name] = k + 1
            pods[i] = replace(p, pod_ip=new_ip)
            owners[new_ip] = pods[i]
        return pods

    # ------------------------------------------------------------------------------ services

    def services(self, services: list[Service]) -> list[Service]:
        scidr = _net(self.cfg.service_cidr)
        owners: dict[str, Service] = {}
        for s in services:
            if s.cluster_ip is None:
                continue
            if _ip(s.cluster_ip) not in scidr:
                self.warnings.append(f"{_svc_id(s)}: spec.clusterIP {s.cluster_ip} is outside the service CIDR "
                                     f"{scidr} (antrea-agent.conf serviceCIDR)")
            if s.cluster_ip in owners:
                o = owners[s.cluster_ip]
                self.err(f"{_svc_id(s)}: spec.clusterIP {s.cluster_ip} is also the clusterIP of Service {o.key} "
                         f"({o.source})")
            else:
                owners[s.cluster_ip] = s
        node_ports: dict[int, Service] = {}
        for s in services:
            for sp in s.ports:
                if sp.node_port is None:
                    continue
                prev = node_ports.get(sp.node_port)
                if prev is not None and prev is not s:
                    self.err(f"{_svc_id(s)}: nodePort {sp.node_port} is also used by Service {prev.key} "
                             f"({prev.source})")
                node_ports.setdefault(sp.node_port, s)
        k = 1
        next_port = NODE_PORT_RANGE[0]
        out: list[Service] = []
        for s in services:
            if s.cluster_ip is None:
                while k < scidr.num_addresses - 1 and str(scidr.network_address + k) in owners:
                    k += 1
                if k >= scidr.num_addresses - 1:
                    self.err(f"{_svc_id(s)}: no free address left in the service CIDR {scidr} (CIDR exhausted)")
                else:
                    ip = str(scidr.network_address + k)
                    s = replace(s, cluster_ip=ip)
                    owners[ip] = s
            if s.type == "NodePort" and any(sp.node_port is None for sp in s.ports):
                ports: list[ServicePort] = []
                for sp in s.ports:
                    if sp.node_port is None:
                        while next_port <= NODE_PORT_RANGE[1] and next_port in node_ports:
                            next_port += 1
                        if next_port > NODE_PORT_RANGE[1]:
                            self.err(f"{_svc_id(s)}: no free nodePort left in {NODE_PORT_RANGE[0]}-"
                                     f"{NODE_PORT_RANGE[1]} (exhausted)")
                        else:
                            node_ports[next_port] = s
                            sp = replace(sp, node_port=next_port)
                    ports.append(sp)
                s = replace(s, ports=tuple(ports))
            out.append(s)
        return out

    def endpoints(self, services: list[Service], pods: list[Pod]) -> list[Endpoints]:
        given = {(e.namespace, e.name): e for e in self.raw.endpoints}
        out = dict(given)
        for s in services:
            if s.selector is None or (s.namespace, s.name) in given:
                continue
            out[(s.namespace, s.name)] = derive_endpoints(s, pods)
        return [out[k] for k in sorted(out)]

    # ------------------------------------------------------------------------------ networks

    def networks(self, nodes: list[Node], pods: list[Pod],
                 pins: dict[str, tuple[NodeInterfaces, PodPin]]) -> list[NodeNetwork]:
        ni_by_node = {ni.node: ni for ni in self.raw.node_interfaces}
        out: list[NodeNetwork] = []
        for n in nodes:
            if n.pod_cidr is None or n.node_ip is None:
                continue  # already reported
            ni = ni_by_node.get(n.name)
            out.append(self.network(n, ni, [p for p in pods if p.node_name == n.name], pins))
        return out

    def network(self, n: Node, ni: NodeInterfaces | None, pods: list[Pod],
                pins: dict[str, tuple[NodeInterfaces, PodPin]]) -> NodeNetwork:
        where = _ni_id(ni) if ni is not None else _node_id(n)
        net = _net(n.pod_cidr or "")
        gw = ni.gateway if ni is not None else None
        tun = ni.tunnel if ni is not None else None
        gw_name = (gw.name if gw else None) or self.cfg.host_gateway
        gw_ofport = (gw.ofport if gw else None) or DEFAULT_GATEWAY_OFPORT
        gw_mac = (gw.mac if gw else None) or stable_mac(f"gateway/{n.name}")
        tun_name = (tun.name if tun else None) or DEFAULT_TUNNEL
        tun_ofport = (tun.ofport if tun else None) or DEFAULT_TUNNEL_OFPORT

        # Names, ofports and MACs are unique per node; the fixed ports reserve theirs first.
        ofports: dict[int, str] = {tun_ofport: f"tunnel port {tun_name}"}
        names: dict[str, str] = {tun_name: "the tunnel port"}
        macs: dict[str, str] = {gw_mac: f"gateway port {gw_name}"}
        if gw_ofport in ofports:
            self.err(f"{where}: ofport {gw_ofport} is pinned for both the {ofports[gw_ofport]} and gateway port "
                     f"{gw_name}")
        ofports.setdefault(gw_ofport, f"gateway port {gw_name}")
        if gw_name in names:
            self.err(f"{where}: interface name {gw_name} is used by both the tunnel and the gateway port")
        names.setdefault(gw_name, "the gateway port")

        local = [p for p in pods if not p.host_network and not p.terminated and p.pod_ip is not None]
        pin_of: dict[str, PodPin] = {p.key: pins[p.key][1] for p in local if p.key in pins}
        # Pinned values first, in namespace/name order.
        for p in local:
            pin = pin_of.get(p.key)
            if pin is None:
                continue
            if pin.ofport is not None:
                if pin.ofport in ofports:
                    self.err(f"{where}: ofport {pin.ofport} is pinned for both {ofports[pin.ofport]} and "
                             f"Pod {p.key}")
                else:
                    ofports[pin.ofport] = f"Pod {p.key}"
            if pin.interface is not None:
                if pin.interface in names:
                    self.err(f"{where}: interface name {pin.interface} is pinned for both {names[pin.interface]} "
                             f"and Pod {p.key}")
                else:
                    names[pin.interface] = f"Pod {p.key}"
            if pin.mac is not None:
                if pin.mac in macs:
                    self.err(f"{where}: MAC {pin.mac} is pinned for both {macs[pin.mac]} and Pod {p.key}")
                else:
                    macs[pin.mac] = f"Pod {p.key}"
        # Then everything else.
        interfaces: list[PodInterface] = []
        next_ofport = FIRST_POD_OFPORT
        for p in local:
            pin = pin_of.get(p.key) or PodPin(namespace=p.namespace, name=p.name)
            cid = pin.container_id or container_id_for(p.namespace, p.name)
            ofport = pin.ofport
            if ofport is None:
                while next_ofport <= MAX_OFPORT and next_ofport in ofports:
                    next_ofport += 1
                if next_ofport > MAX_OFPORT:
                    self.err(f"{_pod_id(p)}: no free ofport left on node {n.name} (exhausted)")
                    continue
                ofport = next_ofport
                ofports[ofport] = f"Pod {p.key}"
            iface = pin.interface
            if iface is None:
                iface = interface_name(p.name, cid)
                if iface in names:
                    self.err(f"{_pod_id(p)}: its interface name {iface} (Antrea's naming rule) is already used "
                             f"by {names[iface]} on node {n.name}; pin another name in NodeInterfaces")
                names.setdefault(iface, f"Pod {p.key}")
            mac = pin.mac
            if mac is None:
                mac = stable_mac(f"pod/{p.namespace}/{p.name}")
                if mac in macs:
                    self.err(f"{_pod_id(p)}: its derived MAC {mac} is already used by {macs[mac]} on node {n.name}")
                macs.setdefault(mac, f"Pod {p.key}")
            interfaces.append(PodInterface(namespace=p.namespace, pod=p.name, node=n.name, interface=iface,
                                           ofport=ofport, mac=mac, ip=p.pod_ip or "", container_id=cid))
        interfaces.sort(key=lambda i: i.ofport)
        return NodeNetwork(
            name=n.name,
            node_ip=n.node_ip or "",
            pod_cidr=str(net),
            gateway_ip=str(net.network_address + 1),
            gateway_mac=gw_mac,
            gateway_name=gw_name,
            gateway_ofport=gw_ofport,
            tunnel_name=tun_name,
            tunnel_ofport=tun_ofport,
            interfaces=tuple(interfaces),
        )

    # ------------------------------------------------------------------------------ namespaces

    def namespaces(self, pods: list[Pod], services: list[Service], endpoints: list[Endpoints]) -> tuple[Namespace, ...]:
        """The declared Namespaces, plus an unlabelled one for every namespace used but not declared."""
        out = {n.name: n for n in self.raw.namespaces}
        used: set[str] = {p.namespace for p in pods} | {s.namespace for s in services}
        used |= {e.namespace for e in endpoints} | {p.namespace for p in self.raw.policies}
        for name in used:
            out.setdefault(name, Namespace(name=name))
        return tuple(out[k] for k in sorted(out))


def complete(raw: RawCluster) -> Cluster:
    """Fill in what `raw` leaves out. Raises ManifestError listing every problem found."""
    return _Completer(raw).run()


def load_cluster(path: str | os.PathLike[str]) -> Cluster:
    """Load and complete a cluster folder: complete(load_folder(path))."""
    return complete(load_folder(path))
