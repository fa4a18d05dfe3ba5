#!/usr/bin/env python3
"""Benchmark: the NetworkPolicy controller at Antrea's own scale, and the distribution of one change.

Shapes (Antrea's pkg/controller/networkpolicy/networkpolicy_controller_perf_test.go):

  SmallNamespaces  TestInitXLargeScaleWithSmallNamespaces: 25,000 Namespaces, each with 4 Pods and 3
                   NetworkPolicies: default-deny-all (every Pod, Ingress + Egress, no rule), np-1 and np-2
                   (each selects half of the Pods, app-1=scale-1 / app-2=scale-2, and allows ingress from
                   the same Pods). 100,000 Pods, 75,000 policies.
  OneNamespace     TestInitXLargeScaleWithOneNamespace: 1 Namespace, 10,000 Pods (app-1=scale-1) and
                   10,000 policies that each select every Pod and allow ingress from every Pod.
  LargeNamespaces  TestInitXLargeScaleWithLargeNamespaces: 100 Namespaces, each with a default-deny-all and
                   100 policies np-i (app-i=scale-i, ingress from the same), 10 Pods per label: 100,000 Pods,
                   10,100 policies.

As in Antrea's test every policy has policyTypes [Ingress, Egress] and every Pod a node (here one of
1,000, drawn with a fixed seed) and an IP (from its node's /22). `--scale 0.1` takes a tenth of the
repetitions (Namespaces; Pods and policies for OneNamespace).

Each shape runs in a fresh subprocess, so that its peak RSS (VmHWM, the kernel's high-water mark of
the process: inputs + computation) is its own. Printed, one line per shape:

  <shape>: compute N s, peak M MiB, events: ag A atg B np C

compute = NetworkPolicyController(pods, namespaces, policies).compute() followed by a full gc.collect()
(wall time of both: whatever the computation leaves the cycle collector to do is counted, so a
collection deferred is not a collection saved); events = the numbers of AddressGroups,
AppliedToGroups and internal NetworkPolicies it produced.

Then the distribution (also its own subprocess), on SmallNamespaces at the same scale: an ObjectStore
holding the cluster, a ControlPlane over it and 1,000 simulated agents, one per node, each a thread in
ControlPlane.watch with its own resourceVersion. Two changes go through the store as the lab sends them:
a NetworkPolicy selecting the Pods of one namespace (apply), and a Pod joining an AddressGroup (the
Pod is applied first; its status with the IP, the change timed, is what adds it to np-1's peers):

  distribution: 1 policy change -> K of 1000 agents, last event after N ms
  distribution: 1 Pod added to an AddressGroup -> K of 1000 agents, last event after N ms

K counts the agents that received at least one event; it must equal the number of nodes the change's
objects span (checked). "last event" is from the call into the store to the last agent's wake-up.

Run:  python bench/controller.py                 (all shapes at full scale, then the distribution)
      python bench/controller.py --scale 0.1     (a tenth: a quick CI run)
      python bench/controller.py --shape SmallNamespaces --profile
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import random
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from pyantrea.apis.k8s import (
    LabelSelector,
    Namespace,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyRule,
    Node,
    Pod,
    labels_of,
)

NODES = 1000
SHAPES = ("SmallNamespaces", "OneNamespace", "LargeNamespaces")
BOTH = ("Ingress", "Egress")
VERBOSE = False


def note(msg: str) -> None:
    """Details (sizes, checks) on stderr with -v; the result lines alone go to stdout."""
    if VERBOSE:
        print(f"  ({msg})", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------- shapes


class Builder:
    """Typed objects with deterministic names, uids, nodes and IPs."""

    def __init__(self, seed: int = 1, nodes: int = NODES):
        self.rng = random.Random(seed)
        self.node_names = [f"node-{i:04d}" for i in range(nodes)]
        self.used = [0] * nodes
        self.base = int(ipaddress.IPv4Address("10.128.0.0"))
        self.namespaces: list[Namespace] = []
        self.pods: list[Pod] = []
        self.policies: list[NetworkPolicy] = []

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def nodes(self) -> list[Node]:
        return [Node(n, labels_of({"kubernetes.io/os": "linux"}),
                     pod_cidr=f"{ipaddress.IPv4Address(self.base + i * 1024)}/22",
                     internal_ip=str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.79.0.10")) + i)))
                for i, n in enumerate(self.node_names)]

    def namespace(self, name: str) -> None:
        self.namespaces.append(Namespace(name, labels_of({"app": name, "kubernetes.io/metadata.name": name})))

    def pod(self, ns: str, name: str, labels: dict[str, str]) -> None:
        n = self.rng.randrange(len(self.node_names))
        self.used[n] += 1
        ip = str(ipaddress.IPv4Address(self.base + n * 1024 + 1 + self.used[n]))
        self.pods.append(Pod(ns, name, labels_of(labels), node_name=self.node_names[n], pod_ip=ip, uid=self.uid()))

    def policy(self, ns: str, name: str, selects: dict[str, str] | None, ingress_from: dict[str, str] | None) -> None:
        """Antrea's newNetworkPolicy(ns, name, podSelector, ingressPodSelector, nil, nil, nil)."""
        ingress: tuple[NetworkPolicyRule, ...] = ()
        if ingress_from is not None:
            ingress = (NetworkPolicyRule(peers=(NetworkPolicyPeer(pod_selector=LabelSelector(labels_of(ingress_from))),)),)
        self.policies.append(NetworkPolicy(ns, name, LabelSelector(labels_of(selects)), ingress=ingress,
                                           policy_types=BOTH, uid=self.uid()))


def small_namespaces(scale: float, nodes: int = NODES) -> Builder:
    b = Builder(nodes=nodes)
    for i in range(max(1, round(25000 * scale))):
        ns = f"ns-{i:05d}"
        b.namespace(ns)
        b.policy(ns, "default-deny-all", None, None)
        b.policy(ns, "np-1", {"app-1": "scale-1"}, {"app-1": "scale-1"})
        b.policy(ns, "np-2", {"app-2": "scale-2"}, {"app-2": "scale-2"})
        for j, app in ((1, 1), (2, 1), (3, 2), (4, 2)):
            b.pod(ns, f"pod{j}", {f"app-{app}": f"scale-{app}"})
    return b


def one_namespace(scale: float, nodes: int = NODES) -> Builder:
    b = Builder(nodes=nodes)
    ns = "ns-00000"
    b.namespace(ns)
    labels = {"app-1": "scale-1"}
    for i in range(max(1, round(10000 * scale))):
        b.policy(ns, f"np-{i:05d}", labels, labels)
        b.pod(ns, f"pod-{i:05d}", labels)
    return b


def large_namespaces(scale: float, nodes: int = NODES) -> Builder:
    b = Builder(nodes=nodes)
    for i in range(max(1, round(100 * scale))):
        ns = f"ns-{i:03d}"
        b.namespace(ns)
        b.policy(ns, "default-deny-all", None, None)
        for k in range(100):
            labels = {f"app-{k}": f"scale-{k}"}
            b.policy(ns, f"np-{k}", labels, labels)
            for j in range(10):
                b.pod(ns, f"pod-{k}-{j}", labels)
    return b


BUILD: dict[str, Callable[[float, int], Builder]] = {
    "SmallNamespaces": small_namespaces, "OneNamespace": one_namespace, "LargeNamespaces": large_namespaces}


# --------------------------------------------------------------------------------------- measuring


def peak_mib() -> float:
    """The process's peak RSS (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_shape(shape: str, scale: float, profile: bool) -> None:
    from pyantrea.controller.networkpolicy import NetworkPolicyController

    b = BUILD[shape](scale, NODES)
    pods, namespaces, policies = b.pods, b.namespaces, b.policies
    del b
    gc.collect()
    inputs = peak_mib()
    if profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    state = NetworkPolicyController(pods, namespaces, policies).compute()
    t1 = time.perf_counter()
    gc.collect()  # what the collector leaves to do after the computation is counted too
    dt = time.perf_counter() - t0
    if profile:
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    print(f"{shape}: compute {dt:.2f} s, peak {peak_mib():.0f} MiB, events: ag {len(state.address_groups)} "
          f"atg {len(state.applied_to_groups)} np {len(state.policies)}", flush=True)
    note(f"{len(namespaces)} namespaces, {len(pods)} pods, {len(policies)} policies; inputs alone {inputs:.0f} MiB; "
         f"compute() {t1 - t0:.2f} s + gc.collect() {dt - (t1 - t0):.2f} s")


# --------------------------------------------------------------------------------------- distribution


def _raw_namespace(ns: Namespace) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns.name, "labels": dict(ns.labels)}}


def _raw_node(n: Node) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n.name},
            "spec": {"podCIDR": n.pod_cidr}, "status": {"addresses": [{"type": "InternalIP", "address": n.internal_ip}]}}


def _raw_pod(p: Pod) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p.name, "namespace": p.namespace, "labels": dict(p.labels), "uid": p.uid},
            "spec": {"nodeName": p.node_name, "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running", "podIP": p.pod_ip}}


class Agent(threading.Thread):
    """One node's controlplane watch: its own resourceVersion, the time of each wake-up with events."""

    def __init__(self, plane: Any, node: str, rv: int, stop: threading.Event):
        super().__init__(daemon=True, name=f"agent-{node}")
        self.plane, self.node, self.rv, self.stop = plane, node, rv, stop
        self.received: list[tuple[float, int, int]] = []  # (time, rv, events)

    def run(self) -> None:
        while not self.stop.is_set():
            ans = self.plane.watch(self.node, self.rv, 20.0)  # as the agent's controller watch asks
            if ans["events"]:
                self.received.append((time.perf_counter(), ans["resourceVersion"], len(ans["events"])))
            self.rv = ans["resourceVersion"]


class Timed:
    """A store listener wrapped: when the ControlPlane's on_events ran (the last call)."""

    def __init__(self, listener: Callable[[Any], None]):
        self.listener, self.start, self.end = listener, 0.0, 0.0

    def __call__(self, events: Any) -> None:
        self.start = time.perf_counter()
        self.listener(events)
        self.end = time.perf_counter()


def _measure(agents: list[Agent], plane: Any, change: Callable[[], None], settle: float,
             timed: Timed) -> tuple[int, float, int]:
    """(agents reached, ms to the last one, nodes the change concerns) for one change."""
    rv0 = plane.rv
    marks = [len(a.received) for a in agents]
    t0 = time.perf_counter()
    change()
    t1 = time.perf_counter()
    expected = {a.node for a in agents if plane.node_rv(a.node) > rv0}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(len(a.received) > m for a, m in zip(agents, marks) if a.node in expected):
            break
        time.sleep(0.001)
    time.sleep(settle)  # anyone else who was (wrongly) woken with events shows up here
    reached = [a for a, m in zip(agents, marks) if len(a.received) > m]
    last = max((a.received[-1][0] for a in reached), default=t0)
    got = {a.node for a in reached}
    first = min((a.received[-1][0] for a in reached), default=t0)
    note(f"the store's call {1000 * (t1 - t0):.1f} ms, of which ControlPlane.on_events {1000 * (timed.end - timed.start):.1f} ms "
         f"(from {1000 * (timed.start - t0):.1f} ms); agents woken from {1000 * (first - t0):.1f} ms")
    if got != expected:
        print(f"  MISMATCH: reached {len(got)}, expected {len(expected)}: extra {sorted(got - expected)[:5]}, "
              f"missing {sorted(expected - got)[:5]}", file=sys.stderr)
    return len(reached), (last - t0) * 1000, len(expected)


def run_distribution(scale: float, nodes_n: int) -> None:
    from pyantrea.controller.controlplane import ControlPlane
    from pyantrea.controller.store import ObjectStore

    b = small_namespaces(scale, nodes_n)
    store = ObjectStore()
    # The store is filled directly, as load_state would leave it: admitting 100,000 Pods through
    # apply is the API server's cost, not the controller's, and is not what this measures.
    objs: list[tuple[tuple[str, str, str], dict[str, Any], Any]] = []
    objs += [(("Node", "", n.name), _raw_node(n), n) for n in b.nodes()]
    objs += [(("Namespace", "", n.name), _raw_namespace(n), n) for n in b.namespaces]
    objs += [(("Pod", p.namespace, p.name), _raw_pod(p), p) for p in b.pods]
    objs += [(("NetworkPolicy", p.namespace, p.name), {"kind": "NetworkPolicy"}, p) for p in b.policies]
    with store.cond:
        for k, raw, typed in objs:
            store.rv += 1
            raw.setdefault("metadata", {})["resourceVersion"] = str(store.rv)
            store.objects[k], store.typed[k] = raw, typed
    del objs
    t0 = time.perf_counter()
    plane = ControlPlane(store)
    timed = Timed(store.listeners[-1])
    store.listeners[-1] = timed
    note(f"distribution: {len(b.pods)} pods, {len(b.policies)} policies; ControlPlane start "
         f"{time.perf_counter() - t0:.2f} s")

    stop = threading.Event()
    agents = [Agent(plane, n, plane.rv, stop) for n in b.node_names]
    for a in agents:
        a.start()
    time.sleep(0.5)
    ns = b.namespaces[len(b.namespaces) // 2].name
    np_yaml = f"""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: bench-allow, namespace: {ns}}}
spec:
  podSelector: {{}}
  ingress: [{{from: [{{podSelector: {{matchLabels: {{app-2: scale-2}}}}}}]}}]
"""
    k, ms, want = _measure(agents, plane, lambda: store.apply(np_yaml, "bench-allow.yaml"), 0.3, timed)
    print(f"distribution: 1 policy change -> {k} of {len(agents)} agents, last event after {ms:.1f} ms", flush=True)
    note(f"nodes its objects span: {want}")

    node = b.node_names[0]
    pod_yaml = f"""apiVersion: v1
kind: Pod
metadata: {{name: bench-pod, namespace: {ns}, labels: {{app-1: scale-1}}}}
spec: {{nodeName: {node}, containers: [{{name: c, image: x}}]}}
"""
    store.apply(pod_yaml, "bench-pod.yaml")
    time.sleep(0.3)
    ip = str(ipaddress.IPv4Address(b.base + 1000))  # node-0000's /22, above its Pods
    k, ms, want = _measure(agents, plane, lambda: store.set_status("Pod", ns, "bench-pod",
                                                                   {"phase": "Running", "podIP": ip}), 0.3, timed)
    print(f"distribution: 1 Pod added to an AddressGroup -> {k} of {len(agents)} agents, "
          f"last event after {ms:.1f} ms", flush=True)
    note(f"nodes its objects span: {want}")
    stop.set()  # the agents are daemon threads: they end with the process


# --------------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of Antrea's sizes (default 1)")
    ap.add_argument("--shape", action="append", choices=SHAPES, help="only these shapes (repeatable)")
    ap.add_argument("--no-distribution", action="store_true", help="skip the 1,000-agent distribution")
    ap.add_argument("--distribution-only", action="store_true", help="only the distribution")
    ap.add_argument("--agents", type=int, default=NODES, help="agents (= nodes) of the distribution")
    ap.add_argument("--profile", action="store_true", help="cProfile the computation (to stderr)")
    ap.add_argument("-v", "--verbose", action="store_true", help="sizes and checks on stderr")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    if args.child == "distribution":
        run_distribution(args.scale, args.agents)
        return 0
    if args.child:
        run_shape(args.child, args.scale, args.profile)
        return 0
    me = [sys.executable, os.path.abspath(__file__), "--scale", str(args.scale)] + (["-v"] if args.verbose else [])
    runs = [] if args.distribution_only else [[*me, "--child", s] + (["--profile"] if args.profile else [])
                                              for s in args.shape or SHAPES]
    if not args.no_distribution:
        runs.append([*me, "--child", "distribution", "--agents", str(args.agents)])
    rc = 0
    for cmd in runs:
        rc |= subprocess.call(cmd)
    return rc


if __name__ == "__main__":
    sys.exit(main())
