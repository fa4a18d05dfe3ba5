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
        self.owner: dict[FlowKey, str] = {}
        self.lock = threading.RLock()
        self.bundles = 0  # how many bundles were sent (for tests and benchmarks)
        self.sent_lines = 0

    def installed(self) -> list[Flow]:
        with self.lock:
            return sort_flows(f for fam in self.families.values() for f in fam.values())

    def update(self, changes: dict[str, Iterable[Flow] | None]) -> int:
        """Set the flows of some families (None deletes a family). Returns the number of flow mods sent."""
        with self.lock:
            lines: list[str] = []
            new_families = dict(self.families)
            for name, flows in changes.items():
                new_families[name] = {} if flows is None else {f.key: f for f in flows}
            # the union of all families after the change
            old_all = {k: f for fam in self.families.values() for k, f in fam.items()}
            new_all = {k: f for fam in new_families.values() for k, f in fam.items()}
            touched = set()
            for name in changes:
                touched |= set(self.families.get(name, {})) | set(new_families[name])
            for k in sorted(touched, key=lambda k: (k[0], -k[1], str(k[2]))):
                old, new = old_all.get(k), new_all.get(k)
                if new is not None and (old is None or not _same(old, new)):
                    lines.append("add " + new.install_text())
                elif new is None and old is not None:
                    lines.append("delete_strict " + old.strict_match_text())
            if lines:
                self.bridge.add_flows(lines)
                self.bundles += 1
                self.sent_lines += len(lines)
            self.families = {n: f for n, f in new_families.items() if f}
            return len(lines)

    def replay(self) -> int:
        """Install every cached flow again (after ovs-vswitchd lost them), in one bundle."""
        with self.lock:
            flows = self.installed()
            self.bridge.replace_flows([f.install_text() for f in flows])
            self.bundles += 1
            self.sent_lines += len(flows)
            return len(flows)
