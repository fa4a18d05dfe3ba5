"""`pyantrea agent`: antrea-agent for one node (spec §2, §4, §10, §11).

It runs in the node's network namespace, next to that node's OVS. It watches the controller for its
node's view (policies, groups) and the cluster objects it needs (Nodes, its Pods), programs br-int,
host routes and iptables, and serves the CNI and antctl on a unix socket (mode 0600).
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from pyantrea import __version__
from pyantrea.agent.bridge import TLV_MAP, bridge_commands, gateway_commands, tunnel_commands
from pyantrea.agent.cniserver import pod as podnet
from pyantrea.agent.cniserver.server import CNIServer
from pyantrea.agent.interfacestore import InterfaceStore
from pyantrea.agent.networkpolicy import ConjIDAllocator, OFRule, compute_rules
from pyantrea.agent.openflow.client import FlowClient
from pyantrea.agent.openflow.cookie import round_selector
from pyantrea.agent.openflow.pipeline import FlowBuilder, PeerNode
from pyantrea.agent.openflow.policy import policy_flows
from pyantrea.agent.route.client import RouteClient
from pyantrea.apis import controlplane as cp
from pyantrea.apis.k8s import NodeNetwork, PodInterface
from pyantrea.controller.networkpolicy import NodePolicyView
from pyantrea.errors import PyantreaError
from pyantrea.httpapi import APIClient, HTTPError, Request, Router, UnixHTTPServer
from pyantrea.k8s.cluster import Cluster
from pyantrea.k8s.complete import load_cluster
from pyantrea.k8s.loader import AGENT_CONF
from pyantrea.offline import peers_of, pipeline_config
from pyantrea.ovs.flow import sort_flows
from pyantrea.ovs.ofctl import OFBridge
from pyantrea.ovs.vsctl import OVSDB

GENEVE_OVERHEAD = 50


def log(node: str, msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} agent[{node}]: {msg}", file=sys.stderr, flush=True)


def cluster_from_snapshot(manifests: str, agent_conf: str) -> Cluster:
    d = Path(tempfile.mkdtemp(prefix="pa-agent-"))
    try:
        (d / "cluster.yaml").write_text(manifests)
        if agent_conf:
            (d / AGENT_CONF).write_text(agent_conf)
        return load_cluster(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def view_from_snapshot(node: str, snap: dict[str, Any]) -> NodePolicyView:
    return NodePolicyView(
        node,
        tuple(cp.policy_from_dict(p) for p in snap.get("policies", [])),
        {g["name"]: cp.atg_from_dict(g) for g in snap.get("appliedToGroups", [])},
        {g["name"]: cp.ag_from_dict(g) for g in snap.get("addressGroups", [])},
    )


def cni_error_status(code: int) -> int:
    """The HTTP status of a CNI error answer (the body carries the CNI error itself): the request's
    fault (bad version, unknown netns, bad env, undecodable or invalid config) 400, try again later
    503, anything else (I/O, IPAM) 500."""
    if code in (1, 2, 3, 4, 6, 7):
        return 400
    return 503 if code == 11 else 500


class Agent:
    def __init__(self, node: str, controller: str, ovs_rundir: str, rundir: str, datapath: str = "system",
                 stale_flow_delay: float = 10.0):
        self.node = node
        self.ctl = APIClient(controller, timeout=60)
        self.ovs_rundir = Path(ovs_rundir)
        self.rundir = Path(rundir)
        self.datapath = datapath
        self.stale_flow_delay = stale_flow_delay
        self.ipam_dir = str(self.rundir / "ipam")
        self.db = OVSDB(self.ovs_rundir / "db.sock")
        self.ifstore = InterfaceStore(node)
        self.cni = CNIServer(self)
        self.lock = threading.RLock()  # guards cluster/view/flows updates
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.version = 0
        self.conj_ids = ConjIDAllocator()
        self.rules: list[OFRule] = []
        self.ovs_replays = 0

    # ------------------------------------------------------------------------------ state
    def network(self) -> NodeNetwork:
        return NodeNetwork(self.node, self.node_ip, self.pod_cidr, self.gateway_ip, self.gateway_mac,
                           self.cfg.host_gateway, 2, "antrea-tun0", 1, tuple(self.ifstore.all()))

    def expected_interface(self, namespace: str, name: str) -> PodInterface | None:
        """The interface the cluster model has for this Pod (pins: name, ofport, MAC), if any."""
        try:
            net = self.cluster.network(self.node)
        except PyantreaError:
            return None
        for i in net.interfaces:
            if i.namespace == namespace and i.pod == name:
                return i
        return None

    def _load_snapshot(self, snap: dict[str, Any]) -> None:
        self.cluster = cluster_from_snapshot(snap["manifests"], snap.get("agentConf", ""))
        self.view = view_from_snapshot(self.node, snap)
        self.version = int(snap["version"])
        self.epoch = str(snap.get("epoch", ""))

    # ------------------------------------------------------------------------------ start-up
    def start(self) -> None:
        self._wait_controller()
        snap = self.ctl.get(f"/v1/watch?node={self.node}&version=0&timeout=0")
        self._load_snapshot(snap)
        self.cfg = self.cluster.config
        self.bridge_name = self.cfg.ovs_bridge
        me = self.cluster.node(self.node)
        if not me.pod_cidr:
            raise PyantreaError(f"node {self.node} has no podCIDR")
        if not me.node_ip:
            raise PyantreaError(f"node {self.node} has no InternalIP/ExternalIP")
        self.node_ip = me.node_ip
        self.pod_cidr = me.pod_cidr
        self.gateway_ip = str(ipaddress.IPv4Network(self.pod_cidr).network_address + 1)
        self.route = RouteClient(self.cfg.host_gateway)
        node_mtu = self.route.mtu_of_address(self.node_ip) or 1500
        self.mtu = self.cfg.default_mtu or (node_mtu - GENEVE_OVERHEAD)
        model = self.cluster.network(self.node)
        # OVSDB: bridge, tunnel, gateway, in one transaction (spec §2 steps 2, 4, 5)
        dp = "netdev" if self.datapath == "netdev" else "system"
        cmds = bridge_commands(self.bridge_name, dp) + tunnel_commands(self.bridge_name, model, self.cfg.tunnel_type) \
            + gateway_commands(self.bridge_name, model, self.mtu)
        if model.gateway_mac:
            cmds += [["set", "Interface", model.gateway_name, f'mac="{model.gateway_mac}"']]
        self.db.transact(cmds)
        self.db.wait_ofport(self.cfg.host_gateway, timeout=10.0)
        self.ifstore.load(self.db.list_ports(self.bridge_name))
        self.route.configure_gateway(self.gateway_ip, ipaddress.IPv4Network(self.pod_cidr).prefixlen, self.mtu)
        self.gateway_mac = podnet.link_mac(self.cfg.host_gateway)
        # round numbers (spec §11.1)
        prev = self.db.get_bridge_external_id(self.bridge_name, "roundNum")
        self.prev_round = int(prev) if prev and prev.isdigit() else None
        self.round = ((self.prev_round or 0) + 1) % 65536 or 1
        self.ofbridge = OFBridge(self.ovs_rundir / f"{self.bridge_name}.mgmt")
        self.flows = FlowClient(self.ofbridge)
        if self.cfg.gate("Traceflow"):
            self.ofbridge.add_tlv_map(TLV_MAP)
        self._sync_all(initial=True)
        self._reconcile_pods()
        self._release_orphan_leases()
        self._host_networking()
        self.db.transact([["remove", "Open_vSwitch", ".", "other_config", "flow-restore-wait"]])
        log(self.node, f"initialized: round {self.round}, {len(self.flows.installed())} flows, "
                       f"{len(self.ifstore.all())} pods, mtu {self.mtu}")
        threading.Thread(target=self._sweep_stale, daemon=True, name="stale-sweep").start()

    def _wait_controller(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ctl.get("/healthz", timeout=2)
                return
            except (OSError, PyantreaError):
                if time.monotonic() > deadline:
                    raise PyantreaError(f"controller at {self.ctl.path} is not reachable") from None
                time.sleep(0.2)

    def _sweep_stale(self) -> None:
        """After the delay, delete the previous round's flows and persist the round (spec §11.1).

        Retries every second (OVS may be restarting); gives up after a minute and says so.
        """
        if self.stop_event.wait(self.stale_flow_delay):
            return
        for _ in range(60):
            try:
                with self.lock:
                    if self.prev_round is not None and self.prev_round != self.round:
                        self.ofbridge.del_flows(round_selector(self.prev_round))
                self.db.set_bridge_external_ids(self.bridge_name, {"roundNum": str(self.round)})
                log(self.node, f"stale flows of round {self.prev_round} removed; roundNum={self.round}")
                return
            except (OSError, PyantreaError) as e:
                last = e
                if self.stop_event.wait(1.0):
                    return
        log(self.node, f"could not remove the flows of round {self.prev_round}: {last}")

    # ------------------------------------------------------------------------------ flows
    def builder(self) -> FlowBuilder:
        return FlowBuilder(self.network(), pipeline_config(self.cluster, self.round))

    def peers(self) -> list[PeerNode]:
        return peers_of(self.cluster, self.node)

    def _policy_flows(self) -> list[Any]:
        ifaces = {i.pod_key: i for i in self.ifstore.all()}
        self.rules = compute_rules(self.view, ifaces, self.conj_ids)
        return policy_flows(self.rules, self.round)

    def _desired(self, recompute_policy: bool = True) -> dict[str, list[Any]]:
        """Every family, built by one builder in the compiler's order (so flow order = offline order)."""
        b = self.builder()
        fams: dict[str, list[Any]] = {"fixed": b.fixed_flows()}
        for p in sorted(self.peers(), key=lambda p: p.name):
            fams[f"node/{p.name}"] = b.peer_node_flows(p)
        for i in self.ifstore.all():
            fams[f"pod/{i.interface}"] = b.pod_flows(i)
        fams["policy"] = self._policy_flows() if recompute_policy else policy_flows(self.rules, self.round)
        return fams

    def _sync_all(self, initial: bool = False) -> None:
        with self.lock:
            changes: dict[str, Any] = dict(self._desired())
            if initial:
                # One bundle replaces whatever the bridge holds (a previous agent's flows, leftovers
                # of a crash in the current round) with exactly what this agent wants.
                self.flows.reset({k: v for k, v in changes.items() if v})
            else:
                for name in list(self.flows.families):
                    changes.setdefault(name, None)
                self.flows.update(changes)

    def pod_added(self, iface: PodInterface, port_uuid: str) -> None:
        """A new Pod touches its own 5 flows and, if a policy selects it, the policy flows."""
        with self.lock:
            self.ifstore.add(iface, port_uuid)
            self.flows.update({f"pod/{iface.interface}": self.builder().pod_flows(iface),
                               "policy": self._policy_flows()})

    def remove_interface(self, iface: PodInterface) -> None:
        """DEL: flows first (so a reused ofport cannot lose a new Pod's flows), then port, then veth."""
        with self.lock:
            self.ifstore.remove(iface.interface)
            self.flows.update({f"pod/{iface.interface}": None, "policy": self._policy_flows()})
        self.db.transact(self.db.del_port(self.bridge_name, iface.interface))
        if self.datapath == "netdev":
            podnet.unisolate(iface.interface)
        podnet.delete_veth(iface.interface)

    def _reconcile_pods(self) -> None:
        """Interfaces of Pods that no longer exist are removed (spec §11.1)."""
        live = {(p.namespace, p.name) for p in self.cluster.pods if p.node_name == self.node and not p.host_network}
        for i in self.ifstore.all():
            if (i.namespace, i.pod) not in live:
                log(self.node, f"removing interface {i.interface} of deleted Pod {i.pod_key}")
                try:
                    self.remove_interface(i)
                except PyantreaError as e:
                    log(self.node, f"could not remove {i.interface}: {e}")

    def _release_orphan_leases(self) -> None:
        """Release the IPAM reservations of containers that have no interface (a Pod deleted while
        the agent was down, an ADD cut short by a crash). Runs before CNI requests are served."""
        from pyantrea.agent.cniserver import ipam

        keep = {i.container_id for i in self.ifstore.all()}
        for cid, ifname, ip in ipam.leases(self.ipam_dir):
            if cid in keep:
                continue
            try:
                ipam.host_local("DEL", cid, ifname, self.pod_cidr, self.gateway_ip, self.ipam_dir)
                log(self.node, f"released IP {ip} of container {cid[:12]} (no interface)")
            except PyantreaError as e:
                log(self.node, f"could not release IP {ip} of container {cid[:12]}: {e}")

    def _host_networking(self) -> None:
        peers = self.peers()
        self.route.sync_routes(self.pod_cidr, {p.pod_cidr: p.gateway_ip for p in peers})
        self.route.sync_ipset([self.pod_cidr] + [p.pod_cidr for p in peers])
        self.route.sync_iptables(self.pod_cidr)

    # ------------------------------------------------------------------------------ watch loops
    def watch_controller(self) -> None:
        backoff = 0.2
        while not self.stop_event.is_set():
            try:
                snap = self.ctl.get(f"/v1/watch?node={self.node}&version={self.version}&epoch={self.epoch}"
                                    "&timeout=20", timeout=30)
                backoff = 0.2
            except (OSError, PyantreaError) as e:
                # Controller down: keep enforcing what we have; retry with back-off.
                if backoff >= 1.6:
                    log(self.node, f"controller unreachable ({e}); keeping current state")
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if int(snap["version"]) == self.version and snap.get("epoch", "") == self.epoch:
                continue
            try:
                with self.lock:
                    self._load_snapshot(snap)
                    self._sync_all()
                self._host_networking()
            except Exception:  # noqa: BLE001 - a bad update must not kill the agent
                log(self.node, "applying controller update failed:\n" + traceback.format_exc())

    def watch_ovs(self) -> None:
        """Notice within a second that ovs-vswitchd lost its flows (restart), and replay them all."""
        pid = self._vswitchd_pid()
        while not self.stop_event.wait(0.3):
            now = self._vswitchd_pid()
            if now is None or now == pid:
                continue
            try:
                self._wait_bridge()
                with self.lock:
                    if self.cfg.gate("Traceflow"):
                        self.ofbridge.add_tlv_map(TLV_MAP)
                    n = self.flows.replay()
                self.db.transact([["remove", "Open_vSwitch", ".", "other_config", "flow-restore-wait"]])
                self.ovs_replays += 1
                pid = now
                log(self.node, f"ovs-vswitchd restarted (pid {now}): replayed {n} flows in one bundle")
            except (OSError, PyantreaError) as e:
                log(self.node, f"replay after ovs-vswitchd restart failed, retrying: {e}")

    def _vswitchd_pid(self) -> int | None:
        try:
            return int((self.ovs_rundir / "ovs-vswitchd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _wait_bridge(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.ovs_rundir / f"{self.bridge_name}.mgmt").exists():
            if time.monotonic() > deadline:
                raise PyantreaError("br-int did not come back")
            time.sleep(0.05)

    # ------------------------------------------------------------------------------ API
    def router(self) -> Router:
        r = Router()
        r.add("GET", "/healthz", lambda req: "ok\n" if self.ready.is_set() else (503, "initializing\n"))
        def cni(req: Request, command: str) -> Any:
            body = req.json()
            if not isinstance(body, dict):
                raise HTTPError(400, 'a CNI request is a JSON object {"env": {CNI_*: ...}, "conf": "<network config>"}')
            ans: dict[str, Any]
            if not self.ready.wait(60):
                ans = {"error": {"code": 11, "msg": f"agent on {self.node} is still initializing", "details": ""}}
            else:
                ans = self.cni.handle(command, body)
            err = ans.get("error")
            if isinstance(err, dict):
                return cni_error_status(int(err.get("code", 999))), ans
            return ans

        for cmd in ("ADD", "DEL", "CHECK"):
            r.add("POST", f"/cni/{cmd.lower()}", functools.partial(lambda c, req: cni(req, c), cmd))
        r.add("GET", "/v1/version", lambda req: {"agentVersion": __version__})
        r.add("GET", "/v1/ovsflows", self.api_ovsflows)
        r.add("GET", "/v1/podinterfaces", self.api_podinterfaces)
        r.add("GET", "/v1/networkpolicies", self.api_networkpolicies)
        r.add("GET", "/v1/appliedtogroups",
              lambda req: [cp.to_dict(g) for _, g in sorted(self.view.applied_to_groups.items())])
        r.add("GET", "/v1/addressgroups",
              lambda req: [cp.to_dict(g) for _, g in sorted(self.view.address_groups.items())])
        r.add("POST", "/v1/trace-packet", self.api_trace_packet)
        r.add("GET", "/v1/stats", self.api_stats)
        return r

    def api_stats(self, req: Request) -> Any:
        with self.lock:  # a consistent view: the flows of controllerVersion are installed
            return {"bundles": self.flows.bundles, "flowMods": self.flows.sent_lines,
                    "ovsReplays": self.ovs_replays, "round": self.round,
                    "controllerEpoch": self.epoch, "controllerVersion": self.version,
                    "cniLatencies": {k: v[-200:] for k, v in self.cni.latencies.items()}}

    def api_ovsflows(self, req: Request) -> Any:
        table = req.query.get("table")
        fmt = req.query.get("format", "ofctl")
        if fmt not in ("ofctl", "of13"):
            raise HTTPError(400, f"format {fmt!r}: expected ofctl or of13")
        if table is not None and not table.isdigit():
            raise HTTPError(400, f"table {table!r}: expected a table number")
        of13 = fmt == "of13"
        t = int(table) if table is not None else None
        lines = self.ofbridge.dump_flows(names=True, no_stats=not of13, of13=of13, table=t)
        # OVS orders flows inside a table as it likes: give them the compiler's order (= offline order).
        with self.lock:
            desired = sort_flows(f for fl in self._desired(recompute_policy=False).values() for f in fl)
        order = {f.dump_text(): n for n, f in enumerate(desired)}
        if of13:
            import re

            def key13(line: str) -> tuple[int, int, str]:
                m = re.search(r"table=(\d+).*?priority=(\d+)", line)
                return (int(m.group(1)), -int(m.group(2)), line) if m else (0, 0, line)
            return {"lines": sorted(lines, key=key13)}

        def key(line: str) -> tuple[int, int]:
            return (order.get(line, len(order)), 0)
        return {"lines": sorted(lines, key=key)}

    def api_networkpolicies(self, req: Request) -> Any:
        return [cp.to_dict(p) for p in self.view.policies]

    def api_podinterfaces(self, req: Request) -> Any:
        out = []
        for i in self.ifstore.all():
            out.append({"podNamespace": i.namespace, "podName": i.pod, "interfaceName": i.interface, "ip": i.ip,
                        "mac": i.mac, "portUUID": self.ifstore.port_uuid.get(i.interface, ""),
                        "ofPort": i.ofport, "containerID": i.container_id, "node": self.node})
        return out

    def api_trace_packet(self, req: Request) -> Any:
        from pyantrea.agent.tracepacket import build_flow
        from pyantrea.errors import OVSError
        from pyantrea.ovs.unixctl import Unixctl

        body = req.json()
        if not isinstance(body, dict):
            raise HTTPError(400, "trace-packet wants a JSON object")
        live = self.cluster_with_live_network()
        flow = build_flow(live, self.node, body.get("port"), body.get("source"), body.get("destination"),
                          str(body.get("flow") or ""))
        args = [self.bridge_name, flow]
        for s in body.get("ctNext") or []:
            args += ["--ct-next", str(s)]
        try:
            with Unixctl(self.ovs_rundir / "ovs-vswitchd.ctl") as u:
                text = u.call("ofproto/trace", args)
            ok = True
        except OVSError as e:
            text, ok = str(e), False
        names = {2: self.cfg.host_gateway, 1: "antrea-tun0"}
        names.update({i.ofport: i.interface for i in self.ifstore.all()})
        return {"node": self.node, "flow": flow, "text": text, "ok": ok,
                "portNames": {str(k): v for k, v in names.items()}}

    def cluster_with_live_network(self) -> Cluster:
        """The cluster model with this node's network replaced by the live one (real ofports, MACs)."""
        import dataclasses

        nets = tuple(self.network() if n.name == self.node else n for n in self.cluster.networks)
        c = dataclasses.replace(self.cluster, networks=nets)
        return c

    # ------------------------------------------------------------------------------ run
    def run(self) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        server = UnixHTTPServer(str(self.rundir / "agent.sock"), self.router(), lambda m: log(self.node, m))
        server.serve_in_thread()  # CNI requests wait on `ready` implicitly: healthz says 503 until then
        self.start()
        self.ready.set()
        threading.Thread(target=self.watch_controller, daemon=True, name="watch-controller").start()
        threading.Thread(target=self.watch_ovs, daemon=True, name="watch-ovs").start()
        self.stop_event.wait()
        server.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pyantrea agent", description="Run antrea-agent for one node.")
    ap.add_argument("--node", required=True, help="this node's name (a Node of the cluster)")
    ap.add_argument("--controller", required=True, metavar="SOCK", help="the controller's API socket")
    ap.add_argument("--ovs-rundir", required=True, metavar="DIR", help="this node's OVS run dir (db.sock, br-int.mgmt)")
    ap.add_argument("--rundir", required=True, metavar="DIR", help="where agent.sock and ipam/ live")
    ap.add_argument("--datapath", choices=["system", "netdev"], default="system",
                    help="OVS datapath type of br-int (netdev = userspace, the lab)")
    ap.add_argument("--stale-flow-delay", type=float, default=10.0, metavar="S",
                    help="seconds after start before the previous round's flows are removed (spec: 10)")
    a = ap.parse_args(argv)
    agent = Agent(a.node, a.controller, a.ovs_rundir, a.rundir, a.datapath, a.stale_flow_delay)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stop_event.set())
    try:
        agent.run()
    except PyantreaError as e:
        log(a.node, f"fatal: {e}")
        return 1
    return 0
