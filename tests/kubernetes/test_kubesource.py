"""KubeSource (kube-apiserver through the official client) and the Informer on it, against a real
kube-apiserver: list, watch events as they come, bookmarks, 410 Gone and the re-list, the
NodeInterfaces custom resource, and errors that name what failed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyantrea.errors import PyantreaError
from pyantrea.k8s.informer import GoneError, Informer
from pyantrea.k8s.kubesource import KubeSource
from pyantrea.k8s.loader import load_folder
from pyantrea.lab.kubernetes import CRD

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"


def wait_for(what: str, pred: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def source(apiserver: Any) -> KubeSource:
    return KubeSource(str(apiserver.kubeconfig))


@pytest.fixture(scope="module")
def core(source: KubeSource) -> Any:
    from kubernetes import client

    return client.CoreV1Api(source.api)


@pytest.fixture(scope="module")
def net(source: KubeSource) -> Any:
    from kubernetes import client

    return client.NetworkingV1Api(source.api)


def policy(name: str, role: str) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"role": role}}, "policyTypes": ["Ingress"],
                     "ingress": [{"ports": [{"protocol": "TCP", "port": 80}]}]}}


def test_list_every_kind(source: KubeSource) -> None:
    for kind in ("Namespace", "Node", "Pod", "Service", "Endpoints", "NetworkPolicy"):
        items, rv, epoch = source.list_objects(kind, None)
        assert rv > 0 and epoch == "", kind
        assert all(d["kind"] == kind and d["apiVersion"] for d in items), kind
    items, _, _ = source.list_objects("Namespace", None)
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= {d["metadata"]["name"] for d in items}
    svc = [d for d in source.list_objects("Service", None)[0] if d["metadata"]["name"] == "kubernetes"]
    assert svc and svc[0]["spec"]["clusterIP"] == "10.96.0.1"  # the first address of 10.96.0.0/12


def test_informer_sees_add_update_delete_as_they_come(source: KubeSource, net: Any) -> None:
    seen: list[tuple[str, str, float]] = []
    lock = threading.Lock()

    def note(what: str) -> Callable[..., None]:
        def f(*objs: Any) -> None:
            with lock:
                seen.append((what, objs[-1].name, time.monotonic()))
        return f

    inf = Informer(source, "NetworkPolicy", on_add=note("add"), on_update=note("update"), on_delete=note("delete"))
    stop = threading.Event()
    inf.sync()
    inf.start(stop)
    try:
        t0 = time.monotonic()
        net.create_namespaced_network_policy("default", policy("web", "web"))
        wait_for("the ADDED event", lambda: ("add", "web") in [(w, n) for w, n, _ in seen])
        t_add = next(t for w, n, t in seen if (w, n) == ("add", "web")) - t0
        got = inf.get("default/web")
        assert got.pod_selector.match_labels == (("role", "web"),)
        assert got.ingress[0].ports[0].port == 80
        net.patch_namespaced_network_policy("web", "default", {"spec": {"podSelector": {"matchLabels": {"role": "api"}}}})
        wait_for("the MODIFIED event", lambda: ("update", "web") in [(w, n) for w, n, _ in seen])
        assert inf.get("default/web").pod_selector.match_labels == (("role", "api"),)
        net.delete_namespaced_network_policy("web", "default")
        wait_for("the DELETED event", lambda: ("delete", "web") in [(w, n) for w, n, _ in seen])
        assert inf.get("default/web") is None
        assert [w for w, n, _ in seen if n == "web"] == ["add", "update", "delete"]
        assert t_add < 1.0, f"the ADDED event took {t_add:.3f} s"
        assert inf.lists == 1
    finally:
        stop.set()


def test_bookmarks_move_the_resource_version(source: KubeSource, core: Any) -> None:
    """A watch with nothing to say for its kind still gets bookmarks (before its deadline, once the
    watch cache has caught up with the store), and the informer's resourceVersion follows them."""
    inf = Informer(source, "Pod")
    inf.sync()
    rv0 = inf.rv
    before = source.bookmarks.get("Pod", 0)

    def churn() -> None:  # other kinds change; a list of Pods makes the Pods' cache catch up
        time.sleep(0.5)
        for _ in range(3):
            core.create_namespaced_config_map("default", {"metadata": {"generateName": "churn-"}})
        source.list_objects("Pod", None)

    t = threading.Thread(target=churn)
    t.start()
    n = inf.step(timeout=5)
    t.join()
    assert n == 0  # no Pod changed
    assert source.bookmarks.get("Pod", 0) > before, "no bookmark in a 5 s watch"
    assert inf.rv > rv0, f"the resourceVersion stayed at {rv0}"


def endpoints(name: str, ip: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "subsets": [{"addresses": [{"ip": ip}], "ports": [{"port": 80}]}]}


def test_too_old_resource_version_is_gone_and_the_informer_lists_again(apiserver: Any, source: KubeSource,
                                                                          core: Any) -> None:
    added: list[str] = []
    inf = Informer(source, "Endpoints", on_add=lambda o: added.append(o.name))
    inf.sync()
    old_rv = inf.rv
    core.create_namespaced_endpoints("default", endpoints("gone-1", "10.1.0.1"))
    core.create_namespaced_endpoints("default", endpoints("gone-2", "10.1.0.2"))
    apiserver.compact()
    with pytest.raises(GoneError, match="too old"):
        list(source.watch("Endpoints", old_rv, 5, None, ""))
    stop = threading.Event()
    inf.start(stop)
    try:
        wait_for("the re-list", lambda: inf.lists >= 2)
        wait_for("both Endpoints in the cache", lambda: inf.get("default/gone-1") and inf.get("default/gone-2"))
        assert sorted(added) == ["gone-1", "gone-2"]  # the difference, as handler calls
        assert inf.rv > old_rv
        core.delete_namespaced_endpoints("gone-1", "default")  # and it watches again from the new list
        wait_for("the DELETED event after the re-list", lambda: inf.get("default/gone-1") is None)
    finally:
        stop.set()
        core.delete_namespaced_endpoints("gone-2", "default")


def test_nodeinterfaces_custom_resource(apiserver: Any, source: KubeSource) -> None:
    """No CRD: nothing pinned (an empty list). With the CRD, the seed's pins read back as the loader
    reads the folder's NodeInterfaces documents."""
    from kubernetes import client

    assert source.list_objects("NodeInterfaces", "worker1") == ([], 0, "")
    ext = client.ApiextensionsV1Api(source.api)
    ext.create_custom_resource_definition(CRD)

    def established() -> bool:
        c = ext.read_custom_resource_definition("nodeinterfaces.pyantrea.io")
        return any(x.type == "Established" and x.status == "True" for x in (c.status.conditions or []))

    wait_for("the CRD established", established)
    custom = client.CustomObjectsApi(source.api)
    docs = [d for d in yaml.safe_load_all((SEED / "node-interfaces.yaml").read_text()) if d]
    for d in docs:
        wait_for(f"NodeInterfaces {d['metadata']['name']} created",
                 lambda d=d: _try(lambda: custom.create_cluster_custom_object("pyantrea.io", "v1alpha1",
                                                                              "nodeinterfaces", d)))
    inf = Informer(source, "NodeInterfaces", node="worker1")
    inf.sync()
    want = {n.node: n for n in load_folder(SEED).node_interfaces}
    assert [o.node for o in inf.items()] == ["worker1"]  # only its own node's (field selector)
    got = inf.items()[0]
    assert (got.gateway, got.tunnel, got.pods) == (want["worker1"].gateway, want["worker1"].tunnel,
                                                   want["worker1"].pods)
    kubectl = apiserver.kubectl("get", "nodeinterfaces", "-o", "name")
    assert kubectl.stdout.split() == ["nodeinterfaces.pyantrea.io/worker1", "nodeinterfaces.pyantrea.io/worker2"]


def _try(f: Callable[[], Any]) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        f()
        return True
    except ApiException as e:
        if e.status == 404:  # the new resource is not served yet
            return False
        raise


def test_unreachable_server_is_a_pyantrea_error(tmp_path: Path, apiserver: Any) -> None:
    from pyantrea.lab.kubernetes import free_ports, write_kubeconfig

    port = free_ports(1)[0]
    pki = apiserver.cp.pki
    kc = write_kubeconfig(tmp_path / "k", f"https://127.0.0.1:{port}", pki.ca, pki.cert("admin"), pki.key("admin"))
    s = KubeSource(str(kc), connect_timeout=2)
    t0 = time.monotonic()
    with pytest.raises(PyantreaError, match="list Node"):
        s.list_objects("Node", None)
    with pytest.raises(PyantreaError, match="watch Pod"):
        list(s.watch("Pod", 1, 2, None, ""))
    assert time.monotonic() - t0 < 30


def test_forbidden_is_the_servers_message(apiserver: Any) -> None:
    """The agent's identity may read Nodes and Pods, not NetworkPolicies: the error says so."""
    from pyantrea.lab.kubernetes import RBAC

    cp = apiserver.cp
    apiserver.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in RBAC))
    kc = cp.client_kubeconfig("pyantrea-agent", cp.local_server)
    s = KubeSource(str(kc))
    wait_for("the agent's role", lambda: _lists(s, "Node"))
    with pytest.raises(PyantreaError, match=r"403 .*cannot list resource \"networkpolicies\""):
        s.list_objects("NetworkPolicy", None)


def _lists(s: KubeSource, kind: str) -> bool:
    try:
        s.list_objects(kind, None)
        return True
    except PyantreaError:
        return False
