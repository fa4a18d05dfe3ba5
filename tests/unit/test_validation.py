"""pyantrea.k8s.loader: the in-memory entry points (load_text, load_docs, parse_agent_conf) and the
checks kube-apiserver makes (names, namespaces, label keys and values, apiVersions of modelled kinds)."""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Any

import pytest

from pyantrea.apis.k8s import AgentConfig, LabelSelectorRequirement, Source
from pyantrea.errors import ManifestError
from pyantrea.k8s.loader import (
    RawCluster,
    label_key_problem,
    label_value_problem,
    load_docs,
    load_folder,
    load_text,
    name_problem,
    parse_agent_conf,
)

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"

SUBDOMAIN = ("must be a lowercase RFC 1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending "
             "with a letter or digit)")
LABEL = "must be a lowercase RFC 1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)"
DNS1035 = ("must be a lowercase RFC 1035 label (lowercase letters, digits and '-', starting with a letter and ending "
           "with a letter or digit)")
KEY = ("must be a label key: an optional DNS subdomain prefix and '/', then a name of at most 63 letters, digits, "
       "'-', '_' and '.', starting and ending with a letter or digit")
VALUE = ("must be a label value: at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or "
         "digit (or empty)")


def problems(text: str, name: str = "policy.yaml") -> list[str]:
    with pytest.raises(ManifestError) as e:
        load_text(text, name)
    return e.value.problems


def one(text: str, name: str = "policy.yaml") -> str:
    ps = problems(text, name)
    assert len(ps) == 1, ps
    return ps[0]


# ------------------------------------------------------------------------- in-memory entry points


POLICY = """
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: 99999}]}]
"""


def test_load_text_names_the_text_and_the_document() -> None:
    assert one(POLICY) == 'policy.yaml (document 2): NetworkPolicy default/x: spec.ingress[0].ports[0].port 99999 is ' \
        'out of range (1-65535)'


def test_load_text_reads_as_a_file_would(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(POLICY)
    with pytest.raises(ManifestError) as from_file:
        load_folder(tmp_path)
    assert problems(POLICY, str(tmp_path / "a.yaml")) == from_file.value.problems
    good = POLICY.replace("99999", "80")
    (tmp_path / "a.yaml").write_text(good)
    assert load_text(good, str(tmp_path / "a.yaml")) == load_folder(tmp_path)
    (ns,) = load_text(good, "p.yaml").namespaces
    assert ns.source == Source("p.yaml", 1)


def test_load_text_touches_no_file_system(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError(f"file system touched: {a}")

    for mod, attr in ((builtins, "open"), (os, "listdir"), (os, "stat"), (os.path, "exists"), (os.path, "isdir")):
        monkeypatch.setattr(mod, attr, refuse)
    raw = load_text(POLICY.replace("99999", "80"), "p.yaml", conf_text="tunnelType: vxlan\n")
    assert [p.name for p in raw.policies] == ["x"] and raw.config.tunnel_type == "vxlan"


def test_load_text_yaml_syntax_error() -> None:
    p = one("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [\n", "in.yaml")
    assert p.startswith("in.yaml (document 2): YAML syntax error at line 6, column 1: ")


def test_load_text_with_an_agent_conf() -> None:
    raw = load_text("", "empty.yaml", conf_text="featureGates: {AntreaProxy: true}\nbogus: 1\n")
    assert dict(raw.config.feature_gates)["AntreaProxy"] is True
    assert raw.config_source == "antrea-agent.conf"
    assert raw.warnings == ('antrea-agent.conf: ignored unknown key "bogus"',)
    with pytest.raises(ManifestError) as e:
        load_text("", "empty.yaml", conf_text="serviceCIDR: x\n")
    assert e.value.problems == ['antrea-agent.conf: serviceCIDR "x" is not an IPv4 CIDR (network/prefix)']
    assert load_text("", "empty.yaml") == RawCluster()


def test_load_docs_uses_each_where_label() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "web"}}
    raw = load_docs([(pod, "pods.yaml (document 3)"), (None, "pods.yaml (document 4)"),
                     ({**pod, "metadata": {"name": "b"}}, "pods.yaml (document 5, item 2)"),
                     ({**pod, "metadata": {"name": "c"}}, "request")])
    assert [(p.key, p.source) for p in raw.pods] == [
        ("web/a", Source("pods.yaml", 3)), ("default/b", Source("pods.yaml", 5)), ("default/c", Source("request", 0))]
    with pytest.raises(ManifestError) as e:
        load_docs([({**pod, "spec": {"hostNetwork": "yes"}}, "apply (document 2)"), (pod, "apply (document 3)"),
                   ([1], "watch event")])
    assert e.value.problems == [
        'apply (document 2): Pod web/a: spec.hostNetwork must be true or false, got a string "yes"',
        "apply (document 3): Pod web/a: duplicate Pod: already defined in apply (document 2)",
        "watch event: document is not a mapping (got a list)",
    ]


def test_load_docs_reads_a_list_item_by_item() -> None:
    lst = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ok"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "Not_OK"}}]}
    with pytest.raises(ManifestError) as e:
        load_docs([(lst, "l.yaml (document 1)")])
    assert e.value.problems == [f'l.yaml (document 1, item 2): Namespace Not_OK: metadata.name "Not_OK": {LABEL}']
    with pytest.raises(ManifestError) as e:
        load_docs([(lst, "body")])
    assert e.value.problems == [f'body (item 2): Namespace Not_OK: metadata.name "Not_OK": {LABEL}']


def test_parse_agent_conf() -> None:
    assert parse_agent_conf("", "c.conf") == AgentConfig()
    cfg = parse_agent_conf("tunnelType: vxlan\ndefaultMTU: 1400\nunknown: 1\n", "c.conf")
    assert cfg.tunnel_type == "vxlan" and cfg.default_mtu == 1400
    with pytest.raises(ManifestError) as e:
        parse_agent_conf("tunnelType: ipip\n[\n", "c.conf")
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith("c.conf: YAML syntax error at line 3")
    with pytest.raises(ManifestError) as e:
        parse_agent_conf("tunnelType: ipip\ndefaultMTU: big\n", "c.conf")
    assert e.value.problems == [
        'c.conf: defaultMTU must be an integer, got a string "big"',
        'c.conf: tunnelType "ipip" is not one of geneve, vxlan, gre, stt',
    ]


def test_load_folder_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_bytes(b"apiVersion: v1\nkind: Namespace\nmetadata: {name: caf\xe9}\n")
    (tmp_path / "antrea-agent.conf").write_bytes(b"\xff")
    with pytest.raises(ManifestError) as e:
        load_folder(tmp_path)
    assert e.value.problems == [f"{tmp_path}/a.yaml: not UTF-8 text (byte 0xe9 at offset 51)",
                                f"{tmp_path}/antrea-agent.conf: not UTF-8 text (byte 0xff at offset 0)"]


# ------------------------------------------------------------------------------------ object names


def doc(kind: str, name: str, api: str = "v1", extra: str = "") -> str:
    return f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name!r}}}\n{extra}"


def test_network_policy_name_is_a_subdomain() -> None:
    assert one(doc("NetworkPolicy", "Bad_Name!", "networking.k8s.io/v1")) == (
        f'policy.yaml (document 1): NetworkPolicy default/Bad_Name!: metadata.name "Bad_Name!": {SUBDOMAIN}')


@pytest.mark.parametrize("kind, api", [("Pod", "v1"), ("Node", "v1"), ("Endpoints", "v1"),
                                       ("NetworkPolicy", "networking.k8s.io/v1"),
                                       ("NodeInterfaces", "pyantrea.io/v1alpha1")])
def test_subdomain_names(kind: str, api: str) -> None:
    ok = "1" + ".a-b" * 63  # 253 characters: dots, '-' and a leading digit allowed
    assert len(ok) == 253
    load_text(doc(kind, ok, api) + "---\n" + doc(kind, "1abc", api), "x.yaml")
    who = f"{kind} default/" if kind in ("Pod", "Endpoints", "NetworkPolicy") else f"{kind} "
    for bad in ("UPPER", "-a", "a-", "a..b", "a_b", ".a", "a b"):
        assert one(doc(kind, bad, api), "x.yaml") == f'x.yaml (document 1): {who}{bad}: metadata.name "{bad}": {SUBDOMAIN}'
    long = "a" * 254
    assert one(doc(kind, long, api), "x.yaml") == (
        f'x.yaml (document 1): {who}{long}: metadata.name "{long}": must be a lowercase RFC 1123 subdomain of at '
        "most 253 characters (got 254)")
    assert one(doc(kind, "A" * 254, api), "x.yaml").endswith(
        "must be a lowercase RFC 1123 subdomain of at most 253 characters (lowercase letters, digits, '-' and '.', "
        "starting and ending with a letter or digit; got 254)")


def test_namespace_name_is_a_label() -> None:
    load_text(doc("Namespace", "1-a" + "b" * 60), "ns.yaml")
    assert one(doc("Namespace", "a.b"), "ns.yaml") == f'ns.yaml (document 1): Namespace a.b: metadata.name "a.b": {LABEL}'
    assert one(doc("Namespace", "a" * 64), "ns.yaml") == (
        f'ns.yaml (document 1): Namespace {"a" * 64}: metadata.name "{"a" * 64}": must be a lowercase RFC 1123 '
        "label of at most 63 characters (got 64)")


def test_service_name_is_an_rfc1035_label() -> None:
    svc = "spec: {ports: [{port: 80}]}\n"
    load_text(doc("Service", "a-1", extra=svc), "s.yaml")
    for bad in ("1abc", "a.b", "Web", "a-"):
        assert one(doc("Service", bad, extra=svc), "s.yaml") == (
            f's.yaml (document 1): Service default/{bad}: metadata.name "{bad}": {DNS1035}')
    assert one(doc("Service", "a" * 64, extra=svc), "s.yaml").endswith(
        "must be a lowercase RFC 1035 label of at most 63 characters (got 64)")


def test_metadata_namespace_is_a_label() -> None:
    text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: Kube_System}\n"
    assert one(text) == f'policy.yaml (document 1): Pod Kube_System/p: metadata.namespace "Kube_System": {LABEL}'
    text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p_1, namespace: a.b}\n"
    assert problems(text) == [f'policy.yaml (document 1): Pod a.b/p_1: metadata.name "p_1": {SUBDOMAIN}',
                              f'policy.yaml (document 1): Pod a.b/p_1: metadata.namespace "a.b": {LABEL}']


def test_name_problem_rules() -> None:
    assert name_problem("a" * 63, "RFC 1123 label") is None
    assert name_problem("abc\n", "RFC 1123 label") == f"{LABEL}"  # no final newline sneaks through
    assert name_problem("x", "RFC 1035 label") is None and name_problem("9", "RFC 1035 label") == DNS1035


# ------------------------------------------------------------------------------------------ labels


@pytest.mark.parametrize("key, message", [
    ("app kind", KEY),
    ("-app", KEY),
    ("app_", KEY),
    ("a/b/c", f"{KEY} (it has more than one '/')"),
    ("/app", f"{KEY} (the prefix before '/' is empty)"),
    ("example.com/", f"{KEY} (the name after '/' is empty)"),
    ("a" * 64, f"{KEY} (the name has 64)"),
    ("Example.com/app", f'prefix "Example.com" {SUBDOMAIN}'),
    ("exa_mple.com/app", f'prefix "exa_mple.com" {SUBDOMAIN}'),
    (("a" * 254) + "/app", f'prefix "{"a" * 254}" must be a lowercase RFC 1123 subdomain of at most 253 characters '
                           "(got 254)"),
])
def test_label_keys(key: str, message: str) -> None:
    assert label_key_problem(key) == message
    text = f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {{{key!r}: v}}\n"
    assert one(text) == f"policy.yaml (document 1): Pod default/p: metadata.labels key {key!r}: {message}".replace(
        f"key {key!r}", f'key "{key}"')


@pytest.mark.parametrize("key", ["app", "app.kubernetes.io/name", "k8s-app", "A_b.C-9", "a" * 63,
                                 "kubernetes.io/metadata.name", ("a" * 253) + "/" + ("b" * 63)])
def test_good_label_keys(key: str) -> None:
    assert label_key_problem(key) is None


@pytest.mark.parametrize("value, message", [
    ("a b", VALUE),
    ("-a", VALUE),
    ("a.", VALUE),
    ("a/b", VALUE),
    ("a" * 64, f"{VALUE} (got 64 characters)"),
])
def test_label_values(value: str, message: str) -> None:
    assert label_value_problem(value) == message
    text = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n  labels: {{app: {value!r}}}\n"
    assert one(text) == f'policy.yaml (document 1): Namespace n: metadata.labels.app "{value}": {message}'


@pytest.mark.parametrize("value", ["", "a", "A_b.C-9", "a" * 63, "1"])
def test_good_label_values(value: str) -> None:
    assert label_value_problem(value) is None


def test_node_and_service_selector_labels() -> None:
    text = """
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {"kubernetes.io/hostname": "n1", "Bad Key": x}}
---
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {ports: [{port: 80}], selector: {app: "web server"}}
"""
    assert problems(text) == [
        f'policy.yaml (document 1): Node n1: metadata.labels key "Bad Key": {KEY}',
        f'policy.yaml (document 2): Service default/s: spec.selector.app "web server": {VALUE}',
    ]


def test_selector_labels_and_expressions() -> None:
    text = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x}
spec:
  podSelector:
    matchLabels: {"app kind": web, tier: "front end"}
    matchExpressions:
    - {key: "a//b", operator: In, values: [ok, "x y"]}
    - {key: env, operator: NotIn, values: [""]}
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: "Team/x", operator: Exists}]}
"""
    w = "policy.yaml (document 1): NetworkPolicy default/x: "
    assert problems(text) == [
        f'{w}spec.podSelector.matchLabels key "app kind": {KEY}',
        f'{w}spec.podSelector.matchLabels.tier "front end": {VALUE}',
        f"""{w}spec.podSelector.matchExpressions[0].key "a//b": {KEY} (it has more than one '/')""",
        f'{w}spec.podSelector.matchExpressions[0].values[1] "x y": {VALUE}',
        f'{w}spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].key "Team/x": prefix "Team" {SUBDOMAIN}',
    ]


def test_valid_selectors_are_kept() -> None:
    text = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x}
spec:
  podSelector:
    matchLabels: {"app.kubernetes.io/name": web}
    matchExpressions: [{key: env, operator: NotIn, values: ["", prod]}]
"""
    (p,) = load_text(text, "p.yaml").policies
    assert p.pod_selector.match_labels == (("app.kubernetes.io/name", "web"),)
    assert p.pod_selector.match_expressions == (LabelSelectorRequirement("env", "NotIn", ("", "prod")),)


# ------------------------------------------------------------------------------------- apiVersions


@pytest.mark.parametrize("kind, api, who, accepted", [
    ("NetworkPolicy", "networking.k8s.io/v2", "NetworkPolicy default/x", "networking.k8s.io/v1"),
    ("NetworkPolicy", "crd.antrea.io/v1alpha1", "NetworkPolicy default/x", "networking.k8s.io/v1"),
    ("Pod", "v2", "Pod default/x", "v1"),
    ("Namespace", "apps/v1", "Namespace x", "v1"),
    ("NodeInterfaces", "pyantrea.io/v1", "NodeInterfaces x", "pyantrea.io/v1alpha1"),
])
def test_modelled_kind_of_an_unknown_api_version_is_an_error(kind: str, api: str, who: str, accepted: str) -> None:
    assert one(doc(kind, "x", api)) == (
        f'policy.yaml (document 1): {who}: apiVersion "{api}" is not supported for {kind} (accepted: {accepted})')


def test_unknown_api_version_without_a_name_and_in_a_namespace() -> None:
    assert one("apiVersion: networking.k8s.io/v2\nkind: NetworkPolicy\n") == (
        'policy.yaml (document 1): apiVersion "networking.k8s.io/v2" is not supported for NetworkPolicy '
        "(accepted: networking.k8s.io/v1)")
    assert one("apiVersion: v2\nkind: Service\nmetadata: {name: s, namespace: web}\n") == (
        'policy.yaml (document 1): Service web/s: apiVersion "v2" is not supported for Service (accepted: v1)')


def test_kinds_not_modelled_stay_a_warning() -> None:
    raw = load_text(doc("ConfigMap", "c") + "---\n" + doc("Deployment", "d", "apps/v1"), "x.yaml")
    assert raw.warnings == (
        "x.yaml (document 1): skipped ConfigMap (apiVersion v1): pyantrea does not read this kind",
        "x.yaml (document 2): skipped Deployment (apiVersion apps/v1): pyantrea does not read this kind",
    )


def test_seed_has_no_new_problem() -> None:
    raw = load_folder(SEED)
    assert raw.warnings == ()
    texts = sorted(SEED.glob("*.yaml"))
    for f in texts:
        load_text(f.read_text(), str(f))
