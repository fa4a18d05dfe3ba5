"""The lab's run directory and its state file ``lab.json``.

Layout (``PYANTREA_LAB_DIR``, default ``/run/pyantrea-lab``)::

    lab.json                      this state (written before each thing is created, so that
                                  `lab down` can undo a half-finished `lab up`), with the
                                  namespace prefix of the lab (``prefix``, ``pa-`` by default)
    controller/                   controller.sock, state/ (the controller's), controller.pid/.log
    nodes/<node>/                 agent.sock, ipam/ (the agent's), agent.pid/.log
    nodes/<node>/ovs/             the node's OVS sandbox
    pods/<ns>_<name>/             workload.pid/.log
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyantrea.lab.procs import ProcRef

__all__ = ["DEFAULT_LAB_DIR", "LabPaths", "LabState", "NodeState", "PodState", "lab_dir"]

DEFAULT_LAB_DIR = "/run/pyantrea-lab"
HOST_LOCK = "/run"


def lab_dir(explicit: str | None = None) -> Path:
    """The lab's run directory: `explicit`, else ``PYANTREA_LAB_DIR``, else DEFAULT_LAB_DIR (not made absolute)."""
    return Path(explicit or os.environ.get("PYANTREA_LAB_DIR") or DEFAULT_LAB_DIR)


class LabPaths:
    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root or os.environ.get("PYANTREA_LAB_DIR") or DEFAULT_LAB_DIR).absolute()

    @property
    def state_file(self) -> Path:
        return self.root / "lab.json"

    @property
    def controller_dir(self) -> Path:
        return self.root / "controller"

    @property
    def controller_sock(self) -> Path:
        return self.controller_dir / "controller.sock"

    @property
    def controller_state(self) -> Path:
        return self.controller_dir / "state"

    def node_dir(self, node: str) -> Path:
        return self.root / "nodes" / node

    def agent_sock(self, node: str) -> Path:
        return self.node_dir(node) / "agent.sock"

    def ovs_dir(self, node: str) -> Path:
        return self.node_dir(node) / "ovs"

    def pod_dir(self, namespace: str, name: str) -> Path:
        return self.root / "pods" / f"{namespace}_{name}"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One mutating lab command at a time on this host, whatever its lab dir and prefix: the
        network namespaces are host-wide. The lock is a flock on the directory ``/run`` itself, so it
        leaves no file behind."""
        fd = os.open(HOST_LOCK, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def _ref(d: Any) -> ProcRef | None:
    return ProcRef.from_json(d)


def _refj(r: ProcRef | None) -> dict[str, Any] | None:
    return r.to_json() if r is not None else None


@dataclass
class NodeState:
    name: str
    netns: str
    ip: str
    prefix: int
    phy_mac: str
    uplink_peer: str
    agent: ProcRef | None = None
    ovsdb: ProcRef | None = None
    vswitchd: ProcRef | None = None
    kubeproxy_hash: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"netns": self.netns, "ip": self.ip, "prefix": self.prefix, "phy_mac": self.phy_mac,
                "uplink_peer": self.uplink_peer, "agent": _refj(self.agent), "ovsdb": _refj(self.ovsdb),
                "vswitchd": _refj(self.vswitchd), "kubeproxy_hash": self.kubeproxy_hash}

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any]) -> NodeState:
        return cls(name=name, netns=str(d.get("netns") or ""), ip=str(d.get("ip") or ""),
                   prefix=int(d.get("prefix") or 24), phy_mac=str(d.get("phy_mac") or ""),
                   uplink_peer=str(d.get("uplink_peer") or ""), agent=_ref(d.get("agent")),
                   ovsdb=_ref(d.get("ovsdb")), vswitchd=_ref(d.get("vswitchd")),
                   kubeproxy_hash=str(d.get("kubeproxy_hash") or ""))


@dataclass
class PodState:
    namespace: str
    name: str
    node: str
    netns: str
    ip: str
    prefix: int
    container_id: str
    interface: str
    dns: bool = False
    cni: str = "pending"  # pending | added | failed
    error: str = ""
    workload: ProcRef | None = None
    cni_add_seconds: float | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.name, "node": self.node, "netns": self.netns,
                "ip": self.ip, "prefix": self.prefix, "container_id": self.container_id,
                "interface": self.interface, "dns": self.dns, "cni": self.cni, "error": self.error,
                "workload": _refj(self.workload), "cni_add_seconds": self.cni_add_seconds}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PodState:
        secs = d.get("cni_add_seconds")
        return cls(namespace=str(d.get("namespace") or ""), name=str(d.get("name") or ""),
                   node=str(d.get("node") or ""), netns=str(d.get("netns") or ""), ip=str(d.get("ip") or ""),
                   prefix=int(d.get("prefix") or 24), container_id=str(d.get("container_id") or ""),
                   interface=str(d.get("interface") or ""), dns=bool(d.get("dns")),
                   cni=str(d.get("cni") or "pending"), error=str(d.get("error") or ""),
                   workload=_ref(d.get("workload")),
                   cni_add_seconds=float(secs) if isinstance(secs, (int, float)) else None)


@dataclass
class LabState:
    folder: str = ""
    prefix: str = ""  # the namespaces' prefix ("" = not recorded: a corrupt lab.json)
    created: float = field(default_factory=time.time)
    underlay: dict[str, Any] = field(default_factory=dict)
    controller: ProcRef | None = None
    nodes: dict[str, NodeState] = field(default_factory=dict)
    pods: dict[str, PodState] = field(default_factory=dict)
    complete: bool = False  # the last `lab up` finished

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "folder": self.folder,
            "prefix": self.prefix,
            "created": self.created,
            "complete": self.complete,
            "underlay": self.underlay,
            "controller": _refj(self.controller),
            "nodes": {k: v.to_json() for k, v in sorted(self.nodes.items())},
            "pods": {k: v.to_json() for k, v in sorted(self.pods.items())},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LabState:
        # a lab.json without a prefix is older than prefixes: its namespaces are pa-*
        s = cls(folder=str(d.get("folder") or ""), prefix=str(d.get("prefix") or "pa-"),
                created=float(d.get("created") or time.time()),
                underlay=dict(d.get("underlay") or {}), controller=_ref(d.get("controller")),
                complete=bool(d.get("complete")))
        for k, v in (d.get("nodes") or {}).items():
            if isinstance(v, dict):
                s.nodes[k] = NodeState.from_json(k, v)
        for k, v in (d.get("pods") or {}).items():
            if isinstance(v, dict):
                s.pods[k] = PodState.from_json(v)
        return s

    @classmethod
    def load(cls, paths: LabPaths) -> LabState | None:
        """The saved state; None if there is none. A corrupt file gives an empty state (so that
        `lab down` still cleans up by names)."""
        try:
            text = paths.state_file.read_text()
        except FileNotFoundError:
            return None
        try:
            d = json.loads(text)
        except ValueError:
            return cls()
        return cls.from_json(d) if isinstance(d, dict) else cls()

    def save(self, paths: LabPaths) -> None:
        paths.root.mkdir(parents=True, exist_ok=True)
        tmp = paths.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n")
        os.replace(tmp, paths.state_file)

    def all_procs(self) -> list[tuple[str, ProcRef]]:
        out: list[tuple[str, ProcRef]] = []
        if self.controller:
            out.append(("controller", self.controller))
        for n in self.nodes.values():
            for what, r in (("agent", n.agent), ("ovsdb-server", n.ovsdb), ("ovs-vswitchd", n.vswitchd)):
                if r is not None:
                    out.append((f"{what} {n.name}", r))
        for p in self.pods.values():
            if p.workload is not None:
                out.append((f"workload {p.key}", p.workload))
        return out
