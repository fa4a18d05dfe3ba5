#!/usr/bin/env python3
"""Benchmark: controller computation, one node's flow compilation, and its install into OVS.

A synthetic cluster is built in memory with pyantrea's own value types (no YAML): N nodes, N x P
Pods, K NetworkPolicies, 20 labelled namespaces. It is deterministic for a given --seed.

  * Namespaces carry team/env/purpose/compliance labels; three are platform namespaces
    (kube-system with CoreDNS, monitoring with Prometheus, ingress-nginx).
  * Pods come from Deployments (app/tier/version/pod-template-hash labels). Apps expose named ports
    whose NUMBERS DIFFER between apps and between versions of one app (http is 80, 3000, 8080,
    8081, 9000 or 9200; metrics is 9090, 9091, 9113, 9187...), and Istio-injected namespaces add
    a sidecar port, so named-port grouping (Antrea's groupMembersByServices) really splits groups.
  * Policies mix podSelector / namespaceSelector / both, matchLabels and matchExpressions
    (In, NotIn, Exists, DoesNotExist), ipBlocks with except, TCP/UDP/SCTP, numbered and named
    ports, endPort ranges, ingress and egress, default-deny and deny-all. They are drawn from a
    small set of templates over a small set of apps, so many of them share selectors (and
    therefore AppliedToGroups/AddressGroups), as in real clusters.

Phases (time.perf_counter):
  1. NetworkPolicyController(pods, namespaces, policies).compute()
  2. pick the busiest node (most policy flows): every node is ranked by an estimate computed from
     its NodePolicyView (BusyEstimator; --exact-busiest compiles every node instead)
  3. compile_node(net, peers, state.node_view(node), PipelineConfig()) for it, median of --runs;
     its exact policy flow count = its flows minus the same node compiled with an empty view
  4. peak memory: tracemalloc over a fresh compute + compile (a separate, untimed pass), ru_maxrss
  5. install into an OVS sandbox (dummy datapath), each run in a fresh sandbox: ports in one OVSDB
     transaction, TLV map, then all flows in ONE bundle (replace-flows); dump them back and check
     the count (and that the dump text equals Flow.dump_text()).

Run:  python bench/compile.py            (defaults: 100 nodes x 100 Pods, 1000 policies)
      python bench/compile.py --help
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import ipaddress
import os
import platform
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pyantrea.agent.networkpolicy import ConjIDAllocator, compute_rules, ipblock_cidrs
from pyantrea.agent.openflow import tables as T
from pyantrea.agent.openflow.compiler import NodeFlows, compile_node
from pyantrea.agent.openflow.pipeline import PeerNode, PipelineConfig
from pyantrea.agent.openflow.policy import policy_flows, service_matches
from pyantrea.apis import controlplane as cp
from pyantrea.apis.k8s import (
    ContainerPort,
    IPBlock,
    LabelSelector,
    LabelSelectorRequirement,
    Namespace,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    NetworkPolicyRule,
    Node,
    NodeNetwork,
    Pod,
    PodInterface,
    labels_of,
)
from pyantrea.controller.networkpolicy import NetworkPolicyController, NodePolicyView, PolicyState
from pyantrea.k8s.complete import container_id_for, interface_name, stable_mac

T_ = TypeVar("T_")

# --------------------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class App:
    """A Deployment template: labels, weight (share of the Pods), named container ports."""

    name: str
    tier: str
    weight: float
    ports: tuple[ContainerPort, ...]
    extra_labels: tuple[tuple[str, str], ...] = ()
    v2_ports: tuple[ContainerPort, ...] | None = None  # a canary whose port numbers moved


def _p(name: str, port: int, proto: str = "TCP") -> ContainerPort:
    return ContainerPort(container_port=port, protocol=proto, name=name)


# Same port NAME, different NUMBERS between apps (and between versions of api/frontend).
TEAM_APPS: dict[str, App] = {a.name: a for a in (
    App("frontend", "frontend", 2.5, (_p("http", 80), _p("metrics", 9113)),
        v2_ports=(_p("http", 8080), _p("metrics", 9113))),
    App("web", "frontend", 2.5, (_p("http", 3000), _p("metrics", 9090))),
    App("gateway", "frontend", 2.0, (_p("http", 8080), _p("https", 8443), _p("metrics", 9090))),
    App("api", "backend", 3.0, (_p("http", 8080), _p("grpc", 50051), _p("metrics", 9090)),
        v2_ports=(_p("http", 8081), _p("grpc", 50051), _p("metrics", 9090))),
    App("worker", "backend", 2.0, (_p("metrics", 9090),)),
    App("auth", "backend", 1.5, (_p("http", 9000), _p("grpc", 50052), _p("metrics", 9091))),
    App("search", "backend", 1.5, (_p("http", 9200), _p("transport", 9300), _p("metrics", 9114))),
    App("statsd", "backend", 0.5, (_p("statsd", 8125, "UDP"), _p("metrics", 9102))),
    App("diameter", "backend", 0.6, (_p("diameter", 3868, "SCTP"), _p("metrics", 9090))),
    App("postgres", "data", 0.5, (_p("postgres", 5432), _p("metrics", 9187))),
    App("redis", "data", 0.8, (_p("redis", 6379), _p("metrics", 9121))),
    App("kafka", "data", 0.6, (_p("kafka", 9092), _p("kafka-ssl", 9093), _p("metrics", 7071))),
)}
FRONTENDS = ("frontend", "web", "gateway")
OPTIONAL = ("auth", "search", "statsd", "diameter", "postgres", "redis", "kafka")
DATA_PORT = {"postgres": "postgres", "redis": "redis", "kafka": "kafka"}

PLATFORM: dict[str, tuple[dict[str, str], list[App]]] = {
    "kube-system": ({"team": "platform", "env": "prod"}, [
        App("coredns", "infra", 0.15, (_p("dns", 53, "UDP"), _p("dns-tcp", 53), _p("metrics", 9153)),
            extra_labels=(("k8s-app", "kube-dns"),))]),
    "monitoring": ({"team": "platform", "env": "prod", "purpose": "monitoring"}, [
        App("prometheus", "infra", 0.1, (_p("web", 9090),)),
        App("grafana", "infra", 0.05, (_p("http", 3000),))]),
    "ingress-nginx": ({"team": "platform", "env": "prod", "purpose": "ingress"}, [
        App("ingress-nginx", "infra", 0.3, (_p("http", 80), _p("https", 443), _p("metrics", 10254)))]),
}
TEAMS = ("payments", "checkout", "catalog", "search", "identity", "shipping", "reviews", "ads", "analytics")
PCI_TEAMS = ("payments", "checkout")
ISTIO_PROXY = (_p("http-envoy-prom", 15090),)
K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


# --------------------------------------------------------------------------------------- cluster


@dataclass
class Synthetic:
    namespaces: list[Namespace]
    nodes: list[Node]
    pods: list[Pod]
    policies: list[NetworkPolicy]
    networks: dict[str, NodeNetwork]
    ns_apps: dict[str, list[str]] = field(default_factory=dict)

    def peers_of(self, node: str) -> list[PeerNode]:
        return [PeerNode(n.name, n.node_ip or "", n.pod_cidr or "") for n in self.nodes if n.name != node]


def _rand(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(K8S_ALPHABET) for _ in range(n))


def build_namespaces(rng: random.Random) -> tuple[list[Namespace], dict[str, list[App]], dict[str, str]]:
    """20 namespaces: 3 platform ones, then team-env ones (every team in prod, most in staging)."""
    nss: list[Namespace] = []
    apps: dict[str, list[App]] = {}
    team_of: dict[str, str] = {}
    for name, (labels, platform_apps) in PLATFORM.items():
        nss.append(Namespace(name, labels_of({"name": name, **labels})))
        apps[name] = platform_apps
        team_of[name] = "platform"
    pairs = [(t, "prod") for t in TEAMS] + [(t, "staging") for t in TEAMS[:8]]
    for team, env in pairs:
        name = f"{team}-{env}"
        labels = {"name": name, "team": team, "env": env}
        if team in PCI_TEAMS:
            labels["compliance"] = "pci"
        if rng.random() < 0.4:
            labels["istio-injection"] = "enabled"
        nss.append(Namespace(name, labels_of(labels)))
        chosen = [TEAM_APPS[rng.choice(FRONTENDS)], TEAM_APPS["api"], TEAM_APPS["worker"]]
        if rng.random() < 0.3:  # a second front door
            other = [f for f in FRONTENDS if f != chosen[0].name]
            chosen.append(TEAM_APPS[rng.choice(other)])
        chosen += [TEAM_APPS[a] for a in sorted(rng.sample(OPTIONAL, rng.randint(2, 5)))]
        apps[name] = chosen
        team_of[name] = team
    return nss, apps, team_of


def apportion(weights: list[float], total: int) -> list[int]:
    """Largest-remainder split of `total` by `weights`, at least 1 each (when total allows)."""
    s = sum(weights)
    raw = [w / s * total for w in weights]
    out = [max(1, int(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - int(raw[i])), i))
    i = 0
    while sum(out) < total:
        out[order[i % len(order)]] += 1
        i += 1
    while sum(out) > total:  # only when the minimum of 1 overshoots
        j = max(range(len(out)), key=lambda k: out[k])
        out[j] -= 1
    return out


def build_cluster(n_nodes: int, pods_per_node: int, n_policies: int, seed: int) -> Synthetic:
    rng = random.Random(seed)
    namespaces, ns_apps, team_of = build_namespaces(rng)
    ns_by_name = {n.name: n for n in namespaces}

    # Deployments (namespace, app, version, ports) and their replica counts.
    deployments: list[tuple[str, App, str, tuple[ContainerPort, ...]]] = []
    weights: list[float] = []
    for ns in namespaces:
        for app in ns_apps[ns.name]:
            deployments.append((ns.name, app, "v1", app.ports))
            weights.append(app.weight)
            if app.v2_ports is not None and rng.random() < 0.5:  # a canary with moved ports
                deployments.append((ns.name, app, "v2", app.v2_ports))
                weights.append(app.weight * 0.2)
    total = n_nodes * pods_per_node
    replicas = apportion(weights, total)

    # Pods (unscheduled yet).
    raw: list[tuple[str, str, tuple[tuple[str, str], ...], tuple[ContainerPort, ...], tuple[str, ...]]] = []
    used: set[tuple[str, str]] = set()
    for (ns, app, version, ports), count in zip(deployments, replicas):
        istio = ns_by_name[ns].label_map.get("istio-injection") == "enabled"
        template_hash = _rand(rng, 10)
        labels = labels_of({"app": app.name, "tier": app.tier, "version": version,
                            "pod-template-hash": template_hash, **dict(app.extra_labels)})
        all_ports = ports + (ISTIO_PROXY if istio else ())
        containers = (app.name,) + (("istio-proxy",) if istio else ())
        for _ in range(count):
            name = f"{app.name}-{template_hash}-{_rand(rng, 5)}"
            while (ns, name) in used:  # ReplicaSets never reuse a live Pod's name
                name = f"{app.name}-{template_hash}-{_rand(rng, 5)}"
            used.add((ns, name))
            raw.append((ns, name, labels, all_ports, containers))

    # Nodes and scheduling: a shuffled, even spread (exactly pods_per_node on each node).
    width = max(3, len(str(n_nodes - 1)))
    cidr_base = int(ipaddress.IPv4Address("10.192.0.0"))
    ip_base = int(ipaddress.IPv4Address("10.79.1.10"))
    nodes = [Node(f"node-{i:0{width}d}", labels_of({"kubernetes.io/os": "linux"}),
                  pod_cidr=f"{ipaddress.IPv4Address(cidr_base + i * 256)}/24",
                  internal_ip=str(ipaddress.IPv4Address(ip_base + i))) for i in range(n_nodes)]
    rng.shuffle(raw)
    pods: list[Pod] = []
    networks: dict[str, NodeNetwork] = {}
    for i, node in enumerate(nodes):
        chunk = sorted(raw[i * pods_per_node:(i + 1) * pods_per_node], key=lambda r: (r[0], r[1]))
        net = ipaddress.IPv4Network(node.pod_cidr or "")
        ifaces: list[PodInterface] = []
        names: set[str] = set()
        for j, (ns, name, labels, ports, containers) in enumerate(chunk):
            ip = str(net.network_address + 2 + j)
            pods.append(Pod(ns, name, labels, node_name=node.name, pod_ip=ip, ports=ports,
                            containers=containers, uid=str(uuid.UUID(int=rng.getrandbits(128), version=4))))
            cid = container_id_for(ns, name)
            iface = interface_name(name, cid)
            if iface in names:
                raise SystemExit(f"interface name collision {iface} on {node.name}; try another --seed")
            names.add(iface)
            ifaces.append(PodInterface(ns, name, node.name, iface, 3 + j, stable_mac(f"pod/{ns}/{name}"), ip, cid))
        networks[node.name] = NodeNetwork(
            name=node.name, node_ip=node.internal_ip or "", pod_cidr=str(net),
            gateway_ip=str(net.network_address + 1), gateway_mac=stable_mac(f"gateway/{node.name}"),
            interfaces=tuple(ifaces))
    pods.sort(key=lambda p: p.key)

    present = {ns: [a.name for a in apps] for ns, apps in ns_apps.items()}
    policies = PolicyGen(rng, namespaces, present, team_of).generate(n_policies)
    return Synthetic(namespaces, nodes, pods, policies, networks, present)


# --------------------------------------------------------------------------------------- policies


def ml(**labels: str) -> LabelSelector:
    return LabelSelector(match_labels=labels_of(labels))


def mx(*reqs: tuple[str, str, tuple[str, ...]], **labels: str) -> LabelSelector:
    return LabelSelector(match_labels=labels_of(labels),
                         match_expressions=tuple(LabelSelectorRequirement(k, op, v) for k, op, v in reqs))


ALL = LabelSelector()


def port(proto: str, p: int | str | None = None, end: int | None = None) -> NetworkPolicyPort:
    return NetworkPolicyPort(protocol=proto, port=p, end_port=end)


def rule(*peers: NetworkPolicyPeer, ports: tuple[NetworkPolicyPort, ...] = ()) -> NetworkPolicyRule:
    return NetworkPolicyRule(peers=tuple(peers), ports=ports)


def pods_(sel: LabelSelector) -> NetworkPolicyPeer:
    return NetworkPolicyPeer(pod_selector=sel)


def nss_(sel: LabelSelector, pod: LabelSelector | None = None) -> NetworkPolicyPeer:
    return NetworkPolicyPeer(pod_selector=pod, namespace_selector=sel)


def block(cidr: str, *excepts: str) -> NetworkPolicyPeer:
    return NetworkPolicyPeer(ip_block=IPBlock(cidr, tuple(excepts)))


DNS_PEER = nss_(ml(name="kube-system"), ml(**{"k8s-app": "kube-dns"}))
PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


class PolicyGen:
    """Policies drawn from templates; the small parameter space makes selectors repeat."""

    def __init__(self, rng: random.Random, namespaces: list[Namespace], apps: dict[str, list[str]],
                 team_of: dict[str, str]):
        self.rng = rng
        self.namespaces = namespaces
        self.apps = apps
        self.team_of = team_of
        self.team_ns = [n.name for n in namespaces if team_of[n.name] != "platform"]
        self.out: list[NetworkPolicy] = []
        self.names: Counter[tuple[str, str]] = Counter()

    def add(self, ns: str, base: str, sel: LabelSelector, ingress: tuple[NetworkPolicyRule, ...] = (),
            egress: tuple[NetworkPolicyRule, ...] = (), types: tuple[str, ...] | None = None) -> None:
        if types is None:
            types = ("Ingress",) + (("Egress",) if egress else ())
        self.names[(ns, base)] += 1
        n = self.names[(ns, base)]
        name = base if n == 1 else f"{base}-{n}"
        uid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.out.append(NetworkPolicy(ns, name, sel, ingress, egress, types, uid))

    # ---------------------------------------------------------------- per-namespace baseline
    def baseline(self, ns: str) -> list[Callable[[], None]]:
        team = self.team_of[ns]
        if team == "platform":
            if ns == "kube-system":
                return [lambda: self.add(ns, "allow-dns", ml(**{"k8s-app": "kube-dns"}), ingress=(
                    rule(nss_(ALL), ports=(port("UDP", 53), port("TCP", 53))),
                    rule(nss_(ml(purpose="monitoring"), ml(app="prometheus")), ports=(port("TCP", "metrics"),))))]
            if ns == "monitoring":
                return [lambda: self.add(ns, "prometheus-scrape", ml(app="prometheus"), egress=(
                    # egress to a NAMED port across all namespaces: resolved per member (9090, 9113...)
                    rule(nss_(ALL), ports=(port("TCP", "metrics"),)),
                    rule(DNS_PEER, ports=(port("UDP", 53),))), types=("Egress",))]
            return [lambda: self.add(ns, "ingress-to-frontends", ml(app="ingress-nginx"), ingress=(
                rule(block("0.0.0.0/0", *PRIVATE[1:]), ports=(port("TCP", 80), port("TCP", 443))),), egress=(
                rule(nss_(mx(("env", "In", ("prod", "staging"))), ml(tier="frontend")),
                     ports=(port("TCP", "http"), port("TCP", "https"))),))]
        out: list[Callable[[], None]] = [
            lambda: self.add(ns, "default-deny-ingress", ALL),
            lambda: self.add(ns, "allow-dns", ALL, egress=(
                rule(DNS_PEER, ports=(port("UDP", "dns"), port("TCP", "dns-tcp")))
                if self.rng.random() < 0.5 else rule(DNS_PEER, ports=(port("UDP", 53), port("TCP", 53))),),
                types=("Egress",)),
            lambda: self.add(ns, "allow-prometheus", mx(("app", "Exists", ())), ingress=(
                rule(nss_(ml(purpose="monitoring"), ml(app="prometheus")), ports=(port("TCP", "metrics"),)),)),
        ]
        if team in PCI_TEAMS:
            out.append(lambda: self.add(ns, "deny-all", ALL, types=("Ingress", "Egress")))
        return out

    # ---------------------------------------------------------------- templates
    def t_app_to_app(self, ns: str) -> None:
        apps = self.apps[ns]
        target = self.rng.choice([a for a in apps if a not in FRONTENDS] or apps)
        callers = sorted(self.rng.sample(apps, min(len(apps), self.rng.randint(1, 3))))
        src = ml(app=callers[0]) if len(callers) == 1 else mx(("app", "In", tuple(callers)))
        name_port = {"postgres": "postgres", "redis": "redis", "kafka": "kafka", "statsd": "statsd",
                     "diameter": "diameter", "worker": "metrics"}.get(target, "http")
        proto = {"statsd": "UDP", "diameter": "SCTP"}.get(target, "TCP")
        ports = (port(proto, name_port),) + ((port("TCP", "grpc"),) if target in ("api", "auth") else ())
        self.add(ns, f"allow-{target}", ml(app=target), ingress=(rule(pods_(src), ports=ports),))

    def t_tier(self, ns: str) -> None:
        self.add(ns, "allow-frontend-to-backend", ml(tier="backend"), ingress=(
            rule(pods_(ml(tier="frontend")), ports=(port("TCP", "http"), port("TCP", "grpc"))),))

    def t_ingress_controller(self, ns: str) -> None:
        self.add(ns, "allow-ingress-controller", ml(tier="frontend"), ingress=(
            rule(nss_(ml(purpose="ingress")), ports=(port("TCP", "http"), port("TCP", "https"))),))

    def t_same_team(self, ns: str) -> None:
        target = self.rng.choice(["api", "auth"] if "auth" in self.apps[ns] else ["api"])
        self.add(ns, f"allow-team-to-{target}", ml(app=target), ingress=(
            rule(nss_(ml(team=self.team_of[ns]), mx(("app", "In", FRONTENDS))),
                 ports=(port("TCP", "http"), port("TCP", "grpc"))),))

    def t_cross_env(self, ns: str) -> None:
        target = self.rng.choice(self.apps[ns])
        excluded = tuple(sorted(self.rng.sample(TEAMS, 2)))
        self.add(ns, f"allow-partners-{target}", ml(app=target), ingress=(
            rule(nss_(mx(("env", "In", ("prod", "staging")), ("team", "NotIn", excluded)),
                      mx(("tier", "In", ("frontend", "backend")), ("version", "NotIn", ("v0",)))),
                 ports=(port("TCP", 8080), port("TCP", 8081))),))

    def t_egress_data(self, ns: str) -> None:
        data = [a for a in self.apps[ns] if a in DATA_PORT]
        if not data:
            return self.t_egress_external(ns)
        target = self.rng.choice(data)
        src = self.rng.choice(["api", "worker"])
        ports = (port("TCP", 9092, 9094),) if target == "kafka" and self.rng.random() < 0.5 \
            else (port("TCP", DATA_PORT[target]),)
        self.add(ns, f"{src}-to-{target}", ml(app=src), egress=(rule(pods_(ml(app=target)), ports=ports),
                                                                 rule(DNS_PEER, ports=(port("UDP", 53),))),
                 types=("Egress",))

    def t_egress_external(self, ns: str) -> None:
        src = self.rng.choice(self.apps[ns])
        ports = (port("TCP", 443),) + ((port("TCP", 80),) if self.rng.random() < 0.3 else ())
        self.add(ns, f"{src}-to-internet", ml(app=src), egress=(rule(block("0.0.0.0/0", *PRIVATE), ports=ports),),
                 types=("Egress",))

    def t_ipblock_ingress(self, ns: str) -> None:
        if self.rng.random() < 0.5:
            peer, ports = block("10.79.0.0/16", "10.79.0.0/24", "10.79.2.0/23"), (port("TCP", 8000, 8099),)
        else:
            peer, ports = block("192.168.0.0/16", "192.168.10.0/24", "192.168.20.0/24"), (port("TCP", 30000, 32767),)
        self.add(ns, "allow-lb-ranges", ml(tier="frontend"), ingress=(rule(peer, ports=ports),))

    def t_statsd(self, ns: str) -> None:
        if "statsd" not in self.apps[ns]:
            return self.t_same_ns(ns)
        self.add(ns, "allow-statsd", mx(("tier", "In", ("frontend", "backend"))), egress=(
            rule(pods_(ml(app="statsd")), ports=(port("UDP", "statsd"),)),), types=("Egress",))

    def t_sctp(self, ns: str) -> None:
        if "diameter" not in self.apps[ns]:
            return self.t_app_to_app(ns)
        self.add(ns, "allow-diameter-peers", ml(app="diameter"), ingress=(
            rule(nss_(ml(compliance="pci")), pods_(ml(app="diameter")),
                 ports=(port("SCTP", 3868), port("SCTP", "diameter"))),))

    def t_same_ns(self, ns: str) -> None:
        self.add(ns, "allow-same-namespace", ALL, ingress=(rule(pods_(ALL)),))

    def t_egress_any_named(self, ns: str) -> None:
        # egress with a named port and no `to`: an AddressGroup of every Pod (spec §9, Antrea's
        # "all pods" group) so the named port can be resolved everywhere.
        gw = next((a for a in self.apps[ns] if a in FRONTENDS), "api")
        self.add(ns, f"{gw}-egress-http", ml(app=gw), egress=(rule(ports=(port("TCP", "http"),)),),
                 types=("Egress",))

    def t_ingress_any_named(self, ns: str) -> None:
        target = self.rng.choice([a for a in self.apps[ns] if a in FRONTENDS] or ["api"])
        self.add(ns, f"public-{target}", ml(app=target), ingress=(rule(ports=(port("TCP", "http"),)),))

    def t_data_lockdown(self, ns: str) -> None:
        self.add(ns, "data-deny-egress", ml(tier="data"), types=("Egress",))

    def t_both_directions(self, ns: str) -> None:
        target = "auth" if "auth" in self.apps[ns] else "api"
        eg = [rule(DNS_PEER, ports=(port("UDP", 53),))]
        if "redis" in self.apps[ns]:
            eg.append(rule(pods_(ml(app="redis")), ports=(port("TCP", "redis"),)))
        self.add(ns, f"{target}-policy", mx(("version", "Exists", ()), app=target), ingress=(
            rule(pods_(ml(tier="backend")), pods_(ml(tier="frontend")), ports=(port("TCP", "grpc"),)),),
            egress=tuple(eg))

    def t_canary(self, ns: str) -> None:
        self.add(ns, "canary-api", mx(("version", "In", ("v2",)), app="api"), ingress=(
            rule(pods_(mx(("canary", "DoesNotExist", ()), tier="frontend")), ports=(port("TCP", "http"),)),))

    def templates(self) -> list[tuple[Callable[[str], None], float]]:
        return [
            (self.t_app_to_app, 30), (self.t_tier, 4), (self.t_ingress_controller, 4), (self.t_same_team, 8),
            (self.t_cross_env, 6), (self.t_egress_data, 12), (self.t_egress_external, 6),
            (self.t_ipblock_ingress, 4), (self.t_statsd, 3), (self.t_sctp, 3), (self.t_same_ns, 2),
            (self.t_egress_any_named, 1), (self.t_ingress_any_named, 3), (self.t_data_lockdown, 2),
            (self.t_both_directions, 6), (self.t_canary, 3),
        ]

    def generate(self, count: int) -> list[NetworkPolicy]:
        for ns in self.namespaces:
            for make in self.baseline(ns.name):
                if len(self.out) >= count:
                    return self.out
                make()
        fns, ws = zip(*self.templates())
        while len(self.out) < count:
            ns = self.rng.choice(self.team_ns)
            self.rng.choices(fns, ws)[0](ns)
        return self.out


# --------------------------------------------------------------------------------------- busiest node


class BusyEstimator:
    """Estimates a node's policy flow count from its NodePolicyView without compiling it.

    Compiling one node is slow (see README), so every node is ranked by this estimate and only the
    top one is compiled (``--exact-busiest`` compiles them all instead). It mirrors what the agent
    builds: one action flow per (rule, named-port group); in EgressRule (50) one match per local
    source IP and per destination IP/CIDR; in IngressRule (90) one match per source IP/CIDR and per
    local ofport; a few service matches; one default drop per local IP (60) / ofport (100).
    """

    def __init__(self, state: PolicyState):
        self.ag_ips = {n: frozenset(m.ip for m in g.pods if m.ip) for n, g in state.address_groups.items()}
        self.blocks: dict[cp.IPBlock, tuple[str, ...]] = {}
        self.egress_groups: dict[tuple[str, int], int] = {}
        self.state = state

    def _block(self, b: cp.IPBlock) -> tuple[str, ...]:
        if b not in self.blocks:
            self.blocks[b] = tuple(ipblock_cidrs(b))
        return self.blocks[b]

    @staticmethod
    def _split(services: tuple[cp.Service, ...] | None, members: list[cp.GroupMemberPod]) -> int:
        if services is None or not any(s.named for s in services):
            return 1
        return len({tuple(m.resolve(str(s.port), s.protocol) if s.named else s.port for s in services)
                    for m in members})

    def estimate(self, node: str, net: NodeNetwork) -> int:
        view = self.state.node_view(node)
        ifaces = {i.pod_key: i for i in net.interfaces}
        conj = 0
        in_groups: set[str] = set()
        eg_groups: set[str] = set()
        in_cidrs: set[str] = set()
        eg_cidrs: set[str] = set()
        in_ports: set[int] = set()
        eg_ips: set[str] = set()
        svcs: set[tuple[object, ...]] = set()
        for pol in view.policies:
            targets: dict[str, cp.GroupMemberPod] = {}
            for g in pol.applied_to_groups:
                atg = view.applied_to_groups.get(g)
                for m in atg.pods if atg else ():
                    if m.node == node:
                        targets.setdefault(m.key, m)
            local = [ifaces[k] for k in targets if k in ifaces]
            for idx, rule in enumerate(pol.rules):
                peer = rule.peer
                cidrs = {c for b in peer.ip_blocks for c in self._block(b)}
                for s in rule.services or ():
                    if s.named:  # resolved per member: counted once per name (an underestimate)
                        svcs.add((rule.direction, s.protocol, s.port))
                    else:
                        svcs.update((rule.direction, m) for m in service_matches(s))
                if rule.direction == "In":
                    conj += self._split(rule.services, list(targets.values()))
                    in_groups.update(peer.address_groups)
                    in_cidrs |= cidrs
                    in_ports.update(i.ofport for i in local)
                else:
                    key = (pol.key, idx)
                    if key not in self.egress_groups:
                        members = [m for g in peer.address_groups
                                   for m in self.state.address_groups[g].pods if m.ip]
                        n = self._split(rule.services, members)
                        named = rule.services is not None and any(s.named for s in rule.services)
                        self.egress_groups[key] = n + (1 if named else 0)
                    conj += self.egress_groups[key]
                    eg_groups.update(peer.address_groups)
                    eg_cidrs |= cidrs
                    eg_ips.update(i.ip for i in local)
        in_from = in_cidrs.union(*(self.ag_ips.get(g, ()) for g in in_groups))
        eg_to = eg_cidrs.union(*(self.ag_ips.get(g, ()) for g in eg_groups))
        # matches: 90 from + to; 50 from + to; services; drops: 100 per ofport, 60 per IP
        return conj + len(in_from) + 2 * len(in_ports) + len(eg_to) + 2 * len(eg_ips) + len(svcs)


# --------------------------------------------------------------------------------------- phases


def timed(fn: Callable[[], T_]) -> tuple[float, T_]:
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def policy_flow_count(syn: Synthetic, state: PolicyState, node: str, flows: NodeFlows | None = None) -> int:
    """Flows a node has because of policies: its total minus the same node compiled with no policy."""
    net, peers, cfg = syn.networks[node], syn.peers_of(node), PipelineConfig()
    if flows is None:
        flows = compile_node(net, peers, state.node_view(node), cfg)
    base = compile_node(net, peers, NodePolicyView(node, (), {}, {}), cfg)
    return len(flows.flows) - len(base.flows)


def per_table(flows: NodeFlows) -> str:
    c = Counter(f.table for f in flows.flows)
    return ", ".join(f"{t} {T.ARTICLE.name(t)}={c[t]}" for t in sorted(c))


def fmt_s(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


@dataclass
class InstallResult:
    times: list[float]  # one per fresh sandbox: the replace-flows bundle only
    setup: float  # first sandbox: daemons start + ports transaction + TLV map
    dumped: list[str]  # dump-flows (OpenFlow 1.0, --no-names --no-stats) after the last install


def install(net: NodeNetwork, lines: list[str], runs: int) -> InstallResult:
    """`runs` times, in a FRESH sandbox each (so every run installs into the same empty bridge):
    start OVS, create the node's ports in one OVSDB transaction, add the TLV map, then time the
    install of every flow in ONE bundle. The flows of the last run are dumped back."""
    from pyantrea.agent.bridge import TLV_MAP, node_commands
    from pyantrea.ovs.sandbox import Sandbox

    times: list[float] = []
    setup = 0.0
    dumped: list[str] = []
    for i in range(runs):
        tmp = Path(tempfile.mkdtemp(prefix="pa-"))
        sb = Sandbox(tmp, datapath="dummy")
        try:
            t0 = time.perf_counter()
            sb.start()
            sb.db.transact(node_commands("br-int", net, "netdev"))
            br = sb.bridge("br-int")
            br.add_tlv_map(TLV_MAP)
            if i == 0:
                setup = time.perf_counter() - t0
            dt, _ = timed(lambda: br.replace_flows(lines))
            times.append(dt)
            if i == runs - 1:
                dumped = br.dump_flows(names=False)
        finally:
            sb.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    return InstallResult(times, setup, dumped)


def profile(label: str, fn: Callable[[], object], top: int = 15) -> None:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    st = pstats.Stats(prof, stream=sys.stdout)
    print(f"--- cProfile: {label}: top {top} by own time")
    st.sort_stats("tottime").print_stats(top)
    print(f"--- cProfile: {label}: top {top} pyantrea functions by cumulative time")
    st.sort_stats("cumulative").print_stats("pyantrea", top)


def trace_memory(syn: Synthetic, node: str, rss_before_kib: int) -> None:
    """tracemalloc peak of a fresh controller compute + compile of `node`, and the process's ru_maxrss
    before this pass (the benchmark's own peak) and after it (tracemalloc's bookkeeping included)."""
    gc.collect()
    net, peers = syn.networks[node], syn.peers_of(node)
    t0 = time.perf_counter()
    tracemalloc.start()
    state = NetworkPolicyController(syn.pods, syn.namespaces, syn.policies).compute()
    flows = compile_node(net, peers, state.node_view(node), PipelineConfig())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    traced_s = time.perf_counter() - t0
    del state, flows
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak memory: tracemalloc peak {mib(peak)} (controller compute + compile of {node}; the traced "
          f"pass took {fmt_s(traced_s)}); process ru_maxrss {mib(rss_before_kib * 1024)} before that pass, "
          f"{mib(rss_after * 1024)} after it (tracemalloc's own bookkeeping included)", flush=True)


def incremental(state: PolicyState, node: str, net: NodeNetwork) -> None:
    """What one controlplane event costs the agent of `node`: apply it to the rule cache, reconcile the
    policies it touches, and compute the flow mods (the per-rule index); the OVS install is not timed.
    Prints `incremental: <event>: N ms, M flow mods` for the three events the issue names."""
    from pyantrea.agent.controllerwatch import RuleCache
    from pyantrea.agent.openflow.policy import PolicyFlowIndex

    view = state.node_view(node)
    listing = {"networkPolicies": [cp.to_dict(p) for p in view.policies],
               "appliedToGroups": [cp.to_dict(g) for g in view.applied_to_groups.values()],
               "addressGroups": [cp.to_dict(g) for g in view.address_groups.values()]}
    ifaces = {i.pod_key: i for i in net.interfaces}
    cache = RuleCache(node)
    cache.reset(listing, ifaces)
    index = PolicyFlowIndex()
    index.update([], cache.all_rules())
    # the AddressGroup used by the most policies on the node, a policy with rules, and another one
    uses = Counter(g for p in view.policies for r in p.rules for g in r.peer.address_groups)
    ag = max(uses, key=lambda g: (uses[g], g)) if uses else None
    pols = [p for p in view.policies if p.rules]
    events: list[tuple[str, dict[str, Any]]] = []
    if ag is not None:
        member = {"namespace": "bench-incremental", "name": "new-pod", "ip": "10.255.255.7", "node": "elsewhere"}
        events.append((f"add a Pod to an AddressGroup (used by {uses[ag]} of the node's policies)",
                       {"type": "MODIFIED", "kind": "AddressGroup",
                        "patch": {"name": ag, "addedPods": [member], "removedPods": []}}))
    if pols:
        p = pols[0]
        r0 = p.rules[0]
        changed = dataclasses.replace(p, rules=(dataclasses.replace(r0, services=(cp.Service("TCP", 65000),)),)
                                      + p.rules[1:])
        events.append((f"change one policy ({p.key}: its first rule's ports)",
                       {"type": "MODIFIED", "kind": "NetworkPolicy", "object": cp.to_dict(changed)}))
    if len(pols) > 1:
        events.append((f"delete one policy ({pols[1].key})",
                       {"type": "DELETED", "kind": "NetworkPolicy", "object": cp.to_dict(pols[1])}))
    for what, ev in events:
        gc.collect()
        t0 = time.perf_counter()
        touched = cache.apply([ev])
        removed, added = cache.reconcile(touched, ifaces)
        ups, dels = index.update(removed, added)
        ms = (time.perf_counter() - t0) * 1000
        print(f"incremental: {what}: {ms:.1f} ms, {len(ups) + len(dels)} flow mods "
              f"({len(ups)} add/modify, {len(dels)} delete; {len(touched)} policies reconciled)", flush=True)
    full = sorted(f.dump_text() for f in index.flows())
    ref = sorted(f.dump_text() for f in policy_flows(cache.all_rules()))
    fresh = _rule_set(compute_rules(cache.view(), ifaces, ConjIDAllocator()))
    print(f"incremental check: the index holds the compiler's flows for the cache's rules: "
          f"{'yes' if full == ref else 'NO'}; the cache's rules are those of a fresh compute (conj_ids aside): "
          f"{'yes' if _rule_set(cache.all_rules()) == fresh else 'NO'}")


def _rule_set(rules: list[Any]) -> list[tuple[object, ...]]:
    return sorted((r.policy, r.rule_index, r.direction, tuple(sorted(set(r.from_))), tuple(sorted(set(r.to))),
                   repr(r.services)) for r in rules)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Time pyantrea's controller computation, the compilation of the busiest node's flows "
                    "and their install into an OVS sandbox (one bundle), on a deterministic synthetic "
                    "cluster built in memory (20 labelled namespaces, Deployments with named ports, "
                    "NetworkPolicies drawn from realistic templates).",
        epilog="Takes about 2-3 minutes with the defaults on a 2-core machine (see bench/README.md).")
    ap.add_argument("--nodes", type=int, default=100, help="number of Nodes (default: 100)")
    ap.add_argument("--pods-per-node", type=int, default=100,
                    help="Pods scheduled on each Node, 1..253 (default: 100)")
    ap.add_argument("--policies", type=int, default=1000, help="number of NetworkPolicies (default: 1000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed of the synthetic cluster (default: 1)")
    ap.add_argument("--runs", type=int, default=3, help="compile runs; the median is reported (default: 3)")
    ap.add_argument("--install-runs", type=int, default=3,
                    help="installs, each into a fresh sandbox; the median is reported (default: 3)")
    ap.add_argument("--no-install", action="store_true", help="skip the OVS sandbox install (no OVS needed)")
    ap.add_argument("--exact-busiest", action="store_true",
                    help="pick the busiest node by compiling EVERY node (slow: nodes x compile time) "
                         "instead of ranking nodes by an estimate and compiling only the top one")
    ap.add_argument("--no-tracemalloc", action="store_true",
                    help="skip the tracemalloc pass (a fresh compute + compile, several times slower when traced)")
    ap.add_argument("--profile", action="store_true",
                    help="also print cProfile hotspots of the controller compute and of the node compile")
    a = ap.parse_args(argv)
    if not 1 <= a.pods_per_node <= 253:
        ap.error("--pods-per-node must be within 1..253 (one /24 podCIDR per node)")
    if not 1 <= a.nodes <= 16384:
        ap.error("--nodes must be within 1..16384")
    if a.policies < 0 or a.runs < 1 or a.install_runs < 1:
        ap.error("--runs and --install-runs must be >= 1, --policies >= 0")

    t_start = time.perf_counter()
    dt, syn = timed(lambda: build_cluster(a.nodes, a.pods_per_node, a.policies, a.seed))
    print(f"pyantrea bench/compile.py: {a.nodes} nodes, {len(syn.pods)} Pods ({a.pods_per_node}/node), "
          f"{len(syn.namespaces)} namespaces, {len(syn.policies)} NetworkPolicies, seed {a.seed}; "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
          flush=True)
    print(f"synthetic cluster built in: {fmt_s(dt)}", flush=True)

    # 1. controller: up to 3 runs within ~5 s
    ctl_times: list[float] = []
    while not ctl_times or (len(ctl_times) < 3 and sum(ctl_times) < 5):
        gc.collect()
        dt, state = timed(lambda: NetworkPolicyController(syn.pods, syn.namespaces, syn.policies).compute())
        ctl_times.append(dt)
    n_rules = sum(len(p.rules) for p in state.policies.values())
    members = sum(len(g.pods) for g in state.address_groups.values())
    print(f"controller compute: {fmt_s(statistics.median(ctl_times))} (median of {len(ctl_times)}) -> "
          f"{len(state.applied_to_groups)} AppliedToGroups, {len(state.address_groups)} AddressGroups "
          f"({members} members), {len(state.policies)} policies ({n_rules} rules)", flush=True)

    # 2. busiest node
    cfg = PipelineConfig()
    t0 = time.perf_counter()
    if a.exact_busiest:
        ranking = sorted(((policy_flow_count(syn, state, n.name), n.name) for n in syn.nodes),
                         key=lambda t: (-t[0], t[1]))
        how = f"exact: all {len(ranking)} nodes compiled in {fmt_s(time.perf_counter() - t0)}"
    else:
        est = BusyEstimator(state)
        ranking = sorted(((est.estimate(n.name, syn.networks[n.name]), n.name) for n in syn.nodes),
                         key=lambda t: (-t[0], t[1]))
        how = f"ranked by estimate over all {len(ranking)} nodes in {fmt_s(time.perf_counter() - t0)}"
    busiest = ranking[0][1]
    counts = [c for c, _ in ranking]
    spread = f"min/median/max {min(counts)}/{int(statistics.median(counts))}/{max(counts)}"

    # 3. compile it
    net = syn.networks[busiest]
    peers = syn.peers_of(busiest)
    comp_times: list[float] = []
    flows: NodeFlows | None = None
    for _ in range(a.runs):
        gc.collect()
        dt, flows = timed(lambda: compile_node(net, peers, state.node_view(busiest), cfg))
        comp_times.append(dt)
        print(f"  compile run {len(comp_times)}/{a.runs}: {fmt_s(dt)}", flush=True)
    assert flows is not None
    compile_s = statistics.median(comp_times)
    pol_flows = policy_flow_count(syn, state, busiest, flows)
    label = "policy flows" if a.exact_busiest else "policy flows estimated"
    print(f"busiest node: {busiest}, {pol_flows} policy flows ({how}; {label} per node {spread}"
          + ("" if a.exact_busiest else f"; its estimate {ranking[0][0]}") + ")")
    view = state.node_view(busiest)
    print(f"compile {busiest}: {fmt_s(compile_s)} (median of {len(comp_times)}: "
          f"{', '.join(fmt_s(t) for t in comp_times)}; node_view included) for {len(view.policies)} policies, "
          f"{len(flows.rules)} OpenFlow rules, {len(peers)} peers, {len(net.interfaces)} PodInterfaces")
    print(f"flows on {busiest}: {len(flows.flows)}")
    print(f"flows per table: {per_table(flows)}", flush=True)
    del view

    # 3b. the agent's per-event path on that node: rule cache + per-rule flow index
    incremental(state, busiest, net)

    # 4. memory: a separate, untimed pass (tracemalloc slows every allocation down several times)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if a.no_tracemalloc:
        print(f"peak memory: tracemalloc skipped (--no-tracemalloc); process ru_maxrss {mib(rss_before * 1024)}",
              flush=True)
    else:
        trace_memory(syn, busiest, rss_before)

    if a.profile:
        profile("NetworkPolicyController.compute",
                lambda: NetworkPolicyController(syn.pods, syn.namespaces, syn.policies).compute())
        profile(f"compile_node({busiest})", lambda: compile_node(net, peers, state.node_view(busiest), cfg))

    # 5. install
    if a.no_install:
        print("install: skipped (--no-install)")
        print(f"total bench time: {fmt_s(time.perf_counter() - t_start)} (load average now {os.getloadavg()[0]:.2f})")
        print("compiling one node took under half its install time: n/a (--no-install)")
        return 0
    render_s, lines = timed(lambda: [f.install_text() for f in flows.flows])
    try:
        res = install(net, lines, a.install_runs)
    except Exception as e:  # OVS missing, sandbox not available...
        print(f"install: FAILED: {type(e).__name__}: {e}")
        print("compiling one node took under half its install time: n/a (install failed)")
        return 1
    install_s = statistics.median(res.times)
    print(f"install {busiest}: {fmt_s(install_s)} for {len(lines)} flows in one bundle (median of "
          f"{len(res.times)}: {', '.join(fmt_s(t) for t in res.times)}; each into a fresh sandbox; "
          f"not included: sandbox start + {len(net.interfaces) + 2} ports in one transaction + TLV map "
          f"{fmt_s(res.setup)}, rendering the install text {fmt_s(render_s)})")
    same_count = len(res.dumped) == len(lines)
    same_text = Counter(res.dumped) == Counter(f.dump_text(names=False) for f in flows.flows)
    print(f"install check: dumped {len(res.dumped)} flows, expected {len(lines)}: "
          f"{'OK' if same_count else 'MISMATCH'}; dump text identical to Flow.dump_text(): "
          f"{'yes' if same_text else 'NO'}")
    ratio = compile_s / install_s
    print(f"compile/install ratio: {ratio:.2f} (compile {fmt_s(compile_s)} / install {fmt_s(install_s)})")
    print(f"total bench time: {fmt_s(time.perf_counter() - t_start)} (load average now {os.getloadavg()[0]:.2f})")
    verdict = "YES" if compile_s < install_s / 2 else "NO"
    print(f"compiling one node took under half its install time: {verdict} "
          f"(compile {fmt_s(compile_s)} vs half the install {fmt_s(install_s / 2)})")
    return 0 if same_count else 1


if __name__ == "__main__":
    sys.exit(main())
