"""The agent's OpenFlow client: flow families, diffs, one bundle per change, replay (spec §5.4, §11).

Flows are owned by families (Antrea's caches): "fixed", "node/<peer>", "pod/<interface>",
"policy". A change replaces the flows of the families it touches; only the difference goes to OVS,
as one OpenFlow bundle mixing `add`, `add` over an existing flow (OVS replaces it in place and keeps
its counters) and `delete_strict`. Installing the same state twice sends nothing.

Groups (AntreaProxy's select groups, by id) go in the same bundle (`ovs-ofctl bundle`): added or
modified in place (`group modify`: a Service's endpoints changed; conntrack keeps existing
connections on their endpoint) before the flows that name them, deleted after the flows that named
them are gone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from pyantrea.ovs.flow import Flow, Group, sort_flows
from pyantrea.ovs.ofctl import OFBridge

FlowKey = tuple[int, int, object]  # table, priority, Match


def _same(a: Flow, b: Flow) -> bool:
    return a.actions == b.actions and a.cookie == b.cookie and a.hard_timeout == b.hard_timeout


class FlowClient:
    def __init__(self, bridge: OFBridge):
        self.bridge = bridge
        self.families: dict[str, dict[FlowKey, Flow]] = {}
        self.groups: dict[int, Group] = {}
        self.lock = threading.RLock()
        self.bundles = 0  # how many bundles were sent (for tests and benchmarks)
        self.sent_lines = 0

    def installed(self) -> list[Flow]:
        with self.lock:
            return sort_flows(f for fam in self.families.values() for f in fam.values())

    def update(self, changes: dict[str, Iterable[Flow] | None],
               patches: dict[str, tuple[Iterable[Flow], Iterable[Flow]]] | None = None,
               groups: dict[int, Group | None] | None = None) -> int:
        """Set the flows of some families (None deletes a family) and patch others ((upserts, deletes)
        of a family whose changed flows the caller knows), and set some groups (None deletes one), all
        in one bundle. Returns the number of flow and group mods sent. The work is proportional to the
        families and groups changed, not to the whole flow table.
        """
        with self.lock:
            lines: list[str] = []
            for name, (ups, dels) in (patches or {}).items():
                lines += self._patch_lines(name, ups, dels)
            staged: dict[str, dict[FlowKey, Flow]] = {}
            for name, flows in changes.items():
                staged[name] = {} if flows is None else {f.key: f for f in flows}
            for name, new in staged.items():
                old = self.families.get(name, {})
                for k, f in new.items():
                    o = old.get(k)
                    if o is None or not _same(o, f):
                        lines.append("add " + f.install_text())
                for k, o in old.items():
                    if k not in new and not any(k in staged[other] for other in staged if other != name):
                        lines.append("delete_strict " + o.strict_match_text())
            g_first, g_last = self._group_lines(groups or {})
            if g_first or g_last:
                self.bridge.bundle(g_first + ["flow " + ln for ln in lines] + g_last)
            elif lines:
                self.bridge.add_flows(lines)
            n = len(lines) + len(g_first) + len(g_last)
            if n:
                self.bundles += 1
                self.sent_lines += n
            for gid, g in (groups or {}).items():
                if g is None:
                    self.groups.pop(gid, None)
                else:
                    self.groups[gid] = g
            for name, new in staged.items():
                if new:
                    self.families[name] = new
                else:
                    self.families.pop(name, None)
            return n

    def _group_lines(self, groups: dict[int, Group | None]) -> tuple[list[str], list[str]]:
        first: list[str] = []
        last: list[str] = []
        for gid, g in sorted(groups.items()):
            old = self.groups.get(gid)
            if g is None:
                if old is not None:
                    last.append(f"group delete {old.delete_text()}")
            elif old is None:
                first.append(f"group add {g.install_text()}")
            elif old != g:
                first.append(f"group modify {g.install_text()}")
        return first, last

    def patch(self, name: str, upserts: Iterable[Flow], deletes: Iterable[Flow]) -> int:
        """Add or modify some flows of one family and delete others, in one bundle (the per-rule path:
        the caller knows exactly which flows changed). Returns the number of flow mods sent."""
        return self.update({}, {name: (upserts, deletes)})

    def _patch_lines(self, name: str, upserts: Iterable[Flow], deletes: Iterable[Flow]) -> list[str]:
        fam = self.families.setdefault(name, {})
        lines: list[str] = []
        for f in deletes:
            if fam.pop(f.key, None) is not None:
                lines.append("delete_strict " + f.strict_match_text())
        for f in upserts:
            o = fam.get(f.key)
            if o is None or not _same(o, f):
                lines.append("add " + f.install_text())
            fam[f.key] = f
        if not fam:
            self.families.pop(name, None)
        return lines

    def reset(self, families: dict[str, Iterable[Flow]], groups: Iterable[Group] = ()) -> int:
        """Make the bridge hold exactly these families' flows, in one bundle (agent start, spec §11.1),
        and exactly these groups.

        `replace-flows` leaves identical flows alone, replaces flows whose cookie or actions changed
        (in place: OVS keeps their counters, packets never miss them) and deletes the rest, all
        atomically. A restarted agent therefore deletes and re-adds nothing that is still wanted. Groups
        are set (added or modified in place) before, and the groups nobody wants deleted after.
        """
        with self.lock:
            self.families = {n: {f.key: f for f in fl} for n, fl in families.items()}
            self.families = {n: f for n, f in self.families.items() if f}
            self.groups = {g.group_id: g for g in groups}
            return self.replay(delete_stale_groups=True)

    def replay(self, delete_stale_groups: bool = False) -> int:
        """Install every cached flow (and group) again (after ovs-vswitchd lost them), in one bundle
        (groups: one bundle before it; with `delete_stale_groups`, the agent's start, one after it that
        deletes the groups on the bridge nobody wants)."""
        with self.lock:
            flows = self.installed()
            if self.groups:
                self.bridge.bundle([f"group add_or_mod {g.install_text()}" for _, g in sorted(self.groups.items())])
            stale = [gid for gid in self.bridge.group_ids() if gid not in self.groups] if delete_stale_groups else []
            self.bridge.replace_flows([f.install_text() for f in flows])
            if stale:
                self.bridge.bundle([f"group delete group_id={gid}" for gid in stale])
            self.bundles += 1
            self.sent_lines += len(flows) + len(self.groups) + len(stale)
            return len(flows)
