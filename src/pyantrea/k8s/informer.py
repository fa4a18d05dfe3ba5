"""The informer interface: list + watch of typed Kubernetes objects, with add / update / delete handlers.

The controller and the agents consume cluster objects only through an `Informer` over an
`ObjectSource`. Sources:
- `HTTPSource`: the embedded API server of the lab controller (`controller.store`), over its socket;
- `k8s.kubesource.KubeSource`: kube-apiserver through the official `kubernetes` client (the
  Kubernetes lab and real clusters).

An informer lists once, then watches from the list's resourceVersion; on `410 Gone` (history
lost, or the server restarted) it lists again and turns the difference into handler calls, so a
consumer sees one consistent sequence of events whatever happened on the way. Errors back off.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from pyantrea.errors import PyantreaError
from pyantrea.httpapi import APIClient
from pyantrea.k8s.loader import RawCluster, load_docs


class GoneError(PyantreaError):
    """The watch's resourceVersion is not in the server's history: list again."""


def decode(doc: dict[str, Any], where: str = "") -> Any:
    """A Kubernetes object (JSON/YAML form) -> its typed value (`apis.k8s`)."""
    raw: RawCluster = load_docs([(doc, where or f"{doc.get('kind')} {(doc.get('metadata') or {}).get('name')}")])
    for group in (raw.namespaces, raw.nodes, raw.pods, raw.services, raw.endpoints, raw.policies,
                  raw.node_interfaces, raw.tiers, raw.groups, raw.antrea_policies):
        if group:
            return group[0]
    return None


def object_key(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


class ObjectSource(Protocol):
    def list_objects(self, kind: str, node: str | None) -> tuple[list[dict[str, Any]], int, str]: ...

    def watch(self, kind: str, rv: int, timeout: float, node: str | None,
              epoch: str) -> Iterable[tuple[dict[str, Any] | None, int]]:
        """Events after `rv`, as they come, for up to `timeout` seconds: (event, resourceVersion after
        it); a None event is a bookmark (only the version moves). Raises GoneError (410)."""
        ...


class HTTPSource:
    """The embedded API server over its unix socket (`/v1/objects`, `/v1/objects/watch`)."""

    def __init__(self, socket: str):
        self.client = APIClient(socket, timeout=60)

    def list_objects(self, kind: str, node: str | None) -> tuple[list[dict[str, Any]], int, str]:
        q = f"/v1/objects?kind={kind}" + (f"&node={node}" if node else "")
        ans = self.client.get(q, timeout=30)
        return list(ans["items"]), int(ans["resourceVersion"]), str(ans.get("epoch", ""))

    def watch(self, kind: str, rv: int, timeout: float, node: str | None,
              epoch: str) -> Iterable[tuple[dict[str, Any] | None, int]]:
        q = (f"/v1/objects/watch?kind={kind}&resourceVersion={rv}&timeout={timeout:g}&epoch={epoch}"
             + (f"&node={node}" if node else ""))
        status, ans = self.client.call("GET", q, timeout=timeout + 10)
        if status == 410:
            raise GoneError(str(ans.get("error") if isinstance(ans, dict) else ans))
        if status >= 400:
            raise PyantreaError(f"watch {kind}: HTTP {status}: {ans}")
        events = list(ans["events"])
        final = int(ans["resourceVersion"])
        return [*((e, rv) for e in events), (None, final)]


Handler = Callable[[Any], None]
UpdateHandler = Callable[[Any, Any], None]


class Informer:
    """A cache of one kind's typed objects, kept by list + watch; handlers run in event order."""

    def __init__(self, source: ObjectSource, kind: str, node: str | None = None,
                 on_add: Handler | None = None, on_update: UpdateHandler | None = None,
                 on_delete: Handler | None = None, log: Callable[[str], None] = lambda s: None,
                 keep_raw: bool = False):
        self.source = source
        self.kind = kind
        self.node = node
        self.on_add = on_add or (lambda o: None)
        self.on_update = on_update or (lambda o, n: None)
        self.on_delete = on_delete or (lambda o: None)
        self.log = log
        self.cache: dict[str, Any] = {}
        self.keep_raw = keep_raw  # also keep each object's document (without managedFields): `raw_items`
        self.raw: dict[str, dict[str, Any]] = {}
        self.rv = 0
        self.epoch = ""
        self.lists = 0  # how many times it listed (1 + re-lists after 410 / errors)
        self.synced = threading.Event()
        self.lock = threading.RLock()

    def items(self) -> list[Any]:
        with self.lock:
            return [self.cache[k] for k in sorted(self.cache)]

    def get(self, key: str) -> Any:
        with self.lock:
            return self.cache.get(key)

    def raw_items(self) -> tuple[list[dict[str, Any]], int]:
        """The documents of the cached objects (``keep_raw``), sorted by key, and the resourceVersion."""
        with self.lock:
            return [self.raw[k] for k in sorted(self.raw)], self.rv

    def _keep(self, key: str, doc: dict[str, Any] | None) -> None:
        if not self.keep_raw:
            return
        if doc is None:
            self.raw.pop(key, None)
            return
        meta = doc.get("metadata")
        if isinstance(meta, dict) and "managedFields" in meta:
            doc = {**doc, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
        self.raw[key] = doc

    def sync(self) -> None:
        """List, and turn the difference with the cache into handler calls."""
        items, rv, epoch = self.source.list_objects(self.kind, self.node)
        fresh = {}
        docs = {}
        for d in items:
            try:
                fresh[object_key(d)] = decode(d)
                docs[object_key(d)] = d
            except PyantreaError as e:
                self.log(f"{self.kind} {object_key(d)}: ignored: {e}")
        with self.lock:
            old = self.cache
            self.cache = fresh
            if self.keep_raw:
                self.raw = {}
                for k, d in docs.items():
                    self._keep(k, d)
            self.rv, self.epoch = rv, epoch
            self.lists += 1
            for k in sorted(set(old) - set(fresh)):
                self.on_delete(old[k])
            for k in sorted(fresh):
                if k not in old:
                    self.on_add(fresh[k])
                elif old[k] != fresh[k]:
                    self.on_update(old[k], fresh[k])
        self.synced.set()

    def step(self, timeout: float = 20.0) -> int:
        """One watch round; returns the number of events handled. Raises GoneError."""
        n = 0
        for ev, rv in self.source.watch(self.kind, self.rv, timeout, self.node, self.epoch):
            with self.lock:
                if ev is not None:
                    self._handle(ev)
                    n += 1
                self.rv = rv
        return n

    def _handle(self, ev: dict[str, Any]) -> None:
        obj = ev["object"]
        key = object_key(obj)
        if ev["type"] == "DELETED":
            self._keep(key, None)
            old = self.cache.pop(key, None)
            if old is not None:
                self.on_delete(old)
            return
        try:
            new = decode(obj)
        except PyantreaError as e:  # an object pyantrea cannot read: said once, then ignored
            self.log(f"{self.kind} {key}: ignored: {e}")
            return
        old = self.cache.get(key)
        self.cache[key] = new
        self._keep(key, obj)
        if old is None:
            self.on_add(new)
        elif old != new:
            self.on_update(old, new)

    def run(self, stop: threading.Event, timeout: float = 20.0) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                if not self.synced.is_set():
                    self.sync()
                self.step(timeout)
                backoff = 0.2
            except GoneError as e:
                self.log(f"{self.kind} watch: {e}; listing again")
                self.synced.clear()
            except (OSError, PyantreaError) as e:
                if backoff >= 1.6:
                    self.log(f"{self.kind} watch failed ({e}); retrying")
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as e:  # noqa: BLE001 - a handler's bug must not stop the informer
                self.log(f"{self.kind} handler failed: {type(e).__name__}: {e}")
                stop.wait(backoff)

    def start(self, stop: threading.Event) -> threading.Thread:
        t = threading.Thread(target=self.run, args=(stop,), daemon=True, name=f"informer-{self.kind}")
        t.start()
        return t
