"""The agent's OpenFlow client: flow families, diffs, one bundle per change, replay (spec §5.4, §11).

Flows are owned by families (Antrea's caches): "fixed", "node/<peer>", "pod/<interface>",
"policy". A change replaces the flows of the families it touches; only the difference goes to OVS,
as one OpenFlow bundle mixing `add`, `add` over an existing flow (OVS replaces it in place and keeps
its counters) and `delete_strict`. Installing the same state twice sends nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from pyantrea.ovs.flow import Flow, sort_flows
from pyantrea.ovs.ofctl import OFBridge

FlowKey = tuple[int, int, object]  # table, priority, Match


def _same(a: Flow, b: Flow) -> bool:
    return a.actions == b.actions and a.cookie == b.cookie and a.hard_timeout == b.hard_timeout


class FlowClient:
    def __init__(self, bridge: OFBridge):
        self.bridge = bridge
        self.families: dict[str, dict[FlowKey, Flow]] = {}
        self.lock = threading.RLock()
        self.bundles = 0  # how many bundles were sent (for tests and benchmarks)
        self.sent_lines = 0

    def installed(self) -> list[Flow]:
        with self.lock:
            return sort_flows(f for fam in self.families.values() for f in fam.values())

    def update(self, changes: dict[str, Iterable[Flow] | None],
               patches: dict[str, tuple[Iterable[Flow], Iterable[Flow]]] | None = None) -> int:
        """Set the flows of some families (None deletes a family) and patch others ((upserts, deletes)
        of a family whose changed flows the caller knows), all in one bundle. Returns the number of flow
        mods sent. The work is proportional to the families changed, not to the whole flow table.
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
            if lines:
                self.bridge.add_flows(lines)
                self.bundles += 1
                self.sent_lines += len(lines)
            for name, new in staged.items():
                if new:
                    self.families[name] = new
                else:
                    self.families.pop(name, None)
            return len(lines)

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

    def reset(self, families: dict[str, Iterable[Flow]]) -> int:
        """Make the bridge hold exactly these families' flows, in one bundle (agent start, spec §11.1).

        `replace-flows` leaves identical flows alone, replaces flows whose cookie or actions changed
        (in place: OVS keeps their counters, packets never miss them) and deletes the rest, all
        atomically. A restarted agent therefore deletes and re-adds nothing that is still wanted.
        """
        with self.lock:
            self.families = {n: {f.key: f for f in fl} for n, fl in families.items()}
            self.families = {n: f for n, f in self.families.items() if f}
            return self.replay()

    def replay(self) -> int:
        """Install every cached flow again (after ovs-vswitchd lost them), in one bundle."""
        with self.lock:
            flows = self.installed()
            self.bridge.replace_flows([f.install_text() for f in flows])
            self.bundles += 1
            self.sent_lines += len(flows)
            return len(flows)
