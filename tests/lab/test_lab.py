"""The live lab, end to end: the seed cluster up for real, traffic packet by packet (root only).

One lab for the whole module (`pyantrea lab up examples/seed`), in its own run dir and with its own
namespace prefix (pt-), beside any lab a user has up (pa-*, which it never touches); torn down by
the last test, which checks that nothing of it is left: no pt-* namespace, no process of lab.json,
no /etc/netns/pt-*, no lab dir. Skipped (failed when CI is set) without root, `ip netns` or OVS
(conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed"
LAB_DIR = "/run/pa-labtest"  # private run dir ...
PREFIX = "pt-"  # ... and namespace prefix: a user's lab (pa-*, /run/pyantrea-lab) is left alone

pytestmark = [pytest.mark.lab]

ENV = {**os.environ, "PYANTREA_LAB_DIR": LAB_DIR, "PYANTREA_LAB_PREFIX": PREFIX}


def own_netns() -> list[str]:
    """This module's lab's namespaces (and probes): pt-*."""
    try:
        return sorted(n for n in os.listdir("/var/run/netns") if n.startswith(PREFIX))
    except FileNotFoundError:
        return []


def lab(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "pyantrea", "lab", *args], capture_output=True, text=True,
                       env=ENV, cwd=ROOT, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"pyantrea lab {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


class Lab:
    """Probes that run straight in the namespaces (faster than `lab exec`, which is tested apart)."""

    def __init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.status: dict[str, Any] = json.loads(lab("status", "-o", "json", check=False).stdout)
        self.pods = {p["pod"]: p for p in self.status["pods"]}
        self.nodes = {n["name"]: n for n in self.status["nodes"]}

    def ns(self, pod: str) -> str:
        return self.pods[pod if "/" in pod else f"default/{pod}"]["netns"]

    def ip(self, pod: str) -> str:
        return self.pods[pod if "/" in pod else f"default/{pod}"]["ip"]

    def sh(self, pod: str, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns(pod), *cmd], capture_output=True, text=True,
                              timeout=timeout)

    def curl(self, src: str, url: str, t: float = 1.0) -> tuple[int, str, float]:
        t0 = time.monotonic()
        p = self.sh(src, "curl", "-s", "-m", str(t), url)
        return p.returncode, p.stdout, time.monotonic() - t0

    def reaches(self, src: str, dst: str, port: int = 80, t: float = 1.0) -> bool:
        rc, out, _ = self.curl(src, f"http://{self.ip(dst)}:{port}/", t)
        return rc == 0 and "Praqma Network MultiTool" in out

    def many(self, probes: list[tuple[str, str]], t: float = 1.0) -> dict[tuple[str, str], bool]:
        with ThreadPoolExecutor(max_workers=8) as ex:
            res = list(ex.map(lambda sd: self.reaches(sd[0], sd[1], t=t), probes))
        return dict(zip(probes, res))


COREDNS1 = "kube-system/coredns-66bff467f8-bclzd"  # worker1
COREDNS2 = "kube-system/coredns-66bff467f8-f4nc4"  # worker2
OCTANT = "kube-system/antrea-octant-f59b76dd9-dcvvl"  # worker1
INDEX = "Praqma Network MultiTool (with NGINX) - {pod} - {ip}/24\n"


@pytest.fixture(scope="module")
def up() -> Iterator[Lab]:
    t0 = time.monotonic()
    p = lab("up", str(SEED), check=False, timeout=180)
    elapsed = time.monotonic() - t0
    if p.returncode != 0:
        lab("down", check=False)
        raise AssertionError(f"lab up failed ({elapsed:.1f} s)\n{p.stdout}\n{p.stderr}")
    print(f"\nlab up: {elapsed:.1f} s")
    try:
        yield Lab()
    finally:
        lab("down", check=False)  # idempotent: the last test already did it


# ------------------------------------------------------------------------------------ up


def test_everything_runs(up: Lab) -> None:
    s = up.status
    assert s["controller"]["alive"] and s["prefix"] == PREFIX
    assert all(n["netns"].startswith(PREFIX) for n in s["nodes"]) and s["underlay"]["netns"] == f"{PREFIX}underlay"
    assert all(p["netns"].startswith(PREFIX) for p in s["pods"])
    assert json.loads(Path(LAB_DIR, "lab.json").read_text())["prefix"] == PREFIX
    assert sorted(up.nodes) == ["master", "worker1", "worker2"]
    assert all(n["ovs"] and n["agent"] and n["netns_exists"] for n in s["nodes"])
    assert sorted(up.pods) == ["default/backend1", "default/backend2", "default/frontend", OCTANT, COREDNS1,
                               COREDNS2]
    assert all(p["ready"] for p in s["pods"]), s["pods"]
    assert up.pods["default/frontend"]["ip"] == "10.222.1.48"
    assert up.pods["default/frontend"]["interface"] == "frontend-a3ba2f"
    assert up.pods[COREDNS1]["dns"] and not up.pods["default/frontend"]["dns"]
    text = lab("status").stdout
    assert "worker1" in text and "default/frontend" in text


def test_workload_index_page(up: Lab) -> None:
    rc, out, _ = up.curl("frontend", "http://10.222.2.34/", 3)
    assert rc == 0 and out == INDEX.format(pod="backend2", ip="10.222.2.34")
    rc, out, _ = up.curl(COREDNS2, "http://10.222.1.48/nosuch", 3)
    assert rc == 0 and "404" in out


def test_live_flows_equal_offline(up: Lab) -> None:
    for node in ("worker1", "worker2"):
        live = lab("exec", node, "--", "ovs-ofctl", "dump-flows", "br-int", "--no-stats", "--names").stdout
        live_lines = sorted(ln for ln in live.splitlines() if not ln.startswith("NXST_FLOW"))
        off = subprocess.run([sys.executable, "-m", "pyantrea.antctl.main", "--cluster", str(SEED), "get",
                              "ovsflows", "--node", node, "-o", "ofctl"], capture_output=True, text=True,
                             cwd=ROOT, check=True).stdout
        assert live_lines == sorted(off.splitlines()), node
    assert len(live_lines) == 53  # worker2 (spec §15)


def test_exec_node_tools_target_that_node(up: Lab) -> None:
    show = lab("exec", "worker2", "--", "ovs-vsctl", "show").stdout
    assert "backend2-202ff6" in show and "frontend-a3ba2f" not in show and "br-phy" in show
    assert "ovs-vswitchd" in lab("exec", "worker1", "--", "ovs-appctl", "version").stdout
    routes = lab("exec", "worker1", "--", "ip", "route").stdout
    peer = [ln for ln in routes.splitlines() if ln.startswith("10.222.2.0/24 ")]
    assert peer and "via 10.222.2.1 dev antrea-gw0" in peer[0] and "onlink" in peer[0], routes
    assert "10.79.1.0/24 dev br-phy" in routes
    nat = lab("exec", "worker1", "--", "iptables-save", "-t", "nat").stdout
    assert "KUBE-SVC-TCOU7JCQXEZGVUNU" in nat and "-j KUBE-SERVICES" in nat
    # a Pod: bare name = namespace default
    assert "10.222.1.48/24" in lab("exec", "frontend", "--", "ip", "-4", "addr", "show", "eth0").stdout
    assert "nameserver 10.96.0.10" in lab("exec", "frontend", "--", "cat", "/etc/resolv.conf").stdout
    assert lab("exec", "nosuchpod", "--", "true", check=False).returncode == 1


# ------------------------------------------------------------------------------------ Service + DNS


DNS_PROBE = """
import socket, sys
from pyantrea.lab import dns
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
s.sendto(dns.query(sys.argv[1]), ("10.96.0.10", 53))
try:
    rcode, answers = dns.parse_answers(s.recv(4096))
except socket.timeout:
    sys.exit(3)
print(socket.inet_ntoa(answers[0][3]) if answers else "rcode=%d" % rcode)
"""


def dns_query(up: Lab, pod: str, name: str) -> str | None:
    """One UDP query to the kube-dns ClusterIP from ``pod`` (1 s timeout). None: no answer."""
    p = up.sh(pod, sys.executable, "-c", DNS_PROBE, name, timeout=10)
    return p.stdout.strip() if p.returncode == 0 else None


def test_service_20_requests_reach_both_backends(up: Lab) -> None:
    p = up.sh("frontend", "sh", "-c", "for i in $(seq 20); do curl -s -m 3 http://backendsvc/ || echo FAIL; done")
    got = Counter(p.stdout.splitlines())
    assert got["FAIL"] == 0 and sum(got.values()) == 20, got
    b1 = INDEX.format(pod="backend1", ip="10.222.1.47").strip()
    b2 = INDEX.format(pod="backend2", ip="10.222.2.34").strip()
    assert set(got) == {b1, b2}, got


def test_service_by_names(up: Lab) -> None:
    for name in ("backendsvc", "backendsvc.default", "backendsvc.default.svc.cluster.local"):
        rc, out, _ = up.curl("frontend", f"http://{name}/", 3)
        assert rc == 0 and out.startswith("Praqma Network MultiTool (with NGINX) - backend"), (name, rc, out)
    got = up.sh("frontend", "getent", "hosts", "kube-dns.kube-system.svc.cluster.local").stdout
    assert got.split()[0] == "10.96.0.10"
    assert up.sh("frontend", "getent", "hosts", "nosuch.default.svc.cluster.local").returncode != 0


# ------------------------------------------------------------------------------------ the seed's policies


def test_frontend_reaches_both_backends(up: Lab) -> None:
    res = up.many([("frontend", "backend1"), ("frontend", "backend2")], t=3)
    assert all(res.values()), res


def test_backends_reach_nothing(up: Lab) -> None:
    probes = [("backend1", "backend2"), ("backend1", "frontend"), ("backend2", "frontend"),
              ("backend2", "backend1"), ("backend1", COREDNS1), ("backend2", COREDNS2)]
    t0 = time.monotonic()
    res = up.many(probes)
    assert not any(res.values()), res
    assert time.monotonic() - t0 < 5
    assert dns_query(up, "backend1", "backendsvc.default.svc.cluster.local") is None  # not even DNS
    assert dns_query(up, "frontend", "backendsvc.default.svc.cluster.local") == "10.104.65.133"


def test_backend_ingress_only_from_frontend(up: Lab) -> None:
    res = up.many([(COREDNS1, "backend1"), (COREDNS2, "backend2"), (COREDNS2, "backend1"), (OCTANT, "backend2")])
    assert not any(res.values()), res
    rc, _, _ = up.curl("frontend", "http://10.222.1.47:8080/", 1)  # only TCP 80 is allowed
    assert rc != 0


def test_frontend_ingress_tcp80_open_to_all(up: Lab) -> None:
    res = up.many([(COREDNS1, "frontend"), (COREDNS2, "frontend"), (OCTANT, "frontend")], t=3)
    assert all(res.values()), res


def test_frontend_egress_only_backends_and_dns(up: Lab) -> None:
    res = up.many([("frontend", COREDNS1), ("frontend", OCTANT), ("frontend", COREDNS2)])
    assert not any(res.values()), res
    # pods without policies talk to each other, across nodes
    res = up.many([(COREDNS1, COREDNS2), (COREDNS2, OCTANT)], t=3)
    assert all(res.values()), res


# ------------------------------------------------------------------------------------ live changes


def _until(cond: Any, timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def test_networkpolicy_apply_delete(up: Lab, tmp_path: Path) -> None:
    f = tmp_path / "deny.yaml"
    f.write_text("""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-octant-ingress, namespace: kube-system}
spec:
  podSelector: {matchLabels: {component: antrea-octant}}
  policyTypes: [Ingress]
""")
    assert up.reaches(COREDNS2, OCTANT, t=3)
    lab("apply", "-f", str(f))
    took = _until(lambda: not up.reaches(COREDNS2, OCTANT, t=0.2), 1.0)
    assert took is not None, "deny-all ingress not in effect 1 s after `lab apply` returned"
    assert up.reaches(COREDNS2, COREDNS1, t=2)  # others untouched
    lab("delete", "-f", str(f))
    took = _until(lambda: up.reaches(COREDNS2, OCTANT, t=0.3), 1.0)
    assert took is not None, "ingress not restored 1 s after `lab delete` returned"


def test_networkpolicy_update(up: Lab, tmp_path: Path) -> None:
    """frontendpolicy without its ingress rule isolates frontend's ingress; re-applying the seed's restores it."""
    f = tmp_path / "frontendpolicy.yaml"
    f.write_text("""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: frontendpolicy, namespace: default}
spec:
  podSelector: {matchLabels: {role: frontend}}
  policyTypes: [Egress, Ingress]
  egress:
  - to: [{podSelector: {matchLabels: {role: backend}}}]
    ports: [{protocol: TCP, port: 80}]
  - ports: [{protocol: UDP, port: 53}]
""")
    lab("apply", "-f", str(f))
    assert _until(lambda: not up.reaches(COREDNS1, "frontend", t=0.2), 1.0) is not None
    assert up.reaches("frontend", "backend2", t=2)  # egress unchanged
    lab("apply", "-f", str(SEED / "policies.yaml"))
    assert _until(lambda: up.reaches(COREDNS1, "frontend", t=0.3), 1.0) is not None


def test_pod_and_service_apply_delete(up: Lab, tmp_path: Path) -> None:
    f = tmp_path / "extra.yaml"
    f.write_text("""apiVersion: v1
kind: Pod
metadata: {name: extra, namespace: default, labels: {app: extra}}
spec:
  nodeName: worker2
  containers: [{name: extra, image: x, ports: [{name: http, containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: extrasvc, namespace: default}
spec:
  selector: {app: extra}
  ports: [{port: 8080, targetPort: 80, protocol: TCP}]
""")
    t0 = time.monotonic()
    out = lab("apply", "-f", str(f)).stdout
    took = time.monotonic() - t0
    up.refresh()
    pod = up.pods["default/extra"]
    assert pod["ready"] and pod["node"] == "worker2", out
    ip = pod["ip"]
    rc, body, _ = up.curl(COREDNS1, f"http://{ip}/", 3)
    assert rc == 0 and body == INDEX.format(pod="extra", ip=ip)
    rc, body, _ = up.curl(COREDNS1, "http://extrasvc.default:8080/", 3)  # kube-proxy + DNS both updated
    assert rc == 0 and "- extra -" in body
    rc, body, _ = up.curl("frontend", "http://extrasvc.default:8080/", 1)  # frontend egress: backends only
    assert rc != 0
    print(f"\nlab apply of a Pod + Service: {took:.2f} s")

    ns = pod["netns"]
    lab("delete", "-f", str(f))
    up.refresh()
    assert "default/extra" not in up.pods
    assert not Path(f"/var/run/netns/{ns}").exists() and not Path(f"/etc/netns/{ns}").exists()
    assert "extrasvc" not in lab("exec", "worker1", "--", "iptables-save", "-t", "nat").stdout
    assert up.sh(COREDNS1, "getent", "hosts", "extrasvc.default.svc.cluster.local").returncode != 0
    assert "extra-" not in lab("exec", "worker2", "--", "ovs-vsctl", "show").stdout


def test_bad_cni_requests_get_cni_errors(up: Lab) -> None:
    """The CNI executable as kubelet runs it, with broken requests: JSON error with a spec code, nothing left."""
    from pyantrea.lab import kubelet

    node_ns = up.nodes["worker1"]["netns"]
    sock = f"{LAB_DIR}/nodes/worker1/agent.sock"
    conf = kubelet.cni_config(sock, "default", "10.96.0.10")
    cid = "f" * 64

    def cni(env: dict[str, str], stdin: str) -> tuple[int, Any]:
        p = subprocess.run(["ip", "netns", "exec", node_ns, *kubelet.cni_argv()], input=stdin, capture_output=True,
                           text=True, env={**os.environ, **env}, timeout=30)
        try:
            return p.returncode, json.loads(p.stdout)
        except ValueError:
            return p.returncode, p.stdout

    before = lab("exec", "worker1", "--", "ovs-vsctl", "list-ports", "br-int").stdout
    env = kubelet.cni_env("ADD", cid, f"{PREFIX}nosuch", "default", "ghost", None)
    rc, out = cni(env, json.dumps(conf))  # no such netns
    assert rc != 0 and isinstance(out, dict) and isinstance(out.get("code"), int) and out.get("msg"), out
    rc, out = cni(kubelet.cni_env("ADD", cid, up.ns("frontend"), "default", "ghost", None), "{not json")
    assert rc != 0 and isinstance(out, dict) and out.get("code") in (6, 7), out  # decoding / invalid config
    rc, out = cni({**env, "CNI_COMMAND": "FROB"}, json.dumps(conf))
    assert rc != 0 and isinstance(out, dict) and out.get("code") == 4, out  # invalid environment variables
    probe_ns = f"{PREFIX}cni-probe"
    subprocess.run(["ip", "netns", "add", probe_ns], check=True)
    try:
        rc, out = cni(kubelet.cni_env("ADD", cid, probe_ns, "default", "ghost", "10.99.0.5"), json.dumps(conf))
        assert rc != 0 and isinstance(out, dict) and isinstance(out.get("code"), int), out
        links = subprocess.run(["ip", "-n", probe_ns, "-o", "link"], capture_output=True, text=True).stdout
        assert "eth0" not in links
    finally:
        subprocess.run(["ip", "netns", "del", probe_ns], check=False)
    assert lab("exec", "worker1", "--", "ovs-vsctl", "list-ports", "br-int").stdout == before
    flows = lab("exec", "worker1", "--", "ovs-ofctl", "dump-flows", "br-int").stdout
    assert "10.99.0.5" not in flows


# ------------------------------------------------------------------------------------ restarts, up twice


def test_restart_agent_ovs_controller(up: Lab) -> None:
    lab("restart", "agent", "worker2")
    assert up.reaches("frontend", "backend2", t=3)
    lab("restart", "ovs", "worker1")
    assert _until(lambda: up.reaches("frontend", "backend2", t=0.5), 10) is not None
    assert up.reaches("frontend", "backend1", t=2)
    assert not up.reaches("backend1", "backend2", t=0.5)  # policies replayed too
    lab("restart", "controller")
    up.refresh()
    assert up.status["controller"]["alive"]
    p = up.sh("frontend", "curl", "-s", "-m", "3", "http://backendsvc/")
    assert p.returncode == 0 and "backend" in p.stdout


def test_up_twice_is_safe(up: Lab) -> None:
    before = {k: v["workload_pid"] for k, v in up.pods.items()}
    p = lab("up", str(SEED))
    assert "running" in p.stdout and "lab is up" in p.stdout
    up.refresh()
    assert {k: v["workload_pid"] for k, v in up.pods.items()} == before  # nothing was restarted
    assert up.reaches("frontend", "backend1", t=3)
    other = lab("up", str(ROOT / "tests"), check=False)  # another folder while one is up: refused
    assert other.returncode != 0 and "lab down" in other.stderr
    moved = subprocess.run([sys.executable, "-m", "pyantrea", "lab", "up", str(SEED)], capture_output=True,
                           text=True, env={**ENV, "PYANTREA_LAB_PREFIX": "pz-"}, cwd=ROOT, timeout=60)
    assert moved.returncode != 0 and "'pt-' (lab.json)" in moved.stderr  # a lab keeps its prefix
    assert not Path("/var/run/netns/pz-underlay").exists()


def test_zz_down_leaves_nothing(up: Lab) -> None:
    state = json.loads(Path(LAB_DIR, "lab.json").read_text())
    from pyantrea.lab.procs import ProcRef

    refs: list[ProcRef] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            r = ProcRef.from_json(o)
            if r is not None:
                refs.append(r)
            for v in o.values():
                walk(v)

    walk(state)
    assert len(refs) >= 1 + 3 * 3 + 6  # controller, 3 x (agent, ovsdb, vswitchd), 6 workloads
    # other labs (a user's pa-*): their underlay namespaces live as long as they do
    others = sorted(n for n in os.listdir("/var/run/netns") if n.endswith("underlay") and not n.startswith(PREFIX))
    t0 = time.monotonic()
    lab("down")
    print(f"\nlab down: {time.monotonic() - t0:.1f} s")
    assert [r.pid for r in refs if r.alive()] == []
    assert own_netns() == []
    assert [n for n in others if not Path("/var/run/netns", n).exists()] == []  # not ours: left alone
    assert not Path("/etc/netns").exists() or [n for n in os.listdir("/etc/netns") if n.startswith(PREFIX)] == []
    assert not Path(LAB_DIR).exists()
    assert lab("down").returncode == 0  # idempotent
    assert lab("status", check=False).returncode != 0
