"""Bad input the other unit tests do not cover (docs/bad-input.md names the test of every row).

No root needed: daemons run in-process or as subprocesses on private unix sockets.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyantrea.controller.controlplane import ControlPlane
from pyantrea.controller.server import build_router, open_store
from pyantrea.errors import ManifestError, PyantreaError
from pyantrea.httpapi import APIClient, Router, UnixHTTPServer
from pyantrea.k8s.loader import load_folder

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"


def pyantrea(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyantrea", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def conf_problems(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "antrea-agent.conf").write_text(text)
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    with pytest.raises(ManifestError) as e:
        load_folder(tmp_path)
    return list(e.value.problems)


# ------------------------------------------------------------------------------------ antrea-agent.conf


@pytest.mark.parametrize("text,words", [
    ("featureGates: [\n", "YAML syntax error"),
    ("- a\n- b\n", "must be a mapping"),
    ("defaultMTU: 70000\n", "defaultMTU"),
    ("defaultMTU: big\n", "defaultMTU"),
    ("ovsBridge: a-bridge-name-far-too-long\n", "ovsBridge"),
    ("trafficEncapMode: sometimes\n", "trafficEncapMode"),
], ids=["YAML syntax", "not a mapping", "MTU out of range", "MTU not a number", "bridge name too long",
        "unknown encap mode"])
def test_agent_conf_problems(tmp_path: Path, text: str, words: str) -> None:
    problems = conf_problems(tmp_path, text)
    assert len(problems) == 1 and words in problems[0] and "antrea-agent.conf" in problems[0], problems


# ------------------------------------------------------------------------------------ pyantrea CLI


def test_validate_and_compile_refuse_bad_folders(tmp_path: Path) -> None:
    p = pyantrea("validate", str(tmp_path / "nosuch"))
    assert p.returncode == 1 and "nosuch" in p.stderr
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDR: 10.1.0.0/33}\n")
    p = pyantrea("validate", str(tmp_path))
    assert p.returncode == 1 and "a.yaml (document 1): Node n1" in p.stderr and "podCIDR" in p.stderr
    p = pyantrea("compile", str(SEED), "--node", "nosuch")
    assert p.returncode == 1 and "nosuch" in p.stderr


def test_controller_refuses_a_broken_folder(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.yaml").write_text("kind: [\n")
    p = pyantrea("controller", "--cluster", str(tmp_path / "c"), "--rundir", str(tmp_path / "run"))
    assert p.returncode == 1 and "the cluster folder is invalid" in p.stderr and "a.yaml" in p.stderr
    assert not (tmp_path / "run" / "controller.sock").exists()
    p = pyantrea("controller")
    assert p.returncode == 2 and "--cluster" in p.stderr


@pytest.fixture
def controller() -> Iterator[str]:
    d = Path(tempfile.mkdtemp(prefix="pa-"))
    store = open_store(SEED, d / "state")
    server = UnixHTTPServer(str(d / "c.sock"), build_router(store, ControlPlane(store)))
    server.serve_in_thread()
    yield str(d / "c.sock")
    server.close()
    shutil.rmtree(d, ignore_errors=True)


def test_agent_refuses_an_unknown_node_and_bad_arguments(controller: str, tmp_path: Path) -> None:
    p = pyantrea("agent", "--node", "nosuch", "--controller", controller, "--ovs-rundir", str(tmp_path / "ovs"),
                 "--rundir", str(tmp_path / "run"))
    assert p.returncode == 1 and "fatal" in p.stderr and "nosuch" in p.stderr, p.stderr
    p = pyantrea("agent", "--node", "worker1", "--controller", controller, "--ovs-rundir", "x", "--rundir", "y",
                 "--datapath", "frob")
    assert p.returncode == 2 and "invalid choice" in p.stderr
    p = pyantrea("agent")
    assert p.returncode == 2 and "--node" in p.stderr


def test_agent_gives_up_on_an_unreachable_controller(tmp_path: Path) -> None:
    from pyantrea.agent.daemon import Agent

    a = Agent("worker1", str(tmp_path / "nosuch.sock"), str(tmp_path), str(tmp_path))
    with pytest.raises(PyantreaError, match="nosuch.sock is not reachable"):
        a.wait_controller(timeout=0.3)


def test_antctl_live_without_a_lab(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "pyantrea.antctl.main", "get", "ovsflows", "--node", "worker1"],
                       capture_output=True, text=True, env={**os.environ, "PYANTREA_LAB_DIR": str(tmp_path / "x")})
    assert p.returncode == 1 and p.stderr.startswith("Error: ") and "no running lab" in p.stderr


def test_lab_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyantrea.lab.lab import Lab, LabError

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root"):
        Lab.check_host()


# ------------------------------------------------------------------------------------ HTTP transport


@pytest.fixture
def cni_agent() -> Iterator[tuple[str, list[Any]]]:
    """A stand-in agent whose /cni/add answers what the test puts in `answers`."""
    d = Path(tempfile.mkdtemp(prefix="pa-"))
    answers: list[Any] = []
    r = Router()
    r.add("POST", "/cni/add", lambda req: answers.pop(0))
    server = UnixHTTPServer(str(d / "a.sock"), r)
    server.serve_in_thread()
    yield str(d / "a.sock"), answers
    server.close()
    shutil.rmtree(d, ignore_errors=True)


def test_plugin_passes_on_the_agents_cni_error_and_refusals(cni_agent: tuple[str, list[Any]]) -> None:
    from pyantrea.cni.plugin import run

    sock, answers = cni_agent
    conf = json.dumps({"cniVersion": "1.0.0", "name": "antrea", "type": "antrea", "agentSocket": sock})
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
    answers.append((400, {"error": {"code": 7, "msg": "bad IP", "details": "d"}}))
    assert run(env, conf) == (1, {"cniVersion": "1.0.0", "code": 7, "msg": "bad IP", "details": "d"})
    answers.append((400, {"error": "a CNI request is a JSON object"}))
    rc, out = run(env, conf)
    assert rc == 1 and out["code"] == 5 and "(400)" in out["msg"] and "JSON object" in out["msg"]
    answers.append({"result": {"cniVersion": "1.0.0", "ips": []}})
    assert run(env, conf) == (0, {"cniVersion": "1.0.0", "ips": []})


def _raw(sock: str, data: bytes) -> str:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sock)
    s.sendall(data)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out.decode()


@pytest.mark.parametrize("data,status,words", [
    (b"POST /cni/add HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", "400", "bad Content-Length"),
    (b"garbage\r\n\r\n", "400", "Bad request syntax"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n", "431", "Line too long"),
], ids=["Content-Length not a number", "not HTTP", "header line over 64 KiB"])
def test_transport_errors_are_json_with_a_status_line(cni_agent: tuple[str, list[Any]], data: bytes, status: str,
                                                      words: str) -> None:
    sock, _ = cni_agent
    out = _raw(sock, data)
    head, _, body = out.partition("\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}") and words in json.loads(body)["error"], out[:300]
    assert APIClient(sock).call("GET", "/nosuch")[0] == 404  # still serving
