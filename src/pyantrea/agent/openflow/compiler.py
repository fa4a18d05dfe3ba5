"""A node's complete flow set, from that node's view alone (its Pods, its peers, its policies)."""

from __future__ import annotations

from dataclasses import dataclass

from pyantrea.agent.networkpolicy import ConjIDAllocator, OFRule, compute_rules
from pyantrea.agent.openflow.pipeline import FlowBuilder, PeerNode, PipelineConfig
from pyantrea.agent.openflow.policy import policy_flows
from pyantrea.apis.k8s import NodeNetwork
from pyantrea.apis.controlplane import NodePolicyView
from pyantrea.ovs.flow import Flow, sort_flows


@dataclass(frozen=True)
class NodeFlows:
    node: str
    flows: tuple[Flow, ...]  # sorted: table, priority desc, creation order
    rules: tuple[OFRule, ...]  # the OpenFlow policy rules (conj_id -> policy), for traces and antctl


def compile_node(net: NodeNetwork, peers: list[PeerNode], view: NodePolicyView,
                 cfg: PipelineConfig = PipelineConfig()) -> NodeFlows:
    b = FlowBuilder(net, cfg)
    flows = b.fixed_flows()
    for peer in sorted(peers, key=lambda p: p.name):
        flows += b.peer_node_flows(peer)
    for iface in net.interfaces:
        flows += b.pod_flows(iface)
    ifaces = {i.pod_key: i for i in net.interfaces}
    rules = compute_rules(view, ifaces, ConjIDAllocator())
    flows += policy_flows(rules, cfg.round_num)
    return NodeFlows(net.name, tuple(sort_flows(flows)), tuple(rules))
