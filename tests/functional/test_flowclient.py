"""The agent's flow client against a real OVS: diffs, one bundle per change, no-ops, replay."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from pyantrea.agent.bridge import TLV_MAP, node_commands
from pyantrea.agent.openflow.client import FlowClient
from pyantrea.agent.openflow.pipeline import FlowBuilder, PipelineConfig
from pyantrea.offline import OfflineCluster
from pyantrea.ovs.sandbox import Sandbox

pytestmark = [pytest.mark.functional,
              pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="Open vSwitch is not installed")]

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"


@pytest.fixture
def node():
    oc = OfflineCluster.load(SEED)
    net = oc.cluster.network("worker1")
    sb = Sandbox(Path(tempfile.mkdtemp(prefix="pa-")), datapath="dummy")
    sb.start()
    sb.db.transact(node_commands("br-int", net, "netdev"))
    br = sb.bridge("br-int")
    br.add_tlv_map(TLV_MAP)
    yield oc, net, sb, br
    sb.stop()
    shutil.rmtree(sb.rundir, ignore_errors=True)


def dump(br) -> list[str]:
    return sorted(br.dump_flows(names=True, no_stats=True))


def test_families_install_diff_and_noop(node) -> None:
    oc, net, sb, br = node
    fc = FlowClient(br)
    b = FlowBuilder(net, PipelineConfig())
    pods = {f"pod/{i.interface}": b.pod_flows(i) for i in net.interfaces}
    assert fc.update({"fixed": b.fixed_flows(), **pods}) == 31 + 20
    assert len(dump(br)) == 51 and fc.bundles == 1
    # the same state again sends nothing
    assert fc.update({"fixed": b.fixed_flows(), **pods}) == 0
    assert fc.bundles == 1
    # removing one Pod touches exactly its 5 flows, in one bundle
    first = f"pod/{net.interfaces[0].interface}"
    assert fc.update({first: None}) == 5
    assert len(dump(br)) == 46 and fc.bundles == 2
    assert not any(net.interfaces[0].interface in line for line in dump(br))
    # and the client's view equals OVS's
    assert sorted(f.dump_text() for f in fc.installed()) == dump(br)


def test_changed_actions_replace_in_place(node) -> None:
    oc, net, sb, br = node
    fc = FlowClient(br)
    fc.update({"fixed": FlowBuilder(net, PipelineConfig(round_num=1)).fixed_flows()})
    before = dump(br)
    # a new round: every flow gets the new cookie, same matches, nothing deleted
    assert fc.update({"fixed": FlowBuilder(net, PipelineConfig(round_num=2)).fixed_flows()}) == 31
    after = dump(br)
    assert len(after) == len(before) == 31
    assert all("cookie=0x2" in line for line in after)


def test_replay_after_vswitchd_restart(node) -> None:
    oc, net, sb, br = node
    fc = FlowClient(br)
    flows = oc.node_flows("worker1").flows
    fc.update({"all": flows})
    want = dump(br)
    sb.restart_vswitchd()
    assert dump(sb.bridge("br-int")) == []  # ovs-vswitchd keeps no flows across a restart
    sb.bridge("br-int").add_tlv_map(TLV_MAP)
    assert fc.replay() == len(flows)
    assert dump(sb.bridge("br-int")) == want
