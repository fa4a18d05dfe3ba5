"""What the NetworkPolicy controller reads, through the informer interface (Kubernetes mode).

In the embedded lab the controller's own `ObjectStore` is its input; with a real kube-apiserver the
same `ControlPlane` reads Namespaces, Pods and NetworkPolicies (and Nodes, to know the agents)
through informers, and recomputes when they change. Both offer `cluster()` and `subscribe()`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pyantrea.apis.k8s import AgentConfig
from pyantrea.errors import NotFoundError
from pyantrea.k8s.cluster import Cluster
from pyantrea.k8s.informer import Informer, ObjectSource

KINDS = ("Namespace", "Node", "Pod", "NetworkPolicy")


class PolicyInputs(Protocol):
    def cluster(self) -> Cluster: ...

    def subscribe(self, listener: Callable[[list[Any]], None]) -> None: ...

    def get(self, kind: str, namespace: str, name: str) -> Any: ...


@dataclass(frozen=True)
class Change:
    kind: str


class InformerInputs:
    """Namespaces, Nodes, Pods and NetworkPolicies from informers; listeners hear every change."""

    def __init__(self, source: ObjectSource, config: AgentConfig | None = None,
                 log: Callable[[str], None] = lambda s: None):
        self.config = config or AgentConfig()
        self.listeners: list[Callable[[list[Any]], None]] = []
        self.lock = threading.Lock()
        self.informers = {k: Informer(source, k, on_add=self._changed(k), on_delete=self._changed(k),
                                      on_update=self._updated(k), log=log) for k in KINDS}
        self._synced = False

    def _changed(self, kind: str) -> Callable[[Any], None]:
        return lambda obj: self._notify(kind)

    def _updated(self, kind: str) -> Callable[[Any, Any], None]:
        return lambda old, new: self._notify(kind)

    def _notify(self, kind: str) -> None:
        if not self._synced:
            return  # the first lists: one computation after all of them
        for listener in self.listeners:
            listener([Change(kind)])

    def start(self, stop: threading.Event) -> None:
        for inf in self.informers.values():
            inf.sync()
        self._synced = True
        for listener in self.listeners:
            listener([Change(k) for k in KINDS])
        for inf in self.informers.values():
            inf.start(stop)

    def subscribe(self, listener: Callable[[list[Any]], None]) -> None:
        self.listeners.append(listener)

    def cluster(self) -> Cluster:
        from pyantrea.controller.store import cluster_of

        objs = [o for inf in self.informers.values() for o in inf.items()]
        return cluster_of(objs, self.config)

    def get(self, kind: str, namespace: str, name: str) -> Any:
        inf = self.informers.get(kind)
        key = f"{namespace}/{name}" if namespace else name
        obj = inf.get(key) if inf is not None else None
        if obj is None:
            raise NotFoundError(f"{kind} {key} not found")
        return obj
