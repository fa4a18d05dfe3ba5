"""`pyantrea controller --kubeconfig K`: the controller's Kubernetes mode on a real kube-apiserver.

The seed's Nodes and Pods are created through the API (the Pods' IPs written as a kubelet writes
them, through the status subresource); NetworkPolicies applied through the API then appear in the
controlplane API on the controller's socket (`/v1/controlplane/list?node=N`) within 1 s, and the
computed groups and policies are the embedded mode's for the same objects."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyantrea.lab.http import request_json, wait_healthy
from pyantrea.lab.kubernetes import for_api

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed"


def wait_for(what: str, pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def seed_docs(*files: str) -> list[dict[str, Any]]:
    docs: list[Any] = []
    for f in files:
        docs += list(yaml.safe_load_all((SEED / f).read_text()))
    return for_api(docs)[0]


@pytest.fixture(scope="module")
def api(apiserver: Any) -> Any:
    from kubernetes import client

    c = apiserver.client()
    return type("API", (), {"core": client.CoreV1Api(c), "net": client.NetworkingV1Api(c)})


@pytest.fixture(scope="module")
def seeded(apiserver: Any, api: Any) -> dict[str, str]:
    """The seed's Nodes, Namespaces and Pods in the API server, each Pod Running with its IP."""
    from kubernetes.client.exceptions import ApiException

    docs = seed_docs("nodes.yaml", "workloads.yaml", "kube-system.yaml")
    for d in docs:
        if d["kind"] == "Node":
            api.core.create_node(d)
    for ns in ("default", "kube-system"):  # no controller manager here: the ServiceAccount admission needs these
        try:
            api.core.create_namespaced_service_account(ns, {"metadata": {"name": "default"}})
        except ApiException as e:
            if e.status != 409:
                raise
    ips: dict[str, str] = {}
    nodes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Node"}
    for d in docs:
        if d["kind"] != "Pod":
            continue
        ns = d["metadata"].get("namespace", "default")
        api.core.create_namespaced_pod(ns, d)
        name = d["metadata"]["name"]
        if d["spec"].get("hostNetwork"):
            ip = nodes[d["spec"]["nodeName"]]["status"]["addresses"][0]["address"]
        else:
            ip = d["metadata"]["annotations"]["pyantrea.io/requested-ip"]
        api.core.patch_namespaced_pod_status(name, ns, {"status": {"phase": "Running", "podIP": ip,
                                                                   "podIPs": [{"ip": ip}]}})
        ips[f"{ns}/{name}"] = ip
    return ips


@pytest.fixture(scope="module")
def controller(apiserver: Any, seeded: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    rundir = tmp_path_factory.mktemp("ctl")
    cp = apiserver.cp
    kc = cp.client_kubeconfig("pyantrea-controller", cp.local_server)
    apiserver.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in _rbac()))
    log = open(rundir / "controller.log", "wb")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.Popen([sys.executable, "-m", "pyantrea", "controller", "--kubeconfig", str(kc),
                          "--config", str(SEED / "antrea-agent.conf"), "--rundir", str(rundir)],
                         stdout=log, stderr=subprocess.STDOUT, env=env)
    sock = rundir / "controller.sock"
    try:
        if not wait_healthy(sock, 30, alive=lambda: p.poll() is None):
            raise AssertionError(f"controller not healthy:\n{(rundir / 'controller.log').read_text()}")
        yield sock
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        log.close()


def _rbac() -> list[dict[str, Any]]:
    from pyantrea.lab.kubernetes import RBAC

    return RBAC


def cp_list(sock: Path, node: str) -> dict[str, Any]:
    code, body = request_json(sock, "GET", f"/v1/controlplane/list?node={node}")
    assert code == 200, body
    return dict(body)


def policy_names(listing: dict[str, Any]) -> set[str]:
    return {f"{p['namespace']}/{p['name']}" for p in listing["networkPolicies"]}


def normalized(listing: dict[str, Any]) -> dict[str, Any]:
    """A controlplane list without what differs between two API servers (uids, versions)."""
    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in sorted(x.items()) if k not in ("uid", "resourceVersion", "epoch")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return dict(strip(listing))


def test_policy_through_the_api_is_in_the_controlplane_within_a_second(controller: Path, api: Any) -> None:
    assert policy_names(cp_list(controller, "worker1")) == set()
    times = {}
    for d in seed_docs("policies.yaml"):
        t0 = time.monotonic()
        api.net.create_namespaced_network_policy("default", d)
        name = f"default/{d['metadata']['name']}"
        wait_for(f"{name} on worker1", lambda: name in policy_names(cp_list(controller, "worker1")), timeout=5)
        times[name] = time.monotonic() - t0
    print("policy -> controlplane list:", {k: f"{v * 1000:.0f} ms" for k, v in times.items()})
    assert all(v < 1.0 for v in times.values()), times
    # frontendpolicy applies to frontend (worker1), backendpolicy to backend1 (worker1) and backend2
    # (worker2); the master has no Pod they select
    assert policy_names(cp_list(controller, "worker1")) == {"default/backendpolicy", "default/frontendpolicy"}
    assert policy_names(cp_list(controller, "worker2")) == {"default/backendpolicy"}
    assert policy_names(cp_list(controller, "master")) == set()


def test_the_same_state_as_the_embedded_mode(controller: Path, seeded: dict[str, str], tmp_path: Path) -> None:
    """The seed's objects through kube-apiserver give the groups and policies that the embedded
    API server gives for the folder, once its Pods have the same status (both computed by the same
    ControlPlane)."""
    from pyantrea.controller.controlplane import ControlPlane
    from pyantrea.controller.server import open_store

    store = open_store(SEED, tmp_path / "state")
    for key, ip in seeded.items():
        ns, name = key.split("/")
        store.set_status("Pod", ns, name, {"phase": "Running", "podIP": ip})
    embedded = ControlPlane(store)
    for node in ("master", "worker1", "worker2"):
        live = cp_list(controller, node)
        want = embedded.list(node)
        assert normalized(live) == normalized(want), node


def test_delete_and_change_follow_within_a_second(controller: Path, api: Any) -> None:
    t0 = time.monotonic()
    api.net.delete_namespaced_network_policy("backendpolicy", "default")
    wait_for("backendpolicy gone from worker2",
             lambda: "default/backendpolicy" not in policy_names(cp_list(controller, "worker2")), timeout=5)
    assert time.monotonic() - t0 < 1.0
    # a new backend Pod gets its IP (the kubelet's status update): frontendpolicy's egress group follows
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "backend3", "labels": {"role": "backend"}},
           "spec": {"nodeName": "worker2", "containers": [{"name": "c", "image": "x"}]}}
    api.core.create_namespaced_pod("default", pod)
    t0 = time.monotonic()
    api.core.patch_namespaced_pod_status("backend3", "default", {"status": {"phase": "Running", "podIP": "10.222.2.35"}})

    def members() -> set[str]:
        return {m.get("ip") or str(m) for g in cp_list(controller, "worker1")["addressGroups"]
                for m in g.get("pods", [])}
    wait_for("10.222.2.35 in an AddressGroup of worker1", lambda: "10.222.2.35" in str(members()), timeout=5)
    assert time.monotonic() - t0 < 1.0
    api.core.delete_namespaced_pod("backend3", "default", grace_period_seconds=0)
    wait_for("10.222.2.35 gone", lambda: "10.222.2.35" not in str(members()), timeout=5)


def test_unreachable_api_server_is_a_clear_fatal_error(tmp_path: Path, apiserver: Any) -> None:
    from pyantrea.lab.kubernetes import free_ports, write_kubeconfig

    pki = apiserver.cp.pki
    kc = write_kubeconfig(tmp_path / "k", f"https://127.0.0.1:{free_ports(1)[0]}", pki.ca, pki.cert("admin"),
                          pki.key("admin"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-m", "pyantrea", "controller", "--kubeconfig", str(kc), "--rundir",
                        str(tmp_path / "r")], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 1
    assert "fatal" in p.stderr and "list " in p.stderr and "Connection refused" in p.stderr, p.stderr
