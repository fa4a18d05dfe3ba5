"""The controller's API on a unix socket: apply/delete, object and controlplane list + watch, and bad
requests get clear 4xx answers."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest

from pyantrea.controller.controlplane import ControlPlane
from pyantrea.controller.server import build_router, open_store
from pyantrea.errors import InvalidArgument, ManifestError, NotFoundError
from pyantrea.httpapi import MAX_BODY, APIClient, UnixHTTPServer

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"

DENY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-frontend, namespace: default}
spec:
  podSelector: {matchLabels: {role: frontend}}
"""


@pytest.fixture
def api():
    d = Path(tempfile.mkdtemp(prefix="pa-"))
    store = open_store(SEED, d / "state")
    server = UnixHTTPServer(str(d / "c.sock"), build_router(store, ControlPlane(store)))
    server.serve_in_thread()
    yield APIClient(str(d / "c.sock"), timeout=10), store, d
    server.close()
    shutil.rmtree(d, ignore_errors=True)


def test_socket_is_owner_only(api) -> None:
    _, _, d = api
    assert stat.S_IMODE(os.stat(d / "c.sock").st_mode) == 0o600


def names(listing: dict) -> set[str]:
    return {p["name"] for p in listing["networkPolicies"]}


def test_apply_wakes_a_watcher_with_the_new_policy(api) -> None:
    c, store, _ = api
    v0 = c.get("/v1/controlplane/list?node=worker1")
    assert names(v0) == {"backendpolicy", "frontendpolicy"}
    got: dict = {}

    def watch() -> None:
        got.update(c.get(f"/v1/controlplane/watch?node=worker1&resourceVersion={v0['resourceVersion']}"
                         f"&epoch={v0['epoch']}&timeout=10"))

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    assert c.post("/v1/apply?file=deny.yaml", DENY)["results"] == [
        {"object": "NetworkPolicy default/deny-frontend", "action": "created"}]
    t.join(5)
    assert time.monotonic() - t0 < 2
    assert [(e["type"], e["kind"], e["object"]["name"]) for e in got["events"]] == [
        ("ADDED", "NetworkPolicy", "deny-frontend")]
    # worker2 runs no frontend Pod: the policy does not span it (spec §9.4)
    assert "deny-frontend" not in names(c.get("/v1/controlplane/list?node=worker2"))
    c.post("/v1/delete", DENY)
    assert "deny-frontend" not in names(c.get("/v1/controlplane/list?node=worker1"))


def test_another_epoch_or_an_old_version_is_410_at_once(api) -> None:
    c, _, _ = api
    t0 = time.monotonic()
    status, ans = c.call("GET", "/v1/controlplane/watch?node=worker1&resourceVersion=0&epoch=other&timeout=10")
    assert time.monotonic() - t0 < 1 and status == 410 and "list again" in ans["error"]
    status, ans = c.call("GET", "/v1/controlplane/watch?node=worker1&resourceVersion=999999&timeout=10")
    assert status == 410
    status, ans = c.call("GET", "/v1/objects/watch?kind=Pod&resourceVersion=999999&timeout=10")
    assert status == 410


def test_objects_list_watch_and_status(api) -> None:
    c, store, _ = api
    pods = c.get("/v1/objects?kind=Pod&node=worker2")
    assert {p["metadata"]["name"] for p in pods["items"]} == {
        "backend2", "coredns-66bff467f8-f4nc4", "antrea-agent-fv5x9", "antrea-controller-655fcbc656-hrkwg",
        "kube-proxy-dngwf"}
    rv = pods["resourceVersion"]
    c.post("/v1/status", {"kind": "Pod", "namespace": "default", "name": "backend2",
                          "status": {"phase": "Running", "podIP": "10.222.2.34"}})
    evs = c.get(f"/v1/objects/watch?kind=Pod&node=worker2&resourceVersion={rv}&timeout=0")["events"]
    assert [(e["type"], e["object"]["metadata"]["name"], e["object"]["status"]["podIP"]) for e in evs] == [
        ("MODIFIED", "backend2", "10.222.2.34")]
    assert c.get(f"/v1/objects/watch?kind=Pod&node=worker1&resourceVersion={rv}&timeout=0")["events"] == []
    with pytest.raises(NotFoundError):
        c.post("/v1/status", {"kind": "Pod", "namespace": "default", "name": "ghost", "status": {"phase": "Running"}})


def test_invalid_change_is_refused_whole_and_names_the_object(api) -> None:
    c, store, _ = api
    bad = DENY + "---\n" + """apiVersion: v1
kind: Pod
metadata: {name: ghost, namespace: default}
spec: {nodeName: worker1, containers: [{name: c, image: x}]}
status: {podIP: 10.222.9.9}
"""
    rv = store.rv
    with pytest.raises(ManifestError) as e:
        c.post("/v1/apply?file=bad.yaml", bad)
    assert any("Pod default/ghost" in p and "10.222.9.9" in p for p in e.value.problems)
    assert store.rv == rv  # nothing applied, not even the valid policy


@pytest.mark.parametrize("body,err", [
    ("kind: [", ManifestError),  # YAML syntax
    ("- a\n- b\n", ManifestError),  # not a mapping
    ("kind: Pod\n", ManifestError),  # no apiVersion, no metadata.name
])
def test_malformed_apply(api, body: str, err: type) -> None:
    c, store, _ = api
    rv = store.rv
    with pytest.raises(err):
        c.post("/v1/apply", body)
    assert store.rv == rv


def test_unknown_path_oversized_body_and_unknown_node(api) -> None:
    c, _, _ = api
    with pytest.raises(NotFoundError):
        c.get("/v1/nothing")
    # an oversized body is refused from its Content-Length, before it is read
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(c.path)
    s.sendall(f"POST /v1/apply HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode())
    head = ""
    while "over the limit" not in head:
        chunk = s.recv(4096).decode()
        if not chunk:
            break
        head += chunk
    s.close()
    assert head.startswith("HTTP/1.1 413") and "over the limit" in head
    with pytest.raises(NotFoundError, match="node"):
        c.get("/v1/controlplane/watch?node=nosuchnode&resourceVersion=0&timeout=0")
    with pytest.raises(InvalidArgument):
        c.get("/v1/controlplane/watch?node=worker1&resourceVersion=abc")
    with pytest.raises(NotFoundError):
        c.post("/v1/delete", DENY)  # not there
    assert c.get("/healthz") == "ok\n"  # still serving
