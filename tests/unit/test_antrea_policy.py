"""Antrea-native policies (issue 10): given ClusterNetworkPolicies, Antrea NetworkPolicies, Tiers and
(Cluster)Groups, the groups, internal rules and flows they must produce.

Expectations are written out by hand: group names are UUIDv5 of normalized selector strings given
literally (spec §9.2, with Antrea's cluster-scoped forms: an ACNP podSelector alone has no
`namespace=` part), rules carry Antrea's fields, and flows are the exact `ovs-ofctl dump-flows`
lines of tables 45/85 (AntreaPolicyEgressRule/IngressRule) and 60/100 (Baseline), with conj_ids in
the compiler's allocation order and OpenFlow priorities from the assigner (docs/decisions.md).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pyantrea.agent.networkpolicy import OFRule
from pyantrea.agent.openflow.policy import PolicyFlowIndex, policy_flows
from pyantrea.agent.openflow.priority import BASELINE_RANGE, POLICY_RANGE, PriorityAssigner, RulePriorities
from pyantrea.apis import controlplane as cp
from pyantrea.k8s.complete import complete
from pyantrea.k8s.loader import load_text
from pyantrea.offline import OfflineCluster

NS = uuid.UUID("5a5e7dd9-e3fb-49bb-b263-9bab25c95841")


def g(s: str) -> str:
    return str(uuid.uuid5(NS, s))


# n1 10.10.1.0/24: x/a .2 port 3, y/a .3 port 4, z/a .4 port 5, x/b .5 port 6
# n2 10.10.2.0/24: y/b .2 port 3, z/b .3 port 4, x/c .4 port 5, y/c .5 port 6, z/c .6 port 7
PODS = {("x", "a"): ("n1", "10.10.1.2", 3), ("y", "a"): ("n1", "10.10.1.3", 4), ("z", "a"): ("n1", "10.10.1.4", 5),
        ("x", "b"): ("n1", "10.10.1.5", 6), ("y", "b"): ("n2", "10.10.2.2", 3), ("z", "b"): ("n2", "10.10.2.3", 4),
        ("x", "c"): ("n2", "10.10.2.4", 5), ("y", "c"): ("n2", "10.10.2.5", 6), ("z", "c"): ("n2", "10.10.2.6", 7)}


def cluster_text() -> str:
    docs = []
    for i, n in enumerate(("n1", "n2"), start=1):
        docs.append(f"apiVersion: v1\nkind: Node\nmetadata: {{name: {n}}}\nspec: {{podCIDR: 10.10.{i}.0/24}}\n"
                    f"status: {{addresses: [{{type: InternalIP, address: 10.79.1.{200 + i}}}]}}\n")
    for ns in "xyz":
        docs.append(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n")
    pins: dict[str, list[str]] = {"n1": [], "n2": []}
    for (ns, name), (node, ip, port) in PODS.items():
        docs.append(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{pod: {name}}}}}\n"
                    f"spec: {{nodeName: {node}, containers: [{{name: c, ports: [{{containerPort: {8000 + port}, "
                    f"name: web}}]}}]}}\nstatus: {{podIP: {ip}}}\n")
        pins[node].append(f"{{namespace: {ns}, name: {name}, ofport: {port}}}")
    for node, ps in pins.items():
        docs.append(f"apiVersion: pyantrea.io/v1alpha1\nkind: NodeInterfaces\nmetadata: {{name: {node}}}\n"
                    f"spec: {{pods: [{', '.join(ps)}]}}\n")
    return "---\n".join(docs)


def offline(policies: str, conf: str = "featureGates: {AntreaPolicy: true, Traceflow: true}") -> OfflineCluster:
    return OfflineCluster(complete(load_text(cluster_text() + "---\n" + policies, "c.yaml", conf)))


def acnp(name: str, spec: str) -> str:
    return f"apiVersion: crd.antrea.io/v1beta1\nkind: ClusterNetworkPolicy\nmetadata: {{name: {name}}}\nspec: {spec}\n"


def anp(ns: str, name: str, spec: str) -> str:
    return (f"apiVersion: crd.antrea.io/v1beta1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec: {spec}\n")


def members(st: object, kind: str, name: str) -> list[str]:
    groups = st.applied_to_groups if kind == "ATG" else st.address_groups  # type: ignore[attr-defined]
    return [m.key for m in groups[name].pods]


def table_lines(o: OfflineCluster, node: str, *tables: int) -> list[str]:
    return [f.dump_text().strip() for f in o.node_flows(node).flows if f.table in tables]


# ------------------------------------------------------------------------------------------- controller


def test_acnp_namespace_and_pod_selectors() -> None:
    o = offline(acnp("c1", "{priority: 5, tier: securityops, appliedTo: [{namespaceSelector: {matchLabels: {ns: x}}}], "
                           "ingress: [{action: Drop, name: deny-y, from: [{namespaceSelector: {matchLabels: {ns: y}}}], "
                           "ports: [{protocol: TCP, port: 80}]}], "
                           "egress: [{action: Allow, to: [{podSelector: {matchLabels: {pod: a}}}]}, "
                           "{action: Drop, to: [{podSelector: {matchLabels: {pod: b}}, "
                           "namespaceSelector: {matchLabels: {ns: y}}}]}]}"))
    st = o.policy_state
    p = st.policies["ACNP:c1"]
    assert (p.type, p.namespace, p.name, p.tier, p.tier_priority, p.priority) == (
        "AntreaClusterNetworkPolicy", "", "c1", "securityops", 100, 5.0)
    atg = g("namespaceSelector=ns=x")
    assert p.applied_to_groups == (atg,)
    assert members(st, "ATG", atg) == ["x/a", "x/b", "x/c"] and st.applied_to_groups[atg].span == ("n1", "n2")
    assert p.span == ("n1", "n2")
    r0, r1, r2 = p.rules
    assert (r0.direction, r0.action, r0.name, r0.priority, r0.applied_to_groups) == ("In", "Drop", "deny-y", 0, None)
    assert r0.from_ == cp.NetworkPolicyPeer((g("namespaceSelector=ns=y"),), ())
    assert r0.services == (cp.Service("TCP", 80),)
    assert (r1.direction, r1.action, r1.priority) == ("Out", "Allow", 0)
    assert r1.name is not None and r1.name.startswith("egress-allow-")
    # an ACNP's podSelector alone selects Pods of every Namespace
    assert r1.to == cp.NetworkPolicyPeer((g("podSelector=pod=a"),), ())
    assert members(st, "AG", g("podSelector=pod=a")) == ["x/a", "y/a", "z/a"]
    # both selectors: those Pods of those Namespaces
    both = g("namespaceSelector=ns=y And podSelector=pod=b")
    assert (r2.priority, r2.to) == (1, cp.NetworkPolicyPeer((both,), ()))
    assert members(st, "AG", both) == ["y/b"]
    assert st.address_groups[both].span == ("n1", "n2")


def test_rule_level_applied_to_and_anp() -> None:
    o = offline(anp("x", "p1", "{priority: 3, ingress: ["
                               "{action: Allow, appliedTo: [{podSelector: {matchLabels: {pod: a}}}], "
                               "from: [{podSelector: {matchLabels: {pod: b}}}]}, "
                               "{action: Reject, appliedTo: [{podSelector: {matchLabels: {pod: b}}}], "
                               "from: [{namespaceSelector: {matchLabels: {ns: z}}}]}]}"))
    st = o.policy_state
    p = st.policies["ANP:x/p1"]
    assert (p.type, p.namespace, p.tier, p.tier_priority) == ("AntreaNetworkPolicy", "x", "application", 250)
    a, b = g("namespace=x And podSelector=pod=a"), g("namespace=x And podSelector=pod=b")
    assert p.applied_to_groups == (a, b)
    assert [r.applied_to_groups for r in p.rules] == [(a,), (b,)]
    # an ANP's podSelector selects its own Namespace's Pods; a namespaceSelector other Namespaces'
    assert p.rules[0].from_ == cp.NetworkPolicyPeer((b,), ())
    assert members(st, "AG", b) == ["x/b"]
    assert p.rules[1].from_ == cp.NetworkPolicyPeer((g("namespaceSelector=ns=z"),), ())
    assert st.applied_to_groups[a].span == ("n1",) and st.applied_to_groups[b].span == ("n1",)
    # node n2 has neither Pod: the policy is not sent there
    assert p.span == ("n1",) and "ANP:x/p1" not in {q.key for q in st.node_view("n2").policies}
    # each rule applies to its own Pods: x/a's port 3 for rule 0, x/b's port 6 for rule 1
    lines = table_lines(o, "n1", 85)
    assert "priority=32050,ip,reg1=0x3 actions=conjunction(1,2/2)" in " ".join(lines)
    assert "priority=32049,ip,reg1=0x6 actions=conjunction(2,2/2)" in " ".join(lines)


def test_k8s_and_antrea_policies_of_the_same_name_are_two_policies() -> None:
    k8s = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"
           "spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]}\n")
    o = offline(k8s + "---\n" + anp("x", "p", "{priority: 1, appliedTo: [{podSelector: {matchLabels: {pod: a}}}], "
                                              "ingress: [{action: Drop, from: [{podSelector: {matchLabels: {pod: b}}}]}]}"))
    st = o.policy_state
    assert set(st.policies) == {"x/p", "ANP:x/p"}
    # the same selectors: one group each, shared
    shared = g("namespace=x And podSelector=pod=b")
    assert st.policies["x/p"].rules[0].from_ == st.policies["ANP:x/p"].rules[0].from_ == \
        cp.NetworkPolicyPeer((shared,), ())
    assert st.address_groups[shared].span == ("n1",)


def test_namespaces_match_self() -> None:
    o = offline(acnp("iso", "{priority: 1, appliedTo: [{namespaceSelector: {matchExpressions: "
                            "[{key: ns, operator: In, values: [x, y]}]}}], "
                            "ingress: [{action: Allow, from: [{namespaces: {match: Self}}]}, {action: Drop}]}"))
    p = o.policy_state.policies["ACNP:iso"]
    # one copy of the rule per Namespace, applied to that Namespace and allowing that Namespace
    rx, ry, deny = p.rules
    assert rx.applied_to_groups == (g("namespace=x"),) and rx.from_ == cp.NetworkPolicyPeer((g("namespace=x"),), ())
    assert ry.applied_to_groups == (g("namespace=y"),) and ry.from_ == cp.NetworkPolicyPeer((g("namespace=y"),), ())
    assert rx.priority == ry.priority == 0 and deny.priority == 1
    assert deny.applied_to_groups == (g("namespaceSelector=ns in (x,y)"),)
    assert deny.from_ == cp.NetworkPolicyPeer((), (cp.IPBlock("0.0.0.0/0"),))


def test_cluster_groups() -> None:
    groups = """
apiVersion: crd.antrea.io/v1beta1
kind: ClusterGroup
metadata: {name: pods-a}
spec: {podSelector: {matchLabels: {pod: a}}}
---
apiVersion: crd.antrea.io/v1beta1
kind: ClusterGroup
metadata: {name: cidrs}
spec: {ipBlocks: [{cidr: 192.168.0.0/16, except: [192.168.1.0/24]}]}
---
apiVersion: crd.antrea.io/v1beta1
kind: ClusterGroup
metadata: {name: both}
spec: {childGroups: [pods-a, cidrs]}
---
apiVersion: crd.antrea.io/v1beta1
kind: Group
metadata: {name: gz, namespace: z}
spec: {podSelector: {matchLabels: {pod: c}}}
"""
    o = offline(groups + "---\n" + acnp("c", "{priority: 1, appliedTo: [{group: pods-a}], egress: [{action: Drop, "
                                            "to: [{group: both}]}]}")
                + "---\n" + anp("z", "a", "{priority: 1, appliedTo: [{group: gz}], ingress: [{action: Drop, "
                                          "from: [{group: gz}]}]}"))
    st = o.policy_state
    p = st.policies["ACNP:c"]
    assert p.applied_to_groups == ("pods-a",)
    assert members(st, "ATG", "pods-a") == ["x/a", "y/a", "z/a"]
    # a group of groups: the Pods of its children in one AddressGroup, their ipBlocks in the peer
    assert p.rules[0].to == cp.NetworkPolicyPeer(("both",), (cp.IPBlock("192.168.0.0/16", ("192.168.1.0/24",)),))
    assert members(st, "AG", "both") == ["x/a", "y/a", "z/a"]
    q = st.policies["ANP:z/a"]
    assert q.applied_to_groups == ("z/gz",) and q.rules[0].from_ == cp.NetworkPolicyPeer(("z/gz",), ())
    assert members(st, "AG", "z/gz") == ["z/c"] and st.address_groups["z/gz"].span == ("n2",)
    lines = " ".join(table_lines(o, "n1", 45))
    assert "priority=32050,ip,nw_dst=192.168.128.0/17 actions=conjunction(1,2/2)" in lines
    assert "priority=32050,ip,nw_dst=192.168.0.0/24 actions=conjunction(1,2/2)" in lines


def test_ports_protocols_and_ipblocks_flows() -> None:
    o = offline(acnp("svc", "{priority: 1, appliedTo: [{podSelector: {matchLabels: {pod: a}}}], egress: [{action: Drop, "
                            "to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}}], "
                            "ports: [{protocol: UDP, port: 53}, {protocol: SCTP}, {protocol: TCP, port: 8000, "
                            "endPort: 8031}], protocols: [{icmp: {icmpType: 8, icmpCode: 0}}]}]}"))
    got = table_lines(o, "n1", 45)
    c = "cookie=0x1050000000000, table=45, priority=32050"
    for line in [f"{c},conj_id=1,ip actions=load:0x1->NXM_NX_REG5[]",
                 f"{c},ip,nw_src=10.10.1.2 actions=conjunction(1,1/3)",
                 f"{c},ip,nw_src=10.10.1.3 actions=conjunction(1,1/3)",
                 f"{c},ip,nw_src=10.10.1.4 actions=conjunction(1,1/3)",
                 f"{c},ip,nw_dst=10.0.128.0/17 actions=conjunction(1,2/3)",
                 f"{c},ip,nw_dst=10.0.0.0/24 actions=conjunction(1,2/3)",
                 f"{c},udp,tp_dst=53 actions=conjunction(1,3/3)",
                 f"{c},sctp actions=conjunction(1,3/3)",
                 f"{c},tcp,tp_dst=0x1f40/0xffe0 actions=conjunction(1,3/3)",
                 f"{c},icmp,icmp_type=8,icmp_code=0 actions=conjunction(1,3/3)"]:
        assert line in got, line
    assert sum(1 for x in got if "nw_dst=10.0." in x) == 8  # /16 minus /24: eight pieces (spec §8.6)
    assert not table_lines(o, "n1", 60)[:-1]  # no isolation: Antrea-native rules install no default drops


def test_named_ports_are_resolved_per_pod() -> None:
    o = offline(acnp("np", "{priority: 1, appliedTo: [{namespaceSelector: {matchLabels: {ns: x}}}], "
                           "ingress: [{action: Allow, ports: [{protocol: TCP, port: web}]}]}"))
    got = [x for x in table_lines(o, "n1", 85) if "tcp" in x or "reg1" in x]
    # x/a (port 3) serves web on 8003, x/b (port 6) on 8006: a conjunction each
    assert "cookie=0x1050000000000, table=85, priority=32050,ip,reg1=0x3 actions=conjunction(1,2/3)" in got
    assert "cookie=0x1050000000000, table=85, priority=32050,tcp,tp_dst=8003 actions=conjunction(1,3/3)" in got
    assert "cookie=0x1050000000000, table=85, priority=32050,ip,reg1=0x6 actions=conjunction(2,2/3)" in got
    assert "cookie=0x1050000000000, table=85, priority=32050,tcp,tp_dst=8006 actions=conjunction(2,3/3)" in got


def test_actions() -> None:
    o = offline(acnp("act", "{priority: 1, tier: emergency, appliedTo: [{podSelector: {matchLabels: {pod: a}}}], "
                            "ingress: [{action: Allow, name: i-allow}, {action: Drop, name: i-drop}, "
                            "{action: Reject, name: i-reject}, {action: Pass, name: i-pass}], "
                            "egress: [{action: Pass, name: e-pass}]}"))
    acts = {f.match.get("conj_id"): (f.table, f.priority, ",".join(a.of10() for a in f.actions))
            for f in o.node_flows("n1").flows if f.match.get("conj_id") is not None}
    assert acts == {
        # one policy's rules side by side, in the middle of the free range (100-64000)
        1: (85, 32051, "load:0x1->NXM_NX_REG6[],resubmit(,105)"),  # Allow: past the remaining policy tables
        2: (85, 32050, "load:0x2->NXM_NX_REG6[]"),  # Drop
        3: (85, 32049, "load:0x3->NXM_NX_REG6[],CONTROLLER:128"),  # Reject: to the agent
        4: (85, 32048, "resubmit(,90)"),  # Pass: on to the Kubernetes NetworkPolicy rules
        5: (45, 32050, "resubmit(,50)"),
    }


def test_tiers_and_priorities_order_the_rules() -> None:
    o = offline("apiVersion: crd.antrea.io/v1beta1\nkind: Tier\nmetadata: {name: mine}\nspec: {priority: 120}\n---\n"
                + acnp("app-1", "{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Allow}]}") + "---\n"
                + acnp("sec-9", "{priority: 9, tier: securityops, appliedTo: [{podSelector: {}}], ingress: "
                                "[{action: Drop}, {action: Allow}]}") + "---\n"
                + acnp("mine-2", "{priority: 2, tier: mine, appliedTo: [{podSelector: {}}], ingress: [{action: Drop}]}")
                + "---\n"
                + acnp("app-1.5", "{priority: 1.5, appliedTo: [{podSelector: {}}], ingress: [{action: Drop}]}"))
    assert o.policy_state.policies["ACNP:mine-2"].tier_priority == 120
    rules = sorted(o.node_flows("n1").rules, key=lambda r: -(r.of_priority or 0))
    order = [(r.policy, r.rule_index) for r in rules]
    # securityops (100) < mine (120) < application (250); then the policy priority; then the rule
    assert order == [("ACNP:sec-9", 0), ("ACNP:sec-9", 1), ("ACNP:mine-2", 0), ("ACNP:app-1", 0),
                     ("ACNP:app-1.5", 0)]
    prios = [r.of_priority for r in rules]
    assert len(set(prios)) == len(prios) and all(POLICY_RANGE[0] <= p <= POLICY_RANGE[1] for p in prios)


def test_baseline_rules_go_under_the_isolation_drops() -> None:
    k8s = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-b, namespace: x}\n"
           "spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]}\n")
    o = offline(k8s + "---\n" + acnp("base", "{priority: 1, tier: baseline, appliedTo: [{namespaceSelector: "
                                             "{matchLabels: {ns: x}}}], ingress: [{action: Drop, from: [{namespaceSelector: "
                                             "{matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}}]}]}"))
    got = table_lines(o, "n1", 100)
    lo, hi = BASELINE_RANGE
    # x/a's isolation drop (K8s, 200) above the Baseline rule (95, the middle of 10-180)
    assert got[0] == "cookie=0x1000000000000, table=100, priority=200,ip,reg1=0x3 actions=drop"
    # (the ClusterNetworkPolicy's rule comes first in conj_id order: policies by namespace, then name)
    assert "cookie=0x1050000000000, table=100, priority=95,conj_id=1,ip actions=load:0x1->NXM_NX_REG6[]" in got
    assert "cookie=0x1050000000000, table=100, priority=95,ip,reg1=0x6 actions=conjunction(1,2/2)" in got
    assert all(lo <= int(x.split("priority=")[1].split(",")[0]) <= hi for x in got if "conj" in x)
    assert got[-1] == "cookie=0x1000000000000, table=100, priority=0 actions=resubmit(,105)"
    assert not [x for x in table_lines(o, "n1", 85) if "conj" in x]


def test_gate_on_without_policies_adds_only_the_tables() -> None:
    o = offline("")
    t45 = table_lines(o, "n1", 45)
    assert t45 == ["cookie=0x1000000000000, table=45, priority=64990,ct_state=-new+est,ip actions=resubmit(,70)",
                   "cookie=0x1000000000000, table=45, priority=0 actions=resubmit(,50)"]
    assert table_lines(o, "n1", 85) == [
        "cookie=0x1000000000000, table=85, priority=64990,ct_state=-new+est,ip actions=resubmit(,105)",
        "cookie=0x1000000000000, table=85, priority=64990,ip,nw_src=10.10.1.1 actions=resubmit(,105)",
        "cookie=0x1000000000000, table=85, priority=0 actions=resubmit(,90)"]
    assert "cookie=0x1000000000000, table=40, priority=0 actions=resubmit(,45)" in table_lines(o, "n1", 40)
    assert "cookie=0x1000000000000, table=80, priority=0 actions=resubmit(,85)" in table_lines(o, "n1", 80)


def test_seed_with_the_gate_off_is_unchanged() -> None:
    seed = Path(__file__).resolve().parents[2] / "examples" / "seed"
    o = OfflineCluster.load(seed)
    golden = (seed.parents[1] / "tests" / "golden" / "seed-worker1.flows").read_text().splitlines()
    assert [f.dump_text() for f in o.node_flows("worker1").flows] == [x for x in golden if x.strip()]


# ------------------------------------------------------------------------------------------- priorities


def test_assigner_inserts_before_between_after_and_across_tiers_without_moving_others() -> None:
    pa = PriorityAssigner(*POLICY_RANGE)
    pa.register([(250, 5.0, 0), (250, 5.0, 1), (250, 10.0, 0)])
    first = dict(pa.of)
    for p in [(250, 7.5, 0), (250, 1.0, 0), (250, 20.0, 0), (100, 3.0, 0), (253, 1.0, 0), (250, 5.0, 2)]:
        assert pa.register([p]) == {}, p  # room: nothing else moves
        assert all(pa.of[q] == v for q, v in first.items())
    order = sorted(pa.of, key=lambda q: -pa.of[q])
    assert order == sorted(pa.of)  # OpenFlow priority order = (tier, policy, rule) order


def test_assigner_reassigns_a_crowded_neighbourhood() -> None:
    pa = PriorityAssigner(10, 30)
    pa.register([(250, 1.0, 0), (250, 2.0, 0)])
    moved_total = 0
    for i in range(1, 12):
        moved = pa.register([(250, 1.0 + i / 100, 0)])
        moved_total += len(moved)
        for q, (old, new) in moved.items():
            assert old != new and pa.of[q] == new
        order = sorted(pa.of, key=lambda q: -pa.of[q])
        assert order == sorted(pa.of) and len(set(pa.of.values())) == len(pa.of)
        assert all(10 <= v <= 30 for v in pa.of.values())
    assert moved_total > 0  # 13 priorities in 21 slots: some had to move


def _rule(cid: int, prio: tuple[int, float, int], src: str = "10.0.0.1/32") -> OFRule:
    from pyantrea.agent.networkpolicy import Address

    return OFRule(cid, "Out", (Address.net(src),), (Address.net("0.0.0.0/0"),), None, f"ACNP:p{cid}", 0, "Drop",
                  prio, None, f"r{cid}", "application")


def test_reassignment_is_one_update_of_the_flow_index() -> None:
    """Moving rules to other OpenFlow priorities is a delete of their old flows and an add of the new
    ones in the same update (one bundle), and leaves exactly the flows a fresh compile gives."""
    rp = RulePriorities()
    rp.assigners[("antrea", "Out")] = PriorityAssigner(100, 102)  # a tiny table: crowding comes fast
    rules, _ = rp.assign([_rule(1, (250, 1.0, 0)), _rule(2, (250, 3.0, 0))])
    idx = PolicyFlowIndex()
    idx.update([], rules)
    new, moved = rp.assign([_rule(3, (250, 2.0, 0))])
    assert moved  # no room between 1.0 and 3.0 without moving them
    moved_rules = [r for r in rules if rp.current(r) != r.of_priority]
    after = [OFRule(**{**r.__dict__, "of_priority": rp.current(r)}) for r in moved_rules]
    ups, dels = idx.update(moved_rules, after + new)
    assert dels and ups
    del_keys = {f.key for f in dels}
    assert all(f.key not in del_keys for f in ups)
    all_rules = [r for r in rules if r not in moved_rules] + after + new
    assert sorted(f.dump_text() for f in idx.flows()) == sorted(f.dump_text() for f in policy_flows(all_rules))
    prios = {r.conj_id: r.of_priority for r in all_rules}
    assert prios[1] > prios[3] > prios[2]


@pytest.mark.parametrize("where", ["before", "between", "after", "other-tier"])
def test_rule_cache_inserts_a_policy(where: str) -> None:
    """The agent's rule cache: a policy inserted anywhere gets its rules, and the rules whose priority
    moved come out and back in the same reconcile (what one bundle installs)."""
    from pyantrea.agent.controllerwatch import RuleCache

    o = offline(acnp("p2", "{priority: 2, appliedTo: [{podSelector: {matchLabels: {pod: a}}}], egress: [{action: Drop}]}")
                + "---\n" + acnp("p4", "{priority: 4, appliedTo: [{podSelector: {matchLabels: {pod: a}}}], "
                                       "egress: [{action: Allow}]}"))
    prio, tier = {"before": (1, "application"), "between": (3, "application"), "after": (5, "application"),
                  "other-tier": (9, "emergency")}[where]
    st = o.policy_state
    ifaces = {i.pod_key: i for i in o.cluster.network("n1").interfaces}
    cache = RuleCache("n1")
    cache.reset(_listing(st, "n1"), ifaces)
    before_rules = cache.all_rules()
    o2 = offline(acnp("p2", "{priority: 2, appliedTo: [{podSelector: {matchLabels: {pod: a}}}], egress: [{action: Drop}]}")
                 + "---\n" + acnp("p4", "{priority: 4, appliedTo: [{podSelector: {matchLabels: {pod: a}}}], "
                                        "egress: [{action: Allow}]}") + "---\n"
                 + acnp("new", f"{{priority: {prio}, tier: {tier}, appliedTo: [{{podSelector: {{matchLabels: {{pod: a}}}}}}], "
                               "egress: [{action: Reject}]}"))
    pol = o2.policy_state.policies["ACNP:new"]
    touched = cache.apply([{"type": "ADDED", "kind": "NetworkPolicy", "object": cp.to_dict(pol)}] + [
        {"type": "ADDED", "kind": "AppliedToGroup", "object": cp.to_dict(o2.policy_state.applied_to_groups[n].for_node("n1"))}
        for n in pol.applied_to_groups if n not in cache.objects["AppliedToGroup"]])
    removed, added = cache.reconcile(touched, ifaces)
    idx = PolicyFlowIndex()
    idx.update([], before_rules)
    idx.update(removed, added)
    fresh = o2.node_flows("n1")
    want = sorted(f.dump_text() for f in fresh.flows if f.table == 45 and f.priority not in (0, 64990))
    got = sorted(f.dump_text() for f in idx.flows() if f.table == 45)
    # the same flows as the offline compile, up to the priorities the live cache kept
    order = [r.policy for r in sorted(cache.all_rules(), key=lambda r: -(r.of_priority or 0))]
    expect = {"before": ["ACNP:new", "ACNP:p2", "ACNP:p4"], "between": ["ACNP:p2", "ACNP:new", "ACNP:p4"],
              "after": ["ACNP:p2", "ACNP:p4", "ACNP:new"], "other-tier": ["ACNP:new", "ACNP:p2", "ACNP:p4"]}[where]
    assert order == expect
    assert len(got) == len(want)


def _listing(st: object, node: str) -> dict[str, object]:
    view = st.node_view(node)  # type: ignore[attr-defined]
    return {"networkPolicies": [cp.to_dict(p) for p in view.policies],
            "appliedToGroups": [cp.to_dict(g) for g in view.applied_to_groups.values()],
            "addressGroups": [cp.to_dict(g) for g in view.address_groups.values()]}


# ------------------------------------------------------------------------------------------- the example


def test_seed_anp_example() -> None:
    """docs/antrea-native-policies.md's worked example: the seed with fence-backends."""
    o = OfflineCluster.load(Path(__file__).resolve().parents[2] / "examples" / "seed-anp")
    st = o.policy_state
    p = st.policies["ACNP:fence-backends"]
    assert (p.tier, p.tier_priority, p.priority, p.applied_to_groups) == ("securityops", 100, 10.0, ("backends",))
    assert [(r.name, r.action) for r in p.rules] == [("frontend-to-the-app-policy", "Pass"),
                                                      ("reject-the-rest", "Reject")]
    assert p.span == ("worker1", "worker2")
    assert table_lines(o, "worker2", 85) == [
        "cookie=0x1000000000000, table=85, priority=64990,ct_state=-new+est,ip actions=resubmit(,105)",
        "cookie=0x1000000000000, table=85, priority=64990,ip,nw_src=10.222.2.1 actions=resubmit(,105)",
        "cookie=0x1050000000000, table=85, priority=32050,conj_id=1,ip actions=resubmit(,90)",
        "cookie=0x1050000000000, table=85, priority=32050,ip,nw_src=10.222.1.48 actions=conjunction(1,1/3)",
        "cookie=0x1050000000000, table=85, priority=32050,ip,reg1=0x23 actions=conjunction(1,2/3)",
        "cookie=0x1050000000000, table=85, priority=32050,tcp,tp_dst=80 actions=conjunction(1,3/3)",
        "cookie=0x1050000000000, table=85, priority=32049,conj_id=2,ip actions=load:0x2->NXM_NX_REG6[],CONTROLLER:128",
        "cookie=0x1050000000000, table=85, priority=32049,ip actions=conjunction(2,1/2)",
        "cookie=0x1050000000000, table=85, priority=32049,ip,reg1=0x23 actions=conjunction(2,2/2)",
        "cookie=0x1000000000000, table=85, priority=0 actions=resubmit(,90)"]
    # the seed's own tables are those of the gate off (up to conj_ids: the ACNP's rules come first)
    import re

    def norm(f: object) -> str:
        return re.sub(r"(conj_id=|conjunction\(|load:)(0x[0-9a-f]+|\d+)", r"\1N", f.dump_text())  # type: ignore[attr-defined]

    seed = OfflineCluster.load(Path(__file__).resolve().parents[2] / "examples" / "seed")
    same = {0, 10, 20, 30, 31, 50, 60, 70, 90, 100, 105, 110}
    for node in ("worker1", "worker2"):
        assert sorted(norm(f) for f in o.node_flows(node).flows if f.table in same) == \
            sorted(norm(f) for f in seed.node_flows(node).flows if f.table in same)


def test_stored_state_is_read_without_the_gate(tmp_path: Path) -> None:
    """The controller's persisted objects (read by the lab's DNS) were admitted with the gate: read as is."""
    from pyantrea.controller.store import load_stored

    (tmp_path / "cluster.yaml").write_text(acnp("c", "{priority: 1, appliedTo: [{podSelector: {}}], "
                                                     "ingress: [{action: Drop}]}"))
    assert [p.name for p in load_stored(tmp_path).antrea_policies] == ["c"]
