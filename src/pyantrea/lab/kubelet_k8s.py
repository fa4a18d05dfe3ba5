"""The lab kubelet of a node in Kubernetes mode: ``python -m pyantrea.lab.kubelet_k8s --node N ...``.

One process per node, in the node's network namespace, talking to kube-apiserver with the node's
own identity (``system:node:N``, group ``system:nodes``: the Node authorizer and NodeRestriction
decide what it may do, as for a real kubelet). It does what kubelet does, for the lab:

* **Node.** Registers its Node (created if missing; the lab creates the folder's Nodes first, with
  their pinned podCIDRs) and keeps its status: addresses (InternalIP, Hostname), capacity and
  allocatable, nodeInfo, and the Ready condition: True once a CNI network configuration is in the
  node's CNI config dir (the agent's conflist, as Antrea's install-cni writes it), else False with
  ``NetworkPluginNotReady``. Renews its Lease in ``kube-node-lease`` every 10 s.
* **Pods bound to it** (list + watch with ``spec.nodeName=N``): for each, a network namespace
  (``<prefix><ns>-<name>``), CNI ADD through the conflist's plugins in order (prevResult chained;
  ``IP=`` from the annotation ``pyantrea.io/requested-ip``), the Pod's resolv.conf, the workload
  (`pyantrea.lab.workload`: HTTP on 80, DNS for ``k8s-app=kube-dns`` Pods from a zone this kubelet
  writes from the Services and Pods it watches), then the Pod's status through the status
  subresource: podIP(s), hostIP(s), phase Running, the conditions and one containerStatus per
  container (so ``kubectl get pods`` shows READY n/n). hostNetwork Pods: a workload in the node's
  namespace on their first TCP containerPort, or no process when they have none; Running with the
  node's IP either way.
* **Failures** as kubelet shows them: a failed CNI ADD is an event ``FailedCreatePodSandBox`` and
  the Pod stays Pending (ContainersReady False, the containers waiting in ``ContainerCreating``),
  retried with back-off; a workload that exits is restarted (restartCount, event ``BackOff``).
* **Deletion:** a Pod with a deletionTimestamp (or gone): the workload is stopped, CNI DEL (the
  plugins in reverse order), the namespace and its /etc/netns entry removed; then the Pod is
  finalised (deleted with grace period 0, uid precondition).

State (what runs, to adopt it after a restart): ``<lab>/nodes/N/kubelet/pods.json``; each Pod's
workload log and pidfile in ``<lab>/pods/<ns>_<name>/`` (as the embedded lab's, so `lab down`
finds them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyantrea.apis.k8s import REQUESTED_IP
from pyantrea.errors import PyantreaError
from pyantrea.lab import kubelet as podlib
from pyantrea.lab import netns
from pyantrea.lab.procs import ProcRef

__all__ = ["CNIConfig", "Kubelet", "load_conflist", "main"]

LEASE_SECONDS = 40
RENEW_SECONDS = 10.0
STATUS_SECONDS = 60.0
WORKLOAD_TIMEOUT = 15.0
DNS_LABEL = ("k8s-app", "kube-dns")
VERSION = "v1.37.2"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log(node: str, msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} kubelet[{node}]: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ CNI


@dataclass(frozen=True)
class CNIConfig:
    """A CNI network configuration list (``*.conflist``) or a single ``*.conf``."""

    path: Path
    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]


def load_conflist(conf_dir: Path) -> CNIConfig | None:
    """The first configuration of ``conf_dir`` in lexical order (``*.conflist``, ``*.conf``,
    ``*.json``), as kubelet's CNI code picks it; None if there is none (the network is not ready)."""
    try:
        files = sorted(p for p in conf_dir.iterdir() if p.suffix in (".conflist", ".conf", ".json"))
    except OSError:
        return None
    for f in files:
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(d, dict):
            continue
        if f.suffix == ".conflist":
            plugins = [p for p in d.get("plugins") or [] if isinstance(p, dict) and p.get("type")]
        else:
            plugins = [{k: v for k, v in d.items() if k not in ("cniVersion", "name")}] if d.get("type") else []
        if plugins:
            return CNIConfig(f, str(d.get("name", "")), str(d.get("cniVersion", "1.0.0")), tuple(plugins))
    return None


def _find_plugin(typ: str, cni_path: str) -> str | None:
    for d in cni_path.split(":"):
        p = Path(d) / typ
        if d and p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


@dataclass
class CNIOutcome:
    ok: bool
    result: dict[str, Any] | None
    error: str
    seconds: float


def run_chain(command: str, conf: CNIConfig, env: dict[str, str], cni_path: str,
              prev: dict[str, Any] | None = None, timeout: float = 60.0) -> CNIOutcome:
    """Run the configuration's plugins as libcni does: ADD in order, each given the previous one's
    result as ``prevResult``; DEL in reverse order, each given ``prev`` (the ADD's result)."""
    t0 = time.monotonic()
    plugins = list(conf.plugins) if command != "DEL" else list(reversed(conf.plugins))
    result = prev if command == "DEL" else None
    errors: list[str] = []
    for p in plugins:
        exe = _find_plugin(str(p["type"]), cni_path)
        if exe is None:
            msg = f"failed to find plugin {p['type']!r} in path [{cni_path}]"
            if command == "DEL":
                errors.append(msg)
                continue
            return CNIOutcome(False, None, msg, time.monotonic() - t0)
        netconf = {"cniVersion": conf.cni_version, "name": conf.name, **p}
        if result is not None:
            netconf["prevResult"] = result
        full = {**os.environ, **env, "CNI_COMMAND": command, "CNI_PATH": cni_path}
        try:
            r = subprocess.run([exe], input=json.dumps(netconf), capture_output=True, text=True, env=full,
                               timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            msg = f"plugin type={p['type']!r} {command}: timed out after {timeout:g} s"
            if command == "DEL":
                errors.append(msg)
                continue
            return CNIOutcome(False, None, msg, time.monotonic() - t0)
        out: Any = None
        try:
            out = json.loads(r.stdout) if r.stdout.strip() else None
        except ValueError:
            out = None
        if r.returncode != 0:
            if isinstance(out, dict) and ("code" in out or "msg" in out):
                detail = f"code {out.get('code')}: {out.get('msg')}"
                if out.get("details"):
                    detail += f" ({out.get('details')})"
            else:
                said = (r.stderr.strip() or r.stdout.strip() or "(no output)").splitlines()
                detail = f"exit {r.returncode}: {' / '.join(said[-3:])}"
            # libcni's words, as kubelet's events carry them
            msg = f'plugin type="{p["type"]}" name="{conf.name}" failed ({command.lower()}): {detail}'
            if command == "DEL":
                errors.append(msg)
                continue
            return CNIOutcome(False, None, msg, time.monotonic() - t0)
        if command == "ADD" and isinstance(out, dict):
            result = out
    if errors:
        return CNIOutcome(False, result, "; ".join(errors), time.monotonic() - t0)
    return CNIOutcome(True, result, "", time.monotonic() - t0)


# ------------------------------------------------------------------------------------ Pods


@dataclass
class PodRecord:
    """A Pod this kubelet runs."""

    namespace: str
    name: str
    uid: str
    netns: str = ""  # "" for hostNetwork
    container_id: str = ""
    ip: str = ""
    host_network: bool = False
    dns: bool = False
    workload: dict[str, Any] | None = None  # ProcRef json
    cni_result: dict[str, Any] | None = None
    restarts: int = 0
    started: str = ""
    status_posted: bool = False
    interface: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def ref(self) -> ProcRef | None:
        return ProcRef.from_json(self.workload)


def _meta(doc: dict[str, Any]) -> dict[str, Any]:
    m = doc.get("metadata")
    return m if isinstance(m, dict) else {}


def _spec(doc: dict[str, Any]) -> dict[str, Any]:
    s = doc.get("spec")
    return s if isinstance(s, dict) else {}


def pod_key(doc: dict[str, Any]) -> str:
    m = _meta(doc)
    return f"{m.get('namespace', 'default')}/{m.get('name')}"


class Kubelet:
    def __init__(self, node: str, kubeconfig: str, node_ip: str, lab_root: str, prefix: str, cni_conf_dir: str,
                 cni_path: str, cluster_dns: str, jobs: int = 4, api: Any = None, dns_kubeconfig: str | None = None):
        from kubernetes import client

        from pyantrea.k8s.kubesource import KubeSource, api_client

        self.node = node
        self.node_ip = node_ip
        self.root = Path(lab_root)
        self.prefix = netns.valid_prefix(prefix, "--prefix")
        self.cni_conf_dir = Path(cni_conf_dir)
        self.cni_path = cni_path
        self.cluster_dns = cluster_dns
        self.jobs = max(1, jobs)
        self.api = api or api_client(kubeconfig)
        self.core: Any = client.CoreV1Api(self.api)  # dict bodies throughout: Any, not the client's models
        self.coord: Any = client.CoordinationV1Api(self.api)
        self.source = KubeSource(api=self.api)
        self.dns_kubeconfig = dns_kubeconfig  # the DNS workloads' identity (a node may not list every Pod)
        self.dir = self.root / "nodes" / node / "kubelet"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file = self.dir / "pods.json"
        self.dns_dir = self.dir / "dns"
        self.stop = threading.Event()
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.desired: dict[str, dict[str, Any]] = {}  # key -> the Pod as last seen
        self.records: dict[str, PodRecord] = {}
        self.queue: set[str] = set()
        self.inflight: set[str] = set()
        self.backoff: dict[str, float] = {}
        self.network_ready = False
        self.pod_cidr = ""
        self.zone: _ZoneWriter | None = None
        self.say: Callable[[str], None] = lambda m: log(node, m)
        self._load_state()

    # --------------------------------------------------------------------- state
    def _load_state(self) -> None:
        try:
            d = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        for v in (d.get("pods") or {}).values() if isinstance(d, dict) else []:
            try:
                r = PodRecord(**v)
            except TypeError:
                continue
            self.records[r.key] = r

    def save(self) -> None:
        with self.lock:  # one writer at a time (workers save concurrently)
            data = {"node": self.node, "pods": {k: asdict(r) for k, r in sorted(self.records.items())}}
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1) + "\n")
            os.replace(tmp, self.state_file)

    # --------------------------------------------------------------------- Node, Lease
    def node_status(self) -> dict[str, Any]:
        t = now()
        ready = {"type": "Ready", "lastHeartbeatTime": t, "status": "True" if self.network_ready else "False",
                 "reason": "KubeletReady" if self.network_ready else "KubeletNotReady",
                 "message": "kubelet is posting ready status" if self.network_ready else
                 "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
                 f"message:Network plugin returns error: no CNI configuration file in {self.cni_conf_dir}"}
        conds = [{"type": c, "status": "False", "lastHeartbeatTime": t, "reason": f"KubeletHas{r}", "message": m}
                 for c, r, m in (("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory available"),
                                 ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                                 ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"))]
        cap = {"cpu": str(os.cpu_count() or 2), "memory": "4Gi", "pods": "110", "ephemeral-storage": "20Gi"}
        uname = os.uname()
        return {"addresses": [{"type": "InternalIP", "address": self.node_ip}, {"type": "Hostname", "address": self.node}],
                "capacity": cap, "allocatable": cap, "conditions": [*conds, ready],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {"machineID": uuid.uuid5(uuid.NAMESPACE_DNS, self.node).hex,
                             "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, self.node)),
                             "bootID": _boot_id(), "kernelVersion": uname.release,
                             "osImage": "pyantrea lab (network namespace)",
                             "containerRuntimeVersion": "pyantrea-lab://0.1.0", "kubeletVersion": VERSION,
                             "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}}

    def register(self) -> None:
        from kubernetes.client.exceptions import ApiException

        self.network_ready = load_conflist(self.cni_conf_dir) is not None
        try:
            node = self.core.read_node(self.node)
            self.pod_cidr = node.spec.pod_cidr or ""
        except ApiException as e:
            if e.status != 404:
                raise
            body = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node,
                                                               "kubernetes.io/os": "linux",
                                                               "kubernetes.io/arch": "amd64"}},
                    "status": self.node_status()}
            self.core.create_node(body)
            self.say(f"registered Node {self.node}")
        self.patch_node_status()

    def patch_node_status(self) -> None:
        self.core.patch_node_status(self.node, {"status": self.node_status()})

    def renew_lease(self) -> None:
        from kubernetes.client.exceptions import ApiException

        body: dict[str, Any] = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.node, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": self.node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()}}
        try:
            self.coord.patch_namespaced_lease(self.node, "kube-node-lease", {"spec": body["spec"]})
        except ApiException as e:
            if e.status != 404:
                raise
            try:
                uid = self.core.read_node(self.node).metadata.uid
                body["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": self.node,
                                                        "uid": uid}]
            except ApiException:
                pass
            self.coord.create_namespaced_lease("kube-node-lease", body)

    def heartbeat(self) -> None:
        last_status = time.monotonic()
        last_renew = 0.0
        while not self.stop.is_set():
            try:
                if time.monotonic() - last_renew >= RENEW_SECONDS:
                    self.renew_lease()
                    last_renew = time.monotonic()
                ready = load_conflist(self.cni_conf_dir) is not None
                if ready != self.network_ready or time.monotonic() - last_status >= STATUS_SECONDS:
                    if ready != self.network_ready:
                        self.say(f"network {'ready' if ready else 'NOT ready'} "
                                 f"({self.cni_conf_dir}: {'a' if ready else 'no'} CNI configuration)")
                    self.network_ready = ready
                    self.patch_node_status()
                    last_status = time.monotonic()
                    if ready:
                        with self.cond:
                            self.queue |= set(self.desired)  # Pods waiting for the network
                            self.cond.notify_all()
            except Exception as e:  # noqa: BLE001 - the API server may be restarting: keep trying
                self.say(f"heartbeat failed: {type(e).__name__}: {e}")
            # the CNI configuration is looked for every 0.1 s until there is one (Pods wait for it)
            self.stop.wait(0.1 if not self.network_ready else 1.0)

    # --------------------------------------------------------------------- events
    def event(self, doc: dict[str, Any], typ: str, reason: str, message: str) -> None:
        m = _meta(doc)
        ns = m.get("namespace", "default")
        t = now()
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{m.get('name')}.", "namespace": ns},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": m.get("name"), "namespace": ns,
                                   "uid": m.get("uid"), "resourceVersion": m.get("resourceVersion")},
                "reason": reason, "message": message, "type": typ, "count": 1,
                "firstTimestamp": t, "lastTimestamp": t,
                "source": {"component": "kubelet", "host": self.node}, "reportingComponent": "kubelet",
                "reportingInstance": self.node}
        try:
            self.core.create_namespaced_event(ns, body)
        except Exception as e:  # noqa: BLE001 - an event is best effort, as kubelet's
            self.say(f"event {reason} for {ns}/{m.get('name')}: {e}")

    # --------------------------------------------------------------------- Pod watch
    def watch_pods(self) -> None:
        from pyantrea.k8s.informer import GoneError

        rv = 0
        backoff = 0.2
        while not self.stop.is_set():
            try:
                if not rv:
                    items, rv, _ = self.source.list_objects("Pod", self.node)
                    fresh = {pod_key(d): d for d in items}
                    with self.cond:
                        gone = (set(self.desired) | set(self.records)) - set(fresh)
                        self.desired = fresh
                        self.queue |= set(fresh) | gone
                        self.cond.notify_all()
                for ev, new_rv in self.source.watch("Pod", rv, 30, self.node, ""):
                    rv = new_rv
                    if ev is None:
                        continue
                    obj = ev["object"]
                    key = pod_key(obj)
                    with self.cond:
                        if ev["type"] == "DELETED":
                            self.desired.pop(key, None)
                        else:
                            self.desired[key] = obj
                        self.queue.add(key)
                        self.cond.notify_all()
                backoff = 0.2
            except GoneError:
                rv = 0
            except Exception as e:  # noqa: BLE001 - the API server may be away: back off and list again
                self.say(f"pod watch: {type(e).__name__}: {e}")
                rv = 0
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def worker(self) -> None:
        while not self.stop.is_set():
            with self.cond:
                key = None
                while key is None and not self.stop.is_set():
                    ready = sorted(self.queue - self.inflight)
                    if ready:
                        key = ready[0]
                        self.queue.discard(key)
                        self.inflight.add(key)
                    else:
                        self.cond.wait(1.0)
            if key is None:
                return
            try:
                again = self.sync(key)
            except Exception as e:  # noqa: BLE001 - one Pod's failure must not stop the others
                self.say(f"pod {key}: sync failed: {type(e).__name__}: {e}")
                again = True
            finally:
                with self.cond:
                    self.inflight.discard(key)
                    self.cond.notify_all()
            if again:
                delay = self.backoff.get(key, 0.5)
                self.backoff[key] = min(delay * 2, 10.0)
                threading.Timer(delay, self._requeue, args=(key,)).start()
            else:
                self.backoff.pop(key, None)

    def _requeue(self, key: str) -> None:
        with self.cond:
            self.queue.add(key)
            self.cond.notify_all()

    # --------------------------------------------------------------------- one Pod
    def sync(self, key: str) -> bool:
        """Make Pod ``key`` as its object says. True: try again later."""
        with self.lock:
            doc = self.desired.get(key)
            rec = self.records.get(key)
        uid = _meta(doc).get("uid") if doc else None
        if rec is not None and (doc is None or uid != rec.uid):
            self.teardown(rec)
        if doc is None:
            return False
        meta, spec = _meta(doc), _spec(doc)
        if meta.get("deletionTimestamp"):
            rec = self.records.get(key)
            if rec is not None:
                self.teardown(rec)
            self.finalize(doc)
            return False
        phase = (doc.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return False
        if not self.network_ready and not spec.get("hostNetwork"):
            return False  # requeued when the network is ready
        rec = self.records.get(key)
        if rec is not None:
            ref = rec.ref()
            alive = ref is None if rec.workload is None else ref is not None and ref.alive()
            if (rec.host_network or netns.exists(rec.netns)) and alive:
                if not rec.status_posted:
                    self.post_running(doc, rec)
                return False
            if rec.host_network or netns.exists(rec.netns):  # the workload exited: restart it
                rec.restarts += 1
                self.event(doc, "Warning", "BackOff", "Back-off restarting failed container")
                return not self.start_workload(doc, rec)
            self.teardown(rec)  # its namespace is gone: a new sandbox
        return self.create(doc)

    def create(self, doc: dict[str, Any]) -> bool:
        meta, spec = _meta(doc), _spec(doc)
        ns, name = meta.get("namespace", "default"), str(meta.get("name"))
        host = bool(spec.get("hostNetwork"))
        labels = meta.get("labels") or {}
        rec = PodRecord(namespace=ns, name=name, uid=str(meta.get("uid")), host_network=host,
                        dns=labels.get(DNS_LABEL[0]) == DNS_LABEL[1], container_id=os.urandom(32).hex())
        if host:
            rec.ip = self.node_ip
        else:
            rec.netns = self._netns_name(ns, name)
            with self.lock:
                self.records[rec.key] = rec
            self.save()
            try:
                netns.add(rec.netns)
            except PyantreaError as e:
                self.event(doc, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}")
                self.teardown(rec)
                return True
            conf = load_conflist(self.cni_conf_dir)
            if conf is None:
                self.teardown(rec)
                return False
            requested = (meta.get("annotations") or {}).get(REQUESTED_IP)
            env = podlib.cni_env("ADD", rec.container_id, rec.netns, ns, name, requested)
            out = run_chain("ADD", conf, env, self.cni_path)
            if not out.ok or not out.result or not out.result.get("ips"):
                msg = out.error or f"CNI ADD gave no IP: {out.result}"
                self.say(f"pod {rec.key}: CNI ADD failed: {msg}")
                self.event(doc, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {msg}")
                self.post_pending(doc, "ContainerCreating", msg)
                rec.cni_result = out.result
                self.teardown(rec, cni_del=out.result is not None)
                return True
            rec.cni_result = out.result
            rec.ip = str(out.result["ips"][0]["address"]).split("/")[0]
            rec.interface = next((i.get("name", "") for i in out.result.get("interfaces", []) if not i.get("sandbox")),
                                 "")
            self.say(f"pod {rec.key}: {rec.ip} ({rec.interface}), CNI ADD {out.seconds:.2f} s")
            netns.write_etc_file(rec.netns, "resolv.conf", podlib.resolv_conf(ns, self.cluster_dns))
        with self.lock:
            self.records[rec.key] = rec
        self.save()
        return not self.start_workload(doc, rec)

    def _netns_name(self, ns: str, name: str) -> str:
        cand = netns.pod_netns_name(ns, name, self.prefix)
        mine = {r.netns for r in self.records.values()}
        if netns.exists(cand) and cand not in mine:
            cand = netns.pod_netns_fallback(ns, name, self.prefix)
        return cand

    def _workload_port(self, spec: dict[str, Any]) -> int | None:
        """A hostNetwork Pod's port: its first TCP containerPort (None: it runs no workload)."""
        for c in spec.get("containers") or []:
            for p in (c or {}).get("ports") or []:
                if (p or {}).get("protocol", "TCP") == "TCP" and p.get("containerPort"):
                    return int(p["containerPort"])
        return None

    def start_workload(self, doc: dict[str, Any], rec: PodRecord) -> bool:
        """Start the Pod's workload and wait until it listens; then its status. False: it failed."""
        spec = _spec(doc)
        d = self.root / "pods" / f"{rec.namespace}_{rec.name}"
        d.mkdir(parents=True, exist_ok=True)
        prefix = int(self.pod_cidr.split("/")[1]) if "/" in self.pod_cidr else 24
        if rec.host_network:
            port = self._workload_port(spec)
            if port is None:
                rec.workload = None
                rec.started = rec.started or now()
                self.post_running(doc, rec)
                return True
        if not self.pod_cidr:
            self._refresh_pod_cidr()
            prefix = int(self.pod_cidr.split("/")[1]) if "/" in self.pod_cidr else 24
        dns_dir = None
        if rec.dns:
            dns_dir = self.ensure_zone()
        if rec.host_network:
            ref, fd = _start_host_workload(rec, port or 80, d / "workload.log")
        else:
            ref, fd = podlib.start_workload(rec.netns, rec.name, rec.ip, prefix, d / "workload.log", dns_dir)
        (d / "workload.pid").write_text(f"{ref.pid}\n")
        rec.workload = ref.to_json()
        self.save()
        ready, _ = podlib.wait_ready({fd: rec.key}, WORKLOAD_TIMEOUT)
        if not ready:
            tail = _tail(d / "workload.log")
            self.say(f"pod {rec.key}: workload not ready: {tail}")
            self.event(doc, "Warning", "Failed", f"Error: the workload did not start: {tail}")
            ref.stop(grace=0.5)
            rec.workload = None
            self.post_pending(doc, "CrashLoopBackOff", tail, waiting=True)
            self.save()
            return False
        rec.started = rec.started or now()
        for c in spec.get("containers") or []:
            self.event(doc, "Normal", "Started", f"Started container {c.get('name')}")
        self.post_running(doc, rec)
        return True

    def _refresh_pod_cidr(self) -> None:
        try:
            self.pod_cidr = self.core.read_node(self.node).spec.pod_cidr or ""
        except Exception:  # noqa: BLE001
            pass

    # --------------------------------------------------------------------- status
    def _container_statuses(self, doc: dict[str, Any], rec: PodRecord | None, running: bool,
                            reason: str = "", message: str = "") -> list[dict[str, Any]]:
        out = []
        for c in _spec(doc).get("containers") or []:
            st: dict[str, Any] = {"name": c.get("name"), "image": c.get("image", ""), "imageID": "",
                                  "ready": running, "started": running,
                                  "restartCount": rec.restarts if rec else 0}
            if running and rec is not None:
                st["containerID"] = f"pyantrea-lab://{rec.container_id}"
                st["state"] = {"running": {"startedAt": rec.started or now()}}
            else:
                st["state"] = {"waiting": {"reason": reason or "ContainerCreating", **({"message": message[:1000]}
                                                                                         if message else {})}}
            out.append(st)
        return out

    def post_running(self, doc: dict[str, Any], rec: PodRecord) -> None:
        t = now()
        conds = [{"type": c, "status": "True", "lastProbeTime": None, "lastTransitionTime": t}
                 for c in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
        status = {"phase": "Running", "hostIP": self.node_ip, "hostIPs": [{"ip": self.node_ip}],
                  "podIP": rec.ip, "podIPs": [{"ip": rec.ip}], "startTime": rec.started or t,
                  "conditions": conds, "containerStatuses": self._container_statuses(doc, rec, True)}
        if self._patch_status(doc, status):
            rec.status_posted = True
            self.save()

    def post_pending(self, doc: dict[str, Any], reason: str, message: str, waiting: bool = False) -> None:
        t = now()
        conds = [{"type": "PodReadyToStartContainers", "status": "True" if waiting else "False", "lastTransitionTime": t},
                 {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                 {"type": "Ready", "status": "False", "lastTransitionTime": t, "reason": "ContainersNotReady",
                  "message": "containers with unready status"},
                 {"type": "ContainersReady", "status": "False", "lastTransitionTime": t, "reason": "ContainersNotReady",
                  "message": "containers with unready status"}]
        status: dict[str, Any] = {"phase": "Pending", "hostIP": self.node_ip, "hostIPs": [{"ip": self.node_ip}],
                                  "startTime": (doc.get("status") or {}).get("startTime") or t, "conditions": conds,
                                  "containerStatuses": self._container_statuses(doc, None, False, reason, message)}
        self._patch_status(doc, status)

    def _patch_status(self, doc: dict[str, Any], status: dict[str, Any]) -> bool:
        from kubernetes.client.exceptions import ApiException

        m = _meta(doc)
        try:
            self.core.patch_namespaced_pod_status(m.get("name"), m.get("namespace", "default"), {"status": status})
            return True
        except ApiException as e:
            if e.status != 404:  # gone meanwhile: its DELETED event follows
                self.say(f"pod {pod_key(doc)}: status update refused: {e.status} {e.reason}")
            return False

    # --------------------------------------------------------------------- deletion
    def teardown(self, rec: PodRecord, cni_del: bool = True) -> None:
        ref = rec.ref()
        if ref is not None:
            ref.stop(grace=1.0)
        d = self.root / "pods" / f"{rec.namespace}_{rec.name}"
        pidf = ProcRef.from_pidfile(d / "workload.pid", "pyantrea.lab.workload")
        if pidf is not None and pidf.alive():
            pidf.stop(grace=1.0)
        if not rec.host_network and rec.netns:
            conf = load_conflist(self.cni_conf_dir)
            if cni_del and conf is not None:
                env = podlib.cni_env("DEL", rec.container_id, rec.netns, rec.namespace, rec.name, None)
                out = run_chain("DEL", conf, env, self.cni_path, prev=rec.cni_result)
                if not out.ok:
                    self.say(f"pod {rec.key}: warning: CNI DEL: {out.error}")
            netns.delete(rec.netns)
            netns.remove_etc(rec.netns)
        shutil.rmtree(d, ignore_errors=True)
        with self.lock:
            if self.records.get(rec.key) is rec or (rec.key in self.records and self.records[rec.key].uid == rec.uid):
                self.records.pop(rec.key, None)
        self.save()
        self.say(f"pod {rec.key}: removed (workload, CNI DEL, namespace {rec.netns or '-'})")

    def finalize(self, doc: dict[str, Any]) -> None:
        """Delete the terminated Pod for good (grace period 0, only this uid)."""
        from kubernetes.client.exceptions import ApiException

        m = _meta(doc)
        try:
            self.core.delete_namespaced_pod(m.get("name"), m.get("namespace", "default"), grace_period_seconds=0,
                                            body={"preconditions": {"uid": m.get("uid")}, "gracePeriodSeconds": 0})
        except ApiException as e:
            if e.status not in (404, 409):
                self.say(f"pod {pod_key(doc)}: final delete refused: {e.status} {e.reason}")

    # --------------------------------------------------------------------- DNS zone
    def ensure_zone(self) -> Path:
        with self.lock:
            if self.zone is None:
                from pyantrea.k8s.kubesource import KubeSource

                src = KubeSource(self.dns_kubeconfig) if self.dns_kubeconfig else self.source
                self.zone = _ZoneWriter(src, self.dns_dir, self.say)
                self.zone.start(self.stop)
        self.zone.written.wait(10)
        return self.dns_dir

    # --------------------------------------------------------------------- run
    def adopt(self) -> None:
        """Records of a previous run: drop those whose namespace or workload is gone (synced again)."""
        for key, rec in list(self.records.items()):
            ref = rec.ref()
            if not rec.host_network and not netns.exists(rec.netns):
                self.records.pop(key)
            elif rec.workload is not None and (ref is None or not ref.alive()):
                rec.status_posted = False
            else:
                rec.status_posted = False  # post it again: the API server may have lost it
        self.save()

    def run(self) -> int:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                self.register()
                break
            except Exception as e:  # noqa: BLE001 - the API server is not up yet
                self.say(f"registering Node {self.node}: {type(e).__name__}: {e}; retrying")
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self.adopt()
        if any(r.dns for r in self.records.values()):
            self.ensure_zone()  # the adopted DNS workloads read the zone this kubelet keeps
        self.say(f"Node {self.node} registered ({self.node_ip}, podCIDR {self.pod_cidr or 'not yet'}), "
                 f"network {'ready' if self.network_ready else 'not ready'}")
        threading.Thread(target=self.heartbeat, daemon=True, name="heartbeat").start()
        threading.Thread(target=self.watch_pods, daemon=True, name="pods").start()
        for i in range(self.jobs):
            threading.Thread(target=self.worker, daemon=True, name=f"worker-{i}").start()
        (self.dir / "ready").write_text(f"{os.getpid()}\n")
        self.stop.wait()
        return 0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _tail(path: Path, n: int = 3) -> str:
    try:
        return " / ".join(path.read_text(errors="replace").splitlines()[-n:]) or "(empty log)"
    except OSError:
        return "(no log)"


def _start_host_workload(rec: PodRecord, port: int, logf: Path) -> tuple[ProcRef, int]:
    """A hostNetwork Pod's workload: in this (the node's) namespace, on ``port``."""
    from pyantrea.lab.procs import start_detached

    r, w = os.pipe()
    try:
        argv = [sys.executable, "-m", "pyantrea.lab.workload", "--pod", rec.name, "--ip", rec.ip, "--port", str(port),
                "--ready-fd", str(w)]
        ref = start_detached(argv, logf, pass_fds=(w,))
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return ref, r


class _ZoneWriter:
    """Keeps ``dir/cluster.yaml`` (Services with clusterIPs, Pods with IPs) for the DNS workloads
    (`pyantrea.lab.dns.ClusterZoneSource` reloads it when it changes)."""

    def __init__(self, source: Any, d: Path, say: Callable[[str], None]):
        from pyantrea.k8s.informer import Informer

        self.dir = d
        self.say = say
        self.written = threading.Event()
        self.dirty = threading.Event()
        self.services = Informer(source, "Service", on_add=self._mark, on_delete=self._mark,
                                 on_update=lambda o, n: self._mark(n), log=say)
        self.pods = Informer(source, "Pod", on_add=self._mark, on_delete=self._mark,
                             on_update=lambda o, n: self._mark(n), log=say)

    def _mark(self, _obj: Any) -> None:
        self.dirty.set()

    def start(self, stop: threading.Event) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        threading.Thread(target=self._loop, args=(stop,), daemon=True, name="dns-zone").start()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.services.sync()
                self.pods.sync()
                break
            except Exception as e:  # noqa: BLE001
                self.say(f"dns zone: {e}")
                stop.wait(1.0)
        self.services.start(stop)
        self.pods.start(stop)
        self.write()
        while not stop.is_set():
            if self.dirty.wait(1.0):
                self.dirty.clear()
                stop.wait(0.05)  # a burst of events: one write
                self.write()

    def write(self) -> None:
        import yaml

        docs: list[dict[str, Any]] = []
        for s in self.services.items():
            if not s.cluster_ip:
                continue
            docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": s.name, "namespace": s.namespace},
                         "spec": {"clusterIP": s.cluster_ip,
                                  "ports": [{"name": p.name or f"p{i}", "port": p.port, "protocol": p.protocol}
                                            for i, p in enumerate(s.ports)]}})
        seen: set[str] = set()
        for p in self.pods.items():
            if not p.pod_ip or p.host_network or p.terminated or p.pod_ip in seen:
                continue
            seen.add(p.pod_ip)
            docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": p.name, "namespace": p.namespace},
                         "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running", "podIP": p.pod_ip}})
        tmp = self.dir / ".cluster.yaml.tmp"
        tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        os.replace(tmp, self.dir / "cluster.yaml")
        self.written.set()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pyantrea.lab.kubelet_k8s", description="The lab kubelet of one node.")
    ap.add_argument("--node", required=True)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--node-ip", required=True)
    ap.add_argument("--lab-dir", required=True, help="the lab's run directory")
    ap.add_argument("--prefix", required=True, help="the lab's namespace prefix")
    ap.add_argument("--cni-conf-dir", required=True)
    ap.add_argument("--cni-bin-dir", required=True, help="CNI_PATH (':'-separated)")
    ap.add_argument("--cluster-dns", default="10.96.0.10")
    ap.add_argument("--jobs", type=int, default=4, help="Pods set up concurrently")
    ap.add_argument("--dns-kubeconfig", help="the identity the kube-dns Pods' zone is read with (CoreDNS's role)")
    a = ap.parse_args(argv)
    try:
        k = Kubelet(a.node, a.kubeconfig, a.node_ip, a.lab_dir, a.prefix, a.cni_conf_dir, a.cni_bin_dir,
                    a.cluster_dns, a.jobs, dns_kubeconfig=a.dns_kubeconfig)
    except Exception as e:  # noqa: BLE001 - configuration errors (kubeconfig, prefix)
        log(a.node, f"fatal: {type(e).__name__}: {e}")
        return 1
    signal.signal(signal.SIGTERM, lambda *_: k.stop.set())
    signal.signal(signal.SIGINT, lambda *_: k.stop.set())
    return k.run()


if __name__ == "__main__":
    sys.exit(main())
