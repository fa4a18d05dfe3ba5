"""build/yamls/pyantrea.yml against a real kube-apiserver (issue 9, item 6).

`kubectl apply --dry-run=server` sends every object through the API server's decoding, defaulting,
validation and admission without storing it: each of the manifest's objects must be accepted. Then
the RBAC part (ServiceAccounts, ClusterRoles, bindings) is applied for real and the API server's
own authorizer is asked (SubjectAccessReviews for system:serviceaccount:kube-system:...) what the
ServiceAccounts may do: read what their informers read, nothing else, write nothing. Those objects
are deleted again (the API server fixture is shared by the session).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "build" / "yamls" / "pyantrea.yml"


def test_every_object_accepted_by_server_dry_run(apiserver: Any) -> None:
    want = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    p = apiserver.kubectl("apply", "--dry-run=server", "-f", str(MANIFEST), "-o", "json", check=False)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    items: list[dict[str, Any]] = out["items"] if out.get("kind") == "List" else [out]
    got = [(i["kind"], i["metadata"]["name"]) for i in items]
    assert sorted(got) == sorted(want)
    # the server defaulted them (it decoded and admitted them, not just echoed them back)
    ds = next(i for i in items if i["kind"] == "DaemonSet")
    assert ds["spec"]["template"]["spec"]["dnsPolicy"] == "ClusterFirst"
    assert ds["metadata"].get("uid"), "a server dry run assigns a uid"
    # nothing was stored
    q = apiserver.kubectl("get", "daemonset", "antrea-agent", "-n", "kube-system", "--ignore-not-found", "-o", "name")
    assert q.stdout.strip() == ""


def _rbac_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text())
            if d and d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")]


def can_i(apiserver: Any, sa: str, verb: str, resource: str) -> bool:
    """The API server's authorizer on a SubjectAccessReview for the ServiceAccount (its user and
    groups as its token would carry them); ``resource`` is RESOURCE[.GROUP] or RESOURCE/SUBRESOURCE."""
    name, _, group = resource.partition(".")
    name, _, sub = name.partition("/")
    sar = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
           "spec": {"user": f"system:serviceaccount:kube-system:{sa}",
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
                    "resourceAttributes": {"verb": verb, "group": group, "resource": name, "subresource": sub,
                                           "namespace": "default"}}}
    p = apiserver.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(sar))
    return bool(json.loads(p.stdout)["status"].get("allowed"))


def test_service_accounts_may_read_what_they_watch_and_nothing_else(apiserver: Any) -> None:
    text = yaml.safe_dump_all(_rbac_docs())
    apiserver.kubectl("apply", "-f", "-", input=text)
    try:
        agent_reads = ["nodes", "pods", "services", "endpoints", "nodeinterfaces.pyantrea.io"]
        ctl_reads = ["namespaces", "nodes", "pods", "services", "endpoints", "networkpolicies.networking.k8s.io",
                     "nodeinterfaces.pyantrea.io"]
        for sa, reads in (("antrea-agent", agent_reads), ("antrea-controller", ctl_reads)):
            for r in reads:
                for verb in ("get", "list", "watch"):
                    assert can_i(apiserver, sa, verb, r), f"{sa} cannot {verb} {r}"
                for verb in ("create", "update", "patch", "delete"):
                    assert not can_i(apiserver, sa, verb, r), f"{sa} may {verb} {r}"
            for r in ("secrets", "configmaps", "serviceaccounts/token"):
                assert not can_i(apiserver, sa, "get", r), f"{sa} may get {r}"
        assert not can_i(apiserver, "antrea-agent", "list", "namespaces")
        assert not can_i(apiserver, "antrea-agent", "list", "networkpolicies.networking.k8s.io")
    finally:
        apiserver.kubectl("delete", "--ignore-not-found", "-f", "-", input=text, check=False)
