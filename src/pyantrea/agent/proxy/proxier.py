"""The agent's AntreaProxy (Antrea's pkg/agent/proxy proxier): Services and Endpoints from the
informers -> each Service's flow family, its ports' select groups and the shared endpoint flows.

The informers' handlers only queue the Service's key (they run under their informer's lock, and
the sync reads both informers): one worker syncs queued Services in turn, so a burst of events for
one Service is one sync. A change of one Service or its Endpoints touches only that Service: its family `service/<ns>/<name>`
(ServiceLB flows), the groups of its ports (added, modified in place when the endpoints change,
deleted with the port), and the endpoint flows (EndpointDNAT per protocol/endpoint, HairpinSNAT per
local endpoint IP) whose reference count went from or to zero, all in one bundle. With proxyAll the
node's NodePort ipset follows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyantrea.agent.openflow import tables as T
from pyantrea.agent.openflow.ofconn import PacketIn
from pyantrea.agent.openflow.reject import reject_reply
from pyantrea.agent.openflow.service import NO_ENDPOINT_BIT, ServiceFlowBuilder, endpoint_key, node_service_state
from pyantrea.agent.proxy.model import GroupIDs, ServicePortEntry, service_port_entries
from pyantrea.ovs.flow import Flow, Group

if TYPE_CHECKING:
    from pyantrea.agent.openflow.pipeline import FlowBuilder

SHARED = "service-endpoints"  # the family of the endpoint flows (shared by Services)


def family(key: str) -> str:
    return f"service/{key}"


class Proxier:
    def __init__(self, node: str, services: Any, endpoints: Any, builder: Callable[[], FlowBuilder],
                 flows: Callable[[], Any], pod_cidr: Callable[[], str | None],
                 on_node_ports: Callable[[list[tuple[str, int]]], None] | None = None,
                 log: Callable[[str], None] = lambda s: None):
        self.node = node
        self.services = services  # Informer of Service
        self.endpoints = endpoints  # Informer of Endpoints
        self.builder = builder
        self.flows = flows
        self.pod_cidr = pod_cidr
        self.on_node_ports = on_node_ports
        self.log = log
        self.lock = threading.RLock()
        self.ids = GroupIDs()
        self.entries: dict[str, list[ServicePortEntry]] = {}  # what is installed, by Service key
        self.refs: dict[str, set[str]] = {}  # shared flow key -> the Services using it
        self.syncs = 0  # Service changes handled (for /v1/stats)
        self.pending: set[str] = set()
        self.cond = threading.Condition()
        self.rejects = 0  # connections to a Service port without endpoints answered
        self.ready = False

    # ------------------------------------------------------------------------------ inputs
    def compute(self, key: str) -> list[ServicePortEntry]:
        svc = self.services.get(key)
        if svc is None:
            return []
        return service_port_entries(svc, self.endpoints.get(key), self.node, self.pod_cidr())

    def compute_all(self) -> dict[str, list[ServicePortEntry]]:
        return {s.key: self.compute(s.key) for s in self.services.items()}

    # ------------------------------------------------------------------------------ the node's first sync
    def start(self) -> None:
        """Take every Service as the informers listed them (before the agent's first bundle): group ids
        in port-key order, as offline."""
        with self.lock:
            self.entries = {k: v for k, v in sorted(self.compute_all().items())}
            self.ids.assign(e for es in self.entries.values() for e in es)
            self.refs = {}
            for key, es in self.entries.items():
                for k in self._shared_keys(es):
                    self.refs.setdefault(k, set()).add(key)
            self.ready = True
        self._node_ports()

    def families(self, fb: FlowBuilder) -> tuple[dict[str, list[Flow]], list[Group]]:
        """Every Service family and the shared one, built with the node's builder (the compiler's order),
        and every group."""
        with self.lock:
            fams, shared, groups = node_service_state(fb, self.entries, self.ids.ids)
        out = {family(k): v for k, v in sorted(fams.items())}
        out[SHARED] = shared
        return out, groups

    # ------------------------------------------------------------------------------ the queue
    def queue(self, key: str) -> None:
        """An informer handler: the Service `key` or its Endpoints changed (synced by `run`)."""
        with self.cond:
            self.pending.add(key)
            self.cond.notify()

    def run(self, stop: threading.Event, sync: Callable[[str], None]) -> None:
        """The worker: `sync(key)` (the agent's locked `changed`) for each queued key, until `stop`."""
        while not stop.is_set():
            with self.cond:
                while not self.pending and not stop.is_set():
                    self.cond.wait(0.5)
                keys = sorted(self.pending)
                self.pending.clear()
            for key in keys:
                try:
                    sync(key)
                except Exception as e:  # noqa: BLE001 - one Service's failure must not stop the others
                    self.log(f"Service {key}: sync failed ({type(e).__name__}: {e}); retrying")
                    stop.wait(0.5)
                    self.queue(key)

    def idle(self) -> bool:
        with self.cond:
            return not self.pending

    # ------------------------------------------------------------------------------ one Service
    def changed(self, key: str) -> int:
        """The Service `key` or its Endpoints changed: send what differs. Returns the mods sent."""
        if not self.ready:
            return 0
        with self.lock:
            new = self.compute(key)
            old = self.entries.get(key, [])
            if new == old and key in self.entries:
                return 0
            fb = self.builder()
            sb = ServiceFlowBuilder(fb)
            keep = {e.key for e in new}
            groups: dict[int, Group | None] = {}
            for e in old:
                if e.key not in keep and e.key in self.ids.ids:
                    gid = self.ids.ids[e.key]
                    self.ids.release(e.key)
                    groups[gid] = None
            flows: list[Flow] = []
            for e in new:
                gid = self.ids.get(e.key)  # a released id may come back here: then it is modified
                flows += sb.service_port_flows(e, gid)
                groups[gid] = sb.group(e, gid)
            ups, dels = self._shared_diff(sb, key, old, new)
            if new or self.services.get(key) is not None:
                self.entries[key] = new
            else:
                self.entries.pop(key, None)
            n: int = self.flows().update({family(key): flows or None}, {SHARED: (ups, dels)}, groups)
            self.syncs += 1
        self._node_ports()
        return n

    def _shared_keys(self, entries: list[ServicePortEntry]) -> dict[str, tuple[str, Any]]:
        """shared flow key -> ("dnat", (protocol, endpoint)) | ("hairpin", ip)."""
        out: dict[str, tuple[str, Any]] = {}
        for e in entries:
            for ep in e.endpoints:
                out[endpoint_key(e.protocol, ep)] = ("dnat", (e.protocol, ep))
                if ep.local:
                    out[f"hairpin/{ep.ip}"] = ("hairpin", ep.ip)
        return out

    def _shared_flows(self, sb: ServiceFlowBuilder, what: tuple[str, Any]) -> list[Flow]:
        kind, v = what
        return sb.endpoint_flows(*v) if kind == "dnat" else sb.hairpin_flow(v)

    def _shared_diff(self, sb: ServiceFlowBuilder, key: str, old: list[ServicePortEntry],
                     new: list[ServicePortEntry]) -> tuple[list[Flow], list[Flow]]:
        before = self._shared_keys(old)
        after = self._shared_keys(new)
        ups: list[Flow] = []
        dels: list[Flow] = []
        for k in sorted(set(before) - set(after)):
            users = self.refs.get(k, set())
            users.discard(key)
            if not users:
                self.refs.pop(k, None)
                dels += self._shared_flows(sb, before[k])
        for k in sorted(set(after) - set(before)):
            users = self.refs.setdefault(k, set())
            if not users:
                ups += self._shared_flows(sb, after[k])
            users.add(key)
        return ups, dels

    # ------------------------------------------------------------------------------ no endpoint: reject
    def handle_packet_in(self, pi: PacketIn, send: Callable[[bytes, int], None]) -> bool:
        """A packet EndpointDNAT sent up because its Service port has no ready endpoint: answer the
        client (TCP RST, ICMP port unreachable), out of the port it came in on. False: not ours."""
        reg4 = int(pi.fields.get("reg4") or 0)
        if pi.table_id != T.ENDPOINT_DNAT or not (reg4 >> NO_ENDPOINT_BIT) & 1:
            return False
        reply = reject_reply(pi.data)
        if reply is not None and pi.in_port is not None:
            send(reply, pi.in_port)
            self.rejects += 1
        return True

    # ------------------------------------------------------------------------------ NodePorts
    def node_ports(self) -> list[tuple[str, int]]:
        """(protocol, nodePort) of every NodePort Service port."""
        with self.lock:
            return sorted({(e.proto, e.node_port) for es in self.entries.values() for e in es if e.node_port})

    def _node_ports(self) -> None:
        if self.on_node_ports is not None:
            try:
                self.on_node_ports(self.node_ports())
            except Exception as e:  # noqa: BLE001 - the host's rules must not stop the flows
                self.log(f"NodePort ipset/iptables: {e}")
