"""build/yamls/pyantrea.yml, the manifest for a real cluster (issue 9, item 6), against the code.

The ClusterRoles must grant exactly what the components' informers ask kube-apiserver for: the
kinds are taken from the agent's and the controller's own informers (recorded while they are built),
and the (API group, resource, verb) of each kind from the requests `KubeSource` makes for it (a
recording API client: list and watch), so a new informer without its RBAC fails here. Read only:
``get`` besides list and watch, as Antrea's roles grant, nothing that writes.

Also: the CRD is the one the lab installs (`pyantrea.lab.kubernetes.CRD`), the lab's own RBAC for
its components grants the same, the ConfigMap's files load as the components read them, and the
containers' arguments are options the commands take.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "build" / "yamls" / "pyantrea.yml"
READ = {"get", "list", "watch"}


def docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} in the manifest"
    return found[0]


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


class _Recorded(Exception):
    pass


def requests_for(kinds: list[tuple[str, str | None]]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every request KubeSource makes to list and to watch ``kinds``
    (kind, node): a kubernetes ApiClient whose call_api records the URL and refuses."""
    from kubernetes import client

    from pyantrea.k8s.kubesource import KubeSource

    seen: set[tuple[str, str, str]] = set()

    class Recorder(client.ApiClient):  # type: ignore[misc]
        def call_api(self, method: str, url: str, *a: Any, **k: Any) -> Any:
            u = urllib.parse.urlsplit(url)
            q = dict(urllib.parse.parse_qsl(u.query))
            parts = u.path.strip("/").split("/")
            if parts[0] == "api":  # /api/v1/RESOURCE
                group, rest = "", parts[2:]
            else:  # /apis/GROUP/VERSION/RESOURCE
                group, rest = parts[1], parts[3:]
            if rest and rest[0] == "namespaces" and len(rest) > 2:
                rest = rest[2:]
            assert method == "GET", (method, url)
            seen.add((group, rest[0], "watch" if q.get("watch") in ("true", "True") else "list"))
            raise OSError("recorded")

    cfg = client.Configuration()
    cfg.host = "https://127.0.0.1:1"
    src = KubeSource(api=Recorder(cfg))
    from pyantrea.errors import PyantreaError

    for kind, node in kinds:
        with pytest.raises(PyantreaError):
            src.list_objects(kind, node)
        with pytest.raises(PyantreaError):
            list(src.watch(kind, 1, 1.0, node, ""))
    return seen


def agent_informer_kinds(conf: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    import pyantrea.agent.daemon as daemon

    kinds: list[tuple[str, str | None]] = []

    class Rec:
        def __init__(self, source: Any, kind: str, node: str | None = None, **kw: Any):
            kinds.append((kind, node))

    monkeypatch.setattr(daemon, "Informer", Rec)
    with tempfile.TemporaryDirectory() as t:
        cf = Path(t) / "antrea-agent.conf"
        cf.write_text(conf)
        daemon.Agent("worker1", f"{t}/controller.sock", t, t, config=str(cf))
    return kinds


def controller_informer_kinds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    import pyantrea.controller.inputs as inputs

    kinds: list[tuple[str, str | None]] = []

    class Rec:
        def __init__(self, source: Any, kind: str, node: str | None = None, **kw: Any):
            kinds.append((kind, node))

    monkeypatch.setattr(inputs, "Informer", Rec)
    inputs.InformerInputs(object(), serve=True)  # serve=True: as `pyantrea controller --kubeconfig` runs
    return kinds


def test_agent_role_is_what_its_informers_read(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = agent_informer_kinds("featureGates:\n  AntreaProxy: false\n", monkeypatch)
    proxy = agent_informer_kinds("featureGates:\n  AntreaProxy: true\n", monkeypatch)
    assert {k for k, _ in plain} == {"Node", "Pod", "NodeInterfaces"}
    assert {k for k, _ in proxy} - {k for k, _ in plain} == {"Service", "Endpoints"}
    wanted = requests_for(proxy)  # the role serves both: AntreaProxy is a setting of the ConfigMap
    assert {(g, r) for g, r, _ in wanted} == {("", "nodes"), ("", "pods"), ("pyantrea.io", "nodeinterfaces"),
                                              ("", "services"), ("", "endpoints")}
    granted = grants(one("ClusterRole", "antrea-agent")["rules"])
    assert granted == {(g, r, v) for g, r, _ in wanted for v in READ}
    assert {v for _, _, v in wanted} == {"list", "watch"}


def test_controller_role_is_what_its_informers_read(monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = controller_informer_kinds(monkeypatch)
    wanted = requests_for(kinds)
    assert {(g, r) for g, r, _ in wanted} == {
        ("", "namespaces"), ("", "nodes"), ("", "pods"), ("networking.k8s.io", "networkpolicies"),
        ("", "services"), ("", "endpoints"), ("pyantrea.io", "nodeinterfaces")}
    granted = grants(one("ClusterRole", "antrea-controller")["rules"])
    assert granted == {(g, r, v) for g, r, _ in wanted for v in READ}


def test_bindings_name_the_service_accounts() -> None:
    for comp in ("antrea-agent", "antrea-controller"):
        sa = one("ServiceAccount", comp)
        assert sa["metadata"]["namespace"] == "kube-system"
        b = one("ClusterRoleBinding", comp)
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": comp}
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": comp, "namespace": "kube-system"}]
    ds = one("DaemonSet", "antrea-agent")["spec"]["template"]["spec"]
    dep = one("Deployment", "antrea-controller")["spec"]["template"]["spec"]
    assert ds["serviceAccountName"] == "antrea-agent" and dep["serviceAccountName"] == "antrea-controller"


def test_lab_rbac_and_crd_match_the_manifest() -> None:
    from pyantrea.lab.kubernetes import CRD, RBAC

    lab = {d["metadata"]["name"]: d for d in RBAC if d["kind"] == "ClusterRole"}
    for comp, lab_name in (("antrea-agent", "pyantrea-agent"), ("antrea-controller", "pyantrea-controller")):
        assert grants(one("ClusterRole", comp)["rules"]) == grants(lab[lab_name]["rules"]), comp
    crd = one("CustomResourceDefinition", "nodeinterfaces.pyantrea.io")
    assert json.loads(json.dumps(crd["spec"])) == json.loads(json.dumps(CRD["spec"]))
    # the only CRDs: what the Kubernetes mode's informers read (crd.antrea.io kinds are not watched)
    assert [d["metadata"]["name"] for d in docs() if d["kind"] == "CustomResourceDefinition"] == \
        ["nodeinterfaces.pyantrea.io"]


def test_configmap_files_load_as_the_components_read_them() -> None:
    from pyantrea.agent.daemon import load_config

    data = one("ConfigMap", "antrea-config")["data"]
    assert set(data) == {"antrea-agent.conf", "antrea-controller.conf", "antrea-cni.conflist"}
    with tempfile.TemporaryDirectory() as t:
        for name in ("antrea-agent.conf", "antrea-controller.conf"):
            f = Path(t) / name
            f.write_text(data[name])
            cfg = load_config(str(f))
            assert cfg.service_cidr == "10.96.0.0/12"
    cni = json.loads(data["antrea-cni.conflist"])
    assert cni["name"] == "antrea" and cni["plugins"][0]["type"] == "antrea"
    agent = next(c for c in one("DaemonSet", "antrea-agent")["spec"]["template"]["spec"]["containers"]
                 if c["name"] == "antrea-agent")
    rundir = agent["args"][agent["args"].index("--rundir") + 1]
    assert cni["plugins"][0]["agentSocket"] == f"{rundir}/agent.sock"  # where the agent serves the CNI


def _options(cmd: str) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "pyantrea", cmd, "--help"], capture_output=True, text=True,
                         timeout=60, check=True, cwd=ROOT).stdout
    return {w.strip(",[]") for w in out.split() if w.startswith("--")}


def test_container_arguments_are_the_commands_options() -> None:
    ds = one("DaemonSet", "antrea-agent")["spec"]["template"]["spec"]
    dep = one("Deployment", "antrea-controller")["spec"]["template"]["spec"]
    agent = next(c for c in ds["containers"] if c["name"] == "antrea-agent")
    ctl = dep["containers"][0]
    assert [c["name"] for c in ds["initContainers"]] == ["install-cni"]
    assert [c["name"] for c in ds["containers"]] == ["antrea-agent", "antrea-ovs"]
    for c, cmd in ((agent, "agent"), (ctl, "controller")):
        assert c["command"] == ["pyantrea"] and c["args"][0] == cmd
        flags = {a for a in c["args"] if a.startswith("--")}
        assert flags <= _options(cmd), flags - _options(cmd)
        assert c["args"][c["args"].index("--kubeconfig") + 1] == "in-cluster"
    # the agent reaches the controller's socket through the host path the controller writes it to
    sock = agent["args"][agent["args"].index("--controller") + 1]
    ctl_rundir = ctl["args"][ctl["args"].index("--rundir") + 1]
    assert sock == f"{ctl_rundir}/controller.sock"
    svc = one("Service", "antrea")
    assert svc["spec"]["ports"][0]["targetPort"] == "api"
    assert "api" in {p["name"] for p in ctl["ports"]}
