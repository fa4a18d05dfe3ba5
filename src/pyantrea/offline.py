"""Offline mode: a cluster folder -> the controller's state and every node's flows."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pyantrea.agent.openflow.compiler import NodeFlows, compile_node
from pyantrea.agent.openflow.pipeline import PeerNode, PipelineConfig
from pyantrea.controller.networkpolicy import NetworkPolicyController, PolicyState
from pyantrea.k8s.cluster import Cluster


def peers_of(cluster: Cluster, node: str) -> list[PeerNode]:
    """Every other Node with a podCIDR and an IP, master included (spec §4.1)."""
    out = []
    for n in cluster.networks:
        if n.name != node and n.pod_cidr and n.node_ip:
            out.append(PeerNode(n.name, n.node_ip, n.pod_cidr))
    return out


def pipeline_config(cluster: Cluster, round_num: int = 1) -> PipelineConfig:
    return PipelineConfig(service_cidr=cluster.config.service_cidr,
                          traceflow=cluster.config.gate("Traceflow"), round_num=round_num)


@dataclass
class OfflineCluster:
    cluster: Cluster

    @classmethod
    def load(cls, path: str | Path) -> "OfflineCluster":
        from pyantrea.k8s.complete import load_cluster

        return cls(load_cluster(path))

    @cached_property
    def policy_state(self) -> PolicyState:
        c = self.cluster
        return NetworkPolicyController(c.pods, c.namespaces, c.policies).compute()

    def node_flows(self, node: str) -> NodeFlows:
        net = self.cluster.network(node)
        return compile_node(net, peers_of(self.cluster, node), self.policy_state.node_view(node),
                            pipeline_config(self.cluster))
