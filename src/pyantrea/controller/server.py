"""`pyantrea controller`: the embedded API server, the NetworkPolicy controller and the API agents watch.

In the embedded lab there is no kube-apiserver, so this process plays both parts: `ObjectStore`
holds the cluster's objects (allocating once, changing by events), and `ControlPlane` turns them
into the controlplane objects each agent receives for its span.

API (HTTP on a unix socket, mode 0600):
  GET  /healthz
  GET  /v1/objects?kind=K[&node=N]       list: {"kind", "epoch", "resourceVersion", "items"}
                                          (no kind: every object; node: Pods bound to N, Node N,
                                          NodeInterfaces N)
  GET  /v1/objects/watch?kind=K&resourceVersion=RV&timeout=S[&node=N][&epoch=E]
                                          {"resourceVersion", "events": [{"type", "object"}]};
                                          410 when RV is not in the history (list again)
  POST /v1/apply?file=NAME   (YAML)      create or update;  {"resourceVersion", "results"} | 400 {"problems"}
  POST /v1/delete?file=NAME  (YAML)      delete by kind, namespace, name
  POST /v1/status            (JSON)      {"kind": "Pod", "namespace", "name", "status": {...}} (the kubelet's)
  GET  /v1/manifests                      every object as multi-document YAML
  GET  /v1/controlplane/list?node=N      the node's NetworkPolicies, AppliedToGroups, AddressGroups
  GET  /v1/controlplane/watch?node=N&resourceVersion=RV&timeout=S&epoch=E
                                          {"resourceVersion", "events": [{"type", "kind", "object"|"patch"}]}
  GET  /v1/controlplane/stats[?node=N]    events sent per node, compute time (nodeResourceVersion:
                                          the last change that concerns node N), version, the nodes
                                          whose agents watch (connectedAgents)
  GET  /v1/networkpolicies | /v1/appliedtogroups | /v1/addressgroups   (controller-mode antctl)
  GET  /metrics                           Prometheus metrics (text format; controller/metrics.py)

Kubernetes mode (``--kubeconfig``): kube-apiserver owns the objects; the controller serves the
controlplane part, and ``GET /v1/objects?kind=&node=`` from its informers (their documents, each
informer's resourceVersion in ``versions``, ``idle``: every change seen has been computed).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from pyantrea import __version__
from pyantrea.apis.controlplane import to_dict
from pyantrea.controller.antreapolicy import control_plane
from pyantrea.controller.controlplane import ControlPlane
from pyantrea.controller.metrics import ControllerMetrics
from pyantrea.controller.store import STATE_FILE, Gone, ObjectStore, parse_documents
from pyantrea.errors import ManifestError, PyantreaError
from pyantrea.httpapi import HTTPError, Raw, Request, Router, UnixHTTPServer
from pyantrea.k8s.loader import AGENT_CONF, load_files, manifest_files
from pyantrea.metrics import CONTENT_TYPE


def _number(req: Request, name: str, default: str, cap: float | None = None) -> float:
    try:
        v = float(req.query.get(name, default))
    except ValueError:
        raise HTTPError(400, f"{name} must be a number") from None
    return min(v, cap) if cap is not None else v


def build_router(store: ObjectStore | None, plane: ControlPlane) -> Router:
    """The controller's API; without a store (Kubernetes mode: kube-apiserver has the objects) only the
    controlplane part. `GET /metrics`: Prometheus metrics (controller/metrics.py)."""
    r = Router()
    r.add("GET", "/healthz", lambda req: "ok\n")
    metrics = ControllerMetrics()
    metrics.follow(plane)
    watchers = Watchers()
    r.add("GET", "/metrics", lambda req: Raw(CONTENT_TYPE, metrics.text().encode()))
    if store is not None:
        add_object_routes(r, store)

    def cp_list(req: Request) -> Any:
        return plane.list(req.query.get("node") or None)

    def cp_watch(req: Request) -> Any:
        node = req.query.get("node")
        if not node:
            raise HTTPError(400, "watch needs ?node=NAME")
        plane.store.get("Node", "", node)  # 404 for an unknown node
        try:
            with watchers.watching(node):
                ans = plane.watch(node, int(_number(req, "resourceVersion", "0")),
                                  _number(req, "timeout", "30", 300.0), req.query.get("epoch", ""))
        except Gone as e:
            raise HTTPError(410, str(e)) from None
        metrics.watched(ans["events"])
        return ans

    r.add("GET", "/v1/controlplane/list", cp_list)
    r.add("GET", "/v1/controlplane/watch", cp_watch)
    r.add("GET", "/v1/controlplane/stats", lambda req: {**plane.stats(req.query.get("node") or None),
                                                        "version": f"v{__version__}",
                                                        "connectedAgents": watchers.connected()})
    r.add("GET", "/v1/networkpolicies",
          lambda req: [to_dict(p) for _, p in sorted(plane.state.policies.items())])
    r.add("GET", "/v1/appliedtogroups",
          lambda req: [to_dict(g) for _, g in sorted(plane.state.applied_to_groups.items())])
    r.add("GET", "/v1/addressgroups",
          lambda req: [to_dict(g) for _, g in sorted(plane.state.address_groups.items())])
    return r


class Watchers:
    """The agents connected to the controlplane watch (antctl get controllerinfo's CONNECTED-AGENTS): a
    node whose agent is in a watch, or left one less than `GRACE` seconds ago (it watches again at once)."""

    GRACE = 60.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: dict[str, int] = {}
        self.last: dict[str, float] = {}

    @contextlib.contextmanager
    def watching(self, node: str) -> Iterator[None]:
        with self.lock:
            self.active[node] = self.active.get(node, 0) + 1
        try:
            yield
        finally:
            with self.lock:
                self.active[node] -= 1
                self.last[node] = time.monotonic()

    def connected(self) -> list[str]:
        now = time.monotonic()
        with self.lock:
            return sorted(n for n in set(self.active) | set(self.last)
                          if self.active.get(n, 0) > 0 or now - self.last.get(n, -1e9) < self.GRACE)


def add_object_routes(r: Router, store: ObjectStore) -> None:
    """The embedded API server's endpoints."""
    r.add("GET", "/v1/manifests",
          lambda req: yaml.safe_dump_all(store.raw_items(), sort_keys=False))

    def objects(req: Request) -> Any:
        kind = req.query.get("kind")
        if kind:
            items, rv = store.list_objects(kind, req.query.get("node"))
        else:
            with store.cond:
                items, rv = store.raw_items(), store.rv
        return {"kind": f"{kind or 'Object'}List", "epoch": store.epoch, "resourceVersion": rv, "items": items}

    def watch_objects(req: Request) -> Any:
        since = int(_number(req, "resourceVersion", "0"))
        try:
            evs, rv = store.watch(req.query.get("kind") or None, since, _number(req, "timeout", "30", 300.0),
                                  req.query.get("node"), req.query.get("epoch", ""))
        except Gone as e:
            raise HTTPError(410, str(e)) from None
        return {"epoch": store.epoch, "resourceVersion": rv, "events": [e.to_dict() for e in evs]}

    def status(req: Request) -> Any:
        body = req.json()
        if not isinstance(body, dict) or not isinstance(body.get("status"), dict):
            raise HTTPError(400, 'status wants {"kind", "namespace", "name", "status": {...}}')
        return {"resourceVersion": store.set_status(str(body.get("kind", "Pod")), str(body.get("namespace", "")),
                                                    str(body.get("name", "")), body["status"])}

    r.add("GET", "/v1/objects", objects)
    r.add("GET", "/v1/objects/watch", watch_objects)
    r.add("POST", "/v1/apply", lambda req: store.apply(req.text(), req.query.get("file", "the request body")))
    r.add("POST", "/v1/delete", lambda req: store.delete(req.text(), req.query.get("file", "the request body")))
    r.add("POST", "/v1/status", status)


def add_kube_object_routes(r: Router, inputs: Any) -> None:
    """Kubernetes mode: the objects the controller's informers hold (kube-apiserver owns them; this
    is the controller's view of them, for pyantrea's tools): `GET /v1/objects?kind=&node=` (list
    only: watch kube-apiserver itself) with ``idle`` (every change seen has been computed) and each
    informer's resourceVersion."""
    from pyantrea.errors import NotFoundError

    def objects(req: Request) -> Any:
        kind = req.query.get("kind") or None
        try:
            items, rv = inputs.objects(kind, req.query.get("node") or None)
        except NotFoundError as e:
            raise HTTPError(404, str(e)) from None
        return {"kind": f"{kind or 'Object'}List", "epoch": "", "resourceVersion": rv, "items": items,
                "idle": inputs.idle(), "versions": inputs.versions()}

    r.add("GET", "/v1/objects", objects)


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} controller: {msg}", file=sys.stderr, flush=True)


def open_store(folder: str | Path, state_dir: Path) -> ObjectStore:
    """The store of a run: resumed from `state_dir` if it holds one, else created from the folder's
    manifests (one request, so references between files resolve whatever their names)."""
    folder = Path(folder)
    conf = folder / AGENT_CONF
    config = load_files([], str(conf)).config if conf.exists() else None
    store = ObjectStore(config, state_dir)
    if (state_dir / STATE_FILE).exists():
        store.load_state(state_dir / STATE_FILE)
        return store
    docs: list[tuple[Any, str]] = []
    for f in manifest_files(folder):
        try:
            text = Path(f).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ManifestError([f"{f}: cannot read: {e}"]) from None
        docs += parse_documents(text, f)
    store.apply_docs(docs)
    return store


def serve(router: Router, rundir: Path, what: str) -> int:
    server = UnixHTTPServer(str(rundir / "controller.sock"), router, log)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.serve_in_thread()
    log(f"serving {server.path} ({what})")
    stop.wait()
    server.close()
    return 0


def run_kubernetes(kubeconfig: str, config: str | None, rundir: Path) -> int:
    """Kubernetes mode: kube-apiserver owns the objects; this process computes and serves the
    controlplane API to the agents."""
    from pyantrea.agent.daemon import load_config
    from pyantrea.controller.inputs import InformerInputs
    from pyantrea.k8s.kubesource import KubeSource

    try:
        source = KubeSource(None if kubeconfig == "in-cluster" else kubeconfig)
        inputs = InformerInputs(source, load_config(config), log, serve=True)
        plane = ControlPlane(inputs)
        stop = threading.Event()
        inputs.start(stop)
    except PyantreaError as e:
        log(f"fatal: {e}")
        return 1
    except Exception as e:  # noqa: BLE001 - the client's own errors (no kubeconfig, API down)
        log(f"fatal: cannot reach kube-apiserver: {type(e).__name__}: {e}")
        return 1
    router = build_router(None, plane)
    add_kube_object_routes(router, inputs)
    return serve(router, rundir, f"Kubernetes mode, {len(plane.state.policies)} policies")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pyantrea controller",
                                 description="Run the controller: embedded API server + NetworkPolicy computation + "
                                             "the controlplane API agents watch.")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--cluster", metavar="DIR", help="embedded mode: the cluster folder to start from")
    src.add_argument("--kubeconfig", metavar="FILE",
                     help="Kubernetes mode: read Namespaces, Nodes, Pods and NetworkPolicies from kube-apiserver "
                          "(this kubeconfig; 'in-cluster' for the ServiceAccount)")
    ap.add_argument("--config", metavar="FILE", help="antrea-agent.conf (Kubernetes mode; the cluster's serviceCIDR ...)")
    ap.add_argument("--rundir", required=True, metavar="DIR",
                    help="where controller.sock and state/ (the objects as stored) live")
    a = ap.parse_args(argv)
    rundir = Path(a.rundir)
    rundir.mkdir(parents=True, exist_ok=True)
    if a.kubeconfig:
        return run_kubernetes(a.kubeconfig, a.config, rundir)
    # A restarted controller resumes from its persisted objects (allocations included), so changes
    # applied before a crash survive it; --cluster only seeds a new run directory.
    try:
        store = open_store(a.cluster, rundir / "state")
    except PyantreaError as e:
        problems = e.problems if isinstance(e, ManifestError) else [str(e)]
        log("the cluster folder is invalid:\n  " + "\n  ".join(problems))
        return 1
    plane = control_plane(store)  # with the AntreaPolicy gate, Antrea-native policies too
    return serve(build_router(store, plane), rundir,
                 f"resourceVersion {store.rv}, {len(plane.state.policies)} policies")
