"""The Kubernetes lab's pure parts: manifests as the API server takes them, creation stages, the
control-plane node, CNI configuration lists and their plugin chain, the kubelet's Pod status."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from pyantrea.apis.k8s import REQUESTED_IP
from pyantrea.lab.kubelab import control_plane_node
from pyantrea.lab.kubelet_k8s import load_conflist, run_chain
from pyantrea.lab.kubernetes import LAB_IMAGE, STAGES, for_api, staged

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"


def seed_docs() -> list[Any]:
    docs: list[Any] = []
    for f in sorted(SEED.glob("*.yaml")):
        docs += list(yaml.safe_load_all(f.read_text()))
    return docs


def test_pod_status_becomes_the_requested_ip_and_is_dropped() -> None:
    docs, notes = for_api(seed_docs())
    pods = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Pod"}
    assert pods["frontend"]["metadata"]["annotations"] == {REQUESTED_IP: "10.222.1.48"}
    assert all("status" not in p for p in pods.values())
    # a hostNetwork Pod's IP is its node's: no request
    assert "annotations" not in pods["etcd-master"]["metadata"]
    # a container without an image gets the lab's (the API server requires one)
    assert pods["etcd-master"]["spec"]["containers"][0]["image"] == LAB_IMAGE
    assert pods["frontend"]["spec"]["containers"][0]["image"] == "dumlutimuralp/networktest"


def test_api_servers_own_objects_and_derived_endpoints_are_left_out() -> None:
    docs, notes = for_api(seed_docs())
    keys = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Service", "kubernetes") not in keys and ("Endpoints", "kubernetes") not in keys
    assert ("Service", "backendsvc") in keys and ("Service", "kube-dns") in keys
    assert not [d for d in docs if d["kind"] == "Endpoints"]  # selector Services: the endpoints controller's
    assert "Service default/kubernetes: kube-apiserver's own, not created" in notes
    # List items are created one by one; the input is not changed
    assert not [d for d in docs if d["kind"] == "List"]
    original = seed_docs()
    for_api(original)
    assert original == seed_docs()


def test_selectorless_endpoints_are_kept() -> None:
    docs, _ = for_api([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"}, "spec": {"ports": [{"port": 80}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ext"},
         "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}])
    assert [d["kind"] for d in docs] == ["Service", "Endpoints"]


def test_stages_put_what_others_refer_to_first() -> None:
    docs, _ = for_api(seed_docs())
    order = [s[0]["kind"] for s in staged(docs)]
    assert order == ["Namespace", "Node", "NodeInterfaces", "Service", "Pod", "NetworkPolicy"]
    assert [k for s in STAGES for k in s].index("Node") < [k for s in STAGES for k in s].index("Pod")
    assert staged([{"kind": "Deployment"}, {"kind": "Pod"}])[-1] == [{"kind": "Deployment"}]


def node(name: str, **labels: str) -> Any:
    return SimpleNamespace(name=name, labels=tuple(labels.items()))


def test_control_plane_node() -> None:
    assert control_plane_node([node("a"), node("master"), node("b")]) == "master"
    assert control_plane_node([node("a"), node("cp", **{"node-role.kubernetes.io/control-plane": ""})]) == "cp"
    assert control_plane_node([node("z"), node("b")]) == "b"


def _plugin(d: Path, name: str, body: str) -> None:
    p = d / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)


def test_conflist_and_the_plugin_chain(tmp_path: Path) -> None:
    conf_dir, bin_dir = tmp_path / "net.d", tmp_path / "bin"
    conf_dir.mkdir()
    bin_dir.mkdir()
    assert load_conflist(conf_dir) is None  # the network is not ready
    (conf_dir / "10-antrea.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "antrea",
        "plugins": [{"type": "first", "x": 1}, {"type": "second"}]}))
    (conf_dir / "99-other.conf").write_text(json.dumps({"cniVersion": "1.0.0", "name": "other", "type": "x"}))
    conf = load_conflist(conf_dir)
    assert conf is not None and conf.name == "antrea" and [p["type"] for p in conf.plugins] == ["first", "second"]
    log = tmp_path / "calls"
    # each plugin records its stdin and answers a result naming itself
    for name in ("first", "second"):
        _plugin(bin_dir, name, f'cat > "{tmp_path}/{name}.$CNI_COMMAND.in"; echo "$CNI_COMMAND {name}" >> "{log}"; '
                               f'echo \'{{"cniVersion":"1.0.0","ips":[{{"address":"10.0.0.5/24"}}],"by":"{name}"}}\'\n')
    out = run_chain("ADD", conf, {"CNI_CONTAINERID": "c"}, str(bin_dir))
    assert out.ok and out.result is not None and out.result["by"] == "second"
    first_in = json.loads((tmp_path / "first.ADD.in").read_text())
    second_in = json.loads((tmp_path / "second.ADD.in").read_text())
    assert first_in == {"cniVersion": "1.0.0", "name": "antrea", "type": "first", "x": 1}
    assert second_in["prevResult"]["by"] == "first"
    out = run_chain("DEL", conf, {"CNI_CONTAINERID": "c"}, str(bin_dir), prev={"by": "add"})
    assert out.ok
    assert log.read_text().split("\n")[:4] == ["ADD first", "ADD second", "DEL second", "DEL first"]
    assert json.loads((tmp_path / "first.DEL.in").read_text())["prevResult"] == {"by": "add"}


def test_a_failing_plugin_is_named_with_its_error(tmp_path: Path) -> None:
    conf_dir, bin_dir = tmp_path / "net.d", tmp_path / "bin"
    conf_dir.mkdir()
    bin_dir.mkdir()
    (conf_dir / "10-a.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "antrea",
                                                        "plugins": [{"type": "antrea"}, {"type": "missing"}]}))
    _plugin(bin_dir, "antrea", 'echo \'{"cniVersion":"1.0.0","code":11,"msg":"agent not ready"}\'; exit 1\n')
    conf = load_conflist(conf_dir)
    assert conf is not None
    out = run_chain("ADD", conf, {}, str(bin_dir))
    assert not out.ok and out.error == 'plugin type="antrea" name="antrea" failed (add): code 11: agent not ready'
    os.remove(bin_dir / "antrea")
    out = run_chain("ADD", conf, {}, str(bin_dir))
    assert not out.ok and "failed to find plugin 'antrea'" in out.error
