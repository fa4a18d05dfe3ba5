"""`pyantrea lab up --kubernetes [DIR]`: the lab on Kubernetes' own control plane (design §3).

The nodes are the embedded lab's (a network namespace each, its own OVS, br-phy on the underlay:
`Lab.ensure_node`); what changes is everything above them:

* in the control-plane node's namespace (the Node labelled ``node-role.kubernetes.io/control-plane``
  or ``.../master``, else the one named ``master``, else the first): etcd, kube-apiserver (serving
  on the node's IP and 127.0.0.1, port 6443, service CIDR 10.96.0.0/12), kube-controller-manager
  (node IPAM with 10.222.0.0/16 and /24s, endpoints, endpointslices, replicasets, deployments,
  serviceaccounts and their tokens, namespaces, the garbage collector), kube-scheduler, and
  ``pyantrea controller --kubeconfig`` (`pyantrea.lab.kubernetes.ControlPlane`);
* in every node's namespace: the lab kubelet (`pyantrea.lab.kubelet_k8s`, the node's identity),
  ``pyantrea agent --kubeconfig``, a real kube-proxy (iptables mode, its own kubeconfig), and the
  CNI configuration the agent's install step writes (``nodes/N/cni/net.d/10-antrea.conflist``,
  plugin ``antrea`` in ``<lab>/cni/bin``, as Antrea's install-cni copies them);
* the folder's objects are created through the API server (``kubectl apply``), in the order
  others refer to them (`pyantrea.lab.kubernetes.STAGES`), changed only as the API requires
  (`pyantrea.lab.kubernetes.for_api`: a Pod's ``status.podIP`` becomes its requested-IP annotation).
  Nodes and NodeInterfaces come first, then the control-plane clients; the Namespaces, Services,
  Pods and NetworkPolicies before the agents start, so that each agent's first controlplane list
  holds every policy and its conj_ids are the offline compiler's.

The pyantrea lab process itself stays in the root namespace: it talks to the API server through
``kubectl`` run in the master's namespace (`kubectl`), and to the controller and agents over their
unix sockets. State: lab.json (the embedded lab's: folder, prefix, nodes, the controller) and
``kubernetes.json`` (the control plane's processes, the kubelets and kube-proxies).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from pyantrea.errors import ManifestError
from pyantrea.lab import kubernetes as k8s
from pyantrea.lab import netns
from pyantrea.lab.http import request_json
from pyantrea.lab.lab import Lab, LabError, _tail, pyantrea_argv
from pyantrea.lab.procs import ProcRef, start_detached, stop_all
from pyantrea.lab.state import LabPaths, LabState, NodeState

__all__ = ["KubeLab", "is_kubernetes_lab", "lab_for"]

STATE = "kubernetes.json"
POD_TIMEOUT = 90.0
KUBELET_TIMEOUT = 30.0


def is_kubernetes_lab(paths: LabPaths) -> bool:
    return (paths.root / STATE).is_file()


def lab_for(paths: LabPaths | None = None, jobs: int = 4) -> Lab:
    """The lab of the run dir: a KubeLab when it was brought up with ``--kubernetes``."""
    p = paths or LabPaths()
    return KubeLab(p, jobs=jobs) if is_kubernetes_lab(p) else Lab(p, jobs=jobs)


def control_plane_node(nodes: Sequence[Any]) -> str:
    """The folder's control-plane node: labelled control-plane or master, else named master, else
    the first by name."""
    names = sorted(n.name for n in nodes)
    for role in ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"):
        for n in sorted(nodes, key=lambda n: n.name):
            if role in dict(n.labels):
                return str(n.name)
    if "master" in names:
        return "master"
    if not names:
        raise LabError("the folder has no Node: a Kubernetes lab needs at least its control-plane node")
    return names[0]


class KubeLab(Lab):
    """The lab with kube-apiserver & co. (see the module's docstring)."""

    def __init__(self, paths: LabPaths | None = None, out: Any = None, jobs: int = 4):
        super().__init__(paths, out, jobs)
        self.k: dict[str, Any] = {}

    # ------------------------------------------------------------------------------ state
    @property
    def kstate_file(self) -> Path:
        return self.paths.root / STATE

    def load_kstate(self) -> dict[str, Any]:
        try:
            d = json.loads(self.kstate_file.read_text())
        except (OSError, ValueError):
            d = {}
        self.k = d if isinstance(d, dict) else {}
        self.k.setdefault("procs", {})
        self.k.setdefault("kubelets", {})
        self.k.setdefault("kube_proxies", {})
        return self.k

    def save_k(self) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        tmp = self.kstate_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.k, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.kstate_file)

    @property
    def kdir(self) -> Path:
        return self.paths.root / "kubernetes"

    @property
    def master(self) -> str:
        return str(self.k.get("master") or "")

    def master_ns(self) -> str:
        return self.state.nodes[self.master].netns

    def ref(self, d: Any) -> ProcRef | None:
        return ProcRef.from_json(d)

    def control_plane(self) -> k8s.ControlPlane:
        m = self.state.nodes[self.master]
        ns = m.netns
        cp = k8s.ControlPlane(self.kdir, bind="0.0.0.0", advertise=m.ip, api_port=k8s.API_PORT,
                              etcd_ports=(2379, 2380), kcm_port=10257, scheduler_port=10259, sans=(m.ip,),
                              exec_argv=lambda a: netns.exec_argv(ns, a), netns_run=self._run_in(ns),
                              reconcile_endpoints=True)
        for name, r in self.k.get("procs", {}).items():
            ref = self.ref(r)
            if ref is not None:
                cp.procs[name] = ref
        return cp

    @staticmethod
    def _run_in(ns: str) -> Any:
        def run(argv: list[str]) -> tuple[int, str]:
            p = subprocess.run(netns.exec_argv(ns, argv), capture_output=True, text=True, timeout=30, check=False)
            return p.returncode, p.stdout
        return run

    # ------------------------------------------------------------------------------ kubectl
    def admin_kubeconfig(self) -> Path:
        return self.kdir / "kubeconfig" / "admin.kubeconfig"

    def kubectl_argv(self, args: Sequence[str]) -> list[str]:
        """kubectl with the admin kubeconfig, in the master's network namespace (only there is the
        API server: it serves on the master's IP and 127.0.0.1), keeping the caller's mount namespace
        and working directory (``nsenter --net``), so file arguments are the caller's."""
        return ["nsenter", f"--net={netns.NETNS_DIR / self.master_ns()}", "--",
                str(k8s.bin_dir() / "kubectl"), "--kubeconfig", str(self.admin_kubeconfig()),
                "--cache-dir", str(self.kdir / "kube-cache"), *args]

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(self.kubectl_argv(args), input=input, capture_output=True, text=True, timeout=timeout,
                           check=False)
        if check and p.returncode != 0:
            raise LabError(f"kubectl {' '.join(args)}: {p.stderr.strip() or p.stdout.strip()}")
        return p

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply_docs(self, docs: Sequence[dict[str, Any]], what: str) -> list[str]:
        """``kubectl apply`` of documents (one request per call); kubectl's lines."""
        if not docs:
            return []
        text = "\n---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)
        p = self.kubectl("apply", "-f", "-", input=text, check=False)
        if p.returncode != 0:
            raise LabError(f"{what}: the API server refused it:\n  "
                           + "\n  ".join((p.stderr.strip() or p.stdout.strip()).replace('"STDIN"', what).splitlines()))
        return [ln for ln in p.stdout.splitlines() if ln.strip()]

    # ------------------------------------------------------------------------------ processes
    def node_kubeconfig(self, user: str, node: str) -> Path:
        """``nodes/N/<user>.kubeconfig``: user's certificate, the API server at the master's IP."""
        cp = self.control_plane()
        pki = cp.pki
        return k8s.write_kubeconfig(self.paths.node_dir(node) / f"{user}.kubeconfig", cp.server(), pki.ca,
                                    pki.cert(user), pki.key(user), user)

    def cni_conf_dir(self, node: str) -> Path:
        return self.paths.node_dir(node) / "cni" / "net.d"

    @property
    def cni_bin_dir(self) -> Path:
        return self.paths.root / "cni" / "bin"

    def cni_path(self) -> str:
        return f"{self.cni_bin_dir}:{'/usr/lib/cni'}"

    def install_cni(self, n: NodeState) -> Path:
        """What Antrea's install-cni does: the plugin binary into the CNI bin dir, the network
        configuration list into the node's CNI config dir (the lab kubelet then reports the node's
        network ready)."""
        from pyantrea.lab import kubelet

        self.cni_bin_dir.mkdir(parents=True, exist_ok=True)
        exe = self.cni_bin_dir / "antrea"
        script = "#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in kubelet.cni_argv()) + ' "$@"\n'
        if not exe.exists() or exe.read_text() != script:
            tmp = exe.with_suffix(".tmp")
            tmp.write_text(script)
            tmp.chmod(0o755)
            os.replace(tmp, exe)
        d = self.cni_conf_dir(n.name)
        d.mkdir(parents=True, exist_ok=True)
        conf = {"cniVersion": "1.0.0", "name": "antrea",
                "plugins": [{"type": "antrea", "agentSocket": str(self.paths.agent_sock(n.name)),
                             "ipam": {"type": "host-local"}},
                            {"type": "portmap", "capabilities": {"portMappings": True}}]}
        f = d / "10-antrea.conflist"
        tmp = d / ".10-antrea.conflist.tmp"
        tmp.write_text(json.dumps(conf, indent=2) + "\n")
        os.replace(tmp, f)
        return f

    def agent_argv(self, n: NodeState) -> list[str]:
        kc = self.paths.node_dir(n.name) / "pyantrea-agent.kubeconfig"
        return [*super().agent_argv(n), "--kubeconfig", str(kc)]

    def controller_argv(self) -> list[str]:
        """The controller in Kubernetes mode, in the control-plane node's namespace."""
        cp = self.control_plane()
        kc = cp.client_kubeconfig("pyantrea-controller", cp.local_server)
        conf = self.agent_conf_path()
        return netns.exec_argv(self.master_ns(), pyantrea_argv(
            "controller", "--kubeconfig", str(kc), "--rundir", str(self.paths.controller_dir),
            *(["--config", str(conf)] if conf else [])))

    def kubelet_argv(self, n: NodeState) -> list[str]:
        return ["nsenter", f"--net={netns.NETNS_DIR / n.netns}", "--", sys.executable, "-m",
                "pyantrea.lab.kubelet_k8s", "--node", n.name, "--kubeconfig",
                str(self.paths.node_dir(n.name) / "kubelet.kubeconfig"), "--node-ip", n.ip,
                "--lab-dir", str(self.paths.root), "--prefix", self.prefix,
                "--cni-conf-dir", str(self.cni_conf_dir(n.name)), "--cni-bin-dir", self.cni_path(),
                "--cluster-dns", str(self.k.get("cluster_dns") or "10.96.0.10"), "--jobs", str(self.jobs),
                "--dns-kubeconfig", str(self.paths.node_dir(n.name) / "coredns.kubeconfig")]

    def start_kubelet(self, n: NodeState) -> ProcRef:
        d = self.paths.node_dir(n.name)
        d.mkdir(parents=True, exist_ok=True)
        (d / "kubelet" / "ready").unlink(missing_ok=True)
        ref = start_detached(self.kubelet_argv(n), d / "kubelet.log", pidfile=d / "kubelet.pid")
        self.k["kubelets"][n.name] = ref.to_json()
        self.save_k()
        return ref

    def wait_kubelet(self, n: NodeState) -> None:
        d = self.paths.node_dir(n.name)
        ref = self.ref(self.k["kubelets"].get(n.name))
        deadline = time.monotonic() + KUBELET_TIMEOUT
        while not (d / "kubelet" / "ready").exists():
            if ref is None or not ref.alive():
                raise LabError(f"the kubelet of node {n.name} exited; log {d / 'kubelet.log'}:\n{_tail(d / 'kubelet.log')}")
            if time.monotonic() > deadline:
                raise LabError(f"the kubelet of node {n.name} did not register in {KUBELET_TIMEOUT:g} s; "
                               f"log {d / 'kubelet.log'}:\n{_tail(d / 'kubelet.log')}")
            time.sleep(0.05)

    def kube_proxy_argv(self, n: NodeState) -> list[str]:
        kc = self.paths.node_dir(n.name) / "kube-proxy.kubeconfig"
        return netns.exec_argv(n.netns, [
            str(k8s.bin_dir() / "kube-proxy"), "--kubeconfig", str(kc), "--hostname-override", n.name,
            "--proxy-mode", "iptables", "--cluster-cidr", k8s.CLUSTER_CIDR, "--bind-address", n.ip,
            "--conntrack-max-per-core", "0", "--conntrack-tcp-timeout-established", "0",
            "--conntrack-tcp-timeout-close-wait", "0", "--metrics-bind-address", "127.0.0.1:10249",
            "--healthz-bind-address", "127.0.0.1:10256", "--iptables-min-sync-period", "0s", "-v", "1"])

    def start_kube_proxy(self, n: NodeState) -> ProcRef:
        d = self.paths.node_dir(n.name)
        ref = start_detached(self.kube_proxy_argv(n), d / "kube-proxy.log", pidfile=d / "kube-proxy.pid")
        self.k["kube_proxies"][n.name] = ref.to_json()
        self.save_k()
        return ref

    def wait_kube_proxy(self, n: NodeState, timeout: float = 30.0) -> None:
        d = self.paths.node_dir(n.name)
        ref = self.ref(self.k["kube_proxies"].get(n.name))
        deadline = time.monotonic() + timeout
        run = self._run_in(n.netns)
        while True:
            rc, out = run(["curl", "-fsS", "--max-time", "2", "http://127.0.0.1:10256/healthz"])
            if rc == 0:
                return
            if ref is None or not ref.alive():
                raise LabError(f"kube-proxy of node {n.name} exited; log {d / 'kube-proxy.log'}:\n"
                               f"{_tail(d / 'kube-proxy.log')}")
            if time.monotonic() > deadline:
                raise LabError(f"kube-proxy of node {n.name} not healthy in {timeout:g} s; log "
                               f"{d / 'kube-proxy.log'}:\n{_tail(d / 'kube-proxy.log')}")
            time.sleep(0.2)

    # ------------------------------------------------------------------------------ up
    def plan_kube(self, raw: Any) -> list[NodeState]:
        """Node states for the folder's Nodes (their IPs; a Node without one gets the next free
        address of 10.79.1.200 upward, as the offline completer gives it)."""
        import ipaddress

        from pyantrea.lab import nodes

        ips = {n.name: n.node_ip for n in raw.nodes if n.node_ip}
        nxt = ipaddress.IPv4Address("10.79.1.200")
        for n in sorted(raw.nodes, key=lambda n: n.name):
            if n.name not in ips:
                while str(nxt) in ips.values():
                    nxt += 1
                ips[n.name] = str(nxt)
                self.say(f"warning: Node {n.name} has no address: {nxt} (InternalIP)")
        if "cidr" in self.state.underlay:
            net = ipaddress.IPv4Network(self.state.underlay["cidr"])
        else:
            net = nodes.underlay_network(ips.values())
            self.state.underlay = {"netns": self.underlay_netns, "bridge": nodes.UNDERLAY_BRIDGE, "cidr": str(net)}
        known = dict(self.state.nodes)
        fresh = nodes.plan_nodes([(n, ip) for n, ip in sorted(ips.items()) if n not in known], net.prefixlen,
                                 taken=[v.netns for v in known.values()], lab_prefix=self.prefix)
        for p in fresh:
            self.state.nodes[p.name] = NodeState(p.name, p.netns, p.ip, p.prefix, p.mac, p.uplink_peer)
        self.k["node_ips"] = ips
        return [self.state.nodes[n] for n in sorted(ips)]

    def up(self, folder: str | os.PathLike[str]) -> int:
        self.check_host()
        missing = k8s.missing_programs()
        if missing:
            raise LabError(f"{', '.join(missing)} not in {k8s.bin_dir()}: run `make kubernetes` "
                           "(scripts/build-kubernetes.sh) first")
        from pyantrea.k8s.loader import load_folder
        from pyantrea.lab import nodes

        folder_abs = str(Path(folder).resolve())
        if not Path(folder_abs).is_dir():
            raise LabError(f"{folder}: not a directory")
        with self.paths.locked():
            prev = self.load_state()
            if prev is not None and prev.folder and not is_kubernetes_lab(self.paths):
                raise LabError(f"an embedded lab of {prev.folder} is up at {self.paths.root}: "
                               "run `pyantrea lab down` first")
            if prev is not None and prev.folder and prev.folder != folder_abs:
                raise LabError(f"a lab of {prev.folder} is up at {self.paths.root}: run `pyantrea lab down` first")
            self.load_kstate()
            if prev is not None and prev.folder:
                asked = os.environ.get(netns.PREFIX_ENV)
                if asked and asked != self.prefix:
                    raise LabError(f"the lab at {self.paths.root} has the namespace prefix {self.prefix!r} "
                                   f"(lab.json), not {netns.PREFIX_ENV}={asked!r}: `pyantrea lab down` it first")
                self.say(f"lab {self.paths.root} exists ({folder_abs}, Kubernetes): checking it")
            else:
                self.state = LabState(folder=folder_abs, prefix=netns.env_prefix())
                self.k = {"mode": "kubernetes", "procs": {}, "kubelets": {}, "kube_proxies": {},
                          "version": k8s.k8s_version()}
            try:
                raw = load_folder(folder_abs)
            except ManifestError as e:
                raise LabError(f"{folder} is invalid:\n  " + "\n  ".join(e.problems)) from None
            self.claim_namespaces()
            for w in raw.warnings:
                self.say(f"warning: {w}")
            self.state.complete = False
            self.save()
            self.save_k()
            self.say(f"cluster {folder}: {len(raw.nodes)} nodes, {len(raw.pods)} pods, {len(raw.services)} services, "
                     f"{len(raw.policies)} network policies; Kubernetes {self.k.get('version')} from {k8s.bin_dir()}")
            nodes.setup_underlay(str(self.paths.root), self.prefix)
            ns_list = self.plan_kube(raw)
            self.k["master"] = self.k.get("master") or control_plane_node(raw.nodes)
            dns = next((s for s in raw.services if s.namespace == "kube-system" and s.name == "kube-dns"), None)
            self.k["cluster_dns"] = dns.cluster_ip if dns is not None and dns.cluster_ip else "10.96.0.10"
            self.save()
            self.save_k()
            self.say(f"underlay {self.underlay_netns}: bridge {nodes.UNDERLAY_BRIDGE}, {self.state.underlay['cidr']}")

            def bring(n: NodeState) -> None:
                if self.ensure_node(n, ns_list):
                    self.say(f"node {n.name}: netns {n.netns}, OVS netdev (pid {n.vswitchd.pid if n.vswitchd else '?'}), "
                             f"br-phy {n.ip}/{n.prefix} {n.phy_mac}")
                else:
                    self.say(f"node {n.name}: running")

            with ThreadPoolExecutor(max_workers=max(1, len(ns_list))) as ex:
                list(ex.map(bring, ns_list))
            self.bring_store(ns_list)
            docs = self.folder_docs(folder_abs)
            self.create_stage(docs, ("CustomResourceDefinition", "Node", "NodeInterfaces"))
            self.bring_clients(ns_list)
            self.wait_service_accounts(docs)
            self.create_stage(docs, ("Namespace", "Service", "Endpoints", "Pod", "NetworkPolicy", "*"))
            self.bring_agents(ns_list)
            errors = self.wait_pods(docs)
            self.wait_agents_synced()
            ready = self.count_ready()
            self.state.complete = not errors
            self.save()
        if errors:
            self.say(f"lab up with errors: {len(errors)} pod(s) not running, {ready} running")
            for line in errors:
                print(line, file=sys.stderr)
            return 1
        self.say(f"lab is up (Kubernetes): {len(ns_list)} nodes, {ready} pods running "
                 f"(`pyantrea lab kubectl get pods -A -o wide`)")
        return 0

    def _alive(self, name: str) -> ProcRef | None:
        r = self.ref(self.k["procs"].get(name))
        return r if r is not None and r.alive() else None

    def bring_store(self, ns_list: Sequence[NodeState]) -> None:
        """Certificates, etcd, kube-apiserver, pyantrea's RBAC and CRD."""
        cp = self.control_plane()
        clients: dict[str, tuple[str, str | None]] = {
            "kube-proxy": ("system:kube-proxy", None),
            "pyantrea-controller": ("pyantrea:controller", None), "pyantrea-agent": ("pyantrea:agent", None),
            "coredns": ("pyantrea:coredns", None)}
        for n in ns_list:
            clients[f"kubelet-{n.name}"] = (f"system:node:{n.name}", "system:nodes")
        cp.make_pki(clients)
        for n in ns_list:
            for user in ("kube-proxy", "pyantrea-agent", "coredns"):
                self.node_kubeconfig(user, n.name)
            kc = self.node_kubeconfig(f"kubelet-{n.name}", n.name)
            os.replace(kc, kc.with_name("kubelet.kubeconfig"))
        self.say(f"certificates: CA, kube-apiserver ({cp.advertise}, 127.0.0.1, 10.96.0.1), ServiceAccount keys, "
                 f"{len(clients) + 3} clients in {cp.pki.dir}")
        for name, what in (("etcd", f"127.0.0.1:{cp.etcd_ports[0]}"),
                           ("kube-apiserver", f"https://{cp.advertise}:{cp.api_port} and 127.0.0.1, "
                                              f"services {k8s.SERVICE_CIDR}")):
            r = self._alive(name)
            if r is not None:
                self.say(f"{name}: running (pid {r.pid})")
                continue
            cp.procs.pop(name, None)
            ref = cp.launch(name)
            self.k["procs"][name] = ref.to_json()
            self.save_k()
            cp.wait_up(name)
            self.say(f"{name}: started (pid {ref.pid}) in {self.master_ns()}, {what}")
        lines = self.apply_docs([*k8s.RBAC, k8s.CRD], "pyantrea's RBAC and CRD")
        self.say(f"API: {len(lines)} objects (ClusterRoles and bindings of pyantrea's controller, agents and DNS, "
                 "CRD nodeinterfaces.pyantrea.io)")
        self.kubectl("wait", "--for", "condition=Established", "--timeout", "30s", "crd/nodeinterfaces.pyantrea.io")

    def bring_clients(self, ns_list: Sequence[NodeState]) -> None:
        """Everything that only needs the API server, started together and then waited for:
        kube-controller-manager, kube-scheduler, pyantrea's controller, the kubelets, the kube-proxies."""
        cp = self.control_plane()
        launched: list[str] = []
        for name in ("kube-controller-manager", "kube-scheduler"):
            r = self._alive(name)
            if r is not None:
                self.say(f"{name}: running (pid {r.pid})")
                continue
            cp.procs.pop(name, None)
            self.k["procs"][name] = cp.launch(name).to_json()
            launched.append(name)
        self.save_k()
        kubelets = [n for n in ns_list if (r := self.ref(self.k["kubelets"].get(n.name))) is None or not r.alive()]
        proxies = [n for n in ns_list if (r := self.ref(self.k["kube_proxies"].get(n.name))) is None or not r.alive()]
        for n in kubelets:
            self.start_kubelet(n)
        for n in proxies:
            self.start_kube_proxy(n)
        self.ensure_controller()
        for name in launched:
            cp.wait_up(name)
            extra = (f", cluster CIDR {k8s.CLUSTER_CIDR} /{k8s.NODE_CIDR_MASK}, {len(k8s.CONTROLLERS)} controllers"
                     if name == "kube-controller-manager" else "")
            self.say(f"{name}: started (pid {cp.procs[name].pid}){extra}")
        for n in kubelets:
            self.wait_kubelet(n)
            r = self.ref(self.k["kubelets"].get(n.name))
            self.say(f"kubelet {n.name}: Node registered, Lease kube-node-lease/{n.name} (pid {r.pid if r else '?'})")
        if not kubelets:
            self.say(f"kubelets: {len(ns_list)} running")
        for n in proxies:
            self.wait_kube_proxy(n)
        if proxies:
            self.say(f"kube-proxy: iptables mode on {len(proxies)} nodes ({', '.join(n.name for n in proxies)})")

    def folder_docs(self, folder: str) -> list[dict[str, Any]]:
        from pyantrea.k8s.loader import manifest_files

        docs: list[Any] = []
        for f in manifest_files(Path(folder)):
            docs += [d for d in yaml.safe_load_all(Path(f).read_text(encoding="utf-8")) if d]
        out, notes = k8s.for_api(docs)
        for n in notes:
            self.say(n)
        return out

    def create_stage(self, docs: Sequence[dict[str, Any]], kinds: Sequence[str]) -> None:
        """Create the folder's objects of ``kinds`` ("*": kinds named in no stage), stage by stage."""
        known = {k for s in k8s.STAGES for k in s}
        for stage in k8s.staged(docs):
            kind = str(stage[0].get("kind"))
            if kind not in kinds and not ("*" in kinds and kind not in known):
                continue
            lines = self.apply_docs(stage, f"the folder's {kind} objects")
            counts: dict[str, int] = {}
            for ln in lines:
                verb = ln.rsplit(" ", 1)[-1]
                counts[verb] = counts.get(verb, 0) + 1
            summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            self.say(f"API: {len(stage)} {kind} ({summary})")

    def wait_service_accounts(self, docs: Sequence[dict[str, Any]], timeout: float = 30.0) -> None:
        """Pods need their namespace's ``default`` ServiceAccount (the ServiceAccount admission), which
        the controller manager creates once the namespace exists."""
        namespaces = sorted({str((d.get("metadata") or {}).get("namespace") or "default")
                             for d in docs if d.get("kind") == "Pod"})
        ns_docs = [d for d in docs if d.get("kind") == "Namespace"]
        if ns_docs:
            self.apply_docs(ns_docs, "the folder's Namespace objects")
        deadline = time.monotonic() + timeout
        for ns in namespaces:
            while self.kubectl("-n", ns, "get", "serviceaccount", "default", check=False).returncode != 0:
                if time.monotonic() > deadline:
                    raise LabError(f"no ServiceAccount default in namespace {ns} after {timeout:g} s "
                                   "(is kube-controller-manager running?)")
                time.sleep(0.2)

    def bring_agents(self, ns_list: Sequence[NodeState]) -> None:
        started = []
        for n in ns_list:
            if n.agent is None or not n.agent.alive():
                self.start_agent(n)
                started.append(n)
        for n in started:
            self.wait_agent(n)
            self.say(f"agent {n.name}: ready (pid {n.agent.pid if n.agent else '?'}), Kubernetes informers")
        for n in ns_list:
            self.install_cni(n)
        self.say(f"install-cni: {self.cni_bin_dir}/antrea, 10-antrea.conflist on {len(ns_list)} nodes")

    def pods_view(self) -> list[dict[str, Any]]:
        """Every Pod as the controller's informer holds it (kube-apiserver's, milliseconds later; a
        unix-socket request instead of a kubectl process)."""
        return list(self.controller_view("Pod").get("items") or [])

    def wait_pods(self, docs: Sequence[dict[str, Any]], timeout: float = POD_TIMEOUT) -> list[str]:
        """Wait until the folder's Pods run (the kubelets' status), saying each as it does. A Pod
        whose kubelet reports a failure (a container waiting with a message: the CNI's error, a
        workload that did not start) is not waited for. Returns error lines for the Pods that do
        not run, with their latest events."""
        want = {f"{(d.get('metadata') or {}).get('namespace') or 'default'}/{d['metadata']['name']}"
                for d in docs if d.get("kind") == "Pod"}
        said: set[str] = set()
        failed: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        last: dict[str, dict[str, Any]] = {}
        while True:
            for p in self.pods_view():
                key = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
                if key not in want:
                    continue
                last[key] = p
                st = p.get("status") or {}
                if key not in said and st.get("phase") == "Running" and _ready(p):
                    said.add(key)
                    failed.pop(key, None)
                    host = " (hostNetwork)" if (p.get("spec") or {}).get("hostNetwork") else ""
                    self.say(f"pod {key}: {st.get('podIP')} on {p['spec'].get('nodeName')}{host}, Running")
                elif key not in said:
                    why = _waiting(p)
                    if why:
                        failed[key] = why
            if want <= said | set(failed):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        errors = []
        for key in sorted(want - said):
            pod = last.get(key)
            phase = ((pod or {}).get("status") or {}).get("phase", "not found")
            if key in failed:
                self.say(f"pod {key}: FAILED: {failed[key]}")
            uid = str(((pod or {}).get("metadata") or {}).get("uid") or "")
            errors.append(f"pod {key}: {phase}{self.pod_events(key, uid)}")
        return errors

    def pod_events(self, key: str, uid: str = "") -> str:
        """The Pod's latest events (of this Pod: its uid, when known), indented lines."""
        ns, name = key.split("/", 1)
        sel = f"involvedObject.name={name}" + (f",involvedObject.uid={uid}" if uid else "")
        p = self.kubectl("-n", ns, "get", "events", "--field-selector", sel, "--sort-by", ".lastTimestamp",
                         "-o", "jsonpath={range .items[*]}{.type} {.reason}: {.message}{\"\\n\"}{end}", check=False)
        lines = [ln for ln in p.stdout.splitlines() if ln.strip()][-3:]
        return "".join(f"\n    {ln}" for ln in lines)

    def count_ready(self) -> int:
        return sum(1 for p in self.pods_view() if (p.get("status") or {}).get("phase") == "Running" and _ready(p))

    # ------------------------------------------------------------------------------ apply / delete
    def apply(self, file: str, delete: bool = False) -> int:
        from pyantrea.lab.manifest import read_manifest

        self.check_host()
        text = read_manifest(file)
        with self.paths.locked():
            self.require_state()
            self.load_kstate()
            try:
                docs = [d for d in yaml.safe_load_all(text) if d]
            except yaml.YAMLError:
                docs = []
            api_docs, notes = k8s.for_api(docs)
            same = api_docs == k8s.flatten(docs)
            name = file if file != "-" else "<stdin>"
            if same and file != "-":
                args = ["delete" if delete else "apply", "-f", file]
                p = subprocess.run(self.kubectl_argv(args), capture_output=True, text=True, timeout=120, check=False)
            else:  # changed as the API requires (a Pod's requested IP), or stdin: through kubectl's stdin
                for n in notes:
                    self.say(n)
                body = "\n---\n".join(yaml.safe_dump(d, sort_keys=False) for d in api_docs) if api_docs else text
                args = ["delete" if delete else "apply", "-f", "-"]
                p = subprocess.run(self.kubectl_argv(args), input=body, capture_output=True, text=True,
                                   timeout=120, check=False)
            out = p.stdout.replace('"STDIN"', f'"{name}"')
            err = p.stderr.replace('"STDIN"', f'"{name}"')
            for ln in out.splitlines():
                if ln.strip():
                    self.say(ln)
            if p.returncode != 0:
                raise LabError(f"kube-apiserver refused {name}:\n  " + "\n  ".join(
                    (err.strip() or out.strip() or f"kubectl exit {p.returncode}").splitlines()))
            for ln in err.splitlines():  # warnings (deprecated APIs, ...)
                if ln.strip():
                    self.say(ln)
            errors = self.settle(api_docs, delete)
        for line in errors:
            print(line, file=sys.stderr)
        return 1 if errors else 0

    def controller_view(self, kind: str) -> dict[str, Any]:
        code, body = request_json(self.paths.controller_sock, "GET", f"/v1/objects?kind={kind}", timeout=10)
        if code != 200 or not isinstance(body, dict):
            raise LabError(f"controller {self.paths.controller_sock}: HTTP {code}: {body}")
        return body

    def settle(self, docs: Sequence[dict[str, Any]], delete: bool, timeout: float = 30.0) -> list[str]:
        """After an apply/delete: wait until the controller has seen and computed every object of the
        kinds it watches, then until every agent has installed what concerns it; new Pods until they
        run (or say why not)."""
        watched = {"Namespace", "Node", "Pod", "NetworkPolicy", "Service", "Endpoints", "NodeInterfaces"}
        keys = {(str(d.get("kind")), k8s._key(d)[1], k8s._key(d)[2]) for d in docs if d.get("kind") in watched}
        if not keys:
            return []
        want_rv: dict[tuple[str, str, str], int] = {}
        if not delete:
            for kind, ns, nm in keys:
                args = ["get", kind.lower() if kind != "NodeInterfaces" else "nodeinterfaces.pyantrea.io", nm]
                if ns:
                    args[1:1] = ["-n", ns]
                p = self.kubectl(*args, "-o", "jsonpath={.metadata.resourceVersion}", check=False)
                if p.returncode == 0 and p.stdout.strip().isdigit():
                    want_rv[(kind, ns, nm)] = int(p.stdout.strip())
        deadline = time.monotonic() + timeout
        pending = set(keys)
        while pending:
            by_kind: dict[str, dict[tuple[str, str], int]] = {}
            idle = True
            for kind in sorted({k[0] for k in pending}):
                view = self.controller_view(kind)
                idle = idle and bool(view.get("idle"))
                by_kind[kind] = {(str((d.get("metadata") or {}).get("namespace") or ""),
                                  str((d.get("metadata") or {}).get("name"))):
                                 int((d.get("metadata") or {}).get("resourceVersion") or 0) for d in view["items"]}
            for key in list(pending):
                kind, ns, nm = key
                have = by_kind.get(kind, {}).get((ns, nm))
                if delete and have is None:
                    pending.discard(key)
                elif not delete and have is not None and have >= want_rv.get(key, 0):
                    pending.discard(key)
            if not pending and idle:
                break
            if time.monotonic() > deadline:
                self.say(f"warning: the controller has not seen {', '.join('/'.join(k) for k in sorted(pending))}")
                break
            time.sleep(0.01)
        self.wait_agents_synced()
        if delete:
            return []
        pods = [d for d in docs if d.get("kind") == "Pod"]
        return self.wait_pods(pods, timeout=POD_TIMEOUT) if pods else []

    # ------------------------------------------------------------------------------ status / exec
    def kubelet_pods(self) -> dict[str, dict[str, Any]]:
        """Every Pod the kubelets run, from their state files: key -> record (with its node)."""
        out: dict[str, dict[str, Any]] = {}
        for f in sorted((self.paths.root / "nodes").glob("*/kubelet/pods.json")):
            try:
                d = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            for key, rec in (d.get("pods") or {}).items():
                out[key] = {**rec, "node": d.get("node") or f.parent.parent.name}
        return out

    def exec_argv(self, target: str, cmd: Sequence[str]) -> list[str]:
        s = self.require_state()
        if "/" in target or target not in s.nodes:
            key = target if "/" in target else f"default/{target}"
            rec = self.kubelet_pods().get(key)
            if rec is None:
                raise LabError(f"{target}: no such node ({', '.join(sorted(s.nodes))}) or Pod run by a kubelet "
                               f"({', '.join(sorted(self.kubelet_pods())) or 'none'})")
            if rec.get("host_network"):
                return super().exec_argv(str(rec["node"]), cmd)
            if not netns.exists(rec["netns"]):
                raise LabError(f"pod {key} has no network namespace ({rec['netns']})")
            cmd = list(cmd) or [os.environ.get("SHELL", "/bin/bash")]
            return ["ip", "netns", "exec", rec["netns"], *cmd]
        return super().exec_argv(target, cmd)

    def status_data(self) -> dict[str, Any]:
        out = super().status_data()
        self.load_kstate()
        cp = self.control_plane()
        out["mode"] = "kubernetes"
        out["kubernetes"] = {
            "master": self.master, "kubeconfig": str(self.admin_kubeconfig()), "apiserver": cp.server(),
            "processes": {n: {"pid": r.pid, "alive": r.alive()} for n, r in cp.procs.items()},
            "kubelets": {n: {"pid": r.pid, "alive": r.alive()} for n, d in sorted(self.k["kubelets"].items())
                         for r in [ProcRef.from_json(d)] if r is not None},
            "kube_proxies": {n: {"pid": r.pid, "alive": r.alive()} for n, d in sorted(self.k["kube_proxies"].items())
                             for r in [ProcRef.from_json(d)] if r is not None},
        }
        pods = []
        for key, rec in sorted(self.kubelet_pods().items()):
            ref = ProcRef.from_json(rec.get("workload"))
            alive = ref is None if rec.get("workload") is None else ref is not None and ref.alive()
            ready = bool(rec.get("status_posted")) and alive and (rec.get("host_network") or netns.exists(rec["netns"]))
            pods.append({"pod": key, "node": rec["node"], "ip": rec.get("ip"), "netns": rec.get("netns") or "(host)",
                         "interface": rec.get("interface", ""), "cni": "added", "ready": ready, "error": "",
                         "workload_pid": ref.pid if ref else None, "dns": rec.get("dns")})
        out["pods"] = pods
        return out

    def status(self, output: str = "table") -> int:
        d = self.status_data()
        if output == "json":
            print(json.dumps(d, indent=2))
            return 0
        rc = super().status(output)
        kd = d["kubernetes"]
        print()
        print(f"Kubernetes: API server {kd['apiserver']} (in {self.master_ns()}), kubeconfig {kd['kubeconfig']}")
        for name, p in kd["processes"].items():
            print(f"  {name:<24} {'running' if p['alive'] else 'DOWN'} (pid {p['pid']})")
        for what, label in (("kubelets", "kubelet"), ("kube_proxies", "kube-proxy")):
            for n, p in kd[what].items():
                print(f"  {label + ' ' + n:<24} {'running' if p['alive'] else 'DOWN'} (pid {p['pid']})")
        ok = all(p["alive"] for p in kd["processes"].values()) and all(
            p["alive"] for w in ("kubelets", "kube_proxies") for p in kd[w].values())
        return rc if ok else 1

    def kubectl_exec(self, args: Sequence[str]) -> int:
        self.check_host()
        self.require_state()
        self.load_kstate()
        argv = self.kubectl_argv(list(args))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvp(argv[0], argv)
        return 127  # not reached

    # ------------------------------------------------------------------------------ restart / down
    def restart(self, what: str, node: str | None = None) -> int:
        self.load_kstate()
        if what in ("agent", "ovs", "controller"):
            return super().restart(what, node)
        if what == "apiserver":
            return self.restart_apiserver(node)
        raise LabError(f"restart {what}: expected agent, ovs, controller or apiserver")

    def restart_apiserver(self, node: str | None = None) -> int:
        """SIGKILL kube-apiserver and start it again on the same etcd (a crash and a restart); its
        clients (controller-manager, scheduler, kubelets, kube-proxies, pyantrea's informers) are
        left alone: they reconnect and resume their watches from their resourceVersions."""
        import signal

        if node:
            raise LabError("`lab restart apiserver` takes no node")
        self.check_host()
        with self.paths.locked():
            self.require_state()
            cp = self.control_plane()
            old = self._alive("kube-apiserver")
            if old is not None:
                old.kill(signal.SIGKILL)
                self.say(f"kube-apiserver: killed (pid {old.pid})")
            cp.procs.pop("kube-apiserver", None)
            ref = cp.launch("kube-apiserver")
            self.k["procs"]["kube-apiserver"] = ref.to_json()
            self.save_k()
            t0 = time.monotonic()
            cp.wait_up("kube-apiserver")
            self.say(f"kube-apiserver: started (pid {ref.pid}), ready in {time.monotonic() - t0:.1f} s")
        return 0

    def reconcile_pods(self, cluster: Any) -> list[str]:
        return []  # the kubelets own the Pods in this mode

    def current_cluster(self) -> Any:
        """The cluster as the controller's informers hold it."""
        from pyantrea.controller.store import cluster_of
        from pyantrea.k8s.informer import decode

        code, ans = request_json(self.paths.controller_sock, "GET", "/v1/objects", timeout=30)
        if code != 200 or not isinstance(ans, dict):
            raise LabError(f"controller {self.paths.controller_sock}: HTTP {code}: {ans}")
        return cluster_of([decode(d) for d in ans.get("items") or []], self.agent_config())

    def down(self) -> int:
        self.check_host()
        with self.paths.locked():
            self.load_state()
            self.load_kstate()
            procs: list[tuple[str, ProcRef | None]] = []
            for n, d in self.k.get("kubelets", {}).items():
                procs.append((f"kubelet {n}", ProcRef.from_json(d)))
            for f in sorted((self.paths.root / "nodes").glob("*/kubelet.pid")):
                procs.append((f"kubelet {f.parent.name}", ProcRef.from_pidfile(f, "pyantrea.lab.kubelet_k8s")))
            for n, d in self.k.get("kube_proxies", {}).items():
                procs.append((f"kube-proxy {n}", ProcRef.from_json(d)))
            for f in sorted((self.paths.root / "nodes").glob("*/kube-proxy.pid")):
                procs.append((f"kube-proxy {f.parent.name}", ProcRef.from_pidfile(f, "kube-proxy")))
            for name in ("kube-scheduler", "kube-controller-manager"):
                procs.append((name, ProcRef.from_json(self.k.get("procs", {}).get(name))))
                procs.append((name, ProcRef.from_pidfile(self.kdir / f"{name}.pid", name)))
            stuck = stop_all(procs, grace=2.0)
            self.say("kubelets, kube-proxies, kube-controller-manager, kube-scheduler: stopped")
            for name in ("kube-apiserver", "etcd"):  # the API server before its store (both are discarded)
                stuck += stop_all([(name, ProcRef.from_json(self.k.get("procs", {}).get(name))),
                                   (name, ProcRef.from_pidfile(self.kdir / f"{name}.pid", str(self.kdir)))], grace=1.0)
            self.say("kube-apiserver, etcd: stopped")
            if stuck:
                raise LabError(f"still running after SIGKILL: {', '.join(stuck)}; nothing else was removed "
                               "(run `pyantrea lab down` again)")
        return super().down()


def _waiting(pod: dict[str, Any]) -> str:
    """What the kubelet said of a container that waits with a message ("" if none does)."""
    for c in (pod.get("status") or {}).get("containerStatuses") or []:
        w = (c.get("state") or {}).get("waiting") or {}
        if w.get("message"):
            return f"{w.get('reason')}: {w['message']}"
    return ""


def _ready(pod: dict[str, Any]) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def kubeconfig_path(paths: LabPaths | None = None) -> Path:
    p = paths or LabPaths()
    if not is_kubernetes_lab(p):
        raise LabError(f"no Kubernetes lab at {p.root} (`pyantrea lab up --kubernetes`)")
    return p.root / "kubernetes" / "kubeconfig" / "admin.kubeconfig"
