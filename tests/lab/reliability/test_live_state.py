"""Live state is allocated once and changed by events (issue "One live control plane with real state").

1. Ten unrelated Pods and Services are applied, then deleted, one at a time, into the running seed
   cluster; after every step every other Pod keeps its IP, MAC, ofport, network namespace (inode) and
   workload process, and every other Service its clusterIP.
2. After 20 live policy changes (adds, edits, deletes), live `antctl traceflow -o json` names, for
   every ordered pair of the seed's Pods, the policy that the agent's own rule cache gives for the
   conj_id of the flow the packet matched, and `antctl reachability` gives the trace's verdict.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

from .reltools import ROOT, RelLab

OTHER_PODS = ["default/frontend", "default/backend1", "default/backend2", "kube-system/coredns-66bff467f8-bclzd",
              "kube-system/coredns-66bff467f8-f4nc4", "kube-system/antrea-octant-f59b76dd9-dcvvl"]


def _pod(name: str) -> str:
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: livestate}}}}
spec:
  containers: [{{name: web, image: nginx, ports: [{{containerPort: 80, name: http}}]}}]
"""


def _svc(name: str) -> str:
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: livestate}}
  ports: [{{port: 8080, protocol: TCP, targetPort: 80}}]
"""


def _objects(lab: RelLab, kind: str) -> list[dict[str, Any]]:
    from pyantrea.httpapi import APIClient

    return list(APIClient(lab.controller_sock(), timeout=10).get(f"/v1/objects?kind={kind}")["items"])


def snapshot(lab: RelLab) -> dict[str, Any]:
    lab.refresh()
    out: dict[str, Any] = {}
    ports = {}
    for node in sorted(lab.nodes):
        for i in lab.agent(node, "/v1/podinterfaces"):
            ports[f"{i['podNamespace']}/{i['podName']}"] = (i["interfaceName"], i["ofPort"], i["mac"], i["ip"])
    for key, p in lab.pods.items():
        out[f"pod {key}"] = {"ip": p["ip"], "netns": p["netns"],
                             "inode": os.stat(f"/var/run/netns/{p['netns']}").st_ino,
                             "workload": p["workload_pid"], "port": ports.get(key),
                             "mac": lab.mac(key)}
    for s in _objects(lab, "Service"):
        out[f"service {s['metadata']['namespace']}/{s['metadata']['name']}"] = s["spec"]["clusterIP"]
    return out


def test_unrelated_changes_leave_every_other_object_alone(lab: RelLab) -> None:
    names = [f"ls-{k}{i}" for i in range(5) for k in ("pod", "svc")]
    text = {n: (_pod(n) if n.startswith("ls-pod") else _svc(n)) for n in names}
    before = snapshot(lab)
    assert all(f"pod {k}" in before for k in OTHER_PODS)
    try:
        applied: list[str] = []
        for n in names:
            lab.apply_text(text[n])
            applied.append(n)
            now = snapshot(lab)
            mine = {k for k in now if any(k.endswith(f"/{a}") for a in applied)}
            assert {k: v for k, v in now.items() if k not in mine} == before, f"after applying {n}"
            kind = "pod" if n.startswith("ls-pod") else "service"
            assert f"{kind} default/{n}" in now, f"{n} was not created"
            if kind == "service":
                assert now[f"service default/{n}"] not in {v for k, v in before.items() if k.startswith("service")}
        grown = snapshot(lab)
        for n in names:
            lab.apply_text(text[n], delete=True)
            applied.remove(n)
            now = snapshot(lab)
            assert f"pod default/{n}" not in now and f"service default/{n}" not in now
            assert {k: v for k, v in now.items() if not any(k.endswith(f"/{a}") for a in applied)} == \
                {k: v for k, v in grown.items() if not k.endswith(tuple(f"/{x}" for x in names))}, f"after deleting {n}"
    finally:
        for n in names:
            lab.apply_text(text[n], delete=True, check=False)
    assert snapshot(lab) == before


def _np(name: str, role: str, port: int, ingress_from: str | None = None) -> str:
    ports = f"ports: [{{protocol: TCP, port: {port}}}]"
    peer = f"\n  - from: [{{podSelector: {{matchLabels: {{role: {ingress_from}}}}}}}]\n    {ports}" \
        if ingress_from else f"\n  - {ports}"
    return f"""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  podSelector: {{matchLabels: {{role: {role}}}}}
  policyTypes: [Ingress]
  ingress:{peer}
"""


def antctl(lab: RelLab, *args: str) -> Any:
    p = subprocess.run([sys.executable, "-m", "pyantrea.antctl.main", *args], capture_output=True, text=True,
                       env={**os.environ, **lab.env}, cwd=ROOT, timeout=120)
    assert p.returncode in (0, 1), p.stderr
    return json.loads(p.stdout)


def test_traces_name_the_agents_own_rules_after_20_changes(lab: RelLab) -> None:
    changes = []
    for i in range(8):  # 8 adds
        changes.append((_np(f"lv-{i}", "backend" if i % 2 else "frontend", 80 + i, "frontend" if i % 3 else None), False))
    for i in range(0, 8, 2):  # 4 edits (other port, other peer)
        changes.append((_np(f"lv-{i}", "backend", 90 + i, "backend"), False))
    for i in (1, 3, 5, 7, 2, 4):  # 6 deletes
        changes.append((_np(f"lv-{i}", "backend", 80), True))
    changes.append((_np("lv-8", "frontend", 8080, "backend"), False))
    changes.append((_np("lv-0", "frontend", 81), False))  # one more edit: 20 in all
    assert len(changes) == 20
    try:
        for text, delete in changes:
            lab.apply_text(text, delete=delete)
        pods = ["default/frontend", "default/backend1", "default/backend2", "kube-system/coredns-66bff467f8-bclzd"]
        rules = {n: {r["conjID"]: r for r in lab.agent(n, "/v1/ofrules")} for n in lab.nodes}
        reach = {(r["from"], r["to"]): r["verdict"] for r in antctl(lab, "reachability", "-o", "json")}
        checked = 0
        for src in pods:
            for dst in pods:
                if src == dst:
                    continue
                tf = antctl(lab, "traceflow", "-S", src, "-D", dst, "-f", "tcp,tcp_dst=80", "-o", "json")
                for res in tf["results"]:
                    # the flows the packet matched in EgressRule (50) and IngressRule (90): their conj_ids
                    cids = [int(re.search(r"conj_id=(\d+)", h["flow"]).group(1)) for h in res["hops"]
                            if h["table"] in (50, 90) and h["priority"] == 190 and "conj_id=" in h["flow"]]
                    named = [o["networkPolicy"] for o in res["observations"]
                             if o.get("component") == "NetworkPolicy" and o.get("action") == "Forwarded"]
                    assert named == [rules[res["node"]][c]["policy"] for c in cids], (src, dst, res["node"])
                    checked += len(cids)
                verdict = "deny" if any(o.get("action") == "Dropped" for r in tf["results"] for o in r["observations"]) \
                    else "allow"
                assert reach[(src, dst)] == verdict, (src, dst)
        assert checked > 0
    finally:
        for i in range(9):
            lab.apply_text(_np(f"lv-{i}", "backend", 80), delete=True, check=False)
