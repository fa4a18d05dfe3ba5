"""pyantrea.k8s.complete: what a cluster folder leaves out is filled in deterministically."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from pyantrea.apis.k8s import EndpointAddress, EndpointPort, EndpointSubset, Node, Pod, Source
from pyantrea.errors import ManifestError
from pyantrea.k8s.cluster import Cluster
from pyantrea.k8s.complete import complete, container_id_for, interface_name, load_cluster, stable_mac
from pyantrea.k8s.loader import RawCluster, load_folder

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"


def write(d: Path, **files: str) -> Path:
    for key, text in files.items():
        name = "antrea-agent.conf" if key == "antrea_agent_conf" else key.replace("_yaml", ".yaml")
        (d / name).write_text(textwrap.dedent(text).lstrip("\n"))
    return d


def node(name: str, extra: str = "") -> str:
    return f"apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n{extra}"


def pod(name: str, ns: str = "default", spec: str = "", status: str = "", labels: str = "") -> str:
    meta = f"{{name: {name}, namespace: {ns}" + (f", labels: {labels}" if labels else "") + "}"
    return (f"apiVersion: v1\nkind: Pod\nmetadata: {meta}\n" + (f"spec: {spec}\n" if spec else "")
            + (f"status: {status}\n" if status else ""))


def docs(*ds: str) -> str:
    return "---\n".join(ds)


def problems_of(d: Path) -> list[str]:
    with pytest.raises(ManifestError) as e:
        load_cluster(d)
    return e.value.problems


def one_problem(d: Path) -> str:
    ps = problems_of(d)
    assert len(ps) == 1, ps
    return ps[0]


def two_nodes(tmp_path: Path, pods: str = "", extra: str = "") -> Path:
    """n1 (10.222.1.0/24, 10.0.0.1) and n2 (10.222.2.0/24, 10.0.0.2)."""
    files = {"nodes_yaml": docs(
        node("n1", "spec: {podCIDR: 10.222.1.0/24}\nstatus: {addresses: [{type: InternalIP, address: 10.0.0.1}]}\n"),
        node("n2", "spec: {podCIDR: 10.222.2.0/24}\nstatus: {addresses: [{type: InternalIP, address: 10.0.0.2}]}\n"),
    )}
    if pods:
        files["pods_yaml"] = pods
    if extra:
        files["extra_yaml"] = extra
    return write(tmp_path, **files)


# ------------------------------------------------------------------------------------- the seed


@pytest.fixture(scope="module")
def seed() -> Cluster:
    return load_cluster(SEED)


def test_seed_completes_without_warnings(seed: Cluster) -> None:
    assert seed.warnings == ()
    assert [n.name for n in seed.nodes] == ["master", "worker1", "worker2"]
    assert [ns.name for ns in seed.namespaces] == ["default", "kube-system"]
    assert [(s.namespace, s.name, s.cluster_ip) for s in seed.services] == [
        ("default", "backendsvc", "10.104.65.133"), ("default", "kubernetes", "10.96.0.1"),
        ("kube-system", "kube-dns", "10.96.0.10")]
    assert [p.key for p in seed.pods] == sorted(p.key for p in seed.pods)
    assert [(p.namespace, p.name) for p in seed.policies] == [("default", "backendpolicy"), ("default", "frontendpolicy")]


def test_seed_networks_are_spec_section_15(seed: Cluster) -> None:
    facts = {n.name: (n.node_ip, n.pod_cidr, n.gateway_ip) for n in seed.networks}
    assert facts == {"master": ("10.79.1.200", "10.222.0.0/24", "10.222.0.1"),
                     "worker1": ("10.79.1.201", "10.222.1.0/24", "10.222.1.1"),
                     "worker2": ("10.79.1.202", "10.222.2.0/24", "10.222.2.1")}
    w1, w2 = seed.network("worker1"), seed.network("worker2")
    assert (w1.gateway_mac, w2.gateway_mac) == ("4e:99:08:c1:53:be", "02:d8:4e:3f:92:1d")
    for n in seed.networks:
        assert (n.gateway_name, n.gateway_ofport, n.tunnel_name, n.tunnel_ofport) == ("antrea-gw0", 2, "antrea-tun0", 1)
    assert [(i.pod, i.ip, i.mac, i.ofport, i.interface) for i in w1.interfaces] == [
        ("coredns-66bff467f8-bclzd", "10.222.1.2", "f2:82:cc:96:da:bd", 3, "coredns--3e3abf"),
        ("antrea-octant-f59b76dd9-dcvvl", "10.222.1.3", "6e:9e:5a:3e:3f:e8", 4, "antrea-o-830766"),
        ("backend1", "10.222.1.47", "f2:32:d8:07:e2:a6", 48, "backend1-bab86f"),
        ("frontend", "10.222.1.48", "be:2c:bf:e4:ec:c5", 49, "frontend-a3ba2f"),
    ]
    assert [(i.pod, i.ip, i.mac, i.ofport, i.interface) for i in w2.interfaces] == [
        ("coredns-66bff467f8-f4nc4", "10.222.2.2", "52:9d:f4:63:06:bc", 3, "coredns--d8f62c"),
        ("backend2", "10.222.2.34", "c6:f4:b5:76:10:38", 35, "backend2-202ff6"),
    ]
    assert seed.network("master").interfaces == ()


def test_seed_host_network_pods_have_node_ips_and_no_interface(seed: Cluster) -> None:
    host = [p for p in seed.pods if p.host_network]
    assert len(host) == 11
    for p in host:
        assert p.pod_ip == seed.node(p.node_name or "").node_ip
        assert seed.interface_of(p.namespace, p.name) is None
    assert seed.pod("kube-system", "antrea-controller-655fcbc656-hrkwg").node_name == "worker2"


def test_seed_endpoints_are_kubectl_get_ep(seed: Cluster) -> None:
    def flat(ns: str, name: str) -> list[str]:
        ep = seed.endpoints_of(ns, name)
        assert ep is not None
        return sorted(f"{a.ip}:{p.port}" for s in ep.subsets for a in s.addresses for p in s.ports)
    assert flat("default", "backendsvc") == ["10.222.1.47:80", "10.222.2.34:80"]
    assert flat("default", "kubernetes") == ["10.79.1.200:6443"]
    dns = seed.endpoints_of("kube-system", "kube-dns")
    assert dns is not None and len(dns.subsets) == 1
    assert [a.target_pod for a in dns.subsets[0].addresses] == ["kube-system/coredns-66bff467f8-bclzd",
                                                                "kube-system/coredns-66bff467f8-f4nc4"]
    assert [(p.name, p.port, p.protocol) for p in dns.subsets[0].ports] == [
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]


def test_seed_config(seed: Cluster) -> None:
    c = seed.config
    assert c.gate("Traceflow") and c.tunnel_type == "geneve" and c.traffic_encap_mode == "encap"
    assert (c.service_cidr, c.ovs_bridge, c.host_gateway, c.pipeline_profile) == ("10.96.0.0/12", "br-int",
                                                                                "antrea-gw0", "ARTICLE")


# --------------------------------------------------------------------------------- the helpers


def test_interface_naming_rule() -> None:
    cid = "abc"
    h = hashlib.sha1(b"abc").hexdigest()[:6]
    assert interface_name("coredns-66bff467f8-bclzd", cid) == f"coredns--{h}"
    assert interface_name("db", cid) == f"db-{h}"
    assert len(interface_name("a-very-long-pod-name", cid)) == 15


def test_stable_mac_is_unicast_and_locally_administered() -> None:
    for seed in ("gateway/n1", "pod/default/a", "pod/x/y", "z"):
        mac = stable_mac(seed)
        first = int(mac[:2], 16)
        assert first & 0x02 and not first & 0x01
        assert mac == stable_mac(seed) and len(mac) == 17
    assert container_id_for("default", "a") == hashlib.sha256(b"default/a").hexdigest()


# ------------------------------------------------------------------------------- default rules


def test_node_pod_cidrs_in_name_order_skipping_used(tmp_path: Path) -> None:
    write(tmp_path, nodes_yaml=docs(node("c"), node("a"), node("b", "spec: {podCIDR: 10.222.0.0/24}\n"),
                                    node("d", "spec: {podCIDR: 10.222.2.0/23}\n"), node("e")))
    c = load_cluster(tmp_path)
    assert [(n.name, n.pod_cidr) for n in c.nodes] == [
        ("a", "10.222.1.0/24"), ("b", "10.222.0.0/24"), ("c", "10.222.4.0/24"), ("d", "10.222.2.0/23"),
        ("e", "10.222.5.0/24")]
    assert [n.pod_cidr for n in c.networks] == [n.pod_cidr for n in c.nodes]


def test_node_without_address_gets_one_with_a_warning(tmp_path: Path) -> None:
    write(tmp_path, nodes_yaml=docs(
        node("a"), node("b", "status: {addresses: [{type: InternalIP, address: 10.79.1.200}]}\n"), node("c"),
        node("d", "status: {addresses: [{type: ExternalIP, address: 5.6.7.8}]}\n")))
    c = load_cluster(tmp_path)
    assert [n.node_ip for n in c.nodes] == ["10.79.1.201", "10.79.1.200", "10.79.1.202", "5.6.7.8"]
    assert c.network("a").node_ip == "10.79.1.201"
    f = f"{tmp_path}/nodes.yaml"
    assert c.warnings == (
        f"{f} (document 1): Node a: no InternalIP or ExternalIP in status.addresses; using InternalIP 10.79.1.201",
        f"{f} (document 3): Node c: no InternalIP or ExternalIP in status.addresses; using InternalIP 10.79.1.202",
    )


def test_pods_spread_round_robin_over_nodes(tmp_path: Path) -> None:
    two_nodes(tmp_path, docs(pod("d"), pod("c"), pod("b", spec="{nodeName: n2}"), pod("a"), pod("a", ns="x"),
                             pod("e", spec="{hostNetwork: true}")))
    c = load_cluster(tmp_path)
    assert [(p.key, p.node_name) for p in c.pods] == [
        ("default/a", "n1"), ("default/b", "n2"), ("default/c", "n2"), ("default/d", "n1"), ("default/e", "n2"),
        ("x/a", "n1")]


def test_pinned_pod_without_node_name_goes_to_its_pin_node(tmp_path: Path) -> None:
    two_nodes(tmp_path, docs(pod("a"), pod("b")), """
        apiVersion: pyantrea.io/v1alpha1
        kind: NodeInterfaces
        metadata: {name: n2}
        spec: {pods: [{name: a, ofport: 7}]}
        """)
    c = load_cluster(tmp_path)
    assert [(p.name, p.node_name) for p in c.pods] == [("a", "n2"), ("b", "n1")]
    assert c.interface_of("default", "a") is not None


def test_pod_with_an_ip_but_no_node_goes_to_the_node_of_that_ip(tmp_path: Path) -> None:
    two_nodes(tmp_path, docs(pod("a", status="{podIP: 10.222.2.9}"), pod("b"),
                             pod("h", spec="{hostNetwork: true}", status="{podIP: 10.0.0.2}")))
    c = load_cluster(tmp_path)
    assert [(p.name, p.node_name) for p in c.pods] == [("a", "n2"), ("b", "n1"), ("h", "n2")]


def test_host_network_pods_get_their_node_ip(tmp_path: Path) -> None:
    two_nodes(tmp_path, docs(pod("h", spec="{hostNetwork: true, nodeName: n2}"), pod("p", spec="{nodeName: n2}")))
    c = load_cluster(tmp_path)
    assert c.pod("default", "h").pod_ip == "10.0.0.2"
    assert c.pod("default", "p").pod_ip == "10.222.2.2"
    assert [i.pod for i in c.network("n2").interfaces] == ["p"]


def test_pod_ips_from_dot_2_in_name_order_skipping_pinned(tmp_path: Path) -> None:
    on1 = "{nodeName: n1}"
    two_nodes(tmp_path, docs(
        pod("d", spec=on1), pod("c", spec=on1, status="{podIP: 10.222.1.3}"), pod("b", spec=on1), pod("a", spec=on1),
        pod("z", spec=on1, status="{podIP: 10.222.1.5}"), pod("y", spec="{nodeName: n2}"),
        pod("t", spec=on1, status="{phase: Succeeded}"), pod("u", spec=on1, status="{phase: Failed, podIP: 10.222.1.4}")))
    c = load_cluster(tmp_path)
    ips = {p.name: p.pod_ip for p in c.pods}
    assert ips == {"a": "10.222.1.2", "b": "10.222.1.4", "c": "10.222.1.3", "d": "10.222.1.6", "z": "10.222.1.5",
                   "y": "10.222.2.2", "t": None, "u": "10.222.1.4"}
    # terminated Pods have no OVS port
    assert [i.pod for i in c.network("n1").interfaces] == ["a", "b", "c", "d", "z"]


def test_service_cluster_ips_and_node_ports(tmp_path: Path) -> None:
    svc = "apiVersion: v1\nkind: Service\nmetadata: {{name: {n}}}\nspec: {s}\n"
    two_nodes(tmp_path, extra=docs(
        svc.format(n="c", s="{clusterIP: 10.96.0.2, ports: [{port: 80}]}"),
        svc.format(n="b", s="{ports: [{port: 80}]}"),
        svc.format(n="a", s="{type: NodePort, ports: [{name: x, port: 80}, {name: y, port: 81, nodePort: 30001}, "
                            "{name: z, port: 82}]}"),
        svc.format(n="d", s="{type: NodePort, ports: [{port: 80}]}"),
    ))
    c = load_cluster(tmp_path)
    assert [(s.name, s.cluster_ip) for s in c.services] == [
        ("a", "10.96.0.1"), ("b", "10.96.0.3"), ("c", "10.96.0.2"), ("d", "10.96.0.4")]
    assert [[p.node_port for p in s.ports] for s in c.services] == [[30000, 30001, 30002], [None], [None], [30003]]


def test_service_cluster_ips_follow_the_configured_cidr(tmp_path: Path) -> None:
    two_nodes(tmp_path, extra="apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n")
    write(tmp_path, antrea_agent_conf="serviceCIDR: 10.100.0.0/16\n")
    assert load_cluster(tmp_path).services[0].cluster_ip == "10.100.0.1"


def test_endpoints_are_derived_for_selector_services(tmp_path: Path) -> None:
    on1, on2 = "{nodeName: n1", "{nodeName: n2"
    http = ", containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}"
    other = ", containers: [{name: c, ports: [{name: http, containerPort: 9090}]}]}"
    two_nodes(tmp_path, docs(
        pod("w1", spec=on1 + http, labels="{app: web}", status="{podIP: 10.222.1.20}"),
        pod("w2", spec=on2 + other, labels="{app: web}"),
        pod("w3", spec=on1 + "}", labels="{app: web}", status="{podIP: 10.222.1.9}"),   # no port named http
        pod("w4", spec=on2 + http, labels="{app: web}", status="{phase: Succeeded}"),  # terminated
        pod("w5", ns="other", spec=on1 + http, labels="{app: web}"),                   # other namespace
        pod("x", spec=on1 + http, labels="{app: db}"),
    ), extra=docs(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
        "spec: {selector: {app: web}, ports: [{name: a, port: 80, targetPort: http}, {name: b, port: 81}]}\n",
        "apiVersion: v1\nkind: Service\nmetadata: {name: none}\nspec: {selector: {app: nope}, ports: [{port: 1}]}\n",
        "apiVersion: v1\nkind: Service\nmetadata: {name: manual}\nspec: {selector: {app: web}, ports: [{port: 1}]}\n",
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: manual}\nsubsets: [{addresses: [{ip: 1.1.1.1}]}]\n",
        "apiVersion: v1\nkind: Service\nmetadata: {name: nosel}\nspec: {ports: [{port: 1}]}\n",
    ))
    c = load_cluster(tmp_path)
    web = c.endpoints_of("default", "web")
    assert web is not None and web.source == Source()
    w2_ip = c.pod("default", "w2").pod_ip
    assert w2_ip == "10.222.2.2"
    assert web.subsets == (
        EndpointSubset(addresses=(EndpointAddress("10.222.1.9", "n1", "default/w3"),),
                       ports=(EndpointPort(81, "TCP", "b"),)),
        EndpointSubset(addresses=(EndpointAddress("10.222.1.20", "n1", "default/w1"),),
                       ports=(EndpointPort(8080, "TCP", "a"), EndpointPort(81, "TCP", "b"))),
        EndpointSubset(addresses=(EndpointAddress("10.222.2.2", "n2", "default/w2"),),
                       ports=(EndpointPort(9090, "TCP", "a"), EndpointPort(81, "TCP", "b"))),
    )
    none = c.endpoints_of("default", "none")
    assert none is not None and none.subsets == ()
    manual = c.endpoints_of("default", "manual")
    assert manual is not None and manual.subsets[0].addresses[0].ip == "1.1.1.1"
    assert c.endpoints_of("default", "nosel") is None
    assert [(e.namespace, e.name) for e in c.endpoints] == [("default", "manual"), ("default", "none"),
                                                            ("default", "web")]


def test_endpoints_group_pods_with_the_same_ports(tmp_path: Path) -> None:
    two_nodes(tmp_path, docs(
        pod("b", spec="{nodeName: n2}", labels="{app: web}"), pod("a", spec="{nodeName: n1}", labels="{app: web}"),
        pod("c", spec="{nodeName: n1}", labels="{app: web}", status="{podIP: 10.222.1.10}")),
        extra="apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n")
    ep = load_cluster(tmp_path).endpoints_of("default", "web")
    assert ep is not None and len(ep.subsets) == 1
    assert [a.ip for a in ep.subsets[0].addresses] == ["10.222.1.2", "10.222.1.10", "10.222.2.2"]  # numeric order
    assert ep.subsets[0].ports == (EndpointPort(80, "TCP", None),)


def test_node_networks_without_pins(tmp_path: Path) -> None:
    write(tmp_path, antrea_agent_conf="hostGateway: gw0\n")
    two_nodes(tmp_path, docs(pod("b", spec="{nodeName: n1}"), pod("a", spec="{nodeName: n1}"),
                             pod("a", ns="x", spec="{nodeName: n1}")))
    c = load_cluster(tmp_path)
    n1 = c.network("n1")
    assert (n1.name, n1.node_ip, n1.pod_cidr, n1.gateway_ip) == ("n1", "10.0.0.1", "10.222.1.0/24", "10.222.1.1")
    assert (n1.gateway_name, n1.gateway_ofport, n1.tunnel_name, n1.tunnel_ofport) == ("gw0", 2, "antrea-tun0", 1)
    assert n1.gateway_mac == stable_mac("gateway/n1") != c.network("n2").gateway_mac
    got = [(i.namespace, i.pod, i.node, i.ofport, i.ip) for i in n1.interfaces]
    assert got == [("default", "a", "n1", 3, "10.222.1.2"), ("default", "b", "n1", 4, "10.222.1.3"),
                   ("x", "a", "n1", 5, "10.222.1.4")]
    i = n1.interfaces[0]
    assert i.container_id == hashlib.sha256(b"default/a").hexdigest() and len(i.container_id) == 64
    assert i.interface == "a-" + hashlib.sha1(i.container_id.encode()).hexdigest()[:6]
    assert i.mac == stable_mac("pod/default/a")
    assert len({j.mac for j in n1.interfaces}) == 3


def test_pins_are_kept_and_others_fill_around_them(tmp_path: Path) -> None:
    on1 = "{nodeName: n1}"
    two_nodes(tmp_path, docs(pod("a", spec=on1), pod("b", spec=on1), pod("c", spec=on1), pod("d", spec=on1)), """
        apiVersion: pyantrea.io/v1alpha1
        kind: NodeInterfaces
        metadata: {name: n1}
        spec:
          gateway: {name: gw, ofport: 4, mac: "02:00:00:00:00:01"}
          tunnel: {name: tun, ofport: 9}
          pods:
          - {name: c, ofport: 3, interface: c-pinned, mac: "02:00:00:00:00:02", containerID: cafe}
          - {name: a, interface: a-pinned}
        """)
    n1 = load_cluster(tmp_path).network("n1")
    assert (n1.gateway_name, n1.gateway_ofport, n1.gateway_mac, n1.tunnel_name, n1.tunnel_ofport) == (
        "gw", 4, "02:00:00:00:00:01", "tun", 9)
    got = {i.pod: (i.ofport, i.interface, i.mac, i.container_id) for i in n1.interfaces}
    assert got["c"] == (3, "c-pinned", "02:00:00:00:00:02", "cafe")
    assert got["a"][:2] == (5, "a-pinned") and got["a"][2] == stable_mac("pod/default/a")
    assert got["b"][0] == 6 and got["d"][0] == 7
    assert got["b"][1] == interface_name("b", container_id_for("default", "b"))
    assert [i.ofport for i in n1.interfaces] == [3, 5, 6, 7]


def test_implicit_namespaces_and_sorting(tmp_path: Path) -> None:
    two_nodes(tmp_path, docs(pod("z", ns="b"), pod("a", ns="b"), pod("m", ns="a")),
              extra="apiVersion: v1\nkind: Namespace\nmetadata: {name: b, labels: {team: x}}\n")
    c = load_cluster(tmp_path)
    assert [(n.name, n.labels) for n in c.namespaces] == [("a", ()), ("b", (("team", "x"),))]
    assert [p.key for p in c.pods] == ["a/m", "b/a", "b/z"]


def test_complete_of_a_hand_built_raw_cluster() -> None:
    raw = RawCluster(nodes=(Node("n1"),), pods=(Pod("default", "p"),))
    c = complete(raw)
    assert c.pod("default", "p").pod_ip == "10.222.0.2" and c.nodes[0].pod_cidr == "10.222.0.0/24"
    assert c.network("n1").interfaces[0].ofport == 3
    assert c.warnings == (("<derived>: Node n1: no InternalIP or ExternalIP in status.addresses; using InternalIP "
                          "10.79.1.200"),)


def test_deterministic(tmp_path: Path) -> None:
    two_nodes(tmp_path, docs(*(pod(f"p{i}") for i in range(7))))
    assert load_cluster(tmp_path) == load_cluster(tmp_path)


# ------------------------------------------------------------------------------- problem lines

NI = "apiVersion: pyantrea.io/v1alpha1\nkind: NodeInterfaces\nmetadata: {{name: {node}}}\nspec: {{pods: [{pins}]}}\n"


def test_problem_pod_ip_outside_node_cidr(tmp_path: Path) -> None:
    two_nodes(tmp_path, pod("a", spec="{nodeName: n1}", status="{podIP: 10.222.2.5}"))
    assert one_problem(tmp_path) == (
        f"{tmp_path}/pods.yaml (document 1): Pod default/a: status.podIP 10.222.2.5 is outside the pod CIDR "
        "10.222.1.0/24 of its node n1")


@pytest.mark.parametrize("ip, what", [("10.222.1.1", "is the gateway address of node n1"),
                                      ("10.222.1.255", "is the network or broadcast address of 10.222.1.0/24")])
def test_problem_pod_ip_reserved(tmp_path: Path, ip: str, what: str) -> None:
    two_nodes(tmp_path, pod("a", spec="{nodeName: n1}", status=f"{{podIP: {ip}}}"))
    assert one_problem(tmp_path) == f"{tmp_path}/pods.yaml (document 1): Pod default/a: status.podIP {ip} {what}"


def test_problem_duplicate_pod_ip_names_both(tmp_path: Path) -> None:
    two_nodes(tmp_path, docs(pod("b", spec="{nodeName: n1}", status="{podIP: 10.222.1.7}"),
                             pod("a", spec="{nodeName: n1}", status="{podIP: 10.222.1.7}")))
    f = f"{tmp_path}/pods.yaml"
    assert one_problem(tmp_path) == (
        f"{f} (document 1): Pod default/b: status.podIP 10.222.1.7 is also the IP of Pod default/a ({f} (document 2))")


def test_problem_pinned_ofport_used_twice_names_both(tmp_path: Path) -> None:
    two_nodes(tmp_path, docs(pod("a", spec="{nodeName: n1}"), pod("b", spec="{nodeName: n1}")),
              NI.format(node="n1", pins="{name: b, ofport: 5}, {name: a, ofport: 5}"))
    assert one_problem(tmp_path) == (
        f"{tmp_path}/extra.yaml (document 1): NodeInterfaces n1: ofport 5 is pinned for both Pod default/a and "
        "Pod default/b")


def test_problem_pinned_ofport_of_the_gateway(tmp_path: Path) -> None:
    two_nodes(tmp_path, pod("a", spec="{nodeName: n1}"), NI.format(node="n1", pins="{name: a, ofport: 2}"))
    assert one_problem(tmp_path) == (
        f"{tmp_path}/extra.yaml (document 1): NodeInterfaces n1: ofport 2 is pinned for both gateway port antrea-gw0 "
        "and Pod default/a")


def test_problem_pinned_interface_name_used_twice(tmp_path: Path) -> None:
    two_nodes(tmp_path, docs(pod("a", spec="{nodeName: n1}"), pod("b", spec="{nodeName: n1}")),
              NI.format(node="n1", pins="{name: a, interface: veth1}, {name: b, interface: veth1}"))
    assert one_problem(tmp_path) == (
        f"{tmp_path}/extra.yaml (document 1): NodeInterfaces n1: interface name veth1 is pinned for both "
        "Pod default/a and Pod default/b")


def test_problem_pin_for_unknown_pod(tmp_path: Path) -> None:
    two_nodes(tmp_path, pod("a", spec="{nodeName: n1}"), NI.format(node="n1", pins="{name: ghost, namespace: x}"))
    assert one_problem(tmp_path) == (
        f"{tmp_path}/extra.yaml (document 1): NodeInterfaces n1: pins Pod x/ghost, which is not in the cluster")


def test_problem_pins_for_unknown_node(tmp_path: Path) -> None:
    two_nodes(tmp_path, extra=NI.format(node="n9", pins=""))
    assert one_problem(tmp_path) == f"{tmp_path}/extra.yaml (document 1): NodeInterfaces n9: there is no Node named n9"


def test_problem_pinned_on_another_node_than_node_name(tmp_path: Path) -> None:
    two_nodes(tmp_path, pod("a", spec="{nodeName: n1}"), NI.format(node="n2", pins="{name: a, ofport: 3}"))
    assert one_problem(tmp_path) == (
        f"{tmp_path}/extra.yaml (document 1): NodeInterfaces n2: pins Pod default/a on node n2, but the Pod's "
        f"spec.nodeName is n1 ({tmp_path}/pods.yaml (document 1))")


def test_problem_pod_pinned_on_two_nodes(tmp_path: Path) -> None:
    two_nodes(tmp_path, pod("a"), docs(NI.format(node="n1", pins="{name: a}"), NI.format(node="n2", pins="{name: a}")))
    assert one_problem(tmp_path) == (
        f"{tmp_path}/extra.yaml (document 2): NodeInterfaces n2: Pod default/a is pinned also by NodeInterfaces n1 "
        f"({tmp_path}/extra.yaml (document 1))")


def test_problem_pod_pinned_twice_on_a_node(tmp_path: Path) -> None:
    two_nodes(tmp_path, pod("a"), NI.format(node="n1", pins="{name: a}, {name: a, ofport: 9}"))
    assert one_problem(tmp_path) == (
        f"{tmp_path}/extra.yaml (document 1): NodeInterfaces n1: Pod default/a is pinned twice")


def test_problem_pin_for_host_network_pod(tmp_path: Path) -> None:
    two_nodes(tmp_path, pod("h", spec="{nodeName: n1, hostNetwork: true}"), NI.format(node="n1", pins="{name: h}"))
    assert one_problem(tmp_path) == (
        f"{tmp_path}/extra.yaml (document 1): NodeInterfaces n1: pins Pod default/h, which is a hostNetwork Pod and "
        "has no OVS port")


def test_problem_node_name_is_no_node(tmp_path: Path) -> None:
    two_nodes(tmp_path, pod("a", spec="{nodeName: n3}"))
    assert one_problem(tmp_path) == f"{tmp_path}/pods.yaml (document 1): Pod default/a: spec.nodeName n3 is not a Node"


def test_problem_pod_cidrs_overlap(tmp_path: Path) -> None:
    write(tmp_path, nodes_yaml=docs(node("a", "spec: {podCIDR: 10.1.0.0/16}\n"),
                                    node("b", "spec: {podCIDR: 10.1.2.0/24}\n")))
    f = f"{tmp_path}/nodes.yaml"
    assert one_problem(tmp_path) == (
        f"{f} (document 2): Node b: spec.podCIDR 10.1.2.0/24 overlaps 10.1.0.0/16 of Node a ({f} (document 1))")


def test_problem_duplicate_cluster_ip(tmp_path: Path) -> None:
    svc = "apiVersion: v1\nkind: Service\nmetadata: {{name: {n}}}\nspec: {{clusterIP: 10.96.0.5, ports: [{{port: 1}}]}}\n"
    two_nodes(tmp_path, extra=docs(svc.format(n="b"), svc.format(n="a")))
    f = f"{tmp_path}/extra.yaml"
    assert one_problem(tmp_path) == (
        f"{f} (document 1): Service default/b: spec.clusterIP 10.96.0.5 is also the clusterIP of Service default/a "
        f"({f} (document 2))")


def test_problem_duplicate_node_port(tmp_path: Path) -> None:
    svc = "apiVersion: v1\nkind: Service\nmetadata: {{name: {n}}}\nspec: {{type: NodePort, ports: [{{port: 1, " \
          "nodePort: 30005}}]}}\n"
    two_nodes(tmp_path, extra=docs(svc.format(n="b"), svc.format(n="a")))
    f = f"{tmp_path}/extra.yaml"
    assert one_problem(tmp_path) == (
        f"{f} (document 1): Service default/b: nodePort 30005 is also used by Service default/a ({f} (document 2))")


def test_warning_cluster_ip_outside_service_cidr(tmp_path: Path) -> None:
    two_nodes(tmp_path, extra="apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                              "spec: {clusterIP: 172.16.0.1, ports: [{port: 1}]}\n")
    c = load_cluster(tmp_path)
    assert c.warnings == ((f"{tmp_path}/extra.yaml (document 1): Service default/s: spec.clusterIP 172.16.0.1 is "
                          "outside the service CIDR 10.96.0.0/12 (antrea-agent.conf serviceCIDR)"),)


def test_problem_pod_cidr_exhausted(tmp_path: Path) -> None:
    write(tmp_path, nodes_yaml=node("n", "spec: {podCIDR: 10.1.0.0/30}\n"),
          pods_yaml=docs(pod("a", spec="{nodeName: n}"), pod("b", spec="{nodeName: n}")))
    assert one_problem(tmp_path) == (
        f"{tmp_path}/pods.yaml (document 2): Pod default/b: no free address left in pod CIDR 10.1.0.0/30 of node n "
        "(CIDR exhausted)")


def test_problem_service_cidr_exhausted(tmp_path: Path) -> None:
    svc = "apiVersion: v1\nkind: Service\nmetadata: {{name: {n}}}\nspec: {{ports: [{{port: 1}}]}}\n"
    write(tmp_path, antrea_agent_conf="serviceCIDR: 10.96.0.0/30\n",
          s_yaml=docs(svc.format(n="a"), svc.format(n="b"), svc.format(n="c")))
    assert one_problem(tmp_path) == (
        f"{tmp_path}/s.yaml (document 3): Service default/c: no free address left in the service CIDR 10.96.0.0/30 "
        "(CIDR exhausted)")


def test_problem_no_node_to_schedule_on(tmp_path: Path) -> None:
    write(tmp_path, pods_yaml=pod("a"))
    assert one_problem(tmp_path) == (
        f"{tmp_path}/pods.yaml (document 1): Pod default/a: has no spec.nodeName and there is no Node to schedule it on")


def test_all_problems_are_listed(tmp_path: Path) -> None:
    two_nodes(tmp_path, docs(pod("a", spec="{nodeName: n1}", status="{podIP: 10.222.9.9}"),
                             pod("b", spec="{nodeName: nx}"), pod("c", spec="{nodeName: n2}")),
              NI.format(node="n2", pins="{name: ghost}, {name: c, ofport: 1}"))
    ps = problems_of(tmp_path)
    assert len(ps) == 4, ps
    assert any("pins Pod default/ghost" in p for p in ps)
    assert any("Pod default/a: status.podIP 10.222.9.9 is outside" in p for p in ps)
    assert any("Pod default/b: spec.nodeName nx is not a Node" in p for p in ps)
    assert any("ofport 1 is pinned for both tunnel port antrea-tun0 and Pod default/c" in p for p in ps)


def test_loader_problems_come_before_completion(tmp_path: Path) -> None:
    two_nodes(tmp_path, pod("a", spec="{nodeName: nx}", status="{podIP: bad}"))
    assert problems_of(tmp_path) == [
        f'{tmp_path}/pods.yaml (document 1): Pod default/a: status.podIP "bad" is not an IPv4 address']
    with pytest.raises(ManifestError):
        load_folder(tmp_path)
