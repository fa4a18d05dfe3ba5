"""The controlplane API agents watch (Antrea's `controlplane` API group): AppliedToGroups,
AddressGroups and internal NetworkPolicies, as typed objects with a span, served as list + watch.

Every change of the objects a policy depends on (Pods, Namespaces, NetworkPolicies) yields
controlplane events: only what differs in the computed state becomes an event. A watching agent
receives an event only if the object's span includes its node (before or after the change), and in
the form Antrea sends it:
- ADDED / DELETED when the object enters or leaves its span;
- MODIFIED for a NetworkPolicy as the whole new object;
- MODIFIED for a group as a *patch*: the members added and removed (for an AppliedToGroup only
  the members on the agent's node, as Antrea filters them).

The work per store event is proportional to what it changes: the `PolicyEngine` updates only the
groups and policies the changed objects can affect (a full recompute, diffed, is the fallback and
the reference); each change records once the nodes it concerns and its member patch, so that a
watch reads only the changes after its resourceVersion, only the agents of those nodes are woken,
and an event body is built once for every agent that receives the same one.

The wire format is JSON of the typed values (`apis.controlplane.to_dict`), never manifests.
Events are shared between the agents that receive them: read them, do not change them.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Any

from pyantrea.apis import controlplane as cp
from pyantrea.apis.k8s import Namespace, NetworkPolicy, Pod
from pyantrea.controller.inputs import PolicyInputs
from pyantrea.controller.networkpolicy import (
    FREEZE_AT,
    Diff,
    NetworkPolicyController,
    PolicyEngine,
    PolicyState,
    collector_paused,
    diff,
)
from pyantrea.controller.store import Event, Gone
from pyantrea.errors import NotFoundError

POLICY_KINDS = frozenset({"Pod", "Namespace", "NetworkPolicy"})
KINDS = ("NetworkPolicy", "AppliedToGroup", "AddressGroup")
NONE: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Change:
    rv: int
    kind: str  # NetworkPolicy | AppliedToGroup | AddressGroup
    name: str  # ns/name of a policy, a group's name
    old: Any  # the previous value, None if new
    new: Any  # the new value, None if deleted
    nodes: frozenset[str] = NONE  # the nodes whose agents receive an event for it
    entered: frozenset[str] = NONE  # ... an ADDED (its span now includes them)
    left: frozenset[str] = NONE  # ... a DELETED
    added: tuple[cp.GroupMemberPod, ...] = ()  # a group's members added (by key)
    removed: tuple[cp.GroupMemberPod, ...] = ()  # and removed
    bodies: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # events built once


def _window(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """`a` and `b` without their common prefix and suffix (found by bisection with tuple comparisons,
    which compare shared members by identity first)."""
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    p = lo
    lo, hi = 0, n - p
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid:] == b[len(b) - mid:]:
            lo = mid
        else:
            hi = mid - 1
    return a[p:len(a) - lo], b[p:len(b) - lo]


def member_delta(old: tuple[cp.GroupMemberPod, ...],
                 new: tuple[cp.GroupMemberPod, ...]) -> tuple[tuple[cp.GroupMemberPod, ...], tuple[cp.GroupMemberPod, ...]]:
    """(added, removed): members of `new` not in `old` and the reverse, each sorted by key (both are)."""
    if old is new or old == new:
        return (), ()
    wo, wn = _window(old, new)
    so, sn = set(wo), set(wn)
    return tuple(m for m in wn if m not in so), tuple(m for m in wo if m not in sn)


def make_change(rv: int, kind: str, name: str, old: Any, new: Any,
                spans: dict[tuple[str, ...], frozenset[str]] | None = None) -> Change:
    """A change with the nodes it concerns and its member patch, computed once for every watcher."""
    spans = {} if spans is None else spans

    def nodes_of(span: tuple[str, ...]) -> frozenset[str]:
        s = spans.get(span)
        if s is None:
            s = spans[span] = frozenset(span)
        return s

    before = nodes_of(old.span) if old is not None else NONE
    after = nodes_of(new.span) if new is not None else NONE
    if before is after:
        entered = left = NONE
    else:
        entered, left = after - before, before - after
    added: tuple[cp.GroupMemberPod, ...] = ()
    removed: tuple[cp.GroupMemberPod, ...] = ()
    if old is None or new is None:
        nodes = after or before
    else:
        moved = entered | left if entered or left else NONE
        if kind == "NetworkPolicy":
            body = replace(old, span=()) != replace(new, span=())
            nodes = (before | after if before is not after else before) if body else moved
        else:
            added, removed = member_delta(old.pods, new.pods)
            if kind == "AddressGroup":
                nodes = (before | after if before is not after else before) if added or removed else moved
            else:  # an AppliedToGroup's agents see their own members: only their nodes' patches count
                both = before & after
                here = frozenset(n for m in added + removed if (n := m.node) is not None and n in both)
                nodes = moved | here if here else moved
    return Change(rv, kind, name, old, new, nodes, entered, left, added, removed)


def _patch(name: str, added: Any, removed: Any) -> dict[str, Any]:
    return {"name": name, "addedPods": [cp.to_dict(m) for m in added], "removedPods": [cp.to_dict(m) for m in removed]}


def node_event(c: Change, node: str) -> dict[str, Any] | None:
    """What the agent of `node` receives for change `c` (None: nothing)."""
    if node not in c.nodes:
        return None
    atg = c.kind == "AppliedToGroup"
    if node in c.entered or node in c.left:
        typ = "ADDED" if node in c.entered else "DELETED"
        if atg:
            obj = (c.new if typ == "ADDED" else c.old).for_node(node)
            return {"type": typ, "kind": c.kind, "object": cp.to_dict(obj)}
        ev = c.bodies.get(typ)
        if ev is None:
            ev = c.bodies[typ] = {"type": typ, "kind": c.kind, "object": cp.to_dict(c.new if typ == "ADDED" else c.old)}
        return ev
    if atg:
        return {"type": "MODIFIED", "kind": c.kind,
                "patch": _patch(c.new.name, [m for m in c.added if m.node == node],
                                [m for m in c.removed if m.node == node])}
    ev = c.bodies.get("MODIFIED")
    if ev is None:
        if c.kind == "NetworkPolicy":
            ev = {"type": "MODIFIED", "kind": c.kind, "object": cp.to_dict(c.new)}
        else:
            ev = {"type": "MODIFIED", "kind": c.kind, "patch": _patch(c.new.name, c.added, c.removed)}
        c.bodies["MODIFIED"] = ev
    return ev


class ControlPlane:
    """The controller's computed policy state, versioned, with span-filtered watches."""

    def __init__(self, store: PolicyInputs, history: int = 50000):
        self.store = store
        self._lock = threading.RLock()
        self.cond = threading.Condition(self._lock)
        self._waiters: dict[str, threading.Condition] = {}  # by node, on the same lock
        self._node_rv: dict[str, int] = {}  # the last change that concerns each node
        self.epoch = uuid.uuid4().hex[:12]
        self.rv = 0
        self.engine: PolicyEngine | None = None
        self.state = PolicyState()
        self.log: deque[Change] = deque(maxlen=history)
        self.sent: Counter[str] = Counter()  # events sent, per node
        self.compute_seconds: deque[float] = deque(maxlen=200)
        self.updates = Counter[str]()  # store changes handled: "incremental", "full"
        self.recompute()
        store.subscribe(self.on_events)

    # ------------------------------------------------------------------------------ computing

    def on_events(self, events: list[Any]) -> None:
        """A store commit: its Pods, Namespaces and NetworkPolicies go into the engine (the last state of
        each object in the commit), and what changes in the policy state is recorded. Changes that do
        not name their object (informers' `inputs.Change`) are recomputed whole."""
        latest: dict[tuple[str, str, str], Event] = {}
        whole = False
        for e in events:
            if e.kind in POLICY_KINDS:
                if isinstance(e, Event):
                    latest[e.key] = e
                else:
                    whole = True
        if not latest and not whole:
            return
        engine = self.engine
        if whole or engine is None or len(latest) > max(1000, (len(engine.index.pods) + len(engine.k8s)) // 2):
            self.recompute()
            return
        t0 = time.perf_counter()
        pods: dict[str, Pod | None] = {}
        namespaces: dict[str, Namespace | None] = {}
        policies: dict[str, NetworkPolicy | None] = {}
        for (kind, ns, name), e in latest.items():
            value = None if e.type == "DELETED" else self._typed(kind, ns, name)
            if kind == "Pod":
                pods[f"{ns}/{name}"] = value
            elif kind == "Namespace":
                namespaces[name] = value
            else:
                policies[f"{ns}/{name}"] = value
        with self.cond:
            try:
                changes = engine.update(pods, namespaces, policies)
            except Exception:  # the engine may be half-updated: the whole computation is the fallback
                print("controlplane: incremental update failed, recomputing:\n" + traceback.format_exc(),
                      file=sys.stderr, flush=True)
                self.engine = None
            else:
                self._record(changes)
                self.updates["incremental"] += 1
        if self.engine is None:
            self.recompute()
            return
        self.compute_seconds.append(time.perf_counter() - t0)

    def _typed(self, kind: str, ns: str, name: str) -> Any:
        try:
            return self.store.get(kind, ns, name)
        except NotFoundError:
            return None

    def inputs(self) -> tuple[list[Pod], list[Namespace], list[NetworkPolicy]]:
        c = self.store.cluster()
        return list(c.pods), list(c.namespaces), list(c.policies)

    def recompute(self) -> int:
        """Compute the whole state from the store and record what changed (the fallback of `on_events`,
        and its reference). Returns the number of changes."""
        t0 = time.perf_counter()
        with collector_paused():  # the new state and its changes: objects that live on, no cycles
            pods, namespaces, policies = self.inputs()
            engine = NetworkPolicyController(pods, namespaces, policies).engine()
            with self.cond:
                changes = diff(self.state, engine.state)
                self.engine, self.state = engine, engine.state
                self._record(changes)
                self.updates["full"] += 1
                st = engine.state
                if len(st.policies) + len(st.applied_to_groups) + len(st.address_groups) >= FREEZE_AT:
                    gc.freeze()  # as the engine's build does: the changes just logged, too
        self.compute_seconds.append(time.perf_counter() - t0)
        return len(changes)

    def _record(self, changes: Diff) -> None:
        """Version the changes, log them, and wake the agents of the nodes they concern (lock held)."""
        if not changes:
            return
        spans: dict[tuple[str, ...], frozenset[str]] = {}
        last: dict[int, tuple[frozenset[str], int]] = {}  # id(nodes) -> (nodes, last rv): sets are shared
        for kind, name, old, new in changes:
            self.rv += 1
            c = make_change(self.rv, kind, name, old, new, spans)
            self.log.append(c)
            if c.nodes:
                last[id(c.nodes)] = (c.nodes, c.rv)
        touched: set[str] = set()
        for nodes, rv in sorted(last.values(), key=lambda t: t[1]):
            self._node_rv.update(dict.fromkeys(nodes, rv))
            touched |= nodes
        for node in touched if len(touched) < len(self._waiters) else list(self._waiters):
            w = self._waiters.get(node)
            if w is not None and node in touched:
                w.notify_all()
        self.cond.notify_all()

    # ------------------------------------------------------------------------------ serving

    def list(self, node: str | None = None) -> dict[str, Any]:
        """Every object whose span includes `node` (all objects when node is None)."""
        with self.cond:  # the engine changes the state in place: a copy of its dicts, under the lock
            st = PolicyState(dict(self.state.policies), dict(self.state.applied_to_groups),
                             dict(self.state.address_groups))
            rv = self.rv
        if node is None:
            pols = [p for _, p in sorted(st.policies.items())]
            atgs = [g for _, g in sorted(st.applied_to_groups.items())]
            ags = [g for _, g in sorted(st.address_groups.items())]
        else:
            view = st.node_view(node)
            pols = list(view.policies)
            atgs = list(view.applied_to_groups.values())
            ags = list(view.address_groups.values())
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
            waiter = self._waiters.get(node)
            if waiter is None:
                waiter = self._waiters[node] = threading.Condition(self._lock)
            while True:
                if since > self.rv or (self.log and since < self.log[0].rv - 1):
                    raise Gone(f"resourceVersion {since} is not in the controller's history: list again")
                mine: list[Change] = []
                for c in reversed(self.log):  # only the changes after `since`, newest first
                    if c.rv <= since:
                        break
                    if node in c.nodes:
                        mine.append(c)
                out = [ev for c in reversed(mine) for ev in [node_event(c, node)] if ev is not None]
                since = self.rv
                left = deadline - time.monotonic()
                if out or left <= 0:
                    self.sent[node] += len(out)
                    return {"epoch": self.epoch, "resourceVersion": since, "events": out}
                waiter.wait(left)

    def node_rv(self, node: str) -> int:
        """The resourceVersion of the last change that concerns `node`: an agent whose watch is past it
        has everything (a node no change concerned is synced from the start)."""
        with self.cond:
            rv = self._node_rv.get(node)
            first = self.log[0].rv if self.log else None
            if rv is not None and first is not None and rv >= first:
                return rv
            return first - 1 if first is not None else 0

    def stats(self, node: str | None = None) -> dict[str, Any]:
        extra = {"nodeResourceVersion": self.node_rv(node)} if node else {}
        with self.cond:
            secs = sorted(self.compute_seconds)
            return {**extra, "epoch": self.epoch, "resourceVersion": self.rv, "eventsSent": dict(self.sent),
                    "policies": len(self.state.policies), "appliedToGroups": len(self.state.applied_to_groups),
                    "addressGroups": len(self.state.address_groups),
                    "computeSecondsP50": secs[len(secs) // 2] if secs else None,
                    "updates": dict(self.updates)}
