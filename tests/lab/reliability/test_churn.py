"""Churn (issue 5 §7): Pod add/delete cycles spread over the nodes leave nothing behind.

Driven the way kubelet drives the agent: a network namespace, the CNI executable (`pyantrea-cni`)
with CNI_COMMAND=ADD in the node's namespace, then DEL, then the namespace removed. This exercises
exactly the agent's CNI path (IPAM, veth, isolation, OVS port, flows) 200 times in about 40 s;
going through `lab apply`/`lab delete` of Pod manifests would add the controller, kube-proxy and a
workload process per Pod (about 1 s a Pod) without touching more of the agent. Every 25th Pod pings
its gateway before it is deleted (the ADD really plumbed it).

Afterwards, on every node: the same links, OVS ports and interfaces, flows, IPAM reservations, nft
isolation chains, iptables rules, routes and agent interfaces as before; no namespace left; the
agent's RSS within 10% of before (measured after 3 warm-up cycles per node, which load the code
paths once) and its open file descriptors unchanged.
"""

from __future__ import annotations

import os

from .reltools import RelLab, churn, lab_netns, pct

CYCLES = int(os.environ.get("PYANTREA_CHURN_CYCLES", "200"))


def test_churn_leaves_nothing_behind(lab: RelLab) -> None:
    nodes = sorted(lab.nodes)
    warm = churn(lab, 3 * len(nodes), nodes, tag="warm0")
    assert warm.failures == []
    base = {n: lab.node_objects(n) for n in nodes}
    netns0 = lab_netns(lab.prefix)
    pids = {n: lab.agent_pid(n) for n in nodes}
    rss0 = {n: lab.rss_kib(p) for n, p in pids.items()}
    fds0 = {n: len(os.listdir(f"/proc/{p}/fd")) for n, p in pids.items()}

    res = churn(lab, CYCLES, nodes, tag="churn")

    rss1 = {n: lab.rss_kib(p) for n, p in pids.items()}
    fds1 = {n: len(os.listdir(f"/proc/{p}/fd")) for n, p in pids.items()}
    print(f"\n{CYCLES} cycles over {len(nodes)} nodes in {res.seconds:.1f} s; CNI ADD p50 {pct(res.add, 50) * 1000:.0f}"
          f" ms p95 {pct(res.add, 95) * 1000:.0f} ms, DEL p50 {pct(res.delete, 50) * 1000:.0f} ms p95 "
          f"{pct(res.delete, 95) * 1000:.0f} ms; agent RSS KiB before {rss0} after {rss1}; fds {fds0} -> {fds1}")
    assert res.failures == [], res.failures[:5]
    assert len(res.add) == len(res.delete) == CYCLES
    assert res.checked == len(range(0, CYCLES, 25))
    assert {n: lab.agent_pid(n) for n in nodes} == pids  # no agent restarted
    for n in nodes:
        now = lab.node_objects(n)
        leaked = {k: (sorted(set(now[k]) - set(base[n][k])), sorted(set(base[n][k]) - set(now[k])))
                  for k in base[n] if now[k] != base[n][k]}
        assert leaked == {}, f"{n}: (extra, missing) per kind: {leaked}"
    assert lab_netns(lab.prefix) == netns0
    for n in nodes:
        assert rss1[n] <= rss0[n] * 1.10, (n, rss0[n], rss1[n])
        assert fds1[n] <= fds0[n] + 2, (n, fds0[n], fds1[n])
