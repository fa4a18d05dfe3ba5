"""The agent's AntreaProxy (proxier + flow client) against a real OVS: the first install equals the
offline compile, and a Service or Endpoints change sends only that Service's flow and group mods,
the group modified in place."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pyantrea.agent.bridge import TLV_MAP, node_commands
from pyantrea.agent.openflow.client import FlowClient
from pyantrea.agent.openflow.pipeline import FlowBuilder
from pyantrea.agent.proxy.proxier import Proxier
from pyantrea.apis.k8s import EndpointAddress, EndpointPort, Endpoints, EndpointSubset, Service, ServicePort
from pyantrea.offline import OfflineCluster, peers_of, pipeline_config
from pyantrea.ovs.sandbox import Sandbox

pytestmark = [pytest.mark.functional,
              pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="Open vSwitch is not installed")]

SEED_PROXY = Path(__file__).resolve().parents[2] / "examples" / "seed-proxy"


class FakeInformer:
    """What the proxier reads of an informer: get(key) and items()."""

    def __init__(self, objs: list[Any]):
        self.cache = {o.key: o for o in objs}

    def get(self, key: str) -> Any:
        return self.cache.get(key)

    def items(self) -> list[Any]:
        return [self.cache[k] for k in sorted(self.cache)]


@pytest.fixture
def node() -> Iterator[tuple[OfflineCluster, Proxier, FlowClient, Any, FakeInformer, FakeInformer]]:
    oc = OfflineCluster.load(SEED_PROXY)
    net = oc.cluster.network("worker1")
    cfg = pipeline_config(oc.cluster)
    sb = Sandbox(Path(tempfile.mkdtemp(prefix="pa-")), datapath="dummy")
    sb.start()
    try:
        sb.db.transact(node_commands("br-int", net, "netdev"))
        br = sb.bridge("br-int")
        br.add_tlv_map(TLV_MAP)
        fc = FlowClient(br)
        svcs, eps = FakeInformer(list(oc.cluster.services)), FakeInformer(list(oc.cluster.endpoints))
        px = Proxier("worker1", svcs, eps, lambda: FlowBuilder(net, cfg), lambda: fc, lambda: net.pod_cidr)
        px.start()
        b = FlowBuilder(net, cfg)
        fams: dict[str, Any] = {"fixed": b.fixed_flows()}
        for p in sorted(peers_of(oc.cluster, "worker1"), key=lambda p: p.name):
            fams[f"node/{p.name}"] = b.peer_node_flows(p)
        for i in net.interfaces:
            fams[f"pod/{i.interface}"] = b.pod_flows(i)
        svc_fams, groups = px.families(b)
        fams.update(svc_fams)
        fams["policy"] = [f for f in oc.node_flows("worker1").flows if f.cookie >> 40 & 0xFF == 5
                          or (f.table in (60, 100) and f.priority == 200)]
        fc.reset(fams, groups)
        yield oc, px, fc, br, svcs, eps
    finally:
        sb.stop()
        shutil.rmtree(sb.rundir, ignore_errors=True)


def test_first_install_equals_offline(node) -> None:
    oc, px, fc, br, _, _ = node
    nf = oc.node_flows("worker1")
    assert sorted(br.dump_flows(names=True, no_stats=True)) == sorted(f.dump_text() for f in nf.flows)
    assert br.dump_groups() == [g.dump_text() for g in nf.groups]


def test_endpoints_change_modifies_the_group_in_place(node) -> None:
    oc, px, fc, br, svcs, eps = node
    before_flows = sorted(br.dump_flows(names=True, no_stats=True))
    sent = fc.sent_lines
    gid = px.ids.ids["default/backendsvc/TCP"]
    # backend2 leaves backendsvc's Endpoints: one group modify, one EndpointDNAT flow deleted
    e = eps.cache["default/backendsvc"]
    eps.cache[e.key] = replace(e, subsets=(EndpointSubset(
        addresses=tuple(a for a in e.subsets[0].addresses if a.ip != "10.222.2.34"), ports=e.subsets[0].ports),))
    assert px.changed("default/backendsvc") == 2 and fc.sent_lines == sent + 2
    g = next(x for x in br.dump_groups() if f"group_id={gid}," in x)
    assert g.count("bucket=") == 1 and "load:0xade012f->NXM_NX_REG3[]" in g
    after = sorted(br.dump_flows(names=True, no_stats=True))
    assert [x for x in before_flows if x not in after] == [
        x for x in before_flows if "nat(dst=10.222.2.34:80)" in x]
    assert [x for x in after if x not in before_flows] == []
    # the same state again: nothing
    assert px.changed("default/backendsvc") == 0
    # back: the bucket and the flow return
    eps.cache[e.key] = e
    assert px.changed("default/backendsvc") == 2
    assert sorted(br.dump_flows(names=True, no_stats=True)) == before_flows


def test_service_added_and_deleted(node) -> None:
    oc, px, fc, br, svcs, eps = node
    before_groups, before_flows = br.dump_groups(), sorted(br.dump_flows(names=True, no_stats=True))
    s = Service("default", "extra", cluster_ip="10.96.200.1", selector=(("role", "backend"),),
                ports=(ServicePort(8080, "UDP", None, 80),), session_affinity="ClientIP", affinity_timeout=30)
    svcs.cache[s.key] = s
    assert px.changed(s.key) == 3  # the group, its LB and learn flows (no endpoints yet): nothing else
    gid = px.ids.ids["default/extra/UDP"]
    assert gid == 7 and any(x.startswith(f" group_id={gid},type=select,bucket=weight:100,actions="
                                         "load:0x1->NXM_NX_REG4[19]") for x in br.dump_groups())
    eps.cache[s.key] = Endpoints("default", "extra", (EndpointSubset(
        (EndpointAddress("10.222.1.47", "worker1", "default/backend1"),), (EndpointPort(80, "UDP"),)),))
    # the group modified, a UDP EndpointDNAT flow for backend1:80 added
    assert px.changed(s.key) == 2
    flows = br.dump_flows(names=True, no_stats=True, table=41)
    assert any("priority=190,udp,reg4=0x30000/0x70000,nw_dst=10.96.200.1,tp_dst=8080 actions=learn("
               "table=40,hard_timeout=30" in x for x in flows)
    assert any("udp,reg3=0xade012f,reg4=0x20050/0x7ffff" in x for x in br.dump_flows(table=42))
    # deleted: its flows, its group and its endpoint flow go; nothing else changed
    del svcs.cache[s.key], eps.cache[s.key]
    assert px.changed(s.key) == 4
    assert br.dump_groups() == before_groups
    assert sorted(br.dump_flows(names=True, no_stats=True)) == before_flows
    # the id is reused by the next new port
    svcs.cache[s.key] = s
    px.changed(s.key)
    assert px.ids.ids["default/extra/UDP"] == gid


def test_shared_endpoint_flow_stays_while_another_service_uses_it(node) -> None:
    oc, px, fc, br, svcs, eps = node
    twin = replace(svcs.cache["default/backendsvc"], name="twin", cluster_ip="10.96.200.2")
    svcs.cache[twin.key] = twin
    eps.cache[twin.key] = replace(eps.cache["default/backendsvc"], name="twin")
    assert px.changed(twin.key) == 2  # group + LB flow; the DNAT flows are backendsvc's already
    del svcs.cache["default/backendsvc"]
    del eps.cache["default/backendsvc"]
    assert px.changed("default/backendsvc") == 2  # its LB flow and group only
    assert sum("nat(dst=10.222.2.34:80)" in x for x in br.dump_flows(table=42)) == 1
