"""traceflow and reachability on the live lab (root): the same traces as offline, and --live's real packet.

Brings the seed up in its own run dir (/run/pa-tftest) with its own namespace prefix (pf-), beside
any lab a user has up (pa-*, never touched), and takes it down at the end. Skipped (failed when CI
is set) without root, `ip netns`, OVS or tcpdump (conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed"
OWN_DIR = Path("/run/pa-tftest")  # private run dir and namespace prefix
PREFIX = "pf-"
ENV = {**os.environ, "PYANTREA_LAB_DIR": str(OWN_DIR), "PYANTREA_LAB_PREFIX": PREFIX}

pytestmark = [pytest.mark.lab, pytest.mark.lab_needs("tcpdump")]


def _own_netns() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/var/run/netns") if n.startswith(PREFIX))
    except FileNotFoundError:
        return []


def _pyantrea(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyantrea", *args], capture_output=True, text=True, timeout=timeout,
                          env=ENV, cwd=ROOT)


@pytest.fixture(scope="module")
def lab() -> Iterator[Path]:
    up = _pyantrea("lab", "up", str(SEED))
    try:
        if up.returncode != 0:
            raise AssertionError(f"`pyantrea lab up` failed (exit {up.returncode}):\n{up.stdout}\n{up.stderr}")
        yield OWN_DIR
    finally:
        down = _pyantrea("lab", "down")
        assert down.returncode == 0 and _own_netns() == [], f"{down.stdout}\n{down.stderr}\nleft: {_own_netns()}"


@pytest.fixture(scope="module")
def backends(lab: Path) -> Iterator[tuple[Any, Any]]:
    from pyantrea.antctl.backends import OfflineBackend
    from pyantrea.antctl.backends.live import LabBackend

    live = LabBackend(str(lab))
    state = lab / "controller" / "state"
    off = OfflineBackend(str(state if state.is_dir() and any(state.glob("*.y*ml")) else SEED))
    try:
        yield live, off
    finally:
        live.close()
        off.close()


def passes(doc: dict[str, Any]) -> list[tuple[str, str, list[tuple[int, int, str]], str | None]]:
    out = []
    for r in doc["results"]:
        for leg in r["legs"]:
            if leg["kind"] == "pipeline":
                hops = r["hops"][leg["firstHop"]:leg["firstHop"] + leg["hops"]]
                out.append((r["node"], leg["inPort"], [(h["table"], h["priority"], h["flow"]) for h in hops],
                            leg["outPort"]))
    return out


CASES = [
    ("default/frontend", "default/backendsvc", "tcp,tcp_dst=80", "10.222.1.47", False),
    ("default/frontend", "default/backendsvc", "tcp,tcp_dst=80", "10.222.2.34", False),
    ("default/frontend", "default/backendsvc", "tcp,tcp_dst=80", "10.222.1.47", True),
    ("default/frontend", "default/backendsvc", "tcp,tcp_dst=80", "10.222.2.34", True),
    ("default/frontend", "default/backend2", "tcp,tcp_dst=80", None, False),
    ("default/frontend", "default/backend2", "tcp,tcp_dst=80", None, True),
    ("default/backend1", "default/frontend", "tcp,tcp_dst=80", None, False),
    ("kube-system/coredns-66bff467f8-f4nc4", "default/backend1", "udp,udp_dst=53", None, False),
]


@pytest.mark.parametrize("src,dst,flow,endpoint,reply", CASES)
def test_live_traces_equal_offline(backends: tuple[Any, Any], src: str, dst: str, flow: str, endpoint: str | None,
                                   reply: bool) -> None:
    from pyantrea.traceflow.api import traceflow

    live, off = backends
    [lv] = traceflow(live, src, dst, flow, endpoint=endpoint, reply=reply)
    [of] = traceflow(off, src, dst, flow, endpoint=endpoint, reply=reply)
    assert passes(lv) == passes(of)
    assert lv["verdict"] == of["verdict"]
    assert [r["observations"] for r in lv["results"]] == [r["observations"] for r in of["results"]]


def test_live_arp_for_a_peer_gateway(backends: tuple[Any, Any]) -> None:
    live, off = backends
    f = "arp,arp_spa=10.222.1.1,arp_sha=4e:99:08:c1:53:be,arp_tpa=10.222.2.1,arp_op=1"
    lj = live.trace_packet("worker1", "antrea-gw0", None, None, f, []).as_json()
    oj = off.trace_packet("worker1", "antrea-gw0", None, None, f, []).as_json()
    assert [(h["table"], h["priority"]) for h in lj["hops"]] == [(0, 200), (10, 200), (20, 200)]
    assert lj == oj


def test_live_reachability_equals_offline(backends: tuple[Any, Any]) -> None:
    from pyantrea.traceflow.reachability import parse_ports, reachability

    live, off = backends
    ports = parse_ports(["TCP/80", "UDP/53"])
    assert reachability(live, ports) == reachability(off, ports)


def _tf_live(lab: Path, *args: str) -> Any:
    p = subprocess.run(["antctl", "--lab-dir", str(lab), "traceflow", *args, "--live", "-o", "json"],
                       capture_output=True, text=True, timeout=120, env=ENV)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_live_packet_is_delivered_where_predicted(lab: Path) -> None:
    d = _tf_live(lab, "-S", "default/frontend", "-D", "default/backend2", "-f", "tcp,tcp_dst=80")
    live = d["live"]
    assert d["verdict"]["action"] == "Delivered"
    assert live["probe"]["result"] == "connected"
    assert live["arrivedAt"] == ["default/backend2"]
    assert live["countersMoved"]["seen"] == live["countersMoved"]["predictedHops"]
    assert live["agrees"] is True


def test_live_packet_is_dropped_where_predicted(lab: Path) -> None:
    d = _tf_live(lab, "-S", "default/backend1", "-D", "default/frontend", "-f", "tcp,tcp_dst=80")
    live = d["live"]
    assert (d["verdict"]["action"], d["verdict"]["table"]) == ("Dropped", 60)
    assert live["probe"]["result"] == "timeout"
    assert live["arrivedAt"] == []
    assert any(x.startswith("worker1 table 60 priority 200") for x in live["dropFlowsHit"])
    assert live["agrees"] is True


def test_live_packet_to_a_service_takes_one_of_the_predicted_paths(lab: Path) -> None:
    docs = _tf_live(lab, "-S", "default/frontend", "-D", "default/backendsvc")
    assert [d["endpoint"] for d in docs] == ["10.222.1.47:80", "10.222.2.34:80"]
    reached = docs[0]["live"]["arrivedAt"]
    assert len(reached) == 1 and reached[0] in ("default/backend1", "default/backend2")
    taken = [d for d in docs if d["verdict"]["pod"] == reached[0]][0]
    assert taken["live"]["agrees"] is True
    assert taken["live"]["probe"]["result"] == "connected"
