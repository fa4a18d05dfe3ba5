"""A walked path as Antrea's Traceflow result (spec §13.1/§13.3/§13.4), plus pyantrea's `hops` and `legs`.

Field order is spec §13.4's: name, phase, source, destination, results[node, role, timestamp,
observations[component, componentInfo, action, pod, ..., translatedDstIP, tunnelDstIP]], then
pyantrea's additions (per node `hops` and `legs`; top level `direction`, `packet`, `endpoint`,
`verdict`).
"""

from __future__ import annotations

from typing import Any

from pyantrea.agent.openflow import tables as T
from pyantrea.traceflow.engine import Engine, flow_fields, hop_flow
from pyantrea.traceflow.model import HostStep, PassStep, Path

OBS_ORDER = ("component", "componentInfo", "action", "pod", "dstMAC", "networkPolicy", "networkPolicyRule", "ttl",
             "translatedSrcIP", "translatedDstIP", "tunnelDstIP")


def antrea_ref(engine: Engine, key: str) -> str:
    """Antrea Traceflow's name of an Antrea-native policy: `AntreaClusterNetworkPolicy:name`,
    `AntreaNetworkPolicy:ns/name`."""
    try:
        pol = engine.b.policy_state().policies[key]
    except (KeyError, AttributeError):
        return key
    return f"{pol.type}:{pol.name if not pol.namespace else pol.namespace + '/' + pol.name}"


def _obs(**kw: Any) -> dict[str, Any]:
    return {k: kw[k] for k in OBS_ORDER if kw.get(k) not in (None, "")}


def _is_conj(h: Any) -> bool:
    return h.priority == 190 and h.match.startswith("conj_id=")


def conj_id(h: Any) -> int | None:
    v = flow_fields(h.match).get("conj_id")
    return int(v) if v is not None else None


def pass_observations(engine: Engine, path: Path, i: int) -> list[dict[str, Any]]:
    step = path.steps[i]
    assert isinstance(step, PassStep)
    obs: list[dict[str, Any]] = []
    hops = step.hops
    last_step = i == len(path.steps) - 1
    dropped_here = last_step and path.outcome.action in ("Dropped", "Rejected")
    if step.entry == "pod":
        if not (dropped_here and path.outcome.table == T.SPOOF_GUARD):
            obs.append(_obs(component="SpoofGuard", action="Forwarded"))
    else:
        obs.append(_obs(component="Forwarding", componentInfo="Classification", action="Received"))
    if step.lb is not None and step.lb.endpoint is not None:  # AntreaProxy's DNAT, in OVS (spec §13.3 item 2)
        ip = step.lb.endpoint.rsplit(":", 1)[0]
        p = engine.pod_of_ip(ip)
        obs.append(_obs(component="LB", action="Forwarded", pod=p.key if p else None, translatedDstIP=ip))
    rules = engine.rules(step.node)
    for n, h in enumerate(hops):
        antrea = engine.antrea_rule(step.node, h)
        if antrea is not None:
            r = antrea[0]
            if dropped_here and n == len(hops) - 1 and r.action in ("Drop", "Reject"):
                continue  # the drop observation below names it
            obs.append(_obs(component="NetworkPolicy", componentInfo=engine._tname(h.table), action="Forwarded",
                            networkPolicy=antrea_ref(engine, r.policy), networkPolicyRule=r.name))
            continue
        if h.table in (T.EGRESS_RULE, T.INGRESS_RULE) and _is_conj(h):
            cid = conj_id(h)
            r = rules.get(cid) if cid is not None else None
            obs.append(_obs(component="NetworkPolicy",
                            componentInfo="EgressRule" if h.table == T.EGRESS_RULE else "IngressRule",
                            action="Forwarded", networkPolicy=r.policy if r else f"conj_id {cid}"))
    o = path.outcome
    if dropped_here:
        tb = o.table
        comp = "Forwarding"
        if tb == T.SPOOF_GUARD:
            comp = "SpoofGuard"
        elif tb in (T.EGRESS_RULE, T.EGRESS_DEFAULT, T.INGRESS_RULE, T.INGRESS_DEFAULT, T.ANP_EGRESS_RULE,
                    T.ANP_INGRESS_RULE):
            comp = "NetworkPolicy"
        last = engine.antrea_rule(step.node, hops[-1]) if hops else None
        if last is not None and last[0].action in ("Drop", "Reject"):
            obs.append(_obs(component=comp, componentInfo=o.table_name or "", action=o.action,
                            networkPolicy=antrea_ref(engine, last[0].policy), networkPolicyRule=last[0].name))
            return obs
        obs.append(_obs(component=comp, componentInfo=o.table_name or "", action="Dropped",
                        networkPolicy=",".join(o.policies)))
        return obs
    t = step.result.trace
    assert t is not None
    net = engine.net(step.node)
    out_name = step.result.port_names.get(t.out_port, str(t.out_port)) if t.out_port is not None else ""
    if out_name == net.tunnel_name:
        obs.append(_obs(component="Forwarding", componentInfo="Output", action="Forwarded", tunnelDstIP=t.tun_dst))
    elif last_step and o.action == "Delivered":
        obs.append(_obs(component="Forwarding", componentInfo="Output", action="Delivered", pod=o.pod))
    else:
        obs.append(_obs(component="Forwarding", componentInfo="Output", action="Forwarded"))
    return obs


def host_observations(engine: Engine, path: Path, i: int) -> list[dict[str, Any]]:
    step = path.steps[i]
    assert isinstance(step, HostStep)
    obs: list[dict[str, Any]] = []
    last_step = i == len(path.steps) - 1
    o = path.outcome
    if step.nat is not None:
        dst = step.packet_out.dst
        p = engine.pod_of_ip(dst)
        obs.append(_obs(component="LB", componentInfo="kube-proxy", action="Forwarded", pod=p.key if p else None,
                        translatedSrcIP=step.packet_out.src if step.packet_out.src != step.packet_in.src else None,
                        translatedDstIP=dst))
    elif step.unnat is not None:
        obs.append(_obs(component="LB", componentInfo="kube-proxy", action="Forwarded",
                        translatedSrcIP=step.packet_out.src if step.packet_out.src != step.packet_in.src else None,
                        translatedDstIP=step.packet_out.dst if step.packet_out.dst != step.packet_in.dst else None))
    elif step.reject is not None:
        obs.append(_obs(component="LB", componentInfo="kube-proxy", action="Dropped"))
        return obs
    if last_step:
        action = o.action if o.action != "Delivered" else "Forwarded"
        src = step.packet_out.src if (step.masquerade and step.nat is None) else None
        obs.append(_obs(component="Routing", componentInfo="HostRouting", action=action, translatedSrcIP=src))
    else:
        obs.append(_obs(component="Routing", componentInfo="HostRouting", action="Forwarded"))
    return obs


def pass_leg(engine: Engine, step: PassStep, first_hop: int) -> dict[str, Any]:
    t = step.result.trace
    assert t is not None
    out = step.result.port_names.get(t.out_port, str(t.out_port)) if t.out_port is not None else None
    net = engine.net(step.node)
    leg: dict[str, Any] = {
        "kind": "pipeline",
        "inPort": step.in_port,
        "conntrack": step.conntrack,
    }
    if step.ct_mark:
        leg["ctMark"] = f"0x{step.ct_mark:x}"
    leg.update({
        "flow": step.result.flow,
        "ctNext": list(step.request.ct_next),
        "command": step.request.command(),
        "firstHop": first_hop,
        "hops": len(t.hops),
        "verdict": t.verdict,
        "outPort": out,
        "tunDst": t.tun_dst if out == net.tunnel_name else None,
    })
    if step.committed:
        leg["committed"] = {"ctMark": f"0x{step.committed_mark:x}" if step.committed_mark else None}
    if step.lb is not None:  # AntreaProxy's load balancing in this pass
        lb = step.lb
        leg["loadBalancing"] = {"service": lb.service, "protocol": lb.protocol, "address": lb.address,
                                "group": lb.group_id, "bucket": lb.bucket, "buckets": lb.buckets,
                                "endpoint": lb.endpoint, "dpHash": lb.dp_hash}
    if step.unnat:
        leg["conntrackNAT"] = step.unnat
    return leg


def host_leg(step: HostStep) -> dict[str, Any]:
    leg: dict[str, Any] = {"kind": "host", "packetIn": step.packet_in.describe()}
    if step.unnat:
        leg["conntrack"] = step.unnat
    if step.nat is not None:
        n = step.nat
        leg["kubeProxy"] = {
            "service": n.service,
            "chains": list(n.chains),
            "endpointChain": n.endpoint_chain,
            "dnat": n.dnat_to,
            "probability": round(n.probability, 5),
            "rules": [f"-t nat {r.line()}" for r in n.rules],
        }
    if step.reject is not None:
        leg["kubeProxy"] = {"reject": [f"-t filter {r.line()}" for r in step.reject.rules]}
    if step.masquerade:
        leg["masquerade"] = step.masquerade
    if step.route is not None:
        leg["route"] = step.route.text
    if step.arp is not None:
        t = step.arp.trace
        leg["arp"] = {
            "request": f"who-has {step.route.via if step.route else '?'}",
            "answer": step.arp_mac,
            "flow": step.arp.flow,
            "hops": [{"table": h.table, "priority": h.priority, "flow": hop_flow(h)} for h in (t.hops if t else ())],
        }
    leg["packetOut"] = step.packet_out.describe()
    if step.notes:
        leg["notes"] = list(step.notes)
    return leg


def node_results(engine: Engine, path: Path, now: int) -> list[dict[str, Any]]:
    order: list[str] = []
    by_node: dict[str, dict[str, Any]] = {}
    for i, s in enumerate(path.steps):
        if s.node not in by_node:
            order.append(s.node)
            by_node[s.node] = {"node": s.node, "role": "Sender" if not order[:-1] else "Receiver", "timestamp": now,
                               "observations": [], "hops": [], "legs": []}
        r = by_node[s.node]
        if isinstance(s, PassStep):
            r["observations"] += pass_observations(engine, path, i)
            r["legs"].append(pass_leg(engine, s, len(r["hops"])))
            r["hops"] += [{"table": h.table, "priority": h.priority, "flow": hop_flow(h)} for h in s.hops]
        else:
            r["observations"] += host_observations(engine, path, i)
            r["legs"].append(host_leg(s))
    if not order and path.outcome.node:
        return []
    return [by_node[n] for n in order]


def verdict(path: Path) -> dict[str, Any]:
    o = path.outcome
    v: dict[str, Any] = {"action": o.action, "node": o.node}
    if o.pod:
        v["pod"] = o.pod
    if o.port:
        v["port"] = o.port
    if o.table is not None:
        v["table"] = o.table
        v["tableName"] = o.table_name
    if o.flow:
        v["flow"] = o.flow
    if o.policies:
        v["networkPolicies"] = list(o.policies)
    if o.rules:
        v["rules"] = list(o.rules)
    if o.allowed_by:
        v["allowedBy"] = list(o.allowed_by)
    if o.passed:
        v["passedBy"] = list(o.passed)
    v["reason"] = o.reason
    return v


def document(engine: Engine, spec: Any, path: Path, now: int) -> dict[str, Any]:
    no_reply = path.extras.get("noReply")
    doc: dict[str, Any] = {
        "name": spec.name + ("-reply" if path.direction == "reply" else ""),
        "phase": "Failed" if no_reply else "Succeeded",
    }
    if no_reply:
        doc["reason"] = no_reply
    doc["source"] = spec.source
    doc["destination"] = spec.destination
    doc["results"] = node_results(engine, path, now)
    doc["direction"] = path.direction
    p = path.packet
    doc["packet"] = {"protocol": p.protocol.upper(), "srcIP": p.src, "dstIP": p.dst}
    if p.sport is not None:
        doc["packet"]["srcPort"] = p.sport
    if p.dport is not None:
        doc["packet"]["dstPort"] = p.dport
    if path.endpoint:
        doc["endpoint"] = path.endpoint
        doc["probability"] = round(path.probability, 5)
    if not no_reply:
        doc["verdict"] = verdict(path)
    return doc
