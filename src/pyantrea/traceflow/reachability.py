"""`antctl reachability`: who can reach whom, by tracing every ordered pair of Pods through the flows.

There is no policy model here: each verdict is the end of a traceflow walk (the source node's
pipeline, then the destination node's after the tunnel), and each deny names the table and the
policy rules the dropping flow belongs to. Offline, every node's sandbox keeps one persistent
unixctl connection; the nodes' sandboxes are separate ovs-vswitchd processes, so the walks of
different source nodes run in parallel threads.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pyantrea.apis.k8s import Pod
from pyantrea.errors import InvalidArgument
from pyantrea.traceflow.engine import Engine
from pyantrea.traceflow.model import Packet, TraceBackend

PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True)
class PortSpec:
    protocol: str  # TCP | UDP | SCTP
    port: int

    def __str__(self) -> str:
        return f"{self.protocol}/{self.port}"


def parse_ports(specs: list[str] | None) -> list[PortSpec]:
    """`--port TCP/80 --port udp/53,8080` -> [TCP/80, UDP/53, TCP/8080]; default TCP/80."""
    out: list[PortSpec] = []
    for spec in specs or []:
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            m = re.fullmatch(r"(?:([A-Za-z]+)/)?(\d+)", item)
            if not m:
                raise InvalidArgument(f"--port {item!r}: want PROTO/PORT, e.g. TCP/80 or udp/53")
            proto = (m[1] or "TCP").upper()
            if proto not in PROTOCOLS:
                raise InvalidArgument(f"--port {item!r}: protocol must be TCP, UDP or SCTP")
            port = int(m[2])
            if not 1 <= port <= 65535:
                raise InvalidArgument(f"--port {item!r}: port out of range 1-65535")
            ps = PortSpec(proto, port)
            if ps not in out:
                out.append(ps)
    return out or [PortSpec("TCP", 80)]


def pods_of(engine: Engine) -> list[Pod]:
    """The Pods that have their own interface (not hostNetwork), by namespace/name."""
    out = []
    for p in engine.cluster.pods:
        if p.host_network or p.terminated or not p.pod_ip or not p.node_name:
            continue
        if engine.pod_iface(p.node_name, p.key) is None:
            continue
        out.append(p)
    return sorted(out, key=lambda p: p.key)


def _verdict(engine: Engine, a: Pod, b: Pod, ps: PortSpec) -> dict[str, Any]:
    assert a.pod_ip and b.pod_ip and a.node_name
    pkt = Packet(ps.protocol.lower(), a.pod_ip, b.pod_ip, None, ps.port, 64)
    paths = engine.walk(pkt, ("pod", a.node_name, a.key))
    o = paths[0].outcome
    d: dict[str, Any] = {"from": a.key, "to": b.key, "protocol": ps.protocol, "port": ps.port}
    if o.action == "Delivered" and o.pod == b.key:
        d["verdict"] = "allow"
        if o.allowed_by or o.passed:  # Antrea-native rules decided: which ones
            d["reason"] = {"node": o.node, "action": o.action,
                           **({"allowedBy": list(o.allowed_by)} if o.allowed_by else {}),
                           **({"passedBy": list(o.passed)} if o.passed else {})}
        return d
    d["verdict"] = "deny"
    reason: dict[str, Any] = {"node": o.node, "action": o.action}
    if o.table is not None:
        reason["table"] = o.table
        reason["tableName"] = o.table_name
    if o.flow:
        reason["flow"] = o.flow
    if o.policies:
        reason["networkPolicies"] = list(o.policies)
    if o.rules:
        reason["rules"] = list(o.rules)
    if o.passed:
        reason["passedBy"] = list(o.passed)
    if o.action == "Delivered" and o.pod != b.key:
        reason["message"] = f"delivered to {o.pod or o.port} instead"
    else:
        reason["message"] = o.reason
    d["reason"] = reason
    return d


def _service_verdicts(engine: Engine, a: Pod, svc: Any, sp: Any) -> list[dict[str, Any]]:
    """Pod `a` to one Service port: one row per endpoint the Service can pick (kube-proxy's chains, or
    AntreaProxy's group), each the end of that walk."""
    assert a.pod_ip and a.node_name and svc.cluster_ip
    pkt = Packet(sp.protocol.lower(), a.pod_ip, svc.cluster_ip, None, sp.port, 64)
    rows = []
    for path in engine.walk(pkt, ("pod", a.node_name, a.key)):
        o = path.outcome
        d: dict[str, Any] = {"from": a.key, "to": svc.key, "protocol": sp.protocol, "port": sp.port,
                             "endpoint": path.endpoint}
        d["verdict"] = "deny" if o.action == "Dropped" else "allow"
        if d["verdict"] == "deny":
            reason: dict[str, Any] = {"node": o.node, "action": o.action, "message": o.reason}
            if o.table is not None:
                reason["table"] = o.table
                reason["tableName"] = o.table_name
            if o.rules:
                reason["rules"] = list(o.rules)
            d["reason"] = reason
        elif o.pod:
            d["pod"] = o.pod
        rows.append(d)
    return rows


def reachability(backend: TraceBackend, ports: list[PortSpec], engine: Engine | None = None,
                 threads: bool = True, services: bool = False) -> list[dict[str, Any]]:
    """Every ordered pair of distinct Pods x every port, in (from, to, port) order; with `services`,
    then every Pod to every Service port (one row per endpoint), in (from, to, port, endpoint) order."""
    engine = engine or Engine(backend)
    pods = pods_of(engine)
    nodes = sorted({p.node_name for p in pods if p.node_name})
    starter = getattr(backend, "start_sandboxes", None)
    if starter is not None:
        starter(nodes)
    for n in nodes:  # fill the engine's caches before threads share it
        engine.net(n)
        engine.rules(n)
        engine.routes(n)
    by_node: dict[str, list[Pod]] = {}
    for p in pods:
        by_node.setdefault(p.node_name or "", []).append(p)

    svc_ports = [(s, sp) for s in sorted(engine.cluster.services, key=lambda s: s.key) if s.cluster_ip
                 for sp in s.ports] if services else []

    def run_node(node: str) -> list[dict[str, Any]]:
        res = []
        for a in by_node[node]:
            for b in pods:
                if b.key == a.key:
                    continue
                for ps in ports:
                    res.append(_verdict(engine, a, b, ps))
            for svc, sp in svc_ports:
                res += _service_verdicts(engine, a, svc, sp)
        return res

    results: list[dict[str, Any]] = []
    if threads and len(by_node) > 1:
        with ThreadPoolExecutor(max_workers=len(by_node)) as ex:
            for chunk in ex.map(run_node, sorted(by_node)):
                results += chunk
    else:
        for n in sorted(by_node):
            results += run_node(n)
    order = {str(ps): i for i, ps in enumerate(ports)}
    pairs = [d for d in results if "endpoint" not in d]
    pairs.sort(key=lambda d: (d["from"], d["to"], order[f"{d['protocol']}/{d['port']}"]))
    svc = [d for d in results if "endpoint" in d]
    svc.sort(key=lambda d: (d["from"], d["to"], d["protocol"], d["port"], d["endpoint"] or ""))
    return pairs + svc


def render_table(results: list[dict[str, Any]], ports: list[PortSpec]) -> str:
    """One matrix per port: rows are sources, columns destinations (numbered like the rows); then
    the Services, one line per source, Service port and endpoint."""
    svc_rows = [r for r in results if "endpoint" in r]
    results = [r for r in results if "endpoint" not in r]
    pods = sorted({r["from"] for r in results} | {r["to"] for r in results})
    idx = {p: i + 1 for i, p in enumerate(pods)}
    w = max((len(p) for p in pods), default=4)
    nw = len(str(len(pods)))
    out: list[str] = []
    for ps in ports:
        cell = {(r["from"], r["to"]): r for r in results if r["protocol"] == ps.protocol and r["port"] == ps.port}
        out.append(f"{ps}: . allow  X deny  - same Pod (rows: from, columns: to)")
        head = " " * (nw + 2 + w) + " " + " ".join(str(idx[p]).rjust(nw) for p in pods)
        out.append(head.rstrip())
        for a in pods:
            row = []
            for b in pods:
                if a == b:
                    c = "-"
                else:
                    r = cell.get((a, b))
                    c = "?" if r is None else ("." if r["verdict"] == "allow" else "X")
                row.append(c.rjust(nw))
            out.append(f"{str(idx[a]).rjust(nw)}. {a.ljust(w)} " + " ".join(row))
        denies = [r for r in results if r["protocol"] == ps.protocol and r["port"] == ps.port and r["verdict"] == "deny"]
        if denies:
            out.append("denied:")
            for r in denies:
                rs = r.get("reason", {})
                where = f"{rs.get('node', '?')} table {rs['table']} {rs.get('tableName', '')}" if "table" in rs \
                    else rs.get("node", "?")
                why = "; ".join(rs.get("rules", [])) or rs.get("message", "")
                out.append(f"  {r['from']} -> {r['to']}: {where}: {why}")
        out.append("")
    if svc_rows:
        out.append("Services: from -> ns/service PROTO/port (endpoint): verdict")
        for r in svc_rows:
            why = ""
            if r["verdict"] == "deny":
                rs = r.get("reason", {})
                where = f"{rs.get('node', '?')} table {rs['table']} {rs.get('tableName', '')}" if "table" in rs \
                    else rs.get("node", "?")
                why = f": {where}: " + ("; ".join(rs.get("rules", [])) or rs.get("message", ""))
            out.append(f"  {r['from']} -> {r['to']} {r['protocol']}/{r['port']} ({r['endpoint'] or 'no endpoint'}): "
                       f"{r['verdict']}{why}")
        out.append("")
    return "\n".join(out)


def render(results: list[dict[str, Any]], ports: list[PortSpec], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(results, indent=2, sort_keys=False) + "\n"  # = antctl.output.dump(results, "json")
    return render_table(results, ports)
