"""A real Kubernetes control plane for the functional tests of pyantrea's Kubernetes side.

One session fixture starts etcd and kube-apiserver (Kubernetes' own programs, built by `make
kubernetes` into the cache `pyantrea.lab.kubernetes.bin_dir()` names) on 127.0.0.1 in a
temporary directory, with certificates made by openssl, and stops them by pid at the end. No root
is needed and nothing listens beyond 127.0.0.1.

Without the programs (or openssl) the tests are skipped; with ``CI`` set they fail instead.

The API server runs with ``--watch-cache-sizes=endpoints#0``: Endpoints watches then go to etcd
itself, so a test can compact etcd's history and see a watch from an old resourceVersion answered
410 Gone (the watch cache of the other kinds keeps events in memory for minutes).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pyantrea.lab.kubernetes import ControlPlane, bin_dir, missing_programs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NEEDED = ("etcd", "kube-apiserver", "kubectl")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing() -> str | None:
    gone = missing_programs(programs=NEEDED)
    if gone:
        return f"{', '.join(gone)} not in {bin_dir()} (run `make kubernetes`)"
    if shutil.which("openssl") is None:
        return "openssl is not installed"
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kubernetes: needs Kubernetes' programs (make kubernetes); no root")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.kubernetes)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if not Path(str(item.fspath)).resolve().is_relative_to(HERE):
        return
    why = missing()
    if why is None:
        return
    if in_ci():
        pytest.fail(f"{why}, and CI is set: the Kubernetes tests must run in CI", pytrace=False)
    pytest.skip(why)


@dataclass
class APIServer:
    cp: ControlPlane
    kubeconfig: Path

    def client(self) -> Any:
        from pyantrea.k8s.kubesource import api_client

        return api_client(str(self.kubeconfig))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        import subprocess

        p = subprocess.run([str(self.cp.bdir / "kubectl"), "--kubeconfig", str(self.kubeconfig),
                            "--cache-dir", str(self.cp.dir / "kube-cache"), *args],
                           input=input, capture_output=True, text=True, timeout=60, check=False)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
        return p

    def etcd(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """etcd's JSON gateway (v3 API over HTTP), on 127.0.0.1."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.cp.etcd_ports[0]}{path}",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return dict(json.loads(r.read()))

    def compact(self) -> int:
        """Compact etcd's history up to its current revision; returns that revision."""
        rev = int(self.etcd("/v3/kv/range", {"key": "Lw=="})["header"]["revision"])  # key "/"
        self.etcd("/v3/kv/compaction", {"revision": str(rev), "physical": True})
        return rev


@pytest.fixture(scope="session")
def apiserver() -> Iterator[APIServer]:
    why = missing()
    if why is not None:
        if in_ci():
            pytest.fail(f"{why}, and CI is set", pytrace=False)
        pytest.skip(why)
    d = Path(tempfile.mkdtemp(prefix="pk8s-test-"))
    cp = ControlPlane(d, apiserver_args=("--watch-cache-sizes=endpoints#0",))
    try:
        cp.make_pki({"pyantrea-controller": ("pyantrea:controller", None), "pyantrea-agent": ("pyantrea:agent", None)})
        cp.start_etcd()
        cp.start_apiserver()
        yield APIServer(cp, cp.kubeconfig("admin"))
    finally:
        left = cp.stop()
        shutil.rmtree(d, ignore_errors=True)
        assert not left, f"still running after SIGKILL: {left}"


def wait_for(what: str, pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)
