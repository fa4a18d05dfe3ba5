"""pyantrea.k8s.loader: reading a cluster folder, defaults of the API server, and problem lines."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pyantrea.apis.k8s import (
    AgentConfig,
    ContainerPort,
    IPBlock,
    LabelSelector,
    LabelSelectorRequirement,
    NetworkPolicyPort,
    PodPin,
    PortPin,
    ServicePort,
    Source,
)
from pyantrea.errors import ManifestError
from pyantrea.k8s.loader import RawCluster, load_folder

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"


def write(d: Path, **files: str) -> Path:
    """Write files into d (keyword 'pods_yaml' -> 'pods.yaml', 'antrea_agent_conf' -> 'antrea-agent.conf')."""
    for key, text in files.items():
        name = "antrea-agent.conf" if key == "antrea_agent_conf" else key.replace("_yaml", ".yaml").replace(
            "_yml", ".yml")
        (d / name).write_text(textwrap.dedent(text).lstrip("\n"))
    return d


def problems_of(d: Path) -> list[str]:
    with pytest.raises(ManifestError) as e:
        load_folder(d)
    return e.value.problems


def one_problem(d: Path) -> str:
    ps = problems_of(d)
    assert len(ps) == 1, ps
    return ps[0]


# ----------------------------------------------------------------------------------- the seed


def test_seed_folder_loads_without_warnings() -> None:
    raw = load_folder(SEED)
    assert raw.warnings == ()
    assert [n.name for n in raw.nodes] == ["master", "worker1", "worker2"]
    assert {(p.namespace, p.name) for p in raw.pods} >= {
        ("default", "frontend"), ("default", "backend1"), ("default", "backend2"),
        ("kube-system", "coredns-66bff467f8-bclzd"), ("kube-system", "kube-scheduler-master"),
    }
    assert len(raw.pods) == 17
    assert raw.config == AgentConfig()  # the seed's conf says what the defaults are
    assert raw.config_source == f"{SEED}/antrea-agent.conf"


def test_seed_policies_are_the_articles() -> None:
    raw = load_folder(SEED)
    pols = {p.name: p for p in raw.policies}
    fp, bp = pols["frontendpolicy"], pols["backendpolicy"]
    assert fp.namespace == "default" and str(fp.pod_selector) == "role=frontend"
    assert fp.policy_types == ("Ingress", "Egress")
    assert [(r.peers, r.ports) for r in fp.ingress] == [((), (NetworkPolicyPort("TCP", 80),))]
    assert len(fp.egress) == 2
    assert str(fp.egress[0].peers[0].pod_selector) == "role=backend"
    assert fp.egress[0].ports == (NetworkPolicyPort("TCP", 80),)
    assert fp.egress[1].peers == () and fp.egress[1].ports == (NetworkPolicyPort("UDP", 53),)
    assert bp.policy_types == ("Ingress", "Egress") and bp.egress == ()
    assert str(bp.ingress[0].peers[0].pod_selector) == "role=frontend"


def test_seed_sources_name_file_and_document() -> None:
    raw = load_folder(SEED)
    bp = next(p for p in raw.policies if p.name == "backendpolicy")
    assert bp.source == Source(f"{SEED}/policies.yaml", 2)
    agent = next(p for p in raw.pods if p.name == "antrea-agent-bpmx8")
    assert agent.source.file == f"{SEED}/kube-system.yaml" and agent.source.doc == 5  # inside a List
    assert all(o.source.file and o.source.doc >= 1 for o in (*raw.nodes, *raw.pods, *raw.services))


# ------------------------------------------------------------------------------ reading rules


def test_files_sorted_multidoc_empty_docs_and_yml(tmp_path: Path) -> None:
    write(tmp_path,
          b_yml="""
          ---
          apiVersion: v1
          kind: Namespace
          metadata: {name: b}
          """,
          a_yaml="""
          apiVersion: v1
          kind: Namespace
          metadata: {name: a}
          ---
          ---
          # only a comment
          ---
          apiVersion: v1
          kind: Namespace
          metadata: {name: c}
          """)
    (tmp_path / "notes.txt").write_text("kind: Pod\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: sub}\n")
    raw = load_folder(tmp_path)
    assert [(n.name, n.source.file.rsplit("/", 1)[1], n.source.doc) for n in raw.namespaces] == [
        ("a", "a.yaml", 1), ("c", "a.yaml", 4), ("b", "b.yml", 1)]


def test_pod_fields_and_defaults(tmp_path: Path) -> None:
    write(tmp_path, pods_yaml="""
        apiVersion: v1
        kind: Pod
        metadata: {name: p, labels: {app: web}, uid: u-1}
        spec:
          nodeName: n1
          containers:
          - name: a
            ports:
            - {containerPort: 80, name: http}
            - {containerPort: 53, protocol: UDP}
          - name: b
            ports: [{containerPort: 8080, name: alt, protocol: SCTP}]
        status: {podIP: 10.222.1.9, phase: Pending}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: h, namespace: kube-system}
        spec: {hostNetwork: true, nodeName: ""}
        status: {podIP: ""}
        """)
    raw = load_folder(tmp_path)
    p, h = raw.pods
    assert (p.namespace, p.name, p.labels, p.uid) == ("default", "p", (("app", "web"),), "u-1")
    assert (p.node_name, p.pod_ip, p.phase, p.host_network) == ("n1", "10.222.1.9", "Pending", False)
    assert p.containers == ("a", "b")
    assert p.ports == (ContainerPort(80, "TCP", "http"), ContainerPort(53, "UDP", None),
                       ContainerPort(8080, "SCTP", "alt"))
    assert (h.namespace, h.host_network, h.node_name, h.pod_ip, h.phase) == ("kube-system", True, None, None,
                                                                             "Running")


def test_node_fields(tmp_path: Path) -> None:
    write(tmp_path, nodes_yaml="""
        apiVersion: v1
        kind: Node
        metadata: {name: n1, labels: {zone: a}}
        spec: {podCIDR: 10.0.5.0/24}
        status:
          addresses:
          - {type: Hostname, address: n1}
          - {type: ExternalIP, address: 1.2.3.4}
          - {type: InternalIP, address: 192.168.1.5}
          - {type: InternalIP, address: 192.168.1.6}
        ---
        apiVersion: v1
        kind: Node
        metadata: {name: n2}
        """)
    n1, n2 = load_folder(tmp_path).nodes
    assert (n1.pod_cidr, n1.internal_ip, n1.external_ip, n1.node_ip) == ("10.0.5.0/24", "192.168.1.5", "1.2.3.4",
                                                                         "192.168.1.5")
    assert (n2.pod_cidr, n2.node_ip) == (None, None)


def test_service_and_endpoints_fields(tmp_path: Path) -> None:
    write(tmp_path, svc_yaml="""
        apiVersion: v1
        kind: Service
        metadata: {name: web, labels: {a: b}}
        spec:
          type: NodePort
          selector: {app: web}
          ports:
          - {name: http, port: 80, targetPort: http, nodePort: 30080}
          - {name: dns, port: 53, protocol: UDP}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: ext, namespace: x}
        spec:
          clusterIP: 10.96.3.3
          ports: [{port: 443, targetPort: 6443}]
        ---
        apiVersion: v1
        kind: Endpoints
        metadata: {name: ext, namespace: x}
        subsets:
        - addresses:
          - {ip: 10.0.0.1, nodeName: n1, targetRef: {kind: Pod, name: p1}}
          - {ip: 10.0.0.2, targetRef: {kind: Pod, name: p2, namespace: y}}
          - {ip: 10.0.0.3}
          ports: [{port: 6443, name: https}]
        """)
    raw = load_folder(tmp_path)
    web, ext = raw.services
    assert (web.namespace, web.type, web.cluster_ip, web.selector) == ("default", "NodePort", None, (("app", "web"),))
    assert web.ports == (ServicePort(80, "TCP", "http", "http", 30080), ServicePort(53, "UDP", "dns", None, None))
    assert (ext.type, ext.cluster_ip, ext.selector, ext.ports) == ("ClusterIP", "10.96.3.3", None,
                                                                   (ServicePort(443, "TCP", None, 6443),))
    (ep,) = raw.endpoints
    (ss,) = ep.subsets
    assert [(a.ip, a.node_name, a.target_pod) for a in ss.addresses] == [
        ("10.0.0.1", "n1", "x/p1"), ("10.0.0.2", None, "y/p2"), ("10.0.0.3", None, None)]
    assert [(p.port, p.protocol, p.name) for p in ss.ports] == [(6443, "TCP", "https")]


def test_network_policy_defaults(tmp_path: Path) -> None:
    write(tmp_path, np_yaml="""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: ingress-only}
        spec:
          podSelector: {}
          ingress:
          - ports: [{port: 80}, {port: http}, {protocol: UDP}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: with-egress}
        spec:
          podSelector:
            matchExpressions:
            - {key: tier, operator: In, values: [a, b]}
            - {key: env, operator: DoesNotExist}
          egress:
          - to:
            - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
            - namespaceSelector: {}
              podSelector: {matchLabels: {app: db}}
            ports: [{port: 8000, endPort: 8080}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: empty}
        spec: {podSelector: {}}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: egress-typed}
        spec:
          podSelector: {}
          policyTypes: [Egress]
        """)
    pols = {p.name: p for p in load_folder(tmp_path).policies}
    io = pols["ingress-only"]
    assert io.policy_types == ("Ingress",) and io.pod_selector.is_empty()
    assert io.ingress[0].ports == (NetworkPolicyPort("TCP", 80), NetworkPolicyPort("TCP", "http"),
                                   NetworkPolicyPort("UDP", None))
    we = pols["with-egress"]
    assert we.policy_types == ("Ingress", "Egress")
    assert we.pod_selector == LabelSelector((), (LabelSelectorRequirement("tier", "In", ("a", "b")),
                                                 LabelSelectorRequirement("env", "DoesNotExist")))
    p0, p1 = we.egress[0].peers
    assert p0.ip_block == IPBlock("10.0.0.0/8", ("10.1.0.0/16",)) and p0.pod_selector is None
    assert p1.namespace_selector == LabelSelector() and str(p1.pod_selector) == "app=db"
    assert we.egress[0].ports == (NetworkPolicyPort("TCP", 8000, 8080),)
    assert pols["empty"].policy_types == ("Ingress",)
    assert pols["egress-typed"].policy_types == ("Egress",)


def test_node_interfaces(tmp_path: Path) -> None:
    write(tmp_path, ni_yaml="""
        apiVersion: pyantrea.io/v1alpha1
        kind: NodeInterfaces
        metadata: {name: worker1}
        spec:
          gateway: {name: antrea-gw0, ofport: 2, mac: "4E:99:08:C1:53:BE"}
          tunnel: {name: antrea-tun0, ofport: 1}
          pods:
          - {namespace: kube-system, name: a, interface: a-1, ofport: 3, mac: "f2:82:cc:96:da:bd"}
          - {name: b, containerID: abc}
        """)
    (ni,) = load_folder(tmp_path).node_interfaces
    assert ni.node == "worker1"
    assert ni.gateway == PortPin("antrea-gw0", 2, "4e:99:08:c1:53:be")
    assert ni.tunnel == PortPin("antrea-tun0", 1, None)
    assert ni.pods == (PodPin("kube-system", "a", "a-1", 3, "f2:82:cc:96:da:bd"),
                       PodPin("default", "b", container_id="abc"))


def test_agent_conf(tmp_path: Path) -> None:
    write(tmp_path, antrea_agent_conf="""
        featureGates: {AntreaProxy: false, Traceflow: false}
        tunnelType: vxlan
        serviceCIDR: 10.100.0.0/16
        defaultMTU: 1400
        pipelineProfile: RELEASE
        clusterPort: 10349
        """)
    raw = load_folder(tmp_path)
    assert raw.config == AgentConfig(feature_gates=(("AntreaProxy", False), ("Traceflow", False)),
                                     tunnel_type="vxlan", service_cidr="10.100.0.0/16", default_mtu=1400,
                                     pipeline_profile="RELEASE")
    assert raw.warnings == (f"{tmp_path}: no *.yaml or *.yml files",
                            f'{tmp_path}/antrea-agent.conf: ignored unknown key "clusterPort"')


def test_agent_conf_gates_merge_with_defaults(tmp_path: Path) -> None:
    write(tmp_path, antrea_agent_conf="featureGates: {AntreaProxy: false}\n")
    cfg = load_folder(tmp_path).config
    assert cfg.gate("Traceflow") and not cfg.gate("AntreaProxy")


def test_no_conf_gives_defaults(tmp_path: Path) -> None:
    write(tmp_path, ns_yaml="apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    raw = load_folder(tmp_path)
    assert raw.config == AgentConfig() and raw.config_source == ""


def test_other_kinds_are_skipped_with_a_warning(tmp_path: Path) -> None:
    write(tmp_path, x_yaml="""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: d}
        ---
        apiVersion: v1
        kind: List
        items:
        - {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}
        - {apiVersion: v1, kind: Namespace, metadata: {name: n}}
        ---
        apiVersion: crd.antrea.io/v1alpha1
        kind: ClusterNetworkPolicy
        metadata: {name: acnp}
        """)
    raw = load_folder(tmp_path)
    f = f"{tmp_path}/x.yaml"
    assert raw.warnings == (
        f"{f} (document 1): skipped Deployment (apiVersion apps/v1): pyantrea does not read this kind",
        f"{f} (document 2, item 1): skipped ConfigMap (apiVersion v1): pyantrea does not read this kind",
        (f"{f} (document 3): skipped ClusterNetworkPolicy (apiVersion crd.antrea.io/v1alpha1): pyantrea does not "
         "read this kind"),
    )
    assert [n.name for n in raw.namespaces] == ["n"] and raw.policies == ()


def test_empty_folder(tmp_path: Path) -> None:
    raw = load_folder(tmp_path)
    assert raw == RawCluster() and raw.warnings == (f"{tmp_path}: no *.yaml or *.yml files",)


def test_not_a_directory(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope") == [
        f"{tmp_path}/nope: not a directory (a cluster folder holds *.yaml manifests)"]


# ------------------------------------------------------------------------------ problem lines

POD = """
apiVersion: v1
kind: Pod
metadata: {name: frontend}
"""


def test_problem_bad_pod_ip(tmp_path: Path) -> None:
    write(tmp_path, pods_yaml="""
        apiVersion: v1
        kind: Namespace
        metadata: {name: default}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: backend}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: frontend, namespace: default}
        status: {podIP: 10.222.1.300}
        """)
    assert one_problem(tmp_path) == (
        f'{tmp_path}/pods.yaml (document 3): Pod default/frontend: status.podIP "10.222.1.300" is not an IPv4 address')


def test_problem_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    write(tmp_path, bad_yaml="""
        apiVersion: v1
        kind: Namespace
        metadata: {name: a}
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: x
         labels: {a: b}
        """)
    p = one_problem(tmp_path)
    assert p.startswith(f"{tmp_path}/bad.yaml (document 2): YAML syntax error at line 9, column 2: ")


def test_problem_document_not_a_mapping(tmp_path: Path) -> None:
    write(tmp_path, x_yaml="- a\n- b\n")
    assert one_problem(tmp_path) == f"{tmp_path}/x.yaml (document 1): document is not a mapping (got a list)"


@pytest.mark.parametrize("doc, message", [
    ("apiVersion: v1\nmetadata: {name: a}\n", "missing kind"),
    ("kind: Pod\nmetadata: {name: a}\n", "missing apiVersion (Pod)"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {labels: {a: b}}\n", "Pod metadata.name is required"),
    ("apiVersion: v1\nkind: Pod\n", "Pod metadata.name is required"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: 7}\n", 'Pod metadata.name must be a string, got an integer 7'),
    ("apiVersion: v1\nkind: Pod\nmetadata: [name, a]\n", "Pod metadata must be a mapping, got a list"),
    ("apiVersion: 1\nkind: Pod\nmetadata: {name: a}\n", "apiVersion must be a string, got an integer 1"),
])
def test_problem_missing_identity(tmp_path: Path, doc: str, message: str) -> None:
    (tmp_path / "x.yaml").write_text(doc)
    assert one_problem(tmp_path) == f"{tmp_path}/x.yaml (document 1): {message}"


@pytest.mark.parametrize("labels, message", [
    ("[a, b]", "metadata.labels must be a mapping, got a list"),
    ("{role: 1}", "metadata.labels must map strings to strings, metadata.labels.role is an integer 1"),
    ("{role: true}", "metadata.labels must map strings to strings, metadata.labels.role is a boolean true"),
])
def test_problem_labels_not_strings(tmp_path: Path, labels: str, message: str) -> None:
    (tmp_path / "p.yaml").write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: a, labels: {labels}}}\n")
    assert one_problem(tmp_path) == f"{tmp_path}/p.yaml (document 1): Pod default/a: {message}"


def test_problem_port_not_int_or_str(tmp_path: Path) -> None:
    write(tmp_path, np_yaml="""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: np, namespace: web}
        spec:
          ingress:
          - ports: [{port: 1.5}]
        """)
    assert one_problem(tmp_path) == (
        f"{tmp_path}/np.yaml (document 1): NetworkPolicy web/np: spec.ingress[0].ports[0].port must be a port "
        "number or a port name, got a float 1.5")


def test_problem_container_port_not_int(tmp_path: Path) -> None:
    write(tmp_path, p_yaml="""
        apiVersion: v1
        kind: Pod
        metadata: {name: a}
        spec:
          containers: [{name: c, ports: [{containerPort: "80"}]}]
        """)
    assert one_problem(tmp_path) == (
        f'{tmp_path}/p.yaml (document 1): Pod default/a: spec.containers[0].ports[0].containerPort must be an '
        'integer, got a string "80"')


@pytest.mark.parametrize("cidr, message", [
    ("10.222.1.0", 'spec.podCIDR "10.222.1.0" is not an IPv4 CIDR (network/prefix)'),
    ("10.222.1.0/33", 'spec.podCIDR "10.222.1.0/33" is not an IPv4 CIDR (network/prefix)'),
    ("10.222.1.5/24", ('spec.podCIDR "10.222.1.5/24" is not a network address (host bits set; did you mean '
                      '10.222.1.0/24?)')),
    ("10.222.1.0/31", 'spec.podCIDR "10.222.1.0/31" is too small (at most /30: a gateway and one Pod)'),
])
def test_problem_bad_node_pod_cidr(tmp_path: Path, cidr: str, message: str) -> None:
    (tmp_path / "n.yaml").write_text(f"apiVersion: v1\nkind: Node\nmetadata: {{name: n1}}\nspec: {{podCIDR: {cidr}}}\n")
    assert one_problem(tmp_path) == f"{tmp_path}/n.yaml (document 1): Node n1: {message}"


def test_problem_bad_node_ip(tmp_path: Path) -> None:
    (tmp_path / "n.yaml").write_text(
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {addresses: [{type: InternalIP, address: x}]}\n")
    assert one_problem(tmp_path) == (
        f'{tmp_path}/n.yaml (document 1): Node n1: status.addresses[0].address (InternalIP) "x" is not an IPv4 '
        'address')


@pytest.mark.parametrize("block, message", [
    ("{cidr: 10.0.0.0/33}", ('spec.ingress[0].from[0].ipBlock.cidr "10.0.0.0/33" is not an IPv4 CIDR '
                            '(network/prefix)')),
    ("{cidr: 10.0.0.0/8, except: [10.1.0.0/160]}", ('spec.ingress[0].from[0].ipBlock.except[0] "10.1.0.0/160" is '
                                                   'not an IPv4 CIDR (network/prefix)')),
    ("{cidr: 10.0.0.0/8, except: [192.168.0.0/16]}", ('spec.ingress[0].from[0].ipBlock.except[0] "192.168.0.0/16" '
                                                     'is not inside cidr "10.0.0.0/8"')),
    ("{cidr: 10.0.0.0/8, except: [10.0.0.0/8]}", ('spec.ingress[0].from[0].ipBlock.except[0] "10.0.0.0/8" is not '
                                                 'inside cidr "10.0.0.0/8"')),
    ("{}", "spec.ingress[0].from[0].ipBlock.cidr is required"),
])
def test_problem_bad_ip_block(tmp_path: Path, block: str, message: str) -> None:
    (tmp_path / "np.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\n"
        f"spec:\n  ingress:\n  - from: [{{ipBlock: {block}}}]\n")
    assert one_problem(tmp_path) == f"{tmp_path}/np.yaml (document 1): NetworkPolicy default/np: {message}"


def test_problem_bad_service_cidr(tmp_path: Path) -> None:
    write(tmp_path, antrea_agent_conf="serviceCIDR: 10.96.0.0/120\n")
    assert one_problem(tmp_path) == (
        f'{tmp_path}/antrea-agent.conf: serviceCIDR "10.96.0.0/120" is not an IPv4 CIDR (network/prefix)')


def test_problem_bad_conf_values(tmp_path: Path) -> None:
    write(tmp_path, antrea_agent_conf="tunnelType: ipip\nfeatureGates: {Traceflow: yes please}\n")
    f = f"{tmp_path}/antrea-agent.conf"
    assert problems_of(tmp_path) == [
        f'{f}: featureGates.Traceflow must be true or false, got a string "yes please"',
        f'{f}: tunnelType "ipip" is not one of geneve, vxlan, gre, stt',
    ]


def test_problem_bad_mac(tmp_path: Path) -> None:
    write(tmp_path, ni_yaml="""
        apiVersion: pyantrea.io/v1alpha1
        kind: NodeInterfaces
        metadata: {name: worker1}
        spec:
          pods:
          - {name: frontend, mac: "be:2c:bf:e4:ec"}
        """)
    assert one_problem(tmp_path) == (
        f'{tmp_path}/ni.yaml (document 1): NodeInterfaces worker1: spec.pods[0].mac "be:2c:bf:e4:ec" is not a MAC '
        'address (xx:xx:xx:xx:xx:xx)')


def test_problem_bad_selector_operator(tmp_path: Path) -> None:
    write(tmp_path, np_yaml="""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: np}
        spec:
          podSelector:
            matchExpressions: [{key: a, operator: Equals, values: [b]}]
        """)
    assert one_problem(tmp_path) == (
        f'{tmp_path}/np.yaml (document 1): NetworkPolicy default/np: spec.podSelector.matchExpressions[0].operator '
        '"Equals" is not one of In, NotIn, Exists, DoesNotExist')


def test_problem_selector_values(tmp_path: Path) -> None:
    write(tmp_path, np_yaml="""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: np}
        spec:
          podSelector:
            matchExpressions: [{key: a, operator: In}, {key: b, operator: Exists, values: [x]}]
        """)
    f = f"{tmp_path}/np.yaml (document 1): NetworkPolicy default/np"
    assert problems_of(tmp_path) == [
        f"{f}: spec.podSelector.matchExpressions[0].values must not be empty for operator In",
        f"{f}: spec.podSelector.matchExpressions[1].values must be empty for operator Exists",
    ]


def test_problem_duplicate_object(tmp_path: Path) -> None:
    write(tmp_path,
          a_yaml=POD,
          b_yaml="apiVersion: v1\nkind: Service\nmetadata: {name: frontend}\nspec: {ports: [{port: 80}]}\n---\n"
                 + textwrap.dedent(POD).lstrip())
    assert one_problem(tmp_path) == (
        f"{tmp_path}/b.yaml (document 2): Pod default/frontend: duplicate Pod: already defined in "
        f"{tmp_path}/a.yaml (document 1)")


def test_same_name_in_other_namespace_or_kind_is_no_duplicate(tmp_path: Path) -> None:
    write(tmp_path, a_yaml=POD + "---\n" + POD.replace("{name: frontend}", "{name: frontend, namespace: x}"))
    assert len(load_folder(tmp_path).pods) == 2


def test_problem_end_port_needs_numeric_port(tmp_path: Path) -> None:
    write(tmp_path, np_yaml="""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: np}
        spec:
          egress:
          - ports: [{port: http, endPort: 90}]
          - ports: [{endPort: 90}]
          - ports: [{port: 100, endPort: 90}]
        """)
    f = f"{tmp_path}/np.yaml (document 1): NetworkPolicy default/np"
    assert problems_of(tmp_path) == [
        f"{f}: spec.egress[0].ports[0].endPort 90 requires a numeric port",
        f"{f}: spec.egress[1].ports[0].endPort 90 requires a numeric port",
        f"{f}: spec.egress[2].ports[0].endPort 90 is less than port 100",
    ]


@pytest.mark.parametrize("spec, message", [
    ("{ports: [{port: 80}], type: LoadBalancer}", 'spec.type "LoadBalancer" is not one of ClusterIP, NodePort'),
    ("{ports: [{port: 80}], clusterIP: None}", 'spec.clusterIP "None": headless Services are not supported'),
    ("{ports: [{port: 80}], clusterIP: 10.96.0.256}", 'spec.clusterIP "10.96.0.256" is not an IPv4 address'),
    ("{ports: [{port: 80, nodePort: 30001}]}", "spec.ports[0].nodePort may only be set when spec.type is NodePort"),
    ("{type: NodePort, ports: [{port: 80, nodePort: 80}]}", "spec.ports[0].nodePort 80 is out of range (30000-32767)"),
    ("{ports: []}", "spec.ports must list at least one port"),
    ("{ports: [{port: 80, name: a}, {port: 81}]}", ("spec.ports[1].name is required when a Service has more than one "
                                                   "port")),
    ("{ports: [{port: 80, name: a}, {port: 81, name: a}]}", 'spec.ports[1].name "a" is used twice'),
    ("{ports: [{port: 80, targetPort: Http_1}]}", ('spec.ports[0].targetPort "Http_1" is not a valid port name '
                                                  "(at most 15 lowercase letters, digits and '-', with at least one "
                                                  "letter)")),
    ("{ports: [{port: 80, protocol: tcp}]}", 'spec.ports[0].protocol "tcp" is not one of TCP, UDP, SCTP'),
])
def test_problem_service(tmp_path: Path, spec: str, message: str) -> None:
    (tmp_path / "s.yaml").write_text(f"apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec: {spec}\n")
    assert one_problem(tmp_path) == f"{tmp_path}/s.yaml (document 1): Service default/s: {message}"


@pytest.mark.parametrize("pin, message", [
    ("{name: p, ofport: 0}", "spec.pods[0].ofport 0 is out of range (1-65279)"),
    ("{name: p, ofport: x}", 'spec.pods[0].ofport must be an integer, got a string "x"'),
    ("{name: p, interface: a-very-long-interface}", ('spec.pods[0].interface "a-very-long-interface" is not a valid '
                                                    "interface name (1-15 characters, no '/' or spaces)")),
    ("{interface: p-1}", "spec.pods[0].name is required"),
    ("{name: p, ifname: x}", ("spec.pods[0].ifname is not a pod pin field (namespace, name, interface, ofport, mac, "
                             "containerID)")),
])
def test_problem_node_interfaces(tmp_path: Path, pin: str, message: str) -> None:
    (tmp_path / "ni.yaml").write_text(
        f"apiVersion: pyantrea.io/v1alpha1\nkind: NodeInterfaces\nmetadata: {{name: w}}\nspec: {{pods: [{pin}]}}\n")
    assert one_problem(tmp_path) == f"{tmp_path}/ni.yaml (document 1): NodeInterfaces w: {message}"


def test_problem_misspelt_policy_field(tmp_path: Path) -> None:
    write(tmp_path, np_yaml="""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: np}
        spec:
          ingres: [{}]
        """)
    assert one_problem(tmp_path) == (
        f"{tmp_path}/np.yaml (document 1): NetworkPolicy default/np: spec.ingres is not a NetworkPolicy field "
        "(podSelector, policyTypes, ingress, egress)")


def test_problem_in_a_list_item_names_the_item(tmp_path: Path) -> None:
    write(tmp_path, l_yaml="""
        apiVersion: v1
        kind: List
        items:
        - {apiVersion: v1, kind: Pod, metadata: {name: a}}
        - {apiVersion: v1, kind: Pod, metadata: {name: b}, spec: {hostNetwork: "yes"}}
        """)
    assert one_problem(tmp_path) == (
        f'{tmp_path}/l.yaml (document 1, item 2): Pod default/b: spec.hostNetwork must be true or false, got a '
        'string "yes"')


def test_all_problems_of_a_folder_are_listed_and_nothing_is_returned(tmp_path: Path) -> None:
    write(tmp_path,
          a_yaml="""
          apiVersion: v1
          kind: Pod
          metadata: {name: p1}
          status: {podIP: nope}
          ---
          apiVersion: v1
          kind: Node
          metadata: {name: n1}
          spec: {podCIDR: 10.0.0.0/99}
          ---
          just a string
          """,
          b_yaml="""
          apiVersion: v1
          kind: Namespace
          metadata: {name: ok}
          ---
          kind: [
          """,
          antrea_agent_conf="serviceCIDR: x\n")
    ps = problems_of(tmp_path)
    a, b = f"{tmp_path}/a.yaml", f"{tmp_path}/b.yaml"
    assert len(ps) == 5, ps
    assert ps[0] == f'{a} (document 1): Pod default/p1: status.podIP "nope" is not an IPv4 address'
    assert ps[1] == f'{a} (document 2): Node n1: spec.podCIDR "10.0.0.0/99" is not an IPv4 CIDR (network/prefix)'
    assert ps[2] == f"{a} (document 3): document is not a mapping (got a string)"
    assert ps[3].startswith(f"{b} (document 2): YAML syntax error at line ")
    assert ps[4] == f'{tmp_path}/antrea-agent.conf: serviceCIDR "x" is not an IPv4 CIDR (network/prefix)'
    # the exception's message is every problem, one per line
    with pytest.raises(ManifestError) as e:
        load_folder(tmp_path)
    assert str(e.value) == "\n".join(ps)
