"""`antctl traceflow --live`: send a real packet and report where it went, beside the prediction.

Antrea tags a packet-out and collects packet-ins. pyantrea does not touch the pipeline; it observes:

1. **the probe**: a real connection attempt from the source Pod's network namespace
   (`pyantrea lab exec NS/POD -- ...`): TCP `connect()` (bound to the `-f` source port when given),
   one UDP datagram, or one ICMP echo (`ping -c 1`). Its result (connected / refused / timed out)
   says whether an answer came back.
2. **tcpdump at the destination**: on every Pod the request can land on (a Pod destination, or
   each kube-proxy endpoint of a Service), started before the probe, filtered on the packet's
   protocol, client address and destination port. It says which Pod the real packet reached.
3. **flow counters**: every node's flows with `n_packets` (the agent's `/v1/ovsflows?format=of13`)
   before and after. Each predicted hop (node, table, priority, match) is checked for a counter
   that moved; drop flows that moved are reported, so a real drop is placed in its table.

Counters are shared by all traffic (the probe's own handshake and replies, the lab's other
traffic), so they confirm hops rather than prove that only this packet took them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from typing import Any

from pyantrea.errors import InvalidArgument
from pyantrea.traceflow.engine import Engine
from pyantrea.traceflow.model import PassStep, Path

PROBE_TIMEOUT = 1.5


def _lab_exec(backend: Any, target: str, cmd: list[str]) -> list[str]:
    return [sys.executable, "-m", "pyantrea", "lab", "exec", target, "--", *cmd]


def _env(backend: Any) -> dict[str, str]:
    env = dict(os.environ)
    env["PYANTREA_LAB_DIR"] = str(backend.dir)
    return env


PROBE = r"""
import socket, sys, time, errno
proto, dst, dport, sport, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3] or 0), int(sys.argv[4] or 0), float(sys.argv[5])
t0 = time.monotonic()
def done(what):
    print(f"{what} {1000 * (time.monotonic() - t0):.1f}ms")
    sys.exit(0)
if proto == "tcp":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sport:
        s.bind(("", sport))
    s.settimeout(timeout)
    try:
        s.connect((dst, dport))
        done("connected")
    except ConnectionRefusedError:
        done("refused")
    except (socket.timeout, TimeoutError):
        done("timeout")
    except OSError as e:
        done("error:" + (errno.errorcode.get(e.errno, str(e.errno)) if e.errno else str(e)))
elif proto == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if sport:
        s.bind(("", sport))
    s.settimeout(timeout)
    s.connect((dst, dport))
    s.send(b"pyantrea traceflow probe")
    try:
        s.recv(2048)
        done("answered")
    except ConnectionRefusedError:
        done("refused")
    except (socket.timeout, TimeoutError):
        done("sent-no-answer")
elif proto == "sctp":
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
    except OSError as e:
        done("error:sctp-unsupported")
    s.settimeout(timeout)
    try:
        s.connect((dst, dport))
        done("connected")
    except ConnectionRefusedError:
        done("refused")
    except (socket.timeout, TimeoutError):
        done("timeout")
    except OSError as e:
        done("error:" + str(e))
"""


def probe_command(spec: Any) -> list[str]:
    p = spec.packet
    if p.protocol == "icmp":
        return ["ping", "-n", "-c", "1", "-W", str(int(PROBE_TIMEOUT + 0.5)), p.dst]
    return [sys.executable, "-c", PROBE, p.protocol, p.dst, str(p.dport or 0), str(p.sport or 0), str(PROBE_TIMEOUT)]


def _probe_result(proto: str, out: str, rc: int) -> str:
    if proto == "icmp":
        return "answered" if " 1 received" in out or "1 packets received" in out else "no-answer"
    words = out.strip().split()
    return words[0] if words else f"failed (exit {rc})"


class _Capture:
    """tcpdump in one Pod's network namespace, waiting for the first matching packet."""

    def __init__(self, backend: Any, pod: str, bpf: str, timeout: float):
        cmd = ["timeout", str(timeout), "tcpdump", "-i", "any", "-n", "-l", "-c", "1", "-Q", "in", bpf]
        self.pod = pod
        self.proc = subprocess.Popen(_lab_exec(backend, pod, cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=_env(backend))
        self.ready = threading.Event()
        self.err: list[str] = []
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line.rstrip())
            if "listening on" in line:
                self.ready.set()
        self.ready.set()

    def result(self) -> list[str]:
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return [line for line in out.splitlines() if line.strip()]


def _stats(backend: Any, nodes: list[str]) -> dict[str, dict[tuple[int, int, str], int]]:
    out: dict[str, dict[tuple[int, int, str], int]] = {}
    for n in nodes:
        d: dict[tuple[int, int, str], int] = {}
        for t, p, m, c in backend.flow_stats(n):
            d[(t, p, m)] = d.get((t, p, m), 0) + c
        out[n] = d
    return out


def _settled(backend: Any, nodes: list[str], wait: float = 3.0) -> dict[str, dict[tuple[int, int, str], int]]:
    """Counters once the datapath's revalidators pushed the probe's stats (two equal snapshots)."""
    time.sleep(0.6)
    prev = _stats(backend, nodes)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(0.4)
        cur = _stats(backend, nodes)
        if cur == prev:
            return cur
        prev = cur
    return prev


def _candidates(engine: Engine, paths: list[Path]) -> dict[str, Path]:
    """Destination Pod -> the forward path headed there: the Pod it is delivered to, else the Pod its
    last pass was addressed to (a dropped request is watched for where it would have arrived)."""
    out: dict[str, Path] = {}
    for p in paths:
        fwd = p.extras.get("forward", p)
        if fwd.outcome.action == "Delivered" and fwd.outcome.pod:
            out.setdefault(fwd.outcome.pod, fwd)
            continue
        passes = [s for s in fwd.steps if isinstance(s, PassStep)]
        pod = engine.pod_of_ip(passes[-1].packet.dst) if passes else None
        if pod is not None:
            out.setdefault(pod.key, fwd)
    return out


def _bpf(engine: Engine, fwd: Path, spec: Any) -> str:
    last = [s for s in fwd.steps if isinstance(s, PassStep)][-1]
    pkt = last.packet
    parts = [f"ip and src host {pkt.src}"]
    if pkt.protocol in ("tcp", "udp", "sctp"):
        parts.append(pkt.protocol)
        if pkt.dport is not None:
            parts.append(f"dst port {pkt.dport}")
    elif pkt.protocol == "icmp":
        parts.append("icmp[icmptype] == icmp-echo")
    return " and ".join(parts)


def observe_all(backend: Any, engine: Engine, spec: Any, paths: list[Path]) -> list[dict[str, Any]]:
    """Send one real packet for the trace and compare what happened with each predicted path."""
    if not hasattr(backend, "flow_stats"):
        raise InvalidArgument("--live needs the running lab: leave out --cluster")
    nodes = sorted({n.name for n in engine.cluster.networks
                    if (backend.dir / "nodes" / n.name / "agent.sock").exists()})
    cands = _candidates(engine, paths)
    before = _stats(backend, nodes)
    caps = [_Capture(backend, pod, _bpf(engine, fwd, spec), PROBE_TIMEOUT + 4) for pod, fwd in cands.items()]
    for c in caps:
        c.ready.wait(8)
    cmd = probe_command(spec)
    t0 = time.time()
    pr = subprocess.run(_lab_exec(backend, spec.source, cmd), capture_output=True, text=True, timeout=30,
                        env=_env(backend))
    result = _probe_result(spec.packet.protocol, pr.stdout, pr.returncode)
    arrived: dict[str, list[str]] = {c.pod: c.result() for c in caps}
    after = _settled(backend, nodes)
    moved = {n: {k: after[n].get(k, 0) - before[n].get(k, 0) for k in after[n]
                 if after[n].get(k, 0) > before[n].get(k, 0)} for n in nodes}
    reached = sorted(p for p, lines in arrived.items() if lines)
    shown = " ".join(shlex.quote(x) for x in cmd if "\n" not in x)
    probe = {"command": f"pyantrea lab exec {spec.source} -- {shown}" if spec.packet.protocol == "icmp"
             else f"pyantrea lab exec {spec.source} -- python3 -c <probe> {spec.packet.protocol} {spec.packet.dst} "
                  f"{spec.packet.dport or ''}".rstrip(),
             "sent": int(t0), "result": result}
    if pr.returncode != 0 and pr.stderr.strip():
        probe["stderr"] = pr.stderr.strip().splitlines()[-1]
    out = []
    for p in paths:
        out.append(_compare(engine, p, probe, reached, arrived, moved, bool(caps)))
    return out


def _predicted(path: Path) -> list[tuple[str, int, int, str, str]]:
    """(node, table, priority, match, flow) of every predicted br-int hop, in order."""
    from pyantrea.traceflow.engine import hop_flow

    out = []
    for s in path.steps:
        if isinstance(s, PassStep):
            for h in s.hops:
                out.append((s.node, h.table, h.priority, h.match, hop_flow(h)))
    return out


def _compare(engine: Engine, path: Path, probe: dict[str, Any], reached: list[str], arrived: dict[str, list[str]],
             moved: dict[str, dict[tuple[int, int, str], int]], captured: bool) -> dict[str, Any]:
    fwd: Path = path.extras.get("forward", path)
    d: dict[str, Any] = {"probe": probe}
    if captured:
        d["arrivedAt"] = reached
        for pod in reached:
            d.setdefault("capture", {})[pod] = arrived[pod][0]
    hops = _predicted(path)
    seen = [h for h in hops if moved.get(h[0], {}).get((h[1], h[2], h[3]), 0) > 0]
    missing = [h for h in hops if h not in seen]
    d["countersMoved"] = {"predictedHops": len(hops), "seen": len(seen),
                          "notSeen": [f"{n} table {t}: {flow}" for n, t, _, _, flow in missing]}
    drops = []
    for n, m in sorted(moved.items()):
        for (t, p, match), delta in sorted(m.items()):
            if p > 0 and _is_drop_flow(engine, n, t, p):
                drops.append(f"{n} table {t} priority {p}" + (f" {match}" if match else "") + f" (+{delta})")
    if drops:
        d["dropFlowsHit"] = drops
    # the verdict of the real packet
    o = fwd.outcome
    if path.direction == "reply":
        answered = probe["result"] in ("connected", "answered", "refused")
        agrees = answered == (path.outcome.action == "Delivered")
        d["observed"] = "the reply came back to the client" if answered else "no reply reached the client"
    elif o.action == "Delivered":
        if not reached:
            agrees = False
            d["observed"] = "the request reached no destination Pod"
        elif o.pod in reached:
            agrees = True
            d["observed"] = f"the request reached {o.pod}"
        else:
            agrees = None
            d["observed"] = (f"this probe reached {', '.join(reached)} (kube-proxy's random pick): compare with that "
                             f"endpoint's path")
    elif o.action == "Dropped":
        where = f"{o.node} table {o.table}" if o.table is not None else o.node
        hit = any(x.startswith(where + " ") for x in drops)
        agrees = not reached and (hit or o.table is None)
        d["observed"] = ("the request reached " + ", ".join(reached)) if reached else (
            "the request reached no Pod" + (f"; the drop flow of {where} counted it" if hit else ""))
    else:
        agrees = not reached
        d["observed"] = "the request left the overlay (not observed further)" if not reached else \
            f"the request reached {', '.join(reached)}"
    if agrees is not None and d["countersMoved"]["notSeen"] and path.direction == "forward" \
            and (o.action != "Delivered" or o.pod in reached):
        agrees = agrees and len(seen) == len(hops)
    d["agrees"] = agrees
    return d


def _is_drop_flow(engine: Engine, node: str, table: int, priority: int) -> bool:
    from pyantrea.agent.openflow import tables as T

    return (table, priority) in ((T.EGRESS_DEFAULT, 200), (T.INGRESS_DEFAULT, 200), (T.CT_STATE, 190))


def observe(backend: Any, engine: Engine, spec: Any, path: Path) -> dict[str, Any]:
    return observe_all(backend, engine, spec, [path])[0]


def render_live(live: dict[str, Any]) -> str:
    lines = ["", "Live (a real packet from the source Pod):"]
    pr = live["probe"]
    lines.append(f"  probe: {pr['command']}: {pr['result']}")
    if "arrivedAt" in live:
        lines.append(f"  tcpdump at the destination: {', '.join(live['arrivedAt']) or 'nothing arrived'}")
        for pod, line in live.get("capture", {}).items():
            lines.append(f"    {pod}: {line}")
    c = live["countersMoved"]
    lines.append(f"  flow counters: {c['seen']}/{c['predictedHops']} predicted hops counted packets")
    for x in c["notSeen"]:
        lines.append(f"    not counted: {x}")
    for x in live.get("dropFlowsHit", []):
        lines.append(f"  drop flow counted: {x}")
    agrees = {True: "yes", False: "NO", None: "n/a"}[live["agrees"]]
    lines.append(f"  observed: {live['observed']}; agrees with the prediction: {agrees}")
    return "\n".join(lines) + "\n"

