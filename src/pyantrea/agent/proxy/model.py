"""AntreaProxy's view of the cluster's Services: one entry per Service port, with its ready endpoints.

This is what Antrea's proxier keeps from the Service and Endpoints informers (pkg/agent/proxy, the
serviceMap and endpointsMap of kube-proxy's change trackers): a Service port is named as kube-proxy
names it (`ns/name` or `ns/name:port`, spec-less of the protocol), and its endpoints are the
`addresses` (the ready ones; `notReadyAddresses` are never used) of every subset whose ports hold a
port of the same name and protocol. That subset port already is the endpoint's resolved targetPort:
the endpoints controller resolves a named targetPort per Pod (`k8s/endpoints.py`), so two Pods with
different numbers for the same name give two subsets.

Group ids: one OVS select group per Service port, numbered as Antrea's GroupCounter does (1, 2, ...
in the order Service ports appear; a removed port's id is reused, last released first). A node's
first sync takes the ports in name order, so offline and a freshly started agent number alike.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pyantrea.apis.k8s import Endpoints, Service

PROTOCOLS = ("TCP", "UDP", "SCTP")
MAX_AFFINITY_TIMEOUT = 0xFFFF  # the learn action's hard_timeout is 16 bits (Kubernetes allows 86400)


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int
    node: str | None = None  # the Endpoints address' nodeName
    local: bool = False  # on this node (hairpin flows are only for local endpoints)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePortEntry:
    """One Service port as AntreaProxy serves it on one node."""

    service: str  # ns/name
    port_name: str | None
    protocol: str  # TCP | UDP | SCTP
    cluster_ip: str
    port: int
    node_port: int | None  # NodePort Services only
    affinity_timeout: int  # 0: no session affinity; else ClientIP with this timeout (seconds)
    endpoints: tuple[Endpoint, ...]  # sorted by (ip, port)

    @property
    def name(self) -> str:
        """kube-proxy's ServicePortName.String(): `ns/name` or `ns/name:port`."""
        return self.service + (f":{self.port_name}" if self.port_name else "")

    @property
    def key(self) -> str:
        """The group counter's key: the port name and the protocol (a name is unique per Service)."""
        return f"{self.name}/{self.protocol}"

    @property
    def proto(self) -> str:
        return self.protocol.lower()


def _local(ip: str, node_name: str | None, node: str, pod_cidr: str | None) -> bool:
    if node_name:
        return node_name == node
    if not pod_cidr:
        return False
    try:
        return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(pod_cidr, strict=False)
    except ValueError:
        return False


def service_port_entries(svc: Service, eps: Endpoints | None, node: str,
                         pod_cidr: str | None = None) -> list[ServicePortEntry]:
    """The Service's ports with their ready endpoints (none when `eps` is absent). A Service without a
    clusterIP (not allocated yet) has none."""
    if not svc.cluster_ip:
        return []
    out = []
    timeout = min(svc.affinity_timeout, MAX_AFFINITY_TIMEOUT) if svc.session_affinity == "ClientIP" else 0
    for sp in svc.ports:
        found: set[Endpoint] = set()
        for ss in (eps.subsets if eps is not None else ()):
            ports = [p for p in ss.ports if (p.name or None) == (sp.name or None) and p.protocol == sp.protocol]
            for p in ports[:1]:
                for a in ss.addresses:
                    found.add(Endpoint(a.ip, p.port, a.node_name, _local(a.ip, a.node_name, node, pod_cidr)))
        endpoints = tuple(sorted(found, key=lambda e: (ipaddress.IPv4Address(e.ip), e.port)))
        out.append(ServicePortEntry(svc.key, sp.name, sp.protocol, svc.cluster_ip, sp.port,
                                    sp.node_port if svc.type == "NodePort" else None, timeout, endpoints))
    return out


def cluster_entries(services: Iterable[Service], endpoints: Mapping[str, Endpoints], node: str,
                    pod_cidr: str | None = None) -> dict[str, list[ServicePortEntry]]:
    """Service key -> its port entries, for every Service (sorted by key)."""
    return {s.key: service_port_entries(s, endpoints.get(s.key), node, pod_cidr)
            for s in sorted(services, key=lambda s: s.key)}


class GroupIDs:
    """Antrea's GroupCounter: a Service port keeps its group id while it exists; ids of removed
    ports are reused, the last released first; otherwise the next unused number (from 1)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self._next = 1
        self._recycled: list[int] = []

    def get(self, key: str) -> int:
        gid = self.ids.get(key)
        if gid is None:
            if self._recycled:
                gid = self._recycled.pop()
            else:
                gid = self._next
                self._next += 1
            self.ids[key] = gid
        return gid

    def release(self, key: str) -> int | None:
        gid = self.ids.pop(key, None)
        if gid is not None:
            self._recycled.append(gid)
        return gid

    def assign(self, entries: Iterable[ServicePortEntry]) -> None:
        """Give ids to these ports, in port-key order (a node's first sync)."""
        for e in sorted(entries, key=lambda e: e.key):
            self.get(e.key)
