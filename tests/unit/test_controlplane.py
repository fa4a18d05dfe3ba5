"""The controlplane API (controller.controlplane) and the agent's rule cache (agent.controllerwatch):
span-filtered events, AddressGroup patches, per-policy reconciliation with stable conj_ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyantrea.agent.controllerwatch import RuleCache
from pyantrea.agent.networkpolicy import compute_rules
from pyantrea.apis.k8s import PodInterface
from pyantrea.controller.controlplane import ControlPlane
from pyantrea.controller.server import open_store
from pyantrea.controller.store import ObjectStore

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed"
SEED_IPS = {("default", "frontend"): "10.222.1.48", ("default", "backend1"): "10.222.1.47",
            ("default", "backend2"): "10.222.2.34"}


@pytest.fixture
def plane(tmp_path: Path) -> ControlPlane:
    st = open_store(SEED, tmp_path / "state")
    p = ControlPlane(st)
    for (ns, name), ip in SEED_IPS.items():  # the kubelets report the seed Pods' IPs
        st.set_status("Pod", ns, name, {"phase": "Running", "podIP": ip})
    return p


def w2_backend_group(p: ControlPlane) -> str:
    return next(n for n, g in p.state.address_groups.items() if "role=backend" in g.selector)


def events(p: ControlPlane, node: str, since: int) -> list[dict]:
    return p.watch(node, since, 0)["events"]


def pod(name: str, node: str, labels: str) -> str:
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{{labels}}}}}
spec: {{nodeName: {node}, containers: [{{name: c, image: x}}]}}
"""


def test_address_group_change_reaches_only_its_span_as_one_patch(plane: ControlPlane) -> None:
    st: ObjectStore = plane.store
    rv = plane.rv
    # A second frontend, on worker2: it joins backendpolicy's peer AddressGroup (role=frontend,
    # spanning worker1 and worker2) and frontendpolicy's AppliedToGroup.
    st.apply(pod("fe2", "worker2", "role: frontend"), "fe2.yaml")
    st.set_status("Pod", "default", "fe2", {"phase": "Running", "podIP": "10.222.2.50"})
    w1 = events(plane, "worker1", rv)
    w2 = events(plane, "worker2", rv)
    master = events(plane, "master", rv)
    assert master == []  # no policy spans master
    ag = [e for e in w1 if e["kind"] == "AddressGroup"]
    assert len(ag) == 1 and ag[0]["type"] == "MODIFIED"
    assert [m["name"] for m in ag[0]["patch"]["addedPods"]] == ["fe2"] and ag[0]["patch"]["removedPods"] == []
    # worker2 had the frontend AddressGroup already (backend2 is there): the same patch; and fe2 brings
    # frontendpolicy to worker2, with its AppliedToGroup and its peers' (role=backend) AddressGroup
    assert sorted((e["type"], e["kind"], e.get("patch", {}).get("name", e.get("object", {}).get("name"))) for e in w2) \
        == sorted([("MODIFIED", "AddressGroup", ag[0]["patch"]["name"]),
                   # created (scheduled, no IP yet), then the kubelet's status gives it its IP
                   ("ADDED", "AppliedToGroup", ag[0]["patch"]["name"]),
                   ("MODIFIED", "AppliedToGroup", ag[0]["patch"]["name"]),
                   ("ADDED", "AddressGroup", w2_backend_group(plane)),
                   ("ADDED", "NetworkPolicy", "frontendpolicy")])
    # worker1: the frontend group's two patches (its AddressGroup; its AppliedToGroup only lists Pods of
    # worker1, so none), nothing else
    assert [(e["type"], e["kind"]) for e in w1] == [("MODIFIED", "AddressGroup")]
    assert plane.stats()["eventsSent"] == {"worker1": len(w1), "worker2": len(w2), "master": 0}


def test_a_pod_no_policy_selects_sends_nothing(plane: ControlPlane) -> None:
    rv = plane.rv
    plane.store.apply(pod("lonely", "worker1", "app: nobody"), "lonely.yaml")
    plane.store.set_status("Pod", "default", "lonely", {"phase": "Running", "podIP": "10.222.1.60"})
    assert all(events(plane, n, rv) == [] for n in ("master", "worker1", "worker2"))


def test_policy_events_add_modify_delete(plane: ControlPlane) -> None:
    rv = plane.rv
    np = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-b2, namespace: default}
spec: {podSelector: {matchLabels: {role: backend}}, policyTypes: [Ingress]}
"""
    plane.store.apply(np, "np.yaml")
    for node in ("worker1", "worker2"):  # its AppliedToGroup (role=backend) is backendpolicy's, already there
        assert [e["type"] + " " + e["kind"] for e in events(plane, node, rv)] == ["ADDED NetworkPolicy"]
    assert events(plane, "master", rv) == []
    rv = plane.rv
    plane.store.delete(np, "np.yaml")
    assert [e["type"] + " " + e["kind"] for e in events(plane, "worker2", rv)] == ["DELETED NetworkPolicy"]


def _ifaces(node: str) -> dict[str, PodInterface]:
    ofports = {"frontend": 49, "backend1": 48, "backend2": 35}
    return {f"{ns}/{n}": PodInterface(ns, n, node, f"{n}-x", ofports[n], "aa:bb:cc:dd:ee:ff", ip, f"c-{n}")
            for (ns, n), ip in SEED_IPS.items() if (node == "worker2") == (n == "backend2")}


def test_rule_cache_follows_events_and_keeps_untouched_conj_ids(plane: ControlPlane) -> None:
    node = "worker1"
    cache = RuleCache(node)
    cache.reset(plane.list(node), _ifaces(node))
    before = {r.policy: r.conj_id for r in cache.all_rules()}
    rv = plane.rv
    # a change touching only backendpolicy's peers' AddressGroup? add a second frontend on worker2
    plane.store.apply(pod("fe2", "worker2", "role: frontend"), "fe2.yaml")
    plane.store.set_status("Pod", "default", "fe2", {"phase": "Running", "podIP": "10.222.2.50"})
    evs = events(plane, node, rv)
    touched = cache.apply(evs)
    cache.reconcile(touched, _ifaces(node))
    # the cache equals a fresh computation over the controller's current view for the node
    fresh = compute_rules(plane.state.node_view(node), _ifaces(node))
    got = cache.all_rules()
    assert [(r.policy, r.direction, r.from_, r.to, r.services) for r in got] == \
        [(r.policy, r.direction, r.from_, r.to, r.services) for r in fresh]
    # and nobody's conj_id moved
    assert {r.policy: r.conj_id for r in got} == before
