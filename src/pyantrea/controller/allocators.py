"""Allocation done once, where Kubernetes does it (design §1): the API server's Service IP and
NodePort allocators, the node IPAM controller's pod CIDRs and a minimal scheduler.

Each allocator is told what is taken (pins first, then earlier allocations) and hands out the
lowest free value; nothing is ever re-allocated: a value, once in a stored object, is kept until
the object is deleted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pyantrea.errors import PyantreaError

CLUSTER_CIDR = ipaddress.IPv4Network("10.222.0.0/16")  # kube-controller-manager --cluster-cidr (the seed's)
NODE_CIDR_PREFIX = 24
NODE_PORT_RANGE = (30000, 32767)


class AllocationError(PyantreaError):
    pass


def service_ip(cidr: str, taken: Iterable[str]) -> str:
    """The lowest free address of the service CIDR (the network address and the broadcast excluded)."""
    net = ipaddress.IPv4Network(cidr)
    used = {int(ipaddress.IPv4Address(t)) for t in taken}
    first, last = int(net.network_address) + 1, int(net.broadcast_address) - 1
    for a in range(first, last + 1):
        if a not in used:
            return str(ipaddress.IPv4Address(a))
    raise AllocationError(f"no free address left in the service CIDR {cidr}")


def node_port(taken: Iterable[int]) -> int:
    used = set(taken)
    for p in range(NODE_PORT_RANGE[0], NODE_PORT_RANGE[1] + 1):
        if p not in used:
            return p
    raise AllocationError(f"no free nodePort left in {NODE_PORT_RANGE[0]}-{NODE_PORT_RANGE[1]}")


def pod_cidr(taken: Iterable[str], cluster_cidr: ipaddress.IPv4Network = CLUSTER_CIDR) -> str:
    """The lowest /24 of the cluster CIDR that overlaps no Node's pod CIDR."""
    used = [ipaddress.IPv4Network(t) for t in taken]
    for sub in cluster_cidr.subnets(new_prefix=NODE_CIDR_PREFIX):
        if not any(sub.overlaps(u) for u in used):
            return str(sub)
    raise AllocationError(f"no free /{NODE_CIDR_PREFIX} left in the cluster CIDR {cluster_cidr}")


def schedule(nodes: Iterable[str], load: dict[str, int]) -> str:
    """The node with the fewest Pods, ties broken by name."""
    candidates = sorted(nodes)
    if not candidates:
        raise AllocationError("no Node with a pod CIDR to schedule the Pod on")
    return min(candidates, key=lambda n: (load.get(n, 0), n))
