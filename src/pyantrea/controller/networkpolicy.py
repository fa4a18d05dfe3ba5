"""Kubernetes NetworkPolicy -> AppliedToGroups, AddressGroups and internal NetworkPolicies (spec §9).

Each group is computed once (keyed by its normalized selector), whatever number of policies use it,
and so is its span. Pods are found through label indexes (of Pods per namespace and cluster-wide, of
Namespaces), not by scanning every Pod or Namespace per selector.

`PolicyEngine` is the computation kept alive: built once from the objects (the same result as
`NetworkPolicyController.compute()`, which is a build), then updated by changes of single objects.
A Pod change touches only the groups whose selectors can match it (found through an index of the
groups' selectors by scope and label); a policy change only its own groups; a Namespace change only
the groups with a namespaceSelector. Spans follow by counts: an AppliedToGroup counts its members per
node, an AddressGroup the AppliedToGroups (of the policies using it) per node, so a span changes in
time proportional to what changed in it.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from pyantrea.apis import controlplane as cp
from pyantrea.apis.k8s import LabelSelector, Namespace, NetworkPolicy, NetworkPolicyPeer, Pod

NodePolicyView = cp.NodePolicyView  # re-exported: the agent's input

GROUP_NAMESPACE = uuid.UUID("5a5e7dd9-e3fb-49bb-b263-9bab25c95841")
_GROUP_NS_BYTES = GROUP_NAMESPACE.bytes


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 4122: the top two bits 10


def group_name(normalized: str) -> str:
    """uuid5(GROUP_NAMESPACE, normalized) as a string, without the `uuid.UUID` objects (one per group)."""
    h = hashlib.sha1(_GROUP_NS_BYTES + normalized.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def normalize(namespace: str | None, pod_selector: LabelSelector | None,
              ns_selector: LabelSelector | None) -> str:
    """Antrea's normalized selector string (spec §9.2)."""
    items = []
    if ns_selector is not None:
        items.append(f"namespaceSelector={ns_selector}")
    elif namespace is not None:
        items.append(f"namespace={namespace}")
    if pod_selector is not None:
        items.append(f"podSelector={pod_selector}")
    return " And ".join(sorted(items))


@dataclass(frozen=True)
class GroupSelector:
    namespace: str | None  # the policy's namespace, when the selector is scoped to it
    pod_selector: LabelSelector | None
    ns_selector: LabelSelector | None

    @property
    def normalized(self) -> str:
        return normalize(self.namespace, self.pod_selector, self.ns_selector)

    @property
    def name(self) -> str:
        return group_name(self.normalized)

    @property
    def scope(self) -> str:
        """The namespace whose Pods it can select, or "*" (a namespaceSelector: any namespace)."""
        return "*" if self.ns_selector is not None else (self.namespace or "default")


EVERYTHING = LabelSelector()


_EMPTY: frozenset[str] = frozenset()


def _select(sel: LabelSelector, universe: AbstractSet[str], by_label: dict[Any, set[str]],
            by_key: dict[Any, set[str]], prefix: tuple[str, ...]) -> AbstractSet[str]:
    """The elements of `universe` whose labels `sel` matches, from the label indexes
    (`by_label[prefix + (k, v)]`, `by_key[prefix + (k,)]`): sets intersected, smallest first.
    The result may be one of the index's own sets: read it, do not change it."""
    ml, mx = sel.match_labels, sel.match_expressions
    if not mx:
        if not ml:
            return universe
        if len(ml) == 1:
            return by_label.get(prefix + ml[0], _EMPTY)
    empty: set[str] = set()
    sets: list[AbstractSet[str]] = []
    for k, v in ml:
        sets.append(by_label.get(prefix + (k, v), empty))
    for r in sel.match_expressions:
        if r.operator in ("In", "NotIn"):
            s: set[str] = set()
            for v in r.values:
                s |= by_label.get(prefix + (r.key, v), empty)
            sets.append(s if r.operator == "In" else set(universe) - s)
        elif r.operator == "Exists":
            sets.append(by_key.get(prefix + (r.key,), empty))
        elif r.operator == "DoesNotExist":
            sets.append(set(universe) - by_key.get(prefix + (r.key,), empty))
    sets.sort(key=len)
    result = set(sets[0])
    for x in sets[1:]:
        result &= x
        if not result:
            break
    return result


class PodIndex:
    """Pods by namespace and by label (per namespace and cluster-wide), Namespaces by label: selector
    evaluation in time about the size of the result. Kept up to date by `add` / `remove` /
    `set_namespace`."""

    def __init__(self, pods: Iterable[Pod], namespaces: Iterable[Namespace]):
        self.pods: dict[str, Pod] = {}
        self.by_ns: dict[str, set[str]] = defaultdict(set)
        self.by_label: dict[tuple[str, ...], set[str]] = defaultdict(set)  # (ns, k, v)
        self.by_key: dict[tuple[str, ...], set[str]] = defaultdict(set)  # (ns, k)
        # Cluster-wide (k, v) and (k,), built when a namespaceSelector first needs them.
        self.all_pods: set[str] | None = None
        self.all_by_label: dict[tuple[str, ...], set[str]] = defaultdict(set)
        self.all_by_key: dict[tuple[str, ...], set[str]] = defaultdict(set)
        # Namespaces: the given ones, and (without labels) those that only have Pods.
        self.namespaces: dict[str, Namespace] = {}
        self.explicit: set[str] = set()
        self.ns_by_label: dict[tuple[str, ...], set[str]] = defaultdict(set)  # (k, v)
        self.ns_by_key: dict[tuple[str, ...], set[str]] = defaultdict(set)  # (k,)
        self.ns_names: set[str] = set()
        for n in namespaces:
            self.set_namespace(n.name, n)
        for p in pods:
            self.add(p)

    # ------------------------------------------------------------------ keeping it
    def add(self, p: Pod) -> None:
        key, ns = p.key, p.namespace
        self.pods[key] = p
        self.by_ns[ns].add(key)
        for k, v in p.labels:
            self.by_label[(ns, k, v)].add(key)
            self.by_key[(ns, k)].add(key)
        if self.all_pods is not None:
            self._add_global(p)
        if ns not in self.namespaces:
            self._index_ns(Namespace(name=ns))

    def remove(self, p: Pod) -> None:
        key, ns = p.key, p.namespace
        del self.pods[key]
        _discard(self.by_ns, ns, key)
        for k, v in p.labels:
            _discard(self.by_label, (ns, k, v), key)
            _discard(self.by_key, (ns, k), key)
        if self.all_pods is not None:
            self.all_pods.discard(key)
            for k, v in p.labels:
                _discard(self.all_by_label, (k, v), key)
                _discard(self.all_by_key, (k,), key)
        if ns not in self.by_ns and ns not in self.explicit:
            self._unindex_ns(ns)

    def _add_global(self, p: Pod) -> None:
        assert self.all_pods is not None
        key = p.key
        self.all_pods.add(key)
        for k, v in p.labels:
            self.all_by_label[(k, v)].add(key)
            self.all_by_key[(k,)].add(key)

    def select_all(self, sel: LabelSelector) -> AbstractSet[str]:
        """Pods of every namespace that `sel` matches."""
        if self.all_pods is None:
            self.all_pods = set()
            for p in self.pods.values():
                self._add_global(p)
        return _select(sel, self.all_pods, self.all_by_label, self.all_by_key, ())

    def set_namespace(self, name: str, ns: Namespace | None) -> None:
        """A Namespace created, changed (ns) or deleted (None; it stays, without labels, while it has Pods)."""
        if name in self.namespaces:
            self._unindex_ns(name)
        if ns is not None:
            self.explicit.add(name)
            self._index_ns(ns)
        else:
            self.explicit.discard(name)
            if name in self.by_ns:
                self._index_ns(Namespace(name=name))

    def _index_ns(self, ns: Namespace) -> None:
        self.namespaces[ns.name] = ns
        self.ns_names.add(ns.name)
        for k, v in ns.labels:
            self.ns_by_label[(k, v)].add(ns.name)
            self.ns_by_key[(k,)].add(ns.name)

    def _unindex_ns(self, name: str) -> None:
        ns = self.namespaces.pop(name)
        self.ns_names.discard(name)
        for k, v in ns.labels:
            _discard(self.ns_by_label, (k, v), name)
            _discard(self.ns_by_key, (k,), name)

    def ns_labels(self, name: str) -> dict[str, str]:
        ns = self.namespaces.get(name)
        return ns.label_map if ns is not None else {}

    # ------------------------------------------------------------------ selecting
    # The results may be the index's own sets: read them, do not change them.
    def select_in(self, ns: str, sel: LabelSelector) -> AbstractSet[str]:
        return _select(sel, self.by_ns.get(ns, _EMPTY), self.by_label, self.by_key, (ns,))

    def namespaces_matching(self, sel: LabelSelector) -> AbstractSet[str]:
        return _select(sel, self.ns_names, self.ns_by_label, self.ns_by_key, ())

    def select_keys(self, gs: GroupSelector,
                    ns_cache: dict[LabelSelector, AbstractSet[str]] | None = None) -> AbstractSet[str]:
        psel = gs.pod_selector if gs.pod_selector is not None else EVERYTHING
        if gs.ns_selector is None:
            return self.select_in(gs.namespace or "default", psel)
        names = ns_cache.get(gs.ns_selector) if ns_cache is not None else None
        if names is None:
            names = self.namespaces_matching(gs.ns_selector)
            if ns_cache is not None:
                ns_cache[gs.ns_selector] = names
        if len(names) == len(self.ns_names):  # every namespace: the cluster-wide index
            return self.select_all(psel)
        keys: set[str] = set()
        if psel.is_empty() or len(names) <= 8:
            for ns in names:
                keys |= self.select_in(ns, psel)
            return keys
        pods = self.pods
        return {k for k in self.select_all(psel) if pods[k].namespace in names}

    def select(self, gs: GroupSelector) -> list[Pod]:
        return [self.pods[k] for k in sorted(self.select_keys(gs))]


def _discard(index: dict[Any, set[str]], k: Any, v: str) -> None:
    s = index.get(k)
    if s is not None:
        s.discard(v)
        if not s:
            del index[k]


def _member(p: Pod) -> cp.GroupMemberPod:
    return cp.GroupMemberPod(p.namespace, p.name, p.pod_ip, p.node_name, p.ports)


@dataclass
class PolicyState:
    """The controller's whole computed state (what it serves to agents)."""

    policies: dict[str, cp.NetworkPolicy] = field(default_factory=dict)  # by ns/name
    applied_to_groups: dict[str, cp.AppliedToGroup] = field(default_factory=dict)
    address_groups: dict[str, cp.AddressGroup] = field(default_factory=dict)

    def node_view(self, node: str) -> cp.NodePolicyView:
        """What an agent on `node` receives: objects whose span includes it (spec §9.4), by name."""
        pols = tuple(p for _, p in sorted(self.policies.items()) if node in p.span)
        atgs = {n: g.for_node(node) for n, g in sorted(self.applied_to_groups.items()) if node in g.span}
        ags = {n: g for n, g in sorted(self.address_groups.items()) if node in g.span}
        return cp.NodePolicyView(node, pols, atgs, ags)


ALL_NETWORK = cp.IPBlock("0.0.0.0/0")
_DENY_IN = cp.NetworkPolicyRule("In", from_=cp.NetworkPolicyPeer())
_DENY_OUT = cp.NetworkPolicyRule("Out", to=cp.NetworkPolicyPeer())
_ALL_PODS = GroupSelector(None, None, LabelSelector())

ATG, AG, NP = "AppliedToGroup", "AddressGroup", "NetworkPolicy"
GroupKey = tuple[str, str]  # (ATG | AG, name): an AppliedToGroup and an AddressGroup may share a name


class _Namer:
    """Normalized selector strings and group names. With `cache`, each distinct selector is rendered
    and each distinct string named once (a whole build); without, nothing is kept."""

    def __init__(self, cache: bool):
        self.strs: dict[LabelSelector, str] = {}
        self.names: dict[str, str] = {}
        self.cache = cache

    def __call__(self, namespace: str | None, pod_selector: LabelSelector | None,
                 ns_selector: LabelSelector | None) -> tuple[str, str]:
        """(normalized, name) of a group selector: `normalize` and `group_name`."""
        strs = self.strs
        if ns_selector is not None:
            s = strs.get(ns_selector)
            if s is None:
                s = str(ns_selector)
                if self.cache:
                    strs[ns_selector] = s
            first = "namespaceSelector=" + s
        elif namespace is not None:
            first = "namespace=" + namespace
        else:
            first = ""
        if pod_selector is None:
            normalized = first
        else:
            s = strs.get(pod_selector)
            if s is None:
                s = str(pod_selector)
                if self.cache:
                    strs[pod_selector] = s
            second = "podSelector=" + s
            normalized = second if not first else f"{first} And {second}" if first < second else f"{second} And {first}"
        name = self.names.get(normalized)
        if name is None:
            name = group_name(normalized)
            if self.cache:
                self.names[normalized] = name
        return normalized, name


Selectors = dict[str, tuple[GroupSelector, str]]  # group name -> (selector, normalized selector)


@dataclass(slots=True)
class _Translation:
    """A NetworkPolicy translated (spec §9.1), without its span."""

    uid: str
    namespace: str
    name: str
    rules: tuple[cp.NetworkPolicyRule, ...]
    atgs: tuple[str, ...]
    ags: tuple[str, ...]  # every AddressGroup of its rules, once, in order

    def policy(self, span: tuple[str, ...]) -> cp.NetworkPolicy:
        return cp.NetworkPolicy(self.uid, self.namespace, self.name, self.rules, self.atgs, span)


def _services(ports: Any) -> tuple[cp.Service, ...] | None:
    if not ports:
        return None
    return tuple(cp.Service(p.protocol or "TCP", p.port, p.end_port) for p in ports)


def translate(np: NetworkPolicy, namer: _Namer, atg_sel: Selectors, ag_sel: Selectors) -> _Translation:
    """The internal policy of `np`; the selectors of groups not yet in atg_sel / ag_sel are added."""
    ags: dict[str, None] = {}

    def peers(peer_list: tuple[NetworkPolicyPeer, ...], egress: bool, named: bool) -> cp.NetworkPolicyPeer:
        if not peer_list:
            groups: tuple[str, ...] = ()
            if egress and named:
                normalized, name = namer(None, None, _ALL_PODS.ns_selector)
                if name not in ag_sel:
                    ag_sel[name] = (_ALL_PODS, normalized)
                ags[name] = None
                groups = (name,)
            return cp.NetworkPolicyPeer(address_groups=groups, ip_blocks=(ALL_NETWORK,))
        names: list[str] = []
        blocks: list[cp.IPBlock] = []
        for peer in peer_list:
            if peer.ip_block is not None:
                blocks.append(cp.IPBlock(peer.ip_block.cidr, tuple(peer.ip_block.except_)))
                continue
            ns = None if peer.namespace_selector is not None else np.namespace
            normalized, name = namer(ns, peer.pod_selector, peer.namespace_selector)
            if name not in ag_sel:
                ag_sel[name] = (GroupSelector(ns, peer.pod_selector, peer.namespace_selector), normalized)
            ags[name] = None
            if name not in names:
                names.append(name)
        return cp.NetworkPolicyPeer(address_groups=tuple(names), ip_blocks=tuple(blocks))

    normalized, applied = namer(np.namespace, np.pod_selector, None)
    if applied not in atg_sel:
        atg_sel[applied] = (GroupSelector(np.namespace, np.pod_selector, None), normalized)
    rules: list[cp.NetworkPolicyRule] = []
    for r in np.ingress:
        svcs = _services(r.ports)
        named = any(s.named for s in svcs or ())
        rules.append(cp.NetworkPolicyRule("In", from_=peers(r.peers, False, named), services=svcs))
    if "Ingress" in np.policy_types and not np.ingress:
        rules.append(_DENY_IN)
    for r in np.egress:
        svcs = _services(r.ports)
        named = any(s.named for s in svcs or ())
        rules.append(cp.NetworkPolicyRule("Out", to=peers(r.peers, True, named), services=svcs))
    if "Egress" in np.policy_types and not np.egress:
        rules.append(_DENY_OUT)
    return _Translation(np.uid or f"{np.namespace}/{np.name}", np.namespace, np.name, tuple(rules),
                        (applied,), tuple(ags))


@dataclass(slots=True)
class _Group:
    """What the engine keeps of a group besides its controlplane value."""

    kind: str  # ATG | AG
    selector: GroupSelector
    users: dict[str, None]  # the policies that use it (ns/name)
    # ATG: members per node; AG: the AppliedToGroups (of the policies using it) per node of their spans
    nodes: dict[str, int]
    # ATG: AddressGroup -> policies using both; AG: AppliedToGroup -> policies using both
    pairs: dict[str, int]
    label: tuple[str, str] | None  # its key in the selector index: a matchLabels pair, or None (any Pod)


_KEY = attrgetter("key")


def _with_members(pods: tuple[cp.GroupMemberPod, ...],
                  pending: dict[str, cp.GroupMemberPod | None]) -> tuple[cp.GroupMemberPod, ...]:
    """`pods` (sorted by key) with members set (a value) or removed (None), still sorted."""
    if len(pending) > 16:
        d = {m.key: m for m in pods}
        for k, m in pending.items():
            if m is None:
                d.pop(k, None)
            else:
                d[k] = m
        return tuple(d[k] for k in sorted(d))
    out = list(pods)
    for k, m in pending.items():
        i = bisect.bisect_left(out, k, key=_KEY)
        here = i < len(out) and out[i].key == k
        if m is None:
            if here:
                del out[i]
        elif here:
            out[i] = m
        else:
            out.insert(i, m)
    return tuple(out)


_TERMINATED = ("Succeeded", "Failed")  # Pod.terminated


def _eligible(kind: str, p: Pod) -> bool:
    """AppliedToGroups: scheduled Pods; AddressGroups: Pods with an IP; neither hostNetwork nor terminated
    Pods (spec §9.3)."""
    if p.host_network or p.phase in _TERMINATED:
        return False
    return bool(p.node_name) if kind == ATG else bool(p.pod_ip)


Diff = list[tuple[str, str, Any, Any]]  # (kind, name, before, after), in the controlplane's order


FREEZE_AT = 20000  # objects of a computed state from which it is moved out of the collected generations


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cycle collector off for a build. A build allocates millions of objects that all live on and
    form no cycle, and CPython's collector would traverse the growing heap again and again: the
    computation before this engine made 5 full collections at 25,000 namespaces (2.5 of 8.6 s of CPU,
    each about 0.4 us per object of the heap) and 1 at 2,500 (0.03 s), the part of its cost that grew
    faster than the cluster. The new objects are traversed once, by the next collection, instead (or
    never: a big state is frozen, see FREEZE_AT)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class PolicyEngine:
    """The computed policy state, built once and then kept by changes (`update`)."""

    def __init__(self, pods: Iterable[Pod], namespaces: Iterable[Namespace], policies: Iterable[NetworkPolicy]):
        self.state = PolicyState()
        self.k8s: dict[str, NetworkPolicy] = {}
        self.translated: dict[str, _Translation] = {}
        self.groups: dict[GroupKey, _Group] = {}
        # The selector index: scope (a namespace, or "*") -> matchLabels pair (or None) -> groups.
        self.by_scope: dict[str, dict[tuple[str, str] | None, set[GroupKey]]] = {}
        self.members: dict[str, cp.GroupMemberPod] = {}  # one value per Pod, shared by all its groups
        self._before: dict[GroupKey, Any] = {}  # (kind, name) -> its value before the current update
        self._pending: dict[GroupKey, dict[str, cp.GroupMemberPod | None]] = {}
        self._dirty_policies: set[str] = set()
        self._dirty_ags: set[str] = set()
        with collector_paused():
            self._build(pods, namespaces, policies)
            st = self.state
            if len(st.policies) + len(st.applied_to_groups) + len(st.address_groups) >= FREEZE_AT:
                # A big state lives on and holds no cycle: out of the collected generations, so that
                # no collection traverses it again (the cost: a cycle alive now that dies later stays).
                gc.freeze()

    # ------------------------------------------------------------------ building (the whole computation)
    def _build(self, pods: Iterable[Pod], namespaces: Iterable[Namespace], policies: Iterable[NetworkPolicy]) -> None:
        """The whole computation, in the order (and with the dict orders) of spec §9's description:
        policies translated, AppliedToGroups, policies with their spans, AddressGroups."""
        namer = _Namer(cache=True)
        st, groups, members = self.state, self.groups, self.members
        atg_sel: Selectors = {}
        ag_sel: Selectors = {}
        order = sorted(policies, key=_KEY)
        k8s, translated = self.k8s, self.translated
        for np in order:
            key = f"{np.namespace}/{np.name}"
            k8s[key] = np
            translated[key] = translate(np, namer, atg_sel, ag_sel)
        del namer
        index = self.index = PodIndex(pods, namespaces)
        atg_ok: dict[str, cp.GroupMemberPod] = {}  # the Pods each kind of group may hold, as members
        ag_ok: dict[str, cp.GroupMemberPod] = {}
        for k, p in index.pods.items():
            if not p.host_network and p.phase not in _TERMINATED and (p.node_name or p.pod_ip):
                m = members[k] = cp.GroupMemberPod(p.namespace, p.name, p.pod_ip, p.node_name, p.ports)
                if p.node_name:
                    atg_ok[k] = m
                if p.pod_ip:
                    ag_ok[k] = m
        ns_cache: dict[LabelSelector, AbstractSet[str]] = {}
        keys_of: dict[str, list[str]] = {}  # an AppliedToGroup's Pods, for the AddressGroup of the same selector
        by_scope = self.by_scope
        atgs, ags = st.applied_to_groups, st.address_groups

        def register(kind: str, name: str, gs: GroupSelector, nodes: dict[str, int]) -> _Group:
            psel = gs.pod_selector
            label = psel.match_labels[0] if psel is not None and psel.match_labels else None
            scope = "*" if gs.ns_selector is not None else gs.namespace or "default"
            by_label = by_scope.get(scope)
            if by_label is None:
                by_label = by_scope[scope] = {}
            same = by_label.get(label)
            if same is None:
                by_label[label] = {(kind, name)}
            else:
                same.add((kind, name))
            g = groups[(kind, name)] = _Group(kind, gs, {}, nodes, {}, label)
            return g

        # AppliedToGroups: members and span (the nodes of the members). Computed in the policies' order
        # (namespace by namespace: the indexes are read where they were just read), stored by name.
        for name, (gs, normalized) in atg_sel.items():
            keys = sorted(index.select_keys(gs, ns_cache))
            if name in ag_sel:
                keys_of[name] = keys
            get = atg_ok.get
            pods_ = tuple([m for m in map(get, keys) if m is not None])
            nodes: dict[str, int] = {}
            for m in pods_:
                n = m.node or ""
                nodes[n] = nodes.get(n, 0) + 1
            atgs[name] = cp.AppliedToGroup(name, normalized, pods_, tuple(sorted(nodes)))
            register(ATG, name, gs, nodes)
        st.applied_to_groups = atgs = {name: atgs[name] for name in sorted(atgs)}
        # Internal policies: span = union of their AppliedToGroups' spans; each AddressGroup counts, per
        # node, the AppliedToGroups used with it.
        policies_out = st.policies
        for key, t in translated.items():
            span = atgs[t.atgs[0]].span if len(t.atgs) == 1 else self._span_of(t)
            policies_out[key] = cp.NetworkPolicy(t.uid, t.namespace, t.name, t.rules, t.atgs, span)
            for name in t.atgs:
                groups[(ATG, name)].users[key] = None
            for name in t.ags:
                g = groups.get((AG, name))
                if g is None:
                    g = register(AG, name, ag_sel[name][0], {})
                g.users[key] = None
                for atg in t.atgs:
                    used = g.pairs.get(atg, 0)
                    g.pairs[atg] = used + 1
                    pairs = groups[(ATG, atg)].pairs
                    pairs[name] = pairs.get(name, 0) + 1
                    if used == 0:
                        counts = g.nodes
                        for node in atgs[atg].span:
                            counts[node] = counts.get(node, 0) + 1
        # AddressGroups: members; span from the counts.
        for name, (gs, normalized) in ag_sel.items():
            shared = keys_of.pop(name, None)
            keys = shared if shared is not None else sorted(index.select_keys(gs, ns_cache))
            get = ag_ok.get
            pods_ = tuple([m for m in map(get, keys) if m is not None])
            ags[name] = cp.AddressGroup(name, normalized, pods_, tuple(sorted(groups[(AG, name)].nodes)))
        st.address_groups = {name: ags[name] for name in sorted(ags)}

    def _group(self, kind: str, name: str, gs: GroupSelector, nodes: dict[str, int]) -> _Group:
        psel = gs.pod_selector
        label = psel.match_labels[0] if psel is not None and psel.match_labels else None
        g = _Group(kind, gs, {}, nodes, {}, label)
        by_label = self.by_scope.get(gs.scope)
        if by_label is None:
            by_label = self.by_scope[gs.scope] = {}
        s = by_label.get(label)
        if s is None:
            by_label[label] = {(kind, name)}
        else:
            s.add((kind, name))
        return g

    def _span_of(self, t: _Translation) -> tuple[str, ...]:
        atgs = self.state.applied_to_groups
        if len(t.atgs) == 1:
            return atgs[t.atgs[0]].span
        nodes: set[str] = set()
        for g in t.atgs:
            nodes.update(atgs[g].span)
        return tuple(sorted(nodes))

    def _link(self, key: str, t: _Translation, ag_sel: Selectors, atg_sel: Selectors) -> None:
        """Policy `key` uses the groups of `t` (created when new, from the selectors): users, pairs and
        the AddressGroups' node counts (as `_build` does for every policy at once)."""
        groups, st = self.groups, self.state
        for name in t.atgs:
            g = groups.get((ATG, name))
            if g is None:
                g = self._create(ATG, name, *atg_sel[name])
            g.users[key] = None
        for name in t.ags:
            g = groups.get((AG, name))
            if g is None:
                g = self._create(AG, name, *ag_sel[name])
            g.users[key] = None
            for atg in t.atgs:
                n = g.pairs.get(atg, 0)
                g.pairs[atg] = n + 1
                ga = groups[(ATG, atg)]
                ga.pairs[name] = ga.pairs.get(name, 0) + 1
                if n == 0:  # a new (AddressGroup, AppliedToGroup) pair: the group's span joins
                    nodes = g.nodes
                    for node in st.applied_to_groups[atg].span:
                        nodes[node] = nodes.get(node, 0) + 1
                    self._dirty_ags.add(name)

    def _unlink(self, key: str, t: _Translation, keep: _Translation | None = None) -> None:
        """Policy `key` no longer uses the groups of `t` (but still those of `keep`, its new translation);
        groups nobody uses are deleted."""
        groups, st = self.groups, self.state
        for name in t.ags:
            g = groups[(AG, name)]
            for atg in t.atgs:
                n = g.pairs[atg] - 1
                ga = groups[(ATG, atg)]
                if ga.pairs[name] == 1:
                    del ga.pairs[name]
                else:
                    ga.pairs[name] -= 1
                if n:
                    g.pairs[atg] = n
                    continue
                del g.pairs[atg]
                nodes = g.nodes
                for node in st.applied_to_groups[atg].span:
                    if nodes[node] == 1:
                        del nodes[node]
                    else:
                        nodes[node] -= 1
                self._dirty_ags.add(name)
            if keep is None or name not in keep.ags:
                g.users.pop(key, None)
                if not g.users:
                    self._delete(AG, name)
        for name in t.atgs:
            if keep is None or name not in keep.atgs:
                g = groups[(ATG, name)]
                g.users.pop(key, None)
                if not g.users:
                    self._delete(ATG, name)

    # ------------------------------------------------------------------ updating
    def _objects(self, kind: str) -> dict[str, Any]:
        st = self.state
        return st.applied_to_groups if kind == ATG else st.address_groups if kind == AG else st.policies

    def _touch(self, kind: str, name: str) -> None:
        k = (kind, name)
        if k not in self._before:
            self._before[k] = self._objects(kind).get(name)

    def _create(self, kind: str, name: str, gs: GroupSelector, normalized: str) -> _Group:
        self._touch(kind, name)
        pods = []
        nodes: dict[str, int] = {}
        for p in self.index.select(gs):
            if _eligible(kind, p):
                m = self.members.get(p.key)
                if m is None:
                    m = self.members[p.key] = _member(p)
                pods.append(m)
                if kind == ATG:
                    n = m.node or ""
                    nodes[n] = nodes.get(n, 0) + 1
        g = self.groups[(kind, name)] = self._group(kind, name, gs, nodes if kind == ATG else {})
        if kind == ATG:
            self.state.applied_to_groups[name] = cp.AppliedToGroup(name, normalized, tuple(pods), tuple(sorted(nodes)))
        else:
            self.state.address_groups[name] = cp.AddressGroup(name, normalized, tuple(pods), ())
            self._dirty_ags.add(name)
        return g

    def _delete(self, kind: str, name: str) -> None:
        self._touch(kind, name)
        g = self.groups.pop((kind, name))
        scope = self.by_scope[g.selector.scope]
        scope[g.label].discard((kind, name))
        if not scope[g.label]:
            del scope[g.label]
            if not scope:
                del self.by_scope[g.selector.scope]
        self._objects(kind).pop(name)
        self._pending.pop((kind, name), None)
        if kind == AG:
            self._dirty_ags.discard(name)

    def _set_member(self, gk: GroupKey, g: _Group, key: str, was: cp.GroupMemberPod | None,
                    now: cp.GroupMemberPod | None) -> None:
        """In group `gk`, Pod `key` was member `was` (None: not a member) and is now `now`."""
        if was is now:
            return
        self._touch(*gk)
        self._pending.setdefault(gk, {})[key] = now
        if g.kind == ATG:
            nodes = g.nodes
            if was is not None:
                n = was.node or ""
                if nodes[n] == 1:
                    del nodes[n]
                else:
                    nodes[n] -= 1
            if now is not None:
                n = now.node or ""
                nodes[n] = nodes.get(n, 0) + 1

    def _candidates(self, p: Pod) -> set[GroupKey]:
        out: set[GroupKey] = set()
        for scope in (p.namespace, "*"):
            d = self.by_scope.get(scope)
            if d is None:
                continue
            s = d.get(None)
            if s:
                out |= s
            for kv in p.labels:
                s = d.get(kv)
                if s:
                    out |= s
        return out

    def _matches(self, g: _Group, p: Pod, labels: dict[str, str]) -> bool:
        if not _eligible(g.kind, p):
            return False
        gs = g.selector
        if gs.ns_selector is None:
            if p.namespace != (gs.namespace or "default"):
                return False
        elif not gs.ns_selector.matches(self.index.ns_labels(p.namespace)):
            return False
        return gs.pod_selector is None or gs.pod_selector.matches(labels)

    def _pod(self, key: str, old: Pod | None, new: Pod | None) -> None:
        if old == new:
            return
        if old is not None:
            self.index.remove(old)
        if new is not None:
            self.index.add(new)
        was_m = self.members.get(key)
        if old is not None and was_m is None:
            was_m = _member(old)
        now_m = None
        if new is not None:
            now_m = _member(new)
            if now_m == was_m:
                now_m = was_m
            self.members[key] = now_m
        else:
            self.members.pop(key, None)
        cands = set()
        if old is not None:
            cands = self._candidates(old)
        if new is not None:
            cands |= self._candidates(new)
        old_labels = old.label_map if old is not None else {}
        new_labels = new.label_map if new is not None else {}
        groups = self.groups
        for gk in cands:
            g = groups[gk]
            was = was_m if old is not None and self._matches(g, old, old_labels) else None
            now = now_m if new is not None and self._matches(g, new, new_labels) else None
            self._set_member(gk, g, key, was, now)

    def _namespace(self, name: str, new: Namespace | None) -> None:
        index = self.index
        before = index.ns_labels(name)
        index.set_namespace(name, new)
        after = index.ns_labels(name)
        if before == after:
            return
        groups = self.groups
        for gks in self.by_scope.get("*", {}).values():
            for gk in list(gks):
                g = groups[gk]
                sel = g.selector.ns_selector
                assert sel is not None
                was, now = sel.matches(before), sel.matches(after)
                if was == now:
                    continue
                psel = g.selector.pod_selector if g.selector.pod_selector is not None else EVERYTHING
                for k in index.select_in(name, psel):
                    p = index.pods[k]
                    if _eligible(g.kind, p):
                        m = self.members.get(k)
                        if m is None:
                            m = self.members[k] = _member(p)
                        self._set_member(gk, g, k, m if was else None, m if now else None)

    def _policy(self, key: str, new: NetworkPolicy | None) -> None:
        old = self.k8s.get(key)
        if old == new:
            return
        self._touch(NP, key)
        old_t = self.translated.pop(key, None)
        self.state.policies.pop(key, None)
        t = None
        if new is not None:  # the new translation is linked first: the groups it keeps stay (no re-selection)
            atg_sel: Selectors = {}
            ag_sel: Selectors = {}
            t = translate(new, _Namer(cache=False), atg_sel, ag_sel)
            self._link(key, t, ag_sel, atg_sel)
            self.k8s[key] = new
            self.translated[key] = t
            self._dirty_policies.add(key)
        else:
            del self.k8s[key]
        if old_t is not None:
            self._unlink(key, old_t, keep=t)

    def update(self, pods: dict[str, Pod | None] | None = None, namespaces: dict[str, Namespace | None] | None = None,
               policies: dict[str, NetworkPolicy | None] | None = None) -> Diff:
        """Apply changes (key -> the object now, None: deleted) and return what differs in the state,
        ordered as `diff` orders it. Namespaces first, then policies, then Pods: each step keeps every
        group equal to its selector over the objects seen so far.

        If it raises, the state's objects are put back as they were and the engine must not be used
        again (its indexes may be half-updated): build a new one."""
        try:
            for name, ns in (namespaces or {}).items():
                self._namespace(name, ns)
            for key, np in (policies or {}).items():
                self._policy(key, np)
            for key, p in (pods or {}).items():
                self._pod(key, self.index.pods.get(key), p)
            self._settle()
        except BaseException:
            for (kind, name), before in self._before.items():
                objects = self._objects(kind)
                if before is None:
                    objects.pop(name, None)
                else:
                    objects[name] = before
            self._before, self._pending = {}, {}
            raise
        try:
            out: Diff = []
            for (kind, name), before in self._before.items():
                after = self._objects(kind).get(name)
                if before is not after and before != after:
                    out.append((kind, name, before, after))
            out.sort(key=lambda c: (_KIND_ORDER[c[0]], c[1]))
            return out
        finally:
            self._before, self._pending = {}, {}
            self._dirty_policies, self._dirty_ags = set(), set()

    def _settle(self) -> None:
        """Members into the groups' values, then spans: AppliedToGroups, their policies, AddressGroups."""
        st, groups = self.state, self.groups
        for (kind, name), pending in self._pending.items():
            if kind != ATG:
                continue
            g = groups[(ATG, name)]
            old = st.applied_to_groups[name]
            span = tuple(sorted(g.nodes))
            st.applied_to_groups[name] = cp.AppliedToGroup(name, old.selector, _with_members(old.pods, pending), span)
            if span != old.span:
                self._span_moved(name, g, old.span, span)
        for key in self._dirty_policies:
            t = self.translated.get(key)
            if t is None:
                continue
            self._touch(NP, key)
            span = self._span_of(t)
            cur = st.policies.get(key)
            if cur is None or cur.span != span:
                st.policies[key] = t.policy(span)
        for (kind, name), pending in self._pending.items():
            if kind == AG:
                self._dirty_ags.add(name)
        for name in self._dirty_ags:
            g = groups[(AG, name)]
            old_ag = st.address_groups[name]
            changed = self._pending.get((AG, name))
            pods = _with_members(old_ag.pods, changed) if changed else old_ag.pods
            span = tuple(sorted(g.nodes))
            if pods is not old_ag.pods or span != old_ag.span:
                self._touch(AG, name)
                st.address_groups[name] = cp.AddressGroup(name, old_ag.selector, pods, span)

    def _span_moved(self, atg: str, g: _Group, old: tuple[str, ...], new: tuple[str, ...]) -> None:
        """AppliedToGroup `atg`'s span changed: its policies' spans, and the AddressGroups they use."""
        added = set(new).difference(old)
        removed = set(old).difference(new)
        groups = self.groups
        for ag in g.pairs:
            nodes = groups[(AG, ag)].nodes
            for n in added:
                nodes[n] = nodes.get(n, 0) + 1
            for n in removed:
                if nodes[n] == 1:
                    del nodes[n]
                else:
                    nodes[n] -= 1
            self._dirty_ags.add(ag)
        self._dirty_policies.update(g.users)


_KIND_ORDER = {AG: 0, ATG: 1, NP: 2}


def diff(before: PolicyState, after: PolicyState) -> Diff:
    """Every object that differs between two states: AddressGroups, AppliedToGroups, then policies, by name."""
    out: Diff = []
    for kind, b, a in ((AG, before.address_groups, after.address_groups),
                       (ATG, before.applied_to_groups, after.applied_to_groups),
                       (NP, before.policies, after.policies)):
        for name in sorted(b.keys() | a.keys()):
            o, n = b.get(name), a.get(name)
            if o is not n and o != n:
                out.append((kind, name, o, n))
    return out


class NetworkPolicyController:
    """Computes the internal policies and their groups from Kubernetes objects."""

    def __init__(self, pods: Iterable[Pod], namespaces: Iterable[Namespace],
                 policies: Iterable[NetworkPolicy]):
        self.pods = list(pods)
        self.namespaces = list(namespaces)
        self.k8s_policies = sorted(policies, key=lambda p: p.key)

    def engine(self) -> PolicyEngine:
        return PolicyEngine(self.pods, self.namespaces, self.k8s_policies)

    def compute(self) -> PolicyState:
        return self.engine().state
