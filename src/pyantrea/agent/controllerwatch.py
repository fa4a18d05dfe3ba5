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

from pyantrea.agent.networkpolicy import ConjIDAllocator, OFRule, compute_rules
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
        self.rules: dict[str, list[OFRule]] = {}  # by policy ns/name
        self.lock = threading.RLock()

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
                    f"{ev['object']['namespace']}/{ev['object']['name']}" if kind == "NetworkPolicy"
                    else ev["object"]["name"])
                touched |= self.touched_by(kind, name)  # before (a policy that stops using a group)
                cp.apply_event(self.objects, ev)
                touched |= self.touched_by(kind, name)  # and after
        return touched

    def reconcile(self, policies: set[str], interfaces: Mapping[str, PodInterface]) -> int:
        """Recompute the rules of `policies` only. Returns how many rules they now have."""
        if not policies:
            return 0
        with self.lock:
            rules = compute_rules(self.view(), interfaces, self.alloc, only=set(policies))
            for k in policies:
                self.rules.pop(k, None)
            for r in rules:
                self.rules.setdefault(r.policy, []).append(r)
            return len(rules)


class ControllerWatch:
    """list + watch of the controlplane API for one node, feeding a RuleCache."""

    def __init__(self, client: APIClient, node: str, cache: RuleCache,
                 interfaces: Callable[[], Mapping[str, PodInterface]],
                 install: Callable[[], None], log: Callable[[str], None]):
        self.client = client
        self.node = node
        self.cache = cache
        self.interfaces = interfaces
        self.install = install  # installs the cache's rules as flows (under the agent's lock)
        self.log = log
        self.rv = 0
        self.epoch = ""
        self.events = 0  # controlplane events received
        self.lists = 0
        self.lock = threading.RLock()

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
                self.cache.reconcile(touched, self.interfaces())
                self.events += len(events)
            self.rv = int(ans["resourceVersion"])
        return len(events)

    def run(self, stop: threading.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                n = self.step()
                if n:
                    self.install()
                backoff = 0.2
            except GoneError as e:
                self.log(f"controlplane: {e}; listing again")
                try:
                    self.list()
                    self.install()
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
