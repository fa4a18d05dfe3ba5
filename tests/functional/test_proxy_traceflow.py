"""antctl traceflow / get ovsflows -G with AntreaProxy, offline (the nodes' OVS sandboxes): the
load balancing happens in OVS (group, bucket, endpoint, DNAT), with no host leg."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyantrea.antctl.backends.offline import OfflineBackend
from pyantrea.antctl.main import main as antctl
from pyantrea.traceflow.api import run, traceflow
from pyantrea.traceflow.explain import render_text
from pyantrea.traceflow.model import HostStep, PassStep
from pyantrea.traceflow.reachability import PortSpec, reachability

pytestmark = [pytest.mark.functional,
              pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="Open vSwitch is not installed")]

ROOT = Path(__file__).resolve().parents[2]
SEED_PROXY = ROOT / "examples" / "seed-proxy"
MIX = ROOT / "tests" / "data" / "proxy"


@pytest.fixture(scope="module")
def mix() -> Iterator[OfflineBackend]:
    b = OfflineBackend(str(MIX))
    yield b
    b.close()


def by_endpoint(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["endpoint"]: d for d in docs}


def test_clusterip_both_endpoints_in_ovs_no_host_leg(mix: OfflineBackend) -> None:
    engine, spec, paths = run(mix, "default/frontend", "default/backendsvc")
    assert sorted(p.endpoint or "" for p in paths) == ["10.222.1.47:80", "10.222.2.34:80"]
    for p in paths:
        assert not any(isinstance(s, HostStep) for s in p.steps)
        assert p.outcome.action == "Delivered" and abs(p.probability - 0.5) < 1e-9
        lb = p.steps[0].lb  # type: ignore[union-attr]
        assert lb is not None and lb.group_id == 1 and lb.buckets == 2 and lb.endpoint == p.endpoint
    local = next(p for p in paths if p.endpoint == "10.222.1.47:80")
    remote = next(p for p in paths if p.endpoint == "10.222.2.34:80")
    assert local.outcome.pod == "default/backend1" and len(local.steps) == 1
    assert remote.outcome.pod == "default/backend2" and [s.node for s in remote.steps] == ["worker1", "worker2"]
    second = remote.steps[1]
    assert isinstance(second, PassStep) and second.packet.dst == "10.222.2.34" and second.entry == "tunnel"
    text = render_text(engine, spec, paths)
    assert "AntreaProxy endpoint: 10.222.2.34:80 (group 1, bucket" in text
    assert "its select group 1 (one bucket per ready endpoint, equal weights) picks bucket" in text
    assert "DNAT to 10.222.2.34:80 (Pod default/backend2 (10.222.2.34))" in text
    assert "kube-proxy" not in text
    docs = by_endpoint(traceflow(mix, "default/frontend", "default/backendsvc"))
    obs = docs["10.222.2.34:80"]["results"][0]["observations"]
    assert {"component": "LB", "action": "Forwarded", "pod": "default/backend2", "translatedDstIP": "10.222.2.34"} in obs
    leg = docs["10.222.2.34:80"]["results"][0]["legs"][0]
    assert leg["loadBalancing"]["group"] == 1 and leg["loadBalancing"]["endpoint"] == "10.222.2.34:80"


def test_endpoint_option_chooses_the_bucket(mix: OfflineBackend) -> None:
    for ep, pod in (("10.222.1.47", "default/backend1"), ("10.222.2.34:80", "default/backend2")):
        _, _, paths = run(mix, "default/frontend", "default/backendsvc", endpoint=ep)
        assert len(paths) == 1 and paths[0].outcome.pod == pod
    with pytest.raises(Exception, match="not an endpoint of default/backendsvc"):
        run(mix, "default/frontend", "default/backendsvc", endpoint="10.222.1.3")


def test_named_ports_udp_sctp(mix: OfflineBackend) -> None:
    _, _, paths = run(mix, "kube-system/coredns-66bff467f8-bclzd", "default/web", "udp,udp_dst=53")
    assert sorted(p.endpoint or "" for p in paths) == ["10.222.1.60:5353", "10.222.2.60:5353"]
    assert {p.outcome.pod for p in paths} == {"default/web1", "default/web2"}
    _, _, paths = run(mix, "kube-system/coredns-66bff467f8-bclzd", "default/web", "tcp,tcp_dst=80")
    assert sorted(p.endpoint or "" for p in paths) == ["10.222.1.60:8080", "10.222.2.60:9090"]
    _, _, paths = run(mix, "kube-system/coredns-66bff467f8-bclzd", "default/web", "sctp,sctp_dst=3868")
    assert all(p.outcome.action == "Delivered" for p in paths) and len(paths) == 2


def test_policy_on_the_endpoint_after_dnat(mix: OfflineBackend) -> None:
    _, _, paths = run(mix, "default/frontend", "default/web", "tcp,tcp_dst=80")
    for p in paths:
        assert p.outcome.action == "Dropped" and p.outcome.table == 60
        assert p.outcome.policies == ("default/frontendpolicy",)


def test_no_endpoint_and_hairpin(mix: OfflineBackend) -> None:
    _, _, paths = run(mix, "default/frontend", "default/empty")
    assert len(paths) == 1 and paths[0].outcome.table == 42
    assert "has no ready endpoint" in paths[0].outcome.reason and "rejects" in paths[0].outcome.reason
    _, _, paths = run(mix, "default/web1", "default/web", "tcp,tcp_dst=80", endpoint="10.222.1.60")
    assert paths[0].outcome.pod == "default/web1"
    t = paths[0].steps[0].result.trace  # type: ignore[union-attr]
    assert 106 in t.tables and "nw_src=169.254.169.252" in t.final_flow
    # the reply comes back through ServiceHairpin, conntrack un-NATs it
    _, _, paths = run(mix, "default/web1", "default/web", "tcp,tcp_dst=80", endpoint="10.222.1.60", reply=True)
    p = paths[0]
    assert p.outcome.pod == "default/web1" and p.steps[0].conntrack == "reply"  # type: ignore[union-attr]
    assert p.steps[0].result.trace.tables[:3] == (0, 10, 29)  # type: ignore[union-attr]


def test_reply_from_a_remote_endpoint(mix: OfflineBackend) -> None:
    engine, spec, paths = run(mix, "default/frontend", "default/backendsvc", endpoint="10.222.2.34", reply=True)
    p = paths[0]
    assert p.outcome.pod == "default/frontend" and [s.node for s in p.steps] == ["worker2", "worker1"]
    back = p.steps[1]
    assert isinstance(back, PassStep) and back.conntrack == "reply" and back.ct_mark == 0x21
    assert back.unnat and "10.104.65.133:80" in back.unnat
    assert "Conntrack reverses the Service's DNAT" in render_text(engine, spec, paths)


def test_reachability_still_works_with_the_gate(mix: OfflineBackend) -> None:
    res = reachability(mix, [PortSpec("TCP", 80)])
    v = {(r["from"], r["to"]): r["verdict"] for r in res}
    assert v[("default/frontend", "default/backend2")] == "allow"
    assert v[("default/backend1", "default/frontend")] == "deny"


def test_antctl_groups_and_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert antctl(["--cluster", str(SEED_PROXY), "get", "ovsflows", "--node", "worker1", "-G", "all",
                   "-o", "json"]) == 0
    groups = json.loads(capsys.readouterr().out)
    assert [g["groupID"] for g in groups] == [1, 2, 3, 4, 5, 6]
    assert [len(g["buckets"]) for g in groups] == [2, 1, 1, 2, 2, 2]
    assert antctl(["--cluster", str(SEED_PROXY), "get", "ovsflows", "--node", "worker1", "-G", "1", "-o", "ofctl"]) == 0
    assert capsys.readouterr().out.startswith(" group_id=1,type=select,bucket=weight:100,actions=load:0xade012f->")
    assert antctl(["--cluster", str(SEED_PROXY), "get", "ovsflows", "--node", "worker1", "-T", "EndpointDNAT"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("FLOW\n") and all("table=42" in x for x in out.splitlines()[1:] if x)
    assert antctl(["--cluster", str(SEED_PROXY), "get", "ovsflows", "--node", "worker1", "-G", "x"]) == 1
    assert "comma-separated group ids or 'all'" in capsys.readouterr().err


@pytest.mark.parametrize("folder", [ROOT / "examples" / "seed", SEED_PROXY])
def test_reachability_to_services(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert antctl(["--cluster", str(folder), "reachability", "--services", "-o", "json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if "endpoint" in r]
    v = {(r["from"], r["to"], r["protocol"], r["port"], r["endpoint"]): r["verdict"] for r in rows}
    fe = "default/frontend"
    assert v[(fe, "default/backendsvc", "TCP", 80, "10.222.1.47:80")] == "allow"
    assert v[(fe, "default/backendsvc", "TCP", 80, "10.222.2.34:80")] == "allow"
    assert v[(fe, "kube-system/kube-dns", "UDP", 53, "10.222.2.2:53")] == "allow"
    assert v[(fe, "kube-system/kube-dns", "TCP", 9153, "10.222.1.2:9153")] == "deny"
    assert v[("default/backend1", "default/backendsvc", "TCP", 80, "10.222.2.34:80")] == "deny"
    # the API server (a host endpoint): kube-proxy DNATs it on the host, after br-int's egress tables
    # (table 40 skips them); AntreaProxy DNATs it in br-int, before them, so frontend's policy applies
    kube = v[(fe, "default/kubernetes", "TCP", 443, "10.79.1.200:6443")]
    assert kube == ("deny" if folder == SEED_PROXY else "allow")
