"""What the Kubernetes endpoints controller makes of a selector Service: shared by the offline
completer and the embedded API server's endpoints controller."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pyantrea.apis.k8s import EndpointAddress, EndpointPort, Endpoints, EndpointSubset, LabelSelector, Pod, Service


def derive_endpoints(s: Service, pods: Iterable[Pod]) -> Endpoints:
    """What the Kubernetes endpoints controller would make for Service `s` (which has a selector).

    Ready Pods = in the Service's namespace, matching the selector, scheduled, with an IP and not
    terminated. Each Pod's ports are the Service's ports with targetPort resolved (a named
    targetPort through the Pod's container ports; a Pod lacking the name has no such port).
    Addresses are grouped by their resolved port set (like Kubernetes' RepackSubsets); addresses
    sorted by IP, subsets by their ports.
    """
    sel = LabelSelector(match_labels=s.selector or ())
    groups: dict[tuple[EndpointPort, ...], list[EndpointAddress]] = {}
    for p in pods:
        if (p.namespace != s.namespace or p.node_name is None or p.pod_ip is None or p.terminated
                or not sel.matches(p.label_map)):
            continue
        ports: list[EndpointPort] = []
        for sp in s.ports:
            tp = sp.target_port
            if tp is None:
                number: int | None = sp.port
            elif isinstance(tp, int):
                number = tp
            else:
                number = p.resolve_port(tp, sp.protocol)
            if number is not None:
                ports.append(EndpointPort(port=number, protocol=sp.protocol, name=sp.name))
        if s.ports and not ports:
            continue
        groups.setdefault(tuple(ports), []).append(
            EndpointAddress(ip=p.pod_ip, node_name=p.node_name, target_pod=p.key)
        )
    subsets = [
        EndpointSubset(addresses=tuple(sorted(addrs, key=lambda a: ipaddress.IPv4Address(a.ip))), ports=ports)
        for ports, addrs in sorted(groups.items(), key=lambda kv: [(x.port, x.protocol, x.name or "") for x in kv[0]])
    ]
    return Endpoints(namespace=s.namespace, name=s.name, subsets=tuple(subsets))
