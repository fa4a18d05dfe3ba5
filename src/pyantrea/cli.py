"""The `pyantrea` command: offline validation and compilation; the lab and the daemons come here too."""

from __future__ import annotations

import argparse
import sys

from pyantrea import __version__
from pyantrea.errors import run_cli


def cmd_validate(a: argparse.Namespace) -> int:
    from pyantrea.k8s.complete import load_cluster

    c = load_cluster(a.dir)
    for w in c.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{a.dir}: {len(c.nodes)} nodes, {len(c.pods)} pods, {len(c.services)} services, "
          f"{len(c.policies)} network policies"
          + (f", {len(c.antrea_policies)} Antrea-native policies, {len(c.tiers)} tiers, {len(c.groups)} groups"
             if c.antrea_policies or c.tiers or c.groups else "") + ": valid")
    return 0


def cmd_compile(a: argparse.Namespace) -> int:
    from pyantrea.offline import OfflineCluster

    oc = OfflineCluster.load(a.dir)
    for w in oc.cluster.warnings:
        print(f"warning: {w}", file=sys.stderr)
    nodes = [a.node] if a.node else [n.name for n in oc.cluster.nodes]
    for node in nodes:
        nf = oc.node_flows(node)
        if len(nodes) > 1:
            print(f"# node {node}: {len(nf.flows)} flows")
        for f in nf.flows:
            print(f.dump_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pyantrea", description="Antrea v0.10 on Open vSwitch, in Python.")
    ap.add_argument("--version", action="version", version=f"pyantrea {__version__}")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    p = sub.add_parser("validate", help="load a cluster folder and report every problem in it")
    p.add_argument("dir", help="cluster folder (*.yaml, *.yml, antrea-agent.conf)")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("compile", help="print the OVS flows of every node (or one) of a cluster folder")
    p.add_argument("dir", help="cluster folder")
    p.add_argument("--node", help="only this node")
    p.set_defaults(func=cmd_compile)
    p = sub.add_parser("controller", help="run the controller daemon (see `pyantrea controller --help`)",
                       add_help=False)
    p.set_defaults(func=None, daemon="controller")
    p = sub.add_parser("agent", help="run the agent daemon for one node (see `pyantrea agent --help`)",
                       add_help=False)
    p.set_defaults(func=None, daemon="agent")
    try:
        from pyantrea.lab.cli import add_lab_parser
    except ImportError:
        pass
    else:
        add_lab_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("agent", "controller"):  # the daemons parse their own options
        if argv[0] == "agent":
            from pyantrea.agent.daemon import main as agent_main
            return agent_main(argv[1:])
        from pyantrea.controller.server import main as controller_main
        return controller_main(argv[1:])
    ap = build_parser()
    a = ap.parse_args(argv)
    if not getattr(a, "func", None):
        ap.print_help()
        return 2
    return int(a.func(a))


if __name__ == "__main__":
    sys.exit(main())
