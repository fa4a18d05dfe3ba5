"""The CNI executable starts fast: run as `cni_command()` says (isolated, no site, the module from its
bytecode) it imports nothing but the interpreter's own start-up modules, `_socket`, `_json` and
itself, and answers exactly what `run()` answers; its JSON (through `_json`) is `json`'s."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyantrea.cni.plugin import _json_dumps, _json_loads, cni_command, run
from pyantrea.httpapi import Router, UnixHTTPServer

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p"}
# what the interpreter itself imports before any code runs (python -I -S), and ours
STARTUP = {"_io", "marshal", "posix", "_frozen_importlib_external", "time", "zipimport", "_codecs", "codecs",
           "encodings.aliases", "encodings", "encodings.utf_8", "_signal", "_abc", "abc", "io", "_stat", "stat",
           "_collections_abc", "genericpath", "posixpath", "os.path", "os", "_sitebuiltins", "encodings.latin_1"}
OURS = {"pyantrea", "pyantrea.cni", "pyantrea.cni.plugin", "__future__", "_socket", "_json"}


def execute(env: dict[str, str], stdin: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = cni_command()
    return subprocess.run([argv[0], *extra, *argv[1:]], input=stdin, capture_output=True, text=True,
                          env={**env, "PATH": "/usr/bin:/bin"}, timeout=30)


@pytest.fixture
def agent() -> Iterator[tuple[str, list[Any]]]:
    d = Path(tempfile.mkdtemp(prefix="pa-"))
    answers: list[Any] = []
    seen: list[Any] = []
    r = Router()

    def add(req: Any) -> Any:
        seen.append(req.json())
        return answers.pop(0)

    r.add("POST", "/cni/add", add)
    server = UnixHTTPServer(str(d / "a.sock"), r)
    server.serve_in_thread()
    yield str(d / "a.sock"), answers
    server.close()
    shutil.rmtree(d, ignore_errors=True)


def test_imports_only_what_one_request_needs(agent: tuple[str, list[Any]]) -> None:
    sock, answers = agent
    conf = json.dumps({"cniVersion": "1.0.0", "name": "antrea", "type": "antrea", "agentSocket": sock})
    answers.append({"result": {"cniVersion": "1.0.0", "ips": [{"address": "10.222.1.5/24"}]}})
    p = execute(ENV, conf, "-X", "importtime")
    assert p.returncode == 0 and json.loads(p.stdout) == {"cniVersion": "1.0.0", "ips": [{"address": "10.222.1.5/24"}]}
    imported = {ln.split("|")[-1].strip() for ln in p.stderr.splitlines() if ln.startswith("import time:")}
    imported.discard("imported package")
    assert imported - STARTUP == OURS, sorted(imported - STARTUP)


def test_the_executable_answers_what_run_answers(agent: tuple[str, list[Any]]) -> None:
    sock, answers = agent
    conf = json.dumps({"cniVersion": "0.4.0", "name": "antrea", "type": "antrea", "agentSocket": sock})
    result = {"cniVersion": "0.4.0", "interfaces": [{"name": "p-1", "mac": "aa:bb:cc:dd:ee:ff"}],
              "ips": [{"version": "4", "address": "10.222.1.5/24", "gateway": "10.222.1.1", "interface": 1}],
              "dns": {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"]}}
    cases: list[tuple[dict[str, str], str, Any]] = [
        (ENV, conf, {"result": result}),
        (ENV, conf, (400, {"error": {"code": 7, "msg": "bad IP \u00e9", "details": "d"}})),
        (ENV, conf, (503, {"error": {"code": 11, "msg": "initializing", "details": ""}})),
        (ENV, conf, (400, {"error": "a CNI request is a JSON object"})),
        (ENV, conf, (500, "plain text")),
        (ENV, "{not json", None),
        ({**ENV, "CNI_COMMAND": "VERSION"}, "", None),
        ({k: v for k, v in ENV.items() if k != "CNI_NETNS"}, conf, None),
        (ENV, json.dumps({"cniVersion": "1.0.0", "agentSocket": sock + ".gone"}), None),
    ]
    for env, stdin, answer in cases:
        if answer is not None:
            answers.append(answer)
        p = execute(env, stdin)
        if answer is not None:
            answers.append(answer)
        rc, out = run(env, stdin)
        assert p.returncode == rc and json.loads(p.stdout) == out, (env, stdin, p.stdout, out)
        assert p.stdout == json.dumps(out) + "\n"


@pytest.mark.parametrize("text", [
    '{"a": [1, 2.5, null, true, false, "\\u00e9\\u2028\\"x\\\\"], "b": {"c": -1e300, "d": 1e999}}',
    " \n[]\t", "{}", '"s"', "1", "-0.0", '{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/24"}]}',
    "NaN", "[Infinity, -Infinity]",
])
def test_json_is_jsons(text: str) -> None:
    assert _json_dumps(_json_loads(text)) == json.dumps(json.loads(text))
    assert _json_loads(text.encode()) == json.loads(text) or "NaN" in text


@pytest.mark.parametrize("text", ["{not json", "[1, 2] x", "", "   ", '{"a":1}{', "[1,]", '{"a" 1}', "\xff"])
def test_json_errors_are_jsons(text: str) -> None:
    with pytest.raises(ValueError) as mine:
        _json_loads(text)
    with pytest.raises(ValueError) as theirs:
        json.loads(text)
    assert str(mine.value) == str(theirs.value)


def test_cni_command_needs_no_environment() -> None:
    argv = cni_command()
    assert argv[1:3] == ["-I", "-S"] and os.path.isfile(argv[0])
    p = subprocess.run(argv, input="", capture_output=True, text=True, env={"CNI_COMMAND": "VERSION"}, timeout=30)
    assert p.returncode == 0 and "1.0.0" in json.loads(p.stdout)["supportedVersions"]
