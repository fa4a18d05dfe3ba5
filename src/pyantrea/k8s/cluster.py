"""A completed cluster: what a folder (or the API) says, with every left-out value filled in."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from pyantrea.apis.crd import AntreaPolicy, ClusterGroup, Tier
from pyantrea.apis.k8s import (
    AgentConfig,
    Endpoints,
    Namespace,
    NetworkPolicy,
    Node,
    NodeNetwork,
    Pod,
    PodInterface,
    Service,
)
from pyantrea.errors import NotFoundError


@dataclass(frozen=True)
class Cluster:
    """Every tuple is sorted by key (name, or namespace/name), so iteration is deterministic."""

    config: AgentConfig
    namespaces: tuple[Namespace, ...]
    nodes: tuple[Node, ...]
    pods: tuple[Pod, ...]
    services: tuple[Service, ...]
    endpoints: tuple[Endpoints, ...]
    policies: tuple[NetworkPolicy, ...]
    networks: tuple[NodeNetwork, ...]
    warnings: tuple[str, ...] = field(default=(), compare=False)
    # Antrea-native policy objects (the AntreaPolicy gate), sorted by key; user Tiers only
    tiers: tuple[Tier, ...] = ()
    groups: tuple[ClusterGroup, ...] = ()
    antrea_policies: tuple[AntreaPolicy, ...] = ()

    @cached_property
    def _nodes(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def _pods(self) -> dict[str, Pod]:
        return {p.key: p for p in self.pods}

    @cached_property
    def _networks(self) -> dict[str, NodeNetwork]:
        return {n.name: n for n in self.networks}

    @cached_property
    def _namespaces(self) -> dict[str, Namespace]:
        return {n.name: n for n in self.namespaces}

    def node(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise NotFoundError(f"node {name!r} not found (nodes: {', '.join(sorted(self._nodes))})") from None

    def network(self, node: str) -> NodeNetwork:
        self.node(node)
        return self._networks[node]

    def pod(self, namespace: str, name: str) -> Pod:
        try:
            return self._pods[f"{namespace}/{name}"]
        except KeyError:
            raise NotFoundError(f"pod {namespace}/{name} not found") from None

    def namespace(self, name: str) -> Namespace:
        return self._namespaces.get(name) or Namespace(name=name)

    def service(self, namespace: str, name: str) -> Service:
        for s in self.services:
            if s.namespace == namespace and s.name == name:
                return s
        raise NotFoundError(f"service {namespace}/{name} not found")

    def endpoints_of(self, namespace: str, name: str) -> Endpoints | None:
        for e in self.endpoints:
            if e.namespace == namespace and e.name == name:
                return e
        return None

    def interface_of(self, namespace: str, name: str) -> PodInterface | None:
        pod = self.pod(namespace, name)
        if pod.node_name is None or pod.node_name not in self._networks:
            return None
        for i in self._networks[pod.node_name].interfaces:
            if i.namespace == namespace and i.pod == name:
                return i
        return None
