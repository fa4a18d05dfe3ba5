"""Policy changes under traffic (issue 5 §4): replacing or deleting a policy never opens a window in
which traffic that both the old and the new version deny gets through.

Denied-by-both probes run in tight loops (a new TCP connection attempt every 10 ms each) while the
seed's two policies are replaced 20 times by versions that change other rules, then frontendpolicy
is deleted and re-added 4 times while a guard policy with the same rules is in place. Each change is
waited for (every agent has installed it) before the next, so every transition happens in OVS.
Receivers in the target Pods count what arrives: 0 segments of the denied flows.

Which policy denies what (both versions):
  backend1 -> frontend:80, backend2 -> frontend:80   backendpolicy: egress isolation, no egress rule
  coredns1 -> frontend:8080                           frontendpolicy: ingress TCP 80 (v2: 80 and 81)
  frontend -> coredns1:80                             frontendpolicy: egress to backends TCP 80 + DNS
"""

from __future__ import annotations

from .reltools import BACKEND1, BACKEND2, COREDNS1, FRONTEND, SEED, RelLab, until

V2 = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: frontendpolicy, namespace: default}
spec:
  podSelector: {matchLabels: {role: frontend}}
  policyTypes: [Egress, Ingress]
  egress:
  - to: [{podSelector: {matchLabels: {role: backend}}}]
    ports: [{protocol: TCP, port: 80}]
  - ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
  ingress:
  - ports: [{protocol: TCP, port: 80}, {protocol: TCP, port: 81}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backendpolicy, namespace: default}
spec:
  podSelector: {matchLabels: {role: backend}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{podSelector: {matchLabels: {role: frontend}}}]
    ports: [{protocol: TCP, port: 80}, {protocol: TCP, port: 8080}]
"""

GUARD = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: reltest-frontend-guard, namespace: default}
spec:
  podSelector: {matchLabels: {role: frontend}}
  policyTypes: [Egress, Ingress]
  egress:
  - to: [{podSelector: {matchLabels: {role: backend}}}]
    ports: [{protocol: TCP, port: 80}]
  - ports: [{protocol: UDP, port: 53}]
  ingress:
  - ports: [{protocol: TCP, port: 80}]
"""

REPLACEMENTS = 20
DELETIONS = 4


def test_replacing_and_deleting_policies_never_lets_denied_traffic_through(lab: RelLab) -> None:
    v1 = (SEED / "policies.yaml").read_text()
    frontendpolicy = v1[:v1.index("\n---")]
    fe, c1 = lab.ip(FRONTEND), lab.ip(COREDNS1)
    at_fe = lab.probe(FRONTEND, "recv", "--iface", "eth0")
    at_c1 = lab.probe(COREDNS1, "recv", "--iface", "eth0")
    probes = {
        "backend1->frontend:80": lab.probe(BACKEND1, "probe", "--dst", fe, "--port", "80", "--rate", "100"),
        "backend2->frontend:80": lab.probe(BACKEND2, "probe", "--dst", fe, "--port", "80", "--rate", "100"),
        "coredns1->frontend:8080": lab.probe(COREDNS1, "probe", "--dst", fe, "--port", "8080", "--rate", "100"),
        "frontend->coredns1:80": lab.probe(FRONTEND, "probe", "--dst", c1, "--port", "80", "--rate", "100"),
    }
    allowed = lab.probe(FRONTEND, "probe", "--dst", lab.ip(BACKEND2), "--port", "80", "--rate", "50")
    bundles0 = {n: lab.stats(n)["bundles"] for n in ("worker1", "worker2")}
    ops = 0
    v2_seen = False
    try:
        for i in range(REPLACEMENTS):
            lab.apply_text(V2 if i % 2 == 0 else v1)
            ops += 1
            if i == 0:  # the new version is in force (TCP 81 to frontend is open)
                v2_seen = lab.tcp_answers(COREDNS1, fe, 81)
        lab.apply_text(GUARD)
        for _ in range(DELETIONS):
            lab.apply_text(frontendpolicy, delete=True)
            lab.apply_text(frontendpolicy)
            ops += 2
    finally:
        lab.apply_text(GUARD, delete=True, check=False)
        lab.lab("apply", "-f", str(SEED / "policies.yaml"))
        lab.settle()
        res = {k: p.stop() for k, p in probes.items()}
        ok = allowed.stop()
        got_fe, got_c1 = at_fe.stop(), at_c1.stop()
    print(f"\n{ops} policy changes; denied probes: {res}\nallowed probe frontend->backend2:80: {ok}\n"
          f"bundles: {[lab.stats(n)['bundles'] - bundles0[n] for n in bundles0]}")
    assert v2_seen, "the replacement did not take effect"
    for k, r in res.items():
        assert r["attempts"] > 1000 and r["through"] == 0, (k, r)
    arrived = {k: v for k, v in got_fe.items() if k in (f"tcp:{lab.ip(BACKEND1)}:80", f"tcp:{lab.ip(BACKEND2)}:80",
                                                         f"tcp:{c1}:8080")}
    arrived.update({k: v for k, v in got_c1.items() if k == f"tcp:{fe}:80"})
    assert arrived == {}, arrived
    assert lab.stats("worker1")["bundles"] - bundles0["worker1"] >= ops  # every change reached OVS
    # allowed by both versions: never cut either
    assert ok["connected"] == ok["attempts"] - ok.get("timeout", 0) and ok.get("timeout", 0) == 0, ok
    assert until(lambda: not lab.tcp_answers(COREDNS1, fe, 81), 3) is not None
