"""OpenFlow policy rules -> conjunctive match flows, action flows and default drop flows (spec §8.4, §8.7).

Match flows are shared: one flow per (table, priority, match), carrying every conjunction that
needs it. Drop flows are shared the same way. Conjunction actions are printed sorted by (id, clause)
so the output does not depend on insertion order.
"""

from __future__ import annotations

import functools
from collections import Counter

from pyantrea.agent.networkpolicy import Address, OFRule
from pyantrea.agent.openflow import tables as T
from pyantrea.agent.openflow.cookie import Category, cookie
from pyantrea.agent.openflow.pipeline import PRIORITY_LOW, PRIORITY_NORMAL
from pyantrea.apis import controlplane as cp
from pyantrea.ovs.flow import Action, Conjunction, Controller, Flow, Goto, Load, Match, ip_match, match


def port_range_matches(start: int, end: int) -> list[str]:
    """[start, end] as the fewest value/mask tp_dst matches, split greedily from the low end."""
    if start == end:
        return [str(start)]
    out = []
    p = start
    while p <= end:
        size = 1
        while p % (size * 2) == 0 and p + size * 2 - 1 <= end and size * 2 <= 0x10000:
            size *= 2
        if size == 1:
            out.append(str(p))
        else:
            out.append(f"0x{p:x}/0x{(0xFFFF & ~(size - 1)):x}")
        p += size
    return out


def service_matches(s: cp.Service) -> list[Match]:
    proto = s.protocol.lower()
    if proto == "icmp":  # Antrea-native policies' protocols: ICMP type and code
        return [match(proto="icmp", icmp_type=s.icmp_type, icmp_code=s.icmp_code)]
    if s.port is None:
        return [match(proto=proto)]
    assert isinstance(s.port, int)
    end = s.end_port if s.end_port is not None else s.port
    return [match(proto=proto, tp_dst=v) for v in port_range_matches(s.port, end)]


@functools.lru_cache(maxsize=65536)
def address_match(a: Address, direction_field: str) -> Match:
    if a.kind == "ofport":
        return match(proto="ip", reg1=f"0x{int(a.value):x}")
    return match(proto="ip", **{direction_field: ip_match(a.value)})


@functools.lru_cache(maxsize=65536)
def _conjunction(c: tuple[int, int, int]) -> Conjunction:
    return Conjunction(*c)


@functools.lru_cache(maxsize=4096)
def _service_matches(s: cp.Service) -> tuple[Match, ...]:
    return tuple(service_matches(s))


# Where a rule's flows go: its table and the priority of its match flows and of its action flow.
_TABLES = {("k8s", "In"): T.INGRESS_RULE, ("k8s", "Out"): T.EGRESS_RULE,
           ("antrea", "In"): T.ANP_INGRESS_RULE, ("antrea", "Out"): T.ANP_EGRESS_RULE,
           ("baseline", "In"): T.INGRESS_DEFAULT, ("baseline", "Out"): T.EGRESS_DEFAULT}
REJECT_MAX_LEN = 128  # the headers reject_reply needs (agent/openflow/reject.py)


def rule_table(r: OFRule) -> int:
    return _TABLES[(r.family, r.direction)]


def rule_priorities(r: OFRule) -> tuple[int, int]:
    """(match flows' priority, action flow's priority): 200/190 for Kubernetes NetworkPolicy rules, the
    rule's own OpenFlow priority for both otherwise."""
    if r.priority is None:
        return PRIORITY_NORMAL, PRIORITY_LOW
    assert r.of_priority is not None, f"rule {r.conj_id} of {r.policy} has no OpenFlow priority"
    return r.of_priority, r.of_priority


def action_flow(r: OFRule, round_num: int, p: T.Pipeline) -> Flow:
    """The conjunction action flow: the rule's id into reg5 (egress) / reg6 (ingress), then its action.
    Allow: on to L3Forwarding (egress) / ConntrackCommit (ingress), past the remaining policy tables;
    Drop: nothing more; Reject: to the agent, which answers the client (packet-in); Pass: to the
    Kubernetes NetworkPolicy table of the direction (the remaining Antrea-native tiers are skipped)."""
    ingress = r.direction == "In"
    reg = "NXM_NX_REG6" if ingress else "NXM_NX_REG5"
    after_default = p.next(T.INGRESS_DEFAULT if ingress else T.EGRESS_DEFAULT)
    acts: tuple[Action, ...]
    if r.action == "Pass":
        acts = (Goto(T.INGRESS_RULE if ingress else T.EGRESS_RULE),)
    elif r.action == "Drop":
        acts = (Load(r.conj_id, reg),)
    elif r.action == "Reject":
        acts = (Load(r.conj_id, reg), Controller(max_len=REJECT_MAX_LEN))
    else:
        acts = (Load(r.conj_id, reg), Goto(after_default))
    return Flow(rule_table(r), rule_priorities(r)[1], match(conj_id=r.conj_id, proto="ip"), acts,
                cookie(round_num, Category.POLICY))


class PolicyFlows:
    """Accumulates the flows of a set of OFRules for one node.

    Rules share their clause lists (one tuple per peer, built once by `compute_rules`), so while
    rules are added only (clause list, conjunction) pairs are recorded; each list is expanded to
    its addresses once, in `flows()`. Match and Flow values are built once per distinct flow.
    Flows keep creation order: the order in which their match first appears.
    """

    def __init__(self, round_num: int = 1, pipeline: T.Pipeline = T.ARTICLE):
        self.round = round_num
        self.p = pipeline
        self._actions: list[Flow] = []
        # entries in creation order: key -> conjunctions. Keys: ("addrs", table, field, id(tuple)) for a
        # clause list (kept alive in self._lists), ("match", table, Match) for a service match.
        self._entries: dict[tuple[object, ...], list[tuple[int, int, int]]] = {}
        self._lists: dict[int, tuple[Address, ...]] = {}
        self._drops: dict[tuple[int, str, int], None] = {}

    def _entry(self, key: tuple[object, ...]) -> list[tuple[int, int, int]]:
        got = self._entries.get(key)
        if got is None:
            got = self._entries[key] = []
        return got

    def add_rule(self, r: OFRule) -> None:
        ingress = r.direction == "In"
        table = rule_table(r)
        prio = rule_priorities(r)[0]
        n = 2 + (1 if r.services is not None else 0)
        to_field = "nw_src" if ingress else "nw_dst"
        self._actions.append(action_flow(r, self.round, self.p))
        for clause, fld, addrs in ((1, "nw_src", r.from_), (2, to_field, r.to)):
            if addrs:
                self._lists[id(addrs)] = addrs
                self._entry(("addrs", table, prio, fld, id(addrs))).append((r.conj_id, clause, n))
        for svc in r.services or ():
            for m in _service_matches(svc):
                self._entry(("match", table, prio, m)).append((r.conj_id, 3, n))
        # default drop flows (Kubernetes NetworkPolicy rules only): egress From addresses, ingress To addresses
        daddrs = (r.to if ingress else r.from_) if r.priority is None else ()
        if daddrs:
            self._lists[id(daddrs)] = daddrs
            self._drops.setdefault((T.INGRESS_DEFAULT if ingress else T.EGRESS_DEFAULT,
                                    "" if ingress else "nw_src", id(daddrs)), None)

    def flows(self) -> list[Flow]:
        base = 100000  # after the builders' flows, in creation order
        pol = cookie(self.round, Category.POLICY)
        out: list[Flow] = [Flow(f.table, f.priority, f.match, f.actions, f.cookie, 0, base + i)
                           for i, f in enumerate(self._actions)]
        base += len(out)
        # (table, field, Address) or (table, "", Match) -> the conjunction lists that name it, in creation
        # order. Lists are appended by reference (one append per address of a clause list; a clause list
        # is shared by many rules), and merged once per flow.
        per_match: dict[tuple[object, object, object, object], list[list[tuple[int, int, int]]]] = {}
        get = per_match.get
        for key, conjs in self._entries.items():
            if key[0] == "addrs":
                _, table, prio, fld, lid = key
                for a in self._lists[lid]:  # type: ignore[index]
                    k = (table, prio, fld, a)
                    got = get(k)
                    if got is None:
                        per_match[k] = [conjs]
                    else:
                        got.append(conjs)
            else:
                per_match.setdefault((key[1], key[2], "", key[3]), []).append(conjs)
        for i, ((table, prio, fld, v), lists) in enumerate(per_match.items()):
            m = v if isinstance(v, Match) else address_match(v, fld)  # type: ignore[arg-type]
            merged = lists[0] if len(lists) == 1 else [c for lst in lists for c in lst]
            out.append(Flow(table, prio, m, tuple(map(_conjunction, sorted(set(merged)))),  # type: ignore[arg-type]
                            pol, 0, base + i))
        base += len(per_match)
        default = cookie(self.round, Category.DEFAULT)
        drops: dict[tuple[int, Match], None] = {}
        for table, fld, lid in self._drops:
            for a in self._lists[lid]:
                drops.setdefault((table, address_match(a, fld)), None)
        for i, (table, m) in enumerate(drops):
            out.append(Flow(table, PRIORITY_NORMAL, m, (), default, 0, base + i))
        return out


def policy_flows(rules: list[OFRule], round_num: int = 1, pipeline: T.Pipeline = T.ARTICLE) -> list[Flow]:
    pf = PolicyFlows(round_num, pipeline)
    for r in rules:
        pf.add_rule(r)
    return pf.flows()


ConjKey = tuple[int, int, int]  # conj_id, clause, n_clauses
MatchKey = tuple[int, int, str, object]  # table, priority, direction field ("" for a service match), Address | Match


class PolicyFlowIndex:
    """The policy flows of a node, kept up to date rule by rule (Antrea's per-rule reconciler).

    Every rule contributes its action flow, a conjunction to the match flow of each of its clause
    values, and a reference to the default drop flow of each address it isolates. The index keeps
    who contributes what, so replacing some rules by others touches only the flows whose
    conjunctions or references change, and `update` returns exactly those flow mods. The flows it
    holds are the same set `policy_flows` builds from the same rules.
    """

    def __init__(self, round_num: int = 1, pipeline: T.Pipeline = T.ARTICLE):
        self.round = round_num
        self.p = pipeline
        self.actions: dict[int, Flow] = {}
        self.conjs: dict[MatchKey, set[ConjKey]] = {}
        self.drops: dict[tuple[int, Match], int] = {}  # (table, match) -> references

    # ------------------------------------------------------------------ contributions of one rule
    def _action(self, r: OFRule) -> Flow:
        return action_flow(r, self.round, self.p)

    @staticmethod
    def _conj_contrib(r: OFRule) -> set[tuple[MatchKey, ConjKey]]:
        ingress = r.direction == "In"
        table = rule_table(r)
        prio = rule_priorities(r)[0]
        n = 2 + (1 if r.services is not None else 0)
        to_field = "nw_src" if ingress else "nw_dst"
        out: set[tuple[MatchKey, ConjKey]] = set()
        for clause, fld, addrs in ((1, "nw_src", r.from_), (2, to_field, r.to)):
            c = (r.conj_id, clause, n)
            out.update(((table, prio, fld, a), c) for a in addrs)
        for svc in r.services or ():
            for m in _service_matches(svc):
                out.add(((table, prio, "", m), (r.conj_id, 3, n)))
        return out

    @staticmethod
    def _drop_contrib(r: OFRule) -> set[tuple[int, Match]]:
        if r.priority is not None:  # Antrea-native rules do not isolate
            return set()
        ingress = r.direction == "In"
        table = T.INGRESS_DEFAULT if ingress else T.EGRESS_DEFAULT
        fld = "" if ingress else "nw_src"
        return {(table, address_match(a, fld)) for a in (r.to if ingress else r.from_)}

    # ------------------------------------------------------------------ flows
    def _match_flow(self, key: MatchKey) -> Flow | None:
        conjs = self.conjs.get(key)
        if not conjs:
            return None
        table, prio, fld, v = key
        m = v if isinstance(v, Match) else address_match(v, fld)  # type: ignore[arg-type]
        return Flow(table, prio, m, tuple(map(_conjunction, sorted(conjs))),  # type: ignore[arg-type]
                    cookie(self.round, Category.POLICY))

    def _drop_flow(self, key: tuple[int, Match]) -> Flow:
        return Flow(key[0], PRIORITY_NORMAL, key[1], (), cookie(self.round, Category.DEFAULT))

    def flows(self) -> list[Flow]:
        out = list(self.actions.values())
        out += [f for k in self.conjs for f in [self._match_flow(k)] if f is not None]
        out += [self._drop_flow(k) for k, refs in self.drops.items() if refs > 0]
        return out

    def update(self, removed: list[OFRule], added: list[OFRule]) -> tuple[list[Flow], list[Flow]]:
        """Replace the rules `removed` by `added`. Returns (flows to add or modify, flows to delete)."""
        # A rule replaced by one with the same conj_id, direction and services (an AddressGroup patch)
        # differs only in clause values: diff those (once per distinct pair of clause lists) instead of
        # listing both rules' every contribution.
        by_id = {r.conj_id: r for r in removed}
        same: list[tuple[OFRule, OFRule]] = []
        rest_old: list[OFRule] = []
        rest_new: list[OFRule] = []
        for r in added:
            o = by_id.pop(r.conj_id, None)
            if o is not None and o.direction == r.direction and o.services == r.services \
                    and o.of_priority == r.of_priority and o.family == r.family:
                same.append((o, r))
            else:
                rest_new.append(r)
                if o is not None:
                    rest_old.append(o)
        rest_old += by_id.values()
        old_c: set[tuple[MatchKey, ConjKey]] = set().union(*map(self._conj_contrib, rest_old)) if rest_old else set()
        new_c: set[tuple[MatchKey, ConjKey]] = set().union(*map(self._conj_contrib, rest_new)) if rest_new else set()
        diffs: dict[tuple[int, int], tuple[set[Address], set[Address]]] = {}
        old_d: Counter[tuple[int, Match]] = Counter(d for r in rest_old for d in self._drop_contrib(r))
        new_d: Counter[tuple[int, Match]] = Counter(d for r in rest_new for d in self._drop_contrib(r))
        for o, r in same:
            ingress = r.direction == "In"
            table = rule_table(r)
            prio = rule_priorities(r)[0]
            n = 2 + (1 if r.services is not None else 0)
            for clause, fld, a, b in ((1, "nw_src", o.from_, r.from_),
                                      (2, "nw_src" if ingress else "nw_dst", o.to, r.to)):
                if a is b or a == b:
                    continue
                dk = (id(a), id(b))
                if dk not in diffs:
                    sa, sb = set(a), set(b)
                    diffs[dk] = (sa - sb, sb - sa)
                lost, won = diffs[dk]
                c = (r.conj_id, clause, n)
                old_c.update(((table, prio, fld, x), c) for x in lost)
                new_c.update(((table, prio, fld, x), c) for x in won)
                if clause == (2 if ingress else 1) and r.priority is None:  # the clause whose addresses get default drops
                    dtable = T.INGRESS_DEFAULT if ingress else T.EGRESS_DEFAULT
                    dfld = "" if ingress else "nw_src"
                    old_d.update((dtable, address_match(x, dfld)) for x in lost)
                    new_d.update((dtable, address_match(x, dfld)) for x in won)
        touched: set[MatchKey] = set()
        for key, c in old_c - new_c:
            self.conjs[key].discard(c)
            touched.add(key)
        for key, c in new_c - old_c:
            self.conjs.setdefault(key, set()).add(c)
            touched.add(key)
        upserts: list[Flow] = []
        deletes: list[Flow] = []
        for key in touched:
            f = self._match_flow(key)
            if f is None:
                deletes.append(Flow(key[0], key[1], key[3] if isinstance(key[3], Match)
                                    else address_match(key[3], key[2]), ()))  # type: ignore[arg-type]
                self.conjs.pop(key, None)
            else:
                upserts.append(f)
        for dkey in set(old_d) | set(new_d):
            before = self.drops.get(dkey, 0)
            after = before - old_d.get(dkey, 0) + new_d.get(dkey, 0)
            if after > 0:
                self.drops[dkey] = after
                if before <= 0:
                    upserts.append(self._drop_flow(dkey))
            else:
                self.drops.pop(dkey, None)
                if before > 0:
                    deletes.append(self._drop_flow(dkey))
        for cid in sorted({r.conj_id for r in removed} - {r.conj_id for r in added}):
            f = self.actions.pop(cid, None)
            if f is not None:
                deletes.append(f)
        for r in added:
            f = self._action(r)
            old = self.actions.get(r.conj_id)
            if old != f:
                if old is not None and old.key != f.key:  # moved to another priority: the old one goes
                    deletes.append(old)
                self.actions[r.conj_id] = f
                upserts.append(f)
        return upserts, deletes
