"""The agent's initializer (Antrea's agent.Initializer): br-int, the tunnel and the gateway in one
OVSDB transaction, the interface store from OVSDB, the gateway's address, round numbers, the first
flows, the stale-flow sweep of the previous round, and the replay after ovs-vswitchd restarts."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyantrea.agent.bridge import TLV_MAP, bridge_commands, gateway_commands, tunnel_commands
from pyantrea.agent.cniserver import pod as podnet
from pyantrea.agent.metrics import instrument_bridge
from pyantrea.agent.openflow.client import FlowClient
from pyantrea.agent.openflow.cookie import round_selector
from pyantrea.agent.route.client import RouteClient
from pyantrea.apis.k8s import NodeNetwork, stable_mac
from pyantrea.errors import PyantreaError
from pyantrea.ovs.ofctl import OFBridge

if TYPE_CHECKING:
    from pyantrea.agent.daemon import Agent

GENEVE_OVERHEAD = 50
DEFAULT_TUNNEL = "antrea-tun0"


class Initializer:
    def __init__(self, agent: Agent, log: Callable[[str], None]):
        self.a = agent
        self.log = log

    def fixed_ports(self) -> NodeNetwork:
        """The gateway and tunnel as this node has them: pinned by NodeInterfaces, else Antrea's defaults.
        The gateway's MAC, when not pinned, is derived from the node name, so it is the same after
        every restart (a stable MAC keeps the flows that name it valid)."""
        a = self.a
        ni = a.pins.get(a.node)
        gw = ni.gateway if ni is not None else None
        tun = ni.tunnel if ni is not None else None
        return NodeNetwork(
            a.node, a.node_ip, a.pod_cidr, a.gateway_ip,
            (gw.mac if gw else None) or stable_mac(f"gateway/{a.node}"),
            (gw.name if gw else None) or a.cfg.host_gateway, (gw.ofport if gw else None) or 2,
            (tun.name if tun else None) or DEFAULT_TUNNEL, (tun.ofport if tun else None) or 1)

    def start(self) -> None:
        a = self.a
        me = a.nodes.get(a.node)
        if me is None:
            raise PyantreaError(f"node {a.node} is not a Node of the cluster")
        if not me.pod_cidr:
            raise PyantreaError(f"node {a.node} has no podCIDR")
        if not me.node_ip:
            raise PyantreaError(f"node {a.node} has no InternalIP/ExternalIP")
        a.node_ip = me.node_ip
        a.pod_cidr = me.pod_cidr
        a.gateway_ip = str(ipaddress.IPv4Network(a.pod_cidr).network_address + 1)
        a.route = RouteClient(a.cfg.host_gateway)
        node_mtu = a.route.mtu_of_address(a.node_ip) or 1500
        a.mtu = a.cfg.default_mtu or (node_mtu - GENEVE_OVERHEAD)
        model = self.fixed_ports()
        a.gateway_name, a.gateway_ofport = model.gateway_name, model.gateway_ofport
        a.tunnel_name, a.tunnel_ofport = model.tunnel_name, model.tunnel_ofport
        # OVSDB: bridge, tunnel, gateway, in one transaction (spec §2 steps 2, 4, 5)
        dp = "netdev" if a.datapath == "netdev" else "system"
        cmds = bridge_commands(a.bridge_name, dp) + tunnel_commands(a.bridge_name, model, a.cfg.tunnel_type) \
            + gateway_commands(a.bridge_name, model, a.mtu)
        cmds += [["set", "Interface", model.gateway_name, f'mac="{model.gateway_mac}"']]
        a.db.transact(cmds)
        a.db.wait_ofport(model.gateway_name, timeout=10.0)
        a.ifstore.load(a.db.list_ports(a.bridge_name))
        a.route.configure_gateway(a.gateway_ip, ipaddress.IPv4Network(a.pod_cidr).prefixlen, a.mtu)
        a.gateway_mac = podnet.link_mac(model.gateway_name)
        # round numbers (spec §11.1)
        prev = a.db.get_bridge_external_id(a.bridge_name, "roundNum")
        self.prev_round = int(prev) if prev and prev.isdigit() else None
        a.round = ((self.prev_round or 0) + 1) % 65536 or 1
        # install texts are numeric; a CNI request's flows go to an ovs-ofctl started ahead
        a.ofbridge = OFBridge(a.ovs_rundir / f"{a.bridge_name}.mgmt", names=False, prestart=True)
        a.flows = FlowClient(a.ofbridge)
        instrument_bridge(a.ofbridge, a.metrics)  # antrea_agent_ovs_flow_ops_* (agent/metrics.py)
        if a.cfg.gate("Traceflow"):
            a.ofbridge.add_tlv_map(TLV_MAP)
        a.controlplane.list()
        a.sync_all(initial=True)
        a.podconf.reconcile({(p.namespace, p.name) for p in a.pods.items() if not p.host_network})
        a.podconf.release_orphan_leases()
        a.host_networking()
        a.db.transact([["remove", "Open_vSwitch", ".", "other_config", "flow-restore-wait"]])
        self.log(f"initialized: round {a.round}, {len(a.flows.installed())} flows, "
                 f"{len(a.ifstore.all())} pods, mtu {a.mtu}")
        threading.Thread(target=self.sweep_stale, daemon=True, name="stale-sweep").start()

    def sweep_stale(self) -> None:
        """After the delay, delete the previous round's flows and persist the round (spec §11.1).

        Retries every second (OVS may be restarting); gives up after a minute and says so.
        """
        a = self.a
        if a.stop_event.wait(a.stale_flow_delay):
            return
        last: Exception | None = None
        for _ in range(60):
            try:
                with a.lock:
                    if self.prev_round is not None and self.prev_round != a.round:
                        a.ofbridge.del_flows(round_selector(self.prev_round))
                a.db.set_bridge_external_ids(a.bridge_name, {"roundNum": str(a.round)})
                self.log(f"stale flows of round {self.prev_round} removed; roundNum={a.round}")
                return
            except (OSError, PyantreaError) as e:
                last = e
                if a.stop_event.wait(1.0):
                    return
        self.log(f"could not remove the flows of round {self.prev_round}: {last}")

    def watch_ovs(self) -> None:
        """Notice within a second that ovs-vswitchd lost its flows (restart), and replay them all."""
        a = self.a
        pid = self._vswitchd_pid()
        while not a.stop_event.wait(0.3):
            now = self._vswitchd_pid()
            if now is None or now == pid:
                continue
            try:
                self._wait_bridge()
                with a.lock:
                    if a.cfg.gate("Traceflow"):
                        a.ofbridge.add_tlv_map(TLV_MAP)
                    n = a.flows.replay()
                a.db.transact([["remove", "Open_vSwitch", ".", "other_config", "flow-restore-wait"]])
                a.ovs_replays += 1
                pid = now
                self.log(f"ovs-vswitchd restarted (pid {now}): replayed {n} flows in one bundle")
            except (OSError, PyantreaError) as e:
                self.log(f"replay after ovs-vswitchd restart failed, retrying: {e}")

    def _vswitchd_pid(self) -> int | None:
        try:
            return int((self.a.ovs_rundir / "ovs-vswitchd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _wait_bridge(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.a.ovs_rundir / f"{self.a.bridge_name}.mgmt").exists():
            if time.monotonic() > deadline:
                raise PyantreaError("br-int did not come back")
            time.sleep(0.05)
