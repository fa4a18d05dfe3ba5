"""The agent's API (HTTP on a unix socket, mode 0600): the CNI, and what antctl asks the agent,
which owns the answers: its ports, its rule cache and conj_ids, its flows."""

from __future__ import annotations

import functools
import re
import time
from typing import TYPE_CHECKING, Any

from pyantrea import __version__
from pyantrea.agent.info import agent_info, pod_lines
from pyantrea.agent.networkpolicy import rule_to_dict
from pyantrea.apis import controlplane as cp
from pyantrea.httpapi import HTTPError, Raw, Request, Router
from pyantrea.metrics import CONTENT_TYPE
from pyantrea.ovs.flow import sort_flows

if TYPE_CHECKING:
    from pyantrea.agent.daemon import Agent


def cni_error_status(code: int) -> int:
    """The HTTP status of a CNI error answer (the body carries the CNI error itself): the request's
    fault (bad version, unknown netns, bad env, undecodable or invalid config) 400, try again later
    503, anything else (I/O, IPAM) 500."""
    if code in (1, 2, 3, 4, 6, 7):
        return 400
    return 503 if code == 11 else 500


def build_router(a: Agent) -> Router:
    r = Router()
    r.add("GET", "/healthz", lambda req: "ok\n" if a.ready.is_set() else (503, "initializing\n"))

    def cni(req: Request, command: str) -> Any:
        body = req.json()
        if not isinstance(body, dict):
            raise HTTPError(400, 'a CNI request is a JSON object {"env": {CNI_*: ...}, "conf": "<network config>"}')
        ans: dict[str, Any]
        t0 = time.perf_counter()
        if not a.ready.wait(60):
            ans = {"error": {"code": 11, "msg": f"agent on {a.node} is still initializing", "details": ""}}
        else:
            ans = a.cni.handle(command, body)
        err = ans.get("error")
        a.metrics.cni_request(command, time.perf_counter() - t0, not isinstance(err, dict))
        if isinstance(err, dict):
            return cni_error_status(int(err.get("code", 999))), ans
        return ans

    for cmd in ("ADD", "DEL", "CHECK"):
        r.add("POST", f"/cni/{cmd.lower()}", functools.partial(lambda c, req: cni(req, c), cmd))
    r.add("GET", "/v1/version", lambda req: {"agentVersion": __version__})
    r.add("GET", "/v1/ovsflows", functools.partial(ovsflows, a))
    r.add("GET", "/v1/ovsgroups", lambda req: ovsgroups(a))
    r.add("GET", "/v1/podinterfaces", lambda req: podinterfaces(a))
    r.add("GET", "/v1/network", lambda req: network(a))
    r.add("GET", "/v1/networkpolicies", lambda req: [cp.to_dict(p) for p in a.rules.view().policies])
    r.add("GET", "/v1/appliedtogroups",
          lambda req: [cp.to_dict(g) for _, g in sorted(a.rules.view().applied_to_groups.items())])
    r.add("GET", "/v1/addressgroups",
          lambda req: [cp.to_dict(g) for _, g in sorted(a.rules.view().address_groups.items())])
    r.add("GET", "/v1/ofrules", lambda req: [rule_to_dict(x) for x in a.rules.all_rules()])
    r.add("POST", "/v1/trace-packet", functools.partial(trace_packet, a))
    r.add("GET", "/v1/stats", lambda req: stats(a))
    r.add("GET", "/metrics", lambda req: Raw(CONTENT_TYPE, a.metrics.text().encode()))
    return r


def stats(a: Agent) -> Any:
    info = agent_info(a)  # antctl get agentinfo (probes OVS and the controller: outside the lock)
    with a.lock:  # a consistent view: the flows of controllerVersion are installed
        w = a.controlplane
        return {**info, "bundles": a.flows.bundles, "flowMods": a.flows.sent_lines,
                "ovsReplays": a.ovs_replays, "round": a.round,
                "controllerEpoch": w.epoch, "controllerVersion": w.rv,
                "controlplaneEvents": w.events, "controlplaneLists": w.lists,
                "openflow": {**(a.ofconn.stats() if a.ofconn is not None else {"connected": False}),
                             "packetInsUnhandled": a.packet_ins_unhandled},
                "informers": {i.kind: {"resourceVersion": i.rv, "lists": i.lists}
                              for i in (a.nodes, a.pins, a.pods) + a.service_informers},
                "proxy": ({"serviceSyncs": a.proxier.syncs, "groups": len(a.flows.groups),
                           "rejects": a.proxier.rejects}
                          if a.proxier is not None else None),
                "policyRejects": a.rejecter.stats() if a.rejecter is not None else None,
                "policyPriorityMoves": a.rules.priority_moves,
                "cniLatencies": {k: v[-200:] for k, v in a.cni.latencies.items()},
                "cniSteps": {k: {s: v[-200:] for s, v in steps.items()} for k, steps in a.cni.steps.items()}}


def podinterfaces(a: Agent) -> Any:
    return [{"podNamespace": i.namespace, "podName": i.pod, "interfaceName": i.interface, "ip": i.ip,
             "mac": i.mac, "portUUID": a.ifstore.port_uuid.get(i.interface, ""),
             "ofPort": i.ofport, "containerID": i.container_id, "node": a.node}
            for i in a.ifstore.all()]


def network(a: Agent) -> Any:
    n = a.network()
    return {"name": n.name, "nodeIP": n.node_ip, "podCIDR": n.pod_cidr, "gatewayIP": n.gateway_ip,
            "gatewayMAC": n.gateway_mac, "gatewayName": n.gateway_name, "gatewayOFPort": n.gateway_ofport,
            "tunnelName": n.tunnel_name, "tunnelOFPort": n.tunnel_ofport, "interfaces": podinterfaces(a)}


def ovsflows(a: Agent, req: Request) -> Any:
    table = req.query.get("table")
    fmt = req.query.get("format", "ofctl")
    if fmt not in ("ofctl", "of13"):
        raise HTTPError(400, f"format {fmt!r}: expected ofctl or of13")
    if table is not None and not table.isdigit():
        raise HTTPError(400, f"table {table!r}: expected a table number")
    of13 = fmt == "of13"
    t = int(table) if table is not None else None
    lines = a.ofbridge.dump_flows(names=True, no_stats=not of13, of13=of13, table=t)
    if req.query.get("pod"):  # antctl get ovsflows -p: the Pod's own flows
        lines = pod_lines(a, req.query["pod"], lines, of13)
    if of13:
        def key13(line: str) -> tuple[int, int, str]:
            m = re.search(r"table=(\d+).*?priority=(\d+)", line)
            return (int(m.group(1)), -int(m.group(2)), line) if m else (0, 0, line)
        return {"lines": sorted(lines, key=key13)}
    # OVS orders flows inside a table as it likes: give them the compiler's order (= offline order).
    with a.lock:
        desired = sort_flows(f for fam in a.desired().values() for f in fam)
    order = {f.dump_text(): n for n, f in enumerate(desired)}
    return {"lines": sorted(lines, key=lambda line: order.get(line, len(order)))}


def ovsgroups(a: Agent) -> Any:
    """`ovs-ofctl -O OpenFlow13 dump-groups` (by group id) and each group's bucket counters."""
    return {"lines": a.ofbridge.dump_groups(),
            "stats": {str(k): v for k, v in sorted(a.ofbridge.dump_group_stats().items())}}


def trace_packet(a: Agent, req: Request) -> Any:
    from pyantrea.agent.tracepacket import build_flow
    from pyantrea.errors import OVSError
    from pyantrea.ovs.unixctl import Unixctl

    body = req.json()
    if not isinstance(body, dict):
        raise HTTPError(400, "trace-packet wants a JSON object")
    flow = build_flow(a.local_cluster(), a.node, body.get("port"), body.get("source"), body.get("destination"),
                      str(body.get("flow") or ""))
    args = [a.bridge_name, flow]
    for s in body.get("ctNext") or []:
        args += ["--ct-next", str(s)]
    try:
        with Unixctl(a.ovs_rundir / "ovs-vswitchd.ctl") as u:
            text = u.call("ofproto/trace", args)
        ok = True
    except OVSError as e:
        text, ok = str(e), False
    names = {a.gateway_ofport: a.gateway_name, a.tunnel_ofport: a.tunnel_name}
    names.update({i.ofport: i.interface for i in a.ifstore.all()})
    return {"node": a.node, "flow": flow, "text": text, "ok": ok,
            "portNames": {str(k): v for k, v in names.items()}}
