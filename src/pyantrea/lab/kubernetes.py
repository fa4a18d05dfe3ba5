"""Kubernetes' own control plane for the lab (`pyantrea lab up --kubernetes`) and for tests.

The programs are those `scripts/build-kubernetes.sh` builds from the Go module pinned in
``build/kubernetes/go.mod`` (`bin_dir`): etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kube-proxy and kubectl. Nothing here needs root: `ControlPlane` starts etcd and
kube-apiserver (and, when asked, the controller manager and the scheduler) with certificates made by
`openssl` into a directory of its own, on the addresses it is given (127.0.0.1 in the tests; inside
the master's network namespace in the lab), and stops them by pid.

Identities (client certificates signed by the lab's CA; authorization Node,RBAC):

=========================  ==============================================  ===========================
who                        subject (CN / O)                                 allowed by
=========================  ==============================================  ===========================
admin (kubectl)            pyantrea-admin / system:masters                  everything
kube-controller-manager    system:kube-controller-manager                   its bootstrap roles
kube-scheduler             system:kube-scheduler                            its bootstrap roles
kube-proxy                 system:kube-proxy                                system:node-proxier
the lab kubelet of node N  system:node:N / system:nodes                     the Node authorizer +
                                                                           NodeRestriction
pyantrea controller        pyantrea:controller                              `RBAC` below
pyantrea agents            pyantrea:agent                                   `RBAC` below
the lab's DNS (kube-dns)   pyantrea:coredns                                 `RBAC` below (CoreDNS's)
=========================  ==============================================  ===========================
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyantrea.errors import PyantreaError
from pyantrea.lab.procs import ProcRef, start_detached, stop_all

__all__ = [
    "CLUSTER_CIDR",
    "CONTROLLERS",
    "CRD",
    "PROGRAMS",
    "RBAC",
    "SERVICE_CIDR",
    "ControlPlane",
    "KubeError",
    "PKI",
    "bin_dir",
    "free_ports",
    "k8s_version",
    "missing_programs",
    "write_kubeconfig",
]

PROGRAMS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl")
SERVICE_CIDR = "10.96.0.0/12"
CLUSTER_CIDR = "10.222.0.0/16"
NODE_CIDR_MASK = 24
API_PORT = 6443
# node-lifecycle-controller too: the API server taints every new Node not-ready (TaintNodesByCondition)
# and a node may not change its own taints (NodeRestriction); this controller lifts the taint once the
# kubelet reports Ready, and puts it back when its Lease is not renewed.
CONTROLLERS = ("node-ipam-controller", "endpoints-controller", "endpointslice-controller", "replicaset-controller",
               "deployment-controller", "serviceaccount-controller", "serviceaccount-token-controller",
               "namespace-controller", "garbage-collector-controller", "node-lifecycle-controller")
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_VERSION = "1.37.2"
SRC_TREE = Path(__file__).resolve().parents[3]


class KubeError(PyantreaError):
    """The Kubernetes control plane could not be started or reached; the message says what and where."""


# ------------------------------------------------------------------------------------ programs


def k8s_version(tree: Path = SRC_TREE) -> str:
    """The pinned Kubernetes version (``1.37.2``) of ``build/kubernetes/go.mod``."""
    try:
        for line in (tree / "build" / "kubernetes" / "go.mod").read_text().splitlines():
            f = line.split()
            if len(f) == 3 and f[0] == "require" and f[1] == "k8s.io/kubernetes":
                return f[2].lstrip("v")
    except OSError:
        pass
    return DEFAULT_VERSION


def bin_dir() -> Path:
    """Where the programs are: ``PYANTREA_K8S_BIN``, else the build cache of the pinned version
    (``${PYANTREA_K8S_CACHE:-~/.cache/pyantrea/kubernetes}/<version>/bin``)."""
    explicit = os.environ.get("PYANTREA_K8S_BIN")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("PYANTREA_K8S_CACHE") or str(Path.home() / ".cache" / "pyantrea" / "kubernetes")
    return Path(cache) / k8s_version() / "bin"


def missing_programs(bdir: Path | None = None, programs: Iterable[str] = PROGRAMS) -> list[str]:
    d = bdir or bin_dir()
    return [p for p in programs if not os.access(d / p, os.X_OK)]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` TCP ports unused right now on ``host`` (the kernel's choice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ------------------------------------------------------------------------------------ certificates


def _openssl(args: Sequence[str], cwd: Path) -> None:
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise KubeError(f"openssl {' '.join(args)}: {p.stderr.strip() or p.stdout.strip()}")


@dataclass
class PKI:
    """The lab's certificates in ``dir``: ``ca``, the API server's serving certificate, one client
    certificate per identity, the ServiceAccount signing key pair (EC P-256 keys: fast to make)."""

    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def _key(self, name: str) -> None:
        _openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key"],
                 self.dir)

    def make_ca(self, days: int = 30) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.ca.exists() and self.key("ca").exists():
            return
        self._key("ca")
        _openssl(["req", "-x509", "-new", "-key", "ca.key", "-days", str(days), "-subj", "/CN=pyantrea-lab-ca",
                  "-out", "ca.crt"], self.dir)

    def issue(self, name: str, cn: str, org: str | None = None, *, server: bool = False,
              ips: Sequence[str] = (), dns: Sequence[str] = (), days: int = 30) -> None:
        """``name.crt`` / ``name.key``: a client certificate (``server``: a serving one with SANs)."""
        if self.cert(name).exists() and self.key(name).exists():
            return
        self._key(name)
        subj = f"/CN={cn}" + (f"/O={org}" if org else "")
        ext = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
               f"extendedKeyUsage={'serverAuth' if server else 'clientAuth'}"]
        sans = [f"IP:{i}" for i in ips] + [f"DNS:{d}" for d in dns]
        if sans:
            ext.append("subjectAltName=" + ",".join(sans))
        (self.dir / f"{name}.ext").write_text("\n".join(ext) + "\n")
        _openssl(["req", "-new", "-key", f"{name}.key", "-subj", subj, "-out", f"{name}.csr"], self.dir)
        _openssl(["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                  "-days", str(days), "-extfile", f"{name}.ext", "-out", f"{name}.crt"], self.dir)
        for tmp in (f"{name}.csr", f"{name}.ext"):
            (self.dir / tmp).unlink(missing_ok=True)

    def make_sa_keys(self) -> None:
        if self.sa_key.exists() and self.sa_pub.exists():
            return
        self._key("sa")
        _openssl(["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"], self.dir)


def write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str = "user") -> Path:
    """A kubeconfig with one cluster, one client-certificate user and one context."""
    doc = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "pyantrea-lab", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "pyantrea-lab", "context": {"cluster": "pyantrea-lab", "user": user}}],
        "current-context": "pyantrea-lab",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")  # JSON is YAML
    return path


# ------------------------------------------------------------------------------------ RBAC, CRD

# pyantrea's components read what Antrea's read: the controller Namespaces, Nodes, Pods and
# NetworkPolicies (and Services, Endpoints, NodeInterfaces, which it serves to pyantrea's tools); an
# agent Nodes, Pods, NodeInterfaces, and Services and Endpoints (AntreaProxy). Read only.
RBAC: list[dict[str, Any]] = [
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "pyantrea-controller"},
     "rules": [{"apiGroups": [""], "resources": ["namespaces", "nodes", "pods", "services", "endpoints"],
                "verbs": ["get", "list", "watch"]},
               {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
                "verbs": ["get", "list", "watch"]},
               {"apiGroups": ["pyantrea.io"], "resources": ["nodeinterfaces"], "verbs": ["get", "list", "watch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "pyantrea-controller"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pyantrea-controller"},
     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "pyantrea:controller"}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "pyantrea-agent"},
     "rules": [{"apiGroups": [""], "resources": ["nodes", "pods", "services", "endpoints"],
                "verbs": ["get", "list", "watch"]},
               {"apiGroups": ["pyantrea.io"], "resources": ["nodeinterfaces"], "verbs": ["get", "list", "watch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "pyantrea-agent"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pyantrea-agent"},
     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "pyantrea:agent"}]},
    # the lab's DNS (the kube-dns Pods' workload) reads what CoreDNS's system:coredns role reads
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "pyantrea-coredns"},
     "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "pyantrea-coredns"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pyantrea-coredns"},
     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "pyantrea:coredns"}]},
]

_IF = {"type": "object", "properties": {"name": {"type": "string"}, "ofport": {"type": "integer"},
                                         "mac": {"type": "string"}}}
_POD_IF = {"type": "object", "required": ["namespace", "name"],
           "properties": {"namespace": {"type": "string"}, "name": {"type": "string"},
                          "interface": {"type": "string"}, "ofport": {"type": "integer", "minimum": 1},
                          "mac": {"type": "string"}}}
CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "nodeinterfaces.pyantrea.io"},
    "spec": {
        "group": "pyantrea.io", "scope": "Cluster",
        "names": {"plural": "nodeinterfaces", "singular": "nodeinterfaces", "kind": "NodeInterfaces",
                  "listKind": "NodeInterfacesList", "shortNames": ["nif"]},
        "versions": [{
            "name": "v1alpha1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                "type": "object",
                "properties": {"gateway": _IF, "tunnel": _IF, "pods": {"type": "array", "items": _POD_IF}}}}}},
        }],
    },
}


# ------------------------------------------------------------------------------------ HTTPS probes


def https_get(host: str, port: int, path: str, pki: PKI | None = None, client: str = "admin",
              timeout: float = 3.0, netns_run: Callable[[list[str]], tuple[int, str]] | None = None) -> tuple[int, str]:
    """GET over TLS (the lab's CA; client certificate ``client``, if any). ``netns_run``: do it with
    `curl` through that runner instead (an address inside another network namespace)."""
    if netns_run is not None:
        argv = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", str(int(max(1, timeout)))]
        if pki is not None:
            argv += ["--cacert", str(pki.ca), "--cert", str(pki.cert(client)), "--key", str(pki.key(client))]
        else:
            argv += ["-k"]
        rc, out = netns_run([*argv, f"https://{host}:{port}{path}"])
        body, _, code = out.rpartition("\n")
        return (int(code) if code.strip().isdigit() else 0), body
    if pki is not None:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.load_cert_chain(str(pki.cert(client)), str(pki.key(client)))
    else:
        ctx = ssl._create_unverified_context()
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def _tail(path: Path, n: int = 12) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"    (no log at {path})"
    return "\n".join(f"    {ln}" for ln in lines[-n:]) or f"    (empty log {path})"


# ------------------------------------------------------------------------------------ the control plane


@dataclass
class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager, kube-scheduler) in ``dir``.

    ``bind``: the API server's address (``0.0.0.0`` in the lab master's namespace, where it then
    serves on the node IP and 127.0.0.1); ``advertise``: the address in the ``kubernetes`` Service's
    Endpoints; ``sans``: more IPs for its certificate. ``exec_argv``: wraps every argv (``ip netns
    exec NS``); ``netns_run``: runs a probe where the API server is (None: here)."""

    dir: Path
    bind: str = "127.0.0.1"
    advertise: str = "127.0.0.1"
    api_port: int = 0
    etcd_ports: tuple[int, int] = (0, 0)
    kcm_port: int = 0
    scheduler_port: int = 0
    sans: tuple[str, ...] = ()
    exec_argv: Callable[[list[str]], list[str]] = field(default=lambda a: a)
    netns_run: Callable[[list[str]], tuple[int, str]] | None = None
    bdir: Path = field(default_factory=bin_dir)
    reconcile_endpoints: bool = False  # the kubernetes Service's Endpoints (lease reconciler)
    apiserver_args: tuple[str, ...] = ()  # more flags (tests: --watch-cache-sizes=namespaces#0)
    procs: dict[str, ProcRef] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dir = Path(self.dir)
        self.pki = PKI(self.dir / "pki")
        if not self.api_port or not all(self.etcd_ports) or not self.kcm_port or not self.scheduler_port:
            a, e1, e2, k, s = free_ports(5)
            self.api_port = self.api_port or a
            if not all(self.etcd_ports):
                self.etcd_ports = (e1, e2)
            self.kcm_port = self.kcm_port or k
            self.scheduler_port = self.scheduler_port or s

    # --------------------------------------------------------------------- files
    @property
    def local_server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def server(self) -> str:
        """The URL clients elsewhere use (the advertised address)."""
        return f"https://{self.advertise}:{self.api_port}"

    def kubeconfig(self, name: str) -> Path:
        return self.dir / "kubeconfig" / f"{name}.kubeconfig"

    def log(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    def make_pki(self, clients: Mapping[str, tuple[str, str | None]] = {}) -> None:
        """The CA, the serving certificate, the ServiceAccount keys, the clients (name -> (CN, O)),
        and a kubeconfig for each client (`kubeconfig`; the local ones talk to 127.0.0.1)."""
        p = self.pki
        p.make_ca()
        ips = ["127.0.0.1", str(ipaddress.IPv4Network(SERVICE_CIDR)[1]), *self.sans]
        if self.advertise not in ips:
            ips.append(self.advertise)
        p.issue("apiserver", "kube-apiserver", server=True, ips=ips,
                dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                     "kubernetes.default.svc.cluster.local"])
        p.make_sa_keys()
        base = {"admin": ("pyantrea-admin", "system:masters"),
                "kube-controller-manager": ("system:kube-controller-manager", None),
                "kube-scheduler": ("system:kube-scheduler", None)}
        for name, (cn, org) in {**base, **clients}.items():
            p.issue(name, cn, org)
        for name in ("admin", "kube-controller-manager", "kube-scheduler"):
            write_kubeconfig(self.kubeconfig(name), self.local_server, p.ca, p.cert(name), p.key(name), name)

    def client_kubeconfig(self, name: str, server: str | None = None) -> Path:
        """The kubeconfig of client ``name`` for ``server`` (default: the advertised address)."""
        return write_kubeconfig(self.kubeconfig(name), server or self.server(), self.pki.ca, self.pki.cert(name),
                                self.pki.key(name), name)

    # --------------------------------------------------------------------- argv
    def etcd_argv(self) -> list[str]:
        c, peer = self.etcd_ports
        return [str(self.bdir / "etcd"), "--name", "lab", "--data-dir", str(self.dir / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{c}", "--advertise-client-urls", f"http://127.0.0.1:{c}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"lab=http://127.0.0.1:{peer}", "--initial-cluster-state", "new",
                "--listen-metrics-urls", "", "--log-level", "warn", "--quota-backend-bytes", str(1 << 30)]

    def apiserver_argv(self) -> list[str]:
        p = self.pki
        return [str(self.bdir / "kube-apiserver"),
                "--etcd-servers", f"http://127.0.0.1:{self.etcd_ports[0]}",
                "--bind-address", self.bind, "--advertise-address", self.advertise,
                "--secure-port", str(self.api_port), "--cert-dir", str(self.dir / "apiserver"),
                "--tls-cert-file", str(p.cert("apiserver")), "--tls-private-key-file", str(p.key("apiserver")),
                "--client-ca-file", str(p.ca),
                "--service-account-issuer", SA_ISSUER, "--service-account-key-file", str(p.sa_pub),
                "--service-account-signing-key-file", str(p.sa_key),
                "--service-cluster-ip-range", SERVICE_CIDR,
                "--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
                # as kubeadm's: a CNI's agent (build/yamls/pyantrea.yml's DaemonSet) runs privileged
                "--allow-privileged=true",
                "--endpoint-reconciler-type", "lease" if self.reconcile_endpoints else "none",
                "--event-ttl", "1h", *self.apiserver_args]

    def kcm_argv(self) -> list[str]:
        kc = str(self.kubeconfig("kube-controller-manager"))
        p = self.pki
        return [str(self.bdir / "kube-controller-manager"), "--kubeconfig", kc,
                "--authentication-kubeconfig", kc, "--authorization-kubeconfig", kc,
                "--bind-address", "127.0.0.1", "--secure-port", str(self.kcm_port),
                "--cert-dir", str(self.dir / "controller-manager"),
                "--root-ca-file", str(p.ca), "--service-account-private-key-file", str(p.sa_key),
                "--use-service-account-credentials",
                "--service-cluster-ip-range", SERVICE_CIDR,
                "--allocate-node-cidrs", "--cluster-cidr", CLUSTER_CIDR, "--node-cidr-mask-size", str(NODE_CIDR_MASK),
                "--controllers", ",".join(CONTROLLERS), "--leader-elect=false",
                "--concurrent-endpoint-syncs", "10", "--concurrent-service-endpoint-syncs", "10",
                "--endpoint-updates-batch-period", "0s", "--endpointslice-updates-batch-period", "0s"]

    def scheduler_argv(self) -> list[str]:
        kc = str(self.kubeconfig("kube-scheduler"))
        return [str(self.bdir / "kube-scheduler"), "--kubeconfig", kc,
                "--authentication-kubeconfig", kc, "--authorization-kubeconfig", kc,
                "--bind-address", "127.0.0.1", "--secure-port", str(self.scheduler_port),
                "--leader-elect=false"]

    # --------------------------------------------------------------------- processes
    def _start(self, name: str, argv: list[str]) -> ProcRef:
        self.dir.mkdir(parents=True, exist_ok=True)
        ref = start_detached(self.exec_argv(argv), self.log(name), pidfile=self.dir / f"{name}.pid")
        self.procs[name] = ref
        return ref

    def _wait(self, name: str, what: str, timeout: float, probe: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        ref = self.procs[name]
        while not probe():
            if not ref.alive():
                raise KubeError(f"{name} exited; log {self.log(name)}:\n"
                                f"{_tail(self.log(name))}")
            if time.monotonic() > deadline:
                raise KubeError(f"{name}: {what} not reached after {timeout:g} s; log {self.log(name)}:\n"
                                f"{_tail(self.log(name))}")
            time.sleep(0.1)

    def _probe(self, host: str, port: int, path: str, pki: PKI | None) -> bool:
        try:
            code, _ = https_get(host, port, path, pki, netns_run=self.netns_run)
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return False
        return code == 200

    def _etcd_healthy(self) -> bool:
        c = self.etcd_ports[0]
        if self.netns_run is not None:
            rc, out = self.netns_run(["curl", "-fsS", "--max-time", "2", f"http://127.0.0.1:{c}/health"])
            return rc == 0 and '"true"' in out
        try:
            conn = http.client.HTTPConnection("127.0.0.1", c, timeout=2)
            conn.request("GET", "/health")
            r = conn.getresponse()
            return r.status == 200 and b'"true"' in r.read()
        except OSError:
            return False

    def argv(self, name: str) -> list[str]:
        return {"etcd": self.etcd_argv, "kube-apiserver": self.apiserver_argv,
                "kube-controller-manager": self.kcm_argv, "kube-scheduler": self.scheduler_argv}[name]()

    def launch(self, name: str) -> ProcRef:
        """Start ``name`` (etcd, kube-apiserver, kube-controller-manager, kube-scheduler); `wait_up`
        waits until it is healthy."""
        return self._start(name, self.argv(name))

    def wait_up(self, name: str, timeout: float | None = None) -> None:
        probes: dict[str, tuple[str, float, Callable[[], bool]]] = {
            "etcd": ("/health", 30.0, self._etcd_healthy),
            "kube-apiserver": ("/readyz", 90.0, lambda: self._probe("127.0.0.1", self.api_port, "/readyz", self.pki)),
            "kube-controller-manager": ("/healthz", 60.0, lambda: self._probe("127.0.0.1", self.kcm_port, "/healthz",
                                                                              None)),
            "kube-scheduler": ("/healthz", 60.0, lambda: self._probe("127.0.0.1", self.scheduler_port, "/healthz",
                                                                     None)),
        }
        what, default, probe = probes[name]
        self._wait(name, what, timeout or default, probe)

    def start_etcd(self, timeout: float = 30.0) -> ProcRef:
        ref = self.launch("etcd")
        self.wait_up("etcd", timeout)
        return ref

    def start_apiserver(self, timeout: float = 90.0) -> ProcRef:
        ref = self.launch("kube-apiserver")
        self.wait_up("kube-apiserver", timeout)
        return ref

    def start_controller_manager(self, timeout: float = 60.0) -> ProcRef:
        ref = self.launch("kube-controller-manager")
        self.wait_up("kube-controller-manager", timeout)
        return ref

    def start_scheduler(self, timeout: float = 60.0) -> ProcRef:
        ref = self.launch("kube-scheduler")
        self.wait_up("kube-scheduler", timeout)
        return ref

    def ready(self) -> bool:
        return self._probe("127.0.0.1", self.api_port, "/readyz", self.pki)

    def stop(self, names: Sequence[str] | None = None) -> list[str]:
        """Stop the given processes (default: all, the API server's clients first). Returns those
        still there after SIGKILL."""
        order = ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
        want = [n for n in order if n in self.procs and (names is None or n in names)]
        left: list[str] = []
        for n in want:  # one at a time: the API server goes before etcd
            left += stop_all([(n, self.procs.pop(n))], grace=5.0)
        return left

    def state(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "bind": self.bind, "advertise": self.advertise, "api_port": self.api_port,
                "etcd_ports": list(self.etcd_ports), "kcm_port": self.kcm_port, "scheduler_port": self.scheduler_port,
                "procs": {k: v.to_json() for k, v in self.procs.items()}}


# ------------------------------------------------------------------------------------ manifests for the API

LAB_IMAGE = "pyantrea.io/lab-workload"  # containers without an image (the seed's kube-system Pods) get this one
API_OWNED = {("Service", "default", "kubernetes"), ("Endpoints", "default", "kubernetes")}
"""Objects kube-apiserver makes itself (the ``kubernetes`` Service and, by its endpoint reconciler,
its Endpoints): a folder's copies are not created."""
STAGES = (("CustomResourceDefinition",), ("Namespace",), ("Node",), ("NodeInterfaces",), ("Service", "Endpoints"),
          ("Pod",), ("NetworkPolicy",))
"""The order `lab up --kubernetes` creates a folder's objects in (what others refer to first)."""


def flatten(docs: Iterable[Any]) -> list[dict[str, Any]]:
    """Documents with every ``kind: List`` replaced by its items (empty documents dropped)."""
    out: list[dict[str, Any]] = []
    for d in docs:
        if not isinstance(d, dict):
            continue
        if str(d.get("kind", "")).endswith("List") and isinstance(d.get("items"), list):
            out += [i for i in d["items"] if isinstance(i, dict)]
        else:
            out.append(d)
    return out


def _key(d: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = d.get("metadata") or {}
    kind = str(d.get("kind", ""))
    ns = "" if kind in ("Namespace", "Node", "NodeInterfaces", "CustomResourceDefinition") else \
        str(meta.get("namespace") or "default")
    return kind, ns, str(meta.get("name", ""))


def for_api(docs: Iterable[Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """A folder's (or a file's) documents as kube-apiserver takes them, and a note for each change:

    * a Pod's ``status`` is the kubelet's (the API server drops it on create): its ``status.podIP``
      becomes the annotation ``pyantrea.io/requested-ip`` (the lab kubelet passes it to the CNI as
      ``IP=``), the rest is dropped; a container without an image gets `LAB_IMAGE`;
    * the API server's own objects (`API_OWNED`) and the Endpoints of Services with a selector (the
      endpoints controller writes those) are left out.
    Documents are copied; the input is not changed."""
    import copy

    from pyantrea.apis.k8s import REQUESTED_IP

    flat = [copy.deepcopy(d) for d in flatten(docs)]
    selector_svcs = {_key(d)[1:] for d in flat if d.get("kind") == "Service" and (d.get("spec") or {}).get("selector")}
    out: list[dict[str, Any]] = []
    notes: list[str] = []
    for d in flat:
        k = _key(d)
        what = f"{k[0]} {k[1] + '/' if k[1] else ''}{k[2]}"
        if k in API_OWNED:
            notes.append(f"{what}: kube-apiserver's own, not created")
            continue
        if k[0] == "Endpoints" and k[1:] in selector_svcs:
            notes.append(f"{what}: written by the endpoints controller, not created")
            continue
        if k[0] == "Pod":
            status = d.pop("status", None)
            spec: dict[str, Any] = d["spec"] if isinstance(d.get("spec"), dict) else {}
            ip = status.get("podIP") if isinstance(status, dict) else None
            if ip and not spec.get("hostNetwork"):
                meta = d.setdefault("metadata", {})
                ann: dict[str, Any] = meta["annotations"] if isinstance(meta.get("annotations"), dict) else {}
                meta["annotations"] = {**ann, REQUESTED_IP: str(ip)}
            for c in spec.get("containers") or []:
                if isinstance(c, dict) and not c.get("image"):
                    c["image"] = LAB_IMAGE
        out.append(d)
    return out, notes


def staged(docs: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """`docs` in `STAGES` (kinds not named there last, in one stage), empty stages dropped."""
    stages: list[list[dict[str, Any]]] = [[] for _ in range(len(STAGES) + 1)]
    for d in docs:
        kind = str(d.get("kind", ""))
        i = next((n for n, s in enumerate(STAGES) if kind in s), len(STAGES))
        stages[i].append(d)
    return [s for s in stages if s]
