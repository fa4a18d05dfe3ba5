"""The controller's computation (controller.networkpolicy) against a straightforward reference, on
randomized small clusters: the whole build, the incremental updates of the PolicyEngine, and the
ControlPlane's events (incremental) against a ControlPlane that recomputes everything on each change."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest

from pyantrea.apis import controlplane as cp
from pyantrea.apis.k8s import (
    ContainerPort,
    IPBlock,
    LabelSelector,
    LabelSelectorRequirement,
    Namespace,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    NetworkPolicyRule,
    Pod,
)
from pyantrea.controller import networkpolicy as npc
from pyantrea.controller.controlplane import ControlPlane, member_delta
from pyantrea.controller.store import ObjectStore

NODES = ("n1", "n2", "n3", "n4")
KEYS = ("app", "tier", "env")
VALUES = ("a", "b", "c")

# ============================================================================== the reference


def ref_name(normalized: str) -> str:
    return str(uuid.uuid5(npc.GROUP_NAMESPACE, normalized))


def reference(pods: list[Pod], namespaces: list[Namespace], policies: list[NetworkPolicy]) -> npc.PolicyState:
    """Spec §9 done the plain way: every group scans every Pod."""
    ns_labels = {n.name: n.label_map for n in namespaces}
    atg_sel: dict[str, tuple[str, str | None, LabelSelector | None, LabelSelector | None]] = {}
    ag_sel: dict[str, tuple[str, str | None, LabelSelector | None, LabelSelector | None]] = {}

    def group(table: dict[str, Any], ns: str | None, psel: LabelSelector | None, nsel: LabelSelector | None) -> str:
        normalized = npc.normalize(ns, psel, nsel)
        table.setdefault(ref_name(normalized), (normalized, ns, psel, nsel))
        return ref_name(normalized)

    internal = []
    for np in sorted(policies, key=lambda p: f"{p.namespace}/{p.name}"):
        def peer(peers: tuple[NetworkPolicyPeer, ...], egress: bool, named: bool) -> cp.NetworkPolicyPeer:
            if not peers:
                groups = (group(ag_sel, None, None, LabelSelector()),) if egress and named else ()
                return cp.NetworkPolicyPeer(groups, (cp.IPBlock("0.0.0.0/0"),))
            names: list[str] = []
            blocks = []
            for p in peers:
                if p.ip_block is not None:
                    blocks.append(cp.IPBlock(p.ip_block.cidr, tuple(p.ip_block.except_)))
                    continue
                n = group(ag_sel, None if p.namespace_selector is not None else np.namespace, p.pod_selector,
                          p.namespace_selector)
                if n not in names:
                    names.append(n)
            return cp.NetworkPolicyPeer(tuple(names), tuple(blocks))

        rules = []
        for r in np.ingress:
            svcs = tuple(cp.Service(p.protocol, p.port, p.end_port) for p in r.ports) or None
            rules.append(cp.NetworkPolicyRule("In", from_=peer(r.peers, False, any(s.named for s in svcs or ())),
                                              services=svcs))
        if "Ingress" in np.policy_types and not np.ingress:
            rules.append(cp.NetworkPolicyRule("In", from_=cp.NetworkPolicyPeer()))
        for r in np.egress:
            svcs = tuple(cp.Service(p.protocol, p.port, p.end_port) for p in r.ports) or None
            rules.append(cp.NetworkPolicyRule("Out", to=peer(r.peers, True, any(s.named for s in svcs or ())),
                                              services=svcs))
        if "Egress" in np.policy_types and not np.egress:
            rules.append(cp.NetworkPolicyRule("Out", to=cp.NetworkPolicyPeer()))
        atg = group(atg_sel, np.namespace, np.pod_selector, None)
        internal.append(cp.NetworkPolicy(np.uid or f"{np.namespace}/{np.name}", np.namespace, np.name, tuple(rules),
                                         (atg,)))

    def members(sel: tuple[str, str | None, LabelSelector | None, LabelSelector | None], need: str) -> list[Pod]:
        _, ns, psel, nsel = sel
        out = []
        for p in pods:
            if nsel is not None:
                if not nsel.matches(ns_labels.get(p.namespace, {})):
                    continue
            elif p.namespace != (ns or "default"):
                continue
            if psel is not None and not psel.matches(p.label_map):
                continue
            if p.host_network or p.terminated or not getattr(p, need):
                continue
            out.append(p)
        return sorted(out, key=lambda p: p.key)

    def member(p: Pod) -> cp.GroupMemberPod:
        return cp.GroupMemberPod(p.namespace, p.name, p.pod_ip, p.node_name, p.ports)

    st = npc.PolicyState()
    for name, sel in sorted(atg_sel.items()):
        ms = [member(p) for p in members(sel, "node_name")]
        st.applied_to_groups[name] = cp.AppliedToGroup(name, sel[0], tuple(ms), tuple(sorted({m.node or "" for m in ms})))
    ag_nodes: dict[str, set[str]] = {n: set() for n in ag_sel}
    for pol in internal:
        span = set(st.applied_to_groups[pol.applied_to_groups[0]].span)
        st.policies[pol.key] = cp.NetworkPolicy(pol.uid, pol.namespace, pol.name, pol.rules, pol.applied_to_groups,
                                                tuple(sorted(span)))
        for r in pol.rules:
            for g in r.peer.address_groups:
                ag_nodes[g] |= span
    for name, sel in sorted(ag_sel.items()):
        ms = [member(p) for p in members(sel, "pod_ip")]
        st.address_groups[name] = cp.AddressGroup(name, sel[0], tuple(ms), tuple(sorted(ag_nodes[name])))
    return st


# ============================================================================== random clusters


def rand_selector(rng: random.Random, allow_none: bool = False) -> LabelSelector | None:
    r = rng.random()
    if allow_none and r < 0.25:
        return None
    if r < 0.4:
        return LabelSelector()
    labels = tuple(sorted({(rng.choice(KEYS), rng.choice(VALUES)) for _ in range(rng.randint(0, 2))}))
    labels = tuple(dict(labels).items())
    exprs = []
    for _ in range(rng.choice((0, 0, 1, 2))):
        op = rng.choice(("In", "NotIn", "Exists", "DoesNotExist"))
        vals = tuple(sorted(rng.sample(VALUES, rng.randint(1, 2)))) if op in ("In", "NotIn") else ()
        exprs.append(LabelSelectorRequirement(rng.choice(KEYS), op, vals))
    return LabelSelector(labels, tuple(exprs))


def rand_labels(rng: random.Random) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({k: rng.choice(VALUES) for k in rng.sample(KEYS, rng.randint(0, 3))}.items()))


def rand_pod(rng: random.Random, ns: str, name: str, ip: int) -> Pod:
    node = rng.choice(NODES + (None,))
    return Pod(ns, name, rand_labels(rng), node_name=node,
               pod_ip=f"10.0.{ip // 250}.{ip % 250 + 2}" if rng.random() < 0.85 else None,
               host_network=rng.random() < 0.05, phase=rng.choice(("Running",) * 6 + ("Pending", "Succeeded", "Failed")),
               ports=(ContainerPort(80, "TCP", "http"),) if rng.random() < 0.5 else (ContainerPort(8080, "TCP", "http"),))


def rand_peer(rng: random.Random) -> NetworkPolicyPeer:
    r = rng.random()
    if r < 0.15:
        return NetworkPolicyPeer(ip_block=IPBlock("10.9.0.0/16", ("10.9.1.0/24",)))
    if r < 0.5:
        return NetworkPolicyPeer(pod_selector=rand_selector(rng))
    if r < 0.75:
        return NetworkPolicyPeer(namespace_selector=rand_selector(rng))
    return NetworkPolicyPeer(pod_selector=rand_selector(rng), namespace_selector=rand_selector(rng))


def rand_rule(rng: random.Random) -> NetworkPolicyRule:
    ports = rng.choice(((), (NetworkPolicyPort("TCP", 80),), (NetworkPolicyPort("TCP", "http"),)))
    return NetworkPolicyRule(tuple(rand_peer(rng) for _ in range(rng.choice((0, 1, 1, 2)))), ports)


def rand_policy(rng: random.Random, ns: str, name: str) -> NetworkPolicy:
    types = rng.choice((("Ingress",), ("Ingress", "Egress"), ("Egress",)))
    ingress = tuple(rand_rule(rng) for _ in range(rng.choice((0, 1, 2)))) if "Ingress" in types else ()
    egress = tuple(rand_rule(rng) for _ in range(rng.choice((0, 1, 2)))) if "Egress" in types else ()
    return NetworkPolicy(ns, name, rand_selector(rng) or LabelSelector(), ingress, egress, types)


class World:
    """A random cluster and random changes of it."""

    def __init__(self, seed: int):
        self.rng = rng = random.Random(seed)
        self.ns_names = [f"ns{i}" for i in range(4)]
        self.namespaces = {n: Namespace(n, rand_labels(rng)) for n in self.ns_names[:3]}  # ns3: Pods only
        self.pods: dict[str, Pod] = {}
        self.policies: dict[str, NetworkPolicy] = {}
        self.ip = 0
        for _ in range(rng.randint(5, 25)):
            self.new_pod()
        for _ in range(rng.randint(1, 8)):
            self.new_policy()

    def new_pod(self) -> tuple[str, Pod]:
        self.ip += 1
        p = rand_pod(self.rng, self.rng.choice(self.ns_names), f"p{self.ip}", self.ip)
        self.pods[p.key] = p
        return p.key, p

    def new_policy(self) -> tuple[str, NetworkPolicy]:
        self.ip += 1
        p = rand_policy(self.rng, self.rng.choice(self.ns_names), f"np{self.ip}")
        self.policies[p.key] = p
        return p.key, p

    def inputs(self) -> tuple[list[Pod], list[Namespace], list[NetworkPolicy]]:
        return list(self.pods.values()), list(self.namespaces.values()), list(self.policies.values())

    def change(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """One random change: (pods, namespaces, policies) as PolicyEngine.update takes them."""
        rng = self.rng
        r = rng.random()
        if r < 0.15 or not self.pods:
            return dict([self.new_pod()]), {}, {}
        if r < 0.45:
            key = rng.choice(sorted(self.pods))
            p = self.pods[key]
            what = rng.choice(("labels", "ip", "phase", "delete", "recreate"))
            if what == "delete":
                del self.pods[key]
                return {key: None}, {}, {}
            if what == "labels":
                p = Pod(p.namespace, p.name, rand_labels(rng), p.node_name, p.pod_ip, p.host_network, p.phase, p.ports)
            elif what == "ip":
                self.ip += 1
                p = Pod(p.namespace, p.name, p.labels, p.node_name, rng.choice((None, f"10.1.0.{self.ip % 250}")),
                        p.host_network, p.phase, p.ports)
            elif what == "phase":
                p = Pod(p.namespace, p.name, p.labels, p.node_name, p.pod_ip, p.host_network,
                        rng.choice(("Running", "Pending", "Succeeded")), p.ports)
            else:  # deleted and created again, elsewhere
                p = rand_pod(rng, p.namespace, p.name, self.ip)
            self.pods[key] = p
            return {key: p}, {}, {}
        if r < 0.6:
            name = rng.choice(self.ns_names)
            ns = None if rng.random() < 0.25 else Namespace(name, rand_labels(rng))
            if ns is None:
                self.namespaces.pop(name, None)
            else:
                self.namespaces[name] = ns
            return {}, {name: ns}, {}
        if r < 0.75 or not self.policies:
            return {}, {}, dict([self.new_policy()])
        key = rng.choice(sorted(self.policies))
        if rng.random() < 0.4:
            del self.policies[key]
            return {}, {}, {key: None}
        old = self.policies[key]
        p = rand_policy(rng, old.namespace, old.name)
        self.policies[key] = p
        return {}, {}, {key: p}


def snapshot(st: npc.PolicyState) -> npc.PolicyState:
    return npc.PolicyState(dict(st.policies), dict(st.applied_to_groups), dict(st.address_groups))


def assert_same(got: npc.PolicyState, want: npc.PolicyState) -> None:
    for what in ("policies", "applied_to_groups", "address_groups"):
        g, w = getattr(got, what), getattr(want, what)
        assert sorted(g) == sorted(w), what
        for k in w:
            assert g[k] == w[k], (what, k)


# ============================================================================== tests


def test_group_name_is_uuid5() -> None:
    rng = random.Random(3)
    for s in ["", "namespace=default And podSelector=app=web"] + [
            "".join(rng.choice("abcé=,!/ ") for _ in range(rng.randint(1, 40))) for _ in range(200)]:
        assert npc.group_name(s) == ref_name(s)


@pytest.mark.parametrize("seed", range(60))
def test_build_equals_the_reference(seed: int) -> None:
    w = World(seed)
    got = npc.NetworkPolicyController(*w.inputs()).compute()
    want = reference(*w.inputs())
    assert_same(got, want)
    # the same order too: policies by key, groups by name
    for what in ("policies", "applied_to_groups", "address_groups"):
        assert list(getattr(got, what)) == list(getattr(want, what))


@pytest.mark.parametrize("seed", range(40))
def test_incremental_updates_equal_the_reference(seed: int) -> None:
    w = World(1000 + seed)
    engine = npc.PolicyEngine(*w.inputs())
    for _ in range(40):
        pods: dict[str, Any] = {}
        nss: dict[str, Any] = {}
        pols: dict[str, Any] = {}
        for _ in range(w.rng.choice((1, 1, 1, 2, 4))):  # sometimes several changes in one commit
            a, b, c = w.change()
            pods.update(a)
            nss.update(b)
            pols.update(c)
        before = snapshot(engine.state)
        changes = engine.update(pods, nss, pols)
        want = reference(*w.inputs())
        assert_same(engine.state, want)
        assert changes == npc.diff(before, want)


def test_member_delta_is_the_set_difference() -> None:
    rng = random.Random(5)
    pool = [cp.GroupMemberPod("ns", f"p{i:03d}", f"10.0.0.{i}", rng.choice(NODES)) for i in range(60)]
    for _ in range(300):
        old = tuple(sorted(rng.sample(pool, rng.randint(0, 30)), key=lambda m: m.key))
        new = {m.key: m for m in old}
        for _ in range(rng.randint(0, 4)):
            m = rng.choice(pool)
            r = rng.random()
            if r < 0.4:
                new.pop(m.key, None)
            elif r < 0.7:
                new[m.key] = m
            else:
                new[m.key] = cp.GroupMemberPod(m.namespace, m.name, "10.9.9.9", m.node)
        new_t = tuple(new[k] for k in sorted(new))
        added, removed = member_delta(old, new_t)
        assert added == tuple(sorted(set(new_t) - set(old), key=lambda m: m.key))
        assert removed == tuple(sorted(set(old) - set(new_t), key=lambda m: m.key))


# ---------------------------------------------------------------------------------- the ControlPlane


class FullControlPlane(ControlPlane):
    """The reference: every store change recomputes and diffs the whole state."""

    def on_events(self, events: Any) -> None:
        if any(e.kind in ("Pod", "Namespace", "NetworkPolicy") for e in events):
            self.recompute()


def sel_yaml(sel: LabelSelector) -> str:
    ml = ", ".join(f"{k}: {v}" for k, v in sel.match_labels)
    ex = ", ".join(f"{{key: {r.key}, operator: {r.operator}" + (f", values: [{', '.join(r.values)}]" if r.values else "")
                   + "}" for r in sel.match_expressions)
    return f"{{matchLabels: {{{ml}}}, matchExpressions: [{ex}]}}"


def policy_yaml(p: NetworkPolicy) -> str:
    def rules(rs: tuple[NetworkPolicyRule, ...], word: str) -> str:
        out = []
        for r in rs:
            peers = []
            for q in r.peers:
                if q.ip_block is not None:
                    peers.append(f"{{ipBlock: {{cidr: {q.ip_block.cidr}, except: [{', '.join(q.ip_block.except_)}]}}}}")
                    continue
                parts = []
                if q.pod_selector is not None:
                    parts.append(f"podSelector: {sel_yaml(q.pod_selector)}")
                if q.namespace_selector is not None:
                    parts.append(f"namespaceSelector: {sel_yaml(q.namespace_selector)}")
                peers.append("{" + ", ".join(parts) + "}")
            ports = ", ".join(f"{{protocol: {x.protocol}, port: {x.port}}}" for x in r.ports)
            out.append(f"{{{word}: [{', '.join(peers)}], ports: [{ports}]}}")
        return "[" + ", ".join(out) + "]"
    return f"""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {p.name}, namespace: {p.namespace}}}
spec:
  podSelector: {sel_yaml(p.pod_selector)}
  policyTypes: [{', '.join(p.policy_types)}]
  ingress: {rules(p.ingress, 'from')}
  egress: {rules(p.egress, 'to')}
"""


def pod_yaml(p: Pod) -> str:
    labels = ", ".join(f"{k}: {v}" for k, v in p.labels)
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {p.name}, namespace: {p.namespace}, labels: {{{labels}}}}}
spec: {{nodeName: {p.node_name}, containers: [{{name: c, image: x, ports: [{{containerPort: 80, name: http}}]}}]}}
"""


def ns_yaml(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    return f"""apiVersion: v1
kind: Namespace
metadata: {{name: {name}, labels: {{{', '.join(f'{k}: {v}' for k, v in labels)}}}}}
"""


def node_yaml(name: str) -> str:
    return f"apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n"


def watch_all(plane: ControlPlane, since: int) -> dict[str, Any]:
    return {n: plane.watch(n, since, 0) for n in NODES}


@pytest.mark.parametrize("seed", range(6))
def test_controlplane_events_equal_a_full_recompute(seed: int) -> None:
    rng = random.Random(seed)
    store = ObjectStore()
    store.apply("---\n".join(node_yaml(n) for n in NODES), "nodes.yaml")
    for i in range(3):
        store.apply(ns_yaml(f"ns{i}", rand_labels(rng)), "ns.yaml")
    inc = ControlPlane(store)
    full = FullControlPlane(store)
    full.epoch = inc.epoch
    ip = 0
    for step in range(60):
        rv_inc, rv_full = inc.rv, full.rv
        r = rng.random()
        pods = store.items("Pod")
        if r < 0.3 or not pods:
            ip += 1
            p = rand_pod(rng, f"ns{rng.randint(0, 2)}", f"p{ip}", ip)
            store.apply(pod_yaml(Pod(p.namespace, p.name, p.labels, rng.choice(NODES))), "pod.yaml")
        elif r < 0.5:
            p = rng.choice(pods)
            ip += 1
            store.set_status("Pod", p.namespace, p.name,
                             {"phase": rng.choice(("Running", "Running", "Succeeded")), "podIP": f"10.1.{ip // 250}.{ip % 250}"})
        elif r < 0.6:
            p = rng.choice(pods)
            store.apply(pod_yaml(Pod(p.namespace, p.name, rand_labels(rng), p.node_name)), "relabel.yaml")
        elif r < 0.65:
            p = rng.choice(pods)
            store.delete(pod_yaml(p), "pod.yaml")
        elif r < 0.75:
            store.apply(ns_yaml(f"ns{rng.randint(0, 2)}", rand_labels(rng)), "ns.yaml")
        elif r < 0.92:
            ip += 1
            store.apply(policy_yaml(rand_policy(rng, f"ns{rng.randint(0, 2)}", f"np{ip % 7}")), "np.yaml")
        else:
            pols = store.items("NetworkPolicy")
            if pols:
                store.delete(policy_yaml(rng.choice(pols)), "np.yaml")
        assert (inc.rv, step) == (full.rv, step)
        assert_same(inc.state, full.state)
        assert watch_all(inc, rv_inc) == watch_all(full, rv_full)
        assert [inc.node_rv(n) for n in NODES] == [full.node_rv(n) for n in NODES]
        assert inc.list("n1") == full.list("n1")
    assert inc.updates["incremental"] > 30 and inc.updates["full"] == 1


def test_a_failed_update_falls_back_to_the_whole_computation() -> None:
    store = ObjectStore()
    store.apply("---\n".join(node_yaml(n) for n in NODES), "nodes.yaml")
    store.apply(ns_yaml("ns0", (("env", "a"),)), "ns.yaml")
    inc = ControlPlane(store)
    full = FullControlPlane(store)
    full.epoch = inc.epoch
    store.apply(policy_yaml(NetworkPolicy("ns0", "np", LabelSelector((("app", "a"),)),
                                          (NetworkPolicyRule((NetworkPolicyPeer(pod_selector=LabelSelector()),)),))),
                "np.yaml")
    rv_inc, rv_full = inc.rv, full.rv
    assert inc.engine is not None
    real = inc.engine._pod

    def broken(*args: Any) -> None:
        real(*args)  # half the work done, then a failure
        raise RuntimeError("boom")

    inc.engine._pod = broken  # type: ignore[method-assign]
    store.apply(pod_yaml(Pod("ns0", "p", (("app", "a"),), "n2")), "pod.yaml")
    assert inc.updates["full"] == 2
    assert_same(inc.state, full.state)
    assert watch_all(inc, rv_inc) == watch_all(full, rv_full)


def test_the_build_makes_no_reference_cycles() -> None:
    """The engine's build pauses the cycle collector and a big state is frozen (FREEZE_AT): that is
    safe only because nothing it makes is cyclic garbage, here checked on a random cluster."""
    import gc

    w = World(7)
    inputs = w.inputs()
    gc.collect()
    gc.disable()
    try:
        engine = npc.PolicyEngine(*inputs)
        changes = engine.update(*w.change())
        del engine, changes
        assert gc.collect() == 0
    finally:
        gc.enable()
