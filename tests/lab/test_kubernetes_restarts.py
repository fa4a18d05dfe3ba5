"""Restarts in a `pyantrea lab up --kubernetes` lab lose no packet and no flow (issue 9, done-when).

Its own lab (run dir /run/pa-k8r, namespace prefix pr2-), beside any other. The seed's policies let
frontend reach the backends on TCP 80 only, so the test first applies `allow-ping-egress` (frontend's
egress to the backends) and `allow-ping-backend2` (backend2's ingress from frontend), all protocols
(NetworkPolicies add allows; the backends are told apart by a label the test puts on them), and
checks ping frontend -> backend2 answers and frontend -> backend1 does not. Then, with
`ping -i 0.05` running from frontend to backend2 all the time, it SIGKILLs and restarts in turn
kube-apiserver (`pyantrea lab restart apiserver`), the pyantrea controller, and each agent; after
each, every node's OpenFlow flows are the ones before (cookies aside: an agent's new round has a
new cookie; and conjunction ids up to a renumbering: a restarted agent allocates them again, as
Antrea's does, so the same rules come back under other ids). Every ping sent is answered.
After the API server came back, a policy applied with
kubectl (`allow-ping-backend1`) is in force: the informers resumed their watches (or listed again
after a 410) and converged, and every node's flows equal the offline flows of the seed with the
same policies. Root only; needs Kubernetes' programs (skipped without them, failed when CI is set).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyantrea.lab.kubernetes import bin_dir, missing_programs

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed"
LAB_DIR = "/run/pa-k8r"
PREFIX = "pr2-"
ENV = {**os.environ, "PYANTREA_LAB_DIR": LAB_DIR, "PYANTREA_LAB_PREFIX": PREFIX}
NODES = ("master", "worker1", "worker2")
COOKIE = re.compile(r"cookie=0x[0-9a-f]+, ?")
BACKEND1, BACKEND2 = "10.222.1.47", "10.222.2.34"

pytestmark = [pytest.mark.lab]

EGRESS = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ping-egress, namespace: default}
spec:
  podSelector: {matchLabels: {role: frontend}}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector: {matchLabels: {role: backend}}
"""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def lab(*args: str, check: bool = True, timeout: float = 240, input: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "pyantrea", "lab", *args], capture_output=True, text=True,
                       env=ENV, cwd=ROOT, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"pyantrea lab {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def kubectl(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return lab("kubectl", *args, check=check, input=input, timeout=120)


def ingress_policy(name: str, pod: str) -> str:
    """Ingress to ``pod`` from frontend, every protocol (selected by the label kubectl adds)."""
    return f"""\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  podSelector: {{matchLabels: {{pyantrea-test/ping: {pod}}}}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {{matchLabels: {{role: frontend}}}}
"""



def ovs_flows(node: str) -> list[str]:
    p = lab("exec", node, "--", "ovs-ofctl", "dump-flows", "br-int", "--no-stats", "--names", timeout=60)
    return sorted(COOKIE.sub("", ln.strip()) for ln in p.stdout.splitlines()
                  if ln.strip() and not ln.startswith("NXST_FLOW") and not ln.startswith("OFPST_FLOW"))


_CONJ = re.compile(r"conj_id=(\d+)|conjunction\((\d+),")
_CONJ_LOAD = re.compile(r"(conj_id=(\d+),.*?)load:0x([0-9a-f]+)->")
_CONJ_ACTIONS = re.compile(r"actions=((?:conjunction\([^)]*\),?)+)$")


def _renamed(ln: str, name: Callable[[int], str]) -> str:
    """``ln`` with each conjunction id i written name(i), its conjunction actions sorted."""
    ln = _CONJ.sub(lambda m: m.group(0).replace(m.group(1) or m.group(2), name(int(m.group(1) or m.group(2)))), ln)
    m = _CONJ_ACTIONS.search(ln)
    if m:
        acts = sorted(re.findall(r"conjunction\([^)]*\)", m.group(1)))
        ln = ln[:m.start(1)] + ",".join(acts)
    return ln


def conj_canonical(lines: list[str]) -> list[str]:
    """``lines`` with the conjunction ids renamed canonically. A restarted agent allocates the ids
    again, in its own order (Antrea's agent does too: the ids live in its memory), so the same
    rules come back under other numbers; this names each id by the lines it occurs in (itself as #,
    the others as *), so two flow tables equal up to a renumbering compare equal."""
    lines = [_CONJ_LOAD.sub(lambda m: m.group(1) + "load:CONJ->" if int(m.group(3), 16) == int(m.group(2))
                            else m.group(0), ln) for ln in lines]
    occurs: dict[int, list[str]] = {}
    for ln in lines:
        for a, b in _CONJ.findall(ln):
            occurs.setdefault(int(a or b), []).append(ln)

    def sig(i: int) -> tuple[str, ...]:
        return tuple(sorted(_renamed(ln, lambda j: "#" if j == i else "*") for ln in occurs[i]))

    rename = {i: n for n, i in enumerate(sorted(occurs, key=sig), start=1)}
    return sorted(_renamed(ln, lambda j: f"C{rename[j]}") for ln in lines)


def all_flows() -> dict[str, list[str]]:
    return {n: conj_canonical(ovs_flows(n)) for n in NODES}


def pings(dst: str, count: int = 3) -> bool:
    p = subprocess.run([sys.executable, "-m", "pyantrea", "lab", "exec", "default/frontend", "--", "ping", "-n", "-c",
                        str(count), "-i", "0.2", "-W", "1", dst], capture_output=True, text=True, env=ENV, cwd=ROOT,
                       timeout=60)
    return p.returncode == 0


def wait_for(what: str, pred: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.2)


def offline_flows(folder: Path, node: str) -> list[str]:
    argv = [sys.executable, "-m", "pyantrea.antctl.main", "--cluster", str(folder), "get", "ovsflows", "--node", node,
            "-o", "ofctl"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    return conj_canonical(sorted(COOKIE.sub("", ln.strip()) for ln in p.stdout.splitlines() if ln.strip()))


@pytest.fixture(scope="module")
def up() -> Iterator[None]:
    gone = missing_programs()
    if gone:
        why = f"{', '.join(gone)} not in {bin_dir()} (make kubernetes)"
        if in_ci():
            pytest.fail(f"{why}, and CI is set", pytrace=False)
        pytest.skip(why)
    lab("down", check=False)
    p = lab("up", "--kubernetes", str(SEED), check=False, timeout=300)
    if p.returncode != 0:
        lab("down", check=False)
        raise AssertionError(f"lab up --kubernetes failed\n{p.stdout}\n{p.stderr}")
    try:
        yield
    finally:
        lab("down", check=False)


def test_restarts_lose_no_packet_and_no_flow(up: None) -> None:
    for pod in ("backend1", "backend2"):
        kubectl("label", "pod", pod, f"pyantrea-test/ping={pod}", "--overwrite")
    kubectl("apply", "-f", "-", input=EGRESS + "---\n" + ingress_policy("allow-ping-backend2", "backend2"))
    wait_for("ping frontend -> backend2 allowed", lambda: pings(BACKEND2, 1))
    assert not pings(BACKEND1, 2), "frontend -> backend1 ICMP should still be dropped by the seed's policies"
    before = all_flows()

    ping = subprocess.Popen([sys.executable, "-m", "pyantrea", "lab", "exec", "default/frontend", "--", "ping", "-n",
                             "-i", "0.05", "-W", "2", BACKEND2], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=ENV, cwd=ROOT)
    try:
        time.sleep(1.0)
        steps: list[tuple[str, float]] = []
        for what in (("apiserver",), ("controller",), ("agent", "worker1"), ("agent", "worker2"),
                     ("agent", "master")):
            t0 = time.monotonic()
            lab("restart", *what, timeout=180)
            steps.append((" ".join(what), time.monotonic() - t0))
            time.sleep(1.0)
            if what[0] == "agent":  # its new round replaces the old one's flows after a while
                wait_for(f"flows after restart {' '.join(what)}", lambda: all_flows() == before, timeout=40)
            assert all_flows() == before, f"flows changed after restart {' '.join(what)}"
        time.sleep(0.5)
    finally:
        ping.send_signal(2)  # SIGINT: ping prints its statistics
        out, _ = ping.communicate(timeout=30)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out[-2000:]
    sent, got = int(m.group(1)), int(m.group(2))
    print(f"\nrestarts {steps}: ping frontend -> backend2 {sent} sent, {got} received")
    # the last request may be in flight when ping is interrupted
    assert sent > 100 and got >= sent - 1, out[-2000:]

    # after the API server came back: a policy applied now is in force, and the flows converge
    kubectl("apply", "-f", "-", input=ingress_policy("allow-ping-backend1", "backend1"))
    wait_for("ping frontend -> backend1 allowed by the policy applied after the restarts",
             lambda: pings(BACKEND1, 1), timeout=10)
    with tempfile.TemporaryDirectory() as t:
        folder = Path(t) / "cluster"
        shutil.copytree(SEED, folder)
        w = (folder / "workloads.yaml").read_text()
        for pod in ("backend1", "backend2"):
            w = w.replace(f"    role: backend\n  name: {pod}\n",
                          f"    role: backend\n    pyantrea-test/ping: {pod}\n  name: {pod}\n")
        assert w.count("pyantrea-test/ping") == 2, "workloads.yaml's layout changed"
        (folder / "workloads.yaml").write_text(w)
        (folder / "ping-policies.yaml").write_text(
            EGRESS + "---\n" + ingress_policy("allow-ping-backend2", "backend2") + "---\n"
            + ingress_policy("allow-ping-backend1", "backend1"))
        want = {n: offline_flows(folder, n) for n in NODES}
    wait_for("live flows equal to the offline ones", lambda: all_flows() == want, timeout=10)
