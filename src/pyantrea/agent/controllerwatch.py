"""The agent's side of the controlplane API: list + watch of its span, and the rule cache.

The agent keeps what the controller sent it (NetworkPolicies, AppliedToGroups, AddressGroups,
typed), applies each event to that cache, and reconciles only the policies the event touched:
a policy event its own policy, a group event the policies that use the group, a local Pod port
added or removed the policies applied to that Pod. The other policies keep their rules and their
conj_ids (Antrea's reconciler works per rule the same way).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import dataclasses

from pyantrea.agent.networkpolicy import ConjIDAllocator, OFRule, compute_rules, peer_clause
from pyantrea.agent.openflow.priority import RulePriorities
from pyantrea.apis import controlplane as cp
from pyantrea.apis.k8s import PodInterface
from pyantrea.errors import PyantreaError
from pyantrea.httpapi import APIClient
from pyantrea.k8s.informer import GoneError


class RuleCache:
    def __init__(self, node: str):
        self.node = node
        self.objects: dict[str, dict[str, Any]] = {"NetworkPolicy": {}, "AppliedToGroup": {}, "AddressGroup": {}}
        self.alloc = ConjIDAllocator()
        self.prios = RulePriorities()  # Antrea-native rules' OpenFlow priorities
        self.priority_moves = 0  # rules moved to another OpenFlow priority to make room (stats)
        self.rules: dict[str, list[OFRule]] = {}  # by policy key (ns/name; ACNP:name, ANP:ns/name)
        self.lock = threading.RLock()
        # since the last reconcile: groups changed by member patches only, and policies that must be
        # recomputed whole (the policy itself or its AppliedToGroup changed)
        self._patched: set[str] = set()
        self._whole: set[str] = set()

    def view(self) -> cp.NodePolicyView:
        with self.lock:
            o = self.objects
            return cp.NodePolicyView(self.node, tuple(p for _, p in sorted(o["NetworkPolicy"].items())),
                                     dict(o["AppliedToGroup"]), dict(o["AddressGroup"]))

    def all_rules(self) -> list[OFRule]:
        """Every rule, in the compiler's order (policies by ns/name, rules in order)."""
        with self.lock:
            return [r for k in sorted(self.rules) for r in self.rules[k]]

    def reset(self, listing: dict[str, Any], interfaces: Mapping[str, PodInterface]) -> None:
        """A full list (start, or after 410): the cache becomes it; every policy is reconciled."""
        with self.lock:
            self.objects = cp.view_from_list(listing)
            rules = compute_rules(self.view(), interfaces, self.alloc)
            self.prios = RulePriorities()
            rules = self.prios.assign(rules)[0]
            self.rules = {}
            for r in rules:
                self.rules.setdefault(r.policy, []).append(r)

    def touched_by(self, kind: str, name: str) -> set[str]:
        pols = self.objects["NetworkPolicy"]
        if kind == "NetworkPolicy":
            return {name}
        if kind == "AppliedToGroup":
            return {k for k, p in pols.items() if name in p.applied_to_groups}
        return {k for k, p in pols.items() if any(name in r.peer.address_groups for r in p.rules)}

    def policies_of_pod(self, pod_key: str) -> set[str]:
        with self.lock:
            groups = {n for n, g in self.objects["AppliedToGroup"].items() if any(m.key == pod_key for m in g.pods)}
            return {k for k, p in self.objects["NetworkPolicy"].items() if set(p.applied_to_groups) & groups}

    def apply(self, events: Iterable[dict[str, Any]]) -> set[str]:
        """Apply controlplane events to the cache; returns the policies they touch."""
        touched: set[str] = set()
        with self.lock:
            for ev in events:
                kind = ev["kind"]
                name = ev["patch"]["name"] if "patch" in ev else (
                    cp.policy_key_of(ev["object"]) if kind == "NetworkPolicy" else ev["object"]["name"])
                now = self.touched_by(kind, name)  # before (a policy that stops using a group)
                cp.apply_event(self.objects, ev)
                now |= self.touched_by(kind, name)  # and after
                if kind == "AddressGroup" and "patch" in ev:
                    self._patched.add(name)
                else:
                    self._whole |= now
                touched |= now
        return touched

    def reconcile(self, policies: set[str], interfaces: Mapping[str, PodInterface]) -> tuple[list[OFRule], list[OFRule]]:
        """Recompute the rules of `policies` only. Returns (their rules before, their rules now).

        A policy touched only by AddressGroup member patches keeps its rules and conj_ids: only the
        peer clauses of the rules that use a patched group are rebuilt (once per distinct peer), unless
        such a rule groups its peers by named port (egress to named ports), which is recomputed whole.
        """
        with self.lock:
            patched, whole = self._patched, self._whole
            self._patched, self._whole = set(), set()
            if not policies:
                return [], []
            pols = self.objects["NetworkPolicy"]
            full: set[str] = set()
            fast: list[str] = []
            for k in sorted(policies):
                p = pols.get(k)
                if k in whole or p is None or not patched or any(
                        r.direction == "Out" and any(s.named for s in r.services or ())
                        for r in p.rules if set(r.peer.address_groups) & patched):
                    full.add(k)
                else:
                    fast.append(k)
            before: list[OFRule] = []
            after: list[OFRule] = []
            if fast:
                view = self.view()
                clauses: dict[object, tuple[Any, ...]] = {}
                for k in fast:
                    p = pols[k]
                    old = self.rules.get(k, [])
                    new = []
                    for r in old:
                        peer = p.rules[r.rule_index].peer
                        if not set(peer.address_groups) & patched:
                            new.append(r)
                            continue
                        ck = (peer.address_groups, peer.ip_blocks)
                        if ck not in clauses:
                            clauses[ck] = peer_clause(view, peer)
                        t = clauses[ck]
                        new.append(dataclasses.replace(r, from_=t) if r.direction == "In" else
                                   dataclasses.replace(r, to=t))
                    if new != old:
                        before += old
                        after += new
                        self.rules[k] = new
            if full:
                rules = compute_rules(self.view(), interfaces, self.alloc, only=full)
                # Antrea-native rules: new priorities registered while the old ones still hold their
                # places; rules of other policies whose OpenFlow priority had to move go out and come back
                # in the same bundle as the change itself
                rules, moved = self.prios.assign(rules)
                old_rules = [r for k in sorted(full) for r in self.rules.pop(k, [])]
                before += old_rules
                self.prios.release(old_rules)
                for r in rules:
                    self.rules.setdefault(r.policy, []).append(r)
                after += rules
                if moved:
                    for k in sorted(self.rules):
                        if k in full:
                            continue
                        cur = self.rules[k]
                        new_list = [r if r.priority is None or self.prios.current(r) == r.of_priority else
                                    dataclasses.replace(r, of_priority=self.prios.current(r)) for r in cur]
                        if new_list != cur:
                            self.priority_moves += sum(1 for r, n in zip(cur, new_list) if r is not n)
                            before += [r for r, n in zip(cur, new_list) if r is not n]
                            after += [n for r, n in zip(cur, new_list) if r is not n]
                            self.rules[k] = new_list
            return before, after


class ControllerWatch:
    """list + watch of the controlplane API for one node, feeding a RuleCache."""

    def __init__(self, client: APIClient, node: str, cache: RuleCache,
                 interfaces: Callable[[], Mapping[str, PodInterface]],
                 install: Callable[[list[OFRule], list[OFRule]], object], reinstall: Callable[[], None],
                 log: Callable[[str], None], lock: threading.RLock | None = None):
        self.client = client
        self.node = node
        self.cache = cache
        self.interfaces = interfaces
        self.install = install  # replaces some rules' flows by others' (the per-rule path)
        self.reinstall = reinstall  # installs every rule's flows (after a re-list)
        self.log = log
        self.rv = 0
        self.epoch = ""
        self.events = 0  # controlplane events received
        self.lists = 0
        # the agent's lock: a reconcile and the install of its flows are one step, whoever triggers it
        self.lock = lock or threading.RLock()

    def list(self) -> None:
        listing = self.client.get(f"/v1/controlplane/list?node={self.node}", timeout=30)
        with self.lock:
            self.cache.reset(listing, self.interfaces())
            self.rv, self.epoch = int(listing["resourceVersion"]), str(listing.get("epoch", ""))
            self.lists += 1

    def step(self, timeout: float = 20.0) -> int:
        q = (f"/v1/controlplane/watch?node={self.node}&resourceVersion={self.rv}&timeout={timeout:g}"
             f"&epoch={self.epoch}")
        status, ans = self.client.call("GET", q, timeout=timeout + 10)
        if status == 410:
            raise GoneError(str(ans.get("error") if isinstance(ans, dict) else ans))
        if status >= 400:
            raise PyantreaError(f"controlplane watch: HTTP {status}: {ans}")
        events = ans["events"]
        with self.lock:
            if events:
                touched = self.cache.apply(events)
                self.install(*self.cache.reconcile(touched, self.interfaces()))
                self.events += len(events)
            self.rv = int(ans["resourceVersion"])
        return len(events)

    def run(self, stop: threading.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                self.step()
                backoff = 0.2
            except GoneError as e:
                self.log(f"controlplane: {e}; listing again")
                try:
                    self.list()
                    self.reinstall()
                except (OSError, PyantreaError) as e2:
                    self.log(f"controlplane list failed: {e2}")
                    stop.wait(backoff)
            except (OSError, PyantreaError) as e:
                # Controller down: keep enforcing what we have; retry with back-off.
                if backoff >= 1.6:
                    self.log(f"controller unreachable ({e}); keeping current state")
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as e:  # noqa: BLE001 - a bad update must not kill the agent
                self.log(f"applying a controlplane event failed: {type(e).__name__}: {e}")
                stop.wait(1.0)
