"""kube-proxy (iptables mode) rendering: chain names, rules and the lookup model (no root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyantrea.k8s.complete import load_cluster
from pyantrea import kubeproxy as kp

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"

NODES = """
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.222.1.0/24}
status: {addresses: [{type: InternalIP, address: 10.79.1.201}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
spec: {podCIDR: 10.222.2.0/24}
status: {addresses: [{type: InternalIP, address: 10.79.1.202}]}
"""


def pods(n: int, label: str = "web") -> str:
    docs = []
    for i in range(n):
        docs.append(f"""
apiVersion: v1
kind: Pod
metadata: {{name: {label}{i}, namespace: default, labels: {{app: {label}}}}}
spec: {{nodeName: n{1 + i % 2}, containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}
""")
    return "---".join(docs)


@pytest.fixture(scope="module")
def seed() -> kp.KubeProxyRules:
    return kp.build_rules(load_cluster(SEED), "worker1")


def nat_lines(text: str) -> list[str]:
    return text.split("*nat\n", 1)[1].splitlines()


# ------------------------------------------------------------------------------------ names


@pytest.mark.parametrize("spn,proto,chain", [
    # the names every kubeadm cluster shows in `iptables-save`
    ("kube-system/kube-dns:dns", "UDP", "KUBE-SVC-TCOU7JCQXEZGVUNU"),
    ("kube-system/kube-dns:dns-tcp", "TCP", "KUBE-SVC-ERIFXISQEP7F7OF4"),
    ("kube-system/kube-dns:metrics", "TCP", "KUBE-SVC-JD5MR3NA4I4DYORP"),
    ("default/kubernetes:https", "TCP", "KUBE-SVC-NPX46M4PTMTKRN6Y"),
])
def test_service_chain_names_are_kube_proxys(spn: str, proto: str, chain: str) -> None:
    assert kp.service_chain(spn, proto) == chain


def test_endpoint_chain_hashes_the_endpoint() -> None:
    a = kp.endpoint_chain("default/backendsvc", "tcp", "10.222.1.47:80")
    b = kp.endpoint_chain("default/backendsvc", "tcp", "10.222.2.34:80")
    assert a.startswith("KUBE-SEP-") and len(a) == len("KUBE-SEP-") + 16
    assert a != b
    assert kp.service_port_name("default", "backendsvc", None) == "default/backendsvc"
    assert kp.service_port_name("kube-system", "kube-dns", "dns") == "kube-system/kube-dns:dns"


# ------------------------------------------------------------------------------------ seed


def test_seed_backendsvc_rules(seed: kp.KubeProxyRules) -> None:
    text = seed.render()
    svc = kp.service_chain("default/backendsvc", "tcp")
    sep1 = kp.endpoint_chain("default/backendsvc", "tcp", "10.222.1.47:80")
    sep2 = kp.endpoint_chain("default/backendsvc", "tcp", "10.222.2.34:80")
    lines = nat_lines(text)
    assert f":{svc} - [0:0]" in lines and f":{sep1} - [0:0]" in lines and f":{sep2} - [0:0]" in lines
    assert ('-A KUBE-SERVICES -m comment --comment "default/backendsvc cluster IP" -m tcp -p tcp '
            '-d 10.104.65.133/32 --dport 80 ! -s 10.222.0.0/16 -j KUBE-MARK-MASQ') in lines
    assert ('-A KUBE-SERVICES -m comment --comment "default/backendsvc cluster IP" -m tcp -p tcp '
            f'-d 10.104.65.133/32 --dport 80 -j {svc}') in lines
    assert (f"-A {svc} -m comment --comment default/backendsvc -m statistic --mode random "
            f"--probability 0.50000 -j {sep1}") in lines
    assert f"-A {svc} -m comment --comment default/backendsvc -j {sep2}" in lines
    assert f"-A {sep1} -m comment --comment default/backendsvc -s 10.222.1.47/32 -j KUBE-MARK-MASQ" in lines
    assert (f"-A {sep1} -m comment --comment default/backendsvc -m tcp -p tcp -j DNAT "
            "--to-destination 10.222.1.47:80") in lines
    assert (f"-A {sep2} -m comment --comment default/backendsvc -m tcp -p tcp -j DNAT "
            "--to-destination 10.222.2.34:80") in lines


def test_seed_masquerade_plumbing_and_tail(seed: kp.KubeProxyRules) -> None:
    lines = nat_lines(seed.render())
    assert lines.index("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN") \
        < lines.index("-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000") \
        < lines.index('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
                      '-j MASQUERADE')
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000" in lines
    rules = [ln for ln in lines if ln.startswith("-A KUBE-SERVICES")]
    assert rules[-1] == ('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
                         'the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')


def test_seed_kube_dns_ports_by_name_and_protocol(seed: kp.KubeProxyRules) -> None:
    by_name = {s.name: s for s in seed.services}
    dns = by_name["kube-system/kube-dns:dns"]
    assert dns.protocol == "udp" and dns.endpoints == ("10.222.1.2:53", "10.222.2.2:53")
    assert by_name["kube-system/kube-dns:metrics"].endpoints == ("10.222.1.2:9153", "10.222.2.2:9153")
    assert by_name["default/kubernetes:https"].endpoints == ("10.79.1.200:6443",)
    text = seed.render()
    assert "-m udp -p udp -d 10.96.0.10/32 --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU" in text


def test_render_is_deterministic_and_same_on_every_node() -> None:
    c = load_cluster(SEED)
    assert kp.render_iptables(c, "worker1") == kp.render_iptables(c, "worker1") == kp.render_iptables(c, "worker2")


def test_only_kube_chains_are_declared(seed: kp.KubeProxyRules) -> None:
    text = seed.render()
    declared = [ln for ln in text.splitlines() if ln.startswith(":")]
    assert declared and all(ln.startswith(":KUBE-") for ln in declared)
    assert not any(ln.startswith("-A ") and not ln.split()[1].startswith("KUBE-") for ln in text.splitlines())
    assert text.count("COMMIT") == 2 and text.startswith("*filter\n")


def test_filter_forward_chain(seed: kp.KubeProxyRules) -> None:
    text = seed.render()
    f = text.split("*nat")[0]
    assert "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP" in f
    assert ('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 '
            '-j ACCEPT') in f
    assert "-A KUBE-FORWARD -s 10.222.0.0/16 -m comment" in f


# ------------------------------------------------------------------------------------ variations


def test_three_endpoints_probabilities(make_cluster) -> None:  # type: ignore[no-untyped-def]
    oc = make_cluster(NODES, pods(3), """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.50, selector: {app: web}, ports: [{port: 80, targetPort: http}]}
""")
    r = kp.build_rules(oc.cluster, "n1")
    svc = kp.service_chain("default/web", "tcp")
    picks = [x for x in r.chain_rules("nat", svc)]
    assert [p.match.get("probability") for p in picks] == ["0.33333", "0.50000", None]
    dnat = [x.target.dnat_to for x in r.rules if x.target.kind == "DNAT"]
    assert dnat == ["10.222.1.2:8080", "10.222.1.3:8080", "10.222.2.2:8080"]
    hit = kp.lookup(r, "TCP", "10.96.0.50", 80, src="10.222.1.2")
    assert hit is not None and not hit.mark_masq
    assert [e.endpoint for e in hit.endpoints] == dnat
    assert all(abs(e.probability - 1 / 3) < 1e-9 for e in hit.endpoints)
    assert kp.lookup(r, "tcp", "10.96.0.50", 80, src="10.79.1.201").mark_masq  # type: ignore[union-attr]
    assert kp.lookup(r, "udp", "10.96.0.50", 80) is None
    assert kp.lookup(r, "tcp", "10.96.0.51", 80) is None


def test_no_endpoints_rejects_in_filter(make_cluster) -> None:  # type: ignore[no-untyped-def]
    oc = make_cluster(NODES, """
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.60
  selector: {app: nothing}
  ports: [{port: 80, nodePort: 30080}]
""")
    text = kp.render_iptables(oc.cluster, "n1")
    svc = kp.service_chain("default/empty", "tcp")
    assert svc not in text
    assert ('-A KUBE-SERVICES -m comment --comment "default/empty has no endpoints" -m tcp -p tcp '
            '-d 10.96.0.60/32 --dport 80 -j REJECT --reject-with icmp-port-unreachable') in text
    assert ('-A KUBE-EXTERNAL-SERVICES -m comment --comment "default/empty has no endpoints" -m addrtype '
            '--dst-type LOCAL -m tcp -p tcp --dport 30080 -j REJECT --reject-with icmp-port-unreachable') in text
    assert kp.lookup(kp.build_rules(oc.cluster, "n1"), "tcp", "10.96.0.60", 80) is None


def test_nodeport(make_cluster) -> None:  # type: ignore[no-untyped-def]
    oc = make_cluster(NODES, pods(1), """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.70
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30007}]
""")
    r = kp.build_rules(oc.cluster, "n2")
    svc = kp.service_chain("default/web:http", "tcp")
    text = r.render()
    assert "-A KUBE-NODEPORTS -m comment --comment default/web:http -m tcp -p tcp --dport 30007 -j KUBE-MARK-MASQ" in text
    assert f"-A KUBE-NODEPORTS -m comment --comment default/web:http -m tcp -p tcp --dport 30007 -j {svc}" in text
    assert f"-A {svc} -m comment --comment default/web:http -j KUBE-SEP-" in text  # a single endpoint: no statistic
    hit = kp.lookup(r, "tcp", "10.79.1.202", 30007, src="10.79.1.1", dst_is_local=True)
    assert hit is not None and hit.via == "nodePort" and hit.mark_masq
    assert hit.chains == ("KUBE-SERVICES", "KUBE-NODEPORTS", svc)
    assert [e.endpoint for e in hit.endpoints] == ["10.222.1.2:8080"]
    assert kp.lookup(r, "tcp", "10.79.1.202", 30007) is None  # not a local address: no nodePort


def test_stale_chains_are_deleted_and_missing_jumps_inserted(seed: kp.KubeProxyRules) -> None:
    save = """# Generated by iptables-save
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-OLDOLDOLDOLDOLD1 - [0:0]
:KUBE-SEP-OLDOLDOLDOLDOLD2 - [0:0]
:ANTREA-POSTROUTING - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "Antrea: jump to Antrea postrouting rules" -j ANTREA-POSTROUTING
COMMIT
*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
COMMIT
"""
    existing = kp.kube_chains_in(save)
    assert existing == {"KUBE-SERVICES", "KUBE-SVC-OLDOLDOLDOLDOLD1", "KUBE-SEP-OLDOLDOLDOLDOLD2"}
    missing = kp.missing_jumps(save)
    assert {(j.table, j.chain) for j in missing} == {("filter", "INPUT"), ("filter", "FORWARD"), ("filter", "OUTPUT"),
                                                    ("nat", "OUTPUT"), ("nat", "POSTROUTING")}
    text = seed.render(existing, missing)
    lines = nat_lines(text)
    assert ":KUBE-SVC-OLDOLDOLDOLDOLD1 - [0:0]" in lines and lines[-3:] == [
        "-X KUBE-SEP-OLDOLDOLDOLDOLD2", "-X KUBE-SVC-OLDOLDOLDOLDOLD1", "COMMIT"]
    assert '-I POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING' in lines
    assert '-I OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in lines
    assert "ANTREA" not in text
    assert ('-I INPUT -m comment --comment "kubernetes externally-visible service portals" -m conntrack --ctstate NEW '
            '-j KUBE-EXTERNAL-SERVICES') in text


def test_cluster_cidr(make_cluster) -> None:  # type: ignore[no-untyped-def]
    assert kp.cluster_cidr(load_cluster(SEED)) == "10.222.0.0/16"
    oc = make_cluster("""
apiVersion: v1
kind: Node
metadata: {name: a}
spec: {podCIDR: 192.168.4.0/24}
status: {addresses: [{type: InternalIP, address: 10.0.0.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: b}
spec: {podCIDR: 192.168.3.0/24}
status: {addresses: [{type: InternalIP, address: 10.0.0.2}]}
""")
    assert kp.cluster_cidr(oc.cluster) == "192.168.0.0/21"
