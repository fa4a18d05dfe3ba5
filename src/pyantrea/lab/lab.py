"""The live lab: a cluster folder brought up for real on this host (design §3, `pyantrea lab ...`).

One controller process (root namespace), and per Node a network namespace with its own OVS
(userspace datapath), the uplink bridge br-phy on a shared underlay, an agent process, and
kube-proxy's iptables rules; Pods are network namespaces plumbed by the CNI plugin executable, each
running a small workload (HTTP on 80; DNS on 53 for the kube-dns Pods).

Every mutating command holds a host-wide lock (the namespaces are host-wide); state is written to
``lab.json`` *before* a thing is created, so `down` can always undo what exists. Every namespace of
a lab starts with its prefix (``PYANTREA_LAB_PREFIX``, default ``pa-``, kept in lab.json): labs of
different prefixes and run dirs run side by side and never touch each other's namespaces.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyantrea.errors import PyantreaError
from pyantrea.lab import kubelet, netns
from pyantrea.lab.http import request_json, wait_healthy
from pyantrea.lab.netns import LabError
from pyantrea.lab.procs import ProcRef, start_detached
from pyantrea.lab.state import LabPaths, LabState, NodeState, PodState

from pyantrea.apis.k8s import REQUESTED_IP

__all__ = ["Lab", "LabError", "default_folder"]


class _LazyModule:
    """A module imported on first use: `lab apply` of a NetworkPolicy needs neither OVS nor
    kube-proxy, and every import shortens the time until the policy is in force."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._mod: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._mod is None:
            import importlib

            self._mod = importlib.import_module(self._name)
        return getattr(self._mod, attr)


if TYPE_CHECKING:
    from pyantrea import kubeproxy
    from pyantrea.lab import nodes
else:
    kubeproxy = _LazyModule("pyantrea.kubeproxy")
    nodes = _LazyModule("pyantrea.lab.nodes")

AGENT_TIMEOUT = 20.0
CONTROLLER_TIMEOUT = 20.0
WORKLOAD_TIMEOUT = 15.0
DNS_LABEL = ("k8s-app", "kube-dns")
REQUIRED_TOOLS = ("ip", "ovs-vsctl", "ovs-vswitchd", "ovsdb-server", "ovs-appctl", "ovsdb-tool", "nft",
                  "iptables-restore", "iptables-save", "sysctl")


def default_folder() -> Path:
    """``examples/seed`` of the current directory, else the one of this source tree."""
    here = Path("examples/seed")
    if here.is_dir():
        return here
    tree = Path(__file__).resolve().parents[3] / "examples" / "seed"
    return tree if tree.is_dir() else here


def pyantrea_argv(*args: str) -> list[str]:
    """``<python> -m pyantrea ARGS`` (with this interpreter: pyenv shims take a second to start)."""
    import pyantrea

    if (Path(pyantrea.__file__).parent / "__main__.py").exists():
        return [sys.executable, "-m", "pyantrea", *args]
    return [sys.executable, "-c", "import sys; from pyantrea.cli import main; sys.exit(main())", *args]


RECONCILED_KINDS = frozenset({"Pod", "Service", "Endpoints", "Node", "NodeInterfaces", "?"})
"""Kinds whose change the lab acts on (kubelet, kube-proxy); "?" = could not tell."""


def manifest_kinds(text: str) -> set[str]:
    """The kinds of the documents (and List items) of a YAML text; {"?"} if it does not parse."""
    import yaml

    kinds: set[str] = set()
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return {"?"}
    for d in docs:
        if not isinstance(d, dict):
            continue
        kind = str(d.get("kind", "?"))
        if kind.endswith("List") and isinstance(d.get("items"), list):
            kinds |= {str(i.get("kind", "?")) for i in d["items"] if isinstance(i, dict)}
        else:
            kinds.add(kind)
    return kinds


def new_container_id() -> str:
    """A sandbox id, as a container runtime makes one: 64 random hex characters."""
    return os.urandom(32).hex()


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(f"    {ln}" for ln in lines[-n:]) or f"    (empty log {path})"


class Lab:
    def __init__(self, paths: LabPaths | None = None, out: Callable[[str], None] | None = None, jobs: int = 4):
        self.paths = paths or LabPaths()
        self.t0 = time.monotonic()
        self._out = out or (lambda s: print(s, flush=True))
        self.jobs = max(1, jobs)
        self.state: LabState = LabState()
        self._lock = threading.RLock()
        self._started_agents: list[NodeState] = []

    # ------------------------------------------------------------------------------ helpers

    def say(self, msg: str) -> None:
        self._out(f"[{time.monotonic() - self.t0:5.1f}s] {msg}")

    def save(self) -> None:
        with self._lock:
            self.state.save(self.paths)

    @property
    def prefix(self) -> str:
        """The prefix of this lab's namespaces: lab.json's (a lab keeps the one it was brought up
        with, whatever the environment says later), else ``PYANTREA_LAB_PREFIX``, else ``pa-``."""
        if self.state.prefix:
            return netns.valid_prefix(self.state.prefix, f"{self.paths.state_file}: prefix")
        return netns.env_prefix()

    @property
    def underlay_netns(self) -> str:
        return nodes.underlay_netns(self.prefix)

    @staticmethod
    def check_host() -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, veths, iptables): run it as root")
        missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
        if missing:
            raise LabError(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")

    def load_state(self) -> LabState | None:
        s = LabState.load(self.paths)
        if s is not None:
            self.state = s
        return s

    def require_state(self) -> LabState:
        s = self.load_state()
        if s is None or not s.folder:
            raise LabError(f"no lab is up ({self.paths.state_file} does not exist): run `pyantrea lab up`")
        return s

    def current_cluster(self) -> Any:
        """The cluster as the controller holds it (its objects, allocations included): asked of the
        owner, never recomputed. The raw Pods ride along (`self.raw_pods`) for their annotations."""
        from pyantrea.controller.store import cluster_of
        from pyantrea.k8s.informer import decode

        try:
            status, body = request_json(self.paths.controller_sock, "GET", "/v1/objects", timeout=30)
        except OSError as e:
            raise LabError(f"controller {self.paths.controller_sock}: {e}") from e
        if status != 200 or not isinstance(body, dict):
            raise LabError(f"controller {self.paths.controller_sock}: HTTP {status}: {body}")
        items = body.get("items") or []
        self.raw_pods = {f"{d['metadata'].get('namespace')}/{d['metadata']['name']}": d
                         for d in items if d.get("kind") == "Pod"}
        return cluster_of([decode(d) for d in items], self.agent_config())

    def agent_config(self) -> Any:
        from pyantrea.agent.daemon import load_config

        conf = self.agent_conf_path()
        return load_config(str(conf) if conf else None)

    def agent_conf_path(self) -> Path | None:
        from pyantrea.k8s.loader import AGENT_CONF

        conf = Path(self.state.folder) / AGENT_CONF
        return conf if conf.is_file() else None

    def wait_agents_synced(self, timeout: float = 10.0) -> bool:
        """Wait until every running agent has installed every controlplane change that concerns its
        node (same epoch). False (with a warning) if one has not within `timeout`."""
        deadline = time.monotonic() + timeout
        pending = {n for n, ns in self.state.nodes.items() if ns.agent is not None and ns.agent.alive()}
        while pending:
            for n in sorted(pending):
                try:
                    c1, want = request_json(self.paths.controller_sock, "GET", f"/v1/controlplane/stats?node={n}")
                    c2, st = request_json(self.paths.agent_sock(n), "GET", "/v1/stats", timeout=2)
                except OSError:
                    continue
                if c1 == 200 and c2 == 200 and st.get("controllerEpoch") == want.get("epoch") \
                        and int(st.get("controllerVersion") or 0) >= int(want.get("nodeResourceVersion") or 0):
                    pending.discard(n)
            if not pending:
                break
            if time.monotonic() > deadline:
                self.say(f"warning: agents {', '.join(sorted(pending))} have not caught up with the controller")
                return False
            time.sleep(0.02)
        return True

    def post_status(self, ps: PodState, status: dict[str, Any]) -> None:
        """The kubelet's status update of a Pod (podIP, phase) through the API server."""
        body = {"kind": "Pod", "namespace": ps.namespace, "name": ps.name, "status": status}
        code, ans = request_json(self.paths.controller_sock, "POST", "/v1/status", json.dumps(body))
        if code != 200:
            self.say(f"pod {ps.key}: warning: status update refused ({code}): {ans}")

    def dns_state_dir(self) -> Path:
        st = self.paths.controller_state
        return st if st.is_dir() else Path(self.state.folder)

    # ------------------------------------------------------------------------------ controller

    def controller_ref(self) -> ProcRef | None:
        r = self.state.controller
        if r is not None and r.alive():
            return r
        return None

    def controller_argv(self) -> list[str]:
        """The controller's command line (the Kubernetes lab runs it otherwise: `KubeLab`)."""
        return pyantrea_argv("controller", "--cluster", self.state.folder, "--rundir", str(self.paths.controller_dir))

    def start_controller(self) -> ProcRef:
        d = self.paths.controller_dir
        d.mkdir(parents=True, exist_ok=True)
        argv = self.controller_argv()
        ref = start_detached(argv, d / "controller.log", pidfile=d / "controller.pid")
        self.state.controller = ref
        self.save()
        if not wait_healthy(self.paths.controller_sock, CONTROLLER_TIMEOUT, alive=ref.alive):
            why = "exited" if not ref.alive() else f"not healthy after {CONTROLLER_TIMEOUT:g} s"
            raise LabError(f"controller {why} ({' '.join(argv)}); log {d / 'controller.log'}:\n"
                           f"{_tail(d / 'controller.log')}")
        return ref

    def ensure_controller(self) -> None:
        r = self.controller_ref()
        if r is not None:
            self.say(f"controller: running (pid {r.pid})")
            return
        r = self.start_controller()
        self.say(f"controller: started (pid {r.pid}), {self.paths.controller_sock}")

    # ------------------------------------------------------------------------------ nodes

    def plan(self, cluster: Any) -> list[NodeState]:
        """Node states for every Node with a pod CIDR and an IP, reusing recorded names."""
        nets = [n for n in cluster.nodes if n.node_ip and n.pod_cidr]
        if "cidr" in self.state.underlay:
            net = ipaddress.IPv4Network(self.state.underlay["cidr"])
            outside = [n.name for n in nets if ipaddress.IPv4Address(n.node_ip) not in net]
            if outside:
                raise LabError(f"node(s) {', '.join(outside)} are outside the lab's underlay {net}: "
                               "run `pyantrea lab down` and `lab up` again")
        else:
            net = nodes.underlay_network(n.node_ip for n in nets)
            self.state.underlay = {"netns": self.underlay_netns, "bridge": nodes.UNDERLAY_BRIDGE, "cidr": str(net)}
        known = {k: v for k, v in self.state.nodes.items()}
        fresh = nodes.plan_nodes([(n.name, n.node_ip) for n in nets if n.name not in known], net.prefixlen,
                                 taken=[v.netns for v in known.values()], lab_prefix=self.prefix)
        for p in fresh:
            self.state.nodes[p.name] = NodeState(p.name, p.netns, p.ip, p.prefix, p.mac, p.uplink_peer)
        return [self.state.nodes[n.name] for n in nets]

    @staticmethod
    def _plan_of(ns: NodeState) -> nodes.NodePlan:
        p = nodes.NodePlan(ns.name, ns.ip, ns.prefix, ns.netns, ns.uplink_peer)
        return p

    def sandbox(self, node: str) -> Any:
        n = self.state.nodes[node]
        return nodes.sandbox_for(self.paths.ovs_dir(node), n.netns)

    def node_ready(self, n: NodeState) -> bool:
        return (netns.exists(n.netns) and self.sandbox(n.name).is_running()
                and netns.link_exists(n.netns, nodes.PHY_BRIDGE))

    def ensure_node(self, n: NodeState, peers: Sequence[NodeState]) -> bool:
        """Namespace, uplink, OVS and br-phy of one node. True if something was (re)built."""
        if self.node_ready(n):
            return False
        sb = nodes.setup_node(self._plan_of(n), self.paths.ovs_dir(n.name), self.underlay_netns)
        n.ovsdb = ProcRef.of(sb.ovsdb_pid) if sb.ovsdb_pid else None
        n.vswitchd = ProcRef.of(sb.vswitchd_pid) if sb.vswitchd_pid else None
        self.save()
        nodes.seed_tnl_arp(sb, [self._plan_of(p) for p in peers if p.name != n.name])
        return True

    def agent_argv(self, n: NodeState) -> list[str]:
        conf = self.agent_conf_path()
        return netns.exec_argv(n.netns, pyantrea_argv(
            "agent", "--node", n.name, "--controller", str(self.paths.controller_sock),
            "--ovs-rundir", str(self.paths.ovs_dir(n.name)), "--rundir", str(self.paths.node_dir(n.name)),
            "--datapath", "netdev", *(["--config", str(conf)] if conf else [])))

    def agent_env(self, n: NodeState) -> dict[str, str]:
        ovs = str(self.paths.ovs_dir(n.name))
        return {"OVS_RUNDIR": ovs, "OVS_DBDIR": ovs, "OVS_LOGDIR": ovs}

    def start_agent(self, n: NodeState) -> ProcRef:
        d = self.paths.node_dir(n.name)
        d.mkdir(parents=True, exist_ok=True)
        ref = start_detached(self.agent_argv(n), d / "agent.log", env=self.agent_env(n), pidfile=d / "agent.pid")
        n.agent = ref
        self.save()
        return ref

    def wait_agent(self, n: NodeState) -> None:
        ref = n.agent
        d = self.paths.node_dir(n.name)
        if not wait_healthy(self.paths.agent_sock(n.name), AGENT_TIMEOUT, alive=ref.alive if ref else None):
            why = "exited" if ref is not None and not ref.alive() else f"not healthy after {AGENT_TIMEOUT:g} s"
            raise LabError(f"agent of node {n.name} {why} ({' '.join(self.agent_argv(n))}); "
                           f"log {d / 'agent.log'}:\n{_tail(d / 'agent.log')}")

    def _bring_node(self, n: NodeState, ns_list: Sequence[NodeState]) -> None:
        """One node: namespace, uplink, OVS, br-phy (if missing), then its agent (if not running)."""
        if self.ensure_node(n, ns_list):
            self.say(f"node {n.name}: netns {n.netns}, OVS netdev (pid {n.vswitchd.pid if n.vswitchd else '?'}), "
                     f"br-phy {n.ip}/{n.prefix} {n.phy_mac}")
        else:
            self.say(f"node {n.name}: running")
        if n.agent is None or not n.agent.alive():
            self.start_agent(n)
            self._started_agents.append(n)

    def ensure_agents(self, ns: Sequence[NodeState]) -> None:
        """Start the agents not running (unless `_bring_node` just did) and wait until each is healthy."""
        started = list(self._started_agents)
        self._started_agents.clear()
        for n in ns:
            if n.name in {x.name for x in started} or (n.agent is not None and n.agent.alive()):
                continue
            self.start_agent(n)
            started.append(n)
        for n in sorted(started, key=lambda n: n.name):
            self.wait_agent(n)
            self.say(f"agent {n.name}: ready (pid {n.agent.pid if n.agent else '?'})")
        if not started:
            self.say(f"agents: {len(ns)} running")

    # ------------------------------------------------------------------------------ kube-proxy

    def sync_kubeproxy(self, cluster: Any, force: bool = False) -> int:
        """Rewrite the KUBE-* chains of every node whose rules changed. Returns the nodes synced.

        With AntreaProxy and `antreaProxy.proxyAll` in the folder's antrea-agent.conf the agents serve
        every Service (ClusterIP and NodePort) themselves: there is no kube-proxy, so nothing is written."""
        cfg = cluster.config
        if cfg.gate("AntreaProxy") and cfg.proxy_all:
            return 0
        synced = 0
        for name, n in sorted(self.state.nodes.items()):
            if not netns.exists(n.netns):
                continue
            rules = kubeproxy.build_rules(cluster, name)
            digest = hashlib.sha256(rules.render().encode()).hexdigest()[:16]
            if not force and digest == n.kubeproxy_hash:
                continue
            save = netns.run(netns.exec_argv(n.netns, ["iptables-save"])).stdout
            text = rules.render(kubeproxy.kube_chains_in(save), kubeproxy.missing_jumps(save))
            netns.run(netns.exec_argv(n.netns, ["iptables-restore", "--noflush"]), input=text)
            n.kubeproxy_hash = digest
            synced += 1
        self.save()
        return synced

    # ------------------------------------------------------------------------------ pods

    def desired_pods(self, cluster: Any) -> dict[str, Any]:
        """The Pods the lab's kubelets run: bound to a lab node, not hostNetwork, not terminated."""
        return {p.key: p for p in cluster.pods
                if p.node_name in self.state.nodes and not p.host_network and not p.terminated}

    def _pod_netns_name(self, namespace: str, name: str) -> str:
        taken = {n.netns for n in self.state.nodes.values()} | {p.netns for p in self.state.pods.values()}
        taken.add(self.underlay_netns)
        cand = netns.pod_netns_name(namespace, name, self.prefix)
        if cand in taken:
            cand = netns.pod_netns_fallback(namespace, name, self.prefix)
        return cand

    def pod_ready(self, p: PodState) -> bool:
        return p.cni == "added" and netns.exists(p.netns) and p.workload is not None and p.workload.alive()

    def reconcile_pods(self, cluster: Any) -> list[str]:
        """Make the lab's Pods those of ``cluster`` (the controller's objects), as kubelets do: a Pod
        that exists keeps its namespace, IP and process; only new Pods are created and only deleted
        ones removed. Returns error lines (failed Pods)."""
        desired = self.desired_pods(cluster)
        errors: list[str] = []
        gone = [self.state.pods[k] for k in sorted(set(self.state.pods) - set(desired))]

        def delete(ps: PodState) -> None:
            self.delete_pod(ps)
            self.say(f"pod {ps.key}: deleted")

        with ThreadPoolExecutor(max_workers=self.jobs) as ex:
            list(ex.map(delete, gone))
        create: list[PodState] = []
        dns_svc = next((s for s in cluster.services if s.namespace == "kube-system" and s.name == "kube-dns"), None)
        dns_ip = dns_svc.cluster_ip if dns_svc is not None else None
        restart: list[PodState] = []  # plumbed, but the workload is gone (or must change)
        for key, pod in sorted(desired.items()):
            cur = self.state.pods.get(key)
            dns = (DNS_LABEL[0], DNS_LABEL[1]) in pod.labels
            if cur is not None and cur.cni == "added" and netns.exists(cur.netns):
                if cur.dns != dns or cur.workload is None or not cur.workload.alive():
                    if cur.workload is not None:
                        cur.workload.stop(grace=1.0)
                    cur.dns = dns
                    restart.append(cur)
                continue
            if cur is not None:  # its CNI ADD failed or its namespace is gone: the kubelet retries
                self.say(f"pod {key}: not ready, re-creating it")
                self.delete_pod(cur)
            node = pod.node_name
            prefix = ipaddress.IPv4Network(cluster.node(node).pod_cidr).prefixlen
            raw = getattr(self, "raw_pods", {}).get(key) or {}
            requested = ((raw.get("metadata") or {}).get("annotations") or {}).get(REQUESTED_IP)
            ps = PodState(namespace=pod.namespace, name=pod.name, node=node,
                          netns=self._pod_netns_name(pod.namespace, pod.name), ip=requested or "", prefix=prefix,
                          container_id=new_container_id(), interface="", dns=dns)
            self.state.pods[key] = ps
            create.append(ps)
        if not create and not restart:
            return errors
        self.save()
        # 1. netns + CNI ADD (concurrently: the agent serializes per container, not globally)
        with ThreadPoolExecutor(max_workers=self.jobs) as ex:
            results = list(ex.map(lambda ps: self._add_pod_network(ps, dns_ip), create))
        self.save()
        # 2. resolv.conf + workloads, started together, then wait until each listens
        waiting: dict[int, PodState] = {}
        for ps, err in [*zip(create, results), *((ps, "") for ps in restart)]:
            if err:
                errors.append(f"pod {ps.key}: {err}")
                self.say(f"pod {ps.key}: FAILED: {err}")
                continue
            netns.write_etc_file(ps.netns, "resolv.conf", kubelet.resolv_conf(ps.namespace, dns_ip))
            d = self.paths.pod_dir(ps.namespace, ps.name)
            d.mkdir(parents=True, exist_ok=True)
            ref, fd = kubelet.start_workload(ps.netns, ps.name, ps.ip, ps.prefix, d / "workload.log",
                                             self.dns_state_dir() if ps.dns else None)
            (d / "workload.pid").write_text(f"{ref.pid}\n")
            ps.workload = ref
            waiting[fd] = ps
        self.save()
        ready, failed = kubelet.wait_ready(waiting, WORKLOAD_TIMEOUT)
        for ps in sorted(ready, key=lambda p: p.key):
            extra = " + DNS" if ps.dns else ""
            # the kubelet's status update: the Pod's IP (the CNI's), Running and Ready
            self.post_status(ps, {"phase": "Running", "podIP": ps.ip, "podIPs": [{"ip": ps.ip}],
                                  "hostIP": self.state.nodes[ps.node].ip})
            if any(ps is r for r in restart):
                self.say(f"pod {ps.key}: workload restarted, HTTP{extra} ready")
                continue
            self.say(f"pod {ps.key}: {ps.ip} on {ps.node} ({ps.interface}), CNI ADD {ps.cni_add_seconds or 0:.2f} s, "
                     f"HTTP{extra} ready")
        for ps in failed:
            log = self.paths.pod_dir(ps.namespace, ps.name) / "workload.log"
            errors.append(f"pod {ps.key}: workload not ready; log {log}:\n{_tail(log, 5)}")
            self.say(f"pod {ps.key}: FAILED: workload not ready (log {log})")
        return errors

    def _add_pod_network(self, ps: PodState, dns_ip: str | None) -> str:
        """Namespace + CNI ADD for one Pod; returns an error text ('' on success)."""
        n = self.state.nodes[ps.node]
        try:
            netns.add(ps.netns)
        except PyantreaError as e:
            ps.cni, ps.error = "failed", str(e)
            return ps.error
        conf = kubelet.cni_config(self.paths.agent_sock(ps.node), ps.namespace, dns_ip)
        env = kubelet.cni_env("ADD", ps.container_id, ps.netns, ps.namespace, ps.name, ps.ip)
        res = kubelet.run_cni("ADD", n.netns, conf, env)
        ps.cni_add_seconds = round(res.seconds, 4)
        if not res.ok:
            ps.cni, ps.error = "failed", res.error_text()
            netns.delete(ps.netns)
            return ps.error
        got = res.json()
        ips = [x.get("address", "") for x in (got or {}).get("ips", [])] if isinstance(got, dict) else []
        ifaces = [x.get("name", "") for x in (got or {}).get("interfaces", []) if not x.get("sandbox")] \
            if isinstance(got, dict) else []
        if not ips:
            ps.cni, ps.error = "failed", f"CNI ADD gave no IP: {res.stdout.strip()[:200]}"
            return ps.error
        ps.ip = ips[0].split("/")[0]  # the agent's host-local IPAM owns the Pod's IP
        ps.interface = ifaces[0] if ifaces else ""
        ps.cni, ps.error = "added", ""
        return ""

    def delete_pod(self, ps: PodState) -> None:
        if ps.workload is not None:
            ps.workload.stop(grace=1.0)
        pidf = ProcRef.from_pidfile(self.paths.pod_dir(ps.namespace, ps.name) / "workload.pid",
                                    f"--pod\0{ps.name}\0")
        if pidf is not None:
            pidf.stop(grace=1.0)
        n = self.state.nodes.get(ps.node)
        if n is not None and ps.cni in ("added", "pending") and n.agent is not None and n.agent.alive():
            conf = kubelet.cni_config(self.paths.agent_sock(ps.node), ps.namespace, None)
            env = kubelet.cni_env("DEL", ps.container_id, ps.netns, ps.namespace, ps.name, ps.ip)
            res = kubelet.run_cni("DEL", n.netns, conf, env)
            if not res.ok:
                self.say(f"pod {ps.key}: warning: {res.error_text()}")
        netns.delete(ps.netns)
        netns.remove_etc(ps.netns)
        shutil.rmtree(self.paths.pod_dir(ps.namespace, ps.name), ignore_errors=True)
        with self._lock:
            self.state.pods.pop(ps.key, None)
            self.save()

    # ------------------------------------------------------------------------------ up

    def recorded_netns(self) -> set[str]:
        s = self.state
        return {n.netns for n in s.nodes.values()} | {p.netns for p in s.pods.values()} | {self.underlay_netns}

    def claim_namespaces(self) -> None:
        """Refuse to bring a lab up while another one (another run dir) owns the namespaces of this
        lab's prefix, which are host-wide; then say they are ours. Labs of other prefixes do not matter."""
        owner = nodes.namespaces_owner(self.prefix)
        root = str(self.paths.root)
        if owner is not None and owner != root:
            raise LabError(f"another lab (run dir {owner}) owns the {self.prefix}* namespaces: "
                           f"`PYANTREA_LAB_DIR={owner} pyantrea lab down` it first, or give this lab another "
                           f"prefix ({netns.PREFIX_ENV}=pt- for instance)")
        strays = sorted(set(netns.list_lab(self.prefix)) - self.recorded_netns())
        if owner is None and strays:
            raise LabError(f"network namespaces {', '.join(strays[:5])}{' ...' if len(strays) > 5 else ''} exist "
                           "that no lab here created (a lab whose run dir is gone?): `pyantrea lab down` removes "
                           f"every {self.prefix}* namespace")
        nodes.setup_underlay(root, self.prefix)

    def up(self, folder: str | os.PathLike[str]) -> int:
        self.check_host()
        from pyantrea.k8s.loader import load_folder

        folder_abs = str(Path(folder).resolve())
        if not Path(folder_abs).is_dir():
            raise LabError(f"{folder}: not a directory")
        with self.paths.locked():
            prev = self.load_state()
            if prev is not None and prev.folder and prev.folder != folder_abs:
                raise LabError(f"a lab of {prev.folder} is up at {self.paths.root}: run `pyantrea lab down` first")
            if prev is not None and prev.folder:
                asked = os.environ.get(netns.PREFIX_ENV)
                if asked and asked != self.prefix:
                    raise LabError(f"the lab at {self.paths.root} has the namespace prefix {self.prefix!r} "
                                   f"(lab.json), not {netns.PREFIX_ENV}={asked!r}: `pyantrea lab down` it first")
                self.say(f"lab {self.paths.root} exists ({folder_abs}): checking it, bringing up what is missing")
            else:
                self.state = LabState(folder=folder_abs, prefix=netns.env_prefix())
            cluster0 = load_folder(folder_abs)  # the controller validates and stores it; this says what it is
            self.claim_namespaces()
            for w in cluster0.warnings:
                self.say(f"warning: {w}")
            self.state.complete = False
            self.save()
            self.say(f"cluster {folder}: {len(cluster0.nodes)} nodes, {len(cluster0.pods)} pods, "
                     f"{len(cluster0.services)} services, {len(cluster0.policies)} network policies")
            nodes.setup_underlay(str(self.paths.root), self.prefix)
            self.ensure_controller()
            cluster = self.current_cluster()
            ns_list = self.plan(cluster)
            self.save()
            self.say(f"underlay {self.underlay_netns}: bridge {nodes.UNDERLAY_BRIDGE}, {self.state.underlay['cidr']}")
            with ThreadPoolExecutor(max_workers=max(1, len(ns_list))) as ex:
                list(ex.map(lambda n: self._bring_node(n, ns_list), ns_list))
            self.ensure_agents(ns_list)
            synced = self.sync_kubeproxy(cluster, force=True)
            if cluster.config.gate("AntreaProxy") and cluster.config.proxy_all:
                self.say("kube-proxy: none (AntreaProxy with proxyAll serves every Service in OVS)")
            else:
                self.say(f"kube-proxy: {len(kubeproxy.service_ports(cluster))} service ports on {synced} nodes")
            errors = self.reconcile_pods(cluster)
            self.sync_kubeproxy(self.current_cluster())  # Endpoints now that the Pods have their IPs
            self.wait_agents_synced()
            ready = sum(1 for p in self.state.pods.values() if self.pod_ready(p))
            self.state.complete = not errors
            self.save()
        if errors:
            self.say(f"lab up with errors: {len(errors)} pod(s) failed, {ready} ready")
            for line in errors:
                print(line, file=sys.stderr)
            return 1
        self.say(f"lab is up: {len(ns_list)} nodes, {ready} pods ready (run `pyantrea lab status`)")
        return 0

    # ------------------------------------------------------------------------------ apply / delete

    def apply(self, file: str, delete: bool = False) -> int:
        from pyantrea.lab.manifest import read_manifest

        self.check_host()
        text = read_manifest(file)  # UTF-8, at most one request's 4 MiB: checked before anything is sent
        with self.paths.locked():
            self.require_state()
            if self.controller_ref() is None:
                raise LabError("the controller is not running: `pyantrea lab restart controller` or `lab up`")
            from urllib.parse import quote

            # the user's file name goes along, so that every problem names it (stdin: "<stdin>")
            path = ("/v1/delete" if delete else "/v1/apply") + "?file=" + quote(file if file != "-" else "<stdin>")
            try:
                status, body = request_json(self.paths.controller_sock, "POST", path, text,
                                            content_type="application/yaml")
            except OSError as e:
                raise LabError(f"controller {self.paths.controller_sock}: {e}") from e
            if status != 200:
                problems = body.get("problems") if isinstance(body, dict) else None
                msg = body.get("error") if isinstance(body, dict) else str(body)
                if problems:
                    lines = "\n".join(f"  {p}" for p in problems)
                    raise LabError(f"the controller rejected {file} ({len(problems)} problem(s)):\n{lines}")
                raise LabError(f"the controller rejected {file} ({status}): {msg}")
            results = body.get("results") if isinstance(body, dict) else None
            for r in results or []:
                self.say(f"{r.get('object')}: {r.get('action')}")
            self.say(f"{file}: {'deleted' if delete else 'applied'}, resourceVersion {body.get('resourceVersion')}")
            acted_on = RECONCILED_KINDS | ({"Namespace"} if delete else set())  # a Namespace may take Pods along
            if not (manifest_kinds(text) & acted_on):
                self.wait_agents_synced()
                return 0  # NetworkPolicies, Namespace labels: the agents watch the controller themselves
            cluster = self.current_cluster()
            new_nodes = [n.name for n in cluster.nodes if n.name not in self.state.nodes]
            if new_nodes:
                self.say(f"warning: new node(s) {', '.join(new_nodes)} are not brought up live: run `lab up` again")
            errors = self.reconcile_pods(cluster)
            synced = self.sync_kubeproxy(self.current_cluster())  # Endpoints follow the Pods' new status
            if synced:
                self.say(f"kube-proxy: re-synced on {synced} nodes")
            self.wait_agents_synced()
        for line in errors:
            print(line, file=sys.stderr)
        return 1 if errors else 0

    # ------------------------------------------------------------------------------ status

    def status_data(self) -> dict[str, Any]:
        s = self.require_state()
        ctrl = s.controller
        out: dict[str, Any] = {
            "lab": str(self.paths.root),
            "prefix": self.prefix,
            "folder": s.folder,
            "complete": s.complete,
            "underlay": s.underlay,
            "controller": {"pid": ctrl.pid if ctrl else None, "alive": bool(ctrl and ctrl.alive()),
                           "socket": str(self.paths.controller_sock)},
            "nodes": [],
            "pods": [],
        }
        for name, n in sorted(s.nodes.items()):
            sb = self.sandbox(name)
            out["nodes"].append({
                "name": name, "netns": n.netns, "ip": n.ip, "phy_mac": n.phy_mac,
                "netns_exists": netns.exists(n.netns),
                "ovs": sb.is_running(), "ovs_pids": [sb.ovsdb_pid, sb.vswitchd_pid],
                "agent": bool(n.agent and n.agent.alive()), "agent_pid": n.agent.pid if n.agent else None,
            })
        for key, p in sorted(s.pods.items()):
            out["pods"].append({
                "pod": key, "node": p.node, "ip": p.ip, "netns": p.netns, "interface": p.interface,
                "cni": p.cni, "ready": self.pod_ready(p), "error": p.error,
                "workload_pid": p.workload.pid if p.workload else None, "dns": p.dns,
            })
        return out

    def status(self, output: str = "table") -> int:
        d = self.status_data()
        if output == "json":
            print(json.dumps(d, indent=2))
            return 0
        alive = "running" if d["controller"]["alive"] else "DOWN"
        print(f"lab {d['lab']}  prefix {d['prefix']}  folder {d['folder']}  underlay {d['underlay'].get('cidr', '?')}")
        print(f"controller  {alive} (pid {d['controller']['pid']})")
        print()
        rows: list[tuple[str, ...]] = [("NODE", "NETNS", "NODE-IP", "OVS", "AGENT")]
        for n in d["nodes"]:
            rows.append((n["name"], n["netns"] + ("" if n["netns_exists"] else " (missing)"), n["ip"],
                         "running" if n["ovs"] else "DOWN",
                         f"running (pid {n['agent_pid']})" if n["agent"] else "DOWN"))
        _table(rows)
        print()
        rows = [("POD", "NODE", "IP", "INTERFACE", "NETNS", "READY")]
        for p in d["pods"]:
            ready = "yes" if p["ready"] else ("no: " + (p["error"] or f"cni {p['cni']}, workload down"))
            rows.append((p["pod"], p["node"], p["ip"], p["interface"], p["netns"], ready))
        _table(rows)
        ok = d["controller"]["alive"] and all(n["ovs"] and n["agent"] for n in d["nodes"]) \
            and all(p["ready"] for p in d["pods"])
        return 0 if ok else 1

    # ------------------------------------------------------------------------------ exec

    def exec_argv(self, target: str, cmd: Sequence[str]) -> list[str]:
        s = self.require_state()
        cmd = list(cmd) or [os.environ.get("SHELL", "/bin/bash")]
        if "/" not in target and target in s.nodes:
            n = s.nodes[target]
            ovs = str(self.paths.ovs_dir(target))
            return ["ip", "netns", "exec", n.netns, "env", f"OVS_RUNDIR={ovs}", f"OVS_DBDIR={ovs}",
                    f"OVS_LOGDIR={ovs}", f"PYANTREA_NODE={target}", *cmd]
        key = target if "/" in target else f"default/{target}"
        p = s.pods.get(key)
        if p is None:
            nodes_ = ", ".join(sorted(s.nodes))
            raise LabError(f"{target}: no such node ({nodes_}) or Pod ({', '.join(sorted(s.pods)) or 'none'})")
        if not netns.exists(p.netns):
            raise LabError(f"pod {key} has no network namespace ({p.netns}): {p.error or 'not created'}")
        return ["ip", "netns", "exec", p.netns, *cmd]

    def exec(self, target: str, cmd: Sequence[str]) -> int:
        self.check_host()
        argv = self.exec_argv(target, cmd)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvp(argv[0], argv)
        return 127  # not reached

    # ------------------------------------------------------------------------------ restart

    def restart(self, what: str, node: str | None = None) -> int:
        self.check_host()
        with self.paths.locked():
            s = self.require_state()
            if what == "controller":
                if node:
                    raise LabError("`lab restart controller` takes no node")
                old = s.controller
                if old is not None and old.alive():
                    old.kill(signal.SIGKILL)
                    self.say(f"controller: killed (pid {old.pid})")
                r = self.start_controller()
                self.say(f"controller: started (pid {r.pid})")
                return 0
            names = [node] if node else sorted(s.nodes)
            for name in names:
                if name not in s.nodes:
                    raise LabError(f"{name}: no such node ({', '.join(sorted(s.nodes))})")
            retry: list[str] = []
            for name in names:
                n = s.nodes[name]
                if what == "agent":
                    if n.agent is not None and n.agent.alive():
                        n.agent.kill(signal.SIGKILL)
                        self.say(f"agent {name}: killed (pid {n.agent.pid})")
                    self.start_agent(n)
                    self.wait_agent(n)
                    self.say(f"agent {name}: ready (pid {n.agent.pid if n.agent else '?'})")
                    retry += [p.key for p in s.pods.values() if p.node == name and p.cni != "added"]
                elif what == "ovs":
                    sb = self.sandbox(name)
                    old = sb.vswitchd_pid
                    # as antrea-ovs does before starting ovs-vswitchd: keep the datapath idle until
                    # the agent has replayed its flows (the agent removes the key, spec §11.2)
                    sb.db.transact([["set", "Open_vSwitch", ".", "other_config:flow-restore-wait=true"]],
                                   no_wait=True)
                    sb.restart_vswitchd()
                    n.vswitchd = ProcRef.of(sb.vswitchd_pid) if sb.vswitchd_pid else None
                    self.save()
                    nodes.seed_tnl_arp(sb, [self._plan_of(p) for p in s.nodes.values() if p.name != name])
                    self.say(f"ovs-vswitchd {name}: killed (pid {old}) and started (pid {sb.vswitchd_pid}); "
                             "tnl/arp re-seeded, the agent replays its flows")
                else:
                    raise LabError(f"restart {what}: expected agent, ovs or controller")
            if not retry:
                return 0
            # kubelet retries a Pod whose CNI ADD failed (e.g. while the agent was down) once the
            # agent answers again
            self.say(f"retrying the CNI ADD of {', '.join(sorted(retry))}")
            errors = self.reconcile_pods(self.current_cluster())
        for line in errors:
            print(line, file=sys.stderr)
        return 1 if errors else 0

    # ------------------------------------------------------------------------------ down

    def down(self) -> int:
        self.check_host()
        root = self.paths.root
        with self.paths.locked():
            s = LabState.load(self.paths) or LabState()
            self.state = s
            if s.prefix and not netns.PREFIX_RE.fullmatch(s.prefix):
                self.say(f"warning: {self.paths.state_file}: {s.prefix!r} is not a lab prefix: "
                         f"removing the {netns.env_prefix()}* namespaces")
                s.prefix = ""
            prefix = self.prefix  # lab.json's, else PYANTREA_LAB_PREFIX's (a corrupt or missing lab.json)
            # 1.-3. every process the lab started, only by its pid (and start time), each step's all
            #    at once: SIGTERM, SIGKILL after the grace period, and a wait until each is gone,
            #    every thread of it (bounded: grace + 3 s a step). One still there after its SIGKILL
            #    (stuck in the kernel) stops `down` before anything else is removed: its pidfile and
            #    lab.json stay for the next `down`.
            from pyantrea.lab.procs import stop_all

            # 1. workloads
            procs: list[tuple[str, ProcRef | None]] = [(f"workload {p.key}", p.workload) for p in s.pods.values()]
            procs += [(f"workload {f.parent.name}", ProcRef.from_pidfile(f, "pyantrea.lab.workload"))
                      for f in sorted((root / "pods").glob("*/workload.pid"))]
            stuck = stop_all(procs, grace=0.5)
            # 2. agents, controller
            procs = [(f"agent {n.name}", n.agent) for n in s.nodes.values()]
            procs += [(f"agent {f.parent.name}", ProcRef.from_pidfile(f, str(f.parent)))
                      for f in sorted((root / "nodes").glob("*/agent.pid"))]
            procs += [("controller", s.controller),
                      ("controller", ProcRef.from_pidfile(self.paths.controller_dir / "controller.pid",
                                                          str(self.paths.controller_dir)))]
            stuck += stop_all(procs, grace=1.0)
            # 3. OVS of every node dir (Sandbox.stop only touches pids of its own pidfiles and returns
            #    when both daemons are gone), then the pids recorded at start, should a pidfile be gone
            by_dir = {str(self.paths.ovs_dir(n.name)): n.netns for n in s.nodes.values()}
            for d in sorted((root / "nodes").glob("*/ovs")):
                try:
                    nodes.sandbox_for(d, by_dir.get(str(d), "")).stop(timeout=3.0)
                except PyantreaError as e:
                    self.say(f"warning: {e}")
            stuck += stop_all([(f"{what} {n.name}", r) for n in s.nodes.values()
                               for what, r in (("ovs-vswitchd", n.vswitchd), ("ovsdb-server", n.ovsdb))], grace=1.0)
            if stuck:
                raise LabError(f"still running after SIGKILL: {', '.join(stuck)}; nothing else was removed "
                               "(run `pyantrea lab down` again)")
            # 4. namespaces: every <prefix>* if they are ours (or nobody's). If another lab (another
            #    run dir) owns them, the names this lab recorded are that lab's now: leave them all.
            #    Namespaces of other prefixes are other labs': never touched.
            owner = nodes.namespaces_owner(prefix)
            if owner is None or owner == str(root):
                names = {n for n in self.recorded_netns() if n.startswith(prefix)} | set(netns.list_lab(prefix))
                etc = names | set(netns.list_etc_lab(prefix))
            else:
                names = etc = set()
                self.say(f"warning: the {prefix}* namespaces belong to the lab at {owner}: leaving them")
            for ns in sorted(names):
                netns.delete(ns)
            for ns in sorted(etc):
                netns.remove_etc(ns)
            # 5. the run directory
            shutil.rmtree(root, ignore_errors=True)
        left = sorted(set(netns.list_lab(prefix)) & names)
        if left:
            raise LabError(f"namespaces still present after down: {', '.join(left)}")
        self.say(f"lab down: {root} removed")
        return 0


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
