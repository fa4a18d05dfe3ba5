"""The interface store: which Pod sits behind which OVS port (spec §2 step 3, §10).

It is rebuilt from OVSDB at start (the Port external_ids Antrea writes), so it survives agent
restarts, and kept in memory afterwards.
"""

from __future__ import annotations

import threading

from pyantrea.apis.k8s import PodInterface
from pyantrea.ovs.vsctl import PortInfo


class InterfaceStore:
    def __init__(self, node: str):
        self.node = node
        self._by_name: dict[str, PodInterface] = {}
        self.port_uuid: dict[str, str] = {}
        self.lock = threading.RLock()

    def load(self, ports: list[PortInfo]) -> None:
        with self.lock:
            for p in ports:
                ids = p.external_ids
                if "container-id" not in ids or p.ofport <= 0:
                    continue
                self._by_name[p.name] = PodInterface(
                    namespace=ids.get("pod-namespace", ""), pod=ids.get("pod-name", ""), node=self.node,
                    interface=p.name, ofport=p.ofport, mac=ids.get("attached-mac", ""),
                    ip=ids.get("ip-address", ""), container_id=ids["container-id"])
                self.port_uuid[p.name] = p.uuid

    def add(self, i: PodInterface, port_uuid: str = "") -> None:
        with self.lock:
            self._by_name[i.interface] = i
            self.port_uuid[i.interface] = port_uuid

    def remove(self, name: str) -> None:
        with self.lock:
            self._by_name.pop(name, None)
            self.port_uuid.pop(name, None)

    def by_container(self, cid: str) -> PodInterface | None:
        with self.lock:
            for i in self._by_name.values():
                if i.container_id == cid:
                    return i
        return None

    def by_pod(self, namespace: str, name: str) -> PodInterface | None:
        with self.lock:
            for i in self._by_name.values():
                if i.namespace == namespace and i.pod == name:
                    return i
        return None

    def all(self) -> list[PodInterface]:
        with self.lock:
            return sorted(self._by_name.values(), key=lambda i: i.ofport)
