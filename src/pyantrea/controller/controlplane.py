"""The controlplane API agents watch (Antrea's `controlplane` API group): AppliedToGroups,
AddressGroups and internal NetworkPolicies, as typed objects with a span, served as list + watch.

Every change of the objects a policy depends on (Pods, Namespaces, NetworkPolicies) yields
controlplane events: the computed state is compared with the previous one and only what differs
becomes an event. A watching agent receives an event only if the object's span includes its node
(before or after the change), and in the form Antrea sends it:
- ADDED / DELETED when the object enters or leaves its span;
- MODIFIED for a NetworkPolicy as the whole new object;
- MODIFIED for a group as a *patch*: the members added and removed (for an AppliedToGroup only
  the members on the agent's node, as Antrea filters them).

The wire format is JSON of the typed values (`apis.controlplane.to_dict`), never manifests.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Any

from pyantrea.apis import controlplane as cp
from pyantrea.apis.k8s import Namespace, NetworkPolicy, Pod
from pyantrea.controller.networkpolicy import NetworkPolicyController, PolicyState
from pyantrea.controller.inputs import PolicyInputs
from pyantrea.controller.store import Gone

POLICY_KINDS = frozenset({"Pod", "Namespace", "NetworkPolicy"})
KINDS = ("NetworkPolicy", "AppliedToGroup", "AddressGroup")


@dataclass(frozen=True)
class Change:
    rv: int
    kind: str  # NetworkPolicy | AppliedToGroup | AddressGroup
    name: str  # ns/name of a policy, a group's name
    old: Any  # the previous value, None if new
    new: Any  # the new value, None if deleted


def _members_patch(old: tuple[cp.GroupMemberPod, ...], new: tuple[cp.GroupMemberPod, ...]) -> dict[str, Any]:
    before, after = set(old), set(new)
    return {"addedPods": [cp.to_dict(m) for m in sorted(after - before, key=lambda m: m.key)],
            "removedPods": [cp.to_dict(m) for m in sorted(before - after, key=lambda m: m.key)]}


def node_event(c: Change, node: str) -> dict[str, Any] | None:
    """What the agent of `node` receives for change `c` (None: nothing)."""
    old_in = c.old is not None and node in c.old.span
    new_in = c.new is not None and node in c.new.span
    if not old_in and not new_in:
        return None
    old = c.old.for_node(node) if old_in and c.kind == "AppliedToGroup" else c.old
    new = c.new.for_node(node) if new_in and c.kind == "AppliedToGroup" else c.new
    if new_in and not old_in:
        return {"type": "ADDED", "kind": c.kind, "object": cp.to_dict(new)}
    if old_in and not new_in:
        return {"type": "DELETED", "kind": c.kind, "object": cp.to_dict(old)}
    if old == new:
        return None
    if c.kind == "NetworkPolicy":
        if replace(old, span=()) == replace(new, span=()):
            return None  # only its span changed: the nodes already in it have nothing to do
        return {"type": "MODIFIED", "kind": c.kind, "object": cp.to_dict(new)}
    if old.pods == new.pods:
        return None  # only the span changed elsewhere: nothing this node acts on
    return {"type": "MODIFIED", "kind": c.kind, "patch": {"name": new.name, **_members_patch(old.pods, new.pods)}}


class ControlPlane:
    """The controller's computed policy state, versioned, with span-filtered watches."""

    def __init__(self, store: PolicyInputs, history: int = 50000):
        self.store = store
        self.cond = threading.Condition()
        self.epoch = uuid.uuid4().hex[:12]
        self.rv = 0
        self.state = PolicyState()
        self.log: deque[Change] = deque(maxlen=history)
        self.sent: Counter[str] = Counter()  # events sent, per node
        self.compute_seconds: deque[float] = deque(maxlen=200)
        self.recompute()
        store.subscribe(self.on_events)

    # ------------------------------------------------------------------------------ computing

    def on_events(self, events: list[Any]) -> None:
        if any(e.kind in POLICY_KINDS for e in events):
            self.recompute()

    def inputs(self) -> tuple[list[Pod], list[Namespace], list[NetworkPolicy]]:
        c = self.store.cluster()
        return list(c.pods), list(c.namespaces), list(c.policies)

    def recompute(self) -> int:
        """Compute the state from the store and record what changed. Returns the number of changes."""
        t0 = time.perf_counter()
        pods, namespaces, policies = self.inputs()
        new = NetworkPolicyController(pods, namespaces, policies).compute()
        changes: list[Change] = []
        with self.cond:
            for kind, before, after in (("AddressGroup", self.state.address_groups, new.address_groups),
                                        ("AppliedToGroup", self.state.applied_to_groups, new.applied_to_groups),
                                        ("NetworkPolicy", self.state.policies, new.policies)):
                for name in sorted(set(before) | set(after)):
                    o, n = before.get(name), after.get(name)
                    if o != n:
                        self.rv += 1
                        changes.append(Change(self.rv, kind, name, o, n))
            self.state = new
            self.log.extend(changes)
            if changes:
                self.cond.notify_all()
        self.compute_seconds.append(time.perf_counter() - t0)
        return len(changes)

    # ------------------------------------------------------------------------------ serving

    def list(self, node: str | None = None) -> dict[str, Any]:
        """Every object whose span includes `node` (all objects when node is None)."""
        with self.cond:
            st, rv = self.state, self.rv
        if node is None:
            pols = [p for _, p in sorted(st.policies.items())]
            atgs = [g for _, g in sorted(st.applied_to_groups.items())]
            ags = [g for _, g in sorted(st.address_groups.items())]
        else:
            view = st.node_view(node)
            pols = list(view.policies)
            atgs = [g for _, g in sorted(view.applied_to_groups.items())]
            ags = [g for _, g in sorted(view.address_groups.items())]
        return {"epoch": self.epoch, "resourceVersion": rv,
                "networkPolicies": [cp.to_dict(p) for p in pols],
                "appliedToGroups": [cp.to_dict(g) for g in atgs],
                "addressGroups": [cp.to_dict(g) for g in ags]}

    def watch(self, node: str, since: int, timeout: float, epoch: str = "") -> dict[str, Any]:
        """The events for `node` after `since`; waits up to `timeout` for at least one."""
        if epoch and epoch != self.epoch:
            raise Gone(f"the controller restarted (epoch {self.epoch}, not {epoch}): list again")
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if since > self.rv or (self.log and since < self.log[0].rv - 1):
                    raise Gone(f"resourceVersion {since} is not in the controller's history: list again")
                out = [ev for c in self.log if c.rv > since for ev in [node_event(c, node)] if ev is not None]
                since = self.rv
                left = deadline - time.monotonic()
                if out or left <= 0:
                    self.sent[node] += len(out)
                    return {"epoch": self.epoch, "resourceVersion": since, "events": out}
                self.cond.wait(left)

    def node_rv(self, node: str) -> int:
        """The resourceVersion of the last change that concerns `node`: an agent whose watch is past it
        has everything (a node no change concerned is synced from the start)."""
        with self.cond:
            for c in reversed(self.log):
                if node_event(c, node) is not None:
                    return c.rv
            return self.log[0].rv - 1 if self.log else 0

    def stats(self, node: str | None = None) -> dict[str, Any]:
        extra = {"nodeResourceVersion": self.node_rv(node)} if node else {}
        with self.cond:
            secs = sorted(self.compute_seconds)
            return {**extra, "epoch": self.epoch, "resourceVersion": self.rv, "eventsSent": dict(self.sent),
                    "policies": len(self.state.policies), "appliedToGroups": len(self.state.applied_to_groups),
                    "addressGroups": len(self.state.address_groups),
                    "computeSecondsP50": secs[len(secs) // 2] if secs else None}
