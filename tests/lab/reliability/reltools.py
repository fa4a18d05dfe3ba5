"""Helpers of the reliability suite and of bench/restart.py, bench/churn.py (root, a live lab).

Everything talks to one lab run directory (``RelLab.root``) with its namespace prefix
(``RelLab.prefix``): the `pyantrea lab` CLI for what a user does (up, apply, restart, down), and
straight `ip netns exec`, `ovs-ofctl` on the node's bridge socket and the agents' APIs for what the
tests measure. Namespaces the helpers make themselves (churn's Pods) carry the same prefix.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
PREFIX = "pr-"  # the reliability suite's lab's namespace prefix (conftest.py); a user's lab is pa-*
SEED = ROOT / "examples" / "seed"
NETPROBE = str(Path(__file__).resolve().with_name("netprobe.py"))

FRONTEND, BACKEND1, BACKEND2 = "default/frontend", "default/backend1", "default/backend2"
COREDNS1 = "kube-system/coredns-66bff467f8-bclzd"  # worker1
COREDNS2 = "kube-system/coredns-66bff467f8-f4nc4"  # worker2
OCTANT = "kube-system/antrea-octant-f59b76dd9-dcvvl"  # worker1
BACKENDSVC = "10.104.65.133"

ROUND_MASK = 0x0000FFFFFFFFFFFF  # cookie bits without the round number (spec §5.2)

ALLOW_FE_BE = """\
# frontend <-> backends, any protocol (the seed's policies allow only TCP 80 there: no ICMP)
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: reltest-frontend-to-backends-any, namespace: default}
spec:
  podSelector: {matchLabels: {role: frontend}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {role: backend}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: reltest-backends-from-frontend-any, namespace: default}
spec:
  podSelector: {matchLabels: {role: backend}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {role: frontend}}}]
"""


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def until(cond: Callable[[], Any], timeout: float, period: float = 0.05) -> float | None:
    """Seconds until cond() is true, or None after timeout."""
    t0 = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(period)


# ------------------------------------------------------------------------------------------ flows


@dataclass(frozen=True)
class FlowLine:
    table: int
    priority: int
    cookie: int
    match: str
    actions: str
    n_packets: int = 0

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.table, self.priority, self.match)

    def norm(self) -> tuple[int, int, str, int, str]:
        """The flow without its cookie's round bits (and without stats)."""
        return (self.table, self.priority, self.match, self.cookie & ROUND_MASK, self.actions)


def parse_flow(line: str) -> FlowLine:
    """One `ovs-ofctl dump-flows` line (OpenFlow 1.0 rendering, with or without stats)."""
    head, _, actions = line.strip().partition(" actions=")
    fields: dict[str, str] = {}
    rest = []
    for part in head.replace(", ", ",").split(","):
        part = part.strip()
        k, eq, v = part.partition("=")
        if k in ("cookie", "duration", "table", "n_packets", "n_bytes", "idle_age", "hard_age", "priority"):
            fields[k] = v
        elif part:
            rest.append(part)
    return FlowLine(int(fields.get("table", "0")), int(fields.get("priority", "32768")),
                    int(fields.get("cookie", "0"), 16), ",".join(rest), actions,
                    int(fields.get("n_packets", "0")))


# ------------------------------------------------------------------------------------------ frames


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(dst: str, src: str, etype: int, payload: bytes) -> bytes:
    frame = mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", etype) + payload
    return frame + b"\0" * max(0, 60 - len(frame))


def udp_frame(dst_mac: str, src_mac: str, src_ip: str, dst_ip: str, payload: bytes, sport: int = 40000,
              dport: int = 9999) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload  # checksum 0: none (IPv4)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x1234, 0x4000, 64, 17, 0,
                      socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return eth(dst_mac, src_mac, 0x0800, hdr + udp)


def arp_frame(dst_mac: str, src_mac: str, op: int, sha: str, spa: str, tha: str, tpa: str) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac_bytes(sha), socket.inet_aton(spa),
                       mac_bytes(tha), socket.inet_aton(tpa))
    return eth(dst_mac, src_mac, 0x0806, body)


# ------------------------------------------------------------------------------------------ processes


_STARTED: list[subprocess.Popen[str]] = []  # every probe and ping process, for kill_leftovers()


def kill_leftovers() -> None:
    """Kill the probe and ping processes a failed test left running (ours only, by pid)."""
    for p in _STARTED:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=5)
    _STARTED.clear()


class Probe:
    """A netprobe.py process in a namespace: started, waited for "ready", stopped with SIGTERM."""

    def __init__(self, netns: str, *args: str, stdin: str | None = None, timeout: float = 20):
        self.argv = ["ip", "netns", "exec", netns, sys.executable, NETPROBE, *args]
        self.p = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        _STARTED.append(self.p)
        if stdin is not None:
            assert self.p.stdin is not None
            self.p.stdin.write(stdin)
        assert self.p.stdin is not None
        self.p.stdin.close()
        self.p.stdin = None
        assert self.p.stdout is not None
        line = _readline(self.p, timeout)
        if line.strip() != "ready":
            self.p.kill()
            err = self.p.stderr.read() if self.p.stderr else ""
            raise RuntimeError(f"{' '.join(self.argv)}: not ready: {line!r} {err}")
        self.result: dict[str, Any] | None = None

    def stop(self, timeout: float = 10) -> dict[str, Any]:
        if self.result is None:
            if self.p.poll() is None:
                self.p.send_signal(signal.SIGTERM)
            out, err = self.p.communicate(timeout=timeout)
            lines = [ln for ln in out.splitlines() if ln.strip()]
            if not lines:
                raise RuntimeError(f"{' '.join(self.argv)}: no result (exit {self.p.returncode}): {err}")
            self.result = json.loads(lines[-1])
        return self.result

    def wait(self, timeout: float = 30) -> dict[str, Any]:
        self.p.wait(timeout=timeout)
        return self.stop()


def _readline(p: subprocess.Popen[str], timeout: float) -> str:
    box: list[str] = []
    t = threading.Thread(target=lambda: box.append(p.stdout.readline() if p.stdout else ""), daemon=True)
    t.start()
    t.join(timeout)
    return box[0] if box else ""


@dataclass
class PingResult:
    transmitted: int
    received: int
    max_gap: float  # longest time without a reply (s), from the start to the stop
    times: list[float] = field(default_factory=list)
    lost: int = 0  # requests older than the last reply that got none (the one in flight at the stop
    #                is not lost; a loss at the end shows as max_gap)


class Pinger:
    """`ping -D -i INTERVAL DST` in a namespace until stopped (SIGINT: ping prints its statistics)."""

    def __init__(self, netns: str, dst: str, interval: float = 0.05):
        self.interval = interval
        self.p = subprocess.Popen(["ip", "netns", "exec", netns, "ping", "-D", "-n", "-i", str(interval), dst],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _STARTED.append(self.p)
        self.t0 = time.time()

    def stop(self) -> PingResult:
        time.sleep(self.interval * 3)  # let the last request's reply come back
        self.p.send_signal(signal.SIGINT)
        out, _ = self.p.communicate(timeout=10)
        t1 = time.time()
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        if not m:
            raise RuntimeError(f"ping output without statistics:\n{out}")
        replies = re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from .*?icmp_seq=(\d+)", out, re.M)
        times = [float(t) for t, _ in replies]
        seqs = {int(q) for _, q in replies}
        edges = [self.t0, *times, t1]
        gap = max(b - a for a, b in zip(edges, edges[1:]))
        lost = (max(seqs) - len(seqs)) if seqs else int(m.group(1))
        return PingResult(int(m.group(1)), int(m.group(2)), gap, times, lost)


class FlowMonitor:
    """`ovs-ofctl monitor BRIDGE watch:` on a node: the flow events after the initial dump.

    The initial dump is the reply to the monitor request (a non-zero xid); updates come as
    unsolicited replies (xid=0x0). OVS reports a flow replaced by an add (same table, priority and
    match: the old rule's counters are kept) as ADDED, a removal as DELETED, a mod-flows as MODIFIED.
    The event text has no priority (ovs-ofctl prints the match with the default one)."""

    EVENT = re.compile(r"^\s*event=(ADDED|DELETED|MODIFIED|ABBREV)\s+table=(\d+)\s+(?:.*?)cookie=(0x[0-9a-f]+)(.*)$")

    def __init__(self, mgmt: str):
        # ovs-ofctl monitor opens a unixctl socket in OVS_RUNDIR: the node's OVS run dir (exists)
        env = {**os.environ, "OVS_RUNDIR": str(Path(mgmt).parent)}
        # (it prints the initial dump on stdout and the updates on stderr)
        self.p = subprocess.Popen(["stdbuf", "-oL", "-eL", "ovs-ofctl", "monitor", f"unix:{mgmt}", "watch:"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        _STARTED.append(self.p)
        self.lines: list[str] = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        until(lambda: self.lines, 5, 0.01)
        time.sleep(0.3)  # the rest of the initial dump

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> list[tuple[str, int, str, int]]:
        """(event, table, match, cookie) of every update after the initial dump."""
        if self.p.poll() is not None:
            raise RuntimeError(f"ovs-ofctl monitor exited early ({self.p.returncode}): {self.lines[-3:]}")
        self.p.terminate()
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.p.kill()
        self.t.join(timeout=5)
        out = []
        update = False
        for line in self.lines:
            if line.startswith("NXST_FLOW_MONITOR reply") or line.startswith("OFPST_FLOW_MONITOR reply"):
                update = "xid=0x0)" in line
                continue
            m = self.EVENT.match(line)
            if m and update:
                match = re.split(r"(?:^|\s)actions=", m.group(4).strip(), maxsplit=1)[0].strip().rstrip(",")
                out.append((m.group(1), int(m.group(2)), match, int(m.group(3), 16)))
        return out


# ------------------------------------------------------------------------------------------ the lab


class RelLab:
    def __init__(self, root: str, prefix: str | None = None):
        """``prefix``: the lab's namespace prefix (default: PYANTREA_LAB_PREFIX's, else pa-)."""
        self.root = Path(root)
        self.prefix = prefix or os.environ.get("PYANTREA_LAB_PREFIX") or "pa-"
        self.env = {**os.environ, "PYANTREA_LAB_DIR": str(self.root), "PYANTREA_LAB_PREFIX": self.prefix}
        self.status: dict[str, Any] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}

    # -- CLI
    def lab(self, *args: str, check: bool = True, timeout: float = 180,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "pyantrea", "lab", *args], capture_output=True, text=True,
                           env=self.env, cwd=ROOT, timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise AssertionError(f"pyantrea lab {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def apply_text(self, text: str, delete: bool = False, check: bool = True,
                   settle: bool = True) -> subprocess.CompletedProcess[str]:
        """`lab apply|delete -f -`; then (settle) wait until every agent has installed that version."""
        p = self.lab("delete" if delete else "apply", "-f", "-", input=text, check=check)
        if settle and p.returncode == 0:
            self.settle()
        return p

    def controller_version(self, node: str | None = None) -> tuple[str, int]:
        """(epoch, resourceVersion) of the controlplane; with `node`, the version of the last change
        that concerns that node."""
        from pyantrea.httpapi import APIClient

        q = f"?node={node}" if node else ""
        snap = APIClient(self.controller_sock(), timeout=10).get(f"/v1/controlplane/stats{q}")
        return str(snap["epoch"]), int(snap["nodeResourceVersion" if node else "resourceVersion"])

    def settle(self, timeout: float = 10) -> None:
        """Wait until every running agent has installed every change that concerns its node (the agent's
        /v1/stats is read under its lock: its controllerVersion's flows are in OVS)."""
        for node in sorted(self.nodes):
            epoch, version = self.controller_version(node)

            def done() -> bool:
                try:
                    st = self.stats(node)
                except Exception:  # noqa: BLE001 - not up (yet)
                    return False
                return bool(st["controllerEpoch"] == epoch and st["controllerVersion"] >= version)
            if until(done, timeout) is None:
                raise AssertionError(f"agent {node} did not install controller version {version} in {timeout} s")

    def refresh(self) -> RelLab:
        self.status = json.loads(self.lab("status", "-o", "json", check=False).stdout)
        self.pods = {p["pod"]: p for p in self.status["pods"]}
        self.nodes = {n["name"]: n for n in self.status["nodes"]}
        return self

    # -- namespaces
    def pod(self, key: str) -> dict[str, Any]:
        return self.pods[key if "/" in key else f"default/{key}"]

    def ns(self, key: str) -> str:
        if key in self.nodes:
            return str(self.nodes[key]["netns"])
        return str(self.pod(key)["netns"])

    def ip(self, key: str) -> str:
        return str(self.pod(key)["ip"])

    def sh(self, where: str, *cmd: str, timeout: float = 30, check: bool = False,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["ip", "netns", "exec", self.ns(where), *cmd], capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise AssertionError(f"{where}: {' '.join(cmd)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def mac(self, where: str, dev: str = "eth0") -> str:
        return self.sh(where, "cat", f"/sys/class/net/{dev}/address", check=True).stdout.strip()

    def neigh(self, where: str, dev: str) -> dict[str, str]:
        """IP -> lladdr of the neighbour table of dev in that namespace."""
        out = self.sh(where, "ip", "-4", "neigh", "show", "dev", dev).stdout
        res = {}
        for line in out.splitlines():
            parts = line.split()
            if "lladdr" in parts:
                res[parts[0]] = parts[parts.index("lladdr") + 1]
        return res

    def probe(self, where: str, *args: str, stdin: str | None = None) -> Probe:
        return Probe(self.ns(where), *args, stdin=stdin)

    def curl(self, src: str, url: str, t: float = 2.0) -> tuple[int, str]:
        p = self.sh(src, "curl", "-s", "-m", str(t), url, timeout=t + 10)
        return p.returncode, p.stdout

    def reaches(self, src: str, dst: str, port: int = 80, t: float = 1.0) -> bool:
        rc, out = self.curl(src, f"http://{self.ip(dst)}:{port}/", t)
        return rc == 0 and "Praqma Network MultiTool" in out

    def tcp_answers(self, src: str, dst_ip: str, port: int, t: float = 0.5) -> bool:
        """True if dst_ip:port answers a TCP SYN from src (connection or RST): the SYN got through."""
        code = ("import socket,sys\ns=socket.socket();s.settimeout(%r)\ntry:\n s.connect((%r,%d))\nexcept "
                "ConnectionRefusedError:\n pass\nexcept OSError:\n sys.exit(1)\n" % (t, dst_ip, port))
        return self.sh(src, sys.executable, "-c", code, timeout=t + 10).returncode == 0

    # -- OVS
    def mgmt(self, node: str) -> str:
        return str(self.root / "nodes" / node / "ovs" / "br-int.mgmt")

    def ovs_env(self, node: str) -> dict[str, str]:
        d = str(self.root / "nodes" / node / "ovs")
        return {**os.environ, "OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d}

    def flows(self, node: str, stats: bool = False) -> list[FlowLine]:
        args = ["ovs-ofctl", "dump-flows", f"unix:{self.mgmt(node)}"] + ([] if stats else ["--no-stats"])
        out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout
        return [parse_flow(ln) for ln in out.splitlines() if ln.strip() and not ln.startswith(("NXST", "OFPST"))]

    def flow_texts(self, node: str) -> list[str]:
        out = subprocess.run(["ovs-ofctl", "dump-flows", f"unix:{self.mgmt(node)}", "--no-stats"],
                             capture_output=True, text=True, check=True).stdout
        return sorted(ln.strip() for ln in out.splitlines() if ln.strip() and not ln.startswith(("NXST", "OFPST")))

    def vsctl(self, node: str, *args: str) -> str:
        db = self.root / "nodes" / node / "ovs" / "db.sock"
        return subprocess.run(["ovs-vsctl", f"--db=unix:{db}", *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout

    def round_num(self, node: str) -> str:
        """br-int's external_ids:roundNum ('' if not persisted yet)."""
        return self.vsctl(node, "--if-exists", "get", "Bridge", "br-int", "external_ids:roundNum").strip().strip('"')

    def monitor(self, node: str) -> FlowMonitor:
        return FlowMonitor(self.mgmt(node))

    # -- daemons
    def agent_sock(self, node: str) -> str:
        return str(self.root / "nodes" / node / "agent.sock")

    def controller_sock(self) -> str:
        return str(self.root / "controller" / "controller.sock")

    def agent(self, node: str, path: str, timeout: float = 10) -> Any:
        from pyantrea.httpapi import APIClient

        return APIClient(self.agent_sock(node), timeout=timeout).get(path)

    def stats(self, node: str) -> dict[str, Any]:
        return dict(self.agent(node, "/v1/stats"))

    def agent_pid(self, node: str) -> int:
        st = json.loads((self.root / "lab.json").read_text())
        return int(st["nodes"][node]["agent"]["pid"])

    def controller_pid(self) -> int:
        st = json.loads((self.root / "lab.json").read_text())
        return int(st["controller"]["pid"])

    @staticmethod
    def rss_kib(pid: int) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    # -- leaks: everything a Pod can leave behind on a node
    def node_objects(self, node: str) -> dict[str, Any]:
        ns = self.ns(node)

        def run(*cmd: str) -> str:
            return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                                  timeout=30).stdout

        links = sorted(ln.split(":")[1].strip().split("@")[0] for ln in run("ip", "-o", "link").splitlines())
        ipt = sorted(re.sub(r"\[\d+:\d+\]", "", ln) for ln in run("iptables-save").splitlines()
                     if ln and not ln.startswith("#"))
        nft = run("nft", "list", "table", "netdev", "ovs-isolate")
        ipam_dir = self.root / "nodes" / node / "ipam" / "antrea"
        leases = sorted(p.name for p in ipam_dir.iterdir() if p.name[0].isdigit()) if ipam_dir.is_dir() else []
        return {
            "links": links,
            "ovs_ports": sorted(self.vsctl(node, "list-ports", "br-int").split()),
            "ovs_interfaces": sorted(self.vsctl(node, "--bare", "--columns=name", "list", "Interface").split()),
            "flows": self.flow_texts(node),
            "ipam_leases": leases,
            "nft_isolate_chains": sorted(re.findall(r"chain (\S+)", nft)),
            "iptables": ipt,
            "pod_interfaces": sorted(i["interfaceName"] for i in self.agent(node, "/v1/podinterfaces")),
            "routes": sorted(run("ip", "-4", "route").splitlines()),
        }


def lab_netns(prefix: str = "pa-") -> list[str]:
    """The host's network namespaces named ``<prefix>*`` (one lab's, and its tests' probes)."""
    try:
        return sorted(n for n in os.listdir("/var/run/netns") if n.startswith(prefix))
    except FileNotFoundError:
        return []


@contextmanager
def applied(lab: RelLab, text: str) -> Iterator[None]:
    """Objects applied for the duration of a block, deleted after."""
    lab.apply_text(text)
    try:
        yield
    finally:
        lab.apply_text(text, delete=True, check=False)


def counter_sum(c: dict[str, int], prefix: str) -> int:
    return sum(v for k, v in c.items() if k.startswith(prefix))


def fmt_counts(c: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(Counter(c).items()))


def raw_http(sock_path: str, data: bytes, timeout: float = 10) -> tuple[int, str]:
    """Send raw bytes to a daemon's unix socket; (HTTP status, body) of the answer (0: no answer)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    out = b""
    try:
        s.connect(sock_path)
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading everything (413)
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            m = re.search(rb"content-length:\s*(\d+)", head, re.I)
            if sep and m and len(body) >= int(m.group(1)):
                break
    finally:
        s.close()
    m = re.match(rb"HTTP/1\.[01] (\d{3})", out)
    return (int(m.group(1)) if m else 0), out.partition(b"\r\n\r\n")[2].decode(errors="replace")


def http_request(method: str, path: str, body: bytes = b"", ctype: str = "application/json",
                 length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\nContent-Length: {n}\r\n\r\n"
            .encode() + body)


# ------------------------------------------------------------------------------------------ churn


@dataclass
class ChurnResult:
    cycles: int
    seconds: float
    add: list[float] = field(default_factory=list)  # CNI ADD latency as kubelet sees it (the executable)
    delete: list[float] = field(default_factory=list)
    agent_add: list[float] = field(default_factory=list)  # the agent's own handling time (/v1/stats)
    agent_delete: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    checked: int = 0  # cycles whose Pod pinged its gateway before being deleted


def churn(lab: RelLab, cycles: int, nodes: list[str], check_every: int = 25, tag: str = "",
          jobs: int | None = None) -> ChurnResult:
    """Pod add/delete cycles driven like kubelet: a network namespace, the CNI executable's ADD in
    the node's namespace, (every check_every-th cycle) a ping from the Pod to its gateway, CNI DEL,
    the namespace removed. Cycle i runs on nodes[i % len(nodes)]; each node does its cycles one after
    the other, the nodes in parallel; or, with ``jobs``, that many cycles run at a time in all (a
    kubelet plumbing ``jobs`` Pods at once), each worker taking every jobs-th cycle."""
    from pyantrea.lab import kubelet

    tag = tag or f"{os.getpid() % 100000:05d}"
    res = ChurnResult(cycles, 0.0)
    lock = threading.Lock()

    def one(i: int, node: str) -> None:
        ns = f"{lab.prefix}churn-{tag}-{i}"
        cid = f"{tag}{i:059x}"[-64:].rjust(64, "0")
        name = f"churn-{i}"
        conf = kubelet.cni_config(lab.agent_sock(node), "default", "10.96.0.10")
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            r = kubelet.run_cni("ADD", lab.ns(node), conf, kubelet.cni_env("ADD", cid, ns, "default", name, None))
            if not r.ok:
                with lock:
                    res.failures.append(f"{node} cycle {i}: {r.error_text()}")
            else:
                with lock:
                    res.add.append(r.seconds)
                if check_every and i % check_every == 0:
                    gw = r.json()["ips"][0]["gateway"]
                    p = subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W2", gw], capture_output=True)
                    with lock:
                        if p.returncode == 0:
                            res.checked += 1
                        else:
                            res.failures.append(f"{node} cycle {i}: the Pod cannot ping its gateway {gw}")
            d = kubelet.run_cni("DEL", lab.ns(node), conf, kubelet.cni_env("DEL", cid, ns, "default", name, None))
            with lock:
                if d.ok:
                    res.delete.append(d.seconds)
                else:
                    res.failures.append(f"{node} cycle {i} DEL: {d.error_text()}")
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)

    def worker(todo: list[tuple[int, str]]) -> None:
        for i, node in todo:
            try:
                one(i, node)
            except Exception as e:  # noqa: BLE001 - reported as a failure
                with lock:
                    res.failures.append(f"{node} cycle {i}: {type(e).__name__}: {e}")

    plan: dict[str, list[int]] = {n: [] for n in nodes}
    for i in range(cycles):
        plan[nodes[i % len(nodes)]].append(i)
    if jobs is None:
        work = [[(i, n) for i in idx] for n, idx in plan.items()]
    else:
        work = [[(i, nodes[i % len(nodes)]) for i in range(w, cycles, jobs)] for w in range(jobs)]
    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(todo,)) for todo in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res.seconds = time.monotonic() - t0
    for n in nodes:  # the agent's own view of its last cycles (/v1/stats keeps 200 of each)
        lat = lab.stats(n)["cniLatencies"]
        k = min(len(plan[n]), 200)
        res.agent_add += lat.get("ADD", [])[-k:]
        res.agent_delete += lat.get("DEL", [])[-k:]
    return res
