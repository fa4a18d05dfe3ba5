#!/usr/bin/env python3
"""Benchmark: the live lab (root). Prints:

  1. the time to bring the seed cluster up (`pyantrea lab up examples/seed`, wall clock, from an
     empty host to "lab is up"), median of --up-runs;
  2. CNI ADD latency, median and p95, over --pods new Pods applied with `pyantrea lab apply` (the
     lab times each call of the CNI executable, as kubelet would see it; run one at a time, then
     again 4 at a time), and the time to delete them;
  3. the time from applying a NetworkPolicy until its flows are on every node it spans (polled with
     `ovs-ofctl dump-flows` on each node every few ms), both from the POST to the controller API
     and from the start of the `pyantrea lab apply` command; and the same for its deletion;
  4. TCP throughput (iperf3, --seconds per run, --runs rounds) Pod to Pod on one node and across
     nodes, through the agent's pipeline, each beside the same path with br-int holding a single
     `table=0,priority=0,actions=NORMAL` flow, as a ratio. Rounds interleave the two.

How the NORMAL baseline is set up (and undone): the agent's flows are replaced by the one NORMAL
flow on the nodes involved; for the cross-node path a Geneve port with a fixed remote_ip
(`bench-tun`) is added to both br-ints (NORMAL cannot fill in Antrea's flow-based tun_dst), and
the two Pods get an on-link route to each other's /24, so they talk at L2 over the same
veth -> br-int -> Geneve -> br-phy -> underlay path. Afterwards the port and the routes are removed
and `pyantrea lab restart ovs NODE` makes the agent replay its flows; the flow count is checked.

The Pods used for 2 and 4 carry labels no policy selects. Everything runs in a private lab
(--lab-dir, default /run/pa-bench, with the namespace prefix --prefix, default PYANTREA_LAB_PREFIX or
pa-), refused if a lab of that prefix is up, and is torn down at the end.

Run:  python bench/lab.py              (as root)
      python bench/lab.py --help
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pyantrea.lab.http import request_json  # noqa: E402

LAB_DIR = "/run/pa-bench"
ENV = {**os.environ, "PYANTREA_LAB_DIR": LAB_DIR}


def set_lab(lab_dir: str, prefix: str) -> None:
    """The private lab's run dir and namespace prefix (--lab-dir, --prefix)."""
    global LAB_DIR, ENV
    LAB_DIR = lab_dir
    ENV = {**os.environ, "PYANTREA_LAB_DIR": lab_dir, "PYANTREA_LAB_PREFIX": prefix}


def lab(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "pyantrea", "lab", *args], capture_output=True, text=True, env=ENV,
                       cwd=ROOT, timeout=timeout)
    if check and p.returncode != 0:
        raise SystemExit(f"pyantrea lab {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def state() -> dict[str, Any]:
    return json.loads(Path(LAB_DIR, "lab.json").read_text())


def sh(ns: str, *cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise SystemExit(f"{ns}: {' '.join(cmd)}: {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def flows(node: str) -> list[str]:
    out = subprocess.run(["ovs-ofctl", "dump-flows", f"unix:{LAB_DIR}/nodes/{node}/ovs/br-int.mgmt", "--no-stats"],
                         capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("NXST_FLOW")]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def pods_yaml(prefix: str, n: int, label: str, nodes: list[str] | None = None) -> str:
    docs = []
    for i in range(n):
        node = f"\n  nodeName: {nodes[i % len(nodes)]}" if nodes else ""
        docs.append(f"""apiVersion: v1
kind: Pod
metadata: {{name: {prefix}{i:02d}, namespace: default, labels: {{app: {label}}}}}
spec:{node}
  containers: [{{name: c, image: x}}]
""")
    return "---\n".join(docs)


# ------------------------------------------------------------------------------------ 1. bring-up


def bench_up(folder: Path, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        lab("down")
        t0 = time.monotonic()
        lab("up", str(folder))
        times.append(time.monotonic() - t0)
        print(f"  lab up #{i + 1}: {times[-1]:.2f} s", flush=True)
    return times


# ------------------------------------------------------------------------------------ 2. CNI ADD


def bench_cni(n: int, jobs: int, tmp: Path, tag: str) -> dict[str, float]:
    f = tmp / f"cni-{tag}.yaml"
    f.write_text(pods_yaml(f"cni{tag}-", n, "bench-cni"))
    t0 = time.monotonic()
    lab("apply", "-f", str(f), "--jobs", str(jobs))
    t_apply = time.monotonic() - t0
    st = state()
    lat = [p["cni_add_seconds"] for k, p in st["pods"].items() if k.startswith(f"default/cni{tag}-")]
    ready = sum(1 for k, p in st["pods"].items() if k.startswith(f"default/cni{tag}-") and p["cni"] == "added")
    if ready != n:
        raise SystemExit(f"only {ready} of {n} Pods were added")
    t0 = time.monotonic()
    lab("delete", "-f", str(f), "--jobs", str(jobs))
    t_del = time.monotonic() - t0
    return {"median": statistics.median(lat), "p95": pct(lat, 0.95), "min": min(lat), "max": max(lat),
            "apply": t_apply, "delete": t_del}


# ------------------------------------------------------------------------------------ 3. policy


POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bench-policy, namespace: default}
spec:
  podSelector: {matchLabels: {role: backend}}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {k8s-app: kube-dns}}}]
    ports: [{protocol: TCP, port: 8443}]
"""


def wait_flows(nodes: list[str], present: bool, t0: float, timeout: float = 20.0) -> float:
    """Seconds from t0 until every node has (present) / has no (not present) flow for tp_dst=8443."""
    done: dict[str, float] = {}

    def poll(node: str) -> None:
        while time.monotonic() - t0 < timeout:
            has = any("tp_dst=8443" in ln for ln in flows(node))
            if has == present:
                done[node] = time.monotonic() - t0
                return
            time.sleep(0.005)

    ths = [threading.Thread(target=poll, args=(n,)) for n in nodes]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    if len(done) != len(nodes):
        raise SystemExit(f"policy flows not {'installed' if present else 'removed'} on "
                         f"{sorted(set(nodes) - set(done))} after {timeout} s")
    return max(done.values())


def bench_policy(iterations: int, tmp: Path) -> dict[str, list[float]]:
    nodes = ["worker1", "worker2"]  # where role=backend Pods run
    sock = f"{LAB_DIR}/controller/controller.sock"
    f = tmp / "policy.yaml"
    f.write_text(POLICY)
    before = {n: len(flows(n)) for n in nodes}
    out: dict[str, list[float]] = {"api_add": [], "api_del": [], "cli_add": [], "cli_del": []}
    for _ in range(iterations):
        t0 = time.monotonic()
        status, body = request_json(sock, "POST", "/v1/apply", POLICY, content_type="application/yaml")
        assert status == 200, body
        out["api_add"].append(wait_flows(nodes, True, t0))
        t0 = time.monotonic()
        status, body = request_json(sock, "POST", "/v1/delete", POLICY, content_type="application/yaml")
        assert status == 200, body
        out["api_del"].append(wait_flows(nodes, False, t0))
        t0 = time.monotonic()
        p = subprocess.Popen([sys.executable, "-m", "pyantrea", "lab", "apply", "-f", str(f)], env=ENV, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out["cli_add"].append(wait_flows(nodes, True, t0))
        p.wait()
        t0 = time.monotonic()
        p = subprocess.Popen([sys.executable, "-m", "pyantrea", "lab", "delete", "-f", str(f)], env=ENV, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out["cli_del"].append(wait_flows(nodes, False, t0))
        p.wait()
    after = {n: len(flows(n)) for n in nodes}
    if after != before:
        print(f"  warning: flow counts before {before}, after {after}")
    return out


# ------------------------------------------------------------------------------------ 4. iperf3


def iperf(client_ns: str, server_ip: str, seconds: int) -> float:
    p = sh(client_ns, "iperf3", "-c", server_ip, "-t", str(seconds), "-J", check=False, timeout=seconds + 30)
    try:
        d = json.loads(p.stdout)
        return d["end"]["sum_received"]["bits_per_second"] / 1e9
    except (ValueError, KeyError) as e:
        raise SystemExit(f"iperf3 {client_ns} -> {server_ip} failed: {e}\n{p.stdout[-500:]}\n{p.stderr}")


def vsctl(node: str, *args: str) -> None:
    subprocess.run(["ovs-vsctl", "--timeout=10", f"--db=unix:{LAB_DIR}/nodes/{node}/ovs/db.sock", *args],
                   check=True, capture_output=True)


def normal_on(nodes: dict[str, str], pods: dict[str, dict[str, Any]], cross: tuple[str, str]) -> None:
    """br-int of each node: a single NORMAL flow; the cross-node pair gets a fixed-remote Geneve port and
    on-link routes to each other's /24."""
    for node, peer_ip in nodes.items():
        vsctl(node, "--may-exist", "add-port", "br-int", "bench-tun", "--", "set", "interface", "bench-tun",
              "type=geneve", f"options:remote_ip={peer_ip}", "options:csum=true")
        tmpf = Path(tempfile.mkstemp(prefix="pa-normal-")[1])
        tmpf.write_text("table=0,priority=0,actions=NORMAL\n")
        subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "--bundle", "replace-flows",
                        f"unix:{LAB_DIR}/nodes/{node}/ovs/br-int.mgmt", str(tmpf)], check=True)
        tmpf.unlink()
    a, c = pods[cross[0]], pods[cross[1]]
    sh(a["netns"], "ip", "route", "replace", c["cidr"], "dev", "eth0")
    sh(c["netns"], "ip", "route", "replace", a["cidr"], "dev", "eth0")


def normal_off(nodes: dict[str, str], pods: dict[str, dict[str, Any]], cross: tuple[str, str],
               expect: dict[str, int]) -> None:
    a, c = pods[cross[0]], pods[cross[1]]
    sh(a["netns"], "ip", "route", "del", c["cidr"], "dev", "eth0", check=False)
    sh(c["netns"], "ip", "route", "del", a["cidr"], "dev", "eth0", check=False)
    for p in (a, c):
        sh(p["netns"], "ip", "neigh", "flush", "all", check=False)
    for node in nodes:
        vsctl(node, "--if-exists", "del-port", "br-int", "bench-tun")
        lab("restart", "ovs", node)
    for node, n in expect.items():
        t0 = time.monotonic()
        while len(flows(node)) != n:
            if time.monotonic() - t0 > 20:
                raise SystemExit(f"{node}: the agent did not replay its flows ({len(flows(node))} != {n})")
            time.sleep(0.05)


def bench_iperf(seconds: int, runs: int, tmp: Path) -> dict[str, list[float]]:
    if shutil.which("iperf3") is None:
        raise SystemExit("iperf3 is not installed (scripts/setup.sh)")
    f = tmp / "perf.yaml"
    f.write_text(pods_yaml("perf-", 3, "bench-perf", ["worker1", "worker1", "worker2"]))
    lab("apply", "-f", str(f))
    st = state()
    pods = {}
    for k in ("default/perf-00", "default/perf-01", "default/perf-02"):
        p = st["pods"][k]
        ip = p["ip"]
        pods[k] = {"netns": p["netns"], "ip": ip, "node": p["node"], "cidr": ip.rsplit(".", 1)[0] + ".0/24"}
    a, b, c = "default/perf-00", "default/perf-01", "default/perf-02"
    servers = []
    for k in (b, c):
        pidf = Path(LAB_DIR) / f"iperf-{k.split('/')[1]}.pid"
        sh(pods[k]["netns"], "iperf3", "-s", "-D", "--pidfile", str(pidf))
        servers.append(pidf)
    time.sleep(0.3)
    node_ip = {n: d["ip"] for n, d in st["nodes"].items()}
    normal_nodes = {"worker1": node_ip["worker2"], "worker2": node_ip["worker1"]}
    expect = {n: len(flows(n)) for n in normal_nodes}
    out: dict[str, list[float]] = {"same_pipeline": [], "same_normal": [], "cross_pipeline": [], "cross_normal": []}
    try:
        iperf(pods[a]["netns"], pods[c]["ip"], 1)  # warm up (ARP, tnl neighbours, megaflows)
        for r in range(runs):
            out["same_pipeline"].append(iperf(pods[a]["netns"], pods[b]["ip"], seconds))
            out["cross_pipeline"].append(iperf(pods[a]["netns"], pods[c]["ip"], seconds))
            normal_on(normal_nodes, pods, (a, c))
            try:
                out["same_normal"].append(iperf(pods[a]["netns"], pods[b]["ip"], seconds))
                out["cross_normal"].append(iperf(pods[a]["netns"], pods[c]["ip"], seconds))
            finally:
                normal_off(normal_nodes, pods, (a, c), expect)
            print(f"  round {r + 1}: same node {out['same_pipeline'][-1]:.2f} / {out['same_normal'][-1]:.2f}, "
                  f"cross node {out['cross_pipeline'][-1]:.2f} / {out['cross_normal'][-1]:.2f} Gbit/s "
                  "(pipeline / NORMAL)", flush=True)
        # the pipeline is back: traffic still flows
        out["same_pipeline_after"] = [iperf(pods[a]["netns"], pods[b]["ip"], 1)]
    finally:
        for pidf in servers:
            try:
                pid = int(pidf.read_text().strip())
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"iperf3" in cmd:
                    os.kill(pid, 15)
            except (OSError, ValueError):
                pass
        lab("delete", "-f", str(f))
    return out


# ------------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", default=str(ROOT / "examples" / "seed"))
    ap.add_argument("--up-runs", type=int, default=3)
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--policy-runs", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5, help="iperf3 run length")
    ap.add_argument("--runs", type=int, default=3, help="iperf3 rounds (pipeline and NORMAL interleaved)")
    ap.add_argument("--skip", action="append", default=[], choices=["cni", "policy", "iperf"])
    ap.add_argument("--lab-dir", default=LAB_DIR)
    ap.add_argument("--prefix", default=os.environ.get("PYANTREA_LAB_PREFIX") or "pa-",
                    help="the lab's namespace prefix (default: PYANTREA_LAB_PREFIX, else pa-)")
    a = ap.parse_args()
    set_lab(a.lab_dir, a.prefix)
    if os.geteuid() != 0:
        raise SystemExit("bench/lab.py needs root")
    others = ([n for n in os.listdir("/var/run/netns") if n.startswith(a.prefix)]
              if os.path.isdir("/var/run/netns") else [])
    if others:
        raise SystemExit(f"another lab is up ({', '.join(others)}): `pyantrea lab down` it first")
    print(f"bench/lab.py: {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
          f"{subprocess.run(['ovs-vswitchd', '--version'], capture_output=True, text=True).stdout.split()[3]} OVS, "
          f"Python {platform.python_version()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="pa-bench-"))
    res: dict[str, Any] = {}
    try:
        print("1. bring-up of the seed cluster", flush=True)
        res["up"] = bench_up(Path(a.folder), a.up_runs)
        if "cni" not in a.skip:
            print(f"2. CNI ADD over {a.pods} Pods", flush=True)
            res["cni1"] = bench_cni(a.pods, 1, tmp, "a")
            res["cni4"] = bench_cni(a.pods, 4, tmp, "b")
        if "policy" not in a.skip:
            print("3. NetworkPolicy apply -> flows on every node", flush=True)
            res["policy"] = bench_policy(a.policy_runs, tmp)
        if "iperf" not in a.skip:
            print(f"4. iperf3, {a.runs} x {a.seconds} s per cell", flush=True)
            res["iperf"] = bench_iperf(a.seconds, a.runs, tmp)
    finally:
        t0 = time.monotonic()
        lab("down", check=False)
        res["down"] = time.monotonic() - t0
        shutil.rmtree(tmp, ignore_errors=True)

    med = statistics.median
    print()
    print("== results")
    print(f"seed bring-up (lab up, empty host -> ready)   median {med(res['up']):.2f} s   "
          f"(runs: {', '.join(f'{x:.2f}' for x in res['up'])})")
    print(f"lab down                                      {res['down']:.2f} s")
    for key, jobs in (("cni1", 1), ("cni4", 4)):
        if key in res:
            c = res[key]
            print(f"CNI ADD latency, {a.pods} Pods, {jobs} at a time     median {c['median'] * 1000:.0f} ms   "
                  f"p95 {c['p95'] * 1000:.0f} ms   (min {c['min'] * 1000:.0f}, max {c['max'] * 1000:.0f}); "
                  f"lab apply {c['apply']:.1f} s, lab delete {c['delete']:.1f} s")
    if "policy" in res:
        p = res["policy"]
        print(f"NetworkPolicy -> flows on worker1+worker2      POST /v1/apply: median {med(p['api_add']) * 1000:.0f} ms "
              f"(max {max(p['api_add']) * 1000:.0f});  `lab apply`: median {med(p['cli_add']) * 1000:.0f} ms "
              f"(max {max(p['cli_add']) * 1000:.0f})")
        print(f"NetworkPolicy deletion -> flows gone          POST /v1/delete: median {med(p['api_del']) * 1000:.0f} ms; "
              f"`lab delete`: median {med(p['cli_del']) * 1000:.0f} ms")
    if "iperf" in res:
        i = res["iperf"]
        for path, label in (("same", "Pod -> Pod, same node "), ("cross", "Pod -> Pod, cross node")):
            pl, nm = med(i[f"{path}_pipeline"]), med(i[f"{path}_normal"])
            print(f"iperf3 {label}   pipeline {pl:.2f} Gbit/s   NORMAL {nm:.2f} Gbit/s   ratio {pl / nm:.2f}   "
                  f"(pipeline runs {', '.join(f'{x:.2f}' for x in i[f'{path}_pipeline'])}; "
                  f"NORMAL {', '.join(f'{x:.2f}' for x in i[f'{path}_normal'])})")
        print(f"pipeline restored after the NORMAL runs: same node {i['same_pipeline_after'][0]:.2f} Gbit/s (1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
