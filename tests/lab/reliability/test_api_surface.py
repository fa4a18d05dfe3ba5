"""The control plane's own surface (issue 5 §6).

The controller's and the agents' APIs listen only on unix sockets of mode 0600 owned by root: no TCP
port, nothing to authenticate, nothing reachable from a Pod (a Pod's namespace has no path to the
sockets' files, and the daemons hold no INET socket). Malformed, oversized or unknown requests get a
clear 4xx; the daemon keeps serving (same pid) and no state is half-applied.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .reltools import FRONTEND, PREFIX, RelLab, http_request, raw_http

CONF = json.dumps({"cniVersion": "1.0.0", "name": "antrea", "type": "antrea", "ipam": {"type": "host-local"}})


def cni_body(env: dict[str, str] | Any, conf: Any = CONF) -> bytes:
    return json.dumps({"env": env, "conf": conf}).encode()


def env(**kw: str) -> dict[str, str]:
    e = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "f" * 64, "CNI_NETNS": f"/var/run/netns/{PREFIX}nosuch",
         "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;"
         "K8S_POD_NAME=ghost"}
    e.update(kw)
    return {k: v for k, v in e.items() if v != "-"}


# (name, raw request, expected status, words in the answer). @POD_NETNS@ = an existing Pod namespace.
AGENT_CASES: list[tuple[str, bytes, int, str]] = [
    ("malformed JSON", http_request("POST", "/cni/add", b"{not json"), 400, "malformed JSON"),
    ("JSON not an object", http_request("POST", "/cni/add", b"[1, 2]"), 400, "JSON object"),
    ("env not a mapping", http_request("POST", "/cni/add", cni_body(5)), 400, '"code": 4'),
    ("config not JSON", http_request("POST", "/cni/add", cni_body(env(), "{bad")), 400, '"code": 6'),
    ("config not an object", http_request("POST", "/cni/add", cni_body(env(), "[]")), 400, '"code": 6'),
    ("unsupported cniVersion", http_request("POST", "/cni/add", cni_body(
        env(), json.dumps({"cniVersion": "9.9.9"}))), 400, '"code": 1'),
    ("unsupported IPAM", http_request("POST", "/cni/add", cni_body(
        env(), json.dumps({"cniVersion": "1.0.0", "ipam": {"type": "dhcp"}}))), 400, '"code": 7'),
    ("missing CNI_CONTAINERID", http_request("POST", "/cni/del", cni_body(env(CNI_CONTAINERID="-"))), 400,
     '"code": 4'),
    ("missing CNI_NETNS", http_request("POST", "/cni/add", cni_body(env(CNI_NETNS="-"))), 400, '"code": 4'),
    ("bad CNI_ARGS", http_request("POST", "/cni/add", cni_body(env(CNI_ARGS="K8S_POD_NAME"))), 400, '"code": 4'),
    ("netns that does not exist", http_request("POST", "/cni/add", cni_body(env())), 400, '"code": 3'),
    ("IP outside the node's CIDR", http_request("POST", "/cni/add", cni_body(env(
        CNI_NETNS="@POD_NETNS@", CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=ghost;IP=10.99.0.5"))), 400, '"code": 7'),
    ("CHECK of an unknown container", http_request("POST", "/cni/check", cni_body(env(
        CNI_COMMAND="CHECK", CNI_NETNS="@POD_NETNS@"))), 400, '"code": 3'),
    ("CNI_COMMAND not the endpoint's", http_request("POST", "/cni/add", cni_body(env(CNI_COMMAND="DEL"))), 400,
     '"code": 4'),
    ("unknown CNI endpoint", http_request("POST", "/cni/frob", cni_body(env())), 404, "unknown path"),
    ("wrong method", http_request("GET", "/cni/add"), 405, "not allowed"),
    ("unknown path", http_request("GET", "/v1/nosuch"), 404, "unknown path"),
    ("body over 4 MiB", http_request("POST", "/cni/add", b"x" * 65536, length=5 * 1024 * 1024), 413, "limit"),
    ("Content-Length not a number", b"POST /cni/add HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400,
     "Content-Length"),
    ("negative Content-Length", b"POST /cni/add HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400,
     "Content-Length"),
    ("not HTTP", b"garbage\r\n\r\n", 400, "Bad request syntax"),
    ("ovsflows table not a number", http_request("GET", "/v1/ovsflows?table=abc"), 400, "table"),
    ("ovsflows unknown format", http_request("GET", "/v1/ovsflows?format=xml"), 400, "format"),
    ("trace-packet body not an object", http_request("POST", "/v1/trace-packet", b"[]"), 400, "JSON object"),
    ("trace-packet malformed JSON", http_request("POST", "/v1/trace-packet", b"{"), 400, "malformed JSON"),
    ("trace-packet unknown Pod", http_request("POST", "/v1/trace-packet", b'{"port": "nosuch"}'), 404, "not found"),
]

GOOD_NP = b"""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: reltest-half, namespace: default}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"""
BAD_POD = b"""apiVersion: v1
kind: Pod
metadata: {name: reltest-bad, namespace: default}
spec: {nodeName: worker1, containers: [{name: c, image: x}]}
status: {podIP: 999.1.1.1}
"""
CONTROLLER_CASES: list[tuple[str, bytes, int, str]] = [
    ("YAML syntax error", http_request("POST", "/v1/apply", b"kind: [", "application/yaml"), 400, "YAML syntax"),
    ("body not UTF-8", http_request("POST", "/v1/apply", b"\xff\xfe", "application/yaml"), 400, "UTF-8"),
    ("document not a mapping", http_request("POST", "/v1/apply", b"- 1\n- 2\n", "application/yaml"), 400,
     "not a mapping"),
    ("document without a name", http_request("POST", "/v1/apply", b"apiVersion: v1\nkind: Pod\nmetadata: {}\n",
                                             "application/yaml"), 400, "name"),
    ("valid policy + invalid Pod (nothing applied)", http_request("POST", "/v1/apply", GOOD_NP + b"---\n" + BAD_POD,
                                                                  "application/yaml"), 400, "999.1.1.1"),
    ("delete of an object that does not exist", http_request("POST", "/v1/delete", b"kind: Pod\nmetadata: "
                                                             b"{name: nosuch}\n", "application/yaml"), 404, "not found"),
    ("delete of an existing + a missing object (nothing deleted)", http_request(
        "POST", "/v1/delete", b"kind: NetworkPolicy\nmetadata: {name: frontendpolicy, namespace: default}\n---\n"
        b"kind: Pod\nmetadata: {name: nosuch}\n", "application/yaml"), 404, "nosuch"),
    ("watch without node", http_request("GET", "/v1/controlplane/watch"), 400, "node"),
    ("watch of an unknown node", http_request("GET", "/v1/controlplane/watch?node=nosuch&timeout=0"), 404, "nosuch"),
    ("watch with a non-numeric version", http_request("GET", "/v1/controlplane/watch?node=worker1&resourceVersion=x"),
     400, "a number"),
    ("watch of a version not in the history", http_request(
        "GET", "/v1/controlplane/watch?node=worker1&resourceVersion=99999999&timeout=0"), 410, "list again"),
    ("object watch of another epoch", http_request(
        "GET", "/v1/objects/watch?kind=Pod&resourceVersion=1&epoch=other&timeout=0"), 410, "list again"),
    ("status of an unknown Pod", http_request("POST", "/v1/status", b'{"kind": "Pod", "namespace": "default", '
                                              b'"name": "nosuch", "status": {}}'), 404, "not found"),
    ("body over 4 MiB", http_request("POST", "/v1/apply", b"x" * 65536, "application/yaml", 5 * 1024 * 1024), 413,
     "limit"),
    ("wrong method", http_request("DELETE", "/v1/apply"), 405, "not allowed"),
    ("unknown path", http_request("GET", "/v1/nosuch"), 404, "unknown path"),
    ("not HTTP", b"garbage\r\n\r\n", 400, "Bad request syntax"),
]


def _mode(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid


def _inet_listeners(pid: int) -> list[str]:
    """The TCP/UDP sockets (any state) held by pid, from its own network namespace's tables."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[9] in inodes:
                found.append(f"{table} {cols[1]}")
    return found


def test_sockets_are_owner_only_and_there_is_no_tcp(lab: RelLab) -> None:
    socks = [lab.controller_sock()] + [lab.agent_sock(n) for n in sorted(lab.nodes)]
    for s in socks:
        assert stat.S_ISSOCK(os.stat(s).st_mode)
        assert _mode(s) == (0o600, 0), s
    pids = [lab.controller_pid()] + [lab.agent_pid(n) for n in sorted(lab.nodes)]
    for pid in pids:
        assert _inet_listeners(pid) == [], pid


@pytest.fixture(scope="module")
def before(lab: RelLab) -> dict[str, Any]:
    from pyantrea.httpapi import APIClient

    ctl = APIClient(lab.controller_sock())
    return {
        "controller_pid": lab.controller_pid(), "agent_pid": lab.agent_pid("worker1"),
        "manifests": ctl.get("/v1/manifests"), "version": lab.controller_version(),
        "policies": [p["name"] for p in ctl.get("/v1/networkpolicies")],
        "worker1": lab.node_objects("worker1"),
    }


@pytest.mark.parametrize("name,req,status,words", AGENT_CASES, ids=[c[0] for c in AGENT_CASES])
def test_agent_bad_request(lab: RelLab, before: dict[str, Any], name: str, req: bytes, status: int,
                           words: str) -> None:
    if b"@POD_NETNS@" in req:  # an existing namespace (frontend's); the body grows: fix its length
        head, _, body = req.partition(b"\r\n\r\n")
        body = body.replace(b"@POD_NETNS@", f"/var/run/netns/{lab.ns(FRONTEND)}".encode())
        req = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(body), head) + b"\r\n\r\n" + body
    got, body = raw_http(lab.agent_sock("worker1"), req)
    assert (got, words in body) == (status, True), body[:300]


@pytest.mark.parametrize("name,req,status,words", CONTROLLER_CASES, ids=[c[0] for c in CONTROLLER_CASES])
def test_controller_bad_request(lab: RelLab, before: dict[str, Any], name: str, req: bytes, status: int,
                                words: str) -> None:
    got, body = raw_http(lab.controller_sock(), req)
    assert (got, words in body) == (status, True), body[:300]


def test_a_failing_cni_add_leaves_nothing(lab: RelLab, before: dict[str, Any]) -> None:
    """An ADD that fails after its IPAM step (the Pod's namespace already has an eth0, so the veth
    cannot be created) rolls back: no lease, no veth, no port, no flow. Through the CNI
    executable, as kubelet runs it: a CNI error on stdout, exit 1."""
    from pyantrea.lab import kubelet

    probe_ns = f"{lab.prefix}reltest-api"
    subprocess.run(["ip", "netns", "add", probe_ns], check=True)
    try:
        # the Pod's namespace already has an eth0: the veth's peer cannot be created there
        subprocess.run(["ip", "-n", probe_ns, "link", "add", "eth0", "type", "veth", "peer", "name", "other0"],
                       check=True)
        conf = kubelet.cni_config(lab.agent_sock("worker1"), "default", "10.96.0.10")
        e = kubelet.cni_env("ADD", "e" * 64, probe_ns, "default", "ghost", None)
        res = kubelet.run_cni("ADD", lab.ns("worker1"), conf, e)
        assert res.returncode == 1, res
        out = res.json()
        assert isinstance(out, dict) and out["code"] == 5 and "File exists" in out["msg"], out
        links = subprocess.run(["ip", "-n", probe_ns, "-o", "link"], capture_output=True, text=True).stdout
        assert sorted(ln.split(":")[1].split("@")[0].strip() for ln in links.splitlines()) == ["eth0", "lo", "other0"]
    finally:
        subprocess.run(["ip", "netns", "del", probe_ns], check=False)
    assert lab.node_objects("worker1") == before["worker1"]


def test_daemons_kept_serving_and_nothing_changed(lab: RelLab, before: dict[str, Any]) -> None:
    from pyantrea.httpapi import APIClient

    assert lab.controller_pid() == before["controller_pid"] and lab.agent_pid("worker1") == before["agent_pid"]
    ctl = APIClient(lab.controller_sock())
    assert ctl.get("/healthz") == "ok\n" and APIClient(lab.agent_sock("worker1")).get("/healthz") == "ok\n"
    assert ctl.get("/v1/manifests") == before["manifests"]
    assert lab.controller_version() == before["version"]
    assert [p["name"] for p in ctl.get("/v1/networkpolicies")] == before["policies"]
    assert lab.node_objects("worker1") == before["worker1"]
    for log in (lab.root / "controller/controller.log", lab.root / "nodes/worker1/agent.log"):
        assert "internal error" not in log.read_text() and "Traceback" not in log.read_text(), log
