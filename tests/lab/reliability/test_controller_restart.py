"""Controller restart (issue 5 §3).

In the lab the controller is also the cluster's store (there is no API server), so while it is
down nothing can change a policy: `lab apply` refuses, saying the controller is not running. "A
policy changed while the controller was down is applied when it returns" is therefore tested as:
the change is refused clearly while it is down, and applied as soon as it is back. Meanwhile the
agents keep enforcing what they had (OVS keeps the flows; the agents retry the watch with back-off),
and when the controller returns (a new epoch) they resync: a diff against what they have, so no
flow mod at all when nothing changed.
"""

from __future__ import annotations

import os
import signal
import time

from .reltools import BACKEND1, BACKEND2, COREDNS1, FRONTEND, SEED, RelLab, until

FRONTEND_V2 = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: frontendpolicy, namespace: default}
spec:
  podSelector: {matchLabels: {role: frontend}}
  policyTypes: [Egress, Ingress]
  egress:
  - to: [{podSelector: {matchLabels: {role: backend}}}]
    ports: [{protocol: TCP, port: 80}]
  - ports: [{protocol: UDP, port: 53}]
  ingress:
  - ports: [{protocol: TCP, port: 80}, {protocol: TCP, port: 81}]
"""


def enforcement(lab: RelLab) -> dict[str, bool]:
    fe = lab.ip(FRONTEND)
    return {
        "frontend->backend2:80": lab.reaches(FRONTEND, BACKEND2, t=2),
        "frontend->backendsvc": lab.curl(FRONTEND, "http://backendsvc/", 3)[0] == 0,
        "coredns1->frontend:80": lab.reaches(COREDNS1, FRONTEND, t=2),
        "backend1->frontend:80": lab.tcp_answers(BACKEND1, fe, 80),
        "coredns1->frontend:81": lab.tcp_answers(COREDNS1, fe, 81),
        "frontend->coredns1:80": lab.tcp_answers(FRONTEND, lab.ip(COREDNS1), 80),
    }


EXPECTED = {"frontend->backend2:80": True, "frontend->backendsvc": True, "coredns1->frontend:80": True,
            "backend1->frontend:80": False, "coredns1->frontend:81": False, "frontend->coredns1:80": False}


def test_controller_down_agents_enforce_and_resync_without_churn(lab: RelLab) -> None:
    nodes = sorted(lab.nodes)
    assert enforcement(lab) == EXPECTED
    stats0 = {n: lab.stats(n) for n in nodes}
    flows0 = {n: lab.flow_texts(n) for n in nodes}
    epoch0, _ = lab.controller_version()
    os.kill(lab.controller_pid(), signal.SIGKILL)
    try:
        assert until(lambda: not lab.refresh().status["controller"]["alive"], 5) is not None
        time.sleep(3)  # the agents' watches fail and back off
        assert enforcement(lab) == EXPECTED
        p = lab.apply_text(FRONTEND_V2, check=False, settle=False)
        assert p.returncode == 1 and "the controller is not running" in p.stderr, p.stderr
        assert enforcement(lab) == EXPECTED
        for n in nodes:
            st = lab.stats(n)
            assert (st["flowMods"], st["bundles"]) == (stats0[n]["flowMods"], stats0[n]["bundles"]), n
            assert "unreachable" in (lab.root / "nodes" / n / "agent.log").read_text()
    finally:
        lab.lab("restart", "controller")
    epoch1, _ = lab.controller_version()
    assert epoch1 != epoch0
    t0 = time.monotonic()
    lab.refresh().settle(timeout=15)  # every agent has the new epoch's snapshot
    print(f"\nagents resynced {time.monotonic() - t0:.1f} s after the controller was back")
    for n in nodes:
        st = lab.stats(n)
        assert (st["flowMods"], st["bundles"]) == (stats0[n]["flowMods"], stats0[n]["bundles"]), (n, st)
        assert lab.flow_texts(n) == flows0[n]
    assert enforcement(lab) == EXPECTED

    # the change refused while the controller was down, applied now that it is back
    try:
        lab.apply_text(FRONTEND_V2)
        assert lab.tcp_answers(COREDNS1, lab.ip(FRONTEND), 81)
        assert lab.stats("worker1")["flowMods"] > stats0["worker1"]["flowMods"]
        assert lab.stats("worker2")["flowMods"] == stats0["worker2"]["flowMods"]  # frontend is not there
    finally:
        lab.lab("apply", "-f", str(SEED / "policies.yaml"))
        lab.settle()
    assert enforcement(lab) == EXPECTED
