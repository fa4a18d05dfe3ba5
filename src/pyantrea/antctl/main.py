"""antctl: one declarative table of commands (design §3, spec §12).

`--cluster DIR` (before the verb) works offline on a cluster folder; without it antctl talks to the
running lab. Each command is a `Command` row: its words, aliases, arguments and the handler that
turns a backend's answer into text. Backends (offline, lab) answer the same questions.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyantrea import __version__
from pyantrea.antctl import output
from pyantrea.antctl.backends import Backend, backend_for
from pyantrea.antctl.backends.base import parse_group_ids
from pyantrea.apis.controlplane import to_dict
from pyantrea.errors import InvalidArgument, NotFoundError, PyantreaError, run_cli

Handler = Callable[[Backend, argparse.Namespace], str]


@dataclass(frozen=True)
class Arg:
    flags: tuple[str, ...]
    kw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]  # ("get", "ovsflows")
    help: str
    handler: Handler
    args: tuple[Arg, ...] = ()
    aliases: tuple[str, ...] = ()
    backend: str = "required"  # "optional": runs without a lab too (antctl version)


NODE = Arg(("--node",), dict(help="the node (per-node commands); default: the only node with Pods, or all"))


def _fmt(choices: tuple[str, ...], default: str) -> Arg:
    return Arg(("-o", "--output"), dict(choices=choices, default=default, help=f"output format (default {default})"))


# ------------------------------------------------------------------------------------- handlers
def h_version(b: Backend | None, a: argparse.Namespace) -> str:
    """antctl's own version always (Antrea prints it even when the server cannot be reached), then the
    controller's (and with --node the agent's) when a lab is running."""
    d: dict[str, str] = {"antctlVersion": f"v{__version__}"}
    if b is not None:
        try:
            d.update(b.version(a.node))
        except (OSError, PyantreaError) as e:
            sys.stderr.write(f"antctl: cannot get the server's version: {e}\n")
    return output.dump(d, a.output)


def _pod_arg(a: argparse.Namespace) -> tuple[str, str] | None:
    """-p POD [-n NS] (or -p NS/POD): the Pod's namespace and name (namespace default: default)."""
    if not getattr(a, "pod", None):
        return None
    ns, _, name = a.pod.rpartition("/")
    return ns or a.namespace or "default", name


def _table_of(line: str) -> int:
    m = re.search(r"\btable=(\d+)", line)
    return int(m.group(1)) if m else 0  # OpenFlow 1.0 dumps leave table=0 out


def _conj_ids(b: Backend, node: str, policy: str) -> set[int]:
    return {r.conj_id for r in b.policy_rules(node) if r.policy == policy}


def h_ovsflows(b: Backend, a: argparse.Namespace) -> str:
    """Antrea's `get ovsflows`: every flow of a node, or a Pod's (-p), a NetworkPolicy's (-N: the flows
    of its conj_ids in the agent's rules), of some tables (-T, comma-separated names or numbers)."""
    if a.table_names_only:
        from pyantrea.agent.openflow.tables import pipeline_for

        cfg = b.cluster.config  # type: ignore[attr-defined]
        pipe = pipeline_for(cfg.gate("AntreaProxy"), cfg.gate("AntreaPolicy"))
        return "".join(f"{t.id} {t.name}\n" for t in pipe.tables)
    if a.groups is not None:  # AntreaProxy's select groups instead of flows
        if a.table is not None:
            raise PyantreaError("-G/--groups and -T/--table do not go together")
        groups = b.ovsgroups(b.pick_node(a.node), parse_group_ids(a.groups))
        if a.output in ("json", "yaml"):
            return output.dump(groups, a.output)
        if a.output == "ofctl":  # = ovs-ofctl -O OpenFlow13 dump-groups br-int (without its header)
            return "".join(" " + g["group"] + "\n" for g in groups)
        return output.table(["GROUP"], [[g["group"]] for g in groups], sort=False)
    tables = [b.resolve_table(t) for t in a.table.split(",") if t.strip()] if a.table else None
    pod = _pod_arg(a)
    policy = None
    if a.networkpolicy:
        pns, _, pname = a.networkpolicy.rpartition("/")
        policy = policy_key(a.type, pns or a.namespace or "default", pname)
    if a.node:
        node = b.pick_node(a.node)
    elif pod is not None:
        node = b.pod_node(*pod)
    elif policy is not None:
        nodes = [n for n in b.node_names() if _conj_ids(b, n, policy)]
        if not nodes:
            raise NotFoundError(f"networkpolicy {policy} has no OpenFlow rules on any node")
        if len(nodes) > 1:
            raise InvalidArgument(f"networkpolicy {policy} has flows on {', '.join(nodes)}: give --node")
        node = nodes[0]
    else:
        node = b.pick_node(None)
    one = tables[0] if tables and len(tables) == 1 else None
    podkey = f"{pod[0]}/{pod[1]}" if pod else None
    keep: Callable[[int, str], bool] = lambda t, text: True  # noqa: E731
    if policy is not None:
        ids = _conj_ids(b, node, policy)
        if not ids:
            raise NotFoundError(f"networkpolicy {policy} has no OpenFlow rules on node {node}")
        pat = re.compile(r"conj_id=(?:%s)\b|conjunction\((?:%s)," % ("|".join(map(str, ids)), "|".join(map(str, ids))))
        keep = lambda t, text: bool(pat.search(text))  # noqa: E731

    def sel(t: int, text: str) -> bool:
        return (tables is None or t in tables) and keep(t, text)

    if a.output in ("json", "yaml"):
        rows = [f for f in b.ovsflows_json(node, one, podkey) if sel(f["table"], f["flow"])]
        return output.dump(rows, a.output)
    if a.output == "ofctl":
        lines = [ln for ln in b.ovsflows_ofctl(node, one, podkey) if sel(_table_of(ln), ln)]
        return "".join(line + "\n" for line in lines)
    lines = [ln for ln in b.ovsflows_of13(node, one, podkey) if sel(_table_of(ln), ln)]
    return output.table(["FLOW"], [[line] for line in lines], sort=False)


def sort_by(objs: list[Any], path: str | None, default: str) -> list[Any]:
    """Antrea's --sort-by: a JSON path into each object's JSON/YAML form (`.name`, `.metadata.name`,
    `.sourceRef.name`, `.rules`...); `effectivePriority` orders policies as they are evaluated (K8s
    NetworkPolicies have no priority among themselves: by namespace and name)."""
    if path is None:
        return objs
    path = path.strip() or default
    if path == "effectivePriority":
        path = ".sourceRef.name"
    alias = {"metadata.name": "name", "metadata.namespace": "namespace", "metadata.uid": "uid",
             "sourceRef.name": "name", "sourceRef.namespace": "namespace", "sourceRef.uid": "uid"}
    keys = alias.get(path.lstrip("."), path.lstrip(".")).split(".")

    def key(o: Any) -> tuple[int, Any]:
        v: Any = to_dict(o)
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (list, tuple, dict)):
            return (1, len(v))
        return (0, "" if v is None else v) if not isinstance(v, (int, float)) else (1, v)

    try:
        return sorted(objs, key=key)
    except TypeError:
        raise InvalidArgument(f"--sort-by {path}: the values of that field cannot be compared") from None


def policy_key(type_: str | None, ns: str, name: str) -> str:
    """The key of the policy antctl's --type names (K8sNP: ns/name, ACNP: ACNP:name, ANP: ANP:ns/name)."""
    from pyantrea.apis.controlplane import policy_key as key

    return key({"ACNP": "AntreaClusterNetworkPolicy", "ANP": "AntreaNetworkPolicy",
                "ANNP": "AntreaNetworkPolicy"}.get((type_ or "K8sNP").upper()), ns, name)


def h_networkpolicy(b: Backend, a: argparse.Namespace) -> str:
    pod = _pod_arg(a)
    pols = b.networkpolicies(a.node, a.name, None if pod else a.namespace)
    if a.type:  # K8sNP | ACNP | ANP
        want = "ANP" if a.type.upper() == "ANNP" else a.type.upper()
        pols = [p for p in pols if p.short_type.upper() == want.upper()]
    if pod is not None:  # the policies applied to the Pod: their AppliedToGroups hold it
        key = f"{pod[0]}/{pod[1]}"
        b.cluster.pod(*pod)  # type: ignore[attr-defined]  # NotFound for an unknown Pod
        atgs = {g.name for g in b.appliedtogroups(a.node, None) if any(p.key == key for p in g.pods)}
        pols = [p for p in pols if atgs & set(p.applied_to_groups)]
    pols = sort_by(pols, a.sort_by, ".sourceRef.name")
    if a.output in ("json", "yaml"):
        return output.dump([to_dict(p) for p in pols], a.output)
    if any(p.type is not None for p in pols):  # Antrea-native policies: their type, tier and priority too
        rows = [[p.namespace, p.name, p.short_type, p.tier or "", "" if p.priority is None else f"{p.priority:g}",
                 "" if p.tier_priority is None else str(p.tier_priority),
                 output.list_cell(list(p.applied_to_groups)), str(len(p.rules))] for p in pols]
        return output.table(["NAMESPACE", "NAME", "TYPE", "TIER", "PRIORITY", "TIER-PRIORITY", "APPLIED-TO", "RULES"],
                            rows, sort=a.sort_by is None)
    rows = [[p.namespace, p.name, output.list_cell(list(p.applied_to_groups)), str(len(p.rules))] for p in pols]
    return output.table(["NAMESPACE", "NAME", "APPLIED-TO", "RULES"], rows, sort=a.sort_by is None)


def h_tier(b: Backend, a: argparse.Namespace) -> str:
    """Antrea's Tiers: the built-in ones and the cluster's, by priority."""
    tiers = b.tiers(a.name)
    if a.output in ("json", "yaml"):
        return output.dump([{"name": t.name, "priority": t.priority, "description": t.description,
                             "builtin": t.builtin} for t in tiers], a.output)
    rows = [[t.name, str(t.priority), "yes" if t.builtin else "no"] for t in tiers]
    return output.table(["NAME", "PRIORITY", "BUILT-IN"], rows, sort=False)


def h_appliedtogroup(b: Backend, a: argparse.Namespace) -> str:
    groups = sort_by(b.appliedtogroups(a.node, a.name), a.sort_by, ".metadata.name")
    if a.output in ("json", "yaml"):
        return output.dump([to_dict(g) for g in groups], a.output)
    rows = [[g.name, output.list_cell([p.key for p in g.pods])] for g in groups]
    return output.table(["NAME", "PODS"], rows, sort=a.sort_by is None)


def h_addressgroup(b: Backend, a: argparse.Namespace) -> str:
    groups = sort_by(b.addressgroups(a.node, a.name), a.sort_by, ".metadata.name")
    if a.output in ("json", "yaml"):
        return output.dump([to_dict(g) for g in groups], a.output)
    rows = [[g.name, output.list_cell([p.ip for p in g.pods if p.ip])] for g in groups]
    return output.table(["NAME", "POD-IPS"], rows, sort=a.sort_by is None)


def h_podinterface(b: Backend, a: argparse.Namespace) -> str:
    """Antrea's columns; without --node the interfaces of every node, with a NODE column."""
    items = b.podinterfaces(a.node, a.name, a.namespace)
    if a.output in ("json", "yaml"):
        return output.dump(items, a.output)
    rows = []
    for i in items:
        cid = i["containerID"]
        rows.append([i["podNamespace"], i["podName"], i["interfaceName"], i["ip"], i["mac"], i["portUUID"],
                     str(i["ofPort"]), cid[:11] if len(cid) > 12 else cid] + ([] if a.node else [i.get("node", "")]))
    return output.table(["NAMESPACE", "NAME", "INTERFACE-NAME", "IP", "MAC", "PORT-UUID", "OF-PORT",
                         "CONTAINER-ID"] + ([] if a.node else ["NODE"]), rows)


def _status(conditions: list[dict[str, Any]] | None) -> str:
    """Antrea's STATUS column: Healthy, Unknown or Unhealthy from the conditions ("" without any)."""
    if not conditions:
        return ""
    if any(c.get("status") == "False" for c in conditions):
        return "Unhealthy"
    return "Unknown" if any(c.get("status") == "Unknown" for c in conditions) else "Healthy"


def _ref(r: dict[str, Any] | None) -> str:
    return f"{r['namespace']}/{r['name']}" if r and r.get("name") else ""


def h_agentinfo(b: Backend, a: argparse.Namespace) -> str:
    infos = b.agentinfo(b.pick_node(a.node) if a.node else None)
    if a.output in ("json", "yaml"):
        body: Any = infos[0] if a.node else infos
        return output.dump(body, a.output)
    rows = []
    for i in infos:
        np = i.get("networkPolicyControllerInfo", {})
        rows.append([_ref(i.get("podRef")), i["nodeRef"]["name"], _status(i.get("agentConditions")),
                     output.list_cell(i.get("nodeSubnets", [])), str(np.get("networkPolicyNum", 0)),
                     str(np.get("addressGroupNum", 0)), str(np.get("appliedToGroupNum", 0)), str(i.get("localPodNum", 0))])
    return output.table(["POD", "NODE", "STATUS", "NODE-SUBNET", "NETWORK-POLICIES", "ADDRESS-GROUPS",
                         "APPLIED-TO-GROUPS", "LOCAL-PODS"], rows)


def h_controllerinfo(b: Backend, a: argparse.Namespace) -> str:
    i = b.controllerinfo()
    if a.output in ("json", "yaml"):
        return output.dump(i, a.output)
    np = i.get("networkPolicyControllerInfo", {})
    return output.table(["POD", "NODE", "STATUS", "NETWORK-POLICIES", "ADDRESS-GROUPS", "APPLIED-TO-GROUPS",
                         "CONNECTED-AGENTS"],
                        [[_ref(i.get("podRef")), (i.get("nodeRef") or {}).get("name", ""),
                          _status(i.get("controllerConditions")), str(np.get("networkPolicyNum", 0)),
                          str(np.get("addressGroupNum", 0)), str(np.get("appliedToGroupNum", 0)),
                          str(i.get("connectedAgentNum", 0))]])


def h_query_endpoint(b: Backend, a: argparse.Namespace) -> str:
    """Antrea's `query endpoint`: the policies applied to the Pod, and the rules that select it as an
    egress destination or an ingress source, with each rule's peers and ports."""
    pod = _pod_arg(a)
    if pod is None:
        raise InvalidArgument("give the Pod: -p POD [-n NAMESPACE]")
    ans = b.query_endpoint(*pod)
    if a.output in ("json", "yaml"):
        return output.dump(ans, a.output)
    out: list[str] = []
    for ep in ans["endpoints"]:
        out.append(f"Endpoint {ep['namespace']}/{ep['name']}\n\n")

        def section(title: str, header: list[str], rows: list[list[str]]) -> None:
            out.append(title + ("" if rows else " none") + "\n")
            if rows:
                out.append(output.table(header, rows, sort=False))
            out.append("\n")

        section("Policies applied to the endpoint:", ["NAME", "NAMESPACE", "UID"],
                [[p["name"], p["namespace"], p["uid"]] for p in ep["policies"]])
        section("Rules of those policies:", ["NAME", "NAMESPACE", "INDEX", "DIRECTION", "PEERS", "PORTS", "ACTION"],
                [[p["name"], p["namespace"], str(r["index"]), r["direction"], output.list_cell(r["peers"], 80),
                  r["ports"], r["action"]] for p in ep["policies"] for r in p["rules"]])
        for title, key in (("Egress rules that select the endpoint as a destination:", "egressdstrules"),
                           ("Ingress rules that select the endpoint as a source:", "ingresssrcrules")):
            section(title, ["NAME", "NAMESPACE", "INDEX", "UID", "PORTS"],
                    [[r["policyref"]["name"], r["policyref"]["namespace"], str(r["ruleindex"]), r["policyref"]["uid"],
                      r["ports"]] for r in ep[key]])
    return "".join(out).rstrip("\n") + "\n"


ISOLATE_INDEX = 2**31 - 1  # Antrea's rule index of the isolation a K8s NetworkPolicy implies (action Isolate)


def h_netpol_eval(b: Backend, a: argparse.Namespace) -> str:
    """Antrea's `query networkpolicyevaluation`, answered by tracing a packet from -S to -D through the
    nodes' own flows (traceflow's engine: offline the compiled flows, live the agents'): the egress rule
    on the source's node and the ingress rule on the destination's node whose conjunctions the packet
    completed, or the isolation that dropped it. Without -f the packet goes to the destination Pod's
    first declared container port (TCP, or the port's protocol), or is an ICMP echo."""
    from pyantrea.traceflow.api import run
    from pyantrea.traceflow.model import PassStep
    from pyantrea.traceflow.report import conj_id

    src, dst = a.source, a.destination
    flow = a.flow or ""
    if not flow:
        dns, _, dname = dst.rpartition("/")
        try:
            ports = b.cluster.pod(dns or "default", dname).ports  # type: ignore[attr-defined]
        except PyantreaError:
            ports = ()
        if ports:
            proto = (ports[0].protocol or "TCP").lower()
            flow = f"{proto},{proto}_dst={ports[0].container_port}"
    engine, spec, paths = run(b, src if "/" in src else f"default/{src}",  # type: ignore[arg-type]
                              dst if "/" in dst else f"default/{dst}", flow)
    if len(paths) != 1:
        raise InvalidArgument("networkpolicyevaluation takes a Pod as destination (-D NAMESPACE/POD)")
    path = paths[0]
    state = b.policy_state()  # type: ignore[attr-defined]
    rows: list[dict[str, Any]] = []

    def ref(policy: str) -> dict[str, str]:
        pol = state.policies.get(policy)
        ns, _, name = policy.partition("/")
        return {"type": "K8sNP", "namespace": ns, "name": name, "uid": pol.uid if pol is not None else ""}

    for st in path.steps:
        if not isinstance(st, PassStep):
            continue
        for h in st.hops:
            cid = conj_id(h)
            if cid is None or h.table not in (50, 90):
                continue
            r = engine.rules(st.node).get(cid)
            if r is not None:
                rows.append({"networkPolicy": ref(r.policy), "ruleIndex": r.rule_index, "direction": r.direction,
                             "action": "Allow", "node": st.node, "table": h.table, "conjID": cid})
    o = path.outcome
    if o.action == "Dropped" and o.table in (60, 100):
        for policy in o.policies:
            rows.append({"networkPolicy": ref(policy), "ruleIndex": ISOLATE_INDEX,
                         "direction": "Out" if o.table == 60 else "In", "action": "Isolate", "node": o.node,
                         "table": o.table})
    doc = {"source": spec.source, "destination": spec.destination, "packet": path.packet.describe(),
           "verdict": o.action, "rules": rows}
    if a.output in ("json", "yaml"):
        return output.dump(doc, a.output)
    if not rows:
        return (f"No NetworkPolicy rule decides {spec.source} -> {spec.destination} ({path.packet.describe()}): "
                f"neither is isolated; {o.action} on {o.node}\n")
    return output.table(["NAME", "NAMESPACE", "POLICY-TYPE", "RULE-INDEX", "DIRECTION", "ACTION"],
                        [[r["networkPolicy"]["name"], r["networkPolicy"]["namespace"], r["networkPolicy"]["type"],
                          str(r["ruleIndex"]), r["direction"], r["action"]] for r in rows], sort=False)


def h_trace_packet(b: Backend, a: argparse.Namespace) -> str:
    if not a.port and not a.source:
        raise PyantreaError("one of -p/--port or -S/--source is required")
    node = b.pick_node(a.node)
    res = b.trace_packet(node, a.port, a.source, a.destination, a.flow or "", a.ct_next or [])
    if res.trace is None:  # OVS refused the flow: its own message, and a non-zero exit
        raise PyantreaError(f"ofproto/trace on {node} refused the flow: {ovs_message(res.text)}")
    if a.output == "json":
        return json.dumps(res.as_json(), indent=2) + "\n"
    if a.output == "yaml":
        return output.dump({"result": res.text}, "yaml")
    return res.text if res.text.endswith("\n") else res.text + "\n"


def ovs_message(text: str) -> str:
    """OVS's own words from an ofproto/trace failure, without the command line we ran."""
    marker = "Bad openflow flow syntax"
    return text[text.index(marker):].strip() if marker in text else text.strip()


def h_traceflow(b: Backend, a: argparse.Namespace) -> str:
    """antctl traceflow (issue 4): the whole path, offline (the nodes' sandboxes) or live (the agents)."""
    import time

    from pyantrea.traceflow.api import run
    from pyantrea.traceflow.report import document

    engine, spec, paths = run(b, a.source, a.destination, a.flow or "", a.endpoint, a.reply)  # type: ignore[arg-type]
    now = int(time.time())
    docs = [document(engine, spec, p, now) for p in paths]
    if a.live:
        from pyantrea.traceflow.live import observe_all

        for d, live in zip(docs, observe_all(b, engine, spec, paths)):
            d["live"] = live
    if a.output == "html":
        from pyantrea.traceflow.html import render_html

        return render_html(engine, spec, paths, docs)
    if a.output == "text":
        from pyantrea.traceflow.explain import render_text

        text = render_text(engine, spec, paths)
        if a.live:
            from pyantrea.traceflow.live import render_live

            text += "".join(render_live(d["live"]) for d in docs)
        return text
    body: Any = docs[0] if len(docs) == 1 else docs
    if a.output == "yaml" and isinstance(body, list):
        return "---\n".join(output.dump(d, "yaml") for d in docs)
    return output.dump(body, a.output)


def h_reachability(b: Backend, a: argparse.Namespace) -> str:
    """antctl reachability (issue 4): every ordered pair of Pods x every port, by tracing the flows."""
    from pyantrea.traceflow.reachability import parse_ports, reachability, render

    ports = parse_ports(a.port)
    return render(reachability(b, ports, services=a.services), ports, a.output)  # type: ignore[arg-type]


NAME = Arg(("name",), dict(nargs="?", help="object name"))
NAMESPACE = Arg(("-n", "--namespace"), dict(help="namespace"))
POD = Arg(("-p", "--pod"), dict(metavar="POD", help="a Pod: POD with -n NAMESPACE, or NAMESPACE/POD"))
SORT_BY = Arg(("--sort-by",), dict(nargs="?", const="", metavar="JSONPATH",
                                   help="sort by a field of the JSON form, e.g. .metadata.name, .sourceRef.name "
                                        "(no value: the default field)"))
TABLE_JSON_YAML = _fmt(("table", "json", "yaml"), "table")
POLICY_TYPE = Arg(("--type",), dict(choices=("K8sNP", "ACNP", "ANP", "ANNP"), type=str,
                                    help="the policy's type (K8sNP default; ACNP, ANP/ANNP: Antrea-native)"))

COMMANDS: tuple[Command, ...] = (
    Command(("version",), "print antctl's version, and the controller's (the agent's with --node) when a lab runs",
            h_version, (NODE, _fmt(("yaml", "json"), "yaml")), backend="optional"),
    Command(("get", "agentinfo"), "the agents' basic information (one row per node, or --node's)", h_agentinfo,
            (NODE, TABLE_JSON_YAML), aliases=("agentinfos", "ai")),
    Command(("get", "controllerinfo"), "the controller's basic information", h_controllerinfo,
            (TABLE_JSON_YAML,), aliases=("controllerinfos", "ci")),
    Command(("get", "ovsflows"), "dump a node's OVS flows: all, a Pod's (-p), a NetworkPolicy's (-N), some tables (-T)",
            h_ovsflows,
            (NODE, POD, NAMESPACE,
             Arg(("-N", "--networkpolicy"), dict(metavar="POLICY", help="a NetworkPolicy (POLICY with -n, or NS/POLICY): "
                                                                         "the flows of its conj_ids on the node")),
             POLICY_TYPE,
             Arg(("-T", "--table"), dict(help="comma-separated table names or numbers, e.g. 50,60 or SpoofGuard")),
             Arg(("--table-names-only",), dict(action="store_true", help="list the pipeline's tables, nothing else")),
             Arg(("-G", "--groups"), dict(metavar="IDS", help="dump OVS groups instead: comma-separated "
                                                               "group ids, or 'all' (AntreaProxy's select groups)")),
             _fmt(("table", "ofctl", "json", "yaml"), "table")), aliases=("of",)),
    Command(("get", "networkpolicy"), "internal NetworkPolicies (of a node with --node, applied to a Pod with -p)",
            h_networkpolicy, (NAME, NAMESPACE, POD, NODE, POLICY_TYPE, SORT_BY, TABLE_JSON_YAML),
            aliases=("netpol", "networkpolicies")),
    Command(("get", "tier"), "Antrea-native policy Tiers (built-in and the cluster's), by priority", h_tier,
            (NAME, TABLE_JSON_YAML), aliases=("tiers",)),
    Command(("get", "appliedtogroup"), "AppliedToGroups (a node's Pods only, with --node)", h_appliedtogroup,
            (NAME, NODE, SORT_BY, TABLE_JSON_YAML), aliases=("atg", "appliedtogroups")),
    Command(("get", "addressgroup"), "AddressGroups", h_addressgroup,
            (NAME, NODE, SORT_BY, TABLE_JSON_YAML), aliases=("ag", "addressgroups")),
    Command(("get", "podinterface"), "Pod interfaces (interface store; every node's, with a NODE column, "
                                     "without --node)", h_podinterface,
            (NAME, NAMESPACE, NODE, TABLE_JSON_YAML), aliases=("pi", "podinterfaces")),
    Command(("query", "endpoint"), "the NetworkPolicies that apply to a Pod and the rules that select it as a peer",
            h_query_endpoint,
            (Arg(("-p", "--pod"), dict(required=True, metavar="POD", help="the Pod (or NAMESPACE/POD)")),
             Arg(("-n", "--namespace"), dict(help="the Pod's namespace (default: default)")), TABLE_JSON_YAML),
            aliases=("endpoints",)),
    Command(("query", "networkpolicyevaluation"), "the NetworkPolicy rules that decide traffic from -S to -D, "
                                                  "found by tracing a packet through the nodes' flows",
            h_netpol_eval,
            (Arg(("-S", "--source"), dict(required=True, help="source Pod: NAMESPACE/POD")),
             Arg(("-D", "--destination"), dict(required=True, help="destination Pod: NAMESPACE/POD")),
             Arg(("-f", "--flow"), dict(help="the packet traced, traceflow's grammar (default: TCP to the "
                                             "destination's first container port, else ICMP)")),
             TABLE_JSON_YAML),
            aliases=("networkpoliciesevaluation", "networkpolicyeval", "networkpolicieseval", "netpoleval")),
    Command(("trace-packet",), "trace one packet through a node's pipeline with ofproto/trace", h_trace_packet,
            (NODE, Arg(("-p", "--port"), dict(help="input OVS port name or ns/pod")),
             Arg(("-S", "--source"), dict(help="source: port name, ns/pod or IPv4")),
             Arg(("-D", "--destination"), dict(help="destination: port name, ns/pod, ns/service or IPv4")),
             Arg(("-f", "--flow"), dict(help="extra ovs-ofctl flow fields, e.g. tcp,tp_dst=80")),
             Arg(("--ct-next",), dict(action="append", metavar="STATE",
                                      help="conntrack state for the next ct() (repeatable), e.g. trk,est,rpl")),
             _fmt(("text", "json", "yaml"), "text"))),
    Command(("traceflow",), "trace a packet from end to end: source node, kube-proxy, tunnel, destination node",
            h_traceflow,
            (Arg(("-S", "--source"), dict(required=True, help="source Pod: [ns/]pod")),
             Arg(("-D", "--destination"), dict(required=True, help="destination: [ns/]pod, [ns/]service or IPv4")),
             Arg(("-f", "--flow"), dict(help="packet: icmp|tcp|udp|sctp and tcp_src/tcp_dst/udp_dst/..., "
                                             "e.g. tcp,tcp_dst=80 (default icmp; a Service's only port)")),
             Arg(("--endpoint",), dict(metavar="IP", help="the Service backend kube-proxy picks (default: trace "
                                                          "every backend in turn)")),
             Arg(("--reply",), dict(action="store_true", help="trace the reply, from the conntrack state the "
                                                              "request left")),
             Arg(("--live",), dict(action="store_true", help="lab only: also send a real packet from the source "
                                                             "Pod and report where it went")),
             _fmt(("text", "json", "yaml", "html"), "text")), aliases=("tf",)),
    Command(("reachability",), "who can reach whom: every ordered pair of Pods and port, traced through the flows",
            h_reachability,
            (Arg(("--port",), dict(action="append", metavar="PROTO/PORT",
                                   help="e.g. TCP/80 (repeatable, or comma-separated; default TCP/80)")),
             Arg(("--services",), dict(action="store_true",
                                       help="also every Pod to every Service port, one verdict per endpoint")),
             _fmt(("table", "json"), "table"))),
)

GROUP_HELP = {"get": "show objects: flows, policies, groups, interfaces, agent and controller information",
              "query": "ask questions about NetworkPolicies: an endpoint's policies, which rule decides a connection"}
EPILOG = ("With --cluster DIR (before or after the command) antctl works offline on a cluster folder (a private "
          "OVS sandbox with the dummy datapath for traces); without it, it talks to the running lab. "
          "See docs/antctl.md.")


def _common(p: argparse.ArgumentParser, top: bool) -> None:
    """--cluster / --lab-dir, accepted before the command and after it (a value given after wins)."""
    kw: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("--cluster", metavar="DIR", help="work offline on this cluster folder", **kw)
    p.add_argument("--lab-dir", metavar="DIR", help=argparse.SUPPRESS, **kw)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="antctl",
        description="Show what pyantrea does on each node: flows, policies, groups, interfaces, traces.",
        epilog=EPILOG)
    _common(ap, True)
    ap.set_defaults(_parser=ap)
    sub = ap.add_subparsers(dest="verb", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for c in COMMANDS:
        if len(c.words) == 1:
            p = sub.add_parser(c.words[0], help=c.help, description=c.help, aliases=list(c.aliases), epilog=EPILOG)
        else:
            if c.words[0] not in groups:
                gp = sub.add_parser(c.words[0], help=GROUP_HELP.get(c.words[0], f"{c.words[0]} objects"),
                                    description=GROUP_HELP.get(c.words[0]))
                _common(gp, False)
                gp.set_defaults(_parser=gp)
                groups[c.words[0]] = gp.add_subparsers(dest="noun", metavar="RESOURCE")
            p = groups[c.words[0]].add_parser(c.words[1], help=c.help, description=c.help, aliases=list(c.aliases),
                                              epilog=EPILOG)
        for arg in c.args:
            p.add_argument(*arg.flags, **arg.kw)
        _common(p, False)
        p.set_defaults(handler=c.handler, backend=c.backend, _parser=p)
    return ap


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    ap = build_parser()
    a, extra = ap.parse_known_args(argv)
    if extra:  # an unknown flag: the usage of the command it was given to, not antctl's
        a._parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(a, "handler", None):
        a._parser.print_help()
        return 2
    if a.backend == "optional":  # antctl version: without a lab, only antctl's own version
        try:
            cm = backend_for(a.cluster, a.lab_dir) if a.cluster else backend_for(None, a.lab_dir)
            with cm as b:
                sys.stdout.write(a.handler(b, a))
        except PyantreaError:
            sys.stdout.write(a.handler(None, a))
        return 0
    with backend_for(a.cluster, a.lab_dir) as b:
        sys.stdout.write(a.handler(b, a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
