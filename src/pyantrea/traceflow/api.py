"""`antctl traceflow`: resolve -S/-D/-f, walk the packet (and its reply), build Antrea's result documents."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Any

from pyantrea.errors import InvalidArgument, NotFoundError
from pyantrea.traceflow import hostleg
from pyantrea.traceflow.engine import Engine, TraceflowError, flow_fields, parse_packet_flow
from pyantrea.traceflow.model import L4, HostStep, Packet, PassStep, Path, TraceBackend


@dataclass(frozen=True)
class Spec:
    source: str  # ns/pod
    destination: str  # ns/pod | ns/service | ip (as the user meant it, normalized)
    dest_kind: str  # pod | service | ip
    src_node: str
    packet: Packet
    endpoint: str | None
    reply: bool
    name: str


def _ns_name(s: str) -> tuple[str, str]:
    s = s.strip()
    if "/" in s:
        ns, _, name = s.partition("/")
        if not ns or not name or "/" in name:
            raise InvalidArgument(f"malformed Pod/Service {s!r}: want [ns/]name")
        return ns, name
    if not s:
        raise InvalidArgument("empty -S/-D")
    return "default", s


def _is_ip(s: str) -> bool:
    try:
        ipaddress.IPv4Address(s.strip())
        return True
    except ValueError:
        return False


def resolve_spec(engine: Engine, source: str, destination: str, flow: str = "", endpoint: str | None = None,
                 reply: bool = False) -> Spec:
    c = engine.cluster
    if not source:
        raise InvalidArgument("-S/--source is required: the source Pod (ns/pod)")
    if not destination:
        raise InvalidArgument("-D/--destination is required: ns/pod, ns/service or an IPv4 address")
    sns, sname = _ns_name(source)
    try:
        spod = c.pod(sns, sname)
    except NotFoundError:
        raise NotFoundError(f"source Pod {sns}/{sname} not found") from None
    if spod.host_network:
        raise InvalidArgument(f"source Pod {spod.key} uses the host network: it has no port on br-int to trace from")
    if not spod.node_name or engine.pod_iface(spod.node_name, spod.key) is None:
        raise NotFoundError(f"source Pod {spod.key} has no interface on a node's br-int")
    proto, sport, dport, extra = parse_packet_flow(flow)
    given_proto = any(t.strip() in ("icmp", "tcp", "udp", "sctp") for t in (flow or "").split(",")) or bool(sport or dport)
    dest_kind = "ip"
    if _is_ip(destination):
        dst_ip = destination.strip()
        dest_name = dst_ip
        p = engine.pod_of_ip(dst_ip)
        if p is not None:
            dest_kind = "pod"
    else:
        dns, dname = _ns_name(destination)
        dest_name = f"{dns}/{dname}"
        try:
            dpod = c.pod(dns, dname)
            if not dpod.pod_ip:
                raise NotFoundError(f"destination Pod {dest_name} has no IP")
            dst_ip = dpod.pod_ip
            dest_kind = "pod"
        except NotFoundError:
            try:
                svc = c.service(dns, dname)
            except NotFoundError:
                raise NotFoundError(f"destination {dest_name} not found: no Pod or Service of that name") from None
            if not svc.cluster_ip:
                raise NotFoundError(f"Service {dest_name} has no ClusterIP")
            dst_ip = svc.cluster_ip
            dest_kind = "service"
            if not svc.ports:
                raise TraceflowError(f"Service {dest_name} has no ports")
            if not given_proto or dport is None:
                cand = [sp for sp in svc.ports if not given_proto or sp.protocol.lower() == proto]
                if len(cand) != 1:
                    ports = ", ".join(f"{sp.protocol}/{sp.port}" for sp in svc.ports)
                    raise InvalidArgument(f"Service {dest_name} has ports {ports}: pick one with -f, "
                                          f"e.g. -f {svc.ports[0].protocol.lower()},"
                                          f"{svc.ports[0].protocol.lower()}_dst={svc.ports[0].port}")
                proto, dport = cand[0].protocol.lower(), cand[0].port
            if engine.proxy:  # AntreaProxy: OVS serves it; a port without endpoints shows in the trace
                if not any(sp.port == dport and sp.protocol.lower() == proto for sp in svc.ports):
                    ports = ", ".join(f"{sp.protocol}/{sp.port}" for sp in svc.ports)
                    raise InvalidArgument(f"Service {dest_name} has no port {proto.upper()}/{dport} (ports: {ports})")
            # kube-proxy's model decides: no DNAT and a REJECT rule = a Service without endpoints
            kp = engine.kube_proxy(spod.node_name) if not engine.proxy else None
            nat_pkt = hostleg.NatPacket(proto, spod.pod_ip or "", dst_ip, dport, False)
            if kp is not None and not [o for o in hostleg.nat_outcomes(kp, nat_pkt) if o.dnat_to]:
                rej = [o for o in hostleg.filter_outcomes(kp, nat_pkt)
                       if o.target is not None and o.target.kind == "REJECT"]
                if rej:
                    raise TraceflowError(f"Service {dest_name} has no endpoints: kube-proxy on {spod.node_name} "
                                         f"rejects {proto.upper()} {dst_ip}:{dport} ({rej[0].rules[-1].line()})")
                if not any(sp.port == dport and sp.protocol.lower() == proto for sp in svc.ports):
                    ports = ", ".join(f"{sp.protocol}/{sp.port}" for sp in svc.ports)
                    raise InvalidArgument(f"Service {dest_name} has no port {proto.upper()}/{dport} (ports: {ports})")
    if endpoint is not None:
        if dest_kind != "service" and not _is_service_ip(engine, spod.node_name, dst_ip):
            raise InvalidArgument("--endpoint picks the backend of a Service: the destination is not a Service")
        if not _is_ip(endpoint.rsplit(":", 1)[0]):
            raise InvalidArgument(f"--endpoint wants an IPv4 address (or ip:port), not {endpoint!r}")
    if proto == "icmp" and not any(e.startswith("icmp_type") for e in extra):
        icmp_type: int | None = 8
    else:
        icmp_type = None
    pkt = Packet(proto, spod.pod_ip or "", dst_ip, sport, dport, 64, icmp_type, extra)
    dst_label = dest_name.replace("/", "-")
    name = f"{sns}-{sname}-to-{dst_label}"
    return Spec(spod.key, dest_name, dest_kind, spod.node_name, pkt, endpoint, reply, name)


def _is_service_ip(engine: Engine, node: str, ip: str) -> bool:
    if engine.proxy:
        return any(e.cluster_ip == ip for e in engine.services(node))
    return any(sp.cluster_ip == ip for sp in engine.kube_proxy(node).services)


def trace_paths(engine: Engine, spec: Spec) -> list[Path]:
    paths = engine.walk(spec.packet, ("pod", spec.src_node, spec.source), endpoint=spec.endpoint)
    if not spec.reply:
        return paths
    out: list[Path] = []
    for p in paths:
        out.append(reply_path(engine, p))
    return out


def reply_path(engine: Engine, fwd: Path) -> Path:
    """The reply of `fwd`'s connection, from where the request ended, with the conntrack state it left."""
    o = fwd.outcome
    last = fwd.steps[-1] if fwd.steps else None
    if o.action == "Delivered" and isinstance(last, PassStep) and o.pod is not None:
        t = last.result.trace
        assert t is not None
        ff = flow_fields(t.final_flow)
        req = last.packet
        reply = req.reply()
        if ff.get("nw_src") and ff.get("nw_dst"):
            reply = reply.with_(src=ff["nw_dst"], dst=ff["nw_src"])
            if engine.proxy and req.protocol in L4 and ff.get("tp_dst", "").isdigit() and req.dport is not None:
                reply = reply.with_(sport=int(ff["tp_dst"]))  # the endpoint's port, after a Service's DNAT
        paths = engine.walk(reply, ("pod", o.node, o.pod), fwd.conntrack.copy(), direction="reply")
    elif o.action == "ForwardedOutOfOverlay" and isinstance(last, HostStep):
        reply = last.packet_out.reply()
        paths = engine.walk(reply, ("host", o.node), fwd.conntrack.copy(), direction="reply")
    else:
        return Path([], o, fwd.packet.reply(), fwd.endpoint, fwd.probability, fwd.conntrack, "reply",
                    {"noReply": f"the request was {o.action.lower()} ({o.reason}): there is no reply to trace",
                     "forward": fwd})
    p = paths[0]
    p.endpoint = fwd.endpoint
    p.probability = fwd.probability
    p.extras["forward"] = fwd
    return p


def traceflow(backend: TraceBackend, source: str, destination: str, flow: str = "", endpoint: str | None = None,
              reply: bool = False, engine: Engine | None = None) -> list[dict[str, Any]]:
    """Antrea's Traceflow result documents (one per kube-proxy endpoint traced)."""
    from pyantrea.traceflow.report import document

    engine = engine or Engine(backend)
    spec = resolve_spec(engine, source, destination, flow, endpoint, reply)
    paths = trace_paths(engine, spec)
    now = int(time.time())
    return [document(engine, spec, p, now) for p in paths]


def run(backend: TraceBackend, source: str, destination: str, flow: str = "", endpoint: str | None = None,
        reply: bool = False) -> tuple[Engine, Spec, list[Path]]:
    engine = Engine(backend)
    spec = resolve_spec(engine, source, destination, flow, endpoint, reply)
    return engine, spec, trace_paths(engine, spec)
