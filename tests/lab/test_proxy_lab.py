"""AntreaProxy live (issue 11): examples/seed-proxy up for real (the AntreaProxy gate with proxyAll, so
no kube-proxy rules at all), Services served by the agents' OVS select groups (root only).

One lab for the module in its own run dir and with its own namespace prefix (pq-), beside any other
lab (which it never touches); the last test takes it down and checks that nothing of it is left.
Skipped (failed when CI is set) without root, `ip netns` or OVS (conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEED_PROXY = ROOT / "examples" / "seed-proxy"
LAB_DIR = "/run/pa-pxtest"  # private run dir ...
PREFIX = "pq-"  # ... and namespace prefix
NODE_PORT = 30080

pytestmark = [pytest.mark.lab]

ENV = {**os.environ, "PYANTREA_LAB_DIR": LAB_DIR, "PYANTREA_LAB_PREFIX": PREFIX, "PYTHONWARNINGS": "ignore"}


def lab(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "pyantrea", "lab", *args], capture_output=True, text=True,
                       env=ENV, cwd=ROOT, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"pyantrea lab {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def antctl(*args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "pyantrea.antctl.main", *args], capture_output=True, text=True,
                       env=ENV, cwd=ROOT, timeout=120)
    assert p.returncode == 0, f"antctl {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def apply(tmp: Path, name: str, text: str, verb: str = "apply") -> None:
    f = tmp / name
    f.write_text(textwrap.dedent(text))
    lab(verb, "-f", str(f))


class Lab:
    def __init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.status: dict[str, Any] = json.loads(lab("status", "-o", "json", check=False).stdout)
        self.pods = {p["pod"]: p for p in self.status["pods"]}
        self.nodes = {n["name"]: n for n in self.status["nodes"]}

    def ns(self, pod: str) -> str:
        return self.pods[pod if "/" in pod else f"default/{pod}"]["netns"]

    def sh(self, ns: str, *cmd: str, timeout: float = 30, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout,
                              input=input)

    def py(self, pod: str, code: str, timeout: float = 60) -> str:
        """Python in the Pod's namespace (its resolv.conf: Service names resolve through kube-dns)."""
        p = self.sh(self.ns(pod), sys.executable, "-c", textwrap.dedent(code), timeout=timeout)
        assert p.returncode == 0, p.stderr
        return p.stdout

    def requests(self, pod: str, host: str, n: int, port: int = 80) -> Counter[str]:
        """`n` GETs of http://host:port/, each on a new connection: which Pod answered, how often."""
        out = self.py(pod, f"""
            import http.client
            for _ in range({n}):
                c = http.client.HTTPConnection({host!r}, {port}, timeout=2)
                c.request("GET", "/")
                print(c.getresponse().read().decode().split(" - ")[1])
                c.close()
        """)
        return Counter(out.split())


def group_of(node: str, cluster_ip: str, port: int) -> int:
    flows = antctl("get", "ovsflows", "--node", node, "-T", "ServiceLB")
    m = re.search(rf"nw_dst={re.escape(cluster_ip)},tp_dst={port} actions=group:(\d+)", flows)
    assert m, flows
    return int(m[1])


def groups(node: str, gid: int) -> dict[str, Any]:
    return json.loads(antctl("get", "ovsflows", "--node", node, "-G", str(gid), "-o", "json"))[0]


def bucket_ips(g: dict[str, Any]) -> list[str]:
    out = []
    for b in g["buckets"]:
        n = int(re.search(r"load:(0x[0-9a-f]+)->NXM_NX_REG3\[\]", b["actions"])[1], 16)  # type: ignore[index]
        out.append(".".join(str((n >> s) & 0xFF) for s in (24, 16, 8, 0)))
    return out


@pytest.fixture(scope="module")
def up() -> Iterator[Lab]:
    t0 = time.monotonic()
    p = lab("up", str(SEED_PROXY), check=False, timeout=180)
    if p.returncode != 0:
        lab("down", check=False)
        raise AssertionError(f"lab up failed ({time.monotonic() - t0:.1f} s)\n{p.stdout}\n{p.stderr}")
    assert "kube-proxy: none (AntreaProxy with proxyAll" in p.stdout + p.stderr
    try:
        yield Lab()
    finally:
        lab("down", check=False)


def test_no_kube_proxy_rules_only_antreas(up: Lab) -> None:
    for name, n in up.nodes.items():
        save = up.sh(n["netns"], "iptables-save").stdout
        assert "KUBE-" not in save, name
        assert "-j DNAT --to-destination 169.254.0.252" in save
        ipset = up.sh(n["netns"], "ipset", "list", "ANTREA-NODEPORT-IP").stdout
        assert f"{n['ip']},tcp:{NODE_PORT}" in ipset, ipset


def test_live_flows_and_groups_equal_offline(up: Lab) -> None:
    from pyantrea.offline import OfflineCluster

    oc = OfflineCluster.load(SEED_PROXY)
    for node in ("master", "worker1", "worker2"):
        nf = oc.node_flows(node)
        live = antctl("get", "ovsflows", "--node", node, "-o", "ofctl").splitlines()
        assert live == [f.dump_text() for f in nf.flows], node
        live_groups = antctl("get", "ovsflows", "--node", node, "-G", "all", "-o", "ofctl").splitlines()
        assert live_groups == [g.dump_text() for g in nf.groups], node


def test_backendsvc_20_requests_both_backends_and_bucket_counters(up: Lab) -> None:
    gid = group_of("worker1", "10.104.65.133", 80)
    before = groups("worker1", gid)
    got = up.requests("frontend", "backendsvc", 20)
    after = groups("worker1", gid)
    assert set(got) == {"backend1", "backend2"} and sum(got.values()) == 20, got
    names = {"10.222.1.47": "backend1", "10.222.2.34": "backend2"}
    per_bucket = {names[ip]: a["packets"] - b["packets"]
                  for ip, a, b in zip(bucket_ips(after), after["buckets"], before["buckets"])}
    # one packet per connection goes through the group (its first): the counters are the answers
    assert per_bucket == dict(got), (per_bucket, got)


def test_nodeport_answers_on_every_node_ip(up: Lab) -> None:
    for name, n in up.nodes.items():
        for ip in ("10.79.1.200", "10.79.1.201", "10.79.1.202"):
            p = up.sh(n["netns"], "curl", "-s", "-m", "2", f"http://{ip}:{NODE_PORT}/")
            assert p.returncode == 0 and " - frontend - 10.222.1.48/24" in p.stdout, (name, ip, p.stderr)


def test_service_without_endpoints_refuses_at_once(up: Lab, tmp_path: Path) -> None:
    apply(tmp_path, "empty.yaml", """
        apiVersion: v1
        kind: Service
        metadata: {name: empty, namespace: default}
        spec:
          selector: {app: nothing}
          ports: [{port: 80, protocol: TCP}]
    """)
    out = up.py("frontend", """
        import socket, time
        ip = socket.gethostbyname("empty")
        for _ in range(5):
            s = socket.socket(); s.settimeout(2); t = time.monotonic()
            try:
                s.connect((ip, 80)); print("connected")
            except ConnectionRefusedError:
                print("refused", (time.monotonic() - t) * 1000)
            s.close()
    """)
    rows = [ln.split() for ln in out.splitlines()]
    assert all(r[0] == "refused" for r in rows) and len(rows) == 5, out
    assert max(float(r[1]) for r in rows) < 100, out


def test_session_affinity_sticks_then_moves(up: Lab, tmp_path: Path) -> None:
    apply(tmp_path, "sticky.yaml", """
        apiVersion: v1
        kind: Service
        metadata: {name: sticky, namespace: default}
        spec:
          selector: {role: backend}
          sessionAffinity: ClientIP
          sessionAffinityConfig: {clientIP: {timeoutSeconds: 2}}
          ports: [{port: 80, protocol: TCP}]
    """)
    def round_(n: int) -> Counter[str]:
        # OVS installs the learned flow shortly after the first packet (the datapath's upcall, then
        # the main thread): a connection opened within that window may be balanced afresh
        first = up.requests("frontend", "sticky", 1)
        time.sleep(0.2)
        return first + up.requests("frontend", "sticky", n - 1)

    first = round_(20)
    assert len(first) == 1 and sum(first.values()) == 20, first
    for _ in range(10):  # after the timeout the group picks again: 1/2 to move each time
        time.sleep(2.5)
        again = round_(5)
        assert len(again) == 1, again
        if set(again) != set(first):
            return
    pytest.fail(f"the client never moved from {first} after the affinity timeout")


def test_hairpin_a_pod_reaches_itself(up: Lab, tmp_path: Path) -> None:
    apply(tmp_path, "octant.yaml", """
        apiVersion: v1
        kind: Service
        metadata: {name: octant, namespace: kube-system}
        spec:
          selector: {component: antrea-octant}
          ports: [{port: 8080, protocol: TCP, targetPort: 80}]
    """)
    got = up.requests("kube-system/antrea-octant-f59b76dd9-dcvvl", "octant.kube-system", 3, port=8080)
    assert got == Counter({"antrea-octant-f59b76dd9-dcvvl": 3})


def test_scaling_endpoints_keeps_the_open_connection(up: Lab, tmp_path: Path) -> None:
    ns = up.ns("frontend")
    stream = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent("""
        import http.client, time, collections, json
        c = http.client.HTTPConnection("backendsvc", 80, timeout=2)
        seen, errors = collections.Counter(), 0
        end = time.monotonic() + 8
        while time.monotonic() < end:
            try:
                c.request("GET", "/")
                seen[c.getresponse().read().decode().split(" - ")[1]] += 1
            except Exception:
                errors += 1
                c.close()
                c = http.client.HTTPConnection("backendsvc", 80, timeout=2)
            time.sleep(0.05)
        print(json.dumps({"seen": seen, "errors": errors}))
    """)], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    pod = """
        apiVersion: v1
        kind: Pod
        metadata: {name: backend3, namespace: default, labels: {role: backend}}
        spec:
          nodeName: worker2
          containers:
          - name: backend3
            ports: [{name: http, containerPort: 80, protocol: TCP}]
    """
    apply(tmp_path, "backend3.yaml", pod)
    t0 = time.monotonic()
    seen_new = None
    while time.monotonic() - t0 < 5:
        if "backend3" in up.requests("frontend", "backendsvc", 4):
            seen_new = time.monotonic() - t0
            break
    assert seen_new is not None and seen_new < 1.0, seen_new  # a new endpoint in use within 1 s
    apply(tmp_path, "backend3.yaml", pod, verb="delete")
    out, _ = stream.communicate(timeout=30)
    res = json.loads(out)
    assert res["errors"] == 0 and len(res["seen"]) == 1, res  # the keep-alive connection kept its endpoint


def test_traceflow_live_balances_in_ovs(up: Lab) -> None:
    docs = json.loads(antctl("traceflow", "-S", "default/frontend", "-D", "default/backendsvc", "-o", "json"))
    assert sorted(d["endpoint"] for d in docs) == ["10.222.1.47:80", "10.222.2.34:80"]
    for d in docs:
        assert d["verdict"]["action"] == "Delivered"
        assert all(leg["kind"] == "pipeline" for r in d["results"] for leg in r["legs"])  # no host leg
        assert any(o["component"] == "LB" for o in d["results"][0]["observations"])
    one = json.loads(antctl("traceflow", "-S", "default/frontend", "-D", "default/backendsvc", "--endpoint",
                            "10.222.2.34", "-o", "json"))
    assert one["verdict"]["pod"] == "default/backend2"


def test_zz_down_leaves_nothing(up: Lab) -> None:
    lab("down")
    assert not [n for n in os.listdir("/var/run/netns") if n.startswith(PREFIX)]
    assert not Path(LAB_DIR).exists()
