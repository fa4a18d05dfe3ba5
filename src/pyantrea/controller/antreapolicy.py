"""Antrea-native policies -> internal NetworkPolicies, AppliedToGroups and AddressGroups (issue 10).

ClusterNetworkPolicies (ACNP) and Antrea NetworkPolicies (ANP) become internal policies of type
AntreaClusterNetworkPolicy / AntreaNetworkPolicy that carry their Tier (name and priority), their
own priority and, per rule, its action (Allow, Drop, Reject, Pass), its name, its priority (its
index among the policy's rules of its direction, as Antrea numbers them) and, when appliedTo is
given per rule, the rule's own AppliedToGroups. Peers become AddressGroups and ipBlocks exactly as
for Kubernetes NetworkPolicies; agents never see selectors.

Groups, as Antrea's controller makes them (pkg/controller/networkpolicy/crd_utils.go,
antreaclusternetworkpolicy.go):
- a selector group is named by UUIDv5 of its normalized selector string (spec §9.2); in an ACNP a
  podSelector alone selects Pods of every Namespace (its string has no `namespace=` part), in an ANP
  it selects its own Namespace's Pods;
- a ClusterGroup is one group named by its name (a Group by `ns/name`), whose members (its
  selectors' Pods, its child groups' Pods) are computed once whatever number of policies use it;
  its ipBlocks go into the peers that reference it;
- `namespaces: {match: Self}`: the rule is split per Namespace its appliedTo covers, each copy
  applied to the Pods of one Namespace and allowing/denying peers of that same Namespace.

The computation is whole (`compute_state`), and merges into the Kubernetes NetworkPolicy state: a
group both kinds of policies use is one group whose span is the union.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from pyantrea.apis import controlplane as cp
from pyantrea.apis import crd
from pyantrea.apis.crd import AntreaPolicy, AppliedTo, ClusterGroup, Peer
from pyantrea.apis.k8s import LabelSelector, Namespace, NetworkPolicy, NetworkPolicyPort, Pod
from pyantrea.controller.networkpolicy import NetworkPolicyController, PolicyState, group_name

EVERYTHING = LabelSelector()
ALL = cp.IPBlock("0.0.0.0/0")


@dataclass(frozen=True)
class Sel:
    """A selector group: Pods of `namespace` (None: of every Namespace, or of those `ns_selector`
    matches) that `pod_selector` matches."""

    namespace: str | None
    pod_selector: LabelSelector | None
    ns_selector: LabelSelector | None

    @property
    def normalized(self) -> str:
        items = []
        if self.ns_selector is not None:
            items.append(f"namespaceSelector={self.ns_selector}")
        elif self.namespace is not None:
            items.append(f"namespace={self.namespace}")
        if self.pod_selector is not None:
            items.append(f"podSelector={self.pod_selector}")
        return " And ".join(sorted(items))

    def keys(self, index: Index) -> set[str]:
        if self.ns_selector is not None:
            names = index.namespaces_matching(self.ns_selector)
        elif self.namespace is not None:
            names = {self.namespace}
        else:
            names = None  # every Namespace
        sel = self.pod_selector or EVERYTHING
        return {k for k, p in index.pods.items() if (names is None or p.namespace in names)
                and sel.matches(p.label_map)}


class Index:
    """Pods by key and Namespaces' labels (a Namespace that only has Pods has none)."""

    def __init__(self, pods: Iterable[Pod], namespaces: Iterable[Namespace]):
        self.pods = {p.key: p for p in pods}
        self.ns_labels = {n.name: n.label_map for n in namespaces}
        for p in self.pods.values():
            self.ns_labels.setdefault(p.namespace, {})
        self.ns_names = set(self.ns_labels)

    def namespaces_matching(self, sel: LabelSelector) -> set[str]:
        return {n for n, labels in self.ns_labels.items() if sel.matches(labels)}


def _eligible_atg(p: Pod) -> bool:
    return not (p.host_network or p.terminated) and bool(p.node_name)


def _eligible_ag(p: Pod) -> bool:
    return not (p.host_network or p.terminated) and bool(p.pod_ip)


def _member(p: Pod) -> cp.GroupMemberPod:
    return cp.GroupMemberPod(p.namespace, p.name, p.pod_ip, p.node_name, p.ports)


def tier_priorities(tiers: Iterable[crd.Tier]) -> dict[str, int]:
    out = dict(crd.BUILTIN_TIERS)
    out.update({t.name: t.priority for t in tiers})
    return out


class _Translator:
    def __init__(self, pods: Iterable[Pod], namespaces: Iterable[Namespace], groups: Iterable[ClusterGroup],
                 tiers: Iterable[crd.Tier]):
        self.index = Index(pods, namespaces)
        self.cgs = {(g.namespace, g.name): g for g in groups}
        self.tiers = tier_priorities(tiers)
        self.atgs: dict[str, cp.AppliedToGroup] = {}
        self.ags: dict[str, cp.AddressGroup] = {}
        self._cg_keys: dict[tuple[str | None, str], set[str]] = {}

    # ------------------------------------------------------------------ groups
    def _pods(self, keys: Iterable[str], atg: bool) -> tuple[cp.GroupMemberPod, ...]:
        pods = self.index.pods
        ok = _eligible_atg if atg else _eligible_ag
        return tuple(_member(pods[k]) for k in sorted(keys) if ok(pods[k]))

    def sel_atg(self, sel: Sel) -> str:
        normalized = sel.normalized
        name = group_name(normalized)
        if name not in self.atgs:
            self.atgs[name] = cp.AppliedToGroup(name, normalized, self._pods(sel.keys(self.index), True))
        return name

    def sel_ag(self, sel: Sel) -> str:
        normalized = sel.normalized
        name = group_name(normalized)
        if name not in self.ags:
            self.ags[name] = cp.AddressGroup(name, normalized, self._pods(sel.keys(self.index), False))
        return name

    def group_keys(self, ns: str | None, name: str, depth: int = 0) -> set[str]:
        """The Pods of a ClusterGroup (ns None) or Group: its selectors', or its child groups'."""
        k = (ns, name)
        if k in self._cg_keys:
            return self._cg_keys[k]
        g = self.cgs.get(k)
        keys: set[str] = set()
        if g is not None:
            if g.pod_selector is not None or g.namespace_selector is not None:
                keys = Sel(ns, g.pod_selector, g.namespace_selector).keys(self.index)
            if depth < 2:
                for ch in g.child_groups:
                    keys |= self.group_keys(ns, ch, depth + 1)
        self._cg_keys[k] = keys
        return keys

    def group_blocks(self, ns: str | None, name: str, depth: int = 0) -> list[cp.IPBlock]:
        g = self.cgs.get((ns, name))
        if g is None:
            return []
        out = [cp.IPBlock(b.cidr, tuple(b.except_)) for b in g.ip_blocks]
        if depth < 2:
            for ch in g.child_groups:
                out += self.group_blocks(ns, ch, depth + 1)
        return out

    def _has_selectors(self, ns: str | None, name: str, depth: int = 0) -> bool:
        g = self.cgs.get((ns, name))
        if g is None:
            return True  # not created yet: an empty group of Pods
        if g.pod_selector is not None or g.namespace_selector is not None:
            return True
        return depth < 2 and any(self._has_selectors(ns, ch, depth + 1) for ch in g.child_groups)

    def cg_atg(self, ns: str | None, name: str) -> str | None:
        key = name if ns is None else f"{ns}/{name}"
        g = self.cgs.get((ns, name))
        if g is not None and not self._has_selectors(ns, name):
            return None  # a group of ipBlocks only applies to no Pod (Antrea ignores it as appliedTo)
        if key not in self.atgs:
            self.atgs[key] = cp.AppliedToGroup(key, f"group={key}", self._pods(self.group_keys(ns, name), True))
        return key

    def cg_ag(self, ns: str | None, name: str) -> str | None:
        key = name if ns is None else f"{ns}/{name}"
        if not self._has_selectors(ns, name):
            return None
        if key not in self.ags:
            self.ags[key] = cp.AddressGroup(key, f"group={key}", self._pods(self.group_keys(ns, name), False))
        return key

    # ------------------------------------------------------------------ appliedTo and peers
    def applied_to(self, pol: AntreaPolicy, ats: Iterable[AppliedTo]) -> list[str]:
        out: list[str] = []
        for at in ats:
            if at.group is not None:
                name = self.cg_atg(pol.namespace, at.group)
            elif pol.cluster_scoped:
                name = self.sel_atg(Sel(None, at.pod_selector, at.namespace_selector))
            else:
                name = self.sel_atg(Sel(pol.namespace, at.pod_selector or EVERYTHING, None))
            if name is not None and name not in out:
                out.append(name)
        return out

    def namespaces_of(self, pol: AntreaPolicy, at: AppliedTo) -> list[str]:
        """The Namespaces an appliedTo covers (a per-namespace rule gets one copy for each)."""
        if not pol.cluster_scoped:
            return [pol.namespace or "default"]
        if at.group is not None:
            pods = self.index.pods
            return sorted({pods[k].namespace for k in self.group_keys(None, at.group)})
        if at.namespace_selector is not None:
            return sorted(self.index.namespaces_matching(at.namespace_selector))
        return sorted(self.index.ns_names)

    def peer(self, pol: AntreaPolicy, peers: Iterable[Peer], egress: bool, named: bool) -> cp.NetworkPolicyPeer:
        peers = list(peers)
        if not peers:
            if egress and named:  # every Pod of every Namespace, to resolve the named ports
                return cp.NetworkPolicyPeer((self.sel_ag(Sel(None, None, EVERYTHING)),), (ALL,))
            return cp.NetworkPolicyPeer((), (ALL,))
        groups: list[str] = []
        blocks: list[cp.IPBlock] = []
        for p in peers:
            if p.ip_block is not None:
                blocks.append(cp.IPBlock(p.ip_block.cidr, tuple(p.ip_block.except_)))
                continue
            if p.group is not None:
                name = self.cg_ag(pol.namespace, p.group)
                blocks += self.group_blocks(pol.namespace, p.group)
            elif pol.cluster_scoped:
                name = self.sel_ag(Sel(None, p.pod_selector, p.namespace_selector))
            elif p.namespace_selector is not None:
                name = self.sel_ag(Sel(None, p.pod_selector, p.namespace_selector))
            else:
                name = self.sel_ag(Sel(pol.namespace, p.pod_selector, None))
            if name is not None and name not in groups:
                groups.append(name)
        return cp.NetworkPolicyPeer(tuple(groups), tuple(blocks))

    # ------------------------------------------------------------------ a policy
    def translate(self, pol: AntreaPolicy) -> cp.NetworkPolicy:
        per_namespace = any(p.namespaces_self for r in pol.ingress + pol.egress for p in r.peers)
        rule_level = not pol.applied_to or per_namespace
        rules: list[cp.NetworkPolicyRule] = []
        all_atgs: list[str] = []

        def add(rule: cp.NetworkPolicyRule) -> None:
            rules.append(rule)
            for g in rule.applied_to_groups or ():
                if g not in all_atgs:
                    all_atgs.append(g)

        for direction, rs in (("In", pol.ingress), ("Out", pol.egress)):
            egress = direction == "Out"
            for idx, r in enumerate(rs):
                svcs = services(r.ports, r.icmp)
                named = any(s.named for s in svcs or ())
                cluster_peers = [p for p in r.peers if not p.namespaces_self]
                self_peers = [p for p in r.peers if p.namespaces_self]
                ats = r.applied_to or pol.applied_to

                def rule(peer: cp.NetworkPolicyPeer, atgs: tuple[str, ...] | None) -> cp.NetworkPolicyRule:
                    return cp.NetworkPolicyRule(direction, from_=None if egress else peer, to=peer if egress else None,
                                                services=svcs, priority=idx, action=r.action, name=r.name,
                                                applied_to_groups=atgs)

                if cluster_peers or not self_peers:
                    atgs = tuple(self.applied_to(pol, ats)) if rule_level else None
                    add(rule(self.peer(pol, cluster_peers, egress, named), atgs))
                if self_peers:
                    for at in ats:
                        for ns in self.namespaces_of(pol, at):
                            if at.group is not None:
                                continue  # per-namespace copies of a group's Pods: not modelled
                            atg = self.sel_atg(Sel(ns, at.pod_selector, None))
                            ags = [self.sel_ag(Sel(ns, p.pod_selector, None)) for p in self_peers]
                            add(rule(cp.NetworkPolicyPeer(tuple(dict.fromkeys(ags)), ()), (atg,)))
        if not rule_level:
            all_atgs = self.applied_to(pol, pol.applied_to)
        return cp.NetworkPolicy(pol.uid or pol.key, pol.namespace or "", pol.name, tuple(rules), tuple(all_atgs),
                                (), pol.type, pol.tier, self.tiers.get(pol.tier, crd.DEFAULT_TIER_PRIORITY),
                                pol.priority)


def services(ports: Iterable[NetworkPolicyPort], icmp: Iterable[crd.ICMP]) -> tuple[cp.Service, ...] | None:
    out = [cp.Service(p.protocol or "TCP", p.port, p.end_port) for p in ports]
    out += [cp.Service("ICMP", None, None, i.icmp_type, i.icmp_code) for i in icmp]
    return tuple(out) or None


def translate_all(pods: Iterable[Pod], namespaces: Iterable[Namespace], policies: Iterable[AntreaPolicy],
                  groups: Iterable[ClusterGroup] = (), tiers: Iterable[crd.Tier] = ()) -> PolicyState:
    """The Antrea-native part of the state: policies with their groups, spans computed."""
    t = _Translator(pods, namespaces, groups, tiers)
    pols = [t.translate(p) for p in sorted(policies, key=lambda p: (p.namespace or "", p.name))]
    st = PolicyState()
    st.applied_to_groups = {n: replace(g, span=tuple(sorted({m.node for m in g.pods if m.node})))
                            for n, g in sorted(t.atgs.items())}
    ag_span: dict[str, set[str]] = {}
    for p in pols:
        span: set[str] = set()
        for g in p.applied_to_groups:
            span.update(st.applied_to_groups[g].span)
        p = replace(p, span=tuple(sorted(span)))
        st.policies[p.key] = p
        for r in p.rules:
            for g in r.peer.address_groups:
                ag_span.setdefault(g, set()).update(span)
    st.address_groups = {n: replace(g, span=tuple(sorted(ag_span.get(n, set())))) for n, g in sorted(t.ags.items())
                         if n in ag_span}
    return st


def merge(a: PolicyState, b: PolicyState) -> PolicyState:
    """Both states in one: a group both have (the same selector, so the same members) spans both."""
    out = PolicyState(dict(a.policies), dict(a.applied_to_groups), dict(a.address_groups))
    out.policies.update(b.policies)
    for n, g in b.applied_to_groups.items():
        old = out.applied_to_groups.get(n)
        out.applied_to_groups[n] = g if old is None else replace(old, span=tuple(sorted(set(old.span) | set(g.span))))
    for n, ag in b.address_groups.items():
        old_ag = out.address_groups.get(n)
        out.address_groups[n] = ag if old_ag is None else replace(old_ag,
                                                                  span=tuple(sorted(set(old_ag.span) | set(ag.span))))
    return out


def compute_state(pods: Iterable[Pod], namespaces: Iterable[Namespace], k8s: Iterable[NetworkPolicy],
                  policies: Iterable[AntreaPolicy] = (), groups: Iterable[ClusterGroup] = (),
                  tiers: Iterable[crd.Tier] = ()) -> PolicyState:
    """The whole policy state: Kubernetes NetworkPolicies (the NetworkPolicyController) and Antrea's."""
    pods, namespaces = list(pods), list(namespaces)
    base = NetworkPolicyController(pods, namespaces, k8s).compute()
    policies = list(policies)
    if not policies:
        return base
    return merge(base, translate_all(pods, namespaces, policies, groups, tiers))


def cluster_state(cluster: object) -> PolicyState:
    """`compute_state` of a `k8s.cluster.Cluster`."""
    c = cluster
    return compute_state(c.pods, c.namespaces, c.policies, c.antrea_policies, c.groups, c.tiers)  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------- live

ANTREA_KINDS = frozenset(crd.KINDS)


def control_plane(store: Any) -> Any:
    """The controller's ControlPlane for `store`: with the AntreaPolicy gate on, one that also computes
    Antrea-native policies (each change of a policy input recomputes the whole state and records what
    differs: the Kubernetes NetworkPolicy engine's incremental path covers Kubernetes policies only)."""
    from pyantrea.controller.controlplane import ControlPlane

    config = getattr(store, "config", None)
    if config is None or not config.gate(crd.GATE):
        return ControlPlane(store)
    return _antrea_control_plane_class()(store)


def _antrea_control_plane_class() -> type:
    from pyantrea.controller import controlplane as cpl
    from pyantrea.controller.networkpolicy import diff

    class AntreaControlPlane(cpl.ControlPlane):  # type: ignore[misc,valid-type]
        def on_events(self, events: list[Any]) -> None:
            if any(e.kind in cpl.POLICY_KINDS or e.kind in ANTREA_KINDS for e in events):
                self.recompute()

        def recompute(self) -> int:
            t0 = time.perf_counter()
            new = cluster_state(self.store.cluster())
            with self.cond:
                changes = diff(self.state, new)
                self.engine, self.state = None, new
                self._record(changes)
                self.updates["full"] += 1
            self.compute_seconds.append(time.perf_counter() - t0)
            return len(changes)

    return AntreaControlPlane
