"""NetworkPolicy semantics, end to end and from the spec (ovs-pipeline.md §5.3, §6.7/6.8/6.12/6.13, §8, §9).

Every expectation below is derived by hand from the spec, not from the code:

* groups: names are UUIDv5 of the normalized selector string (§9.2), computed here with `uuid`
  directly from strings written out literally; members and spans follow §9.3;
* internal rules (§9.1): direction, peers (AddressGroup names, ipBlocks) and services;
* flows of tables 50/60/90/100 (§6.7, §6.8, §6.12, §6.13, §8.4), as exact `ovs-ofctl dump-flows
  --no-stats --names` lines, compared per node as a multiset. conj_ids are labels (§8.4): the
  expected lines use letters (or the article's numbers) and the comparison looks for a consistent
  renaming; conjunction actions inside one line are sorted before comparing.

The fixed flows of these tables (est bypass, gateway bypass, table-miss) are checked once
(`test_fixed_flows_of_the_policy_tables`) and left out of the per-policy comparisons.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest

from pyantrea.agent.networkpolicy import compute_rules, ipblock_cidrs
from pyantrea.agent.openflow.policy import policy_flows, port_range_matches
from pyantrea.apis import controlplane as cp
from pyantrea.apis.k8s import (
    LabelSelector,
    LabelSelectorRequirement,
    Namespace,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyRule,
    Pod,
)
from pyantrea.controller.networkpolicy import NetworkPolicyController, group_name, normalize
from pyantrea.errors import ManifestError
from pyantrea.offline import OfflineCluster

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"

# ============================================================================== the test cluster
#
#   n1 10.79.1.201 podCIDR 10.222.1.0/24           n2 10.79.1.202 podCIDR 10.222.2.0/24
#   default/web1    role=web     .1.10  port 10    default/web3  role=web     .2.10  port 30
#   default/web2    role=web     .1.11  port 11    prod/pdb      app=db       .2.21  port 21
#   default/client  role=client  .1.12  port 12    dev/dclient   role=client  .2.22  port 22
#   prod/pclient    role=client  .1.20  port 20
#
#   web1: http 8080/TCP, dns 5353/UDP; web2: http 9090/TCP (in its 2nd container); web3: http 8080/TCP
#   namespaces: default (no labels), prod {env: prod, team: blue}, dev {env: dev}

NODES = """
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.222.1.0/24}
status: {addresses: [{type: InternalIP, address: 10.79.1.201}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
spec: {podCIDR: 10.222.2.0/24}
status: {addresses: [{type: InternalIP, address: 10.79.1.202}]}
"""

NAMESPACES = """
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod, team: blue}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {env: dev}}
"""

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: web1, namespace: default, labels: {role: web}}
spec:
  nodeName: n1
  containers:
  - name: app
    ports:
    - {name: http, containerPort: 8080, protocol: TCP}
    - {name: dns, containerPort: 5353, protocol: UDP}
status: {phase: Running, podIP: 10.222.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: web2, namespace: default, labels: {role: web}}
spec:
  nodeName: n1
  containers:
  - name: app
  - name: sidecar
    ports:
    - {name: http, containerPort: 9090}
status: {phase: Running, podIP: 10.222.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {role: client}}
spec:
  nodeName: n1
  containers: [{name: app}]
status: {phase: Running, podIP: 10.222.1.12}
---
apiVersion: v1
kind: Pod
metadata: {name: pclient, namespace: prod, labels: {role: client}}
spec:
  nodeName: n1
  containers: [{name: app}]
status: {phase: Running, podIP: 10.222.1.20}
---
apiVersion: v1
kind: Pod
metadata: {name: web3, namespace: default, labels: {role: web}}
spec:
  nodeName: n2
  containers:
  - name: app
    ports:
    - {name: http, containerPort: 8080, protocol: TCP}
status: {phase: Running, podIP: 10.222.2.10}
---
apiVersion: v1
kind: Pod
metadata: {name: pdb, namespace: prod, labels: {app: db}}
spec:
  nodeName: n2
  containers: [{name: db}]
status: {phase: Running, podIP: 10.222.2.21}
---
apiVersion: v1
kind: Pod
metadata: {name: dclient, namespace: dev, labels: {role: client}}
spec:
  nodeName: n2
  containers: [{name: app}]
status: {phase: Running, podIP: 10.222.2.22}
"""

INTERFACES = """
apiVersion: pyantrea.io/v1alpha1
kind: NodeInterfaces
metadata: {name: n1}
spec:
  gateway: {name: antrea-gw0, ofport: 2, mac: "4e:99:08:c1:53:be"}
  pods:
  - {namespace: default, name: web1, ofport: 10}
  - {namespace: default, name: web2, ofport: 11}
  - {namespace: default, name: client, ofport: 12}
  - {namespace: prod, name: pclient, ofport: 20}
---
apiVersion: pyantrea.io/v1alpha1
kind: NodeInterfaces
metadata: {name: n2}
spec:
  gateway: {name: antrea-gw0, ofport: 2, mac: "02:d8:4e:3f:92:1d"}
  pods:
  - {namespace: default, name: web3, ofport: 30}
  - {namespace: prod, name: pdb, ofport: 21}
  - {namespace: dev, name: dclient, ofport: 22}
"""

BASE = (NODES, NAMESPACES, PODS, INTERFACES)

# Extra Pods some tests add (not pinned: they get the first free ofport >= 3 of their node).
WEB0 = """
apiVersion: v1
kind: Pod
metadata: {name: web0, namespace: default, labels: {role: web}}
spec:
  nodeName: n1
  containers: [{name: app}]
status: {phase: Running, podIP: 10.222.1.13}
"""

# ============================================================================== helpers

GROUP_NS = uuid.UUID("5a5e7dd9-e3fb-49bb-b263-9bab25c95841")


def gname(normalized: str) -> str:
    """§9.2: group name = UUIDv5(5a5e7dd9-…, normalized selector string)."""
    return str(uuid.uuid5(GROUP_NS, normalized))


WEB_ATG = "namespace=default And podSelector=role=web"
CLIENT_SEL = "namespace=default And podSelector=role=client"

POL = "cookie=0x1050000000000"  # round 1, category Policy (§5.2)
DEF = "cookie=0x1000000000000"  # round 1, category Default: the drop flows of 60/100 (§6.8, §6.13)


def c(conj: str | int, clause: int, n: int) -> str:
    return f"conjunction({conj},{clause}/{n})"


def ing(match: str, *conjs: str) -> str:
    """A table-90 conjunctive match flow (§6.12)."""
    return f"{POL}, table=90, priority=200,{match} actions={','.join(conjs)}"


def egr(match: str, *conjs: str) -> str:
    """A table-50 conjunctive match flow (§6.7)."""
    return f"{POL}, table=50, priority=200,{match} actions={','.join(conjs)}"


def ing_action(conj: str | int) -> str:
    """ART ingress conjunction action (§6.12): reg6 <- id; goto 105."""
    return f"{POL}, table=90, priority=190,conj_id={conj},ip actions=load:{conj}->NXM_NX_REG6[],resubmit(,105)"


def egr_action(conj: str | int) -> str:
    """ART egress conjunction action (§6.7): reg5 <- id; goto 70."""
    return f"{POL}, table=50, priority=190,conj_id={conj},ip actions=load:{conj}->NXM_NX_REG5[],resubmit(,70)"


def ing_drop(ofport: int) -> str:
    return f"{DEF}, table=100, priority=200,ip,reg1={ofport:#x} actions=drop"


def egr_drop(ip: str) -> str:
    return f"{DEF}, table=60, priority=200,ip,nw_src={ip} actions=drop"


POLICY_TABLES = (50, 60, 90, 100)


def table_lines(oc: OfflineCluster, node: str, tables: Iterable[int] = POLICY_TABLES,
                fixed: bool = False) -> list[str]:
    """The node's flows of `tables` as dump-flows lines (leading space stripped).

    Without `fixed`, the fixed flows (priority 210 bypasses and priority-0 table-miss) are left out.
    """
    tables = tuple(tables)
    out = []
    for f in oc.node_flows(node).flows:
        if f.table not in tables or (not fixed and f.priority in (0, 210)):
            continue
        text = f.dump_text()
        assert text.startswith(" ") and not text.startswith("  "), repr(text)
        out.append(text[1:])
    return out


# --- conj_id canonicalization ------------------------------------------------------------------
# An id appears as `conj_id=<id>`, `conjunction(<id>,` and `load:<id>->NXM_NX_REG5[]|REG6[]`.
# Actual lines carry numbers (decimal, or hex in `load:`); expected lines carry labels (letters) or
# numbers. Both sides are parsed into templates with id slots; a bijection between the two id sets
# that makes the multisets equal is searched, first by a renaming-invariant signature, then by
# permutation within signature classes.

_ID = re.compile(r"(conj_id=|conjunction\(|load:)(0x[0-9a-f]+|\d+|[A-Za-z]\w*)(?=,|->NXM_NX_REG[56]\[\])")
_CONJ = re.compile(r"conjunction\([^)]*\)")


def _parse(line: str) -> list[str | tuple[str, object]]:
    parts: list[str | tuple[str, object]] = []
    pos = 0
    for m in _ID.finditer(line):
        parts.append(line[pos:m.end(1)])
        prefix, tok = m.group(1), m.group(2)
        if re.fullmatch(r"0x[0-9a-f]+|\d+", tok):
            # §5.3: ids print in decimal in conj_id=/conjunction(), as 0x-hex inside load:
            hexa = tok.startswith("0x")
            if hexa != (prefix == "load:"):
                parts.append(tok)  # wrongly formatted: kept as literal text, so it cannot match
                pos = m.end()
                continue
            parts.append(("id", int(tok, 0)))
        else:
            parts.append(("id", tok))
        pos = m.end()
    parts.append(line[pos:])
    return parts


def _render(parts: list[str | tuple[str, object]], name) -> str:
    text = "".join(p if isinstance(p, str) else name(p[1]) for p in parts)
    head, sep, acts = text.partition(" actions=")
    conjs = _CONJ.findall(acts)
    if conjs and ",".join(conjs) == acts:
        acts = ",".join(sorted(conjs))
    return head + sep + acts


def _ids(parsed: list[list]) -> list[object]:
    seen: dict[object, None] = {}
    for parts in parsed:
        for p in parts:
            if not isinstance(p, str):
                seen.setdefault(p[1], None)
    return list(seen)


def _signature(i: object, parsed: list[list]) -> tuple[str, ...]:
    lines = []
    for parts in parsed:
        if any(not isinstance(p, str) and p[1] == i for p in parts):
            lines.append(_render(parts, lambda x: "*" if x == i else "?"))
    return tuple(sorted(lines))


def canonical_match(actual: list[str], expected: list[str]) -> tuple[bool, list[str], list[str]]:
    """(equal up to conj_id renaming, actual rendered with the best renaming, expected rendered)."""
    pa = [_parse(x) for x in actual]
    pe = [_parse(x) for x in expected]
    exp_render = sorted(_render(p, str) for p in pe)
    ids_a, ids_e = _ids(pa), _ids(pe)
    sig_a: dict[tuple, list] = {}
    sig_e: dict[tuple, list] = {}
    for i in ids_a:
        sig_a.setdefault(_signature(i, pa), []).append(i)
    for i in ids_e:
        sig_e.setdefault(_signature(i, pe), []).append(i)
    # A first guess for the failure message: same-signature ids paired in order, others as #<n>.
    guess: dict[object, str] = {}
    for sig, group in sig_a.items():
        for a, e in zip(group, sig_e.get(sig, [])):
            guess[a] = str(e)
    fallback = {i: guess.get(i, f"#{i}") for i in ids_a}
    act_guess = sorted(_render(p, lambda x: fallback[x]) for p in pa)
    if len(ids_a) != len(ids_e) or sorted(map(len, sig_a.values())) != sorted(map(len, sig_e.values())):
        return False, act_guess, exp_render
    if set(sig_a) != set(sig_e) or any(len(sig_a[s]) != len(sig_e[s]) for s in sig_a):
        return False, act_guess, exp_render
    want = Counter(exp_render)
    classes = list(sig_a)
    choices = [itertools.permutations(sig_e[s]) for s in classes]
    for n, combo in enumerate(itertools.product(*choices)):
        if n > 200000:
            break
        mapping: dict[object, object] = {}
        for s, perm in zip(classes, combo):
            mapping.update(zip(sig_a[s], perm))
        got = [_render(p, lambda x, m=mapping: str(m[x])) for p in pa]
        if Counter(got) == want:
            return True, sorted(got), exp_render
    return False, act_guess, exp_render


def assert_flows(actual: list[str], expected: list[str]) -> None:
    ok, got, want = canonical_match(actual, expected)
    if not ok:
        assert got == want, "flows differ (conj_ids compared up to renaming)"
        pytest.fail("flows differ only by an inconsistent conj_id renaming:\n" + "\n".join(got))


def assert_policy_flows(oc: OfflineCluster, node: str, expected: list[str]) -> None:
    assert_flows(table_lines(oc, node), expected)


# --- controller-side summaries -----------------------------------------------------------------


def rule_summary(r: cp.NetworkPolicyRule):
    """(direction, AddressGroup names, ipBlocks, services) of an internal rule, order-free for peers."""
    assert r.priority == -1 and r.action == "Allow"
    peer = r.from_ if r.direction == "In" else r.to
    other = r.to if r.direction == "In" else r.from_
    assert other is None or (other.address_groups == () and other.ip_blocks == ()), r
    groups = tuple(sorted(peer.address_groups)) if peer is not None else ()
    blocks = tuple(sorted((b.cidr, tuple(b.except_)) for b in peer.ip_blocks)) if peer is not None else ()
    services = None if r.services is None else tuple((s.protocol, s.port, s.end_port) for s in r.services)
    return (r.direction, groups, blocks, services)


def atg_members(oc: OfflineCluster, normalized: str) -> tuple[set[tuple[str, str | None]], tuple[str, ...]]:
    g = oc.policy_state.applied_to_groups[gname(normalized)]
    return {(m.key, m.node) for m in g.pods}, tuple(sorted(g.span))


def ag_members(oc: OfflineCluster, normalized: str) -> tuple[set[tuple[str, str | None]], tuple[str, ...]]:
    g = oc.policy_state.address_groups[gname(normalized)]
    return {(m.key, m.ip) for m in g.pods}, tuple(sorted(g.span))


ALL = ("0.0.0.0/0", ())


# ============================================================================== the harness itself


def test_canonicalizer_renames_consistently() -> None:
    actual = [
        "x priority=200,ip actions=conjunction(7,1/2),conjunction(3,1/2)",
        "x priority=190,conj_id=7,ip actions=load:0x7->NXM_NX_REG6[],resubmit(,105)",
        "x priority=190,conj_id=3,ip actions=load:0x3->NXM_NX_REG6[],resubmit(,105)",
        "x priority=200,tcp actions=conjunction(3,2/2)",
    ]
    ok = ["x priority=200,ip actions=conjunction(A,1/2),conjunction(B,1/2)",
          "x priority=190,conj_id=A,ip actions=load:A->NXM_NX_REG6[],resubmit(,105)",
          "x priority=190,conj_id=B,ip actions=load:B->NXM_NX_REG6[],resubmit(,105)",
          "x priority=200,tcp actions=conjunction(A,2/2)"]
    assert canonical_match(actual, ok)[0]
    # an action flow loading another id than its conj_id is not a renaming
    bad_load = list(actual)
    bad_load[1] = "x priority=190,conj_id=7,ip actions=load:0x3->NXM_NX_REG6[],resubmit(,105)"
    assert not canonical_match(bad_load, ok)[0]
    # the renaming is free: moving the tcp clause to conj 7 just maps 7->A, 3->B
    moved = list(actual)
    moved[3] = "x priority=200,tcp actions=conjunction(7,2/2)"
    assert canonical_match(moved, ok)[0]
    # but a structural change (clause 1 of conj 3 lost) is not a renaming
    moved[0] = "x priority=200,ip actions=conjunction(7,1/2),conjunction(7,1/2)"
    assert not canonical_match(moved, ok)[0]
    assert not canonical_match(actual[:3], ok)[0]
    # ids are decimal in conj_id=/conjunction( and hex in load: (§5.3)
    decimal_load = list(actual)
    decimal_load[1] = "x priority=190,conj_id=7,ip actions=load:7->NXM_NX_REG6[],resubmit(,105)"
    assert not canonical_match(decimal_load, ok)[0]


# ============================================================================== §9.2 group names


def test_group_names_of_spec_examples() -> None:
    """§9.2 verified examples, through normalize() and group_name()."""
    dns = LabelSelector(match_labels=(("k8s-app", "kube-dns"),))
    assert normalize("kube-system", dns, None) == "namespace=kube-system And podSelector=k8s-app=kube-dns"
    assert group_name(normalize("kube-system", dns, None)) == "160ea6d7-0234-5d1d-8ea0-b703d0aa3b46"
    fe = LabelSelector(match_labels=(("role", "frontend"),))
    be = LabelSelector(match_labels=(("role", "backend"),))
    assert group_name(normalize("default", fe, None)) == "b421488d-0bd0-52b2-9f10-df327e3bad32"
    assert group_name(normalize("default", be, None)) == "42008407-e0c9-518d-899d-27f872c89fc6"
    assert gname("namespace=default And podSelector=role=frontend") == "b421488d-0bd0-52b2-9f10-df327e3bad32"


def test_normalized_selector_strings() -> None:
    """§9.2: items sorted and joined with ' And '; K8s selector string form; {} renders as ''."""
    sel = LabelSelector(
        match_labels=(("tier", "fe"),),
        match_expressions=(
            LabelSelectorRequirement("env", "In", ("prod", "dev")),
            LabelSelectorRequirement("canary", "DoesNotExist"),
            LabelSelectorRequirement("app", "Exists"),
            LabelSelectorRequirement("zone", "NotIn", ("b", "a")),
        ),
    )
    assert str(sel) == "app,!canary,env in (dev,prod),tier=fe,zone notin (a,b)"
    assert normalize(None, None, LabelSelector()) == "namespaceSelector="
    assert normalize(None, LabelSelector(), LabelSelector()) == "namespaceSelector= And podSelector="
    assert normalize("default", LabelSelector(), None) == "namespace=default And podSelector="
    # the namespace selector wins over the policy namespace (the group is not scoped to it)
    env = LabelSelector(match_labels=(("env", "prod"),))
    assert normalize("default", None, env) == "namespaceSelector=env=prod"


# ============================================================================== 1. selectors


WEB_FROM = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web-from, namespace: default}}
spec:
  podSelector: {{matchLabels: {{role: web}}}}
  ingress:
  - from:
{peers}
"""


def web_from(peers: str) -> str:
    return WEB_FROM.format(peers=peers)


def test_pod_selector_peer(make_cluster) -> None:
    oc = make_cluster(*BASE, web_from("    - podSelector: {matchLabels: {role: client}}"))
    st = oc.policy_state
    # groups (§9.1, §9.3): one AppliedToGroup, one AddressGroup scoped to the policy namespace
    assert set(st.applied_to_groups) == {gname(WEB_ATG)}
    assert set(st.address_groups) == {gname(CLIENT_SEL)}
    assert atg_members(oc, WEB_ATG) == (
        {("default/web1", "n1"), ("default/web2", "n1"), ("default/web3", "n2")}, ("n1", "n2"))
    # prod/pclient and dev/dclient also have role=client, but a bare podSelector is namespace-scoped
    assert ag_members(oc, CLIENT_SEL) == ({("default/client", "10.222.1.12")}, ("n1", "n2"))
    pol = st.policies["default/web-from"]
    assert pol.applied_to_groups == (gname(WEB_ATG),)
    assert tuple(sorted(pol.span)) == ("n1", "n2")
    assert [rule_summary(r) for r in pol.rules] == [("In", (gname(CLIENT_SEL),), (), None)]
    # what each agent receives (§9.4): the AppliedToGroup holds only that node's Pods
    v1, v2 = st.node_view("n1"), st.node_view("n2")
    assert {m.key for m in v1.applied_to_groups[gname(WEB_ATG)].pods} == {"default/web1", "default/web2"}
    assert {m.key for m in v2.applied_to_groups[gname(WEB_ATG)].pods} == {"default/web3"}
    assert {m.key for m in v2.address_groups[gname(CLIENT_SEL)].pods} == {"default/client"}
    # flows (§8.3/§8.4): From = member IPs, To = local ofports, no service clause -> n = 2
    assert_policy_flows(oc, "n1", [
        ing("ip,nw_src=10.222.1.12", c("A", 1, 2)),
        ing("ip,reg1=0xa", c("A", 2, 2)),
        ing("ip,reg1=0xb", c("A", 2, 2)),
        ing_action("A"),
        ing_drop(10), ing_drop(11),
    ])
    assert_policy_flows(oc, "n2", [
        ing("ip,nw_src=10.222.1.12", c("A", 1, 2)),
        ing("ip,reg1=0x1e", c("A", 2, 2)),
        ing_action("A"),
        ing_drop(30),
    ])


def test_namespace_selector_peer_uses_namespace_labels(make_cluster) -> None:
    oc = make_cluster(*BASE, web_from("    - namespaceSelector: {matchLabels: {env: prod}}"))
    sel = "namespaceSelector=env=prod"
    assert set(oc.policy_state.address_groups) == {gname(sel)}
    # every Pod of every namespace labelled env=prod: not dev (env=dev), not default (no labels)
    assert ag_members(oc, sel) == ({("prod/pclient", "10.222.1.20"), ("prod/pdb", "10.222.2.21")}, ("n1", "n2"))
    rules = oc.policy_state.policies["default/web-from"].rules
    assert [rule_summary(r) for r in rules] == [("In", (gname(sel),), (), None)]
    assert_policy_flows(oc, "n1", [
        ing("ip,nw_src=10.222.1.20", c("A", 1, 2)),
        ing("ip,nw_src=10.222.2.21", c("A", 1, 2)),
        ing("ip,reg1=0xa", c("A", 2, 2)),
        ing("ip,reg1=0xb", c("A", 2, 2)),
        ing_action("A"),
        ing_drop(10), ing_drop(11),
    ])


def test_namespace_and_pod_selector_in_one_peer_is_and(make_cluster) -> None:
    oc = make_cluster(*BASE, web_from(
        "    - namespaceSelector: {matchLabels: {env: prod}}\n"
        "      podSelector: {matchLabels: {role: client}}"))
    sel = "namespaceSelector=env=prod And podSelector=role=client"
    assert set(oc.policy_state.address_groups) == {gname(sel)}
    # role=client AND in a namespace labelled env=prod: only prod/pclient
    assert ag_members(oc, sel) == ({("prod/pclient", "10.222.1.20")}, ("n1", "n2"))
    assert [rule_summary(r) for r in oc.policy_state.policies["default/web-from"].rules] == [
        ("In", (gname(sel),), (), None)]
    assert_policy_flows(oc, "n2", [
        ing("ip,nw_src=10.222.1.20", c("A", 1, 2)),
        ing("ip,reg1=0x1e", c("A", 2, 2)),
        ing_action("A"),
        ing_drop(30),
    ])


def test_two_peers_are_or(make_cluster) -> None:
    oc = make_cluster(*BASE, web_from(
        "    - namespaceSelector: {matchLabels: {env: prod}}\n"
        "    - podSelector: {matchLabels: {role: client}}"))
    ns_sel = "namespaceSelector=env=prod"
    assert set(oc.policy_state.address_groups) == {gname(ns_sel), gname(CLIENT_SEL)}
    assert ag_members(oc, ns_sel)[0] == {("prod/pclient", "10.222.1.20"), ("prod/pdb", "10.222.2.21")}
    assert ag_members(oc, CLIENT_SEL)[0] == {("default/client", "10.222.1.12")}
    assert [rule_summary(r) for r in oc.policy_state.policies["default/web-from"].rules] == [
        ("In", tuple(sorted((gname(ns_sel), gname(CLIENT_SEL)))), (), None)]
    assert_policy_flows(oc, "n2", [
        ing("ip,nw_src=10.222.1.12", c("A", 1, 2)),
        ing("ip,nw_src=10.222.1.20", c("A", 1, 2)),
        ing("ip,nw_src=10.222.2.21", c("A", 1, 2)),
        ing("ip,reg1=0x1e", c("A", 2, 2)),
        ing_action("A"),
        ing_drop(30),
    ])


def test_namespace_selector_expressions_and_empty_namespace_selector(make_cluster) -> None:
    oc = make_cluster(*BASE, web_from(
        "    - namespaceSelector: {matchExpressions: [{key: env, operator: In, values: [prod, dev]}]}\n"
        "      podSelector: {matchLabels: {role: client}}\n"
        "    - namespaceSelector: {}\n"
        "      podSelector: {matchLabels: {app: db}}"))
    expr = "namespaceSelector=env in (dev,prod) And podSelector=role=client"
    anyns = "namespaceSelector= And podSelector=app=db"
    assert set(oc.policy_state.address_groups) == {gname(expr), gname(anyns)}
    assert ag_members(oc, expr)[0] == {("prod/pclient", "10.222.1.20"), ("dev/dclient", "10.222.2.22")}
    assert ag_members(oc, anyns)[0] == {("prod/pdb", "10.222.2.21")}
    assert_policy_flows(oc, "n1", [
        ing("ip,nw_src=10.222.1.20", c("A", 1, 2)),
        ing("ip,nw_src=10.222.2.22", c("A", 1, 2)),
        ing("ip,nw_src=10.222.2.21", c("A", 1, 2)),
        ing("ip,reg1=0xa", c("A", 2, 2)),
        ing("ip,reg1=0xb", c("A", 2, 2)),
        ing_action("A"),
        ing_drop(10), ing_drop(11),
    ])


def test_peer_selecting_nobody_isolates(make_cluster) -> None:
    oc = make_cluster(*BASE, web_from("    - podSelector: {matchLabels: {role: nobody}}"))
    sel = "namespace=default And podSelector=role=nobody"
    assert ag_members(oc, sel) == (set(), ("n1", "n2"))
    # empty From clause: nothing installed for it, the conjunction cannot complete (§8.4)
    assert_policy_flows(oc, "n1", [
        ing("ip,reg1=0xa", c("A", 2, 2)),
        ing("ip,reg1=0xb", c("A", 2, 2)),
        ing_action("A"),
        ing_drop(10), ing_drop(11),
    ])


def test_ipblock_and_same_pod_ip_share_one_match_flow(make_cluster) -> None:
    """§8.4: a single IP and the same IP as /32 are the same match key."""
    oc = make_cluster(*BASE, web_from(
        "    - podSelector: {matchLabels: {role: client}}\n"
        "    - ipBlock: {cidr: 10.222.1.12/32}"))
    assert [rule_summary(r) for r in oc.policy_state.policies["default/web-from"].rules] == [
        ("In", (gname(CLIENT_SEL),), (("10.222.1.12/32", ()),), None)]
    assert_policy_flows(oc, "n2", [
        ing("ip,nw_src=10.222.1.12", c("A", 1, 2)),
        ing("ip,reg1=0x1e", c("A", 2, 2)),
        ing_action("A"),
        ing_drop(30),
    ])


def test_pod_selector_expressions(make_cluster) -> None:
    """Set-based selectors (In/NotIn/Exists/DoesNotExist) select as Kubernetes does (NotIn and
    DoesNotExist match Pods without the key) and render in the K8s string form (§9.2)."""
    nolabel = """
        apiVersion: v1
        kind: Pod
        metadata: {name: nolabel, namespace: default}
        spec: {nodeName: n1, containers: [{name: app}]}
        status: {podIP: 10.222.1.14}
        """
    oc = make_cluster(*BASE, nolabel, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: not-web, namespace: default}
        spec:
          podSelector: {matchExpressions: [{key: role, operator: NotIn, values: [web]}]}
          ingress:
          - from:
            - podSelector: {matchExpressions: [{key: role, operator: Exists}]}
            - podSelector: {matchExpressions: [{key: role, operator: DoesNotExist}]}
        """)
    target = "namespace=default And podSelector=role notin (web)"
    has_role = "namespace=default And podSelector=role"
    no_role = "namespace=default And podSelector=!role"
    assert atg_members(oc, target) == ({("default/client", "n1"), ("default/nolabel", "n1")}, ("n1",))
    assert ag_members(oc, has_role)[0] == {("default/web1", "10.222.1.10"), ("default/web2", "10.222.1.11"),
                                           ("default/client", "10.222.1.12"), ("default/web3", "10.222.2.10")}
    assert ag_members(oc, no_role)[0] == {("default/nolabel", "10.222.1.14")}
    p_nolabel = oc.cluster.interface_of("default", "nolabel").ofport
    assert_policy_flows(oc, "n1", [
        *(ing(f"ip,nw_src={ip}", c("A", 1, 2))
          for ip in ("10.222.1.10", "10.222.1.11", "10.222.1.12", "10.222.2.10", "10.222.1.14")),
        ing("ip,reg1=0xc", c("A", 2, 2)),
        ing(f"ip,reg1={p_nolabel:#x}", c("A", 2, 2)),
        ing_action("A"),
        ing_drop(12), ing_drop(p_nolabel),
    ])
    assert table_lines(oc, "n2") == []


def test_same_rule_in_two_policies_is_two_rules(make_cluster) -> None:
    """§8.2: identical rules in different policies are different rules (the policy UID is part of
    the content): two conj_ids sharing every match flow."""
    oc = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: a, namespace: default}
        spec:
          podSelector: {matchLabels: {role: web}}
          ingress: [{ports: [{port: 80}]}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: b, namespace: default}
        spec:
          podSelector: {matchLabels: {role: web}}
          ingress: [{ports: [{port: 80}]}]
        """)
    assert_policy_flows(oc, "n2", [
        ing("ip", c("A", 1, 3), c("B", 1, 3)),
        ing("ip,reg1=0x1e", c("A", 2, 3), c("B", 2, 3)),
        ing("tcp,tp_dst=80", c("A", 3, 3), c("B", 3, 3)),
        ing_action("A"), ing_action("B"),
        ing_drop(30),
    ])


def test_identical_rules_in_one_policy_are_one_rule(make_cluster) -> None:
    oc = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: twice, namespace: default}
        spec:
          podSelector: {matchLabels: {role: web}}
          ingress:
          - ports: [{port: 80}]
          - ports: [{port: 80}]
        """)
    assert_policy_flows(oc, "n2", [
        ing("ip", c("A", 1, 3)),
        ing("ip,reg1=0x1e", c("A", 2, 3)),
        ing("tcp,tp_dst=80", c("A", 3, 3)),
        ing_action("A"),
        ing_drop(30),
    ])


# ============================================================================== 2. ipBlock / except

SPEC_EXCEPT_PIECES = ["10.0.128.0/17", "10.0.64.0/18", "10.0.32.0/19", "10.0.16.0/20", "10.0.8.0/21",
                      "10.0.4.0/22", "10.0.2.0/23", "10.0.0.0/24"]


def test_ipblock_except_spec_example(make_cluster) -> None:
    """§8.6: 10.0.0.0/16 except 10.0.1.0/24 -> 8 match flows `ip,nw_dst=…` (egress "to")."""
    oc = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: client-to-cidr, namespace: default}
        spec:
          podSelector: {matchLabels: {role: client}}
          policyTypes: [Egress]
          egress:
          - to:
            - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}
        """)
    st = oc.policy_state
    assert st.address_groups == {}
    assert atg_members(oc, CLIENT_SEL) == ({("default/client", "n1")}, ("n1",))
    assert [rule_summary(r) for r in st.policies["default/client-to-cidr"].rules] == [
        ("Out", (), (("10.0.0.0/16", ("10.0.1.0/24",)),), None)]
    assert sorted(ipblock_cidrs(cp.IPBlock("10.0.0.0/16", ("10.0.1.0/24",)))) == sorted(SPEC_EXCEPT_PIECES)
    assert_policy_flows(oc, "n1", [
        egr("ip,nw_src=10.222.1.12", c("A", 1, 2)),
        *[egr(f"ip,nw_dst={p}", c("A", 2, 2)) for p in SPEC_EXCEPT_PIECES],
        egr_action("A"),
        egr_drop("10.222.1.12"),
    ])
    assert sum(" priority=200,ip,nw_dst=" in x for x in table_lines(oc, "n1")) == 8
    assert table_lines(oc, "n2") == []  # the policy does not span n2


def test_ipblock_all_except_private_range(make_cluster) -> None:
    """0.0.0.0/0 except 10.0.0.0/8: `ip` disappears, eight pieces /1 … /8 (0.0.0.0/5 is printed)."""
    oc = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: internet-only, namespace: default}
        spec:
          podSelector: {matchLabels: {role: client}}
          policyTypes: [Egress]
          egress:
          - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]
            ports: [{protocol: UDP, port: 53}, {protocol: UDP, port: 53}]
        """)
    pieces = ["128.0.0.0/1", "64.0.0.0/2", "32.0.0.0/3", "16.0.0.0/4", "0.0.0.0/5", "12.0.0.0/6",
              "8.0.0.0/7", "11.0.0.0/8"]
    assert_policy_flows(oc, "n1", [
        egr("ip,nw_src=10.222.1.12", c("A", 1, 3)),
        *(egr(f"ip,nw_dst={p}", c("A", 2, 3)) for p in pieces),
        egr("udp,tp_dst=53", c("A", 3, 3)),  # a duplicated port is one flow, one action
        egr_action("A"),
        egr_drop("10.222.1.12"),
    ])


NESTED_PIECES = [
    # 192.168.0.0/16 minus 192.168.1.0/24 (§8.6 complement pieces, /17 … /24) …
    "192.168.64.0/18", "192.168.32.0/19", "192.168.16.0/20", "192.168.8.0/21", "192.168.4.0/22",
    "192.168.2.0/23", "192.168.0.0/24",
    # … then 192.168.128.0/17 (which holds 192.168.200.0) minus 192.168.200.0/24, /18 … /24
    "192.168.128.0/18", "192.168.224.0/19", "192.168.208.0/20", "192.168.192.0/21", "192.168.204.0/22",
    "192.168.202.0/23", "192.168.201.0/24",
]


def test_ipblock_except_nested_and_duplicate(make_cluster) -> None:
    """§8.6 step 1: a nested except (…1.128/25 inside …1.0/24) and a duplicate are dropped."""
    oc = make_cluster(*BASE, web_from(
        "    - ipBlock:\n"
        "        cidr: 192.168.0.0/16\n"
        "        except: [192.168.1.128/25, 192.168.1.0/24, 192.168.200.0/24, 192.168.1.0/24]"))
    block = cp.IPBlock("192.168.0.0/16", ("192.168.1.128/25", "192.168.1.0/24", "192.168.200.0/24",
                                          "192.168.1.0/24"))
    got = ipblock_cidrs(block)
    assert len(got) == len(set(got)) == 14
    assert set(got) == set(NESTED_PIECES) == _maximal_blocks("192.168.0.0/16", block.except_)
    rules = oc.policy_state.policies["default/web-from"].rules
    assert [rule_summary(r) for r in rules] == [("In", (), (("192.168.0.0/16", block.except_),), None)]
    assert_policy_flows(oc, "n1", [
        *[ing(f"ip,nw_src={p}", c("A", 1, 2)) for p in NESTED_PIECES],
        ing("ip,reg1=0xa", c("A", 2, 2)),
        ing("ip,reg1=0xb", c("A", 2, 2)),
        ing_action("A"),
        ing_drop(10), ing_drop(11),
    ])


def _maximal_blocks(cidr: str, excepts: Iterable[str]) -> set[str]:
    """Oracle: the address set cidr minus excepts, split into its maximal aligned blocks."""
    net = ipaddress.IPv4Network(cidr)
    ex = [ipaddress.IPv4Network(e) for e in excepts]

    def rec(n: ipaddress.IPv4Network) -> list[ipaddress.IPv4Network]:
        if not any(n.overlaps(e) for e in ex):
            return [n]
        if any(n.subnet_of(e) for e in ex):
            return []
        return [b for half in n.subnets(1) for b in rec(half)]

    return {str(b) for b in rec(net)}


def test_ipblock_cidrs_against_oracle() -> None:
    """Random except lists (nested, duplicate, sibling excepts): exactly the maximal aligned blocks."""
    rnd = random.Random(20201)
    for _ in range(300):
        base_len = rnd.randint(8, 24)
        base = ipaddress.IPv4Network((rnd.getrandbits(32) & (0xFFFFFFFF << (32 - base_len)) & 0xFFFFFFFF,
                                      base_len))
        excepts = []
        for _ in range(rnd.randint(0, 6)):
            plen = rnd.randint(base_len + 1, min(32, base_len + 8))
            sub = rnd.choice(list(itertools.islice(base.subnets(new_prefix=plen), 0, 256)))
            excepts.append(str(sub))
        if excepts and rnd.random() < 0.3:
            excepts.append(rnd.choice(excepts))  # duplicate
        got = ipblock_cidrs(cp.IPBlock(str(base), tuple(excepts)))
        assert len(got) == len(set(got)), (base, excepts, got)
        assert set(got) == _maximal_blocks(str(base), excepts), (base, excepts)


# ============================================================================== 3. ports


def test_ports_tcp_udp_sctp_default_protocol_and_bare_protocol(make_cluster) -> None:
    oc = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web-ports, namespace: default}
        spec:
          podSelector: {matchLabels: {role: web}}
          ingress:
          - ports:
            - {protocol: TCP, port: 80}
            - {protocol: UDP, port: 53}
            - {protocol: SCTP, port: 9000}
            - {port: 443}
          - ports:
            - {protocol: TCP}
        """)
    rules = oc.policy_state.policies["default/web-ports"].rules
    assert [rule_summary(r) for r in rules] == [
        ("In", (), (ALL,), (("TCP", 80, None), ("UDP", 53, None), ("SCTP", 9000, None), ("TCP", 443, None))),
        ("In", (), (ALL,), (("TCP", None, None),)),
    ]
    assert oc.policy_state.address_groups == {}
    assert_policy_flows(oc, "n1", [
        ing("ip", c("A", 1, 3), c("B", 1, 3)),
        ing("ip,reg1=0xa", c("A", 2, 3), c("B", 2, 3)),
        ing("ip,reg1=0xb", c("A", 2, 3), c("B", 2, 3)),
        ing("tcp,tp_dst=80", c("A", 3, 3)),
        ing("udp,tp_dst=53", c("A", 3, 3)),
        ing("sctp,tp_dst=9000", c("A", 3, 3)),
        ing("tcp,tp_dst=443", c("A", 3, 3)),
        ing("tcp", c("B", 3, 3)),
        ing_action("A"), ing_action("B"),
        ing_drop(10), ing_drop(11),
    ])


def test_policy_types_default_with_egress_rules_only(make_cluster) -> None:
    """§9.1: policyTypes omitted + egress rules -> Ingress AND Egress: ingress becomes deny-all.
    Also an egress service with a protocol and no port (`sctp`), to anywhere (`ip`)."""
    oc = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: client-sctp-out, namespace: default}
        spec:
          podSelector: {matchLabels: {role: client}}
          egress:
          - ports: [{protocol: SCTP}]
        """)
    rules = oc.policy_state.policies["default/client-sctp-out"].rules
    # all ingress rules first (the appended deny-all), then the egress rules
    assert [rule_summary(r) for r in rules] == [
        ("In", (), (), None),
        ("Out", (), (ALL,), (("SCTP", None, None),)),
    ]
    assert_policy_flows(oc, "n1", [
        egr("ip,nw_src=10.222.1.12", c("E", 1, 3)),
        egr("ip", c("E", 2, 3)),
        egr("sctp", c("E", 3, 3)),
        egr_action("E"),
        egr_drop("10.222.1.12"),
        ing("ip,reg1=0xc", c("I", 2, 2)),
        ing_action("I"),
        ing_drop(12),
    ])


def test_no_rules_no_policy_types_isolates_ingress_only(make_cluster) -> None:
    oc = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web-deny, namespace: default}
        spec:
          podSelector: {matchLabels: {role: web}}
        """)
    rules = oc.policy_state.policies["default/web-deny"].rules
    assert [rule_summary(r) for r in rules] == [("In", (), (), None)]
    # deny-all ingress: From = empty set (no flow), To = ofports, n = 2 (§8.3, §8.4)
    assert_policy_flows(oc, "n1", [
        ing("ip,reg1=0xa", c("A", 2, 2)),
        ing("ip,reg1=0xb", c("A", 2, 2)),
        ing_action("A"),
        ing_drop(10), ing_drop(11),
    ])
    assert_policy_flows(oc, "n2", [ing("ip,reg1=0x1e", c("A", 2, 2)), ing_action("A"), ing_drop(30)])
    assert table_lines(oc, "n1", (50, 60)) == []


# ============================================================================== 7. empty rule lists


def test_deny_all_egress_has_a_single_clause_1_of_2(make_cluster) -> None:
    """§8.3/§15: deny-all egress = From (pod IPs) only, `conjunction(id,1/2)`; drop in table 60."""
    oc = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web-no-egress, namespace: default}
        spec:
          podSelector: {matchLabels: {role: web}}
          policyTypes: [Egress]
        """)
    rules = oc.policy_state.policies["default/web-no-egress"].rules
    assert [rule_summary(r) for r in rules] == [("Out", (), (), None)]
    assert_policy_flows(oc, "n1", [
        egr("ip,nw_src=10.222.1.10", c("A", 1, 2)),
        egr("ip,nw_src=10.222.1.11", c("A", 1, 2)),
        egr_action("A"),
        egr_drop("10.222.1.10"), egr_drop("10.222.1.11"),
    ])
    assert table_lines(oc, "n1", (90, 100)) == []  # policyTypes has no Ingress


def test_deny_all_ingress_explicit_and_allow_all_rule(make_cluster) -> None:
    """`policyTypes: [Ingress]` without rules isolates; an ingress rule `{}` allows everything."""
    deny = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny, namespace: default}
        spec:
          podSelector: {matchLabels: {role: client}}
          policyTypes: [Ingress]
          ingress: []
        """)
    # `from: []` is the same as no `from` (§9.1: empty peer list -> 0.0.0.0/0)
    allow_empty_from = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: allow, namespace: default}
        spec:
          podSelector: {matchLabels: {role: client}}
          ingress: [{from: []}]
        """)
    assert [rule_summary(r) for r in allow_empty_from.policy_state.policies["default/allow"].rules] == [
        ("In", (), (ALL,), None)]
    assert [rule_summary(r) for r in deny.policy_state.policies["default/deny"].rules] == [("In", (), (), None)]
    assert_policy_flows(deny, "n1", [ing("ip,reg1=0xc", c("A", 2, 2)), ing_action("A"), ing_drop(12)])
    allow = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: allow, namespace: default}
        spec:
          podSelector: {matchLabels: {role: client}}
          ingress: [{}]
        """)
    assert [rule_summary(r) for r in allow.policy_state.policies["default/allow"].rules] == [
        ("In", (), (ALL,), None)]
    assert_policy_flows(allow, "n1", [
        ing("ip", c("A", 1, 2)), ing("ip,reg1=0xc", c("A", 2, 2)), ing_action("A"), ing_drop(12)])


# ============================================================================== 4. named ports


def test_named_port_ingress_groups_pods_by_resolved_number(make_cluster) -> None:
    """§8.3: applied-to Pods with different numbers for `http` -> one OpenFlow rule (conj_id) each;
    Pods with the same number share one. The name is looked up in every container."""
    web4 = WEB0.replace("web0", "web4").replace("10.222.1.13", "10.222.1.14").replace(
        "containers: [{name: app}]", "containers: [{name: app, ports: [{name: http, containerPort: 8080}]}]")
    oc = make_cluster(*BASE, web4, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web-http, namespace: default}
        spec:
          podSelector: {matchLabels: {role: web}}
          ingress:
          - ports: [{port: http}]
        """)
    port4 = oc.cluster.interface_of("default", "web4").ofport
    assert port4 not in (10, 11, 12, 20)
    rules = oc.policy_state.policies["default/web-http"].rules
    assert [rule_summary(r) for r in rules] == [("In", (), (ALL,), (("TCP", "http", None),))]
    # ingress with a named port: no "all Pods" AddressGroup (that is for egress only, §9.1)
    assert oc.policy_state.address_groups == {}
    assert_policy_flows(oc, "n1", [
        ing("ip", c("A", 1, 3), c("B", 1, 3)),
        ing("ip,reg1=0xa", c("A", 2, 3)),
        ing(f"ip,reg1={port4:#x}", c("A", 2, 3)),
        ing("tcp,tp_dst=8080", c("A", 3, 3)),
        ing("ip,reg1=0xb", c("B", 2, 3)),
        ing("tcp,tp_dst=9090", c("B", 3, 3)),
        ing_action("A"), ing_action("B"),
        ing_drop(10), ing_drop(11), ing_drop(port4),
    ])
    assert_policy_flows(oc, "n2", [
        ing("ip", c("A", 1, 3)),
        ing("ip,reg1=0x1e", c("A", 2, 3)),
        ing("tcp,tp_dst=8080", c("A", 3, 3)),
        ing_action("A"),
        ing_drop(30),
    ])
    of_rules = oc.node_flows("n1").rules
    assert len(of_rules) == 2 and len({r.conj_id for r in of_rules}) == 2


def test_named_port_nobody_has_keeps_pods_isolated(make_cluster) -> None:
    """§8.3: the unresolvable name is removed, the (present) service list is empty: no service flow,
    the conjunction can never complete, the Pods stay isolated."""
    oc = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web-nosuch, namespace: default}
        spec:
          podSelector: {matchLabels: {role: web}}
          ingress:
          - ports: [{port: nosuch}]
        """)
    assert_policy_flows(oc, "n1", [
        ing("ip", c("A", 1, 3)),
        ing("ip,reg1=0xa", c("A", 2, 3)),
        ing("ip,reg1=0xb", c("A", 2, 3)),
        ing_action("A"),
        ing_drop(10), ing_drop(11),
    ])
    assert not any("/3)" in x and ",3/3)" in x for x in table_lines(oc, "n1"))


def test_named_port_protocol_must_match_and_partial_resolution(make_cluster) -> None:
    """Name + protocol are looked up together (§8.3): `dns` is UDP 5353 on web1 only; as TCP it
    resolves nowhere. A Pod lacking one of two names keeps the numbered rest of the list."""
    oc = make_cluster(*BASE, WEB0, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web-dns, namespace: default}
        spec:
          podSelector: {matchLabels: {role: web}}
          ingress:
          - ports: [{port: dns}]
          - ports: [{protocol: UDP, port: dns}]
          - ports: [{port: http}, {protocol: UDP, port: 53}]
        """)
    p0 = oc.cluster.interface_of("default", "web0").ofport
    assert_policy_flows(oc, "n1", [
        # rule 1 (TCP dns): nobody -> one group, empty service list
        # rule 2 (UDP dns): web1 -> 5353 (B); web2 and web0 unresolved (C)
        # rule 3 (http + UDP 53): web1 8080 (D), web2 9090 (E), web0 unresolved -> UDP 53 only (F)
        ing("ip", *(c(x, 1, 3) for x in "ABCDEF")),
        ing("ip,reg1=0xa", c("A", 2, 3), c("B", 2, 3), c("D", 2, 3)),
        ing("ip,reg1=0xb", c("A", 2, 3), c("C", 2, 3), c("E", 2, 3)),
        ing(f"ip,reg1={p0:#x}", c("A", 2, 3), c("C", 2, 3), c("F", 2, 3)),
        ing("udp,tp_dst=5353", c("B", 3, 3)),
        ing("tcp,tp_dst=8080", c("D", 3, 3)),
        ing("tcp,tp_dst=9090", c("E", 3, 3)),
        ing("udp,tp_dst=53", c("D", 3, 3), c("E", 3, 3), c("F", 3, 3)),
        *(ing_action(x) for x in "ABCDEF"),
        ing_drop(10), ing_drop(11), ing_drop(p0),
    ])


def test_named_port_egress_groups_destinations(make_cluster) -> None:
    """§8.3 egress: destination members grouped by resolved number; the rule keyed by the original
    services holds the ipBlocks and the members that do not resolve, with the named port removed."""
    oc = make_cluster(*BASE, WEB0, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: client-to-http, namespace: default}
        spec:
          podSelector: {matchLabels: {role: client}}
          policyTypes: [Egress]
          egress:
          - to:
            - podSelector: {matchLabels: {role: web}}
            - ipBlock: {cidr: 172.16.0.0/16}
            ports: [{port: http}]
        """)
    web = "namespace=default And podSelector=role=web"
    assert ag_members(oc, web) == ({("default/web0", "10.222.1.13"), ("default/web1", "10.222.1.10"),
                                    ("default/web2", "10.222.1.11"), ("default/web3", "10.222.2.10")}, ("n1",))
    assert [rule_summary(r) for r in oc.policy_state.policies["default/client-to-http"].rules] == [
        ("Out", (gname(web),), (("172.16.0.0/16", ()),), (("TCP", "http", None),))]
    assert_policy_flows(oc, "n1", [
        egr("ip,nw_src=10.222.1.12", c("A", 1, 3), c("B", 1, 3), c("C", 1, 3)),
        egr("ip,nw_dst=10.222.1.10", c("A", 2, 3)),
        egr("ip,nw_dst=10.222.2.10", c("A", 2, 3)),
        egr("tcp,tp_dst=8080", c("A", 3, 3)),
        egr("ip,nw_dst=10.222.1.11", c("B", 2, 3)),
        egr("tcp,tp_dst=9090", c("B", 3, 3)),
        # the default rule: ipBlock + unresolved web0, service list empty -> never completes
        egr("ip,nw_dst=172.16.0.0/16", c("C", 2, 3)),
        egr("ip,nw_dst=10.222.1.13", c("C", 2, 3)),
        egr_action("A"), egr_action("B"), egr_action("C"),
        egr_drop("10.222.1.12"),
    ])


def test_named_port_egress_to_anywhere_uses_all_pods_group(make_cluster) -> None:
    """§8.3/§9.1: empty `to` + named port -> 0.0.0.0/0 plus the cluster-wide all-Pods AddressGroup
    (namespaceSelector {}), used only to resolve the name."""
    oc = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: client-http-anywhere, namespace: default}
        spec:
          podSelector: {matchLabels: {role: client}}
          policyTypes: [Egress]
          egress:
          - ports: [{port: http}]
        """)
    all_pods = "namespaceSelector="
    assert set(oc.policy_state.address_groups) == {gname(all_pods)}
    assert ag_members(oc, all_pods) == ({
        ("default/web1", "10.222.1.10"), ("default/web2", "10.222.1.11"), ("default/client", "10.222.1.12"),
        ("prod/pclient", "10.222.1.20"), ("default/web3", "10.222.2.10"), ("prod/pdb", "10.222.2.21"),
        ("dev/dclient", "10.222.2.22")}, ("n1",))
    assert [rule_summary(r) for r in oc.policy_state.policies["default/client-http-anywhere"].rules] == [
        ("Out", (gname(all_pods),), (ALL,), (("TCP", "http", None),))]
    assert_policy_flows(oc, "n1", [
        egr("ip,nw_src=10.222.1.12", c("A", 1, 3), c("B", 1, 3), c("C", 1, 3)),
        egr("ip,nw_dst=10.222.1.10", c("A", 2, 3)),
        egr("ip,nw_dst=10.222.2.10", c("A", 2, 3)),
        egr("tcp,tp_dst=8080", c("A", 3, 3)),
        egr("ip,nw_dst=10.222.1.11", c("B", 2, 3)),
        egr("tcp,tp_dst=9090", c("B", 3, 3)),
        egr("ip", c("C", 2, 3)),
        egr("ip,nw_dst=10.222.1.12", c("C", 2, 3)),
        egr("ip,nw_dst=10.222.1.20", c("C", 2, 3)),
        egr("ip,nw_dst=10.222.2.21", c("C", 2, 3)),
        egr("ip,nw_dst=10.222.2.22", c("C", 2, 3)),
        egr_action("A"), egr_action("B"), egr_action("C"),
        egr_drop("10.222.1.12"),
    ])


def test_egress_without_named_ports_is_one_rule(make_cluster) -> None:
    """§8.3: no named port -> the AddressGroup part and the default rule are ONE rule, one conj_id."""
    oc = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: client-to-web, namespace: default}
        spec:
          podSelector: {matchLabels: {role: client}}
          policyTypes: [Egress]
          egress:
          - to:
            - podSelector: {matchLabels: {role: web}}
            - ipBlock: {cidr: 172.16.0.0/16}
            ports: [{protocol: TCP, port: 80}]
          - to:
            - podSelector: {matchLabels: {role: web}}
        """)
    web = "namespace=default And podSelector=role=web"
    assert set(oc.policy_state.address_groups) == {gname(web)}  # shared by both rules
    assert [rule_summary(r) for r in oc.policy_state.policies["default/client-to-web"].rules] == [
        ("Out", (gname(web),), (("172.16.0.0/16", ()),), (("TCP", 80, None),)),
        ("Out", (gname(web),), (), None),
    ]
    assert len(oc.node_flows("n1").rules) == 2
    assert_policy_flows(oc, "n1", [
        egr("ip,nw_src=10.222.1.12", c("A", 1, 3), c("B", 1, 2)),
        egr("ip,nw_dst=10.222.1.10", c("A", 2, 3), c("B", 2, 2)),
        egr("ip,nw_dst=10.222.1.11", c("A", 2, 3), c("B", 2, 2)),
        egr("ip,nw_dst=10.222.2.10", c("A", 2, 3), c("B", 2, 2)),
        egr("ip,nw_dst=172.16.0.0/16", c("A", 2, 3)),
        egr("tcp,tp_dst=80", c("A", 3, 3)),
        egr_action("A"), egr_action("B"),
        egr_drop("10.222.1.12"),
    ])


# ============================================================================== 5. endPort


def test_end_port_ranges(make_cluster) -> None:
    """§8.7: 8000–8031 -> one masked match; 80–90 split greedily from the low end; a 1-port range
    is the plain form."""
    oc = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web-ranges, namespace: default}
        spec:
          podSelector: {matchLabels: {role: web}}
          ingress:
          - ports:
            - {protocol: TCP, port: 8000, endPort: 8031}
            - {protocol: TCP, port: 80, endPort: 90}
            - {protocol: UDP, port: 443, endPort: 443}
        """)
    assert [rule_summary(r) for r in oc.policy_state.policies["default/web-ranges"].rules] == [
        ("In", (), (ALL,), (("TCP", 8000, 8031), ("TCP", 80, 90), ("UDP", 443, 443)))]
    assert_policy_flows(oc, "n1", [
        ing("ip", c("A", 1, 3)),
        ing("ip,reg1=0xa", c("A", 2, 3)),
        ing("ip,reg1=0xb", c("A", 2, 3)),
        ing("tcp,tp_dst=0x1f40/0xffe0", c("A", 3, 3)),
        ing("tcp,tp_dst=0x50/0xfff8", c("A", 3, 3)),  # 80-87
        ing("tcp,tp_dst=0x58/0xfffe", c("A", 3, 3)),  # 88-89
        ing("tcp,tp_dst=90", c("A", 3, 3)),  # 90 (exact mask prints as a plain number)
        ing("udp,tp_dst=443", c("A", 3, 3)),
        ing_action("A"),
        ing_drop(10), ing_drop(11),
    ])


def _parse_piece(s: str) -> tuple[int, int]:
    if "/" in s:
        v, m = (int(x, 16) for x in s.split("/"))
        assert s == f"{v:#x}/{m:#x}", s
        size = (~m & 0xFFFF) + 1
        assert m == (0xFFFF & ~(size - 1)) and size & (size - 1) == 0 and size > 1, s  # prefix mask
        assert v % size == 0, s  # aligned
        return v, v + size - 1
    assert str(int(s)) == s, s
    return int(s), int(s)


@pytest.mark.parametrize("start,end", [(1, 1), (80, 90), (8000, 8031), (1, 65535), (32768, 65535),
                                       (1023, 1025), (65535, 65535), (6000, 6063)])
def test_port_range_matches_examples(start: int, end: int) -> None:
    _check_range(start, end)


def test_port_range_matches_random() -> None:
    rnd = random.Random(8031)
    for _ in range(500):
        a = rnd.randint(1, 65535)
        b = min(65535, a + rnd.choice([0, 1, 2, 7, 31, 100, 1000, 40000]))
        _check_range(a, b)


def _check_range(start: int, end: int) -> None:
    pieces = [_parse_piece(p) for p in port_range_matches(start, end)]
    if start == end:
        assert port_range_matches(start, end) == [str(start)]
    # exact cover, in order, no overlap
    cur = start
    for lo, hi in pieces:
        assert lo == cur, (start, end, pieces)
        # greedy: the largest aligned power-of-two block starting at lo that does not pass end
        size = 1
        while lo % (size * 2) == 0 and lo + size * 2 - 1 <= end:
            size *= 2
        assert hi - lo + 1 == size, (start, end, lo, hi)
        cur = hi + 1
    assert cur == end + 1


@pytest.mark.parametrize("port_yaml,needle", [
    ("{protocol: TCP, endPort: 90}", "endPort"),
    ("{protocol: TCP, port: http, endPort: 90}", "endPort"),
    ("{protocol: TCP, port: 100, endPort: 90}", "endPort"),
])
def test_end_port_invalid_is_a_load_error_naming_the_policy(make_cluster, port_yaml: str, needle: str) -> None:
    with pytest.raises(ManifestError) as e:
        make_cluster(*BASE, f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: bad-range, namespace: default}}
spec:
  podSelector: {{}}
  ingress:
  - ports:
    - {port_yaml}
""")
    assert len(e.value.problems) == 1, e.value.problems
    msg = e.value.problems[0]
    assert "NetworkPolicy default/bad-range" in msg and needle in msg, msg


# ============================================================================== 8. union


def test_several_policies_on_one_pod_are_a_union(make_cluster) -> None:
    oc = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: p1-client-80, namespace: default}
        spec:
          podSelector: {matchLabels: {role: web}}
          ingress:
          - from: [{podSelector: {matchLabels: {role: client}}}]
            ports: [{protocol: TCP, port: 80}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: p2-cidr-80, namespace: default}
        spec:
          podSelector: {}
          ingress:
          - from: [{ipBlock: {cidr: 10.10.0.0/16}}]
            ports: [{protocol: TCP, port: 80}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: p3-monitor, namespace: default}
        spec:
          podSelector: {matchLabels: {role: web}}
          ingress:
          - from: [{ipBlock: {cidr: 10.20.0.0/16}}]
        """)
    st = oc.policy_state
    everyone = "namespace=default And podSelector="
    # one AppliedToGroup per distinct selector, shared by p1 and p3 (§9.1)
    assert set(st.applied_to_groups) == {gname(WEB_ATG), gname(everyone)}
    assert st.policies["default/p1-client-80"].applied_to_groups == (gname(WEB_ATG),)
    assert st.policies["default/p3-monitor"].applied_to_groups == (gname(WEB_ATG),)
    assert atg_members(oc, everyone) == ({("default/client", "n1"), ("default/web1", "n1"),
                                          ("default/web2", "n1"), ("default/web3", "n2")}, ("n1", "n2"))
    assert_policy_flows(oc, "n1", [
        ing("ip,nw_src=10.222.1.12", c("A", 1, 3)),
        ing("ip,nw_src=10.10.0.0/16", c("B", 1, 3)),
        ing("ip,nw_src=10.20.0.0/16", c("C", 1, 2)),
        ing("ip,reg1=0xa", c("A", 2, 3), c("B", 2, 3), c("C", 2, 2)),
        ing("ip,reg1=0xb", c("A", 2, 3), c("B", 2, 3), c("C", 2, 2)),
        ing("ip,reg1=0xc", c("B", 2, 3)),
        ing("tcp,tp_dst=80", c("A", 3, 3), c("B", 3, 3)),
        ing_action("A"), ing_action("B"), ing_action("C"),
        ing_drop(10), ing_drop(11), ing_drop(12),  # one drop flow per Pod, however many policies
    ])
    assert_policy_flows(oc, "n2", [
        ing("ip,nw_src=10.222.1.12", c("A", 1, 3)),
        ing("ip,nw_src=10.10.0.0/16", c("B", 1, 3)),
        ing("ip,nw_src=10.20.0.0/16", c("C", 1, 2)),
        ing("ip,reg1=0x1e", c("A", 2, 3), c("B", 2, 3), c("C", 2, 2)),
        ing("tcp,tp_dst=80", c("A", 3, 3), c("B", 3, 3)),
        ing_action("A"), ing_action("B"), ing_action("C"),
        ing_drop(30),
    ])


# ============================================================================== 9. membership, span


def test_hostnetwork_and_terminated_pods_are_in_no_group(make_cluster) -> None:
    extra = """
        apiVersion: v1
        kind: Pod
        metadata: {name: hostweb, namespace: default, labels: {role: web}}
        spec: {nodeName: n1, hostNetwork: true, containers: [{name: app}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: hostclient, namespace: default, labels: {role: client}}
        spec: {nodeName: n2, hostNetwork: true, containers: [{name: app}]}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: doneweb, namespace: default, labels: {role: web}}
        spec: {nodeName: n1, containers: [{name: app}]}
        status: {phase: Succeeded, podIP: 10.222.1.50}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: failclient, namespace: default, labels: {role: client}}
        spec: {nodeName: n2, containers: [{name: app}]}
        status: {phase: Failed, podIP: 10.222.2.50}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: hostonly, namespace: default, labels: {role: hostonly}}
        spec: {nodeName: n1, hostNetwork: true, containers: [{name: app}]}
        """
    oc = make_cluster(*BASE, extra, web_from("    - podSelector: {matchLabels: {role: client}}"), """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: hostonly, namespace: default}
        spec:
          podSelector: {matchLabels: {role: hostonly}}
          ingress:
          - from: [{podSelector: {matchLabels: {role: web}}}]
        """)
    for name in ("hostweb", "hostclient", "doneweb", "failclient", "hostonly"):
        assert oc.cluster.interface_of("default", name) is None, name
    assert atg_members(oc, WEB_ATG) == (
        {("default/web1", "n1"), ("default/web2", "n1"), ("default/web3", "n2")}, ("n1", "n2"))
    assert ag_members(oc, CLIENT_SEL) == ({("default/client", "10.222.1.12")}, ("n1", "n2"))
    # a policy that selects only a hostNetwork Pod: empty group, empty span, on no node
    only = "namespace=default And podSelector=role=hostonly"
    assert atg_members(oc, only) == (set(), ())
    assert oc.policy_state.policies["default/hostonly"].span == ()
    assert ag_members(oc, WEB_ATG) == ({("default/web1", "10.222.1.10"), ("default/web2", "10.222.1.11"),
                                        ("default/web3", "10.222.2.10")}, ())
    for node in ("n1", "n2"):
        assert [p.key for p in oc.policy_state.node_view(node).policies] == ["default/web-from"]
    # the flows are exactly those without the extra Pods (no Node IP, no terminated IP)
    assert_policy_flows(oc, "n1", [
        ing("ip,nw_src=10.222.1.12", c("A", 1, 2)),
        ing("ip,reg1=0xa", c("A", 2, 2)),
        ing("ip,reg1=0xb", c("A", 2, 2)),
        ing_action("A"),
        ing_drop(10), ing_drop(11),
    ])
    assert_policy_flows(oc, "n2", [
        ing("ip,nw_src=10.222.1.12", c("A", 1, 2)),
        ing("ip,reg1=0x1e", c("A", 2, 2)),
        ing_action("A"),
        ing_drop(30),
    ])


def test_membership_rules_on_pod_values() -> None:
    """§9.3 on hand-made Pods (a folder cannot leave a Pod without IP or node: completion fills them):
    AppliedToGroup = scheduled, not hostNetwork, not terminated; AddressGroup = with an IP, not
    hostNetwork, not terminated."""
    x = (("role", "x"),)
    pods = [
        Pod("default", "noip", labels=x, node_name="n1", pod_ip=None),
        Pod("default", "unscheduled", labels=x, node_name=None, pod_ip="10.1.1.1"),
        Pod("default", "hostnet", labels=x, node_name="n1", pod_ip="10.79.1.201", host_network=True),
        Pod("default", "succeeded", labels=x, node_name="n1", pod_ip="10.1.1.4", phase="Succeeded"),
        Pod("default", "failed", labels=x, node_name="n2", pod_ip="10.1.1.5", phase="Failed"),
        Pod("default", "pending", labels=x, node_name="n2", pod_ip="10.1.1.6", phase="Pending"),
        Pod("default", "ok", labels=x, node_name="n2", pod_ip="10.1.1.3"),
        Pod("other", "ok", labels=x, node_name="n1", pod_ip="10.1.1.7"),
    ]
    sel = LabelSelector(match_labels=x)
    np = NetworkPolicy("default", "x", pod_selector=sel,
                       ingress=(NetworkPolicyRule(peers=(NetworkPolicyPeer(pod_selector=sel),)),))
    st = NetworkPolicyController(pods, [Namespace("default"), Namespace("other")], [np]).compute()
    name = gname("namespace=default And podSelector=role=x")
    atg = st.applied_to_groups[name]
    ag = st.address_groups[name]
    assert {(m.key, m.node) for m in atg.pods} == {
        ("default/noip", "n1"), ("default/pending", "n2"), ("default/ok", "n2")}
    assert tuple(atg.span) == ("n1", "n2")
    assert {(m.key, m.ip) for m in ag.pods} == {
        ("default/unscheduled", "10.1.1.1"), ("default/pending", "10.1.1.6"), ("default/ok", "10.1.1.3")}
    assert tuple(ag.span) == ("n1", "n2")
    assert tuple(st.policies["default/x"].span) == ("n1", "n2")


def test_span_policy_only_on_the_nodes_of_its_pods(make_cluster) -> None:
    """§9.3/§9.4: a policy whose selected Pods all run on n2 sends nothing to n1; an AddressGroup
    spans the union of the spans of the policies that use it."""
    oc = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: db-from-dev, namespace: prod}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress:
          - from: [{namespaceSelector: {matchLabels: {env: dev}}}]
        """)
    st = oc.policy_state
    db = "namespace=prod And podSelector=app=db"
    dev = "namespaceSelector=env=dev"
    assert atg_members(oc, db) == ({("prod/pdb", "n2")}, ("n2",))
    assert ag_members(oc, dev) == ({("dev/dclient", "10.222.2.22")}, ("n2",))
    assert tuple(st.policies["prod/db-from-dev"].span) == ("n2",)
    v1 = st.node_view("n1")
    assert v1.policies == () and v1.applied_to_groups == {} and v1.address_groups == {}
    assert table_lines(oc, "n1") == []
    assert_policy_flows(oc, "n2", [
        ing("ip,nw_src=10.222.2.22", c("A", 1, 2)),
        ing("ip,reg1=0x15", c("A", 2, 2)),
        ing_action("A"),
        ing_drop(21),
    ])
    # a second policy on n1 using the same AddressGroup widens its span
    oc2 = make_cluster(*BASE, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: db-from-dev, namespace: prod}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress:
          - from: [{namespaceSelector: {matchLabels: {env: dev}}}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: client-from-dev, namespace: default}
        spec:
          podSelector: {matchLabels: {role: client}}
          ingress:
          - from: [{namespaceSelector: {matchLabels: {env: dev}}}]
        """)
    assert ag_members(oc2, dev) == ({("dev/dclient", "10.222.2.22")}, ("n1", "n2"))
    assert [p.key for p in oc2.policy_state.node_view("n1").policies] == ["default/client-from-dev"]
    assert_policy_flows(oc2, "n1", [
        ing("ip,nw_src=10.222.2.22", c("A", 1, 2)),
        ing("ip,reg1=0xc", c("A", 2, 2)),
        ing_action("A"),
        ing_drop(12),
    ])


def test_fixed_flows_of_the_policy_tables(make_cluster) -> None:
    """§6.7/6.8/6.12/6.13 (ART): what these tables hold with no policy at all."""
    oc = make_cluster(*BASE)
    assert table_lines(oc, "n1", fixed=True) == [
        "cookie=0x1000000000000, table=50, priority=210,ct_state=-new+est,ip actions=resubmit(,70)",
        "cookie=0x1000000000000, table=50, priority=0 actions=resubmit(,60)",
        "cookie=0x1000000000000, table=60, priority=0 actions=resubmit(,70)",
        "cookie=0x1000000000000, table=90, priority=210,ct_state=-new+est,ip actions=resubmit(,105)",
        "cookie=0x1000000000000, table=90, priority=210,ip,nw_src=10.222.1.1 actions=resubmit(,105)",
        "cookie=0x1000000000000, table=90, priority=0 actions=resubmit(,100)",
        "cookie=0x1000000000000, table=100, priority=0 actions=resubmit(,105)",
    ]


def test_selected_pod_without_interface_gets_no_drop_flow(make_cluster) -> None:
    """§9.3: a Node whose only selected Pod has no interface yet still gets the action flow and the
    match flows of the non-empty clauses, but no drop flow (ingress and egress)."""
    oc = make_cluster(*BASE, web_from("    - podSelector: {matchLabels: {role: client}}"), """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web-out, namespace: default}
        spec:
          podSelector: {matchLabels: {role: web}}
          policyTypes: [Egress]
          egress:
          - to: [{ipBlock: {cidr: 172.16.0.0/16}}]
        """)
    view = oc.policy_state.node_view("n2")
    rules = compute_rules(view, {})  # web3 has no interface yet
    lines = [f.dump_text()[1:] for f in policy_flows(rules)]
    assert_flows(lines, [
        ing("ip,nw_src=10.222.1.12", c("A", 1, 2)),
        ing_action("A"),
        egr("ip,nw_dst=172.16.0.0/16", c("B", 2, 2)),
        egr_action("B"),
    ])


# ============================================================================== 10. the seed


@pytest.fixture(scope="module")
def seed() -> OfflineCluster:
    if not (SEED / "policies.yaml").exists():
        pytest.skip("examples/seed is missing")
    return OfflineCluster.load(SEED)


FRONTEND = "b421488d-0bd0-52b2-9f10-df327e3bad32"
BACKEND = "42008407-e0c9-518d-899d-27f872c89fc6"


def test_seed_groups_rules_and_spans(seed: OfflineCluster) -> None:
    st = seed.policy_state
    assert gname("namespace=default And podSelector=role=frontend") == FRONTEND
    assert gname("namespace=default And podSelector=role=backend") == BACKEND
    assert set(st.applied_to_groups) == {FRONTEND, BACKEND}
    assert set(st.address_groups) == {FRONTEND, BACKEND}
    atg_f, atg_b = st.applied_to_groups[FRONTEND], st.applied_to_groups[BACKEND]
    assert {(m.key, m.node) for m in atg_f.pods} == {("default/frontend", "worker1")}
    assert tuple(atg_f.span) == ("worker1",)
    assert {(m.key, m.node) for m in atg_b.pods} == {("default/backend1", "worker1"), ("default/backend2", "worker2")}
    assert tuple(atg_b.span) == ("worker1", "worker2")
    ag_f, ag_b = st.address_groups[FRONTEND], st.address_groups[BACKEND]
    assert {(m.key, m.ip) for m in ag_b.pods} == {("default/backend1", "10.222.1.47"),
                                                  ("default/backend2", "10.222.2.34")}
    assert {(m.key, m.ip) for m in ag_f.pods} == {("default/frontend", "10.222.1.48")}
    # AddressGroup span = spans of the policies using it: AG(backend) <- frontendpolicy {worker1};
    # AG(frontend) <- backendpolicy {worker1, worker2}
    assert tuple(ag_b.span) == ("worker1",)
    assert tuple(ag_f.span) == ("worker1", "worker2")
    fp, bp = st.policies["default/frontendpolicy"], st.policies["default/backendpolicy"]
    assert tuple(fp.span) == ("worker1",) and tuple(bp.span) == ("worker1", "worker2")
    assert fp.applied_to_groups == (FRONTEND,) and bp.applied_to_groups == (BACKEND,)
    assert [rule_summary(r) for r in fp.rules] == [
        ("In", (), (ALL,), (("TCP", 80, None),)),
        ("Out", (BACKEND,), (), (("TCP", 80, None),)),
        ("Out", (), (ALL,), (("UDP", 53, None),)),
    ]
    assert [rule_summary(r) for r in bp.rules] == [
        ("In", (FRONTEND,), (), (("TCP", 80, None),)),
        ("Out", (), (), None),
    ]


def _count(lines: list[str], table: int) -> int:
    return sum(f", table={table}, " in x for x in lines)


# worker1's policy tables derived from §8 for the §15 inputs, written as `ovs-ofctl` prints them
# (leading space included), with the article's conj_ids.
SEED_WORKER1 = [
    " cookie=0x1050000000000, table=50, priority=200,ip,nw_src=10.222.1.48 actions=conjunction(1,1/3),conjunction(2,1/3)",
    " cookie=0x1050000000000, table=50, priority=200,ip,nw_dst=10.222.1.47 actions=conjunction(1,2/3)",
    " cookie=0x1050000000000, table=50, priority=200,ip,nw_dst=10.222.2.34 actions=conjunction(1,2/3)",
    " cookie=0x1050000000000, table=50, priority=200,ip actions=conjunction(2,2/3)",
    " cookie=0x1050000000000, table=50, priority=200,tcp,tp_dst=80 actions=conjunction(1,3/3)",
    " cookie=0x1050000000000, table=50, priority=200,udp,tp_dst=53 actions=conjunction(2,3/3)",
    " cookie=0x1050000000000, table=50, priority=200,ip,nw_src=10.222.1.47 actions=conjunction(5,1/2)",
    " cookie=0x1050000000000, table=50, priority=190,conj_id=1,ip actions=load:0x1->NXM_NX_REG5[],resubmit(,70)",
    " cookie=0x1050000000000, table=50, priority=190,conj_id=2,ip actions=load:0x2->NXM_NX_REG5[],resubmit(,70)",
    " cookie=0x1050000000000, table=50, priority=190,conj_id=5,ip actions=load:0x5->NXM_NX_REG5[],resubmit(,70)",
    " cookie=0x1000000000000, table=60, priority=200,ip,nw_src=10.222.1.48 actions=drop",
    " cookie=0x1000000000000, table=60, priority=200,ip,nw_src=10.222.1.47 actions=drop",
    " cookie=0x1050000000000, table=90, priority=200,ip actions=conjunction(4,1/3)",
    " cookie=0x1050000000000, table=90, priority=200,ip,nw_src=10.222.1.48 actions=conjunction(3,1/3)",
    " cookie=0x1050000000000, table=90, priority=200,ip,reg1=0x30 actions=conjunction(3,2/3)",
    " cookie=0x1050000000000, table=90, priority=200,ip,reg1=0x31 actions=conjunction(4,2/3)",
    " cookie=0x1050000000000, table=90, priority=200,tcp,tp_dst=80 actions=conjunction(4,3/3),conjunction(3,3/3)",
    " cookie=0x1050000000000, table=90, priority=190,conj_id=3,ip actions=load:0x3->NXM_NX_REG6[],resubmit(,105)",
    " cookie=0x1050000000000, table=90, priority=190,conj_id=4,ip actions=load:0x4->NXM_NX_REG6[],resubmit(,105)",
    " cookie=0x1000000000000, table=100, priority=200,ip,reg1=0x30 actions=drop",
    " cookie=0x1000000000000, table=100, priority=200,ip,reg1=0x31 actions=drop",
]

# worker2: 1 = backend ingress from frontend, 2 = backend deny-all egress.
SEED_WORKER2 = [
    " cookie=0x1050000000000, table=50, priority=200,ip,nw_src=10.222.2.34 actions=conjunction(2,1/2)",
    " cookie=0x1050000000000, table=50, priority=190,conj_id=2,ip actions=load:0x2->NXM_NX_REG5[],resubmit(,70)",
    " cookie=0x1000000000000, table=60, priority=200,ip,nw_src=10.222.2.34 actions=drop",
    " cookie=0x1050000000000, table=90, priority=200,ip,nw_src=10.222.1.48 actions=conjunction(1,1/3)",
    " cookie=0x1050000000000, table=90, priority=200,ip,reg1=0x23 actions=conjunction(1,2/3)",
    " cookie=0x1050000000000, table=90, priority=200,tcp,tp_dst=80 actions=conjunction(1,3/3)",
    " cookie=0x1050000000000, table=90, priority=190,conj_id=1,ip actions=load:0x1->NXM_NX_REG6[],resubmit(,105)",
    " cookie=0x1000000000000, table=100, priority=200,ip,reg1=0x23 actions=drop",
]


@pytest.mark.parametrize("node,expected,counts", [
    ("worker1", SEED_WORKER1, [10, 2, 7, 2]),
    ("worker2", SEED_WORKER2, [2, 1, 4, 1]),
])
def test_seed_policy_tables(seed: OfflineCluster, node: str, expected: list[str], counts: list[int]) -> None:
    """§15: worker1 50/60/90/100 = 10/2/7/2 flows, worker2 2/1/4/1; conj 5 on worker1 (and 2 on
    worker2) has the single clause 1/2; one `tcp,tp_dst=80` flow in worker1's table 90 is shared."""
    lines = table_lines(seed, node)
    assert [_count(lines, t) for t in POLICY_TABLES] == counts
    assert [_count([x[1:] for x in expected], t) for t in POLICY_TABLES] == counts  # self-check
    assert_flows(lines, [x[1:] for x in expected])


def test_seed_totals(seed: OfflineCluster) -> None:
    """§15: worker1 76 flows, worker2 53 (ART, round 1)."""
    assert len(seed.node_flows("worker1").flows) == 76
    assert len(seed.node_flows("worker2").flows) == 53
