"""Bad input to the lab commands and to live antctl (docs/bad-input.md, rows "lab commands").

Each gets a clear message and a non-zero exit; the lab is unchanged afterwards.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from .reltools import ROOT, RelLab

BAD_POD = """apiVersion: v1
kind: Pod
metadata: {name: reltest-badip, namespace: default}
spec: {nodeName: worker1, containers: [{name: c, image: x}]}
status: {podIP: 10.222.9.9}
"""

CASES = [
    ("restart of an unknown kind", ["restart", "frob"], 2, "invalid choice"),
    ("restart of an unknown node", ["restart", "agent", "nosuch"], 1, "nosuch: no such node"),
    ("restart controller with a node", ["restart", "controller", "worker1"], 1, "takes no node"),
    ("apply of a missing file", ["apply", "-f", "/nonexistent/x.yaml"], 1, "No such file"),
    ("apply without -f", ["apply"], 2, "-f/--filename"),
    ("up of a missing folder", ["up", "/nonexistent/folder"], 1, "not a directory"),
    ("up of another folder while a lab is up", ["up", str(ROOT / "tests")], 1, "lab down"),
    ("exec on an unknown node or Pod", ["exec", "nosuch", "--", "true"], 1, "no such node"),
    ("status in an unknown format", ["status", "-o", "xml"], 2, "invalid choice"),
]


@pytest.mark.parametrize("name,args,rc,words", CASES, ids=[c[0] for c in CASES])
def test_lab_command_errors(lab: RelLab, name: str, args: list[str], rc: int, words: str) -> None:
    p = lab.lab(*args, check=False)
    assert p.returncode == rc and words in p.stderr, (p.returncode, p.stdout, p.stderr)


def test_invalid_manifests_change_nothing(lab: RelLab) -> None:
    v0 = lab.controller_version()
    pods0 = sorted(lab.refresh().pods)
    p = lab.apply_text(BAD_POD, check=False, settle=False)
    assert p.returncode == 1 and "problem(s)" in p.stderr and "10.222.9.9" in p.stderr, p.stderr
    p = lab.apply_text("kind: [\n", check=False, settle=False)
    assert p.returncode == 1 and "YAML syntax error" in p.stderr, p.stderr
    p = lab.apply_text(BAD_POD, delete=True, check=False, settle=False)
    assert p.returncode == 1 and "not found" in p.stderr, p.stderr
    assert lab.controller_version() == v0 and sorted(lab.refresh().pods) == pods0


LIVE_INVALID = [
    ("a Pod in a namespace that does not exist",
     "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: nowhere}\nspec: {containers: [{name: c, image: x}]}\n",
     "<stdin> (document 1): Pod nowhere/p: namespace 'nowhere' not found"),
    ("a Pod name that is no DNS-1123 subdomain",
     "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name!}\nspec: {containers: [{name: c, image: x}]}\n",
     "metadata.name \"Bad_Name!\""),
    ("a label value with a space",
     "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: front end!}}\nspec: {containers: [{name: c, image: x}]}\n",
     "front end!"),
    ("a NetworkPolicy of an unknown apiVersion",
     "apiVersion: networking.k8s.io/v2\nkind: NetworkPolicy\nmetadata: {name: np}\nspec: {podSelector: {}}\n",
     "networking.k8s.io/v2"),
    ("a kind the API server does not serve",
     "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n", "ConfigMap"),
]


@pytest.mark.parametrize("name,text,words", LIVE_INVALID, ids=[c[0] for c in LIVE_INVALID])
def test_live_invalid_objects_are_refused_and_change_nothing(lab: RelLab, name: str, text: str, words: str) -> None:
    v0 = lab.controller_version()
    pods0 = sorted(lab.refresh().pods)
    p = lab.apply_text(text, check=False, settle=False)
    assert p.returncode == 1 and words in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert "<stdin>" in p.stderr and "<request>" not in p.stderr and "pa-ctl-" not in p.stderr, p.stderr
    assert lab.controller_version() == v0 and sorted(lab.refresh().pods) == pods0


def test_live_antctl_errors(lab: RelLab) -> None:
    def antctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pyantrea.antctl.main", *args], capture_output=True, text=True,
                              env=lab.env, timeout=60)

    p = antctl("get", "ovsflows", "--node", "nosuch")
    assert p.returncode == 1 and p.stderr.startswith("Error: ") and "nosuch" in p.stderr, p.stderr
    p = antctl("get", "ovsflows", "--node", "worker1", "-T", "Bogus")
    assert p.returncode == 1 and "invalid table name or number" in p.stderr, p.stderr
    p = antctl("trace-packet", "--node", "worker1", "-S", "default/nosuch")
    assert p.returncode == 1 and "nosuch" in p.stderr, p.stderr
    p = antctl("get", "frob")
    assert p.returncode == 2 and "invalid choice" in p.stderr, p.stderr
