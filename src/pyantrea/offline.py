"""Offline mode: a cluster folder -> the controller's state and every node's flows."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyantrea.agent.openflow.compiler import NodeFlows, compile_node
from pyantrea.agent.openflow.pipeline import PeerNode, PipelineConfig
from pyantrea.controller.networkpolicy import NetworkPolicyController, PolicyState
from pyantrea.k8s.cluster import Cluster

if TYPE_CHECKING:
    from pyantrea.agent.proxy.model import ServicePortEntry
    from pyantrea.ovs.trace import TraceResult


def peers_of(cluster: Cluster, node: str) -> list[PeerNode]:
    """Every other Node with a podCIDR and an IP, master included (spec §4.1)."""
    out = []
    for n in cluster.networks:
        if n.name != node and n.pod_cidr and n.node_ip:
            out.append(PeerNode(n.name, n.node_ip, n.pod_cidr))
    return out


def pipeline_config(cluster: Cluster, round_num: int = 1) -> PipelineConfig:
    return PipelineConfig(service_cidr=cluster.config.service_cidr,
                          traceflow=cluster.config.gate("Traceflow"), round_num=round_num,
                          proxy=cluster.config.gate("AntreaProxy"), proxy_all=cluster.config.proxy_all,
                          antrea_policy=cluster.config.gate("AntreaPolicy"))


def service_entries(cluster: Cluster, node: str) -> dict[str, list[ServicePortEntry]]:
    """AntreaProxy's Service ports on `node` (Service key -> port entries with ready endpoints)."""
    from pyantrea.agent.proxy.model import cluster_entries

    net = next((n for n in cluster.networks if n.name == node), None)
    return cluster_entries(cluster.services, {e.key: e for e in cluster.endpoints}, node,
                           net.pod_cidr if net is not None else None)


@dataclass
class OfflineCluster:
    cluster: Cluster

    @classmethod
    def load(cls, path: str | Path) -> OfflineCluster:
        from pyantrea.k8s.complete import load_cluster

        return cls(load_cluster(path))

    @cached_property
    def policy_state(self) -> PolicyState:
        c = self.cluster
        if c.antrea_policies:  # Antrea-native policies (the AntreaPolicy gate): their part merged in
            from pyantrea.controller.antreapolicy import cluster_state

            return cluster_state(c)
        return NetworkPolicyController(c.pods, c.namespaces, c.policies).compute()

    def node_flows(self, node: str) -> NodeFlows:
        net = self.cluster.network(node)
        cfg = pipeline_config(self.cluster)
        return compile_node(net, peers_of(self.cluster, node), self.policy_state.node_view(node), cfg,
                            service_entries(self.cluster, node) if cfg.proxy else None)


class NodeSandbox:
    """A private OVS (dummy datapath, no root) holding one node's br-int: its ports at their ofports,
    the Geneve TLV map, and its flows installed in one bundle. Traces run over one unixctl connection."""

    def __init__(self, offline: OfflineCluster, node: str):
        self.offline = offline
        self.node = node
        self.net = offline.cluster.network(node)
        self.bridge_name = offline.cluster.config.ovs_bridge
        self.sandbox: Any = None
        self._tmp: str | None = None

    def __enter__(self) -> NodeSandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        from pyantrea.agent.bridge import TLV_MAP, node_commands
        from pyantrea.ovs.sandbox import Sandbox

        self._tmp = tempfile.mkdtemp(prefix="pa-")
        self.sandbox = Sandbox(Path(self._tmp), datapath="dummy")
        self.sandbox.start()
        cfg = self.offline.cluster.config
        self.sandbox.db.transact(node_commands(self.bridge_name, self.net, "netdev", cfg.tunnel_type))
        br = self.sandbox.bridge(self.bridge_name)
        if cfg.gate("Traceflow"):
            br.add_tlv_map(TLV_MAP)
        nf = self.offline.node_flows(self.node)
        if nf.groups:  # groups first: a flow that names a group needs it
            br.bundle([f"group add {g.install_text()}" for g in nf.groups])
        br.replace_flows([f.install_text() for f in nf.flows])

    def stop(self) -> None:
        if self.sandbox is not None:
            self.sandbox.stop()
            self.sandbox = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def port_names(self) -> dict[int, str]:
        names = {self.net.gateway_ofport: self.net.gateway_name, self.net.tunnel_ofport: self.net.tunnel_name}
        for i in self.net.interfaces:
            names[i.ofport] = i.interface
        return names

    def trace(self, flow: str, ct_next: list[str] | None = None) -> TraceResult:
        from pyantrea.errors import OVSError
        from pyantrea.ovs.trace import TraceResult, parse_trace

        try:
            text = self.sandbox.trace(self.bridge_name, flow, list(ct_next or []))
        except OVSError as e:
            return TraceResult(self.node, flow, str(e), None, self.port_names(), self.net.tunnel_ofport)
        return TraceResult(self.node, flow, text, parse_trace(text, self.bridge_name), self.port_names(),
                           self.net.tunnel_ofport)
