"""The embedded API server: the lab's Kubernetes objects, allocated once and changed by events.

In the embedded lab there is no kube-apiserver, so the controller process holds the objects. It
behaves as the parts of Kubernetes the lab needs do:
- admission: every document is decoded and validated by the same decoder as the offline loader
  (`k8s.loader.load_docs`, messages name the user's file, document and object), a namespaced
  object needs its Namespace, immutable fields stay immutable, unknown kinds are refused;
- allocation at create time, never redone: a Service's clusterIP and nodePorts (the API server's
  allocators), a Node's podCIDR (node IPAM), a Pod's nodeName (the scheduler). Pins are requests
  that are honoured. A Pod's `status.podIP` in a manifest is a *request* (Pods' status belongs to
  the kubelet): it is kept as the annotation `pyantrea.io/requested-ip`, which the lab kubelet
  passes to the CNI; the kubelet writes the IP the CNI gave through `set_status`;
- the endpoints controller: Endpoints of selector Services follow their ready Pods;
- list + watch with a resourceVersion: every change is an ADDED / MODIFIED / DELETED event.

Nothing here predicts a value: the offline completer (`k8s.complete`) is never used.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pyantrea.apis import crd
from pyantrea.apis.k8s import REQUESTED_IP, AgentConfig, Endpoints, Namespace, NetworkPolicy, Node, Pod, Service
from pyantrea.controller import allocators
from pyantrea.errors import ManifestError, NotFoundError, PyantreaError
from pyantrea.k8s.cluster import Cluster
from pyantrea.k8s.endpoints import derive_endpoints
from pyantrea.k8s.informer import decode
from pyantrea.k8s.loader import RawCluster, load_folder

KIND_API: dict[str, str] = {
    "Namespace": "v1",
    "Node": "v1",
    "Pod": "v1",
    "Service": "v1",
    "Endpoints": "v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "NodeInterfaces": "pyantrea.io/v1alpha1",
}
# Antrea-native policy kinds, served with the AntreaPolicy gate on (store kind -> apiVersion).
# Antrea's NetworkPolicy is stored as AntreaNetworkPolicy: it shares its kind with Kubernetes'.
ANTREA_KIND_API: dict[str, str] = {k: crd.API_VERSION for k in crd.KINDS}
CLUSTER_SCOPED = frozenset({"Namespace", "Node", "NodeInterfaces", "ClusterNetworkPolicy", "Tier", "ClusterGroup"})
BUILTIN_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")
STATE_FILE = "cluster.yaml"
# Admission order inside one request: what others refer to first (kubectl apply -f DIR does not
# order, but a folder is one request here and must not depend on file names).
_ORDER = {"Namespace": 0, "Node": 1, "NodeInterfaces": 2, "Service": 3, "Endpoints": 4, "Pod": 5, "NetworkPolicy": 6,
          "Tier": 6, "ClusterGroup": 7, "Group": 7, "ClusterNetworkPolicy": 8, "AntreaNetworkPolicy": 8}


def store_kind(doc: dict[str, Any]) -> str:
    """The kind a document is stored under: Antrea's NetworkPolicy (crd.antrea.io) is AntreaNetworkPolicy."""
    kind = str(doc.get("kind"))
    if kind == "NetworkPolicy" and doc.get("apiVersion") == crd.API_VERSION:
        return crd.ANP
    return kind

ObjKey = tuple[str, str, str]  # kind, namespace ("" when cluster-scoped), name


def key_str(k: ObjKey) -> str:
    return f"{k[0]} {k[1] + '/' if k[1] else ''}{k[2]}"


class Gone(PyantreaError):
    """410: the watch asked for a resourceVersion older than the history kept (or another epoch)."""


class Conflict(PyantreaError):
    """409 / 422: the request is well formed but the API server refuses it (immutable field, taken IP)."""


@dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    key: ObjKey
    object: dict[str, Any]  # the object as stored (for DELETED: its last state)

    @property
    def kind(self) -> str:
        return self.key[0]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "object": self.object}


def _meta(doc: dict[str, Any]) -> dict[str, Any]:
    m = doc.get("metadata")
    if not isinstance(m, dict):
        m = doc["metadata"] = {}
    return m


def parse_documents(text: str, what: str) -> list[tuple[Any, str]]:
    """The documents of a YAML text (List items flattened), each with its `where` label."""
    try:
        raw = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ManifestError([f"{what}: YAML syntax error{at}: {getattr(e, 'problem', None) or e}"]) from None
    out: list[tuple[Any, str]] = []
    for n, d in enumerate(raw, start=1):
        if d is None:
            continue
        where = f"{what} (document {n})"
        if isinstance(d, dict) and d.get("kind") == "List" and isinstance(d.get("items"), list):
            out += [(item, f"{what} (document {n}, item {i})") for i, item in enumerate(d["items"], start=1)
                    if item is not None]
        else:
            out.append((d, where))
    return out


def endpoints_doc(e: Endpoints) -> dict[str, Any]:
    subsets = []
    for ss in e.subsets:
        addrs = []
        for a in ss.addresses:
            d: dict[str, Any] = {"ip": a.ip}
            if a.node_name:
                d["nodeName"] = a.node_name
            if a.target_pod:
                ns, name = a.target_pod.split("/", 1)
                d["targetRef"] = {"kind": "Pod", "namespace": ns, "name": name}
            addrs.append(d)
        ports = [{k: v for k, v in (("name", p.name), ("port", p.port), ("protocol", p.protocol)) if v is not None}
                 for p in ss.ports]
        subsets.append({"addresses": addrs, "ports": ports})
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": e.name, "namespace": e.namespace},
            "subsets": subsets}


class Overlay(dict):  # type: ignore[type-arg]
    """A request's view of the store: the stored objects plus the request's own changes, without
    copying the table (a request costs what it changes). `of_kind` lists one kind (one namespace)
    through the store's index instead of scanning every object."""

    _GONE = object()

    def __init__(self, base: dict[ObjKey, Any], index: dict[tuple[str, str], set[ObjKey]]):
        super().__init__()
        self.base = base
        self.index = index

    def __getitem__(self, k: ObjKey) -> Any:
        if dict.__contains__(self, k):
            v = dict.__getitem__(self, k)
            if v is Overlay._GONE:
                raise KeyError(k)
            return v
        return self.base[k]

    def get(self, k: ObjKey, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[k]
        except KeyError:
            return default

    def __contains__(self, k: object) -> bool:
        if dict.__contains__(self, k):
            return dict.__getitem__(self, k) is not Overlay._GONE
        return k in self.base

    def __delitem__(self, k: ObjKey) -> None:
        if k not in self:
            raise KeyError(k)
        dict.__setitem__(self, k, Overlay._GONE)

    def pop(self, k: ObjKey, *default: Any) -> Any:  # type: ignore[override]
        if k in self:
            v = self[k]
            del self[k]
            return v
        if default:
            return default[0]
        raise KeyError(k)

    def _keys(self) -> list[ObjKey]:
        mine = [k for k, v in dict.items(self) if v is not Overlay._GONE]
        return [k for k in self.base if not dict.__contains__(self, k)] + mine

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def keys(self):  # type: ignore[no-untyped-def,override]
        return self._keys()

    def items(self):  # type: ignore[no-untyped-def,override]
        return [(k, self[k]) for k in self._keys()]

    def values(self):  # type: ignore[no-untyped-def,override]
        return [self[k] for k in self._keys()]

    def of_kind(self, kind: str, namespace: str | None = None) -> list[tuple[ObjKey, Any]]:
        """(key, value) of every object of `kind` (in `namespace`), sorted by key."""
        if namespace is None:
            keys = {k for (kd, _), ks in self.index.items() if kd == kind for k in ks}
        else:
            keys = set(self.index.get((kind, namespace), ()))
        for k, v in dict.items(self):
            if k[0] == kind and (namespace is None or k[1] == namespace):
                if v is Overlay._GONE:
                    keys.discard(k)
                else:
                    keys.add(k)
        return [(k, self[k]) for k in sorted(keys) if k in self]


class ObjectStore:
    """Typed objects by (kind, namespace, name), versioned; every change wakes the watchers."""

    def __init__(self, config: AgentConfig | None = None, state_dir: str | Path | None = None,
                 history: int = 20000, cluster_cidr: str = str(allocators.CLUSTER_CIDR)):
        self.config = config or AgentConfig()
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.cluster_cidr = ipaddress.IPv4Network(cluster_cidr)
        self.cond = threading.Condition(threading.RLock())
        self.epoch = uuid.uuid4().hex[:12]  # a restarted store's versions are not comparable to ours
        self.rv = 0
        self.objects: dict[ObjKey, dict[str, Any]] = {}
        self.typed: dict[ObjKey, Any] = {}
        self.index: dict[tuple[str, str], set[ObjKey]] = {}  # (kind, namespace) -> keys
        self.log: deque[Event] = deque(maxlen=history)
        self.listeners: list[Callable[[list[Event]], None]] = []
        self._commit_lock = threading.Lock()  # one change at a time, listeners called in order
        self._commit([(("Namespace", "", n), self._new_namespace(n)) for n in BUILTIN_NAMESPACES], persist=False)

    # ------------------------------------------------------------------------------ reading

    def get(self, kind: str, namespace: str, name: str) -> Any:
        k = (kind, "" if kind in CLUSTER_SCOPED else namespace, name)
        with self.cond:
            if k not in self.typed:
                raise NotFoundError(f"{key_str(k)} not found")
            return self.typed[k]

    def items(self, kind: str) -> list[Any]:
        with self.cond:
            return [v for k, v in sorted(self.typed.items()) if k[0] == kind]

    def raw_items(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self.cond:
            return [copy.deepcopy(v) for k, v in sorted(self.objects.items()) if kind is None or k[0] == kind]

    @staticmethod
    def matches(key: ObjKey, obj: dict[str, Any], node: str | None) -> bool:
        """The `node` field selector: Pods bound to it (spec.nodeName), its Node and NodeInterfaces."""
        if node is None:
            return True
        if key[0] == "Pod":
            return (obj.get("spec") or {}).get("nodeName") == node
        if key[0] in ("Node", "NodeInterfaces"):
            return key[2] == node
        return True

    def list_objects(self, kind: str, node: str | None = None) -> tuple[list[dict[str, Any]], int]:
        with self.cond:
            items = [copy.deepcopy(v) for k, v in sorted(self.objects.items())
                     if k[0] == kind and self.matches(k, v, node)]
            return items, self.rv

    def watch(self, kind: str | None, since: int, timeout: float, node: str | None = None,
              epoch: str = "") -> tuple[list[Event], int]:
        """Events after `since` (of `kind`, through the node selector); waits up to `timeout` for one."""
        if epoch and epoch != self.epoch:
            raise Gone(f"the API server restarted (epoch {self.epoch}, not {epoch}): list again")
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.log and since < self.log[0].rv - 1:
                    raise Gone(f"resourceVersion {since} is too old (oldest kept: {self.log[0].rv}): list again")
                if since > self.rv:
                    raise Gone(f"resourceVersion {since} is newer than the store's ({self.rv}): list again")
                evs = [e for e in self.log if e.rv > since and (kind is None or e.kind == kind)
                       and self.matches(e.key, e.object, node)]
                left = deadline - time.monotonic()
                if evs or left <= 0:
                    return evs, self.rv
                self.cond.wait(left)

    def cluster(self, networks: tuple[Any, ...] = ()) -> Cluster:
        """The objects as the `Cluster` value the shared code reads (kube-proxy rules, traces)."""
        with self.cond:
            return cluster_of(self.typed.values(), self.config, networks)

    # ------------------------------------------------------------------------------ writing

    def apply(self, text: str, what: str) -> dict[str, Any]:
        return self.apply_docs(parse_documents(text, what))

    def apply_docs(self, docs: list[tuple[Any, str]]) -> dict[str, Any]:
        """Create or update every document, all or nothing. Returns {"resourceVersion", "results"}."""
        self._check_kinds(docs)
        problems: list[str] = []
        decoded: list[tuple[dict[str, Any], str, Any]] = []
        for doc, where in docs:
            try:
                decoded.append((doc, where, decode(doc, where)))
            except ManifestError as e:
                problems += e.problems
        if problems:
            raise ManifestError(problems)
        decoded.sort(key=lambda t: _ORDER.get(store_kind(t[0]), 9))
        with self._commit_lock:
            with self.cond:
                staged = Overlay(self.objects, self.index)
                styped = Overlay(self.typed, self.index)
            changes: list[tuple[ObjKey, dict[str, Any] | None]] = []
            results: list[dict[str, str]] = []
            for doc, where, obj in decoded:
                k = self._key(doc, obj)
                try:
                    new = self._admit(copy.deepcopy(doc), obj, k, staged, styped)
                except PyantreaError as e:
                    problems.append(f"{where}: {key_str(k)}: {e}")
                    continue
                old = staged.get(k)
                if old is not None and _same(old, new):
                    results.append({"object": key_str(k), "action": "unchanged"})
                    continue
                staged[k] = new
                styped[k] = decode(new, f"{key_str(k)} (stored)")
                changes.append((k, new))
                results.append({"object": key_str(k), "action": "configured" if old is not None else "created"})
            if problems:
                raise ManifestError(problems)
            problems += self._antrea_admission(styped, self._where(decoded))
            if problems:
                raise ManifestError(problems)
            changes += self._sync_endpoints(staged, styped, {c[0] for c in changes})
            self._commit(changes, typed=styped)
            return {"resourceVersion": self.rv, "results": results}

    def delete(self, text: str, what: str) -> dict[str, Any]:
        docs = parse_documents(text, what)
        self._check_kinds(docs, need_api=False)  # a delete names kind, namespace and name
        keys: list[ObjKey] = []
        problems: list[str] = []
        for doc, where in docs:
            meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
            name = meta.get("name")
            if not isinstance(name, str) or not name:
                problems.append(f"{where}: {doc.get('kind')}: metadata.name is required")
                continue
            kind = store_kind(doc)
            ns = "" if kind in CLUSTER_SCOPED else str(meta.get("namespace") or "default")
            keys.append((kind, ns, name))
        with self._commit_lock:
            with self.cond:
                staged = Overlay(self.objects, self.index)
                styped = Overlay(self.typed, self.index)
            builtin = [k for k in keys if k[0] == crd.TIER and k[2] in crd.BUILTIN_TIERS]
            missing = [key_str(k) for k in keys if k not in staged and k not in builtin]
            problems += [f"{what}: {m}: not found" for m in missing]
            problems += [f"{what}: Namespace {k[2]}: the built-in namespace cannot be deleted"
                         for k in keys if k[0] == "Namespace" and k[2] in BUILTIN_NAMESPACES]
            problems += [f"{what}: Tier {k[2]}: cannot delete reserved tier {k[2]} (a built-in Tier)" for k in builtin]
            if problems:
                raise NotFoundError("\n".join(problems)) if len(problems) == len(missing) else ManifestError(problems)
            gone: list[ObjKey] = []
            for k in keys:
                gone.append(k)
                if k[0] == "Namespace":  # the namespace's objects go with it
                    gone += [o for o in staged if o[1] == k[2] and o[0] not in CLUSTER_SCOPED]
                if k[0] == "Service":  # and a Service's Endpoints with it
                    gone.append(("Endpoints", k[1], k[2]))
            changes: list[tuple[ObjKey, dict[str, Any] | None]] = []
            for k in dict.fromkeys(gone):
                if k in staged:
                    del staged[k]
                    styped.pop(k, None)
                    changes.append((k, None))
            problems = self._tier_deletion(what, [k for k in keys if k[0] == crd.TIER], styped)
            if problems:
                raise ManifestError(problems)
            changes += self._sync_endpoints(staged, styped, set(gone))
            self._commit(changes, typed=styped)
            return {"resourceVersion": self.rv, "results": [{"object": key_str(k), "action": "deleted"} for k in keys]}

    def set_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> int:
        """The status subresource (the kubelet's): merge `status` into the stored object."""
        if kind != "Pod":
            raise Conflict(f"status of {kind} is not writable here (only Pod)")
        k = (kind, namespace, name)
        with self._commit_lock:
            with self.cond:
                if k not in self.objects:
                    raise NotFoundError(f"{key_str(k)} not found")
                staged = Overlay(self.objects, self.index)
                styped = Overlay(self.typed, self.index)
            new = copy.deepcopy(staged[k])
            cur = new.get("status")
            st: dict[str, Any] = {**(cur if isinstance(cur, dict) else {}), **status}
            new["status"] = {k2: v for k2, v in st.items() if v is not None}
            if _same(staged[k], new):
                return self.rv
            staged[k] = new
            styped[k] = decode(new, f"status of {key_str(k)}")
            changes: list[tuple[ObjKey, dict[str, Any] | None]] = [(k, new)]
            changes += self._sync_endpoints(staged, styped, {k})
            self._commit(changes, typed=styped)
            return self.rv

    # ------------------------------------------------------------------------------ admission

    def _check_kinds(self, docs: list[tuple[Any, str]], need_api: bool = True) -> None:
        from pyantrea.k8s.antreacrd import gate_problem

        problems = []
        gate = self.config.gate(crd.GATE)
        for doc, where in docs:
            if not isinstance(doc, dict):
                problems.append(f"{where}: document is not a mapping")
                continue
            kind, api = doc.get("kind"), doc.get("apiVersion")
            skind = store_kind(doc)
            if api == crd.API_VERSION or (skind in ANTREA_KIND_API and kind != "NetworkPolicy"):
                if skind not in ANTREA_KIND_API:
                    problems.append(f"{where}: kind {kind!r} (apiVersion {api!r}) is not served by this API server "
                                    f"(of {crd.API_VERSION} it serves {', '.join(sorted(set(crd.MANIFEST_KIND.values())))})")
                elif not gate:
                    m = doc.get("metadata")
                    meta: dict[str, Any] = m if isinstance(m, dict) else {}
                    ns = "" if skind in CLUSTER_SCOPED else f"{meta.get('namespace') or 'default'}/"
                    problems.append(f"{where}: {kind} {ns}{meta.get('name', '')}: {gate_problem(skind)}")
                elif api != crd.API_VERSION and (need_api or api is not None):
                    problems.append(f"{where}: {kind}: apiVersion {api!r} is not served (use {crd.API_VERSION})")
                continue
            if kind not in KIND_API:
                problems.append(f"{where}: kind {kind!r} (apiVersion {api!r}) is not served by this API server "
                                f"(it serves {', '.join(sorted(KIND_API))})")
            elif api != KIND_API[str(kind)] and (need_api or api is not None):
                problems.append(f"{where}: {kind}: apiVersion {api!r} is not served (use {KIND_API[str(kind)]})")
        if problems:
            raise ManifestError(problems)

    @staticmethod
    def _key(doc: dict[str, Any], obj: Any) -> ObjKey:
        kind = store_kind(doc)
        name = _meta(doc)["name"]
        ns = "" if kind in CLUSTER_SCOPED else getattr(obj, "namespace", None) or "default"
        return kind, ns, str(name)

    def _admit(self, doc: dict[str, Any], obj: Any, k: ObjKey, staged: Overlay,
               styped: Overlay) -> dict[str, Any]:
        kind, ns, name = k
        old = staged.get(k)
        meta = _meta(doc)
        if kind not in CLUSTER_SCOPED:
            if ("Namespace", "", ns) not in staged:
                raise Conflict(f"namespace {ns!r} not found (create the Namespace first)")
            meta["namespace"] = ns
        meta.pop("resourceVersion", None)
        if old is not None:
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"].get("creationTimestamp")
        else:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if kind == "Pod":
            self._admit_pod(doc, obj, old, staged, styped)
        elif kind == "Service":
            self._admit_service(doc, obj, old, staged, styped)
        elif kind == "Node":
            self._admit_node(doc, obj, old, staged, styped)
        return doc

    def _admit_node(self, doc: dict[str, Any], obj: Node, old: dict[str, Any] | None,
                    staged: Overlay, styped: Overlay) -> None:
        spec = doc.setdefault("spec", {})
        others = [n for k, n in styped.of_kind("Node") if k[2] != obj.name and n.pod_cidr]
        if old is not None:
            was = (old.get("spec") or {}).get("podCIDR")
            if obj.pod_cidr is None and was:
                spec["podCIDR"] = was
                return
            if was and obj.pod_cidr != was:
                raise Conflict(f"spec.podCIDR: field is immutable once set ({was})")
        if obj.pod_cidr is None:
            spec["podCIDR"] = allocators.pod_cidr([n.pod_cidr for n in others], self.cluster_cidr)
            return
        mine = ipaddress.IPv4Network(obj.pod_cidr)
        for n in others:
            if mine.overlaps(ipaddress.IPv4Network(n.pod_cidr)):
                raise Conflict(f"spec.podCIDR {obj.pod_cidr} overlaps {n.pod_cidr} of Node {n.name}")

    def _admit_service(self, doc: dict[str, Any], obj: Service, old: dict[str, Any] | None,
                       staged: Overlay, styped: Overlay) -> None:
        spec = doc.setdefault("spec", {})
        others = [s for k, s in styped.of_kind("Service") if k[1:] != (obj.namespace, obj.name)]
        ospec = (old or {}).get("spec") or {}
        was = ospec.get("clusterIP")
        if old is not None and was and obj.cluster_ip is not None and obj.cluster_ip != was:
            raise Conflict(f"spec.clusterIP: field is immutable ({was})")
        if obj.cluster_ip is None:
            spec["clusterIP"] = was or allocators.service_ip(self.config.service_cidr,
                                                             [s.cluster_ip for s in others if s.cluster_ip])
        else:
            if ipaddress.IPv4Address(obj.cluster_ip) not in ipaddress.IPv4Network(self.config.service_cidr):
                raise Conflict(f"spec.clusterIP {obj.cluster_ip}: not in the valid range "
                               f"(service CIDR {self.config.service_cidr})")
            owner = next((s for s in others if s.cluster_ip == obj.cluster_ip), None)
            if owner is not None:
                raise Conflict(f"spec.clusterIP {obj.cluster_ip}: provided IP is already allocated "
                               f"(Service {owner.key})")
        taken = {sp.node_port: s.key for s in others for sp in s.ports if sp.node_port}
        for sp in obj.ports:
            if sp.node_port is not None and sp.node_port in taken:
                raise Conflict(f"nodePort {sp.node_port}: provided port is already allocated "
                               f"(Service {taken[sp.node_port]})")
        if obj.type == "NodePort":
            kept = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort") for p in ospec.get("ports") or []}
            used = set(taken) | {sp.node_port for sp in obj.ports if sp.node_port}
            for raw_port, sp in zip(spec.get("ports") or [], obj.ports):
                if sp.node_port is None:
                    np = kept.get((sp.port, sp.protocol)) or allocators.node_port(used)
                    raw_port["nodePort"] = np
                    used.add(np)

    def _admit_pod(self, doc: dict[str, Any], obj: Pod, old: dict[str, Any] | None,
                   staged: Overlay, styped: Overlay) -> None:
        spec = doc.setdefault("spec", {})
        meta = _meta(doc)
        given = doc.get("status")
        status: dict[str, Any] = given if isinstance(given, dict) else {}
        if old is not None:
            ospec = dict(old.get("spec") or {})
            nspec = dict(spec)
            nspec.setdefault("nodeName", ospec.get("nodeName"))
            if nspec != ospec:
                raise Conflict("spec: pod updates may not change fields other than metadata "
                               "(labels, annotations); delete and re-create the Pod")
            spec["nodeName"] = ospec.get("nodeName")
            wanted = status.get("podIP")
            have = (old.get("status") or {}).get("podIP") or \
                ((old.get("metadata") or {}).get("annotations") or {}).get(REQUESTED_IP)
            if wanted and have and wanted != have:
                raise Conflict(f"status.podIP {wanted}: the Pod already has {have} (delete and re-create it)")
            annotations = dict(meta.get("annotations") or {})
            req = ((old.get("metadata") or {}).get("annotations") or {}).get(REQUESTED_IP)
            if req:
                annotations[REQUESTED_IP] = req
            if annotations:
                meta["annotations"] = annotations
            if "status" in old:
                doc["status"] = copy.deepcopy(old["status"])
            else:
                doc.pop("status", None)
            return
        nodes = {k[2]: n for k, n in styped.of_kind("Node")}
        if obj.node_name is None:
            load: dict[str, int] = {}
            for k, p in styped.of_kind("Pod"):
                if p.node_name:
                    load[p.node_name] = load.get(p.node_name, 0) + 1
            spec["nodeName"] = allocators.schedule([n for n, v in nodes.items() if v.pod_cidr], load)
        node = nodes.get(spec["nodeName"])
        if obj.host_network:
            # The kubelet reports a hostNetwork Pod's IP as its Node's.
            ip = obj.pod_ip or (node.node_ip if node is not None else None)
            doc["status"] = {"phase": obj.phase, **({"podIP": ip} if ip else {})}
            return
        if obj.pod_ip:
            if node is not None and node.pod_cidr and \
                    ipaddress.IPv4Address(obj.pod_ip) not in ipaddress.IPv4Network(node.pod_cidr):
                raise Conflict(f"status.podIP {obj.pod_ip} (requested IP) is outside the pod CIDR "
                               f"{node.pod_cidr} of Node {node.name}")
            taken = next((p for k, p in styped.of_kind("Pod") if not p.host_network
                          and _pod_ip_or_request(staged[k]) == obj.pod_ip), None)
            if taken is not None:
                raise Conflict(f"status.podIP {obj.pod_ip} (requested IP) is already the IP of Pod {taken.key}")
            meta.setdefault("annotations", {})[REQUESTED_IP] = obj.pod_ip
        doc["status"] = {"phase": "Pending"}

    # ------------------------------------------------------------------------------ Antrea-native policies

    def _where(self, decoded: list[tuple[dict[str, Any], str, Any]]) -> dict[tuple[str, str], str]:
        """(kind, key) -> the user's where-label of each Antrea-native object in a request."""
        out: dict[tuple[str, str], str] = {}
        for doc, where, obj in decoded:
            k = self._key(doc, obj)
            if k[0] in ANTREA_KIND_API:
                out[(k[0], f"{k[1]}/{k[2]}" if k[1] else k[2])] = where
        return out

    @staticmethod
    def _antrea_admission(styped: Overlay, where: dict[tuple[str, str], str]) -> list[str]:
        """Antrea's webhook checks that need other objects (the policy's Tier exists, Tier priorities do
        not overlap...), on the state the request would leave; only problems of objects in the request,
        named by the user's file."""
        if not where:
            return []
        from pyantrea.k8s.antreacrd import cross_problems

        objs = [(k, v) for k, v in styped.items() if k[0] in ANTREA_KIND_API]
        labels = {(k[0], f"{k[1]}/{k[2]}" if k[1] else k[2]): where.get((k[0], f"{k[1]}/{k[2]}" if k[1] else k[2]),
                                                                      f"{key_str(k)} (stored)") for k, _ in objs}
        out = cross_problems([v for k, v in objs if k[0] == crd.TIER],
                             [v for k, v in objs if k[0] in (crd.ACNP, crd.ANP)],
                             [v for k, v in objs if k[0] in (crd.CLUSTER_GROUP, crd.GROUP)], labels)
        mine = set(where.values())
        return [p for p in out if any(p.startswith(w + ": ") for w in mine)]

    @staticmethod
    def _tier_deletion(what: str, tiers: list[ObjKey], styped: Overlay) -> list[str]:
        """A Tier that a remaining policy references cannot be deleted (Antrea's webhook)."""
        from pyantrea.k8s.antreacrd import object_label, referencing

        policies = [v for k, v in styped.items() if k[0] in (crd.ACNP, crd.ANP)]
        out = []
        for k in tiers:
            users = referencing(k[2], policies)
            if users:
                names = ", ".join(object_label(p.kind, p.namespace, p.name) for p in
                                  sorted(users, key=lambda p: (p.namespace or "", p.name)))
                out.append(f"{what}: Tier {k[2]}: tier {k[2]} is referenced by {len(users)} "
                           f"{'policy' if len(users) == 1 else 'policies'} ({names}) and cannot be deleted")
        return out

    # ------------------------------------------------------------------------------ endpoints controller

    def _sync_endpoints(self, staged: Overlay, styped: Overlay,
                        touched: set[ObjKey]) -> list[tuple[ObjKey, dict[str, Any] | None]]:
        """Endpoints of the selector Services whose namespace a change touched (Pods or Services)."""
        namespaces = {k[1] for k in touched if k[0] in ("Pod", "Service")}
        if not namespaces:
            return []
        pods = [p for ns in sorted(namespaces) for _, p in styped.of_kind("Pod", ns) if p.phase == "Running"]
        out: list[tuple[ObjKey, dict[str, Any] | None]] = []
        for k, s in [kv for ns in sorted(namespaces) for kv in styped.of_kind("Service", ns)]:
            if s.selector is None:
                continue
            ek = ("Endpoints", k[1], k[2])
            doc = endpoints_doc(derive_endpoints(s, pods))
            old = staged.get(ek)
            if old is not None and old.get("subsets") == doc["subsets"]:
                continue
            meta = doc["metadata"]
            meta["uid"] = old["metadata"]["uid"] if old is not None else str(uuid.uuid4())
            staged[ek] = doc
            styped[ek] = decode(doc, f"{key_str(ek)} (endpoints controller)")
            out.append((ek, doc))
        return out

    # ------------------------------------------------------------------------------ commit

    @staticmethod
    def _new_namespace(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "uid": str(uuid.uuid4()),
                             "labels": {"kubernetes.io/metadata.name": name}}}

    def _commit(self, changes: list[tuple[ObjKey, dict[str, Any] | None]], persist: bool = True,
                typed: Mapping[ObjKey, Any] | None = None) -> None:
        """Make `changes` the state. `typed`: the request's decoded values, so nothing is decoded twice."""
        if not changes:
            return
        events: list[Event] = []
        with self.cond:
            for k, new in changes:
                self.rv += 1
                old = self.objects.get(k)
                if new is None:
                    if old is None:
                        continue
                    del self.objects[k]
                    self.typed.pop(k, None)
                    self.index.get((k[0], k[1]), set()).discard(k)
                    events.append(Event(self.rv, "DELETED", k, old))
                    continue
                new["metadata"]["resourceVersion"] = str(self.rv)
                self.objects[k] = new
                t = typed.get(k) if typed is not None else None
                self.typed[k] = t if t is not None else decode(new, f"{key_str(k)} (stored)")
                self.index.setdefault((k[0], k[1]), set()).add(k)
                events.append(Event(self.rv, "MODIFIED" if old is not None else "ADDED", k, new))
            self.log.extend(events)
            if persist:
                self._persist()
            self.cond.notify_all()
        for listener in self.listeners:
            listener(events)

    def _persist(self) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        with open(tmp, "w") as f:
            yaml.safe_dump_all([v for _, v in sorted(self.objects.items())], f, sort_keys=False)
        os.replace(tmp, self.state_dir / STATE_FILE)

    def load_state(self, path: str | Path) -> None:
        """Resume from a persisted state file: the objects as they were, allocations included."""
        docs = parse_documents(Path(path).read_text(), str(path))
        for doc, where in docs:
            decode(doc, where)
        with self._commit_lock:
            changes: list[tuple[ObjKey, dict[str, Any] | None]] = []
            typed: dict[ObjKey, Any] = {}
            for doc, where in docs:
                obj = decode(doc, where)
                k = self._key(doc, obj)
                typed[k] = obj
                changes.append((k, doc))
            self._commit(changes, typed=typed)

    def subscribe(self, listener: Callable[[list[Event]], None]) -> None:
        self.listeners.append(listener)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        d = copy.deepcopy(d)
        m = d.get("metadata") or {}
        for f in ("resourceVersion", "creationTimestamp"):
            m.pop(f, None)
        return d
    return strip(a) == strip(b)


def _pod_ip_or_request(doc: dict[str, Any]) -> str | None:
    ip = (doc.get("status") or {}).get("podIP")
    return ip or ((doc.get("metadata") or {}).get("annotations") or {}).get(REQUESTED_IP)


def cluster_of(objs: Iterable[Any], config: AgentConfig, networks: tuple[Any, ...] = ()) -> Cluster:
    """Typed objects as a `Cluster` (sorted by key), with no value filled in."""
    by: dict[type, list[Any]] = {}
    for o in objs:
        by.setdefault(type(o), []).append(o)

    def sort(t: type) -> tuple[Any, ...]:
        return tuple(sorted(by.get(t, []), key=lambda o: (getattr(o, "namespace", ""), getattr(o, "name", ""))))

    namespaces = {n.name: n for n in by.get(Namespace, [])}
    for t in (Pod, Service, Endpoints, NetworkPolicy):
        for o in by.get(t, []):
            namespaces.setdefault(o.namespace, Namespace(name=o.namespace))

    def sort_ns(t: type) -> tuple[Any, ...]:  # cluster-scoped objects (namespace None) first
        return tuple(sorted(by.get(t, []), key=lambda o: (o.namespace or "", o.name)))

    return Cluster(config=config, namespaces=tuple(namespaces[k] for k in sorted(namespaces)),
                   nodes=sort(Node), pods=sort(Pod), services=sort(Service), endpoints=sort(Endpoints),
                   policies=sort(NetworkPolicy), networks=tuple(networks),
                   tiers=tuple(sorted(by.get(crd.Tier, []), key=lambda t: t.name)),
                   groups=sort_ns(crd.ClusterGroup), antrea_policies=sort_ns(crd.AntreaPolicy))


def raw_objects(raw: RawCluster) -> list[Any]:
    return [*raw.namespaces, *raw.nodes, *raw.pods, *raw.services, *raw.endpoints, *raw.policies,
            *raw.tiers, *raw.groups, *raw.antrea_policies]


def load_stored(folder: str | Path) -> Cluster:
    """A folder of stored objects (the controller's state/) as a Cluster, nothing filled in."""
    raw = load_folder(folder, gate=False)  # the API server admitted them (the AntreaPolicy gate included)
    return cluster_of(raw_objects(raw), raw.config)
