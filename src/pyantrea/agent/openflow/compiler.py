"""A node's complete flow set, from that node's view alone (its Pods, its peers, its policies)."""

from __future__ import annotations

from dataclasses import dataclass

from pyantrea.agent.networkpolicy import ConjIDAllocator, OFRule, compute_rules
from pyantrea.agent.openflow.pipeline import FlowBuilder, PeerNode, PipelineConfig
from pyantrea.agent.openflow.policy import policy_flows
from pyantrea.agent.openflow.priority import with_priorities
from pyantrea.agent.openflow.service import node_service_state
from pyantrea.agent.proxy.model import GroupIDs, ServicePortEntry
from pyantrea.apis.k8s import NodeNetwork
from pyantrea.apis.controlplane import NodePolicyView
from pyantrea.ovs.flow import Flow, Group, sort_flows


@dataclass(frozen=True)
class NodeFlows:
    node: str
    flows: tuple[Flow, ...]  # sorted: table, priority desc, creation order
    rules: tuple[OFRule, ...]  # the OpenFlow policy rules (conj_id -> policy), for traces and antctl
    groups: tuple[Group, ...] = ()  # AntreaProxy's select groups, by id (the gate on)
    services: tuple[ServicePortEntry, ...] = ()  # the Service ports they serve (group id order)
    group_ids: tuple[tuple[str, int], ...] = ()  # Service port key -> group id


def compile_node(net: NodeNetwork, peers: list[PeerNode], view: NodePolicyView,
                 cfg: PipelineConfig = PipelineConfig(),
                 services: dict[str, list[ServicePortEntry]] | None = None) -> NodeFlows:
    """`services` (Service key -> its port entries) matters only with `cfg.proxy` (the AntreaProxy gate)."""
    b = FlowBuilder(net, cfg)
    flows = b.fixed_flows()
    for peer in sorted(peers, key=lambda p: p.name):
        flows += b.peer_node_flows(peer)
    for iface in net.interfaces:
        flows += b.pod_flows(iface)
    groups: list[Group] = []
    entries: list[ServicePortEntry] = []
    ids = GroupIDs()
    if cfg.proxy and services:
        entries = [e for key in sorted(services) for e in services[key]]
        ids.assign(entries)
        fams, shared, groups = node_service_state(b, services, ids.ids)
        for key in sorted(fams):
            flows += fams[key]
        flows += shared
    ifaces = {i.pod_key: i for i in net.interfaces}
    rules = compute_rules(view, ifaces, ConjIDAllocator())
    if any(r.priority is not None for r in rules):  # Antrea-native rules: their OpenFlow priorities
        rules = with_priorities(rules)
    flows += policy_flows(rules, cfg.round_num)
    return NodeFlows(net.name, tuple(sort_flows(flows)), tuple(rules), tuple(groups),
                     tuple(sorted(entries, key=lambda e: ids.ids[e.key])), tuple(sorted(ids.ids.items())))
