"""antctl reachability: verdicts by tracing through each node's flows (real OVS sandboxes, offline).

The seed's matrix must match its two policies; the NetworkPolicy examples of the Kubernetes
documentation (concepts/services-networking/network-policies) become cluster folders in tmp dirs
and their full matrices are checked against expectations written out by hand.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from pyantrea.antctl.backends import OfflineBackend
from pyantrea.antctl.main import main as antctl
from pyantrea.traceflow.reachability import PortSpec, parse_ports, reachability

pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="Open vSwitch is not installed"),
]

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"

NODES = """
apiVersion: v1
kind: Node
metadata: {{name: n1}}
spec: {{podCIDR: {c1}}}
status: {{addresses: [{{type: InternalIP, address: 10.79.1.201}}]}}
---
apiVersion: v1
kind: Node
metadata: {{name: n2}}
spec: {{podCIDR: {c2}}}
status: {{addresses: [{{type: InternalIP, address: 10.79.1.202}}]}}
"""


def pod(ns: str, name: str, node: str, labels: dict[str, str] | None = None, ports: str = "") -> str:
    lab = ", ".join(f"{k}: {v}" for k, v in (labels or {}).items())
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{{lab}}}}}
spec: {{nodeName: {node}, containers: [{{name: c{', ports: [' + ports + ']' if ports else ''}}}]}}
"""


def namespace(name: str, labels: dict[str, str] | None = None) -> str:
    lab = ", ".join(f"{k}: {v}" for k, v in (labels or {}).items())
    return f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {name}, labels: {{{lab}}}}}
"""


def write_cluster(d: Path, *docs: str, cidrs: tuple[str, str] = ("10.222.1.0/24", "10.222.2.0/24")) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "nodes.yaml").write_text(NODES.format(c1=cidrs[0], c2=cidrs[1]))
    (d / "objects.yaml").write_text("---".join(textwrap.dedent(x) for x in docs))
    return d


def matrix(path: Path, ports: list[str]) -> tuple[dict[tuple[str, str, str], str], list[dict[str, Any]]]:
    b = OfflineBackend(str(path))
    try:
        res = reachability(b, parse_ports(ports))
    finally:
        b.close()
    return {(r["from"], r["to"], f"{r['protocol']}/{r['port']}"): r["verdict"] for r in res}, res


def expect(pods: list[str], ports: list[str], allowed: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    return {(a, b, p): ("allow" if (a, b, p) in allowed else "deny")
            for a in pods for b in pods if a != b for p in ports}


def all_pairs(pods: list[str], port: str, frm: list[str] | None = None, to: list[str] | None = None
              ) -> set[tuple[str, str, str]]:
    return {(a, b, port) for a in (frm or pods) for b in (to or pods) if a != b}


# ----------------------------------------------------------------------------- the seed
SEED_PODS = ["default/backend1", "default/backend2", "default/frontend", "kube-system/antrea-octant-f59b76dd9-dcvvl",
             "kube-system/coredns-66bff467f8-bclzd", "kube-system/coredns-66bff467f8-f4nc4"]
KS = SEED_PODS[3:]


def test_seed_matrix_matches_its_two_policies() -> None:
    got, res = matrix(SEED, ["TCP/80", "UDP/53"])
    allowed = (
        # frontendpolicy egress rule 1: to role=backend on TCP 80; backendpolicy ingress: from role=frontend, TCP 80
        {("default/frontend", "default/backend1", "TCP/80"), ("default/frontend", "default/backend2", "TCP/80")}
        # frontendpolicy ingress: TCP 80 from anywhere; kube-system Pods are not isolated
        | all_pairs(SEED_PODS, "TCP/80", frm=KS, to=KS + ["default/frontend"])
        # frontendpolicy egress rule 2: UDP 53 anywhere (the backends are isolated for ingress)
        | all_pairs(SEED_PODS, "UDP/53", frm=["default/frontend"], to=KS)
        | all_pairs(SEED_PODS, "UDP/53", frm=KS, to=KS)
    )
    assert got == expect(SEED_PODS, ["TCP/80", "UDP/53"], allowed)
    why = {(r["from"], r["to"], r["protocol"]): r.get("reason") for r in res}
    r = why[("default/backend1", "default/frontend", "TCP")]
    assert (r["node"], r["table"], r["tableName"], r["networkPolicies"]) == (
        "worker1", 60, "EgressDefaultRule", ["default/backendpolicy"])
    assert r["rules"] and "deny-all egress" in r["rules"][0]
    r = why[("kube-system/coredns-66bff467f8-bclzd", "default/backend2", "TCP")]
    assert (r["node"], r["table"], r["networkPolicies"]) == ("worker2", 100, ["default/backendpolicy"])
    assert r["rules"][0].startswith("default/backendpolicy ingress rule 1 (conj_id ")
    r = why[("default/frontend", "kube-system/coredns-66bff467f8-f4nc4", "TCP")]
    assert (r["node"], r["table"], r["networkPolicies"]) == ("worker1", 60, ["default/frontendpolicy"])
    r = why[("kube-system/coredns-66bff467f8-f4nc4", "default/frontend", "UDP")]
    assert (r["node"], r["table"], r["networkPolicies"]) == ("worker1", 100, ["default/frontendpolicy"])


def test_cli_json_is_exactly_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    assert antctl(["--cluster", str(SEED), "reachability", "--port", "TCP/80", "-o", "json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert isinstance(res, list) and len(res) == 6 * 5
    for r in res:
        keys = ["from", "to", "protocol", "port", "verdict"] + (["reason"] if r["verdict"] == "deny" else [])
        assert list(r) == keys
        assert r["protocol"] == "TCP" and r["port"] == 80 and r["verdict"] in ("allow", "deny")
    assert sum(r["verdict"] == "allow" for r in res) == 2 + 3 * 3


def test_cli_table_has_a_matrix_per_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert antctl(["--cluster", str(SEED), "reachability", "--port", "tcp/80,UDP/53"]) == 0
    out = capsys.readouterr().out
    assert out.count("(rows: from, columns: to)") == 2
    assert "TCP/80: " in out and "UDP/53: " in out
    row = [line for line in out.splitlines() if line.startswith("3. default/frontend")][0]
    assert row.split()[2:] == [".", ".", "-", "X", "X", "X"]
    assert "default/backend1 -> default/frontend: worker1 table 60 EgressDefaultRule: default/backendpolicy deny-all" \
        in out


def test_bad_port_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert antctl(["--cluster", str(SEED), "reachability", "--port", "ICMP/80"]) == 1
    assert capsys.readouterr().err.strip() == "Error: --port 'ICMP/80': protocol must be TCP, UDP or SCTP"


# ----------------------------------------------------------------------------- Kubernetes documentation examples
def test_default_deny_ingress(tmp_path: Path) -> None:
    d = write_cluster(tmp_path / "c", namespace("default"), namespace("other"),
                      pod("default", "a", "n1"), pod("default", "b", "n2"), pod("other", "c", "n1"), """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
  namespace: default
spec:
  podSelector: {}
  policyTypes:
  - Ingress
""")
    pods = ["default/a", "default/b", "other/c"]
    got, res = matrix(d, ["TCP/80", "UDP/53"])
    allowed = {(a, "other/c", p) for a in pods[:2] for p in ("TCP/80", "UDP/53")}
    assert got == expect(pods, ["TCP/80", "UDP/53"], allowed)
    for r in res:
        if r["verdict"] == "deny":
            assert r["reason"]["table"] == 100 and r["reason"]["networkPolicies"] == ["default/default-deny-ingress"]
            assert "deny-all ingress" in r["reason"]["rules"][0]


def test_default_deny_egress(tmp_path: Path) -> None:
    d = write_cluster(tmp_path / "c", namespace("default"), namespace("other"),
                      pod("default", "a", "n1"), pod("default", "b", "n2"), pod("other", "c", "n1"), """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-egress
  namespace: default
spec:
  podSelector: {}
  policyTypes:
  - Egress
""")
    pods = ["default/a", "default/b", "other/c"]
    got, res = matrix(d, ["TCP/80"])
    assert got == expect(pods, ["TCP/80"], {("other/c", "default/a", "TCP/80"), ("other/c", "default/b", "TCP/80")})
    assert {r["reason"]["table"] for r in res if r["verdict"] == "deny"} == {60}


def test_allow_from_a_namespace(tmp_path: Path) -> None:
    d = write_cluster(tmp_path / "c", namespace("prod"), namespace("myproject", {"project": "myproject"}),
                      namespace("other"),
                      pod("prod", "db", "n1"), pod("prod", "web", "n2"), pod("myproject", "client", "n1"),
                      pod("other", "x", "n2"), """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-from-myproject
  namespace: prod
spec:
  podSelector: {}
  policyTypes:
  - Ingress
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          project: myproject
""")
    pods = ["myproject/client", "other/x", "prod/db", "prod/web"]
    got, res = matrix(d, ["TCP/80", "UDP/53"])
    allowed: set[tuple[str, str, str]] = set()
    for p in ("TCP/80", "UDP/53"):
        allowed |= all_pairs(pods, p, to=["myproject/client", "other/x"])
        allowed |= {("myproject/client", "prod/db", p), ("myproject/client", "prod/web", p)}
    assert got == expect(pods, ["TCP/80", "UDP/53"], allowed)
    deny = [r for r in res if r["verdict"] == "deny"]
    assert {(r["reason"]["table"], tuple(r["reason"]["networkPolicies"])) for r in deny} == {
        (100, ("prod/allow-from-myproject",))}


DOCS_TEST_POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
"""


def test_ipblock_with_except_the_documentations_policy(tmp_path: Path) -> None:
    # the docs' test-network-policy, verbatim; the nodes' Pod CIDRs are inside 172.17.0.0/16 so that the
    # ipBlock matters: n1's Pods (172.17.0.x) are in it, n2's (172.17.1.x) are in the except
    d = write_cluster(tmp_path / "c", namespace("default"), namespace("myproject", {"project": "myproject"}),
                      namespace("other"),
                      pod("default", "db", "n1", {"role": "db"}), pod("default", "frontend", "n2", {"role": "frontend"}),
                      pod("default", "plain", "n1"), pod("default", "plain2", "n2"),
                      pod("myproject", "client", "n2"), pod("other", "x", "n2"), DOCS_TEST_POLICY,
                      cidrs=("172.17.0.0/24", "172.17.1.0/24"))
    pods = ["default/db", "default/frontend", "default/plain", "default/plain2", "myproject/client", "other/x"]
    ports = ["TCP/6379", "TCP/80"]
    got, res = matrix(d, ports)
    others = [p for p in pods if p != "default/db"]
    allowed: set[tuple[str, str, str]] = set()
    for p in ports:
        allowed |= all_pairs(pods, p, frm=others, to=others)  # db is the only Pod selected
    # into db on 6379: the ipBlock (n1's Pods, outside the except), the namespace, the podSelector
    allowed |= {(a, "default/db", "TCP/6379") for a in ("default/plain", "myproject/client", "default/frontend")}
    # db's egress: only 10.0.0.0/24 TCP 5978, so nothing else
    assert got == expect(pods, ports, allowed)
    why = {(r["from"], r["to"], r["port"]): r.get("reason") for r in res}
    assert why[("default/plain2", "default/db", 6379)]["table"] == 100  # in the except
    assert why[("default/db", "default/plain", 6379)]["table"] == 60


def test_named_ports(tmp_path: Path) -> None:
    d = write_cluster(tmp_path / "c", namespace("default"),
                      pod("default", "api-a", "n1", {"app": "api"}, "{name: http, containerPort: 8080}"),
                      pod("default", "api-b", "n2", {"app": "api"}, "{name: http, containerPort: 9090}"),
                      pod("default", "client", "n2"), """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-http-by-name
  namespace: default
spec:
  podSelector:
    matchLabels:
      app: api
  ingress:
  - ports:
    - port: http
""")
    pods = ["default/api-a", "default/api-b", "default/client"]
    ports = ["TCP/8080", "TCP/9090"]
    got, res = matrix(d, ports)
    allowed: set[tuple[str, str, str]] = set()
    for p in ports:
        allowed |= all_pairs(pods, p, to=["default/client"])
    allowed |= {(a, "default/api-a", "TCP/8080") for a in ("default/api-b", "default/client")}
    allowed |= {(a, "default/api-b", "TCP/9090") for a in ("default/api-a", "default/client")}
    assert got == expect(pods, ports, allowed)
    r = [x for x in res if (x["from"], x["to"], x["port"]) == ("default/client", "default/api-a", 9090)][0]
    assert r["reason"]["table"] == 100 and r["reason"]["networkPolicies"] == ["default/allow-http-by-name"]


def test_egress_to_dns_only(tmp_path: Path) -> None:
    d = write_cluster(tmp_path / "c", namespace("default"), namespace("kube-system"),
                      pod("default", "web", "n1", {"app": "web"}),
                      pod("kube-system", "dns", "n2", {"k8s-app": "kube-dns"},
                          "{name: dns, containerPort: 53, protocol: UDP}"),
                      pod("default", "other", "n2"), """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: egress-dns-only
  namespace: default
spec:
  podSelector:
    matchLabels:
      app: web
  policyTypes:
  - Egress
  egress:
  - ports:
    - protocol: UDP
      port: 53
""")
    pods = ["default/other", "default/web", "kube-system/dns"]
    ports = ["UDP/53", "TCP/53", "TCP/80"]
    got, res = matrix(d, ports)
    allowed: set[tuple[str, str, str]] = set()
    for p in ports:
        allowed |= all_pairs(pods, p, frm=["default/other", "kube-system/dns"])
    allowed |= all_pairs(pods, "UDP/53", frm=["default/web"])
    assert got == expect(pods, ports, allowed)
    for r in res:
        if r["verdict"] == "deny":
            assert (r["from"], r["reason"]["table"], r["reason"]["networkPolicies"]) == (
                "default/web", 60, ["default/egress-dns-only"])


# ----------------------------------------------------------------------------- size: 9 Pods x 6 ports
def nine_pod_cluster(d: Path) -> Path:
    docs = [namespace("default"), namespace("team", {"team": "a"})]
    for i in range(9):
        ns = "team" if i % 3 == 0 else "default"
        role = ["web", "api", "db"][i % 3]
        docs.append(pod(ns, f"p{i}", f"n{1 + i % 2}", {"role": role}, "{name: http, containerPort: 8080}"))
    docs.append("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: default}
spec:
  podSelector: {matchLabels: {role: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{podSelector: {matchLabels: {role: api}}}]
    ports: [{port: 5432}, {port: http}]
""")
    docs.append("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: default}
spec:
  podSelector: {matchLabels: {role: api}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: a}}}]
    ports: [{port: 80}, {port: 8080}]
  egress:
  - to: [{podSelector: {matchLabels: {role: db}}}]
  - ports: [{port: 53, protocol: UDP}]
  policyTypes: [Ingress, Egress]
""")
    return write_cluster(d, *docs)


def test_nine_pods_six_ports_in_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = nine_pod_cluster(tmp_path / "c")
    b = OfflineBackend(str(d))
    try:
        ports = parse_ports(["TCP/80", "TCP/8080", "TCP/5432", "UDP/53", "TCP/443", "SCTP/9000"])
        b.start_sandboxes(["n1", "n2"])
        # one persistent unixctl connection per sandbox: no ovs-appctl process may start from here on
        real_popen = subprocess.Popen
        spawned: list[str] = []

        def no_appctl(args: Any, *a: Any, **kw: Any) -> Any:
            spawned.append(str(args))
            return real_popen(args, *a, **kw)

        monkeypatch.setattr(subprocess, "Popen", no_appctl)
        t0 = time.monotonic()
        res = reachability(b, ports)
        took = time.monotonic() - t0
        monkeypatch.undo()
        assert not [x for x in spawned if "ovs-appctl" in x]
    finally:
        monkeypatch.undo()
        b.close()
    assert len(res) == 9 * 8 * 6
    assert took < 10, f"{took:.1f} s"
    got = {(r["from"], r["to"], r["port"]): r["verdict"] for r in res}
    # spot checks: an api Pod reaches a db Pod on 5432 and the named http port, nothing else does
    assert got[("default/p1", "default/p2", 5432)] == "allow" and got[("default/p1", "default/p2", 8080)] == "allow"
    assert got[("default/p1", "default/p2", 80)] == "deny" and got[("team/p3", "default/p2", 5432)] == "deny"
    assert got[("team/p0", "default/p1", 80)] == "allow" and got[("default/p2", "default/p1", 80)] == "deny"
    assert isinstance(PortSpec("TCP", 80), PortSpec)
