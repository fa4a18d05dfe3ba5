"""Kubernetes NetworkPolicy -> AppliedToGroups, AddressGroups and internal NetworkPolicies (spec §9).

Each group is computed once (keyed by its normalized selector), whatever number of policies use it,
and so is its span. Pods are found through a label index, not by scanning every Pod per selector.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from pyantrea.apis import controlplane as cp
from pyantrea.apis.k8s import LabelSelector, Namespace, NetworkPolicy, NetworkPolicyPeer, Pod

NodePolicyView = cp.NodePolicyView  # re-exported: the agent's input

GROUP_NAMESPACE = uuid.UUID("5a5e7dd9-e3fb-49bb-b263-9bab25c95841")


def group_name(normalized: str) -> str:
    return str(uuid.uuid5(GROUP_NAMESPACE, normalized))


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


class PodIndex:
    """Pods by namespace and by label, for selector evaluation in near-linear time."""

    def __init__(self, pods: Iterable[Pod], namespaces: Iterable[Namespace]):
        self.pods: dict[str, Pod] = {}
        self.by_ns: dict[str, set[str]] = defaultdict(set)
        self.by_label: dict[tuple[str, str, str], set[str]] = defaultdict(set)  # (ns, k, v)
        self.by_key: dict[tuple[str, str], set[str]] = defaultdict(set)  # (ns, k)
        for p in pods:
            self.pods[p.key] = p
            self.by_ns[p.namespace].add(p.key)
            for k, v in p.labels:
                self.by_label[(p.namespace, k, v)].add(p.key)
                self.by_key[(p.namespace, k)].add(p.key)
        self.namespaces = {n.name: n for n in namespaces}
        for ns in self.by_ns:
            self.namespaces.setdefault(ns, Namespace(name=ns))

    def select_in(self, ns: str, sel: LabelSelector) -> set[str]:
        everyone = self.by_ns.get(ns, set())
        if sel.is_empty():
            return set(everyone)
        sets: list[set[str]] = []
        for k, v in sel.match_labels:
            sets.append(self.by_label.get((ns, k, v), set()))
        for r in sel.match_expressions:
            if r.operator == "In":
                s: set[str] = set()
                for v in r.values:
                    s |= self.by_label.get((ns, r.key, v), set())
                sets.append(s)
            elif r.operator == "NotIn":
                s = set()
                for v in r.values:
                    s |= self.by_label.get((ns, r.key, v), set())
                sets.append(everyone - s)
            elif r.operator == "Exists":
                sets.append(self.by_key.get((ns, r.key), set()))
            elif r.operator == "DoesNotExist":
                sets.append(everyone - self.by_key.get((ns, r.key), set()))
        sets.sort(key=len)
        result = set(sets[0])
        for s in sets[1:]:
            result &= s
            if not result:
                break
        return result

    def select(self, gs: GroupSelector) -> list[Pod]:
        if gs.ns_selector is not None:
            namespaces = [n for n, obj in self.namespaces.items() if gs.ns_selector.matches(obj.label_map)]
        else:
            namespaces = [gs.namespace or "default"]
        keys: set[str] = set()
        psel = gs.pod_selector if gs.pod_selector is not None else LabelSelector()
        for ns in namespaces:
            keys |= self.select_in(ns, psel)
        return [self.pods[k] for k in sorted(keys)]


def _member(p: Pod) -> cp.GroupMemberPod:
    return cp.GroupMemberPod(p.namespace, p.name, p.pod_ip, p.node_name, p.ports)


@dataclass
class PolicyState:
    """The controller's whole computed state (what it serves to agents)."""

    policies: dict[str, cp.NetworkPolicy] = field(default_factory=dict)  # by ns/name
    applied_to_groups: dict[str, cp.AppliedToGroup] = field(default_factory=dict)
    address_groups: dict[str, cp.AddressGroup] = field(default_factory=dict)

    def node_view(self, node: str) -> cp.NodePolicyView:
        """What an agent on `node` receives: objects whose span includes it (spec §9.4)."""
        pols = tuple(p for _, p in sorted(self.policies.items()) if node in p.span)
        atgs = {n: g.for_node(node) for n, g in self.applied_to_groups.items() if node in g.span}
        ags = {n: g for n, g in self.address_groups.items() if node in g.span}
        return cp.NodePolicyView(node, pols, atgs, ags)


ALL_NETWORK = cp.IPBlock("0.0.0.0/0")


class NetworkPolicyController:
    """Computes the internal policies and their groups from Kubernetes objects."""

    def __init__(self, pods: Iterable[Pod], namespaces: Iterable[Namespace],
                 policies: Iterable[NetworkPolicy]):
        self.pods = list(pods)
        self.namespaces = list(namespaces)
        self.k8s_policies = sorted(policies, key=lambda p: p.key)

    # ------------------------------------------------------------------ translation
    def _peers(self, np: NetworkPolicy, peers: tuple[NetworkPolicyPeer, ...], egress: bool,
               named: bool, ags: dict[str, GroupSelector]) -> cp.NetworkPolicyPeer:
        if not peers:
            groups: tuple[str, ...] = ()
            if egress and named:
                all_pods = GroupSelector(None, None, LabelSelector())
                ags[all_pods.name] = all_pods
                groups = (all_pods.name,)
            return cp.NetworkPolicyPeer(address_groups=groups, ip_blocks=(ALL_NETWORK,))
        names: list[str] = []
        blocks: list[cp.IPBlock] = []
        for peer in peers:
            if peer.ip_block is not None:
                blocks.append(cp.IPBlock(peer.ip_block.cidr, tuple(peer.ip_block.except_)))
                continue
            gs = GroupSelector(None if peer.namespace_selector is not None else np.namespace,
                               peer.pod_selector, peer.namespace_selector)
            ags[gs.name] = gs
            if gs.name not in names:
                names.append(gs.name)
        return cp.NetworkPolicyPeer(address_groups=tuple(names), ip_blocks=tuple(blocks))

    @staticmethod
    def _services(ports) -> tuple[cp.Service, ...] | None:
        if not ports:
            return None
        return tuple(cp.Service(p.protocol or "TCP", p.port, p.end_port) for p in ports)

    def translate(self, np: NetworkPolicy, atgs: dict[str, GroupSelector],
                  ags: dict[str, GroupSelector]) -> cp.NetworkPolicy:
        applied = GroupSelector(np.namespace, np.pod_selector, None)
        atgs[applied.name] = applied
        rules: list[cp.NetworkPolicyRule] = []
        for r in np.ingress:
            svcs = self._services(r.ports)
            named = any(s.named for s in svcs or ())
            rules.append(cp.NetworkPolicyRule("In", from_=self._peers(np, r.peers, False, named, ags),
                                              services=svcs))
        if "Ingress" in np.policy_types and not np.ingress:
            rules.append(cp.NetworkPolicyRule("In", from_=cp.NetworkPolicyPeer()))
        for r in np.egress:
            svcs = self._services(r.ports)
            named = any(s.named for s in svcs or ())
            rules.append(cp.NetworkPolicyRule("Out", to=self._peers(np, r.peers, True, named, ags),
                                              services=svcs))
        if "Egress" in np.policy_types and not np.egress:
            rules.append(cp.NetworkPolicyRule("Out", to=cp.NetworkPolicyPeer()))
        return cp.NetworkPolicy(uid=np.uid or f"{np.namespace}/{np.name}", namespace=np.namespace,
                                name=np.name, rules=tuple(rules), applied_to_groups=(applied.name,))

    # ------------------------------------------------------------------ computation
    def compute(self) -> PolicyState:
        atg_sel: dict[str, GroupSelector] = {}
        ag_sel: dict[str, GroupSelector] = {}
        internal = [self.translate(np, atg_sel, ag_sel) for np in self.k8s_policies]

        index = PodIndex(self.pods, self.namespaces)
        state = PolicyState()
        members: dict[str, cp.GroupMemberPod] = {}  # one value per Pod, shared by all its groups

        def member(p: Pod) -> cp.GroupMemberPod:
            m = members.get(p.key)
            if m is None:
                m = members[p.key] = _member(p)
            return m

        # AppliedToGroups: scheduled, not hostNetwork, not terminated Pods (spec §9.3).
        for name, gs in sorted(atg_sel.items()):
            atg = [member(p) for p in index.select(gs) if p.node_name and not p.host_network and not p.terminated]
            span = tuple(sorted({m.node for m in atg if m.node}))
            state.applied_to_groups[name] = cp.AppliedToGroup(name, gs.normalized, tuple(atg), span)
        # Internal policies: span = union of their AppliedToGroups' spans.
        ag_span: dict[str, set[str]] = defaultdict(set)
        for pol in internal:
            nodes: set[str] = set()
            for g in pol.applied_to_groups:
                nodes.update(state.applied_to_groups[g].span)
            pol = cp.NetworkPolicy(pol.uid, pol.namespace, pol.name, pol.rules, pol.applied_to_groups,
                                   tuple(sorted(nodes)))
            state.policies[pol.key] = pol
            for rule in pol.rules:
                for g in rule.peer.address_groups:
                    ag_span[g] |= nodes
        # AddressGroups: Pods with an IP, not hostNetwork, not terminated; span from the policies.
        for name, gs in sorted(ag_sel.items()):
            ag = [member(p) for p in index.select(gs) if p.pod_ip and not p.host_network and not p.terminated]
            state.address_groups[name] = cp.AddressGroup(name, gs.normalized, tuple(ag), tuple(sorted(ag_span[name])))
        return state
