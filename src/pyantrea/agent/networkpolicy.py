"""NetworkPolicy realization in the agent: internal rules -> OpenFlow policy rules (spec §8.2–§8.3, §8.6).

Input is what the controller sends this node (a `NodePolicyView`) and the local interface store.
Output is a list of `OFRule`s with conj_ids allocated in a fixed order, so flows are deterministic:
policies by namespace/name, rules in internal-rule order, named-port groups by key.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple
from dataclasses import dataclass

from pyantrea.apis import controlplane as cp
from pyantrea.apis.k8s import PodInterface
from pyantrea.apis.controlplane import NodePolicyView


class Address(NamedTuple):
    """One value of a From/To clause: an IPv4 network (a /32 for a single IP) or an OVS port.

    A NamedTuple rather than a dataclass: a compile hashes hundreds of thousands of them.
    """

    kind: str  # "net" | "ofport"
    value: str  # "10.0.0.1/32", "0.0.0.0/0" or "49"

    @staticmethod
    def net(cidr: str) -> Address:
        return _net_address(cidr)

    @staticmethod
    def ofport(port: int) -> Address:
        return Address("ofport", str(port))


@functools.lru_cache(maxsize=65536)
def _net_address(cidr: str) -> Address:
    """Parsing is the costly part of a compile: each address is parsed once, however many rules use it."""
    return Address("net", str(ipaddress.IPv4Network(cidr, strict=False)))


BASELINE_TIER_PRIORITY = 253  # apis.crd.BASELINE_TIER_PRIORITY


@dataclass(frozen=True)
class OFRule:
    """One OpenFlow policy rule = one conjunction (types.PolicyRule in Antrea)."""

    conj_id: int
    direction: str  # In | Out
    from_: tuple[Address, ...]
    to: tuple[Address, ...]
    services: tuple[cp.Service, ...] | None  # None: no service clause
    policy: str  # the policy's key: ns/name (K8s), ACNP:name, ANP:ns/name
    rule_index: int  # index of the internal rule inside its policy
    # Antrea-native rules (None / defaults for Kubernetes NetworkPolicy rules)
    action: str = "Allow"  # Allow | Drop | Reject | Pass
    priority: tuple[int, float, int] | None = None  # (tier priority, policy priority, rule priority)
    of_priority: int | None = None  # its OpenFlow priority (agent/openflow/priority.py)
    name: str | None = None  # the rule's name
    tier: str | None = None  # the Tier's name

    @property
    def family(self) -> str:
        """Where its flows go: "k8s" (tables 50/90), "antrea" (45/85) or "baseline" (60/100)."""
        if self.priority is None:
            return "k8s"
        return "baseline" if self.priority[0] == BASELINE_TIER_PRIORITY else "antrea"


def rule_to_dict(r: OFRule) -> dict[str, object]:
    """The agent API's form of a rule (what live traces read: the agent's own conj_ids)."""
    d: dict[str, object] = {
        "conjID": r.conj_id, "direction": r.direction, "policy": r.policy, "ruleIndex": r.rule_index,
        "from": [list(a) for a in r.from_], "to": [list(a) for a in r.to],
        "services": None if r.services is None else [cp.to_dict(s) for s in r.services]}
    if r.priority is not None:
        d.update({"action": r.action, "priority": list(r.priority), "ofPriority": r.of_priority, "name": r.name,
                  "tier": r.tier})
    return d


def rule_from_dict(d: dict[str, Any]) -> OFRule:
    svcs = d.get("services")
    prio = d.get("priority")
    return OFRule(int(d["conjID"]), str(d["direction"]), tuple(Address(a[0], a[1]) for a in d["from"]),
                  tuple(Address(a[0], a[1]) for a in d["to"]),
                  None if svcs is None else tuple(cp.service_from_dict(s) for s in svcs),
                  str(d["policy"]), int(d["ruleIndex"]), str(d.get("action", "Allow")),
                  None if prio is None else (int(prio[0]), float(prio[1]), int(prio[2])), d.get("ofPriority"),
                  d.get("name"), d.get("tier"))


def ipblock_cidrs(block: cp.IPBlock) -> list[str]:
    """cidr minus the union of its excepts, as a list of CIDRs (spec §8.6)."""
    base = ipaddress.IPv4Network(block.cidr, strict=False)
    excepts = sorted({ipaddress.IPv4Network(e, strict=False) for e in block.except_},
                     key=lambda n: (n.prefixlen, int(n.network_address)))
    normalized: list[ipaddress.IPv4Network] = []
    for e in excepts:
        if not any(e.subnet_of(x) for x in normalized):
            normalized.append(e)
    blocks = [base]
    for e in normalized:
        changed = True
        while changed:
            changed = False
            for i, b in enumerate(blocks):
                if e.subnet_of(b) and e != b:
                    pieces = []
                    e_addr = int(e.network_address)
                    for length in range(b.prefixlen + 1, e.prefixlen + 1):
                        flipped = e_addr ^ (1 << (32 - length))
                        mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
                        pieces.append(ipaddress.IPv4Network((flipped & mask, length)))
                    blocks[i:i + 1] = pieces
                    changed = True
                    break
                if b.subnet_of(e):
                    del blocks[i]
                    changed = True
                    break
    return [str(b) for b in blocks]


ServicesKey = tuple[tuple[str, str, str], ...]


def _resolve(svc: cp.Service, member: cp.GroupMemberPod) -> cp.Service:
    """A named port -> the member's number; unresolvable names stay named (Antrea's resolveService)."""
    if not svc.named:
        return svc
    port = member.resolve(str(svc.port), svc.protocol)
    if port is None:
        return svc
    return cp.Service(svc.protocol, port, svc.end_port)


def _key(services: Iterable[cp.Service] | None) -> ServicesKey:
    if services is None:
        return ()
    return tuple((s.protocol, "" if s.port is None else repr(s.port), "" if s.end_port is None else str(s.end_port))
                 if s.icmp_type is None and s.icmp_code is None else
                 (s.protocol, f"icmp{s.icmp_type}/{s.icmp_code}", "") for s in services)


def _filter_unresolved(services: tuple[cp.Service, ...] | None) -> tuple[cp.Service, ...] | None:
    if services is None:
        return None
    return tuple(s for s in services if not s.named)


def group_by_services(services: tuple[cp.Service, ...] | None, members: Iterable[cp.GroupMemberPod]
                      ) -> dict[ServicesKey, tuple[tuple[cp.Service, ...] | None, list[cp.GroupMemberPod]]]:
    """Members grouped by their resolved services (Antrea's groupMembersByServices)."""
    members = list(members)
    if services is None or not any(s.named for s in services):
        return {_key(services): (services, members)}
    out: dict[ServicesKey, tuple[tuple[cp.Service, ...] | None, list[cp.GroupMemberPod]]] = {}
    for m in members:
        resolved = tuple(_resolve(s, m) for s in services)
        k = _key(resolved)
        if k not in out:
            out[k] = (resolved, [])
        out[k][1].append(m)
    return out


class ConjIDAllocator:
    """Per-agent allocator from 1; released ids are reused first-in-first-out (spec §8.4).

    Ids are bound to a rule's identity (its policy, its content and its named-port group), so a
    rule keeps its conj_id while other rules come and go: a policy change then touches only the
    flows of the rules that changed.
    """

    def __init__(self) -> None:
        self._next = 1
        self._free: list[int] = []
        self._by_key: dict[object, int] = {}
        self._used: set[object] = set()

    def allocate(self) -> int:
        if self._free:
            return self._free.pop(0)
        i = self._next
        self._next += 1
        return i

    def release(self, i: int) -> None:
        self._free.append(i)

    def begin(self) -> None:
        self._used = set()

    def get(self, key: object) -> int:
        self._used.add(key)
        if key not in self._by_key:
            self._by_key[key] = self.allocate()
        return self._by_key[key]

    def end(self, only: set[str] | None = None) -> None:
        """Release the ids of rules that were not seen since `begin()`, in allocation order.

        With `only` (policy keys), just the rules of those policies are considered: the others were
        not recomputed, so they keep their ids.
        """
        for key, i in sorted(self._by_key.items(), key=lambda kv: kv[1]):
            if key not in self._used and (only is None or _policy_of(key) in only):
                del self._by_key[key]
                self.release(i)


def _policy_of(key: object) -> str:
    return str(key[1]) if isinstance(key, tuple) and len(key) > 1 else ""


def compute_rules(view: NodePolicyView, interfaces: Mapping[str, PodInterface],
                  alloc: ConjIDAllocator | None = None, only: set[str] | None = None) -> list[OFRule]:
    """Every OpenFlow policy rule of a node. `interfaces` maps "ns/pod" to the local interface.

    With `only` (policy keys ns/name), the rules of just those policies: the rule cache's
    reconciliation of the policies an event touched (the other policies keep their rules and ids).
    """
    alloc = alloc or ConjIDAllocator()
    alloc.begin()
    out: list[OFRule] = []
    # Peers are shared by many rules (selectors are shared): resolve each one once per call.
    members_of: dict[tuple[str, ...], list[cp.GroupMemberPod]] = {}
    addresses_of: dict[tuple[str, ...], list[Address]] = {}
    blocks_of: dict[tuple[cp.IPBlock, ...], list[Address]] = {}

    def peer_members(groups: tuple[str, ...]) -> list[cp.GroupMemberPod]:
        got = members_of.get(groups)
        if got is None and len(groups) == 1:  # one group: its members are already unique and sorted
            ag = view.address_groups.get(groups[0])
            got = members_of[groups] = list(ag.pods) if ag is not None else []
        if got is None:
            members: dict[str, cp.GroupMemberPod] = {}
            for g in groups:
                for m in view.address_groups[g].pods if g in view.address_groups else ():
                    members.setdefault(m.key, m)
            got = members_of[groups] = [members[k] for k in sorted(members)]
        return got

    def peer_addresses(groups: tuple[str, ...]) -> list[Address]:
        got = addresses_of.get(groups)
        if got is None:
            got = addresses_of[groups] = [Address.net(m.ip) for m in peer_members(groups) if m.ip]
        return got

    clause_lists: dict[tuple[object, ...], tuple[Address, ...]] = {}
    grouped: dict[tuple[object, ...], dict[ServicesKey, tuple[tuple[cp.Service, ...] | None,
                                                              list[cp.GroupMemberPod]]]] = {}

    def grouped_by_services(key: tuple[object, ...], services: tuple[cp.Service, ...] | None,
                            members: Callable[[], list[cp.GroupMemberPod]]) -> dict[
            ServicesKey, tuple[tuple[cp.Service, ...] | None, list[cp.GroupMemberPod]]]:
        got = grouped.get(key)
        if got is None:
            got = grouped[key] = group_by_services(services, members())
        return dict(got)

    def clause(key: tuple[object, ...], make: Callable[[], list[Address]]) -> tuple[Address, ...]:
        """One tuple object per distinct clause list: rules that share a peer share the tuple."""
        got = clause_lists.get(key)
        if got is None:
            got = clause_lists[key] = tuple(_dedup(make()))
        return got

    def block_addresses(blocks: tuple[cp.IPBlock, ...]) -> list[Address]:
        got = blocks_of.get(blocks)
        if got is None:
            got = blocks_of[blocks] = [Address.net(c) for b in blocks for c in ipblock_cidrs(b)]
        return got

    targets_of: dict[tuple[str, ...], list[cp.GroupMemberPod]] = {}

    def local_targets(groups: tuple[str, ...]) -> list[cp.GroupMemberPod]:
        got = targets_of.get(groups)
        if got is None:
            got = []
            seen: set[str] = set()
            for g in groups:
                for m in view.applied_to_groups[g].pods if g in view.applied_to_groups else ():
                    if m.node == view.node and m.key not in seen:
                        seen.add(m.key)
                        got.append(m)
            got.sort(key=lambda m: m.key)
            targets_of[groups] = got
        return got

    for pol in sorted(view.policies, key=lambda p: (p.namespace, p.name)):
        if only is not None and pol.key not in only:
            continue
        antrea = pol.type is not None  # an Antrea-native policy: rules ordered by priority, with actions
        policy_targets = local_targets(pol.applied_to_groups)
        seen_rules: set[cp.NetworkPolicyRule] = set()
        for idx, rule in enumerate(pol.rules):
            # A rule's identity is its content plus its policy (spec §8.2): identical rules of one
            # policy are one rule, with one conj_id.
            if rule in seen_rules:
                continue
            seen_rules.add(rule)
            targets = policy_targets if rule.applied_to_groups is None else local_targets(rule.applied_to_groups)
            if antrea and not targets:
                continue  # an Antrea-native rule applied to no Pod of this node has no flows here
            extra: dict[str, Any] = {}
            if antrea:
                extra = {"action": rule.action, "name": rule.name, "tier": pol.tier,
                         "priority": (pol.tier_priority if pol.tier_priority is not None else 250,
                                      pol.priority if pol.priority is not None else 0.0, rule.priority)}
            peer = rule.peer
            blocks = block_addresses(peer.ip_blocks)
            built: list[tuple[tuple[Address, ...], tuple[Address, ...], tuple[cp.Service, ...] | None]] = []
            group_keys: list[ServicesKey] = []
            if rule.direction == "In":
                from_ = clause(("peer", peer.address_groups, peer.ip_blocks),
                               lambda: peer_addresses(peer.address_groups) + blocks)
                groups = grouped_by_services(("targets", pol.key, rule.applied_to_groups, rule.services),
                                            rule.services, lambda: targets)
                for k in sorted(groups):
                    svcs, pods = groups[k]
                    to = clause(("ofports", tuple(p.key for p in pods)),
                                lambda: [Address.ofport(interfaces[p.key].ofport) for p in pods if p.key in interfaces])
                    built.append((from_, to, _filter_unresolved(svcs)))
                    group_keys.append(k)
            else:
                from_ = clause(("pods", tuple(p.key for p in targets)),
                               lambda: [Address.net(interfaces[p.key].ip) for p in targets if p.key in interfaces])
                groups = grouped_by_services(("peers", peer.address_groups, rule.services), rule.services,
                                             lambda: [m for m in peer_members(peer.address_groups) if m.ip])
                original = _key(rule.services)
                if original not in groups:
                    groups[original] = (rule.services, [])
                for k in sorted(groups, key=lambda k: (k != original, k)):
                    svcs, pods = groups[k]
                    if len(groups) == 1:
                        to = clause(("peer", peer.address_groups, peer.ip_blocks),
                                    lambda: peer_addresses(peer.address_groups) + blocks)
                    else:
                        to = clause(("members", tuple(p.key for p in pods), peer.ip_blocks if k == original else ()),
                                    lambda: [Address.net(p.ip) for p in pods if p.ip] + (blocks if k == original else []))
                    built.append((from_, to, _filter_unresolved(svcs)))
                    group_keys.append(k)
            for n, (from_addrs, to_addrs, svcs) in enumerate(built):
                key = (pol.uid, pol.key, rule, group_keys[n])
                out.append(OFRule(alloc.get(key), rule.direction, from_addrs, to_addrs, svcs, pol.key, idx, **extra))
    alloc.end(only)
    return out


def peer_clause(view: NodePolicyView, peer: cp.NetworkPolicyPeer) -> tuple[Address, ...]:
    """The addresses of a peer as `compute_rules` lists them (its groups' members with an IP, by key,
    then its IP blocks): what an AddressGroup patch changes in the rules that use the group."""
    members: dict[str, cp.GroupMemberPod] = {}
    for g in peer.address_groups:
        for m in view.address_groups[g].pods if g in view.address_groups else ():
            members.setdefault(m.key, m)
    ordered = members.values() if len(peer.address_groups) == 1 else [members[k] for k in sorted(members)]
    addrs = [Address.net(m.ip) for m in ordered if m.ip]
    addrs += [Address.net(c) for b in peer.ip_blocks for c in ipblock_cidrs(b)]
    return tuple(_dedup(addrs))


def _dedup(addrs: list[Address]) -> list[Address]:
    return list(dict.fromkeys(addrs))
