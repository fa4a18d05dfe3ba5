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
SERVED_KINDS = ("Service", "Endpoints", "NodeInterfaces")
"""Kinds watched only to be served (`objects`): antctl's live answers and `lab apply`'s waits."""


class PolicyInputs(Protocol):
    def cluster(self) -> Cluster: ...

    def subscribe(self, listener: Callable[[list[Any]], None]) -> None: ...

    def get(self, kind: str, namespace: str, name: str) -> Any: ...


@dataclass(frozen=True)
class Change:
    kind: str


class InformerInputs:
    """Namespaces, Nodes, Pods and NetworkPolicies from informers; listeners hear every change.

    Informer handlers only note which kinds changed; one thread (`_deliver`) calls the listeners,
    outside every informer's lock. (A listener reads every informer through `cluster()`: called from
    an informer's thread, with that informer's lock held, two informers would wait on each other.)
    A burst of events becomes one call, with each kind once."""

    def __init__(self, source: ObjectSource, config: AgentConfig | None = None,
                 log: Callable[[str], None] = lambda s: None, serve: bool = False):
        self.config = config or AgentConfig()
        self.log = log
        self.listeners: list[Callable[[list[Any]], None]] = []
        self.cond = threading.Condition()
        self.pending: set[str] = set()
        self.delivered = 0  # listener calls made (tests, stats)
        self.delivering = False
        self.informers = {k: Informer(source, k, on_add=self._changed(k), on_delete=self._changed(k),
                                      on_update=self._updated(k), log=log, keep_raw=serve) for k in KINDS}
        # serve: also every object's document, and the kinds pyantrea's tools ask about
        self.served = {k: Informer(source, k, log=log, keep_raw=True) for k in SERVED_KINDS} if serve else {}
        self._synced = False

    def _changed(self, kind: str) -> Callable[[Any], None]:
        return lambda obj: self._notify(kind)

    def _updated(self, kind: str) -> Callable[[Any, Any], None]:
        return lambda old, new: self._notify(kind)

    def _notify(self, kind: str) -> None:
        if not self._synced:
            return  # the first lists: one computation after all of them
        with self.cond:
            self.pending.add(kind)
            self.cond.notify_all()

    def _deliver(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self.cond:
                while not self.pending and not stop.is_set():
                    self.cond.wait(0.5)
                kinds, self.pending = sorted(self.pending), set()
                self.delivering = bool(kinds)
            if not kinds:
                continue
            for listener in self.listeners:
                try:
                    listener([Change(k) for k in kinds])
                except Exception as e:  # noqa: BLE001 - a listener's bug must not stop the others
                    self.log(f"listener failed: {type(e).__name__}: {e}")
            with self.cond:
                self.delivered += 1
                self.delivering = False
                self.cond.notify_all()

    def idle(self) -> bool:
        """Every change the informers have seen has been given to the listeners (computed)."""
        with self.cond:
            return not self.pending and not self.delivering

    def start(self, stop: threading.Event) -> None:
        """List every kind (raises if kube-apiserver cannot be reached), tell the listeners once,
        then watch."""
        for inf in [*self.informers.values(), *self.served.values()]:
            inf.sync()
        self._synced = True
        for listener in self.listeners:
            listener([Change(k) for k in KINDS])
        threading.Thread(target=self._deliver, args=(stop,), daemon=True, name="inputs-deliver").start()
        for inf in [*self.informers.values(), *self.served.values()]:
            inf.start(stop)

    def subscribe(self, listener: Callable[[list[Any]], None]) -> None:
        self.listeners.append(listener)

    def versions(self) -> dict[str, int]:
        """Each informer's resourceVersion."""
        return {k: inf.rv for k, inf in {**self.informers, **self.served}.items()}

    def objects(self, kind: str | None, node: str | None = None) -> tuple[list[dict[str, Any]], int]:
        """The documents the informers hold (``serve``): of one kind (None: every kind), for ``node``
        as the embedded API server filters them (its Pods, the Node, its NodeInterfaces); and the
        highest resourceVersion among the informers asked."""
        infs = {**self.informers, **self.served}
        kinds = [kind] if kind else sorted(infs)
        if kind is not None and kind not in infs:
            raise NotFoundError(f"kind {kind!r} is not watched (watched: {', '.join(sorted(infs))})")
        items: list[dict[str, Any]] = []
        rv = 0
        for k in kinds:
            docs, krv = infs[k].raw_items()
            rv = max(rv, krv)
            if node and k == "Pod":
                docs = [d for d in docs if (d.get("spec") or {}).get("nodeName") == node]
            elif node and k in ("Node", "NodeInterfaces"):
                docs = [d for d in docs if (d.get("metadata") or {}).get("name") == node]
            items += docs
        return items, rv

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
