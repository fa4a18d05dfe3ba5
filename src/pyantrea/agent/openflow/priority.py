"""OpenFlow priorities for Antrea-native policy rules (docs/decisions.md, "Antrea-native policy tables").

Every Antrea-native rule has a `Priority`: (tier priority, policy priority, rule priority). A lower
value of each comes first; the first that differs decides. All tiers share one table per direction
(AntreaPolicyEgressRule / AntreaPolicyIngressRule) and Baseline rules their own range in the default
rule tables, so the order of rules is the order of their OpenFlow priorities, and an assigner maps
each Priority to a distinct OpenFlow priority inside its range, highest first.

Assignment is incremental, as Antrea's agent does it (its priorityAssigner), so that adding a policy
does not move the others: new Priorities take free slots between their registered neighbours. A
run of new Priorities goes into its gap with the rules of one policy (same tier and policy priority)
side by side and equal free space around each policy, so later policies fit in between. When a gap
is too small, the neighbourhood is widened one registered policy at a time on each side until it
has room for twice what it holds, and everything in it is re-spread: the Priorities that move are
returned, and the agent sends their flows' delete and add in the same bundle as the new flows, so no
packet ever sees a table without them. Registering a set at once into an empty assigner (an agent's
start, the offline compiler) therefore gives the same priorities on both.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

Priority = tuple[int, float, int]  # tier priority, policy priority, rule priority

# Ranges (inclusive). Antrea-native tables: below the bypass flows (64990) and above the miss flow.
# Baseline rules live in EgressDefaultRule / IngressDefaultRule under the isolation drops (200).
POLICY_RANGE = (100, 64000)
BASELINE_RANGE = (10, 180)


class PriorityOverflow(Exception):
    """More distinct Priorities than OpenFlow priorities in the range."""


def _zone(p: Priority) -> tuple[int, float]:
    return p[0], p[1]


class PriorityAssigner:
    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi
        self.of: dict[Priority, int] = {}
        self.order: list[Priority] = []  # registered, first (highest OpenFlow priority) first

    def get(self, p: Priority) -> int:
        return self.of[p]

    def __contains__(self, p: Priority) -> bool:
        return p in self.of

    def release(self, p: Priority) -> None:
        if p in self.of:
            del self.of[p]
            i = bisect.bisect_left(self.order, p)
            del self.order[i]

    def register(self, priorities: Iterable[Priority]) -> dict[Priority, tuple[int, int]]:
        """Give every new Priority an OpenFlow priority. Returns the registered ones that moved:
        Priority -> (old, new)."""
        new = sorted(set(p for p in priorities if p not in self.of))
        if not new:
            return {}
        if len(new) + len(self.order) > self.hi - self.lo + 1:
            raise PriorityOverflow(f"{len(new) + len(self.order)} distinct rule priorities do not fit in "
                                   f"OpenFlow priorities {self.lo}-{self.hi}")
        moved: dict[Priority, tuple[int, int]] = {}
        fresh = set(new)
        # runs: new Priorities with no registered one between them (the same insertion point)
        runs: list[tuple[int, list[Priority]]] = []
        for p in new:
            i = bisect.bisect_left(self.order, p)
            if runs and runs[-1][0] == i:
                runs[-1][1].append(p)
            else:
                runs.append((i, [p]))
        for _, run in runs:
            self._insert(run, moved, fresh)
        return {p: v for p, v in moved.items() if v[0] != v[1]}

    def _insert(self, run: list[Priority], moved: dict[Priority, tuple[int, int]], fresh: set[Priority]) -> None:
        i = bisect.bisect_left(self.order, run[0])  # registered [i:] come after the run
        a, b = i, i  # the registered Priorities order[a:b] are re-spread with the run
        while True:
            upper = self.of[self.order[a - 1]] if a > 0 else self.hi + 1
            lower = self.of[self.order[b]] if b < len(self.order) else self.lo - 1
            count = len(run) + (b - a)
            free = upper - lower - 1
            whole = a == 0 and b == len(self.order)
            if free >= count and (b == a or free >= 2 * count or whole):
                break
            if whole:
                raise PriorityOverflow(f"no room for {count} rule priorities in {self.lo}-{self.hi}")
            # widen by one policy (zone) on each side that still has one
            if a > 0:
                z = _zone(self.order[a - 1])
                while a > 0 and _zone(self.order[a - 1]) == z:
                    a -= 1
            if b < len(self.order):
                z = _zone(self.order[b])
                while b < len(self.order) and _zone(self.order[b]) == z:
                    b += 1
        items = sorted(self.order[a:b] + run)
        for p, v in zip(items, _spread(items, lower, upper)):
            if p not in fresh:
                moved[p] = (moved[p][0] if p in moved else self.of[p], v)
            self.of[p] = v
        self.order[a:b] = items


def _spread(items: list[Priority], lower: int, upper: int) -> list[int]:
    """OpenFlow priorities for `items` (first = highest) strictly between `lower` and `upper`: each
    policy's rules consecutive, the free slots shared equally before, between and after policies."""
    zones: list[int] = []  # sizes
    last: tuple[int, float] | None = None
    for p in items:
        z = _zone(p)
        if z != last:
            zones.append(0)
            last = z
        zones[-1] += 1
    free = upper - lower - 1
    spare = free - len(items)
    gap, extra = divmod(spare, len(zones) + 1)
    out: list[int] = []
    v = upper
    for n, size in enumerate(zones):
        v -= gap + (1 if n < extra else 0)
        for _ in range(size):
            v -= 1
            out.append(v)
    return out


# ------------------------------------------------------------------------------------------ a node's rules

TableKey = tuple[str, str]  # (family "antrea" | "baseline", direction "In" | "Out"): one OpenFlow table each
RANGES = {"antrea": POLICY_RANGE, "baseline": BASELINE_RANGE}


class RulePriorities:
    """The OpenFlow priorities of a node's Antrea-native rules: one assigner per table, and how many
    rules use each Priority (several rules may share one: named-port groups, policies of equal
    priority), so that a Priority is released with its last rule."""

    def __init__(self) -> None:
        self.assigners: dict[TableKey, PriorityAssigner] = {}
        self.refs: dict[tuple[TableKey, Priority], int] = {}

    def _assigner(self, tk: TableKey) -> PriorityAssigner:
        a = self.assigners.get(tk)
        if a is None:
            a = self.assigners[tk] = PriorityAssigner(*RANGES[tk[0]])
        return a

    def assign(self, rules: list[Any]) -> tuple[list[Any], dict[tuple[TableKey, Priority], tuple[int, int]]]:
        """`rules` (OFRules) with their OpenFlow priorities, registering the Priorities not yet known
        (each rule counts as a user). Returns them and the registered Priorities that moved."""
        want: dict[TableKey, set[Priority]] = {}
        for r in rules:
            if r.priority is not None:
                want.setdefault((r.family, r.direction), set()).add(r.priority)
        moved: dict[tuple[TableKey, Priority], tuple[int, int]] = {}
        for tk in sorted(want):
            for p, v in self._assigner(tk).register(want[tk]).items():
                moved[(tk, p)] = v
        out = []
        for r in rules:
            if r.priority is None:
                out.append(r)
                continue
            tk = (r.family, r.direction)
            self.refs[(tk, r.priority)] = self.refs.get((tk, r.priority), 0) + 1
            out.append(replace(r, of_priority=self.assigners[tk].get(r.priority)))
        return out, moved

    def release(self, rules: Iterable[Any]) -> None:
        """Rules removed: their Priorities are released when no rule uses them any more."""
        for r in rules:
            if r.priority is None:
                continue
            k = ((r.family, r.direction), r.priority)
            n = self.refs.get(k, 0) - 1
            if n > 0:
                self.refs[k] = n
            else:
                self.refs.pop(k, None)
                a = self.assigners.get(k[0])
                if a is not None:
                    a.release(r.priority)

    def current(self, r: Any) -> int | None:
        """The OpenFlow priority rule `r`'s Priority has now."""
        if r.priority is None:
            return None
        a = self.assigners.get((r.family, r.direction))
        return a.of.get(r.priority) if a is not None else None


def with_priorities(rules: list[Any]) -> list[Any]:
    """A node's rules with OpenFlow priorities from a fresh assignment (offline; an agent's start)."""
    return RulePriorities().assign(rules)[0]
