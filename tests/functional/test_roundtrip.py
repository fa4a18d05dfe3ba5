"""Round trip through real OVS: what antctl prints is what OVS prints back (issue 2, "Done when")."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from pyantrea.antctl.main import main as antctl
from pyantrea.offline import NodeSandbox, OfflineCluster

pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="Open vSwitch is not installed"),
]

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"


@pytest.fixture(scope="module")
def seed() -> OfflineCluster:
    return OfflineCluster.load(SEED)


def per_table(lines: list[str]) -> dict[int, Counter[str]]:
    out: dict[int, Counter[str]] = {}
    for line in lines:
        m = re.search(r"table=(\d+)", line.split(" actions=")[0])
        out.setdefault(int(m.group(1)) if m else 0, Counter())[line] += 1
    return out


@pytest.mark.parametrize("node", ["master", "worker1", "worker2"])
def test_ovs_dump_equals_antctl_ofctl(seed: OfflineCluster, node: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert antctl(["--cluster", str(SEED), "get", "ovsflows", "--node", node, "-o", "ofctl"]) == 0
    ours = capsys.readouterr().out.splitlines()
    with NodeSandbox(seed, node) as sb:
        dumped = sb.sandbox.bridge("br-int").dump_flows(names=True, no_stats=True)
        dumped13 = sb.sandbox.bridge("br-int").dump_flows(names=True, no_stats=False, of13=True)
    assert len(dumped) == len(ours) == len(seed.node_flows(node).flows)
    # OVS orders flows inside a table as it likes: compare each table as a multiset of lines.
    assert per_table(dumped) == per_table(ours)
    # The OpenFlow 1.3 view (antctl's table form) matches too, once cookie and duration are cut off.
    cut = sorted(re.sub(r"^.*?table=", "table=", re.sub(r"duration=[^,]*, ", "", line)) for line in dumped13)
    assert cut == sorted(f.of13_text() for f in seed.node_flows(node).flows)


def test_second_install_changes_nothing(seed: OfflineCluster) -> None:
    """Installing the same flows again is a no-op: OVS keeps the flows (their counters survive)."""
    with NodeSandbox(seed, "worker1") as sb:
        br = sb.sandbox.bridge("br-int")
        sb.trace("in_port=49,dl_src=be:2c:bf:e4:ec:c5,dl_dst=4e:99:08:c1:53:be,ip,nw_src=10.222.1.48,"
                 "nw_dst=10.222.2.34,nw_ttl=64")
        before = br.dump_flows(names=True, no_stats=True)
        br.replace_flows([f.install_text() for f in seed.node_flows("worker1").flows])
        assert br.dump_flows(names=True, no_stats=True) == before
