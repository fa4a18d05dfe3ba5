#!/usr/bin/env python3
"""Benchmark: Pod churn on the live lab (root). --cycles Pod add/delete cycles (default 1,000) spread
over the nodes, driven like kubelet (a network namespace, `pyantrea-cni` ADD in the node's namespace,
DEL, the namespace removed; the nodes in parallel, each node's cycles one after the other; every
25th Pod pings its gateway before it goes). Prints:

  * CNI ADD and DEL latency, p50 and p95, as kubelet sees it (the CNI executable's run time) and as
    the agent spends it (its /v1/stats, the last 200 of each per node); then the same as kubelet
    sees it over --phase-cycles more cycles one at a time, and 4 at a time (a kubelet plumbing 4
    Pods at once, spread over the nodes), each beside issue 12's targets; and where the agent's
    time goes, per step (its /v1/stats cniSteps, medians);
  * leaked objects, which must be 0: per node the links, OVS ports and interfaces, flows, IPAM
    reservations, nft isolation chains, iptables rules, routes and agent Pod interfaces that differ
    from before, and network namespaces left on the host;
  * each agent's RSS and open file descriptors before and after (before = after 3 warm-up cycles
    per node).

Runs in a private lab (--lab-dir, default /run/pa-bench-churn, with the namespace prefix --prefix,
default PYANTREA_LAB_PREFIX or pa-), refused if a lab of that prefix is up, torn down at the end.
Exit 1 if anything leaked or an agent's RSS grew by more than 10%.

Run:  python bench/churn.py [--cycles 1000]
      PYANTREA_LAB_PREFIX=pc- python bench/churn.py --lab-dir /run/pa-cni-churn   (beside a pa- lab)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "lab")]

from reliability.reltools import SEED, RelLab, churn, lab_netns, pct  # noqa: E402

TARGETS = {"1 at a time": (50, 100), "4 at a time": (None, 150)}  # issue 12 target 1: p50, p95 (ms)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--check-every", type=int, default=25, help="every Nth Pod pings its gateway (0: none)")
    ap.add_argument("--lab-dir", default="/run/pa-bench-churn")
    ap.add_argument("--prefix", default=os.environ.get("PYANTREA_LAB_PREFIX") or "pa-",
                    help="the lab's namespace prefix (default: PYANTREA_LAB_PREFIX, else pa-)")
    ap.add_argument("--phase-cycles", type=int, default=100,
                    help="cycles of each of the 1-at-a-time and 4-at-a-time phases (0: skip them)")
    a = ap.parse_args()
    if lab_netns(a.prefix):
        print(f"another lab is up ({', '.join(lab_netns(a.prefix)[:3])} ...): `pyantrea lab down` it first",
              file=sys.stderr)
        return 2
    lab = RelLab(a.lab_dir, prefix=a.prefix)
    try:
        lab.lab("up", str(SEED))
        lab.refresh()
        nodes = sorted(lab.nodes)
        pids = {n: lab.agent_pid(n) for n in nodes}
        rss_start = {n: lab.rss_kib(p) for n, p in pids.items()}
        churn(lab, 3 * len(nodes), nodes, tag="warm0")
        base = {n: lab.node_objects(n) for n in nodes}
        netns0 = lab_netns(a.prefix)
        rss0 = {n: lab.rss_kib(p) for n, p in pids.items()}
        fds0 = {n: len(os.listdir(f"/proc/{p}/fd")) for n, p in pids.items()}
        print(f"{a.cycles} Pod add/delete cycles over {', '.join(nodes)} ...", flush=True)
        res = churn(lab, a.cycles, nodes, check_every=a.check_every, tag="bench")
        phases = {}  # (their leaks are counted too: the check below comes after them)
        for label, jobs in (("1 at a time", 1), ("4 at a time", 4)):
            if a.phase_cycles > 0:
                print(f"{a.phase_cycles} cycles {label} ...", flush=True)
                phases[label] = churn(lab, a.phase_cycles, nodes, check_every=0, tag=f"j{jobs}", jobs=jobs)
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
        stray = sorted(set(lab_netns(a.prefix)) - set(netns0))
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
        for label, r in phases.items():
            p50, p95 = TARGETS[label]
            goal = " and ".join(x for x in (f"p50 <= {p50} ms" if p50 else "", f"p95 <= {p95} ms") if x)
            for what, xs in (("ADD", r.add), ("DEL", r.delete)):
                met = (p50 is None or pct(xs, 50) * 1000 <= p50) and pct(xs, 95) * 1000 <= p95
                print(f"CNI {what} (kubelet view, {label})  p50 {ms(xs, 50)}  p95 {ms(xs, 95)}   "
                      f"(target {goal}: {'met' if met else 'NOT met'}; {r.cycles} cycles in {r.seconds:.1f} s"
                      f"{', failures ' + str(len(r.failures)) if r.failures else ''})")
        for what in ("ADD", "DEL"):
            steps: dict[str, list[float]] = {}
            for n in nodes:
                for k, v in lab.stats(n).get("cniSteps", {}).get(what, {}).items():
                    steps.setdefault(k, []).extend(v)
            if steps:
                print(f"agent {what} steps (p50)  " + ", ".join(f"{k} {pct(v, 50) * 1000:.1f}" for k, v in steps.items())
                      + " ms")
        print(f"leaked objects          {sum(leaks.values())} {leaks if leaks else ''}")
        print("agent RSS (KiB)         " + "  ".join(
            f"{n}: {rss_start[n]} -> {rss0[n]} (warm) -> {rss1[n]} ({(rss1[n] - rss0[n]) / rss0[n] * 100:+.1f}%)"
            for n in nodes))
        print("agent open fds          " + "  ".join(f"{n}: {fds0[n]} -> {fds1[n]}" for n in nodes))
        if restarted:
            print(f"agents restarted during the run: {restarted}")
        ok = not leaks and not res.failures and not restarted and all(rss1[n] <= rss0[n] * 1.10 for n in nodes) \
            and not any(r.failures for r in phases.values())
    finally:
        lab.lab("down", check=False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
