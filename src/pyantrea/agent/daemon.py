"""`pyantrea agent`: antrea-agent for one node (spec §2, §4, §10, §11).

It runs in the node's network namespace, next to that node's OVS. Split as Antrea's agent is:
- `initializer`: br-int, gateway, tunnel, round numbers, first flows, stale sweep, OVS replay;
- `podconfigurator`: the Pods' ports (CNI ADD/DEL/CHECK through `cniserver`, which depends only on
  the `PodNetwork` protocol), the interface store, pins;
- `controllerwatch`: the controlplane watch of the node's span and the rule cache;
- `apiserver`: the agent's API (CNI, antctl);
- this module: the agent's state, the flow families, the informers, main.

Cluster objects reach it through informers (`k8s.informer`): Nodes (peers: routes and tunnel
flows), for its own node its Pods and its NodeInterfaces pins, and with the AntreaProxy gate
Services and Endpoints (`agent.proxy.proxier`: a flow family and select groups per Service). Nothing
here predicts a value:
interface names follow Antrea's rule, MACs are the veths', ofports OVS's, Pod IPs host-local's.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pyantrea.agent.apiserver import build_router
from pyantrea.agent.cniserver.server import CNIServer
from pyantrea.agent.controllerwatch import ControllerWatch, RuleCache
from pyantrea.agent.initializer import Initializer
from pyantrea.agent.interfacestore import InterfaceStore
from pyantrea.agent.metrics import AgentMetrics
from pyantrea.agent.openflow.client import FlowClient
from pyantrea.agent.openflow.ofconn import OFConnection, PacketIn
from pyantrea.agent.openflow.pipeline import FlowBuilder, PeerNode, PipelineConfig
from pyantrea.agent.openflow.policy import PolicyFlowIndex, policy_flows
from pyantrea.agent.podconfigurator import PodConfigurator
from pyantrea.agent.policyreject import PolicyRejecter
from pyantrea.agent.proxy.proxier import Proxier
from pyantrea.agent.route.client import RouteClient
from pyantrea.apis.k8s import AgentConfig, NodeNetwork, PodInterface
from pyantrea.errors import PyantreaError
from pyantrea.httpapi import APIClient, UnixHTTPServer
from pyantrea.k8s.cluster import Cluster
from pyantrea.k8s.informer import HTTPSource, Informer, ObjectSource
from pyantrea.k8s.loader import load_files
from pyantrea.ovs.flow import Group
from pyantrea.ovs.ofctl import OFBridge
from pyantrea.ovs.vsctl import OVSDB


def log(node: str, msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} agent[{node}]: {msg}", file=sys.stderr, flush=True)


def load_config(path: str | None) -> AgentConfig:
    """antrea-agent.conf (Antrea's keys); the defaults when no file is given."""
    if not path:
        return AgentConfig()
    return load_files([], path).config


class Agent:
    # set by the initializer
    node_ip: str
    pod_cidr: str
    gateway_ip: str
    gateway_mac: str
    gateway_name: str
    gateway_ofport: int
    tunnel_name: str
    tunnel_ofport: int
    mtu: int
    round: int
    route: RouteClient
    ofbridge: OFBridge
    flows: FlowClient
    policy_index: PolicyFlowIndex

    def __init__(self, node: str, controller: str, ovs_rundir: str, rundir: str, datapath: str = "system",
                 stale_flow_delay: float = 10.0, config: str | None = None, kubeconfig: str | None = None):
        self.node = node
        self.cfg = load_config(config)
        self.bridge_name = self.cfg.ovs_bridge
        self.ctl = APIClient(controller, timeout=60)
        self.ovs_rundir = Path(ovs_rundir)
        self.rundir = Path(rundir)
        self.datapath = datapath
        self.stale_flow_delay = stale_flow_delay
        self.ipam_dir = str(self.rundir / "ipam")
        self.db = OVSDB(self.ovs_rundir / "db.sock")
        self.ifstore = InterfaceStore(node)
        self.lock = threading.RLock()  # guards the flows and the rule cache's installation
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.ovs_replays = 0
        say = lambda m: log(node, m)  # noqa: E731
        source: ObjectSource
        if kubeconfig:  # Kubernetes mode: the cluster's objects come from kube-apiserver
            from pyantrea.k8s.kubesource import KubeSource

            source = KubeSource(None if kubeconfig == "in-cluster" else kubeconfig)
        else:
            source = HTTPSource(controller)
        self.nodes = Informer(source, "Node", on_add=self._node_changed, on_delete=self._node_changed,
                              on_update=lambda o, n: self._node_changed(n), log=say)
        self.pins = Informer(source, "NodeInterfaces", node=node, log=say)
        self.pods = Informer(source, "Pod", node=node, log=say)
        self.proxy_enabled = self.cfg.gate("AntreaProxy")
        self.service_informers: tuple[Informer, ...] = ()
        self.proxier: Proxier | None = None
        if self.proxy_enabled:  # AntreaProxy: the agent serves Services itself, in OVS
            svc_changed = lambda o: self._service_changed(o.key)  # noqa: E731
            services = Informer(source, "Service", on_add=svc_changed, on_delete=svc_changed,
                                on_update=lambda o, n: svc_changed(n), log=say)
            endpoints = Informer(source, "Endpoints", on_add=svc_changed, on_delete=svc_changed,
                                 on_update=lambda o, n: svc_changed(n), log=say)
            self.service_informers = (services, endpoints)
            self.proxier = Proxier(node, services, endpoints, self.builder, lambda: self.flows,
                                   lambda: getattr(self, "pod_cidr", None), self._node_ports, say)
        self.rules = RuleCache(node)
        self.controlplane = ControllerWatch(self.ctl, node, self.rules, self.interfaces, self.install_policy,
                                            self.reinstall_policy, say, self.lock)
        self.init = Initializer(self, say)
        self.podconf = PodConfigurator(self, say)
        self.cni = CNIServer(self.podconf)
        self.metrics = AgentMetrics(self)  # GET /metrics (its own registry)
        # the persistent OpenFlow connection (packet-in / packet-out) and who handles what comes in
        self.ofconn: OFConnection | None = None
        self.packet_in_handlers: list[Callable[[PacketIn], bool]] = []
        self.packet_ins_unhandled = 0
        if self.proxier is not None:  # a Service port without endpoints: its connections are rejected
            px = self.proxier
            self.packet_in_handlers.append(lambda pi: px.handle_packet_in(pi, self._packet_out))
        self.rejecter: PolicyRejecter | None = None
        if self.cfg.gate("AntreaPolicy"):  # Antrea-native Reject rules: the agent answers the client
            self.rejecter = PolicyRejecter(lambda: self.tunnel_ofport, lambda: self.gateway_mac,
                                           lambda: [(p.node_ip, p.pod_cidr) for p in self.peers()],
                                           self._packet_out, say)
            self.packet_in_handlers.append(self.rejecter.handle)

    # ------------------------------------------------------------------------------ state
    def network(self) -> NodeNetwork:
        return NodeNetwork(self.node, self.node_ip, self.pod_cidr, self.gateway_ip, self.gateway_mac,
                           self.gateway_name, self.gateway_ofport, self.tunnel_name, self.tunnel_ofport,
                           tuple(self.ifstore.all()))

    def interfaces(self) -> Mapping[str, PodInterface]:
        return {i.pod_key: i for i in self.ifstore.all()}

    def peers(self) -> list[PeerNode]:
        """Every other Node with a podCIDR and an IP, master included (spec §4.1)."""
        return [PeerNode(n.name, n.node_ip, n.pod_cidr) for n in self.nodes.items()
                if n.name != self.node and n.pod_cidr and n.node_ip]

    def local_cluster(self) -> Cluster:
        """What this agent knows, as a Cluster: the Nodes, its own Pods and its own network."""
        peers = tuple(NodeNetwork(p.name, p.node_ip, p.pod_cidr, "", "") for p in self.peers())
        return Cluster(config=self.cfg, namespaces=(), nodes=tuple(self.nodes.items()), pods=tuple(self.pods.items()),
                       services=(), endpoints=(), policies=(), networks=(self.network(),) + peers)

    # ------------------------------------------------------------------------------ flows
    def builder(self) -> FlowBuilder:
        return FlowBuilder(self.network(), PipelineConfig(service_cidr=self.cfg.service_cidr,
                                                          traceflow=self.cfg.gate("Traceflow"),
                                                          round_num=self.round, proxy=self.proxy_enabled,
                                                          proxy_all=self.cfg.proxy_all,
                                                          antrea_policy=self.cfg.gate("AntreaPolicy")))

    def policy_flows(self) -> list[Any]:
        """Every policy flow, in the compiler's order (what the offline compiler gives for these rules)."""
        return policy_flows(self.rules.all_rules(), self.round)

    def desired(self) -> dict[str, list[Any]]:
        """Every family, built by one builder in the compiler's order (so flow order = offline order)."""
        return self.desired_state()[0]

    def desired_state(self) -> tuple[dict[str, list[Any]], list[Group]]:
        """Every family (the compiler's order) and every group (AntreaProxy's)."""
        b = self.builder()
        fams: dict[str, list[Any]] = {"fixed": b.fixed_flows()}
        for p in sorted(self.peers(), key=lambda p: p.name):
            fams[f"node/{p.name}"] = b.peer_node_flows(p)
        for i in self.ifstore.all():
            fams[f"pod/{i.interface}"] = b.pod_flows(i)
        groups: list[Group] = []
        if self.proxier is not None:
            svc, groups = self.proxier.families(b)
            fams.update(svc)
        fams["policy"] = self.policy_flows()
        return fams, groups

    def sync_all(self, initial: bool = False) -> None:
        with self.lock:
            self.policy_index = PolicyFlowIndex(self.round)
            self.policy_index.update([], self.rules.all_rules())
            if initial and self.proxier is not None:
                self.proxier.start()
            fams, groups = self.desired_state()
            changes: dict[str, Any] = dict(fams)
            if initial:
                # One bundle replaces whatever the bridge holds (a previous agent's flows, leftovers
                # of a crash in the current round) with exactly what this agent wants.
                self.flows.reset({k: v for k, v in changes.items() if v}, groups)
            else:
                for name in list(self.flows.families):
                    changes.setdefault(name, None)
                want: dict[int, Group | None] = {g.group_id: g for g in groups}
                for gid in self.flows.groups:
                    want.setdefault(gid, None)
                self.flows.update(changes, groups=want)

    def install_policy(self, removed: list[Any], added: list[Any],
                       changes: dict[str, Any] | None = None) -> int:
        """Rules were replaced (a reconcile): send only the flow mods they need, with `changes` of other
        families (a Pod's own flows) in the same bundle. Returns the number of flow mods sent."""
        with self.lock:
            ups, dels = self.policy_index.update(removed, added)
            return self.flows.update(changes or {}, {"policy": (ups, dels)})

    def reinstall_policy(self) -> None:
        """The rule cache was listed anew: rebuild the index and send the difference."""
        with self.lock:
            self.policy_index = PolicyFlowIndex(self.round)
            self.policy_index.update([], self.rules.all_rules())
            self.flows.update({"policy": self.policy_index.flows()})

    def _node_changed(self, node: Any) -> None:
        """A Node was added, changed or removed: its peer flows and the host's routes follow."""
        if not self.ready.is_set() or node.name == self.node:
            return
        with self.lock:
            peer = next((p for p in self.peers() if p.name == node.name), None)
            self.flows.update({f"node/{node.name}": self.builder().peer_node_flows(peer) if peer else None})
        self.host_networking()

    def host_networking(self) -> None:
        peers = self.peers()
        proxy_all = self.proxy_enabled and self.cfg.proxy_all
        self.route.sync_routes(self.pod_cidr, {p.pod_cidr: p.gateway_ip for p in peers}, proxy_all=proxy_all)
        self.route.sync_ipset([self.pod_cidr] + [p.pod_cidr for p in peers])
        self.route.sync_iptables(self.pod_cidr, proxy_all=proxy_all)
        if proxy_all and self.proxier is not None:
            self._node_ports(self.proxier.node_ports())

    # ------------------------------------------------------------------------------ AntreaProxy
    def _service_changed(self, key: str) -> None:
        """A Service or its Endpoints changed (informer handler, under the informer's lock): queued for
        the proxier's worker, which sends only that Service's flows and groups."""
        if self.proxier is not None:
            self.proxier.queue(key)

    def _sync_service(self, key: str) -> None:
        if self.proxier is not None:
            with self.lock:
                self.proxier.changed(key)

    def _node_ports(self, ports: list[tuple[str, int]]) -> None:
        """proxyAll: the host DNATs NodeIP:nodePort to br-int's virtual NodePort IP (ipset entries)."""
        if self.proxy_enabled and self.cfg.proxy_all and getattr(self, "route", None) is not None:
            self.route.sync_nodeports(self.node_ip, ports)

    def _packet_out(self, data: bytes, port: int, actions: list[Any] | None = None) -> None:
        if self.ofconn is not None:
            self.ofconn.packet_out(data, out_port=port, actions=actions)

    def packet_in(self, pi: PacketIn) -> None:
        """A packet the datapath sent up: the first handler that takes it (Reject, Traceflow, logging)."""
        for handler in self.packet_in_handlers:
            if handler(pi):
                return
        self.packet_ins_unhandled += 1

    # ------------------------------------------------------------------------------ run
    def wait_controller(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ctl.get("/healthz", timeout=2)
                return
            except (OSError, PyantreaError):
                if time.monotonic() > deadline:
                    raise PyantreaError(f"controller at {self.ctl.path} is not reachable") from None
                time.sleep(0.2)

    def run(self) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        server = UnixHTTPServer(str(self.rundir / "agent.sock"), build_router(self), lambda m: log(self.node, m))
        server.serve_in_thread()  # CNI requests wait on `ready` implicitly: healthz says 503 until then
        self.wait_controller()
        informers = (self.nodes, self.pins, self.pods) + self.service_informers
        for inf in informers:
            inf.sync()
        self.init.start()
        self.ofconn = OFConnection(self.ovs_rundir / f"{self.bridge_name}.mgmt", self.packet_in,
                                   lambda m: log(self.node, m))
        self.ofconn.start()
        self.ready.set()
        if self.proxier is not None:
            threading.Thread(target=self.proxier.run, args=(self.stop_event, self._sync_service), daemon=True,
                             name="proxier").start()
        for inf in informers:
            inf.start(self.stop_event)
        threading.Thread(target=self.controlplane.run, args=(self.stop_event,), daemon=True,
                         name="watch-controller").start()
        threading.Thread(target=self.init.watch_ovs, daemon=True, name="watch-ovs").start()
        self.stop_event.wait()
        server.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pyantrea agent", description="Run antrea-agent for one node.")
    ap.add_argument("--node", required=True, help="this node's name (a Node of the cluster)")
    ap.add_argument("--controller", required=True, metavar="SOCK", help="the controller's API socket")
    ap.add_argument("--ovs-rundir", required=True, metavar="DIR", help="this node's OVS run dir (db.sock, br-int.mgmt)")
    ap.add_argument("--rundir", required=True, metavar="DIR", help="where agent.sock and ipam/ live")
    ap.add_argument("--config", metavar="FILE", help="antrea-agent.conf (Antrea's keys; defaults without it)")
    ap.add_argument("--kubeconfig", metavar="FILE",
                    help="Kubernetes mode: watch Nodes, this node's Pods and NodeInterfaces in kube-apiserver "
                         "(this kubeconfig; 'in-cluster' for the ServiceAccount); the controller still serves the "
                         "controlplane API at --controller")
    ap.add_argument("--datapath", choices=["system", "netdev"], default="system",
                    help="OVS datapath type of br-int (netdev = userspace, the lab)")
    ap.add_argument("--stale-flow-delay", type=float, default=10.0, metavar="S",
                    help="seconds after start before the previous round's flows are removed (spec: 10)")
    a = ap.parse_args(argv)
    try:
        agent = Agent(a.node, a.controller, a.ovs_rundir, a.rundir, a.datapath, a.stale_flow_delay, a.config,
                      a.kubeconfig)
    except Exception as e:  # noqa: BLE001 - also the Kubernetes client's configuration errors
        log(a.node, f"fatal: {e}")
        return 1
    signal.signal(signal.SIGTERM, lambda *_: agent.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stop_event.set())
    try:
        agent.run()
    except PyantreaError as e:
        log(a.node, f"fatal: {e}")
        return 1
    return 0
