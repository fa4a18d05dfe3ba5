"""The embedded API server (controller.store): admission, allocation once, events, watch."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyantrea.apis.k8s import REQUESTED_IP
from pyantrea.controller.server import open_store
from pyantrea.controller.store import Gone, ObjectStore
from pyantrea.errors import ManifestError, NotFoundError

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed"


@pytest.fixture
def seed(tmp_path: Path) -> ObjectStore:
    return open_store(SEED, tmp_path / "state")


def svc(name: str, ns: str = "default", cluster_ip: str | None = None, type_: str = "ClusterIP",
        selector: str = "app: web") -> str:
    ip = f"\n  clusterIP: {cluster_ip}" if cluster_ip else ""
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  type: {type_}{ip}
  selector: {{{selector}}}
  ports: [{{port: 80, protocol: TCP}}]
"""


def pod(name: str, node: str | None = None, ip: str | None = None, labels: str = "app: web", ns: str = "default") -> str:
    out = f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}
spec:
  containers: [{{name: c, image: x, ports: [{{containerPort: 80, name: http}}]}}]
"""
    if node:
        out += f"  nodeName: {node}\n"
    if ip:
        out += f"status: {{podIP: {ip}}}\n"
    return out


def cluster_ips(st: ObjectStore) -> dict[str, str | None]:
    return {s.key: s.cluster_ip for s in st.items("Service")}


def test_seed_is_stored_with_its_pins(seed: ObjectStore) -> None:
    c = seed.cluster()
    assert c.service("default", "backendsvc").cluster_ip == "10.104.65.133"
    assert c.node("worker1").pod_cidr == "10.222.1.0/24"
    # a manifest's status.podIP is a request the kubelet honours, not the Pod's status
    fe = seed.raw_items("Pod")
    frontend = next(d for d in fe if d["metadata"]["name"] == "frontend")
    assert frontend["metadata"]["annotations"][REQUESTED_IP] == "10.222.1.48"
    assert c.pod("default", "frontend").pod_ip is None
    # hostNetwork Pods have their node's IP at once
    assert c.pod("kube-system", "etcd-master").pod_ip == "10.79.1.200"


def test_cluster_ip_allocated_once_and_never_moved(seed: ObjectStore) -> None:
    seed.apply(svc("a"), "a.yaml")
    before = cluster_ips(seed)
    assert before["default/a"] is not None
    seed.apply(svc("b"), "b.yaml")
    after = cluster_ips(seed)
    assert {k: v for k, v in after.items() if k != "default/b"} == before
    assert after["default/b"] not in before.values()
    seed.delete(svc("a"), "a.yaml")
    seed.apply(svc("c"), "c.yaml")
    assert cluster_ips(seed)["default/b"] == after["default/b"]
    # re-applying without the clusterIP keeps it, and is a no-op
    res = seed.apply(svc("b"), "b.yaml")
    assert res["results"] == [{"object": "Service default/b", "action": "unchanged"}]
    assert cluster_ips(seed)["default/b"] == after["default/b"]


def test_cluster_ip_is_immutable_and_unique(seed: ObjectStore) -> None:
    seed.apply(svc("a", cluster_ip="10.96.5.5"), "a.yaml")
    with pytest.raises(ManifestError) as e:
        seed.apply(svc("a", cluster_ip="10.96.5.6"), "a2.yaml")
    assert e.value.problems == ["a2.yaml (document 1): Service default/a: spec.clusterIP: field is immutable (10.96.5.5)"]
    with pytest.raises(ManifestError) as e:
        seed.apply(svc("b", cluster_ip="10.104.65.133"), "b.yaml")
    assert "provided IP is already allocated (Service default/backendsvc)" in e.value.problems[0]
    with pytest.raises(ManifestError) as e:
        seed.apply(svc("b", cluster_ip="192.168.0.1"), "b.yaml")
    assert "not in the valid range (service CIDR 10.96.0.0/12)" in e.value.problems[0]


def test_node_ports_allocated_and_kept(seed: ObjectStore) -> None:
    seed.apply(svc("np", type_="NodePort"), "np.yaml")
    port = seed.get("Service", "default", "np").ports[0].node_port
    assert port == 30000
    seed.apply(svc("np2", type_="NodePort"), "np2.yaml")
    assert seed.get("Service", "default", "np2").ports[0].node_port == 30001
    seed.apply(svc("np", type_="NodePort"), "np.yaml")
    assert seed.get("Service", "default", "np").ports[0].node_port == port


def test_pods_scheduled_once_and_endpoints_follow_status(seed: ObjectStore) -> None:
    seed.apply(svc("web"), "svc.yaml")
    seed.apply(pod("w1"), "w1.yaml")
    node = seed.get("Pod", "default", "w1").node_name
    assert node in ("master", "worker1", "worker2")
    assert seed.cluster().endpoints_of("default", "web").subsets == ()  # no IP yet: not an endpoint
    seed.set_status("Pod", "default", "w1", {"phase": "Running", "podIP": "10.222.2.9"})
    ep = seed.cluster().endpoints_of("default", "web")
    assert [a.ip for s in ep.subsets for a in s.addresses] == ["10.222.2.9"]
    seed.apply(pod("w2"), "w2.yaml")
    assert seed.get("Pod", "default", "w1").node_name == node  # nothing re-scheduled
    seed.delete(pod("w1"), "w1.yaml")
    assert seed.cluster().endpoints_of("default", "web").subsets == ()


def test_pod_spec_is_immutable_labels_are_not(seed: ObjectStore) -> None:
    seed.apply(pod("p", node="worker1"), "p.yaml")
    seed.apply(pod("p", node="worker1", labels="app: other"), "p.yaml")
    assert dict(seed.get("Pod", "default", "p").labels) == {"app": "other"}
    with pytest.raises(ManifestError) as e:
        seed.apply(pod("p", node="worker2"), "p.yaml")
    assert "pod updates may not change fields other than metadata" in e.value.problems[0]


def test_requested_ip_checked(seed: ObjectStore) -> None:
    with pytest.raises(ManifestError) as e:
        seed.apply(pod("x", node="worker1", ip="10.222.1.48"), "x.yaml")
    assert e.value.problems == ["x.yaml (document 1): Pod default/x: status.podIP 10.222.1.48 (requested IP) is "
                                "already the IP of Pod default/frontend"]
    with pytest.raises(ManifestError) as e:
        seed.apply(pod("x", node="worker1", ip="10.222.2.5"), "x.yaml")
    assert "outside the pod CIDR 10.222.1.0/24 of Node worker1" in e.value.problems[0]


def test_namespace_must_exist_and_kinds_must_be_known(seed: ObjectStore) -> None:
    with pytest.raises(ManifestError) as e:
        seed.apply(pod("x", ns="nowhere"), "x.yaml")
    assert e.value.problems == ["x.yaml (document 1): Pod nowhere/x: namespace 'nowhere' not found "
                                "(create the Namespace first)"]
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: somewhere}\n---\n" + pod("x", ns="somewhere")
    seed.apply(ns, "ns.yaml")  # in one request, the Namespace first
    assert seed.get("Pod", "somewhere", "x").namespace == "somewhere"
    v2 = "apiVersion: networking.k8s.io/v2\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}}\n"
    with pytest.raises(ManifestError) as e:
        seed.apply(v2, "np.yaml")
    assert e.value.problems == ["np.yaml (document 1): NetworkPolicy: apiVersion 'networking.k8s.io/v2' is not "
                                "served (use networking.k8s.io/v1)"]
    with pytest.raises(ManifestError) as e:
        seed.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", "cm.yaml")
    assert "kind 'ConfigMap' (apiVersion 'v1') is not served by this API server" in e.value.problems[0]


def test_a_refused_request_changes_nothing(seed: ObjectStore) -> None:
    rv = seed.rv
    bad = svc("ok1") + "---\n" + svc("bad", cluster_ip="10.104.65.133")
    with pytest.raises(ManifestError):
        seed.apply(bad, "two.yaml")
    assert seed.rv == rv
    with pytest.raises(NotFoundError):
        seed.get("Service", "default", "ok1")


def test_delete_cascades_and_reports_missing(seed: ObjectStore) -> None:
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n"
    seed.apply(ns + "---\n" + pod("x", ns="team") + "---\n" + svc("s", ns="team"), "team.yaml")
    seed.delete(ns, "team.yaml")
    assert [k for k in seed.objects if k[1] == "team"] == []
    with pytest.raises(NotFoundError) as e:
        seed.delete(pod("ghost"), "ghost.yaml")
    assert "ghost.yaml: Pod default/ghost: not found" in str(e.value)
    with pytest.raises(ManifestError):
        seed.delete("apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n", "d.yaml")


def test_watch_gives_events_in_order_and_410_when_too_old(tmp_path: Path) -> None:
    st = ObjectStore(history=5)
    st.apply("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {addresses: [{type: InternalIP, address: 10.0.0.1}]}\n",
             "n.yaml")
    items, rv = st.list_objects("Node")
    assert [d["metadata"]["name"] for d in items] == ["n1"]
    assert items[0]["spec"]["podCIDR"] == "10.222.0.0/24"
    st.apply(pod("a", node="n1"), "a.yaml")
    evs, rv2 = st.watch("Pod", rv, 0)
    assert [(e.type, e.key) for e in evs] == [("ADDED", ("Pod", "default", "a"))]
    evs, _ = st.watch("Pod", rv, 0, node="other")
    assert evs == []
    for i in range(6):
        st.apply(pod(f"b{i}", node="n1"), "b.yaml")
    with pytest.raises(Gone):
        st.watch("Pod", rv, 0)
    with pytest.raises(Gone):
        st.watch("Pod", st.rv, 0, epoch="another")


def test_restart_resumes_with_allocations(tmp_path: Path) -> None:
    st = open_store(SEED, tmp_path / "state")
    st.apply(svc("a"), "a.yaml")
    ip = st.get("Service", "default", "a").cluster_ip
    again = open_store(SEED, tmp_path / "state")
    assert again.get("Service", "default", "a").cluster_ip == ip
    assert again.get("Service", "default", "a") == st.get("Service", "default", "a")
