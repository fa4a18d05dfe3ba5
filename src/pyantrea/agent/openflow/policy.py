"""OpenFlow policy rules -> conjunctive match flows, action flows and default drop flows (spec §8.4, §8.7).

Match flows are shared: one flow per (table, priority, match), carrying every conjunction that
needs it. Drop flows are shared the same way. Conjunction actions are printed sorted by (id, clause)
so the output does not depend on insertion order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyantrea.agent.networkpolicy import Address, OFRule
from pyantrea.agent.openflow import tables as T
from pyantrea.agent.openflow.cookie import Category, cookie
from pyantrea.agent.openflow.pipeline import PRIORITY_LOW, PRIORITY_NORMAL
from pyantrea.apis import controlplane as cp
from pyantrea.ovs.flow import Conjunction, Flow, Goto, Load, Match, ip_match, match


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
    if s.port is None:
        return [match(proto=proto)]
    assert isinstance(s.port, int)
    end = s.end_port if s.end_port is not None else s.port
    return [match(proto=proto, tp_dst=v) for v in port_range_matches(s.port, end)]


def address_match(a: Address, direction_field: str) -> Match:
    if a.kind == "ofport":
        return match(proto="ip", reg1=f"0x{int(a.value):x}")
    return match(proto="ip", **{direction_field: ip_match(a.value)})


@dataclass
class _Shared:
    table: int
    priority: int
    match: Match
    cookie: int
    seq: int
    conj: set[tuple[int, int, int]] = field(default_factory=set)


class PolicyFlows:
    """Accumulates the flows of a set of OFRules for one node."""

    def __init__(self, round_num: int = 1, pipeline: T.Pipeline = T.ARTICLE, seq_start: int = 100000):
        self.round = round_num
        self.p = pipeline
        self._seq = seq_start
        self._matches: dict[tuple[int, int, Match], _Shared] = {}
        self._actions: list[Flow] = []
        self._drops: dict[tuple[int, Match], int] = {}

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _add_match(self, table: int, m: Match, conj: tuple[int, int, int]) -> None:
        key = (table, PRIORITY_NORMAL, m)
        sh = self._matches.get(key)
        if sh is None:
            sh = _Shared(table, PRIORITY_NORMAL, m, cookie(self.round, Category.POLICY), self._next_seq())
            self._matches[key] = sh
        sh.conj.add(conj)

    def add_rule(self, r: OFRule) -> None:
        ingress = r.direction == "In"
        table = T.INGRESS_RULE if ingress else T.EGRESS_RULE
        n = 2 + (1 if r.services is not None else 0)
        from_field = "nw_src"
        to_field = "nw_src" if ingress else "nw_dst"
        # action flow first (Antrea installs it with the rule)
        reg = "NXM_NX_REG6" if ingress else "NXM_NX_REG5"
        next_table = self.p.next(T.INGRESS_DEFAULT if ingress else T.EGRESS_DEFAULT)
        self._actions.append(Flow(table, PRIORITY_LOW, match(conj_id=r.conj_id, proto="ip"),
                                  (Load(r.conj_id, reg), Goto(next_table)),
                                  cookie(self.round, Category.POLICY), 0, self._next_seq()))
        for a in r.from_:
            self._add_match(table, address_match(a, from_field), (r.conj_id, 1, n))
        for a in r.to:
            self._add_match(table, address_match(a, to_field), (r.conj_id, 2, n))
        for s in r.services or ():
            for m in service_matches(s):
                self._add_match(table, m, (r.conj_id, 3, n))
        # default drop flows: egress From addresses, ingress To addresses
        if ingress:
            for a in r.to:
                self._add_drop(T.INGRESS_DEFAULT, address_match(a, ""))
        else:
            for a in r.from_:
                self._add_drop(T.EGRESS_DEFAULT, address_match(a, "nw_src"))

    def _add_drop(self, table: int, m: Match) -> None:
        self._drops.setdefault((table, m), self._next_seq())

    def flows(self) -> list[Flow]:
        out = list(self._actions)
        for sh in self._matches.values():
            actions = tuple(Conjunction(i, k, n) for i, k, n in sorted(sh.conj))
            out.append(Flow(sh.table, sh.priority, sh.match, actions, sh.cookie, 0, sh.seq))
        for (table, m), seq in self._drops.items():
            out.append(Flow(table, PRIORITY_NORMAL, m, (), cookie(self.round, Category.DEFAULT), 0, seq))
        return out


def policy_flows(rules: list[OFRule], round_num: int = 1) -> list[Flow]:
    pf = PolicyFlows(round_num)
    for r in rules:
        pf.add_rule(r)
    return pf.flows()
