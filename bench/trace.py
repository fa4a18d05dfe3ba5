#!/usr/bin/env python3
"""Benchmark: one trace-packet, one cross-node traceflow, a 9-Pod x 6-port reachability matrix (offline).

Everything runs against real OVS sandboxes (dummy datapath, no root), one per node, each with one
persistent unixctl connection (no ovs-appctl process per trace).

  1. trace-packet: frontend -> backend2 TCP 80 on worker1 of examples/seed (build the flow, one
     ofproto/trace request, parse), median of --runs, the sandbox already up; plus the whole
     `antctl --cluster examples/seed trace-packet ...` command once (process start, load, sandbox).
  2. traceflow: frontend -> backendsvc through backend2 (worker1 pod pass, kube-proxy host leg with
     its ARP, worker1 gateway pass, worker2 tunnel pass), and its reply; median of --runs.
  3. reachability: the seed plus three Pods (9 non-hostNetwork Pods on 3 nodes) x 6 ports, median
     of --runs with the sandboxes up ("warm"), and once from nothing ("cold": load the folder,
     compile and start 3 sandboxes, then the matrix).

Run:  python bench/trace.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyantrea.antctl.backends import OfflineBackend
from pyantrea.traceflow.api import traceflow
from pyantrea.traceflow.engine import Engine
from pyantrea.traceflow.reachability import parse_ports, pods_of, reachability

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "seed"
PORTS = ["TCP/80", "TCP/443", "TCP/8080", "UDP/53", "UDP/5353", "SCTP/9000"]

EXTRA_PODS = """
apiVersion: v1
kind: Pod
metadata: {name: client-0, namespace: default, labels: {role: client}}
spec: {nodeName: master, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client-1, namespace: default, labels: {role: client}}
spec: {nodeName: worker1, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client-2, namespace: default, labels: {role: frontend}}
spec: {nodeName: worker2, containers: [{name: c}]}
"""


def ms(s: float) -> str:
    return f"{s * 1000:.1f} ms"


def median_time(fn, runs: int) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    if shutil.which("ovs-vswitchd") is None:
        print("Open vSwitch is not installed (ovs-vswitchd): nothing to measure", file=sys.stderr)
        return 1

    print(f"pyantrea trace benchmark (median of {a.runs} runs, Python {sys.version.split()[0]})")
    # ---------------------------------------------------------------- 1. trace-packet
    b = OfflineBackend(str(SEED))
    try:
        t0 = time.perf_counter()
        b.start_sandboxes(["worker1", "worker2"])
        start = time.perf_counter() - t0
        args = ("worker1", None, "default/frontend", "default/backend2", "tcp,tcp_dst=80", [])
        b.trace_packet(*args)  # warm-up
        med, _ = median_time(lambda: b.trace_packet(*args), max(a.runs, 50))
        print(f"trace-packet   worker1 frontend -> backend2 TCP/80 (one ofproto/trace over unixctl + parse): {ms(med)}")
        t0 = time.perf_counter()
        subprocess.run(["antctl", "--cluster", str(SEED), "trace-packet", "--node", "worker1", "-S", "default/frontend",
                        "-D", "default/backend2", "-f", "tcp,tcp_dst=80", "-o", "json"], check=True,
                       capture_output=True)
        print(f"               the whole antctl command (process, load, compile, sandbox, trace): "
              f"{ms(time.perf_counter() - t0)}")
        print(f"               (starting the seed's two worker sandboxes in parallel: {ms(start)})")

        # ------------------------------------------------------------ 2. traceflow
        e = Engine(b)
        traceflow(b, "default/frontend", "default/backendsvc", "tcp,tcp_dst=80", endpoint="10.222.2.34", engine=e)
        n0 = e.traces
        med, _ = median_time(lambda: traceflow(b, "default/frontend", "default/backendsvc", "tcp,tcp_dst=80",
                                               endpoint="10.222.2.34", engine=e), a.runs)
        per = (e.traces - n0) // a.runs
        print(f"traceflow      frontend -> backendsvc via backend2 (worker1 -> kube-proxy -> worker1 -> worker2, "
              f"{per} ofproto/traces): {ms(med)}")
        med, _ = median_time(lambda: traceflow(b, "default/frontend", "default/backendsvc", "tcp,tcp_dst=80",
                                               endpoint="10.222.2.34", reply=True, engine=e), a.runs)
        print(f"               the same with --reply (request, then the reply from its conntrack state): {ms(med)}")
        med, _ = median_time(lambda: traceflow(b, "default/frontend", "default/backend2", "tcp,tcp_dst=80", engine=e),
                             a.runs)
        print(f"               frontend -> backend2 directly (worker1 -> tunnel -> worker2): {ms(med)}")
    finally:
        b.close()

    # ---------------------------------------------------------------- 3. reachability 9 Pods x 6 ports
    tmp = Path(tempfile.mkdtemp(prefix="pa-bench-"))
    try:
        d = tmp / "cluster"
        shutil.copytree(SEED, d)
        (d / "bench-pods.yaml").write_text(EXTRA_PODS)
        ports = parse_ports(PORTS)
        t0 = time.perf_counter()
        b = OfflineBackend(str(d))
        try:
            e = Engine(b)
            res = reachability(b, ports, engine=e)
            cold = time.perf_counter() - t0
            pods = pods_of(e)
            assert len(pods) == 9, [p.key for p in pods]
            n0 = e.traces
            med, times = median_time(lambda: reachability(b, ports, engine=e), a.runs)
            traces = (e.traces - n0) // a.runs
            med_seq, _ = median_time(lambda: reachability(b, ports, engine=e, threads=False), a.runs)
        finally:
            b.close()
        denies = sum(r["verdict"] == "deny" for r in res)
        print(f"reachability   {len(pods)} Pods x {len(ports)} ports = {len(res)} verdicts ({denies} deny), "
              f"{traces} ofproto/traces: {ms(med)} (sandboxes up; one thread per source node), "
              f"{ms(med_seq)} in one thread")
        print(f"               from nothing (load the folder, compile, start 3 sandboxes, the matrix): {ms(cold)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
