"""``pyantrea lab ...`` (design §3). `add_lab_parser(sub)` adds the ``lab`` command to pyantrea's
sub-parsers; ``python -m pyantrea.lab`` runs the same commands standalone."""

from __future__ import annotations

import argparse
import sys

from pyantrea.errors import run_cli

__all__ = ["add_lab_parser", "cmd_lab", "main"]


def cmd_lab(a: argparse.Namespace) -> int:
    """The lab's commands (errors and a closed stdout, `lab status | head`, are `run_cli`'s)."""
    from pyantrea.lab.kubelab import KubeLab, kubeconfig_path, lab_for
    from pyantrea.lab.lab import default_folder

    c = a.lab_cmd
    if c == "up" and getattr(a, "kubernetes", False):
        return KubeLab(jobs=a.jobs).up(a.dir or default_folder())
    if c == "kubeconfig":
        print(kubeconfig_path())
        return 0
    lab = lab_for(jobs=getattr(a, "jobs", 4))  # the run dir's lab: embedded, or Kubernetes (`up --kubernetes`)
    if c == "kubectl":
        if not isinstance(lab, KubeLab):
            from pyantrea.lab.netns import LabError

            raise LabError(f"no Kubernetes lab at {lab.paths.root}: `pyantrea lab up --kubernetes` first")
        args = list(a.args)
        return lab.kubectl_exec(args[1:] if args[:1] == ["--"] else args)
    if c == "up":
        return lab.up(a.dir or default_folder())
    if c == "apply":
        return lab.apply(a.file)
    if c == "delete":
        return lab.apply(a.file, delete=True)
    if c == "status":
        return lab.status(a.output)
    if c == "exec":
        cmd = list(a.cmd)
        if cmd and cmd[0] == "--":
            cmd = cmd[1:]
        return lab.exec(a.target, cmd)
    if c == "restart":
        return lab.restart(a.what, a.node)
    if c == "down":
        return lab.down()
    a.lab_parser.print_help()
    return 2


def add_lab_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Add ``lab`` and its commands to ``sub`` (the sub-parsers of ``pyantrea``)."""
    lab = sub.add_parser(
        "lab", help="bring a cluster folder up for real on this host (root): nodes, OVS, agents, Pods",
        description="The live lab: every Node a network namespace with its own OVS (userspace datapath) and "
                    "agent, Pods created through the CNI plugin, kube-proxy rules, real traffic. State lives in "
                    "$PYANTREA_LAB_DIR (default /run/pyantrea-lab).")
    lab.set_defaults(func=cmd_lab, lab_cmd=None, lab_parser=lab)
    ls = lab.add_subparsers(dest="lab_cmd", metavar="COMMAND")

    p = ls.add_parser("up", help="bring the folder's cluster up (default examples/seed); safe to run again")
    p.add_argument("dir", nargs="?", help="cluster folder (default examples/seed)")
    p.add_argument("--jobs", type=int, default=4, help="Pods plumbed concurrently (default 4)")
    p.add_argument("--kubernetes", action="store_true",
                   help="on Kubernetes' own control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, "
                        "kube-proxy; `make kubernetes` builds them) instead of the embedded one")

    # prefix_chars "+": every argument, options included (-n kube-system, -h), is kubectl's
    p = ls.add_parser("kubectl", help="run kubectl against the lab (--kubernetes): `lab kubectl get pods -A -o wide`",
                      usage="%(prog)s ARGS...", prefix_chars="+", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER, help="kubectl's arguments")

    ls.add_parser("kubeconfig", help="print the path of the lab's admin kubeconfig (--kubernetes)")

    p = ls.add_parser("apply", help="apply manifests live (NetworkPolicy, Pod, Service, Endpoints, ...)")
    p.add_argument("-f", "--filename", dest="file", required=True, help="YAML file ('-' = stdin)")
    p.add_argument("--jobs", type=int, default=4, help=argparse.SUPPRESS)

    p = ls.add_parser("delete", help="delete the objects of a manifest file live")
    p.add_argument("-f", "--filename", dest="file", required=True, help="YAML file ('-' = stdin)")
    p.add_argument("--jobs", type=int, default=4, help=argparse.SUPPRESS)

    p = ls.add_parser("status", help="nodes and their processes, Pods with IP, node and readiness")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")

    p = ls.add_parser("exec", help="run CMD in a node's namespace (its OVS tools point at its OVS) or a Pod's",
                      usage="%(prog)s NODE|NS/POD|POD -- CMD...")
    p.add_argument("target", help="a node name, NS/POD, or POD (namespace default)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="the command (default: a shell)")

    p = ls.add_parser("restart", help="SIGKILL a lab process and start it again (a crash and a restart)")
    p.add_argument("what", choices=("agent", "ovs", "controller", "apiserver"),
                   help="apiserver: kube-apiserver of a --kubernetes lab")
    p.add_argument("node", nargs="?", help="only this node (default: every node)")

    ls.add_parser("down", help="remove everything the lab created (namespaces, processes, links, files)")
    return lab


def main(argv: list[str] | None = None) -> int:
    try:
        return run_cli(lambda: _main(argv), what="")
    except KeyboardInterrupt:
        return 130


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(prog="pyantrea")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    add_lab_parser(sub)
    args = ["lab", *(sys.argv[1:] if argv is None else argv)]
    a = ap.parse_args(args)
    return int(a.func(a))


if __name__ == "__main__":
    sys.exit(main())
