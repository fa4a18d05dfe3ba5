#!/usr/bin/env python3
"""Benchmark: Pod churn on the live lab (root). --cycles Pod add/delete cycles (default 1,000) spread
over the nodes, driven like kubelet (a network namespace, `pyantrea-cni` ADD in the node's namespace,
DEL, the namespace removed; the nodes in parallel, each node's cycles one after the other; every
25th Pod pings its gateway before it goes). Prints:

  * CNI ADD and DEL latency, p50 and p95, as kubelet sees it (the CNI executable's run time) and as
    the agent spends it (its /v1/stats, the last 200 of each per node);
  * leaked objects, which must be 0: per node the links, OVS ports and interfaces, flows, IPAM
    reservations, nft isolation chains, iptables rules, routes and agent Pod interfaces that differ
    from before, and network namespaces left on the host;
  * each agent's RSS and open file descriptors before and after (before = after 3 warm-up cycles
    per node).

Runs in a private lab (PYANTREA_LAB_DIR=/run/pa-bench-churn), refused if another lab is up, torn
down at the end. Exit 1 if anything leaked or an agent's RSS grew by more than 10%.

Run:  python bench/churn.py [--cycles 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "lab")]

from reliability.reltools import SEED, RelLab, churn, lab_netns, pct  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--check-every", type=int, default=25, help="every Nth Pod pings its gateway (0: none)")
    ap.add_argument("--lab-dir", default="/run/pa-bench-churn")
    a = ap.parse_args()
    if lab_netns():
        print(f"another lab is up ({', '.join(lab_netns()[:3])} ...): `pyantrea lab down` it first", file=sys.stderr)
        return 2
    lab = RelLab(a.lab_dir)
    try:
        lab.lab("up", str(SEED))
        lab.refresh()
        nodes = sorted(lab.nodes)
        pids = {n: lab.agent_pid(n) for n in nodes}
        rss_start = {n: lab.rss_kib(p) for n, p in pids.items()}
        churn(lab, 3 * len(nodes), nodes, tag="warm0")
        base = {n: lab.node_objects(n) for n in nodes}
        netns0 = lab_netns()
        rss0 = {n: lab.rss_kib(p) for n, p in pids.items()}
        fds0 = {n: len(os.listdir(f"/proc/{p}/fd")) for n, p in pids.items()}
        print(f"{a.cycles} Pod add/delete cycles over {', '.join(nodes)} ...", flush=True)
        res = churn(lab, a.cycles, nodes, check_every=a.check_every, tag="bench")
        rss1 = {n: lab.rss_kib(p) for n, p in pids.items()}
        fds1 = {n: len(os.listdir(f"/proc/{p}/fd")) for n, p in pids.items()}
        leaks: dict[str, int] = {}
        for n in nodes:
            now = lab.node_objects(n)
            for k in base[n]:
                extra = set(now[k]) ^ set(base[n][k])
                if extra:
                    leaks[f"{n}/{k}"] = len(extra)
                    print(f"  LEAK {n} {k}: {sorted(extra)[:5]}")
        stray = sorted(set(lab_netns()) - set(netns0))
        if stray:
            leaks["netns"] = len(stray)
        restarted = [n for n in nodes if lab.agent_pid(n) != pids[n]]

        def ms(xs: list[float], p: float) -> str:
            return f"{pct(xs, p) * 1000:.0f} ms"

        print(f"\ncycles                  {a.cycles} in {res.seconds:.1f} s ({a.cycles / res.seconds:.1f}/s, "
              f"{len(nodes)} nodes in parallel); failures {len(res.failures)}; Pods that pinged their gateway "
              f"{res.checked}")
        for line in res.failures[:5]:
            print(f"  FAILED {line}")
        print(f"CNI ADD (kubelet view)  p50 {ms(res.add, 50)}  p95 {ms(res.add, 95)}")
        print(f"CNI DEL (kubelet view)  p50 {ms(res.delete, 50)}  p95 {ms(res.delete, 95)}")
        print(f"CNI ADD (agent)         p50 {ms(res.agent_add, 50)}  p95 {ms(res.agent_add, 95)}")
        print(f"CNI DEL (agent)         p50 {ms(res.agent_delete, 50)}  p95 {ms(res.agent_delete, 95)}")
        print(f"leaked objects          {sum(leaks.values())} {leaks if leaks else ''}")
        print("agent RSS (KiB)         " + "  ".join(
            f"{n}: {rss_start[n]} -> {rss0[n]} (warm) -> {rss1[n]} ({(rss1[n] - rss0[n]) / rss0[n] * 100:+.1f}%)"
            for n in nodes))
        print("agent open fds          " + "  ".join(f"{n}: {fds0[n]} -> {fds1[n]}" for n in nodes))
        if restarted:
            print(f"agents restarted during the run: {restarted}")
        ok = not leaks and not res.failures and not restarted and all(rss1[n] <= rss0[n] * 1.10 for n in nodes)
    finally:
        lab.lab("down", check=False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
