"""The thin CNI plugin and the CNI server's request checks: every bad request gets the spec's error code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pyantrea.agent.cniserver.server import Request, interface_name, parse_args
from pyantrea.cni.plugin import run
from pyantrea.errors import CNIError

CONF = {"cniVersion": "1.0.0", "name": "antrea", "type": "antrea", "agentSocket": "/nonexistent/agent.sock",
        "ipam": {"type": "host-local"}}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/usr/lib/cni"}


def test_version_is_answered_locally() -> None:
    rc, out = run({"CNI_COMMAND": "VERSION"}, "")
    assert rc == 0 and "1.0.0" in out["supportedVersions"] and "0.4.0" in out["supportedVersions"]


@pytest.mark.parametrize("env,stdin,code,words", [
    ({**ENV, "CNI_COMMAND": "FROB"}, json.dumps(CONF), 4, "invalid CNI_COMMAND"),
    ({k: v for k, v in ENV.items() if k != "CNI_COMMAND"}, json.dumps(CONF), 4, "CNI_COMMAND is missing"),
    (ENV, "{not json", 6, "failed to decode"),
    (ENV, "[1, 2]", 6, "not a JSON object"),
    ({k: v for k, v in ENV.items() if k != "CNI_NETNS"}, json.dumps(CONF), 4, "CNI_NETNS"),
    ({k: v for k, v in ENV.items() if k != "CNI_CONTAINERID"}, json.dumps(CONF), 4, "CNI_CONTAINERID"),
    (ENV, json.dumps(CONF), 11, "not reachable"),
])
def test_plugin_errors(env: dict[str, str], stdin: str, code: int, words: str) -> None:
    rc, out = run(env, stdin)
    assert rc == 1 and out["code"] == code and words in out["msg"]
    assert set(out) == {"cniVersion", "code", "msg", "details"}


def test_the_executable_prints_cni_json_and_exits_nonzero() -> None:
    p = subprocess.run([sys.executable, "-m", "pyantrea.cni.plugin"], input="{bad", text=True,
                       capture_output=True, env={**ENV, "PATH": "/usr/bin:/bin"})
    assert p.returncode == 1
    assert json.loads(p.stdout)["code"] == 6


@pytest.mark.parametrize("conf,env,code", [
    ({**CONF, "cniVersion": "9.9.9"}, ENV, 1),
    ({**CONF, "ipam": {"type": "dhcp"}}, ENV, 7),
    (CONF, {**ENV, "CNI_ARGS": "K8S_POD_NAME"}, 4),
    (CONF, {**ENV, "CNI_IFNAME": ""}, 4),
])
def test_server_request_checks(conf: dict, env: dict, code: int) -> None:
    with pytest.raises(CNIError) as e:
        Request({"env": env, "conf": json.dumps(conf)})
    assert e.value.code == code


def test_args_and_names() -> None:
    assert parse_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=frontend;IP=10.222.1.48") == {
        "IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "frontend", "IP": "10.222.1.48"}
    # Antrea's naming rule (spec §10 step 4): 8 chars of the Pod name, '-', 6 hex of SHA-1(container id)
    name = interface_name("coredns-66bff467f8-bclzd", "abc")
    assert name.startswith("coredns--") and len(name) == 15
