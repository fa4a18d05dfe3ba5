"""AntreaProxy (the `AntreaProxy` gate): its tables, flows and select groups, offline (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyantrea.agent.openflow import tables as T
from pyantrea.agent.proxy.model import GroupIDs
from pyantrea.errors import ManifestError
from pyantrea.k8s.loader import load_text, parse_agent_conf
from pyantrea.offline import OfflineCluster

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed"
SEED_PROXY = ROOT / "examples" / "seed-proxy"
MIX = ROOT / "tests" / "data" / "proxy"


@pytest.fixture(scope="module")
def proxy() -> OfflineCluster:
    return OfflineCluster.load(SEED_PROXY)


@pytest.fixture(scope="module")
def mix() -> OfflineCluster:
    return OfflineCluster.load(MIX)


def lines(oc: OfflineCluster, node: str, table: int | None = None) -> list[str]:
    return [f.dump_text().strip() for f in oc.node_flows(node).flows if table is None or f.table == table]


def groups(oc: OfflineCluster, node: str) -> dict[int, str]:
    return {g.group_id: g.dump_text().strip() for g in oc.node_flows(node).groups}


def gid(oc: OfflineCluster, node: str, key: str) -> int:
    return dict(oc.node_flows(node).group_ids)[key]


def bucket(ip_hex: str, port_hex: str, state: int = 2, back: int = 42) -> str:
    return (f"bucket=weight:100,actions=load:{ip_hex}->NXM_NX_REG3[],load:{port_hex}->NXM_NX_REG4[0..15],"
            f"load:{hex(state)}->NXM_NX_REG4[16..18],load:0x1->NXM_NX_REG0[19],resubmit(,{back})")


# ------------------------------------------------------------------------------------- the gate off


def test_gate_off_by_default_and_seed_unchanged() -> None:
    seed = OfflineCluster.load(SEED)
    assert not seed.cluster.config.gate("AntreaProxy")
    for node in ("master", "worker1", "worker2"):
        nf = seed.node_flows(node)
        assert nf.groups == () and nf.services == ()
        got = "".join(f.dump_text() + "\n" for f in nf.flows)
        assert got == (ROOT / "tests" / "golden" / f"seed-{node}.flows").read_text()


def test_seed_with_services_but_gate_off_has_no_service_flows(make_cluster) -> None:
    # the seed-proxy Services (NodePort included) without the gate: kube-proxy's job, the seed's flows
    oc = make_cluster((SEED_PROXY / "frontend-nodeport.yaml").read_text(), *[
        (SEED / f).read_text() for f in ("nodes.yaml", "workloads.yaml", "services.yaml")])
    assert all(f.table not in (29, 41, 42, 106) for f in oc.node_flows("worker1").flows)
    assert oc.node_flows("worker1").groups == ()


# ------------------------------------------------------------------------------------- the pipeline


def test_proxy_tables_and_names() -> None:
    p = T.ARTICLE_PROXY
    assert [t.id for t in p.tables] == [0, 10, 20, 29, 30, 31, 40, 41, 42, 50, 60, 70, 80, 90, 100, 105, 106, 110]
    assert p.next(10) == 29 and p.next(29) == 30 and p.next(31) == 42 and p.next(41) == 42
    assert p.next(42) == 50 and p.next(105) == 106 and p.next(106) == 110
    assert [p.resolve(n) for n in ("SessionAffinity", "serviceLB", "EndpointDNAT", "ServiceHairpin",
                                   "HairpinSNATTable")] == [40, 41, 42, 29, 106]
    assert T.table_name(40) == "DNAT(SessionAffinity)" and T.table_name(40, proxy=True) == "SessionAffinity"


def test_fixed_flows_with_the_gate(proxy: OfflineCluster) -> None:
    got = lines(proxy, "worker1")
    for want in [
        "cookie=0x1040000000000, table=29, priority=200,ip,nw_dst=169.254.169.252 actions=move:NXM_OF_IP_SRC[]->"
        "NXM_OF_IP_DST[],load:0x1->NXM_NX_REG0[18],resubmit(,30)",
        "cookie=0x1000000000000, table=29, priority=0 actions=resubmit(,30)",
        "cookie=0x1000000000000, table=30, priority=200,ip actions=ct(table=31,zone=65520,nat)",
        "cookie=0x1040000000000, table=31, priority=200,ct_state=-new+trk,ct_mark=0x21,ip actions="
        "load:0x1->NXM_NX_REG0[19],resubmit(,50)",
        "cookie=0x1000000000000, table=31, priority=210,ct_state=-new+trk,ct_mark=0x20,ip,reg0=0x1/0xffff "
        "actions=resubmit(,42)",
        "cookie=0x1000000000000, table=31, priority=0 actions=resubmit(,40),resubmit(,41)",
        "cookie=0x1040000000000, table=40, priority=0 actions=load:0x1->NXM_NX_REG4[16..18]",
        "cookie=0x1000000000000, table=41, priority=0 actions=resubmit(,42)",
        "cookie=0x1040000000000, table=42, priority=190,reg4=0x20000/0x70000 actions=load:0x1->NXM_NX_REG4[16..18],"
        "resubmit(,41)",
        "cookie=0x1040000000000, table=42, priority=200,reg4=0x80000/0x80000 actions=CONTROLLER:128",
        "cookie=0x1000000000000, table=42, priority=0 actions=resubmit(,50)",
        "cookie=0x1000000000000, table=105, priority=210,ct_state=+trk,ct_mark=0x21,ip,reg4=0x20000/0x70000 "
        "actions=resubmit(,106)",
        "cookie=0x1000000000000, table=105, priority=190,ct_state=+new+trk,ip actions=ct(commit,table=106,"
        "zone=65520)",
        "cookie=0x1000000000000, table=106, priority=0 actions=resubmit(,110)",
        "cookie=0x1040000000000, table=110, priority=210,ip,reg0=0x40000/0x40000 actions=IN_PORT",
        # SpoofGuard goes on to ServiceHairpin; to-Pod routing keys on reg0[19]
        "cookie=0x1030000000000, table=10, priority=200,ip,in_port=\"frontend-a3ba2f\",dl_src=be:2c:bf:e4:ec:c5,"
        "nw_src=10.222.1.48 actions=resubmit(,29)",
        "cookie=0x1030000000000, table=70, priority=200,ip,reg0=0x80000/0x80000,nw_dst=10.222.1.48 actions="
        "mod_dl_src:4e:99:08:c1:53:be,mod_dl_dst:be:2c:bf:e4:ec:c5,dec_ttl,resubmit(,80)",
    ]:
        assert want in got, want
    # no Service CIDR flow, no table-40 miss to 50, no virtual-MAC match for local Pods
    assert not any("nw_dst=10.96.0.0/12" in x for x in got)
    assert "cookie=0x1000000000000, table=40, priority=0 actions=resubmit(,50)" not in got
    assert not any("table=70" in x and "dl_dst=aa:bb:cc:dd:ee:ff,nw_dst=10.222.1.48" in x for x in got)
    # the tunnel -> gateway flow keeps the virtual MAC (v0.10.1)
    assert ("cookie=0x1000000000000, table=70, priority=200,ip,dl_dst=aa:bb:cc:dd:ee:ff,nw_dst=10.222.1.1 "
            "actions=mod_dl_dst:4e:99:08:c1:53:be,resubmit(,80)") in got


def test_clusterip_group_one_bucket_per_endpoint(proxy: OfflineCluster) -> None:
    g = gid(proxy, "worker1", "default/backendsvc/TCP")
    assert (f"cookie=0x1040000000000, table=41, priority=200,tcp,reg4=0x10000/0x70000,nw_dst=10.104.65.133,"
            f"tp_dst=80 actions=group:{g}") in lines(proxy, "worker1", 41)
    assert groups(proxy, "worker1")[g] == (f"group_id={g},type=select," + bucket("0xade012f", "0x50") + ","
                                           + bucket("0xade0222", "0x50"))
    dnat = lines(proxy, "worker1", 42)
    for ip, hexip in (("10.222.1.47", "0xade012f"), ("10.222.2.34", "0xade0222")):
        assert (f"cookie=0x1040000000000, table=42, priority=200,tcp,reg3={hexip},reg4=0x20050/0x7ffff actions="
                f"ct(commit,table=50,zone=65520,nat(dst={ip}:80),exec(load:0x21->NXM_NX_CT_MARK[]))") in dnat


def test_every_node_serves_every_service_and_hairpins_only_local_endpoints(proxy: OfflineCluster) -> None:
    for node in ("master", "worker1", "worker2"):
        assert {g.group_id for g in proxy.node_flows(node).groups} == set(range(1, 7))
    hp = lambda node: [x for x in lines(proxy, node, 106) if "nw_src" in x]  # noqa: E731
    assert hp("master") == []
    assert [x.split(",nw_dst")[0].split("nw_src=")[1] for x in hp("worker2")] == ["10.222.2.2", "10.222.2.34"]
    assert ("cookie=0x1040000000000, table=106, priority=200,ip,nw_src=10.222.1.48,nw_dst=10.222.1.48 actions="
            "mod_nw_src:169.254.169.252,load:0x1->NXM_NX_REG0[18],resubmit(,110)") in hp("worker1")


def test_nodeport_flows_follow_proxy_all(proxy: OfflineCluster, tmp_path: Path) -> None:
    g = gid(proxy, "worker1", "default/frontend:http/TCP")
    lb = lines(proxy, "worker1", 41)
    assert (f"cookie=0x1040000000000, table=41, priority=200,tcp,reg4=0x10000/0x70000,nw_dst=169.254.0.252,"
            f"tp_dst=30080 actions=group:{g}") in lb
    assert any(f"nw_dst=10.96.0.2,tp_dst=80 actions=group:{g}" in x for x in lb)
    # the frontend's named targetPort http is its port 80
    assert groups(proxy, "worker1")[g] == f"group_id={g},type=select," + bucket("0xade0130", "0x50")
    # without proxyAll the NodePort stays kube-proxy's (the host never sends it into br-int)
    for f in SEED_PROXY.iterdir():
        (tmp_path / f.name).write_text(f.read_text())
    conf = tmp_path / "antrea-agent.conf"
    conf.write_text(conf.read_text().replace("proxyAll: true", "proxyAll: false"))
    got = lines(OfflineCluster.load(tmp_path), "worker1", 41)
    assert any("nw_dst=10.96.0.2,tp_dst=80" in x for x in got)
    assert not any("169.254.0.252" in x for x in got)


def test_named_target_ports_resolved_per_endpoint(mix: OfflineCluster) -> None:
    g = gid(mix, "worker1", "default/web:http/TCP")
    # web1's "web" is 8080 (0x1f90), web2's 9090 (0x2382)
    assert groups(mix, "worker1")[g] == (f"group_id={g},type=select," + bucket("0xade013c", "0x1f90") + ","
                                         + bucket("0xade023c", "0x2382"))
    dnat = lines(mix, "worker1", 42)
    assert any("tcp,reg3=0xade013c,reg4=0x21f90/0x7ffff actions=ct(commit,table=50,zone=65520,"
               "nat(dst=10.222.1.60:8080)" in x for x in dnat)
    assert any("tcp,reg3=0xade023c,reg4=0x22382/0x7ffff actions=ct(commit,table=50,zone=65520,"
               "nat(dst=10.222.2.60:9090)" in x for x in dnat)


def test_udp_sctp_and_several_ports(mix: OfflineCluster) -> None:
    lb = lines(mix, "worker1", 41)
    for proto, port, key in (("tcp", 80, "http/TCP"), ("udp", 53, "dns/UDP"), ("sctp", 3868, "diameter/SCTP")):
        g = gid(mix, "worker1", f"default/web:{key}")
        assert (f"cookie=0x1040000000000, table=41, priority=200,{proto},reg4=0x10000/0x70000,nw_dst=10.96.100.1,"
                f"tp_dst={port} actions=group:{g}") in lb
        np = gid(mix, "worker1", f"default/webnp:{key}")
        node_port = {"tcp": 30081, "udp": 30053, "sctp": 30868}[proto]
        assert (f"cookie=0x1040000000000, table=41, priority=200,{proto},reg4=0x10000/0x70000,"
                f"nw_dst=169.254.0.252,tp_dst={node_port} actions=group:{np}") in lb
    dnat = lines(mix, "worker1", 42)
    assert any(x.startswith("cookie=0x1040000000000, table=42, priority=200,udp,reg3=0xade013c,reg4=0x214e9/0x7ffff "
                            "actions=ct(commit,table=50,zone=65520,nat(dst=10.222.1.60:5353)") for x in dnat)
    assert any(x.startswith("cookie=0x1040000000000, table=42, priority=200,sctp,reg3=0xade013c,reg4=0x20f1c/0x7ffff "
                            "actions=ct(commit,table=50,zone=65520,nat(dst=10.222.1.60:3868)") for x in dnat)


def test_session_affinity_learn_flow(mix: OfflineCluster) -> None:
    g = gid(mix, "worker1", "default/sticky/TCP")
    lb = lines(mix, "worker1", 41)
    assert (f"cookie=0x1040000000000, table=41, priority=200,tcp,reg4=0x10000/0x70000,nw_dst=10.96.100.2,"
            f"tp_dst=80 actions=group:{g}") in lb
    assert (f"cookie=0x104000000000{g:x}, table=41, priority=190,tcp,reg4=0x30000/0x70000,nw_dst=10.96.100.2,"
            f"tp_dst=80 actions=learn(table=40,hard_timeout=60,priority=200,delete_learned,"
            f"cookie=0x104000000000{g:x},eth_type=0x800,nw_proto=6,NXM_OF_TCP_DST[],NXM_OF_IP_DST[],"
            "NXM_OF_IP_SRC[],load:NXM_NX_REG3[]->NXM_NX_REG3[],load:NXM_NX_REG4[0..15]->NXM_NX_REG4[0..15],"
            "load:0x2->NXM_NX_REG4[16..18],load:0x1->NXM_NX_REG0[19]),load:0x2->NXM_NX_REG4[16..18],"
            "resubmit(,42)") in lb
    # the buckets go back to ServiceLB (0b011: to learn), not to EndpointDNAT
    assert groups(mix, "worker1")[g] == (f"group_id={g},type=select," + bucket("0xade012f", "0x50", 3, 41) + ","
                                         + bucket("0xade0222", "0x50", 3, 41))


def test_service_without_endpoints_goes_to_the_agent(mix: OfflineCluster) -> None:
    g = gid(mix, "worker1", "default/empty/TCP")
    assert any(f"nw_dst=10.96.100.3,tp_dst=80 actions=group:{g}" in x for x in lines(mix, "worker1", 41))
    assert groups(mix, "worker1")[g] == (f"group_id={g},type=select,bucket=weight:100,actions="
                                         "load:0x1->NXM_NX_REG4[19],resubmit(,42)")


def test_policy_flows_unchanged_by_the_gate(proxy: OfflineCluster) -> None:
    seed = OfflineCluster.load(SEED)
    for node in ("worker1", "worker2"):
        want = [x for x in lines(seed, node) if x.startswith("cookie=0x105")]
        assert [x for x in lines(proxy, node) if x.startswith("cookie=0x105")] == want


# ------------------------------------------------------------------------------------- inputs


def test_loader_session_affinity_and_proxy_all() -> None:
    raw = load_text("""
apiVersion: v1
kind: Service
metadata: {name: s, namespace: default}
spec:
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 30}}
  ports: [{port: 80}]
""", "s.yaml", conf_text="featureGates: {AntreaProxy: true}\nantreaProxy: {proxyAll: true}\n")
    s = raw.services[0]
    assert (s.session_affinity, s.affinity_timeout) == ("ClientIP", 30)
    assert raw.config.gate("AntreaProxy") and raw.config.proxy_all
    assert parse_agent_conf("featureGates: {AntreaProxy: true}\n", "c").proxy_all is False
    with pytest.raises(ManifestError, match="sessionAffinity \"Sticky\" is not one of None, ClientIP"):
        load_text("apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: default}\n"
                  "spec: {sessionAffinity: Sticky, ports: [{port: 80}]}\n", "s.yaml")
    with pytest.raises(ManifestError, match="timeoutSeconds 0 is out of range"):
        load_text("apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: default}\n"
                  "spec: {sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}},"
                  " ports: [{port: 80}]}\n", "s.yaml")
    with pytest.raises(ManifestError, match="antreaProxy.proxyAll must be true or false"):
        parse_agent_conf("antreaProxy: {proxyAll: 1}\n", "antrea-agent.conf")


def test_group_ids_as_antreas_group_counter() -> None:
    ids = GroupIDs()
    assert [ids.get(k) for k in ("a", "b", "c", "a")] == [1, 2, 3, 1]
    assert ids.release("b") == 2 and ids.release("a") == 1
    assert ids.get("d") == 1 and ids.get("e") == 2 and ids.get("f") == 4
