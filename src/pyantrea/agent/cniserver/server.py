"""The agent's CNI server: ADD, DEL and CHECK (spec §10), in CNI 1.0 form.

Requests for one container are serialized; different containers proceed concurrently. Any failure
of an ADD undoes what it did (IPAM lease, veth, OVS port, flows) and answers with a CNI error code:
1 incompatible version, 3 unknown container/netns, 4 bad environment, 6 undecodable config,
7 invalid network config, 5 I/O failure, 11 try again later.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

from pyantrea.agent.cniserver import ipam
from pyantrea.agent.cniserver import pod as podnet
from pyantrea.apis.k8s import NodeNetwork, PodInterface, PodPin, interface_name
from pyantrea.errors import CNIError, PyantreaError
from pyantrea.ovs.vsctl import OVSDB

SUPPORTED_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]


def parse_args(s: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (s or "").split(";"):
        if not part:
            continue
        if "=" not in part:
            raise CNIError(4, f"invalid CNI_ARGS item {part!r} (want KEY=VALUE)")
        k, v = part.split("=", 1)
        out[k] = v
    return out


class Request:
    def __init__(self, body: dict[str, Any]):
        env = body.get("env") or {}
        if not isinstance(env, dict):
            raise CNIError(4, "env must be a mapping of CNI_* variables")
        self.command = str(env.get("CNI_COMMAND", ""))
        self.container_id = str(env.get("CNI_CONTAINERID", ""))
        self.netns = str(env.get("CNI_NETNS", ""))
        self.ifname = str(env.get("CNI_IFNAME", ""))
        self.cni_path = str(env.get("CNI_PATH", ""))
        self.args = parse_args(str(env.get("CNI_ARGS", "")))
        raw = body.get("conf", "")
        try:
            self.conf = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as e:
            raise CNIError(6, f"failed to decode the network configuration: {e}") from None
        if not isinstance(self.conf, dict):
            raise CNIError(6, "the network configuration is not a JSON object")
        self.version = str(self.conf.get("cniVersion", ""))
        if self.version not in SUPPORTED_VERSIONS:
            raise CNIError(1, f"incompatible CNI version {self.version!r}", f"supported: {', '.join(SUPPORTED_VERSIONS)}")
        if not self.container_id:
            raise CNIError(4, "required env variable CNI_CONTAINERID is missing")
        if not self.ifname:
            raise CNIError(4, "required env variable CNI_IFNAME is missing")
        ipam_conf = self.conf.get("ipam") or {}
        if not isinstance(ipam_conf, dict) or ipam_conf.get("type", "host-local") != "host-local":
            raise CNIError(7, f"unsupported IPAM type {ipam_conf.get('type') if isinstance(ipam_conf, dict) else ipam_conf!r}"
                              " (only host-local)")
        self.pod_ns = self.args.get("K8S_POD_NAMESPACE", "")
        self.pod_name = self.args.get("K8S_POD_NAME", "")
        self.ip = self.args.get("IP") or None


class PodNetwork(Protocol):
    """What the CNI server needs of the agent: the pod configurator (`agent.podconfigurator`)."""

    @property
    def node(self) -> str: ...

    @property
    def ipam_dir(self) -> str: ...

    @property
    def mtu(self) -> int: ...

    @property
    def datapath(self) -> str: ...

    @property
    def bridge_name(self) -> str: ...

    @property
    def db(self) -> OVSDB: ...

    def network(self) -> NodeNetwork: ...

    def pin(self, namespace: str, name: str) -> PodPin | None: ...

    def by_container(self, cid: str) -> PodInterface | None: ...

    def add_port(self, iface: PodInterface, pin_ofport: bool,
                 meanwhile: Callable[[], None] | None = None) -> tuple[int, str]:
        """The Pod's OVS port, added in one OVSDB transaction: (the ofport OVS gave it, its Port UUID);
        ``meanwhile`` runs after the transaction, while ovs-vswitchd adds the port."""
        ...

    def del_port(self, name: str) -> None: ...

    def pod_added(self, iface: PodInterface, port_uuid: str) -> None: ...

    def remove_interface(self, iface: PodInterface, steps: Steps | None = None,
                         after_flows: Callable[[], None] | None = None) -> None:
        """Flows, port, isolation and veth of a Pod; ``after_flows`` runs once its flows are gone."""
        ...


class Steps:
    """Where one request's time goes: ``mark(name)`` records the time since the previous mark
    (perf_counter), so the steps of a request add up to its handling time."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.marks: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.marks.append((name, now - self.t))
        self.t = now


_NO_STEPS = Steps()  # for callers that do not time (marks are dropped)


class CNIServer:
    KEEP = 1000  # latencies kept per command (memory stays flat)
    KEEP_STEPS = 200  # step times kept per command and step (what /v1/stats shows)

    def __init__(self, pods: PodNetwork):
        self.pods = pods
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.steps: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def _lock(self, cid: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks[cid]

    def handle(self, command: str, body: dict[str, Any]) -> dict[str, Any]:
        """Returns {"result": ...} or {"error": {"code", "msg", "details"}} (CNI error form)."""
        t0 = time.perf_counter()
        st = Steps()
        try:
            req = Request(body)
            if req.command and req.command.upper() != command.upper():
                raise CNIError(4, f"CNI_COMMAND {req.command!r} does not match the request {command!r}")
            with self._lock(req.container_id):
                st.mark("request")
                if command == "ADD":
                    res = self.add(req, st)
                elif command == "DEL":
                    res = self.delete(req, st)
                elif command == "CHECK":
                    res = self.check(req)
                else:
                    raise CNIError(4, f"unknown CNI_COMMAND {command!r}")
            lat = self.latencies[command]
            lat.append(time.perf_counter() - t0)
            del lat[:-self.KEEP]
            steps = self.steps[command]
            for name, dt in st.marks:
                xs = steps[name]
                xs.append(dt)
                del xs[:-self.KEEP_STEPS]
            return {"result": res}
        except CNIError as e:
            return {"error": {"code": e.code, "msg": e.msg, "details": e.details}}
        except PyantreaError as e:
            return {"error": {"code": 5, "msg": str(e), "details": ""}}

    # ------------------------------------------------------------------------------------- ADD
    def add(self, req: Request, st: Steps = _NO_STEPS) -> dict[str, Any]:
        a = self.pods
        podnet.check_netns(req.netns)
        existing = a.by_container(req.container_id)
        if existing is not None:
            return self.result(req, existing, podnet.link_mac(existing.interface))
        net = a.network()
        subnet = ipaddress.IPv4Network(net.pod_cidr)
        if req.ip is not None:
            try:
                pinned = ipaddress.IPv4Address(req.ip)
            except ValueError:
                raise CNIError(7, f"requested IP {req.ip!r} is not an IPv4 address") from None
            if pinned not in subnet or pinned in (subnet.network_address, subnet.broadcast_address,
                                                  ipaddress.IPv4Address(net.gateway_ip)):
                raise CNIError(7, f"requested IP {req.ip} is outside the node's Pod CIDR {net.pod_cidr} "
                                  "or reserved", f"node {a.node}")
        pin = a.pin(req.pod_ns, req.pod_name)  # a NodeInterfaces pin: requested name, ofport, MAC
        host_name = (pin.interface if pin is not None and pin.interface else
                     interface_name(req.pod_name or req.container_id, req.container_id))
        undo: list[Any] = []
        try:
            # host-local runs while the veth is made (neither needs the other): IPAM's answer, or its error
            lease_box: dict[str, Any] = {}

            def allocate() -> None:
                try:
                    lease_box["lease"] = ipam.host_local("ADD", req.container_id, req.ifname, net.pod_cidr,
                                                         net.gateway_ip, a.ipam_dir, req.ip, req.cni_path, req.netns)
                except BaseException as e:  # noqa: BLE001 - handed to the request's thread
                    lease_box["error"] = e

            ipam_thread = threading.Thread(target=allocate, name=f"ipam-add-{req.container_id[:12]}")
            ipam_thread.start()
            link_error: BaseException | None = None
            try:
                host_mac, pod_mac = podnet.create_veth(host_name, req.netns, req.ifname, a.mtu,
                                                       pin.mac if pin is not None else None)
                st.mark("veth")
                undo.append(lambda: podnet.delete_veth(host_name))
                if a.datapath == "netdev":
                    podnet.isolate(host_name)
                    undo.append(lambda: podnet.unisolate(host_name))
                    st.mark("isolate")
                podnet.host_up(host_name)
                st.mark("host_up")
            except BaseException as e:  # noqa: BLE001 - raised below, once IPAM has answered
                link_error = e
            finally:
                ipam_thread.join()
                if "lease" in lease_box:  # released last when the ADD is undone
                    undo.insert(0, lambda: ipam.host_local("DEL", req.container_id, req.ifname, net.pod_cidr,
                                                           net.gateway_ip, a.ipam_dir, None, req.cni_path, req.netns))
                st.mark("ipam_wait")
            if "error" in lease_box:  # IPAM's failure is the ADD's answer (it came first before)
                raise lease_box["error"]
            if link_error is not None:
                raise link_error
            ips = lease_box["lease"].get("ips") or []
            if not ips:
                raise CNIError(5, "host-local returned no IP")
            iface_addr = ipaddress.IPv4Interface(ips[0]["address"])
            ip = str(iface_addr.ip)
            requested_ofport = pin.ofport if pin is not None and pin.ofport else 0
            iface = PodInterface(req.pod_ns, req.pod_name, a.node, host_name, requested_ofport, pod_mac, ip,
                                 req.container_id)
            undo.append(lambda: a.del_port(host_name))

            def configure() -> None:  # while ovs-vswitchd adds the port
                st.mark("ovs_port")
                podnet.configure_pod(req.netns, req.ifname, ip, subnet.prefixlen, net.gateway_ip,
                                     tx_off=a.datapath == "netdev")
                st.mark("configure_pod")

            ofport, uuid = a.add_port(iface, requested_ofport > 0, meanwhile=configure)
            st.mark("ofport")
            iface = PodInterface(req.pod_ns, req.pod_name, a.node, host_name, ofport, pod_mac, ip, req.container_id)
            a.pod_added(iface, uuid)
            st.mark("flows")
        except BaseException as e:
            for u in reversed(undo):
                try:
                    u()
                except Exception:  # noqa: BLE001 - best-effort rollback
                    pass
            if isinstance(e, CNIError):
                raise
            if isinstance(e, PyantreaError):
                raise CNIError(5, f"ADD failed for {req.pod_ns}/{req.pod_name}: {e}") from None
            raise CNIError(5, f"ADD failed for {req.pod_ns}/{req.pod_name}: {type(e).__name__}: {e}") from None
        return self.result(req, iface, host_mac)

    def result(self, req: Request, iface: PodInterface, host_mac: str) -> dict[str, Any]:
        net = self.pods.network()
        prefix = ipaddress.IPv4Network(net.pod_cidr).prefixlen
        ip_entry: dict[str, Any] = {"address": f"{iface.ip}/{prefix}", "gateway": net.gateway_ip, "interface": 1}
        if req.version in ("0.3.0", "0.3.1", "0.4.0"):
            ip_entry["version"] = "4"
        res: dict[str, Any] = {
            "cniVersion": req.version,
            "interfaces": [{"name": iface.interface, "mac": host_mac},
                           {"name": req.ifname, "mac": iface.mac, "sandbox": req.netns}],
            "ips": [ip_entry],
            "routes": [{"dst": "0.0.0.0/0", "gw": net.gateway_ip}],
        }
        if isinstance(req.conf.get("dns"), dict):
            res["dns"] = req.conf["dns"]
        return res

    # ------------------------------------------------------------------------------------- DEL
    def delete(self, req: Request, st: Steps = _NO_STEPS) -> dict[str, Any]:
        a = self.pods
        net = a.network()

        def release() -> None:
            try:
                ipam.host_local("DEL", req.container_id, req.ifname, net.pod_cidr, net.gateway_ip, a.ipam_dir,
                                None, req.cni_path, req.netns or "/dev/null")
            except CNIError:
                pass  # DEL must be idempotent: a missing lease is not an error

        iface = a.by_container(req.container_id)
        if iface is None:
            release()
            st.mark("ipam")
            return {}
        # The IP is released once the Pod's flows are gone (a new Pod given it then finds no flow
        # naming it), while the port and the veth are removed.
        ipam_thread = threading.Thread(target=release, name=f"ipam-del-{req.container_id[:12]}")
        try:
            a.remove_interface(iface, st, after_flows=ipam_thread.start)
        finally:
            if ipam_thread.ident is None:
                release()  # the flows could not be removed: the lease goes all the same, as before
            else:
                ipam_thread.join()
        st.mark("ipam_wait")
        return {}

    # ------------------------------------------------------------------------------------- CHECK
    def check(self, req: Request) -> dict[str, Any]:
        a = self.pods
        podnet.check_netns(req.netns)
        iface = a.by_container(req.container_id)
        if iface is None:
            raise CNIError(3, f"container {req.container_id} is unknown to the agent on {a.node}")
        net = a.network()
        ipam.host_local("CHECK", req.container_id, req.ifname, net.pod_cidr, net.gateway_ip, a.ipam_dir,
                        None, req.cni_path, req.netns)
        state = podnet.pod_state(req.netns, req.ifname)
        if state is None:
            raise CNIError(3, f"interface {req.ifname} not found in {req.netns}")
        mac, addrs, gws = state
        prefix = ipaddress.IPv4Network(net.pod_cidr).prefixlen
        problems = []
        if mac != iface.mac:
            problems.append(f"MAC {mac} != {iface.mac}")
        if f"{iface.ip}/{prefix}" not in addrs:
            problems.append(f"address {iface.ip}/{prefix} missing (have {addrs})")
        if net.gateway_ip not in gws:
            problems.append(f"default route via {net.gateway_ip} missing")
        if not os.path.exists(f"/sys/class/net/{iface.interface}"):
            problems.append(f"host veth {iface.interface} missing")
        if iface.interface not in {p.name for p in a.db.list_ports(a.bridge_name)}:
            problems.append(f"OVS port {iface.interface} missing")
        if problems:
            raise CNIError(7, f"CHECK failed for {req.pod_ns}/{req.pod_name}: " + "; ".join(problems))
        return {}
