"""The pod configurator: what a Pod's network is on this node, and its ports' life cycle.

It owns the interface store (Pod <-> OVS port), decides a new Pod's interface as Antrea does
(its host veth name by Antrea's rule, its MAC the veth's own, its ofport OVS's), except where a
NodeInterfaces pin of this node asks for a value, and adds / removes the Pod's flows. The CNI
server calls it through the `PodNetwork` protocol (`cniserver.server`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyantrea.agent.bridge import pod_port_external_ids
from pyantrea.agent.cniserver import ipam
from pyantrea.agent.cniserver import pod as podnet
from pyantrea.agent.cniserver.server import Steps
from pyantrea.apis.k8s import NodeInterfaces, NodeNetwork, PodInterface, PodPin
from pyantrea.errors import PyantreaError
from pyantrea.ovs.ovsdbclient import OVSDBClient
from pyantrea.ovs.vsctl import OVSDB

if TYPE_CHECKING:
    from pyantrea.agent.daemon import Agent


class PodConfigurator:
    def __init__(self, agent: Agent, log: Callable[[str], None]):
        self.a = agent
        self.log = log
        self.ifstore = agent.ifstore
        self._ovsdb: OVSDBClient | None = None
        self._ovsdb_lock = threading.Lock()

    # ------------------------------------------------------------------ PodNetwork protocol (CNI server)
    @property
    def node(self) -> str:
        return self.a.node

    @property
    def ipam_dir(self) -> str:
        return self.a.ipam_dir

    @property
    def mtu(self) -> int:
        return self.a.mtu

    @property
    def datapath(self) -> str:
        return self.a.datapath

    @property
    def bridge_name(self) -> str:
        return self.a.bridge_name

    @property
    def db(self) -> OVSDB:
        return self.a.db

    def network(self) -> NodeNetwork:
        return self.a.network()

    def pin(self, namespace: str, name: str) -> PodPin | None:
        """This node's NodeInterfaces pin for the Pod, if any (the only source of requested values)."""
        ni: NodeInterfaces | None = self.a.pins.get(self.a.node)
        if ni is None:
            return None
        for p in ni.pods:
            if p.namespace == namespace and p.name == name:
                return p
        return None

    def by_container(self, cid: str) -> PodInterface | None:
        return self.ifstore.by_container(cid)

    def ovsdb(self) -> OVSDBClient:
        """The agent's persistent OVSDB connection (opened by the first CNI request)."""
        with self._ovsdb_lock:
            if self._ovsdb is None:
                self._ovsdb = OVSDBClient(self.a.ovs_rundir / "db.sock", log=self.log)
            return self._ovsdb

    def add_port(self, iface: PodInterface, pin_ofport: bool,
                 meanwhile: Callable[[], None] | None = None) -> tuple[int, str]:
        """What `bridge.pod_port_commands` says, in one transaction on the persistent connection; the
        ofport comes from OVSDB's update (no polling). ``meanwhile`` runs while ovs-vswitchd adds it."""
        db = self.ovsdb()
        uuid = db.add_port(self.a.bridge_name, iface.interface, ofport_request=iface.ofport if pin_ofport else None,
                           port_external_ids=pod_port_external_ids(iface))
        if meanwhile is not None:
            meanwhile()
        return db.wait_ofport(iface.interface, timeout=5.0), uuid

    def del_port(self, name: str) -> None:
        self.ovsdb().del_port(self.a.bridge_name, name)

    def pod_added(self, iface: PodInterface, port_uuid: str) -> None:
        """A new Pod touches its own flows and the rules of the policies applied to it."""
        with self.a.lock:
            self.ifstore.add(iface, port_uuid)
            removed, added = self.a.rules.reconcile(self.a.rules.policies_of_pod(iface.pod_key), self.a.interfaces())
            self.a.install_policy(removed, added, {f"pod/{iface.interface}": self.a.builder().pod_flows(iface)})

    def remove_interface(self, iface: PodInterface, steps: Steps | None = None,
                         after_flows: Callable[[], None] | None = None) -> None:
        """DEL: flows first (so a reused ofport cannot lose a new Pod's flows), then port, then veth.
        The veth is deleted only once ovs-vswitchd has let go of it, as `ovs-vsctl del-port` waited
        (deleting it while ovs-vswitchd still reads it makes it warn "Network is down"); that takes it
        about 10 ms, in which the isolation chain is removed."""
        st = steps or Steps()
        with self.a.lock:
            self.ifstore.remove(iface.interface)
            removed, added = self.a.rules.reconcile(self.a.rules.policies_of_pod(iface.pod_key), self.a.interfaces())
            self.a.install_policy(removed, added, {f"pod/{iface.interface}": None})
        st.mark("flows")
        if after_flows is not None:
            after_flows()

        def meanwhile() -> None:
            st.mark("ovs_port")
            if self.a.datapath == "netdev":
                podnet.unisolate(iface.interface)
                st.mark("isolate")

        self.ovsdb().del_port(self.a.bridge_name, iface.interface, meanwhile=meanwhile)
        st.mark("vswitchd")
        podnet.delete_veth(iface.interface)
        st.mark("veth")

    # ------------------------------------------------------------------ start-up reconciliation
    def reconcile(self, live: set[tuple[str, str]]) -> None:
        """Interfaces of Pods that no longer exist are removed (spec §11.1)."""
        for i in self.ifstore.all():
            if (i.namespace, i.pod) not in live:
                self.log(f"removing interface {i.interface} of deleted Pod {i.pod_key}")
                try:
                    self.remove_interface(i)
                except PyantreaError as e:
                    self.log(f"could not remove {i.interface}: {e}")

    def release_orphan_leases(self) -> None:
        """Release the IPAM reservations of containers that have no interface (a Pod deleted while
        the agent was down, an ADD cut short by a crash). Runs before CNI requests are served."""
        keep = {i.container_id for i in self.ifstore.all()}
        net = self.a.network()
        for cid, ifname, ip in ipam.leases(self.ipam_dir):
            if cid in keep:
                continue
            try:
                ipam.host_local("DEL", cid, ifname, net.pod_cidr, net.gateway_ip, self.ipam_dir)
                self.log(f"released IP {ip} of container {cid[:12]} (no interface)")
            except PyantreaError as e:
                self.log(f"could not release IP {ip} of container {cid[:12]}: {e}")
