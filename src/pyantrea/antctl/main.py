"""antctl: one declarative table of commands (design §3, spec §12).

`--cluster DIR` (before the verb) works offline on a cluster folder; without it antctl talks to the
running lab. Each command is a `Command` row: its words, aliases, arguments and the handler that
turns a backend's answer into text. Backends (offline, lab) answer the same questions.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyantrea import __version__
from pyantrea.antctl import output
from pyantrea.antctl.backends import Backend, backend_for
from pyantrea.antctl.backends.base import parse_group_ids
from pyantrea.apis.controlplane import to_dict
from pyantrea.errors import PyantreaError, run_cli

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


NODE = Arg(("--node",), dict(help="the node (per-node commands); default: the only node with Pods, or all"))


def _fmt(choices: tuple[str, ...], default: str) -> Arg:
    return Arg(("-o", "--output"), dict(choices=choices, default=default, help=f"output format (default {default})"))


# ------------------------------------------------------------------------------------- handlers
def h_version(b: Backend, a: argparse.Namespace) -> str:
    d = {"antctlVersion": f"v{__version__}", **b.version()}
    return output.dump(dict(sorted(d.items())), a.output)


def h_ovsflows(b: Backend, a: argparse.Namespace) -> str:
    node = b.pick_node(a.node)
    if a.groups is not None:
        if a.table is not None:
            raise PyantreaError("-G/--groups and -T/--table do not go together")
        groups = b.ovsgroups(node, parse_group_ids(a.groups))
        if a.output == "json":
            return output.dump(groups, "json")
        if a.output == "ofctl":  # = ovs-ofctl -O OpenFlow13 dump-groups br-int (without its header)
            return "".join(" " + g["group"] + "\n" for g in groups)
        return output.table(["GROUP"], [[g["group"]] for g in groups], sort=False)
    table = b.resolve_table(a.table) if a.table is not None else None
    if a.output == "ofctl":
        lines = b.ovsflows_ofctl(node, table)
        return "".join(line + "\n" for line in lines)
    if a.output == "json":
        return output.dump(b.ovsflows_json(node, table), "json")
    return output.table(["FLOW"], [[line] for line in b.ovsflows_of13(node, table)], sort=False)


def h_networkpolicy(b: Backend, a: argparse.Namespace) -> str:
    pols = b.networkpolicies(a.node, a.name, a.namespace)
    if a.output in ("json", "yaml"):
        return output.dump([to_dict(p) for p in pols], a.output)
    rows = [[p.namespace, p.name, output.list_cell(list(p.applied_to_groups)), str(len(p.rules))] for p in pols]
    return output.table(["NAMESPACE", "NAME", "APPLIED-TO", "RULES"], rows)


def h_appliedtogroup(b: Backend, a: argparse.Namespace) -> str:
    groups = b.appliedtogroups(a.node, a.name)
    if a.output in ("json", "yaml"):
        return output.dump([to_dict(g) for g in groups], a.output)
    rows = [[g.name, output.list_cell([p.key for p in g.pods])] for g in groups]
    return output.table(["NAME", "PODS"], rows)


def h_addressgroup(b: Backend, a: argparse.Namespace) -> str:
    groups = b.addressgroups(a.node, a.name)
    if a.output in ("json", "yaml"):
        return output.dump([to_dict(g) for g in groups], a.output)
    rows = [[g.name, output.list_cell([p.ip for p in g.pods if p.ip])] for g in groups]
    return output.table(["NAME", "POD-IPS"], rows)


def h_podinterface(b: Backend, a: argparse.Namespace) -> str:
    items = b.podinterfaces(a.node, a.name, a.namespace)
    if a.output in ("json", "yaml"):
        return output.dump(items, a.output)
    rows = []
    for i in items:
        cid = i["containerID"]
        rows.append([i["podNamespace"], i["podName"], i["interfaceName"], i["ip"], i["mac"], i["portUUID"],
                     str(i["ofPort"]), cid[:11] if len(cid) > 12 else cid])
    return output.table(["NAMESPACE", "NAME", "INTERFACE-NAME", "IP", "MAC", "PORT-UUID", "OF-PORT",
                         "CONTAINER-ID"], rows)


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
    return render(reachability(b, ports), ports, a.output)  # type: ignore[arg-type]


NAME = Arg(("name",), dict(nargs="?", help="object name"))
NAMESPACE = Arg(("-n", "--namespace"), dict(help="namespace"))

COMMANDS: tuple[Command, ...] = (
    Command(("version",), "print the antctl and agent/controller versions", h_version,
            (_fmt(("yaml", "json"), "yaml"),)),
    Command(("get", "ovsflows"), "dump a node's OVS flows", h_ovsflows,
            (NODE, Arg(("-T", "--table"), dict(help="table number or name")),
             Arg(("-G", "--groups"), dict(metavar="IDS", help="dump OVS groups instead: comma-separated "
                                                               "group ids, or 'all' (AntreaProxy's select groups)")),
             _fmt(("table", "ofctl", "json"), "table")), aliases=("of",)),
    Command(("get", "networkpolicy"), "internal NetworkPolicies (of a node with --node)", h_networkpolicy,
            (NAME, NAMESPACE, NODE, _fmt(("table", "json", "yaml"), "table")), aliases=("netpol", "networkpolicies")),
    Command(("get", "appliedtogroup"), "AppliedToGroups (a node's Pods only, with --node)", h_appliedtogroup,
            (NAME, NODE, _fmt(("table", "json", "yaml"), "table")), aliases=("atg", "appliedtogroups")),
    Command(("get", "addressgroup"), "AddressGroups", h_addressgroup,
            (NAME, NODE, _fmt(("table", "json", "yaml"), "table")), aliases=("ag", "addressgroups")),
    Command(("get", "podinterface"), "Pod interfaces (interface store)", h_podinterface,
            (NAME, NAMESPACE, NODE, _fmt(("table", "json", "yaml"), "table")), aliases=("pi", "podinterfaces")),
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
             _fmt(("table", "json"), "table"))),
)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="antctl",
        description="Show what pyantrea does on each node: flows, policies, groups, interfaces, traces.",
        epilog="With --cluster DIR antctl works offline on a cluster folder (a private OVS sandbox "
               "with the dummy datapath for traces); without it, it talks to the running lab.")
    ap.add_argument("--cluster", metavar="DIR", help="work offline on this cluster folder")
    ap.add_argument("--lab-dir", metavar="DIR", help=argparse.SUPPRESS)
    sub = ap.add_subparsers(dest="verb", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for c in COMMANDS:
        if len(c.words) == 1:
            p = sub.add_parser(c.words[0], help=c.help, description=c.help, aliases=list(c.aliases))
        else:
            if c.words[0] not in groups:
                gp = sub.add_parser(c.words[0], help=f"{c.words[0]} objects")
                groups[c.words[0]] = gp.add_subparsers(dest="noun", metavar="RESOURCE")
            p = groups[c.words[0]].add_parser(c.words[1], help=c.help, description=c.help, aliases=list(c.aliases))
        for arg in c.args:
            p.add_argument(*arg.flags, **arg.kw)
        p.set_defaults(handler=c.handler)
    return ap


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    if not getattr(a, "handler", None):
        ap.print_help()
        return 2
    with backend_for(a.cluster, a.lab_dir) as b:
        sys.stdout.write(a.handler(b, a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
