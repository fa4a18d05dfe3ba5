"""`pyantrea lab up --kubernetes`: the seed on Kubernetes' own control plane, end to end (root only).

One lab for the module, in its own run dir (/run/pa-k8stest) with its own namespace prefix (pkt-),
beside any other lab; the last test brings it down and checks that nothing of it is left. Needs
Kubernetes' programs (`make kubernetes`): skipped without them, failed when CI is set.

What it checks is issue 9's "done when": the article's kubectl listings (nodes, pods, svc, ep,
netpol), 20 `curl backendsvc` through the real kube-proxy, live flows equal to the offline ones,
a policy applied with kubectl in force within 1 s of the API server's event, an invalid policy
refused by the API server with its message and nothing changed, and a Deployment of 10 replicas
scheduled, wired, reachable and cleaned up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyantrea.lab.http import request_json
from pyantrea.lab.kubernetes import bin_dir, missing_programs

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed"
LAB_DIR = "/run/pa-k8stest"
PREFIX = "pkt-"
ENV = {**os.environ, "PYANTREA_LAB_DIR": LAB_DIR, "PYANTREA_LAB_PREFIX": PREFIX}
NODES = ("master", "worker1", "worker2")
COOKIE = re.compile(r"cookie=0x[0-9a-f]+")

pytestmark = [pytest.mark.lab]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def lab(*args: str, check: bool = True, timeout: float = 240, input: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "pyantrea", "lab", *args], capture_output=True, text=True,
                       env=ENV, cwd=ROOT, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"pyantrea lab {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def kubectl(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return lab("kubectl", *args, check=check, input=input, timeout=120)


def rows(text: str) -> list[dict[str, str]]:
    """kubectl's table as dicts (columns split on 2+ spaces, as kubectl aligns them)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    head = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(head, re.split(r"\s{2,}", ln.strip()))) for ln in lines[1:]]


def own_netns() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/var/run/netns") if n.startswith(PREFIX))
    except FileNotFoundError:
        return []


def agent_flows(node: str) -> list[str]:
    code, body = request_json(Path(LAB_DIR) / "nodes" / node / "agent.sock", "GET", "/v1/ovsflows?format=ofctl",
                              timeout=10)
    assert code == 200, body
    return [COOKIE.sub("cookie=X", ln) for ln in body["lines"]]


def offline_flows(folder: Path, node: str) -> list[str]:
    p = subprocess.run(["antctl", "--cluster", str(folder), "get", "ovsflows", "--node", node, "-o", "ofctl"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    if p.returncode != 0 and shutil.which("antctl") is None:
        p = subprocess.run([sys.executable, "-m", "pyantrea.antctl.main", "--cluster", str(folder), "get", "ovsflows",
                            "--node", node, "-o", "ofctl"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    return [COOKIE.sub("cookie=X", ln) for ln in p.stdout.splitlines()]


def in_pod(pod: str, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyantrea", "lab", "exec", pod, "--", *cmd], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def up() -> Iterator[float]:
    gone = missing_programs()
    if gone:
        why = f"{', '.join(gone)} not in {bin_dir()} (make kubernetes)"
        if in_ci():
            pytest.fail(f"{why}, and CI is set", pytrace=False)
        pytest.skip(why)
    lab("down", check=False)
    t0 = time.monotonic()
    p = lab("up", "--kubernetes", str(SEED), check=False, timeout=300)
    elapsed = time.monotonic() - t0
    if p.returncode != 0:
        lab("down", check=False)
        raise AssertionError(f"lab up --kubernetes failed ({elapsed:.1f} s)\n{p.stdout}\n{p.stderr}")
    print(f"\nlab up --kubernetes: {elapsed:.1f} s")
    try:
        yield elapsed
    finally:
        lab("down", check=False)


@pytest.fixture(scope="module")
def offline() -> dict[str, list[str]]:
    return {n: offline_flows(SEED, n) for n in NODES}


# ------------------------------------------------------------------------------------ the article's listings


def test_nodes_ready_with_the_articles_internal_ips(up: float) -> None:
    got = {r["NAME"]: r for r in rows(kubectl("get", "nodes", "-o", "wide").stdout)}
    assert sorted(got) == list(NODES)
    assert {n: (r["STATUS"], r["INTERNAL-IP"]) for n, r in got.items()} == {
        "master": ("Ready", "10.79.1.200"), "worker1": ("Ready", "10.79.1.201"), "worker2": ("Ready", "10.79.1.202")}
    assert got["master"]["ROLES"] == "master"
    leases = kubectl("-n", "kube-node-lease", "get", "leases", "-o", "name").stdout.split()
    assert sorted(leases) == [f"lease.coordination.k8s.io/{n}" for n in NODES]


def test_pods_where_the_article_has_them(up: float) -> None:
    got = {r["NAME"]: r for r in rows(kubectl("get", "pods", "-o", "wide").stdout)}
    assert {n: (r["READY"], r["STATUS"], r["IP"], r["NODE"]) for n, r in got.items()} == {
        "backend1": ("1/1", "Running", "10.222.1.47", "worker1"),
        "frontend": ("1/1", "Running", "10.222.1.48", "worker1"),
        "backend2": ("1/1", "Running", "10.222.2.34", "worker2")}
    system = {r["NAME"]: r for r in rows(kubectl("get", "pods", "-n", "kube-system", "-o", "wide").stdout)}
    assert system["coredns-66bff467f8-bclzd"]["IP"] == "10.222.1.2"
    assert system["antrea-agent-f76q2"]["READY"] == "2/2" and system["antrea-agent-f76q2"]["IP"] == "10.79.1.201"
    assert all(r["STATUS"] == "Running" for r in system.values()), system


def test_service_endpoints_and_policies(up: float) -> None:
    svc = rows(kubectl("get", "svc", "backendsvc").stdout)[0]
    assert svc["CLUSTER-IP"] == "10.104.65.133" and svc["PORT(S)"] == "80/TCP"
    ep = rows(kubectl("get", "ep", "backendsvc").stdout)[0]  # the real endpoints controller's
    assert ep["ENDPOINTS"] == "10.222.1.47:80,10.222.2.34:80"
    pols = {r["NAME"]: r["POD-SELECTOR"] for r in rows(kubectl("get", "netpol").stdout)}
    assert pols == {"backendpolicy": "role=backend", "frontendpolicy": "role=frontend"}
    d = kubectl("describe", "netpol", "frontendpolicy").stdout
    assert "PodSelector:     role=frontend" in d and "To Port: 53/UDP" in d
    k = rows(kubectl("get", "ep", "kubernetes").stdout)[0]  # the API server's own, on the master
    assert k["ENDPOINTS"] == "10.79.1.200:6443"


# ------------------------------------------------------------------------------------ traffic and flows


def test_backendsvc_through_the_real_kube_proxy(up: float) -> None:
    answers = Counter()
    for _ in range(20):
        p = in_pod("default/frontend", "curl", "-s", "--max-time", "3", "backendsvc")
        assert p.returncode == 0, p.stderr
        answers[p.stdout.split(" - ")[1]] += 1
    print("20 x curl backendsvc:", dict(answers))
    assert set(answers) == {"backend1", "backend2"}
    # the rules are kube-proxy's own (the lab writes none in this mode), and the model names its
    # chains as kube-proxy does
    from pyantrea.kubeproxy.rules import service_chain, service_port_name

    save = subprocess.run(["ip", "netns", "exec", f"{PREFIX}worker1", "iptables-save", "-t", "nat"],
                          capture_output=True, text=True, check=True).stdout
    chain = service_chain(service_port_name("default", "backendsvc", None), "TCP")
    assert f":{chain} - " in save, save
    assert f'-A KUBE-SERVICES -d 10.104.65.133/32 -p tcp -m comment --comment "default/backendsvc cluster IP" ' \
           f"-m tcp --dport 80 -j {chain}" in save


def test_live_flows_equal_the_offline_ones(up: float, offline: dict[str, list[str]]) -> None:
    for n in NODES:
        assert agent_flows(n) == offline[n], n
    # and antctl's live view says the same as its offline one
    live = subprocess.run(["antctl", "get", "ovsflows", "--node", "worker1", "-o", "ofctl"], capture_output=True,
                          text=True, env=ENV, timeout=60)
    assert live.returncode == 0, live.stderr
    assert [COOKIE.sub("cookie=X", ln) for ln in live.stdout.splitlines()] == offline["worker1"]


DNS_POLICY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: zz-dns-only, namespace: kube-system}
spec:
  podSelector: {matchLabels: {k8s-app: kube-dns}}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
"""


def test_policy_applied_with_kubectl_is_in_force_within_a_second(up: float, offline: dict[str, list[str]],
                                                                  tmp_path: Path) -> None:
    folder = tmp_path / "seed+policy"
    shutil.copytree(SEED, folder)
    (folder / "zz-dns-only.yaml").write_text(DNS_POLICY)
    want = {n: offline_flows(folder, n) for n in NODES}
    span = [n for n in NODES if want[n] != offline[n]]
    assert span == ["worker1", "worker2"]  # the two coredns Pods' nodes
    octant = "kube-system/antrea-octant-f59b76dd9-dcvvl"
    assert in_pod(octant, "curl", "-s", "--max-time", "2", "10.222.2.2").returncode == 0  # coredns' HTTP, before

    # the API server's event, as a watcher next to it sees it
    watch = subprocess.Popen([sys.executable, "-m", "pyantrea", "lab", "kubectl", "get", "networkpolicies", "-A",
                              "--watch-only", "-o", "jsonpath={.metadata.name} {.metadata.resourceVersion}{\"\\n\"}"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    seen: dict[str, float] = {}

    def read() -> None:
        assert watch.stdout is not None
        for line in watch.stdout:
            if line.startswith("zz-dns-only"):
                seen["event"] = time.monotonic()
                seen["rv"] = float(line.split()[1])
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    time.sleep(1.5)  # the watch is established
    try:
        (tmp_path / "p.yaml").write_text(DNS_POLICY)
        kubectl("apply", "-f", str(tmp_path / "p.yaml"))
        t_done: dict[str, float] = {}
        deadline = time.monotonic() + 10
        while len(t_done) < len(NODES) and time.monotonic() < deadline:
            for n in NODES:
                if n not in t_done and agent_flows(n) == want[n]:
                    t_done[n] = time.monotonic()
            time.sleep(0.005)
        t.join(5)
    finally:
        watch.terminate()
        watch.wait(5)
    assert set(t_done) == set(NODES), f"flows not as offline on {set(NODES) - set(t_done)}"
    assert "event" in seen, "no watch event"
    lag = {n: t_done[n] - seen["event"] for n in span}
    print(f"policy -> flows (from the API server's event, resourceVersion {int(seen['rv'])}): "
          + ", ".join(f"{n} {v * 1000:.0f} ms" for n, v in lag.items()))
    assert max(lag.values()) < 1.0, lag
    # in force, packet by packet: DNS still answers, coredns' port 80 no longer does
    assert in_pod(octant, "curl", "-s", "--max-time", "2", "10.222.2.2").returncode != 0
    assert in_pod("default/frontend", "curl", "-s", "--max-time", "3", "backendsvc").returncode == 0
    kubectl("delete", "-f", str(tmp_path / "p.yaml"))
    deadline = time.monotonic() + 5
    while any(agent_flows(n) != offline[n] for n in NODES):
        assert time.monotonic() < deadline, "the seed's flows did not come back"
        time.sleep(0.05)


BAD = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-port, namespace: default}
spec:
  podSelector: {matchLabels: {role: frontend}}
  ingress:
  - ports:
    - {protocol: TCP, port: 99999}
"""


def test_an_invalid_policy_is_refused_by_the_api_server(up: float, offline: dict[str, list[str]],
                                                        tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    p = lab("apply", "-f", str(f), check=False)
    assert p.returncode == 1
    msg = ('The NetworkPolicy "bad-port" is invalid: spec.ingress[0].ports[0].port: Invalid value: 99999: '
           "must be between 1 and 65535, inclusive")
    assert msg in p.stderr, p.stderr
    k = kubectl("apply", "-f", str(f), check=False)
    assert k.returncode != 0 and msg in k.stderr
    assert sorted(r["NAME"] for r in rows(kubectl("get", "netpol", "-A").stdout)) == ["backendpolicy",
                                                                                       "frontendpolicy"]
    for n in NODES:
        assert agent_flows(n) == offline[n], n


DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 10
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: dumlutimuralp/networktest, ports: [{containerPort: 80}]}
"""


def _ports(node: str) -> set[str]:
    p = lab("exec", node, "--", "ovs-vsctl", "list-ports", "br-int")
    return set(p.stdout.split())


def _leases(node: str) -> set[str]:
    d = Path(LAB_DIR, "nodes", node, "ipam")
    return {f.name for f in d.rglob("*") if f.is_file() and re.fullmatch(r"\d+\.\d+\.\d+\.\d+", f.name)}


def test_deployment_of_ten_replicas(up: float, offline: dict[str, list[str]], tmp_path: Path) -> None:
    before = {n: (_ports(n), _leases(n)) for n in NODES}
    f = tmp_path / "web.yaml"
    f.write_text(DEPLOYMENT)
    t0 = time.monotonic()
    lab("apply", "-f", str(f))
    kubectl("rollout", "status", "deployment/web", "--timeout", "120s")
    t_ready = time.monotonic() - t0
    pods = json.loads(kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
    assert len(pods) == 10
    placed = Counter(p["spec"]["nodeName"] for p in pods)
    assert set(placed) <= set(NODES) and len(placed) >= 2, placed  # kube-scheduler spreads them
    ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}
    assert len(set(ips.values())) == 10
    src = sorted(ips)[0]
    for name, ip in sorted(ips.items()):
        r = in_pod(f"default/{src}", "curl", "-s", "--max-time", "3", ip)
        assert r.returncode == 0 and f" - {name} - {ip}/24" in r.stdout, (name, r.stdout, r.stderr)
    netns = [n for n in own_netns() if "web-" in n]
    assert len(netns) == 10
    print(f"Deployment web: 10 replicas Running in {t_ready:.1f} s on {dict(placed)}")

    t0 = time.monotonic()
    lab("delete", "-f", str(f))
    kubectl("wait", "--for=delete", "pod", "-l", "app=web", "--timeout", "60s", check=False)
    deadline = time.monotonic() + 20
    while [n for n in own_netns() if "web-" in n] and time.monotonic() < deadline:
        time.sleep(0.1)
    print(f"Deployment web deleted and cleaned up in {time.monotonic() - t0:.1f} s")
    assert json.loads(kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout)["items"] == []
    assert [n for n in own_netns() if "web-" in n] == []
    assert not list(Path(LAB_DIR, "pods").glob("default_web-*"))
    procs = subprocess.run(["pgrep", "-f", "pyantrea.lab.workload --pod web-"], capture_output=True, text=True)
    assert procs.stdout.strip() == "", procs.stdout
    for n in NODES:
        assert (_ports(n), _leases(n)) == before[n], n
        assert agent_flows(n) == offline[n], n


def test_status(up: float) -> None:
    p = lab("status", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    d = json.loads(lab("status", "-o", "json").stdout)
    assert d["mode"] == "kubernetes" and d["prefix"] == PREFIX
    assert all(v["alive"] for v in d["kubernetes"]["processes"].values())
    assert lab("kubeconfig").stdout.strip() == f"{LAB_DIR}/kubernetes/kubeconfig/admin.kubeconfig"


def test_down_leaves_nothing(up: float) -> None:
    others = sorted(n for n in os.listdir("/var/run/netns") if n.endswith("underlay") and not n.startswith(PREFIX))
    t0 = time.monotonic()
    lab("down")
    print(f"lab down: {time.monotonic() - t0:.1f} s")
    assert own_netns() == []
    assert not Path(LAB_DIR).exists()
    if Path("/etc/netns").is_dir():
        assert not [n for n in os.listdir("/etc/netns") if n.startswith(PREFIX)]
    left = subprocess.run(["pgrep", "-f", LAB_DIR], capture_output=True, text=True).stdout.split()
    assert left == [], left
    still = sorted(n for n in os.listdir("/var/run/netns") if n.endswith("underlay") and not n.startswith(PREFIX))
    assert set(others) <= set(still), (others, still)  # other labs' namespaces are not touched
