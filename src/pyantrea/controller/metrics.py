"""The controller's Prometheus metrics (`GET /metrics` on controller.sock), named as Antrea's controller
names them (docs/prometheus-integration.md, "Antrea Controller Metrics").

- antrea_controller_network_policy_processed, antrea_controller_address_group_processed,
  antrea_controller_applied_to_group_processed: the internal NetworkPolicies, AddressGroups and
  AppliedToGroups synced (each one the computation added, changed or removed);
- antrea_controller_network_policy_sync_duration_milliseconds, ..._address_group_..., and
  ..._applied_to_group_...: the time of the computation that synced them. pyantrea computes the three
  kinds together, once per store commit (or informer burst): each computation that changed objects
  of a kind is one observation of that kind's histogram;
- antrea_controller_length_network_policy_queue, ..._address_group_queue, ..._applied_to_group_queue:
  always 0 (the computation runs inside the commit that caused it: there is no work queue);
- apiserver_watch_events_total{group,kind,version}: the controlplane events sent to the agents'
  watches, as the apiserver library Antrea's controller uses counts them.

No hook in the computation: a listener subscribed to the inputs after the `ControlPlane` reads, once
the plane is done with a change, what it logged (its changes, by kind) and the time it measured.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import Any

from pyantrea.metrics import Metrics, gauge

KINDS = {"NetworkPolicy": "network_policy", "AddressGroup": "address_group", "AppliedToGroup": "applied_to_group"}
HELP = {"network_policy": "internal-networkpolicy", "address_group": "address-group",
        "applied_to_group": "applied-to-group"}
QUEUES = {"network_policy": "InternalNetworkPolicyQueue", "address_group": "AddressGroupQueue",
          "applied_to_group": "AppliedToGroupQueue"}
WATCH_GROUP, WATCH_VERSION = "controlplane.antrea.tanzu.vmware.com", "v1beta1"


class ControllerMetrics:
    def __init__(self) -> None:
        m = self.m = Metrics.new()
        self.processed = {k: m.counter(f"antrea_controller_{k}_processed", f"The total number of {HELP[k]} processed")
                          for k in HELP}
        self.duration = {k: m.histogram(f"antrea_controller_{k}_sync_duration_milliseconds",
                                        f"The duration of syncing {HELP[k]}") for k in HELP}
        self.watch_events = m.counter("apiserver_watch_events", "Number of events sent in watch clients",
                                      ["group", "kind", "version"], total=True)
        m.add_state(self._queues)
        self.plane: Any = None
        self._rv = 0

    def text(self) -> str:
        return self.m.text()

    def follow(self, plane: Any) -> None:
        """Count what `plane` (a ControlPlane) syncs: its first computation now, then each one that
        follows a change of its inputs (a listener subscribed after the plane's own)."""
        self.plane = plane
        self._synced([])
        plane.store.subscribe(self._synced)

    def _synced(self, events: list[Any]) -> None:
        plane = self.plane
        with plane.cond:
            kinds: Tally[str] = Tally()
            for c in reversed(plane.log):
                if c.rv <= self._rv:
                    break
                kinds[c.kind] += 1
            self._rv = plane.rv
            secs = plane.compute_seconds[-1] if kinds and plane.compute_seconds else None
        for kind, n in kinds.items():
            k = KINDS.get(kind)
            if k is not None:
                self.processed[k].inc(n)
                if secs is not None:
                    self.duration[k].observe(secs * 1000)

    def watched(self, events: list[dict[str, Any]]) -> None:
        """Events a controlplane watch returned to an agent."""
        for kind, n in Tally(str(e.get("kind", "")) for e in events).items():
            self.watch_events.labels(WATCH_GROUP, kind, WATCH_VERSION).inc(n)

    def _queues(self) -> Iterator[Any]:
        for k, q in QUEUES.items():
            yield gauge(f"antrea_controller_length_{k}_queue", f"The length of {q}", samples=[((), 0)])
