"""`pyantrea controller`: the cluster's state, the NetworkPolicy controller and the API agents watch.

In the lab there is no Kubernetes API server, so this process plays both parts: it holds the
cluster's objects (the folder given at start plus what `lab apply`/`lab delete` change), and it
serves each agent what spans its node (spec §9.4). Every change is validated as a whole cluster
folder first (the same loader as offline); an invalid change is refused with every problem named
and nothing is changed.

API (HTTP on a unix socket, mode 0600):
  GET  /healthz
  GET  /v1/manifests                    the whole cluster as multi-document YAML
  POST /v1/apply    (YAML body)         upsert objects;  200 {"version"} | 400 {"error","problems"}
  POST /v1/delete   (YAML body)         remove objects (by kind, namespace, name)
  GET  /v1/watch?node=N&version=V&timeout=S
                                         long poll: answers when the state is newer than V (or at
                                         the timeout) with {"version", "manifests", "policies",
                                         "appliedToGroups", "addressGroups"} for node N
  GET  /v1/networkpolicies | /v1/appliedtogroups | /v1/addressgroups   (controller-mode antctl)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from pyantrea.apis.controlplane import to_dict
from pyantrea.controller.networkpolicy import NetworkPolicyController, PolicyState
from pyantrea.errors import ManifestError
from pyantrea.httpapi import HTTPError, Request, Router, UnixHTTPServer
from pyantrea.k8s.cluster import Cluster
from pyantrea.k8s.complete import load_cluster
from pyantrea.k8s.loader import AGENT_CONF, load_files, manifest_files

CLUSTER_SCOPED = {"Namespace", "Node", "NodeInterfaces"}
STATE_FILE = "cluster.yaml"

ObjKey = tuple[str, str, str]  # kind, namespace, name


def doc_key(doc: Any) -> ObjKey:
    if not isinstance(doc, dict):
        raise HTTPError(400, "a document is not a mapping")
    kind = doc.get("kind")
    meta = doc.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(kind, str) or not isinstance(name, str) or not name:
        raise HTTPError(400, "every document needs kind and metadata.name")
    ns = "" if kind in CLUSTER_SCOPED else str(meta.get("namespace") or "default")
    return kind, ns, name


def parse_docs(text: str, what: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ManifestError([f"{what}: YAML syntax error: {e}"]) from None
    out: list[dict[str, Any]] = []
    for d in docs:
        if isinstance(d, dict) and d.get("kind") == "List":
            out += [i for i in d.get("items") or [] if i is not None]
        else:
            out.append(d)
    return out


class ClusterStore:
    """The objects, their completed Cluster and the policy state, versioned; a change wakes watchers."""

    def __init__(self, folder: str | Path, state_dir: str | Path):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.cond = threading.Condition()
        self.version = 0
        # A restarted controller counts versions from 1 again: watchers that carry another epoch
        # are answered at once, so they resync instead of waiting for a version they already have.
        self.epoch = uuid.uuid4().hex[:12]
        folder = Path(folder)
        load_cluster(folder)  # validates the folder; raises ManifestError naming every problem
        self.objects: dict[ObjKey, dict[str, Any]] = {}
        for f in manifest_files(folder):
            for d in parse_docs(Path(f).read_text(), f):
                self.objects[doc_key(d)] = d
        conf = folder / AGENT_CONF
        self.agent_conf = conf.read_text() if conf.exists() else None
        self._commit(self.objects)

    def manifests(self) -> str:
        return yaml.safe_dump_all(list(self.objects.values()), sort_keys=False)

    def _write(self, objects: dict[ObjKey, dict[str, Any]], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / (STATE_FILE + ".tmp")
        tmp.write_text(yaml.safe_dump_all(list(objects.values()), sort_keys=False))
        os.replace(tmp, target / STATE_FILE)
        if self.agent_conf is not None:
            (target / AGENT_CONF).write_text(self.agent_conf)

    def _commit(self, objects: dict[ObjKey, dict[str, Any]]) -> None:
        """Validate `objects` as a whole cluster; on success make it the state and wake the watchers."""
        scratch = Path(tempfile.mkdtemp(prefix="pa-ctl-"))
        try:
            self._write(objects, scratch)
            cluster = load_cluster(scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        state = NetworkPolicyController(cluster.pods, cluster.namespaces, cluster.policies).compute()
        with self.cond:
            self.objects = objects
            self.cluster: Cluster = cluster
            self.policies: PolicyState = state
            self._write(objects, self.state_dir)
            self.version += 1
            self.cond.notify_all()

    def apply(self, text: str, what: str) -> int:
        docs = parse_docs(text, what)
        self._check_alone(text, what)
        objects = dict(self.objects)
        for d in docs:
            objects[doc_key(d)] = d
        self._commit(objects)
        return self.version

    def delete(self, text: str, what: str) -> int:
        docs = parse_docs(text, what)
        objects = dict(self.objects)
        missing = []
        for d in docs:
            k = doc_key(d)
            if k not in objects:
                missing.append(f"{k[0]} {k[1] + '/' if k[1] else ''}{k[2]}")
            objects.pop(k, None)
        if missing:
            raise HTTPError(404, f"{what}: not found: {', '.join(missing)}")
        self._commit(objects)
        return self.version

    @staticmethod
    def _check_alone(text: str, what: str) -> None:
        """Syntax and field errors are reported against the user's own file name and documents."""
        d = Path(tempfile.mkdtemp(prefix="pa-apply-"))
        try:
            f = d / (Path(what).name or "apply.yaml")
            if not f.name.endswith((".yaml", ".yml")):
                f = f.with_suffix(".yaml")
            f.write_text(text)
            load_files([str(f)])
        except ManifestError as e:
            raise ManifestError([p.replace(str(f), what) for p in e.problems]) from None
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def watch(self, node: str, since: int, timeout: float, epoch: str = "") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        if epoch and epoch != self.epoch:
            since = -1
        with self.cond:
            while self.version <= since:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            version, cluster, state, manifests = self.version, self.cluster, self.policies, self.manifests()
        cluster.node(node)  # 404 for an unknown node
        view = state.node_view(node)
        return {
            "epoch": self.epoch,
            "version": version,
            "manifests": manifests,
            "agentConf": self.agent_conf or "",
            "policies": [to_dict(p) for p in view.policies],
            "appliedToGroups": [to_dict(g) for _, g in sorted(view.applied_to_groups.items())],
            "addressGroups": [to_dict(g) for _, g in sorted(view.address_groups.items())],
        }


def build_router(store: ClusterStore) -> Router:
    r = Router()
    r.add("GET", "/healthz", lambda req: "ok\n")
    r.add("GET", "/v1/manifests", lambda req: store.manifests())

    def apply(req: Request) -> Any:
        return {"version": store.apply(req.text(), req.query.get("file", "<request>"))}

    def delete(req: Request) -> Any:
        return {"version": store.delete(req.text(), req.query.get("file", "<request>"))}

    def watch(req: Request) -> Any:
        node = req.query.get("node")
        if not node:
            raise HTTPError(400, "watch needs ?node=NAME")
        try:
            since = int(req.query.get("version", "0"))
            timeout = min(float(req.query.get("timeout", "30")), 300.0)
        except ValueError:
            raise HTTPError(400, "version and timeout must be numbers") from None
        return store.watch(node, since, timeout, req.query.get("epoch", ""))

    r.add("POST", "/v1/apply", apply)
    r.add("POST", "/v1/delete", delete)
    r.add("GET", "/v1/watch", watch)
    r.add("GET", "/v1/networkpolicies",
          lambda req: [to_dict(p) for _, p in sorted(store.policies.policies.items())])
    r.add("GET", "/v1/appliedtogroups",
          lambda req: [to_dict(g) for _, g in sorted(store.policies.applied_to_groups.items())])
    r.add("GET", "/v1/addressgroups",
          lambda req: [to_dict(g) for _, g in sorted(store.policies.address_groups.items())])
    return r


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} controller: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pyantrea controller",
                                 description="Run the controller: cluster state + NetworkPolicy computation + API.")
    ap.add_argument("--cluster", required=True, metavar="DIR", help="the cluster folder to start from")
    ap.add_argument("--rundir", required=True, metavar="DIR",
                    help="where controller.sock and state/ (the current cluster folder) live")
    a = ap.parse_args(argv)
    rundir = Path(a.rundir)
    rundir.mkdir(parents=True, exist_ok=True)
    # A restarted controller resumes from its persisted state, so changes applied before a crash
    # survive it; --cluster only seeds a new run directory.
    source = rundir / "state" if (rundir / "state" / STATE_FILE).exists() else Path(a.cluster)
    try:
        store = ClusterStore(source, rundir / "state")
    except ManifestError as e:
        log("the cluster folder is invalid:\n  " + "\n  ".join(e.problems))
        return 1
    server = UnixHTTPServer(str(rundir / "controller.sock"), build_router(store), log)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.serve_in_thread()
    log(f"serving {server.path} (version {store.version}, {len(store.policies.policies)} policies)")
    stop.wait()
    server.close()
    return 0
