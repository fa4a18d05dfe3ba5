"""Reading a cluster folder (design §3) into typed values, validating as it goes.

`load_folder(DIR)` reads every `*.yaml` / `*.yml` file directly in DIR (sorted by file name,
multi-document) and the optional `antrea-agent.conf`. It returns a `RawCluster`: what the folder
says, nothing filled in (`pyantrea.k8s.complete` does that). Every problem found is collected and
reported at once in one `ManifestError`; each problem line names the file, the document number,
the kind and the object, e.g.

    examples/x/pods.yaml (document 3): Pod default/frontend: status.podIP "10.222.1.300" is not an IPv4 address

In-memory entry points touch no file system and give the same messages: `load_text(text, name)`
(a multi-document YAML string named `name`, as a file would be), `load_docs([(doc, where), ...])`
(documents already parsed, each with its `where` label, e.g. "policy.yaml (document 2)") and
`parse_agent_conf(text, name)`. Names, namespaces and labels are checked as kube-apiserver checks
them (DNS-1123 / DNS-1035 names, qualified label keys, label values).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from pyantrea.apis.crd import AntreaPolicy, ClusterGroup, Tier
from pyantrea.apis.k8s import (
    AgentConfig,
    ContainerPort,
    EndpointAddress,
    EndpointPort,
    Endpoints,
    EndpointSubset,
    IPBlock,
    Labels,
    LabelSelector,
    LabelSelectorRequirement,
    Namespace,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    NetworkPolicyRule,
    Node,
    NodeInterfaces,
    Pod,
    PodPin,
    PortPin,
    Service,
    ServicePort,
    Source,
)
from pyantrea.errors import ManifestError

__all__ = [
    "AGENT_CONF",
    "PYANTREA_API_VERSION",
    "RawCluster",
    "label_key_problem",
    "label_value_problem",
    "load_docs",
    "load_files",
    "load_folder",
    "load_text",
    "manifest_files",
    "name_problem",
    "not_utf8",
    "parse_agent_conf",
]

AGENT_CONF = "antrea-agent.conf"
PYANTREA_API_VERSION = "pyantrea.io/v1alpha1"
ANTREA_API_VERSION = "crd.antrea.io/v1beta1"

# (apiVersion, kind) pairs the loader reads; anything else is skipped with a warning.
_KINDS: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "Namespace",
    ("v1", "Node"): "Node",
    ("v1", "Pod"): "Pod",
    ("v1", "Service"): "Service",
    ("v1", "Endpoints"): "Endpoints",
    ("networking.k8s.io/v1", "NetworkPolicy"): "NetworkPolicy",
    (PYANTREA_API_VERSION, "NodeInterfaces"): "NodeInterfaces",
    # Antrea-native policies (the AntreaPolicy gate): Antrea's NetworkPolicy is AntreaNetworkPolicy inside
    (ANTREA_API_VERSION, "ClusterNetworkPolicy"): "ClusterNetworkPolicy",
    (ANTREA_API_VERSION, "NetworkPolicy"): "AntreaNetworkPolicy",
    (ANTREA_API_VERSION, "Tier"): "Tier",
    (ANTREA_API_VERSION, "ClusterGroup"): "ClusterGroup",
    (ANTREA_API_VERSION, "Group"): "Group",
}
_NAMESPACED = {"Pod", "Service", "Endpoints", "NetworkPolicy", "AntreaNetworkPolicy", "Group"}
ANTREA_KINDS = frozenset({"ClusterNetworkPolicy", "AntreaNetworkPolicy", "Tier", "ClusterGroup", "Group"})
# the apiVersions each modelled kind is read in: another apiVersion of one of these kinds is an
# error (design §3), a kind not listed here is skipped with a warning
_API_VERSIONS: dict[str, tuple[str, ...]] = {}
for (_api, _kind) in _KINDS:
    # Antrea's kinds of other versions (v1alpha1 ClusterNetworkPolicy of Antrea 1.x) are skipped with a
    # warning, as before the AntreaPolicy gate existed (docs/decisions.md)
    if _api != ANTREA_API_VERSION:
        _API_VERSIONS[_kind] = _API_VERSIONS.get(_kind, ()) + (_api,)

# What kube-apiserver requires of each kind's metadata.name (apimachinery's validation): the name
# rule and its maximum length.
_DNS1123_LABEL = "RFC 1123 label"
_DNS1123_SUBDOMAIN = "RFC 1123 subdomain"
_DNS1035_LABEL = "RFC 1035 label"
_NAME_RULES: dict[str, str] = {
    "Namespace": _DNS1123_LABEL,
    "Service": _DNS1035_LABEL,
    "Node": _DNS1123_SUBDOMAIN,
    "Pod": _DNS1123_SUBDOMAIN,
    "Endpoints": _DNS1123_SUBDOMAIN,
    "NetworkPolicy": _DNS1123_SUBDOMAIN,
    "NodeInterfaces": _DNS1123_SUBDOMAIN,  # it names a Node
    "ClusterNetworkPolicy": _DNS1123_SUBDOMAIN,
    "AntreaNetworkPolicy": _DNS1123_SUBDOMAIN,
    "Tier": _DNS1123_SUBDOMAIN,
    "ClusterGroup": _DNS1123_SUBDOMAIN,
    "Group": _DNS1123_SUBDOMAIN,
}

PROTOCOLS = ("TCP", "UDP", "SCTP")
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
SERVICE_TYPES = ("ClusterIP", "NodePort")
SESSION_AFFINITIES = ("None", "ClientIP")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
NODE_PORT_RANGE = (30000, 32767)
MAX_OFPORT = 0xFF00 - 1  # OFPP_MAX is 0xff00 (OpenFlow 1.0); ports above are reserved
IFNAMSIZ = 16  # Linux interface names are at most 15 characters

_AGENT_CONF_KEYS = {
    "featureGates",
    "ovsBridge",
    "hostGateway",
    "tunnelType",
    "trafficEncapMode",
    "serviceCIDR",
    "defaultMTU",
    "pipelineProfile",
    "antreaProxy",
}
TUNNEL_TYPES = ("geneve", "vxlan", "gre", "stt")
ENCAP_MODES = ("encap", "noEncap", "hybrid", "networkPolicyOnly")
PIPELINE_PROFILES = ("ARTICLE", "RELEASE")

# libyaml's loader when PyYAML has it (about 10x faster); same documents, same error marks.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
# IANA_SVC_NAME (Kubernetes validation.IsValidPortName): <= 15 chars, lowercase alphanumerics and
# '-', at least one letter, no leading/trailing '-' and no '--'.
_PORT_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
# apimachinery's validation regexes (always used with fullmatch: '$' would accept a final newline)
_DNS1123_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035_LABEL_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_NAME_FORMS: dict[str, tuple[re.Pattern[str], int, str]] = {
    _DNS1123_LABEL: (_DNS1123_LABEL_RE, 63,
                     "lowercase letters, digits and '-', starting and ending with a letter or digit"),
    _DNS1123_SUBDOMAIN: (_DNS1123_SUBDOMAIN_RE, 253,
                         "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"),
    _DNS1035_LABEL: (_DNS1035_LABEL_RE, 63,
                     "lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"),
}
LABEL_KEY_RULE = ("must be a label key: an optional DNS subdomain prefix and '/', then a name of at most 63 "
                  "letters, digits, '-', '_' and '.', starting and ending with a letter or digit")
LABEL_VALUE_RULE = ("must be a label value: at most 63 letters, digits, '-', '_' and '.', starting and ending "
                    "with a letter or digit (or empty)")


@dataclass(frozen=True)
class RawCluster:
    """A cluster folder as written: every object with its `Source`, nothing filled in.

    Tuples are in the order the objects were read (file name order, then document order).
    """

    namespaces: tuple[Namespace, ...] = ()
    nodes: tuple[Node, ...] = ()
    pods: tuple[Pod, ...] = ()
    services: tuple[Service, ...] = ()
    endpoints: tuple[Endpoints, ...] = ()
    policies: tuple[NetworkPolicy, ...] = ()
    node_interfaces: tuple[NodeInterfaces, ...] = ()
    config: AgentConfig = field(default_factory=AgentConfig)
    # Antrea-native policy objects (crd.antrea.io/v1beta1, the AntreaPolicy gate); user Tiers only
    tiers: tuple[Tier, ...] = ()
    groups: tuple[ClusterGroup, ...] = ()  # ClusterGroups (namespace None) and Groups
    antrea_policies: tuple[AntreaPolicy, ...] = ()  # ClusterNetworkPolicies and Antrea NetworkPolicies
    config_source: str = ""  # path of antrea-agent.conf, '' when the folder has none
    warnings: tuple[str, ...] = field(default=(), compare=False)


def quote(v: object) -> str:
    """A value as it appears in a problem line: strings in double quotes, others as YAML would print them."""
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    return str(v)


def _type_name(v: object) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if v is None:
        return "null"
    return f"a {type(v).__name__}"


class _Ctx:
    """Where problems about one object go: '<file> (document N): <Kind> <ns/name>: <message>'."""

    def __init__(self, where: str, what: str, problems: list[str]):
        self.where = where
        self.what = what
        self.problems = problems

    def err(self, msg: str) -> None:
        prefix = f"{self.where}: {self.what}: " if self.what else f"{self.where}: "
        self.problems.append(prefix + msg)

    # --- typed accessors: return a value of the right type (a default on error), never raise ---

    def mapping(self, v: Any, path: str) -> dict[str, Any]:
        if v is None:
            return {}
        if not isinstance(v, dict):
            self.err(f"{path} must be a mapping, got {_type_name(v)}")
            return {}
        return v

    def seq(self, v: Any, path: str) -> list[Any]:
        if v is None:
            return []
        if not isinstance(v, list):
            self.err(f"{path} must be a list, got {_type_name(v)}")
            return []
        return v

    def string(self, v: Any, path: str, required: bool = False) -> str | None:
        if v is None:
            if required:
                self.err(f"{path} is required")
            return None
        if not isinstance(v, str):
            self.err(f"{path} must be a string, got {_type_name(v)} {quote(v)}")
            return None
        if required and not v:
            self.err(f"{path} must not be empty")
            return None
        return v

    def integer(self, v: Any, path: str, lo: int | None = None, hi: int | None = None) -> int | None:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(f"{path} must be an integer, got {_type_name(v)} {quote(v)}")
            return None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.err(f"{path} {v} is out of range ({lo}-{hi})")
            return None
        return v

    def boolean(self, v: Any, path: str) -> bool | None:
        if v is None:
            return None
        if not isinstance(v, bool):
            self.err(f"{path} must be true or false, got {_type_name(v)} {quote(v)}")
            return None
        return v

    def choice(self, v: Any, path: str, choices: tuple[str, ...], default: str) -> str:
        s = self.string(v, path)
        if s is None:
            return default
        if s not in choices:
            self.err(f"{path} {quote(s)} is not one of {', '.join(choices)}")
            return default
        return s

    def ipv4(self, v: Any, path: str) -> str | None:
        s = self.string(v, path)
        if s is None:
            return None
        if not is_ipv4(s):
            self.err(f"{path} {quote(s)} is not an IPv4 address")
            return None
        return s

    def cidr(self, v: Any, path: str, required: bool = False) -> str | None:
        s = self.string(v, path, required=required)
        if s is None:
            return None
        problem = cidr_problem(s)
        if problem:
            self.err(f"{path} {quote(s)} {problem}")
            return None
        return s

    def mac(self, v: Any, path: str) -> str | None:
        s = self.string(v, path)
        if s is None:
            return None
        if not _MAC_RE.match(s):
            self.err(f"{path} {quote(s)} is not a MAC address (xx:xx:xx:xx:xx:xx)")
            return None
        return s.lower()

    def protocol(self, v: Any, path: str) -> str:
        return self.choice(v, path, PROTOCOLS, "TCP")

    def port_number(self, v: Any, path: str, required: bool = False) -> int | None:
        if v is None:
            if required:
                self.err(f"{path} is required")
            return None
        return self.integer(v, path, 1, 65535)

    def int_or_name(self, v: Any, path: str) -> int | str | None:
        """A port given as a number or as a named (IANA_SVC_NAME) port."""
        if v is None:
            return None
        if isinstance(v, str):
            if not is_port_name(v):
                self.err(
                    f"{path} {quote(v)} is not a valid port name "
                    "(at most 15 lowercase letters, digits and '-', with at least one letter)"
                )
                return None
            return v
        if isinstance(v, int) and not isinstance(v, bool):
            return self.port_number(v, path)
        self.err(f"{path} must be a port number or a port name, got {_type_name(v)} {quote(v)}")
        return None

    def port_name(self, v: Any, path: str) -> str | None:
        s = self.string(v, path)
        if s is not None and not is_port_name(s):
            self.err(
                f"{path} {quote(s)} is not a valid port name "
                "(at most 15 lowercase letters, digits and '-', with at least one letter)"
            )
            return None
        return s

    def labels(self, v: Any, path: str) -> Labels:
        d = self.mapping(v, path)
        good: dict[str, str] = {}
        for k, val in d.items():
            if not isinstance(k, str) or not k:
                self.err(f"{path} must map strings to strings, got key {quote(k)}")
            elif not isinstance(val, str):
                self.err(f"{path} must map strings to strings, {path}.{k} is {_type_name(val)} {quote(val)}")
            else:
                key_problem = label_key_problem(k)
                value_problem = label_value_problem(val)
                if key_problem is not None:
                    self.err(f"{path} key {quote(k)}: {key_problem}")
                if value_problem is not None:
                    self.err(f"{path}.{k} {quote(val)}: {value_problem}")
                if key_problem is None and value_problem is None:
                    good[k] = val
        return tuple(sorted(good.items()))

    def selector(self, v: Any, path: str) -> LabelSelector:
        d = self.mapping(v, path)
        for k in d:
            if k not in ("matchLabels", "matchExpressions"):
                self.err(f"{path}.{k} is not a label selector field (matchLabels, matchExpressions)")
        match_labels = self.labels(d.get("matchLabels"), f"{path}.matchLabels")
        reqs: list[LabelSelectorRequirement] = []
        for i, e in enumerate(self.seq(d.get("matchExpressions"), f"{path}.matchExpressions")):
            p = f"{path}.matchExpressions[{i}]"
            if not isinstance(e, dict):
                self.err(f"{p} must be a mapping, got {_type_name(e)}")
                continue
            key = self.string(e.get("key"), f"{p}.key", required=True)
            if key is not None and (key_problem := label_key_problem(key)) is not None:
                self.err(f"{p}.key {quote(key)}: {key_problem}")
            op = self.string(e.get("operator"), f"{p}.operator", required=True)
            values: list[str] = []
            for j, val in enumerate(self.seq(e.get("values"), f"{p}.values")):
                s = self.string(val, f"{p}.values[{j}]")
                if s is not None:
                    value_problem = label_value_problem(s)
                    if value_problem is not None:
                        self.err(f"{p}.values[{j}] {quote(s)}: {value_problem}")
                    values.append(s)
            if op is not None and op not in SELECTOR_OPERATORS:
                self.err(f"{p}.operator {quote(op)} is not one of {', '.join(SELECTOR_OPERATORS)}")
                continue
            if op in ("In", "NotIn") and not values:
                self.err(f"{p}.values must not be empty for operator {op}")
            if op in ("Exists", "DoesNotExist") and values:
                self.err(f"{p}.values must be empty for operator {op}")
            if key is not None and op is not None:
                reqs.append(LabelSelectorRequirement(key=key, operator=op, values=tuple(values)))
        return LabelSelector(match_labels=match_labels, match_expressions=tuple(reqs))


def is_ipv4(s: str) -> bool:
    try:
        ipaddress.IPv4Address(s)
    except ValueError:
        return False
    return True


def cidr_problem(s: str) -> str | None:
    """None if `s` is an IPv4 CIDR written as network/prefix; else what is wrong with it."""
    if "/" not in s:
        return "is not an IPv4 CIDR (network/prefix)"
    try:
        ipaddress.IPv4Network(s, strict=False)
    except ValueError:
        return "is not an IPv4 CIDR (network/prefix)"
    net = ipaddress.IPv4Network(s, strict=False)
    if str(net) != s:
        return f"is not a network address (host bits set; did you mean {net}?)"
    return None


def is_port_name(s: str) -> bool:
    return (
        0 < len(s) <= 15
        and bool(_PORT_NAME_RE.match(s))
        and "--" not in s
        and any(c.isalpha() for c in s)
    )


def name_problem(s: str, rule: str) -> str | None:
    """What is wrong with `s` as a name of the given rule ("RFC 1123 label", "RFC 1123 subdomain",
    "RFC 1035 label", as kube-apiserver checks them); None when it is a valid one."""
    regex, limit, chars = _NAME_FORMS[rule]
    bad, long = not regex.fullmatch(s), len(s) > limit
    if bad and long:
        return f"must be a lowercase {rule} of at most {limit} characters ({chars}; got {len(s)})"
    if bad:
        return f"must be a lowercase {rule} ({chars})"
    if long:
        return f"must be a lowercase {rule} of at most {limit} characters (got {len(s)})"
    return None


def label_key_problem(k: str) -> str | None:
    """What is wrong with `k` as a label key (apimachinery's IsQualifiedName), None when nothing."""
    parts = k.split("/")
    if len(parts) > 2:
        return f"{LABEL_KEY_RULE} (it has more than one '/')"
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            return f"{LABEL_KEY_RULE} (the prefix before '/' is empty)"
        p = name_problem(prefix, _DNS1123_SUBDOMAIN)
        if p is not None:
            return f"prefix {quote(prefix)} {p}"
    name = parts[-1]
    if not name:
        return f"{LABEL_KEY_RULE} (the name after '/' is empty)"
    if len(name) > 63:
        return f"{LABEL_KEY_RULE} (the name has {len(name)})"
    if not _QUALIFIED_NAME_RE.fullmatch(name):
        return LABEL_KEY_RULE
    return None


def label_value_problem(v: str) -> str | None:
    """What is wrong with `v` as a label value (apimachinery's IsValidLabelValue), None when nothing."""
    if len(v) > 63:
        return f"{LABEL_VALUE_RULE} (got {len(v)} characters)"
    if v and not _QUALIFIED_NAME_RE.fullmatch(v):
        return LABEL_VALUE_RULE
    return None


def not_utf8(data: bytes) -> str | None:
    """None if `data` is UTF-8 text, else e.g. 'not UTF-8 text (byte 0xff at offset 12)'."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})"
    return None


def object_id(kind: str, namespace: str | None, name: str) -> str:
    return f"{kind} {namespace}/{name}" if namespace is not None else f"{kind} {name}"


class _Loader:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.namespaces: list[Namespace] = []
        self.nodes: list[Node] = []
        self.pods: list[Pod] = []
        self.services: list[Service] = []
        self.endpoints: list[Endpoints] = []
        self.policies: list[NetworkPolicy] = []
        self.node_interfaces: list[NodeInterfaces] = []
        self.tiers: list[Tier] = []
        self.groups: list[ClusterGroup] = []
        self.antrea_policies: list[AntreaPolicy] = []
        self.seen: dict[tuple[str, str], str] = {}  # (kind, key) -> where first seen

    def result(self, config: AgentConfig, config_source: str, gate: bool = True) -> RawCluster:
        """What was read; raises ManifestError listing every problem when there is one.

        With `gate`, Antrea-native objects are errors unless the config has the AntreaPolicy gate on,
        and their cross-object checks run (the embedded API server does both itself)."""
        if gate:
            self._antrea_checks(config)
        if self.problems:
            raise ManifestError(self.problems)
        return RawCluster(
            namespaces=tuple(self.namespaces),
            nodes=tuple(self.nodes),
            pods=tuple(self.pods),
            services=tuple(self.services),
            endpoints=tuple(self.endpoints),
            policies=tuple(self.policies),
            node_interfaces=tuple(self.node_interfaces),
            config=config,
            config_source=config_source,
            warnings=tuple(self.warnings),
            tiers=tuple(self.tiers),
            groups=tuple(self.groups),
            antrea_policies=tuple(self.antrea_policies),
        )

    def _antrea_checks(self, config: AgentConfig) -> None:
        from pyantrea.k8s import antreacrd

        antrea = [(k, where) for k, where in self.seen.items() if k[0] in ANTREA_KINDS]
        if not antrea:
            return
        if not config.gate("AntreaPolicy"):
            for (kind, key), where in antrea:
                ns, _, name = key.rpartition("/")
                what = object_id(kind, ns if kind in _NAMESPACED else None, name)
                self.problems.append(f"{where}: {what}: {antreacrd.gate_problem(kind)}")
            return
        self.problems += antreacrd.cross_problems(self.tiers, self.antrea_policies, self.groups,
                                                  {k: w for k, w in antrea})

    # ------------------------------------------------------------------ files and documents

    def load_file(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            self.problems.append(f"{path}: cannot read: {e}")
            return
        problem = not_utf8(data)
        if problem is not None:
            self.problems.append(f"{path}: {problem}")
            return
        self.load_text(data.decode("utf-8"), path)

    def load_text(self, text: str, name: str) -> None:
        """Every document of the multi-document YAML `text`, named '`name` (document N)'."""
        self.load_docs(self._parse(text, name))

    def _parse(self, text: str, name: str) -> Iterable[tuple[Any, str]]:
        docnum = 0
        try:
            for doc in yaml.load_all(text, Loader=_SafeLoader):
                docnum += 1
                if doc is not None:
                    yield doc, f"{name} (document {docnum})"
        except yaml.YAMLError as e:
            self.problems.append(f"{name} (document {docnum + 1}): YAML syntax error{_yaml_position(e)}")

    def load_docs(self, docs: Iterable[tuple[Any, str]]) -> None:
        for doc, where in docs:
            if doc is not None:
                self.document(doc, where, _source_of(where))

    def document(self, doc: Any, where: str, source: Source, in_list: bool = False) -> None:
        ctx = _Ctx(where, "", self.problems)
        if not isinstance(doc, dict):
            ctx.err(f"document is not a mapping (got {_type_name(doc)})")
            return
        kind = doc.get("kind")
        api = doc.get("apiVersion")
        if kind is None or kind == "":
            ctx.err("missing kind")
        elif not isinstance(kind, str):
            ctx.err(f"kind must be a string, got {_type_name(kind)} {quote(kind)}")
            kind = None
        if api is None or api == "":
            ctx.err("missing apiVersion" + (f" ({kind})" if isinstance(kind, str) else ""))
        elif not isinstance(api, str):
            ctx.err(f"apiVersion must be a string, got {_type_name(api)} {quote(api)}")
            api = None
        if not isinstance(kind, str) or not kind or not isinstance(api, str) or not api:
            return
        if kind == "List" and api == "v1":
            if in_list:
                ctx.err("a List inside a List is not supported")
                return
            items = ctx.seq(doc.get("items"), "List items")
            for i, item in enumerate(items, start=1):
                item_where = f"{where[:-1]}, item {i})" if where.endswith(")") else f"{where} (item {i})"
                self.document(item, item_where, source, in_list=True)
            return
        known = _KINDS.get((api, kind))
        if known is None:
            accepted = _API_VERSIONS.get(kind)
            if accepted is None:
                self.warnings.append(f"{where}: skipped {kind} (apiVersion {api}): pyantrea does not read this kind")
                return
            meta0 = doc.get("metadata")
            name0 = meta0.get("name") if isinstance(meta0, dict) else None
            ns0 = meta0.get("namespace") if isinstance(meta0, dict) else None
            if isinstance(name0, str) and name0:
                namespaced = kind in _NAMESPACED
                ns_shown = (ns0 if isinstance(ns0, str) and ns0 else "default") if namespaced else None
                ctx = _Ctx(where, object_id(kind, ns_shown, name0), self.problems)
            ctx.err(f"apiVersion {quote(api)} is not supported for {kind} (accepted: {', '.join(accepted)})")
            return
        if doc.get("metadata") is not None and not isinstance(doc.get("metadata"), dict):
            ctx.err(f"{kind} metadata must be a mapping, got {_type_name(doc.get('metadata'))}")
            return
        meta = ctx.mapping(doc.get("metadata"), f"{kind} metadata")
        name = ctx.string(meta.get("name"), f"{kind} metadata.name", required=True)
        if name is None:
            return
        namespace: str | None = None
        if known in _NAMESPACED:
            ns = meta.get("namespace")
            namespace = "default" if ns is None or ns == "" else ns
            if not isinstance(namespace, str):
                ctx.err(f"{kind} {name}: metadata.namespace must be a string, got {_type_name(ns)} {quote(ns)}")
                return
        octx = _Ctx(where, object_id(known, namespace, name), self.problems)
        problem = name_problem(name, _NAME_RULES[known])
        if problem is not None:
            octx.err(f"metadata.name {quote(name)}: {problem}")
        if namespace is not None and (problem := name_problem(namespace, _DNS1123_LABEL)) is not None:
            octx.err(f"metadata.namespace {quote(namespace)}: {problem}")
        key = (known, f"{namespace}/{name}" if namespace is not None else name)
        if key in self.seen:
            octx.err(f"duplicate {known}: already defined in {self.seen[key]}")
            return
        self.seen[key] = where
        top = ("apiVersion", "kind", "metadata", "spec", "status") + (("subsets",) if known == "Endpoints" else ())
        for k in doc:
            if k not in top:
                self.warnings.append(f"{where}: {octx.what}: ignored unknown field {quote(k)}")
        readers = {
            "Namespace": self._namespace,
            "Node": self._node,
            "Pod": self._pod,
            "Service": self._service,
            "Endpoints": self._endpoints,
            "NetworkPolicy": self._networkpolicy,
            "NodeInterfaces": self._nodeinterfaces,
        }
        if known in ANTREA_KINDS:
            from pyantrea.k8s import antreacrd

            reader = {"Tier": antreacrd.read_tier, "ClusterGroup": antreacrd.read_group, "Group": antreacrd.read_group,
                      "ClusterNetworkPolicy": antreacrd.read_policy, "AntreaNetworkPolicy": antreacrd.read_policy}[known]
            reader(self, octx, doc, meta, namespace, name, source)
            return
        readers[known](octx, doc, meta, namespace, name, source)

    # ------------------------------------------------------------------ kinds

    def _namespace(self, c: _Ctx, doc: dict[str, Any], meta: dict[str, Any], _ns: str | None, name: str,
                   source: Source) -> None:
        labels = c.labels(meta.get("labels"), "metadata.labels")
        self.namespaces.append(Namespace(name=name, labels=labels, source=source))

    def _node(self, c: _Ctx, doc: dict[str, Any], meta: dict[str, Any], _ns: str | None, name: str,
              source: Source) -> None:
        labels = c.labels(meta.get("labels"), "metadata.labels")
        spec = c.mapping(doc.get("spec"), "spec")
        status = c.mapping(doc.get("status"), "status")
        pod_cidr = c.cidr(spec.get("podCIDR"), "spec.podCIDR")
        if pod_cidr is not None and ipaddress.IPv4Network(pod_cidr).prefixlen > 30:
            c.err(f"spec.podCIDR {quote(pod_cidr)} is too small (at most /30: a gateway and one Pod)")
            pod_cidr = None
        internal: str | None = None
        external: str | None = None
        for i, a in enumerate(c.seq(status.get("addresses"), "status.addresses")):
            p = f"status.addresses[{i}]"
            if not isinstance(a, dict):
                c.err(f"{p} must be a mapping, got {_type_name(a)}")
                continue
            typ = c.string(a.get("type"), f"{p}.type", required=True)
            if typ not in ("InternalIP", "ExternalIP"):
                c.string(a.get("address"), f"{p}.address")  # Hostname, InternalDNS, ...: not used
                continue
            ip = c.ipv4(a.get("address"), f"{p}.address ({typ})")
            if ip is None:
                if a.get("address") is None:
                    c.err(f"{p}.address is required")
                continue
            if typ == "InternalIP" and internal is None:
                internal = ip
            elif typ == "ExternalIP" and external is None:
                external = ip
        self.nodes.append(
            Node(name=name, labels=labels, pod_cidr=pod_cidr, internal_ip=internal, external_ip=external,
                 source=source)
        )

    def _pod(self, c: _Ctx, doc: dict[str, Any], meta: dict[str, Any], ns: str | None, name: str,
             source: Source) -> None:
        assert ns is not None
        labels = c.labels(meta.get("labels"), "metadata.labels")
        uid = c.string(meta.get("uid"), "metadata.uid") or ""
        spec = c.mapping(doc.get("spec"), "spec")
        status = c.mapping(doc.get("status"), "status")
        node_name = c.string(spec.get("nodeName"), "spec.nodeName") or None
        host_network = c.boolean(spec.get("hostNetwork"), "spec.hostNetwork") or False
        containers: list[str] = []
        ports: list[ContainerPort] = []
        for i, ct in enumerate(c.seq(spec.get("containers"), "spec.containers")):
            p = f"spec.containers[{i}]"
            if not isinstance(ct, dict):
                c.err(f"{p} must be a mapping, got {_type_name(ct)}")
                continue
            cname = c.string(ct.get("name"), f"{p}.name", required=True)
            if cname is not None:
                containers.append(cname)
            for j, cp in enumerate(c.seq(ct.get("ports"), f"{p}.ports")):
                pp = f"{p}.ports[{j}]"
                if not isinstance(cp, dict):
                    c.err(f"{pp} must be a mapping, got {_type_name(cp)}")
                    continue
                number = c.port_number(cp.get("containerPort"), f"{pp}.containerPort", required=True)
                proto = c.protocol(cp.get("protocol"), f"{pp}.protocol")
                pname = c.port_name(cp.get("name"), f"{pp}.name")
                if number is not None:
                    ports.append(ContainerPort(container_port=number, protocol=proto, name=pname))
        seen_names: set[str] = set()
        for cp2 in ports:
            if cp2.name is not None:
                if cp2.name in seen_names:
                    c.err(f"container port name {quote(cp2.name)} is used twice")
                seen_names.add(cp2.name)
        pod_ip = c.ipv4(status.get("podIP") or None, "status.podIP")  # "" is "not assigned yet"
        phase = c.choice(status.get("phase"), "status.phase", POD_PHASES, "Running")
        self.pods.append(
            Pod(namespace=ns, name=name, labels=labels, node_name=node_name, pod_ip=pod_ip,
                host_network=host_network, phase=phase, ports=tuple(ports), containers=tuple(containers),
                uid=uid, source=source)
        )

    def _service(self, c: _Ctx, doc: dict[str, Any], meta: dict[str, Any], ns: str | None, name: str,
                 source: Source) -> None:
        assert ns is not None
        labels = c.labels(meta.get("labels"), "metadata.labels")
        spec = c.mapping(doc.get("spec"), "spec")
        typ = c.choice(spec.get("type"), "spec.type", SERVICE_TYPES, "ClusterIP")
        cluster_ip: str | None = None
        raw_ip = spec.get("clusterIP")
        if raw_ip == "None":
            c.err('spec.clusterIP "None": headless Services are not supported')
        elif raw_ip != "":
            cluster_ip = c.ipv4(raw_ip, "spec.clusterIP")
        selector: Labels | None = None
        if spec.get("selector") is not None:
            selector = c.labels(spec.get("selector"), "spec.selector") or None
        ports: list[ServicePort] = []
        raw_ports = c.seq(spec.get("ports"), "spec.ports")
        if not raw_ports and isinstance(spec.get("ports"), (list, type(None))):
            c.err("spec.ports must list at least one port")
        names: set[str | None] = set()
        for i, sp in enumerate(raw_ports):
            p = f"spec.ports[{i}]"
            if not isinstance(sp, dict):
                c.err(f"{p} must be a mapping, got {_type_name(sp)}")
                continue
            number = c.port_number(sp.get("port"), f"{p}.port", required=True)
            proto = c.protocol(sp.get("protocol"), f"{p}.protocol")
            pname = c.port_name(sp.get("name"), f"{p}.name")
            target = c.int_or_name(sp.get("targetPort"), f"{p}.targetPort")
            node_port = c.integer(sp.get("nodePort"), f"{p}.nodePort", *NODE_PORT_RANGE)
            if node_port is not None and typ != "NodePort":
                c.err(f"{p}.nodePort may only be set when spec.type is NodePort")
                node_port = None
            if len(raw_ports) > 1 and pname is None and sp.get("name") is None:
                c.err(f"{p}.name is required when a Service has more than one port")
            elif pname in names:
                c.err(f"{p}.name {quote(pname)} is used twice")
            names.add(pname)
            if number is not None:
                ports.append(ServicePort(port=number, protocol=proto, name=pname, target_port=target,
                                         node_port=node_port))
        affinity = c.choice(spec.get("sessionAffinity"), "spec.sessionAffinity", SESSION_AFFINITIES, "None")
        timeout = 10800
        sac = c.mapping(spec.get("sessionAffinityConfig"), "spec.sessionAffinityConfig")
        if sac:
            cip = c.mapping(sac.get("clientIP"), "spec.sessionAffinityConfig.clientIP")
            t = c.integer(cip.get("timeoutSeconds"), "spec.sessionAffinityConfig.clientIP.timeoutSeconds", 1, 86400)
            if t is not None:
                timeout = t
            if affinity != "ClientIP":
                c.err("spec.sessionAffinityConfig may only be set when spec.sessionAffinity is ClientIP")
        self.services.append(
            Service(namespace=ns, name=name, type=typ, cluster_ip=cluster_ip, selector=selector,
                    ports=tuple(ports), labels=labels, session_affinity=affinity, affinity_timeout=timeout,
                    source=source)
        )

    def _endpoints(self, c: _Ctx, doc: dict[str, Any], meta: dict[str, Any], ns: str | None, name: str,
                   source: Source) -> None:
        assert ns is not None
        subsets: list[EndpointSubset] = []
        for i, ss in enumerate(c.seq(doc.get("subsets"), "subsets")):
            p = f"subsets[{i}]"
            if not isinstance(ss, dict):
                c.err(f"{p} must be a mapping, got {_type_name(ss)}")
                continue
            addrs: list[EndpointAddress] = []
            for j, a in enumerate(c.seq(ss.get("addresses"), f"{p}.addresses")):
                pa = f"{p}.addresses[{j}]"
                if not isinstance(a, dict):
                    c.err(f"{pa} must be a mapping, got {_type_name(a)}")
                    continue
                if a.get("ip") is None:
                    c.err(f"{pa}.ip is required")
                ip = c.ipv4(a.get("ip"), f"{pa}.ip")
                node_name = c.string(a.get("nodeName"), f"{pa}.nodeName")
                target: str | None = None
                ref = c.mapping(a.get("targetRef"), f"{pa}.targetRef")
                if ref:
                    rkind = c.string(ref.get("kind"), f"{pa}.targetRef.kind")
                    rname = c.string(ref.get("name"), f"{pa}.targetRef.name", required=True)
                    rns = c.string(ref.get("namespace"), f"{pa}.targetRef.namespace") or ns
                    if rkind in (None, "Pod") and rname is not None:
                        target = f"{rns}/{rname}"
                if ip is not None:
                    addrs.append(EndpointAddress(ip=ip, node_name=node_name, target_pod=target))
            ports: list[EndpointPort] = []
            for j, ep in enumerate(c.seq(ss.get("ports"), f"{p}.ports")):
                pp = f"{p}.ports[{j}]"
                if not isinstance(ep, dict):
                    c.err(f"{pp} must be a mapping, got {_type_name(ep)}")
                    continue
                number = c.port_number(ep.get("port"), f"{pp}.port", required=True)
                proto = c.protocol(ep.get("protocol"), f"{pp}.protocol")
                pname = c.port_name(ep.get("name"), f"{pp}.name")
                if number is not None:
                    ports.append(EndpointPort(port=number, protocol=proto, name=pname))
            subsets.append(EndpointSubset(addresses=tuple(addrs), ports=tuple(ports)))
        self.endpoints.append(Endpoints(namespace=ns, name=name, subsets=tuple(subsets), source=source))

    def _networkpolicy(self, c: _Ctx, doc: dict[str, Any], meta: dict[str, Any], ns: str | None, name: str,
                       source: Source) -> None:
        assert ns is not None
        uid = c.string(meta.get("uid"), "metadata.uid") or ""
        spec = c.mapping(doc.get("spec"), "spec")
        for k in spec:
            if k not in ("podSelector", "policyTypes", "ingress", "egress"):
                c.err(f"spec.{k} is not a NetworkPolicy field (podSelector, policyTypes, ingress, egress)")
        pod_selector = c.selector(spec.get("podSelector"), "spec.podSelector")
        ingress = self._rules(c, spec, "ingress", "from")
        egress = self._rules(c, spec, "egress", "to")
        types: list[str] = []
        for i, t in enumerate(c.seq(spec.get("policyTypes"), "spec.policyTypes")):
            s = c.string(t, f"spec.policyTypes[{i}]")
            if s is None:
                continue
            if s not in ("Ingress", "Egress"):
                c.err(f"spec.policyTypes[{i}] {quote(s)} is not one of Ingress, Egress")
            elif s not in types:
                types.append(s)
        if not types:  # the API server's defaulting
            types = ["Ingress"] + (["Egress"] if egress else [])
        policy_types = tuple(t for t in ("Ingress", "Egress") if t in types)
        self.policies.append(
            NetworkPolicy(namespace=ns, name=name, pod_selector=pod_selector, ingress=tuple(ingress),
                          egress=tuple(egress), policy_types=policy_types, uid=uid, source=source)
        )

    def _rules(self, c: _Ctx, spec: dict[str, Any], direction: str, peers_key: str) -> list[NetworkPolicyRule]:
        rules: list[NetworkPolicyRule] = []
        for i, r in enumerate(c.seq(spec.get(direction), f"spec.{direction}")):
            p = f"spec.{direction}[{i}]"
            r = c.mapping(r, p)
            for k in r:
                if k not in (peers_key, "ports"):
                    c.err(f"{p}.{k} is not a {direction} rule field ({peers_key}, ports)")
            peers: list[NetworkPolicyPeer] = []
            for j, peer in enumerate(c.seq(r.get(peers_key), f"{p}.{peers_key}")):
                pp = f"{p}.{peers_key}[{j}]"
                peer_d = c.mapping(peer, pp)
                if not peer_d:
                    c.err(f"{pp} must specify podSelector, namespaceSelector or ipBlock")
                    continue
                for k in peer_d:
                    if k not in ("podSelector", "namespaceSelector", "ipBlock"):
                        c.err(f"{pp}.{k} is not a peer field (podSelector, namespaceSelector, ipBlock)")
                pod_sel = (c.selector(peer_d["podSelector"], f"{pp}.podSelector")
                           if "podSelector" in peer_d else None)
                ns_sel = (c.selector(peer_d["namespaceSelector"], f"{pp}.namespaceSelector")
                          if "namespaceSelector" in peer_d else None)
                block: IPBlock | None = None
                if "ipBlock" in peer_d:
                    if pod_sel is not None or ns_sel is not None:
                        c.err(f"{pp}: ipBlock may not be combined with podSelector or namespaceSelector")
                    block = self._ip_block(c, peer_d["ipBlock"], f"{pp}.ipBlock")
                peers.append(NetworkPolicyPeer(pod_selector=pod_sel, namespace_selector=ns_sel, ip_block=block))
            ports: list[NetworkPolicyPort] = []
            for j, port in enumerate(c.seq(r.get("ports"), f"{p}.ports")):
                pp = f"{p}.ports[{j}]"
                port_d = c.mapping(port, pp)
                for k in port_d:
                    if k not in ("protocol", "port", "endPort"):
                        c.err(f"{pp}.{k} is not a port field (protocol, port, endPort)")
                proto = c.protocol(port_d.get("protocol"), f"{pp}.protocol")
                number = c.int_or_name(port_d.get("port"), f"{pp}.port")
                end = c.port_number(port_d.get("endPort"), f"{pp}.endPort")
                if end is not None:
                    if port_d.get("port") is None or isinstance(port_d.get("port"), str):
                        c.err(f"{pp}.endPort {end} requires a numeric port")
                        end = None
                    elif isinstance(number, int) and end < number:
                        c.err(f"{pp}.endPort {end} is less than port {number}")
                        end = None
                ports.append(NetworkPolicyPort(protocol=proto, port=number, end_port=end))
            rules.append(NetworkPolicyRule(peers=tuple(peers), ports=tuple(ports)))
        return rules

    def _ip_block(self, c: _Ctx, v: Any, path: str) -> IPBlock | None:
        d = c.mapping(v, path)
        cidr = c.cidr(d.get("cidr"), f"{path}.cidr", required=True)
        excepts: list[str] = []
        for i, e in enumerate(c.seq(d.get("except"), f"{path}.except")):
            ex = c.cidr(e, f"{path}.except[{i}]")
            if ex is None:
                continue
            if cidr is not None:
                outer, inner = ipaddress.IPv4Network(cidr), ipaddress.IPv4Network(ex)
                if not inner.subnet_of(outer) or inner.prefixlen <= outer.prefixlen:
                    c.err(f"{path}.except[{i}] {quote(ex)} is not inside cidr {quote(cidr)}")
                    continue
            excepts.append(ex)
        if cidr is None:
            return None
        return IPBlock(cidr=cidr, except_=tuple(excepts))

    def _nodeinterfaces(self, c: _Ctx, doc: dict[str, Any], meta: dict[str, Any], _ns: str | None, name: str,
                        source: Source) -> None:
        spec = c.mapping(doc.get("spec"), "spec")
        for k in spec:
            if k not in ("gateway", "tunnel", "pods"):
                c.err(f"spec.{k} is not a NodeInterfaces field (gateway, tunnel, pods)")
        gateway = self._port_pin(c, spec.get("gateway"), "spec.gateway")
        tunnel = self._port_pin(c, spec.get("tunnel"), "spec.tunnel")
        if tunnel.mac is not None:
            self.warnings.append(f"{c.where}: {c.what}: spec.tunnel.mac is not used (the tunnel port has no MAC)")
        pods: list[PodPin] = []
        for i, pin in enumerate(c.seq(spec.get("pods"), "spec.pods")):
            p = f"spec.pods[{i}]"
            if not isinstance(pin, dict):
                c.err(f"{p} must be a mapping, got {_type_name(pin)}")
                continue
            for k in pin:
                if k not in ("namespace", "name", "interface", "ofport", "mac", "containerID"):
                    c.err(f"{p}.{k} is not a pod pin field (namespace, name, interface, ofport, mac, containerID)")
            pname = c.string(pin.get("name"), f"{p}.name", required=True)
            pns = c.string(pin.get("namespace"), f"{p}.namespace") or "default"
            iface = self._ifname(c, pin.get("interface"), f"{p}.interface")
            ofport = c.integer(pin.get("ofport"), f"{p}.ofport", 1, MAX_OFPORT)
            mac = c.mac(pin.get("mac"), f"{p}.mac")
            cid = c.string(pin.get("containerID"), f"{p}.containerID") or None
            if pname is not None:
                pods.append(PodPin(namespace=pns, name=pname, interface=iface, ofport=ofport, mac=mac,
                                   container_id=cid))
        self.node_interfaces.append(
            NodeInterfaces(node=name, gateway=gateway, tunnel=tunnel, pods=tuple(pods), source=source)
        )

    def _port_pin(self, c: _Ctx, v: Any, path: str) -> PortPin:
        d = c.mapping(v, path)
        for k in d:
            if k not in ("name", "ofport", "mac"):
                c.err(f"{path}.{k} is not a port pin field (name, ofport, mac)")
        return PortPin(
            name=self._ifname(c, d.get("name"), f"{path}.name"),
            ofport=c.integer(d.get("ofport"), f"{path}.ofport", 1, MAX_OFPORT),
            mac=c.mac(d.get("mac"), f"{path}.mac"),
        )

    @staticmethod
    def _ifname(c: _Ctx, v: Any, path: str) -> str | None:
        s = c.string(v, path)
        if s is None:
            return None
        if not s or len(s) >= IFNAMSIZ or "/" in s or any(ch.isspace() for ch in s):
            c.err(f"{path} {quote(s)} is not a valid interface name (1-15 characters, no '/' or spaces)")
            return None
        return s

    # ------------------------------------------------------------------ antrea-agent.conf

    def load_agent_conf(self, path: str) -> AgentConfig:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            self.problems.append(f"{path}: cannot read: {e}")
            return AgentConfig()
        problem = not_utf8(data)
        if problem is not None:
            self.problems.append(f"{path}: {problem}")
            return AgentConfig()
        return self.agent_conf_text(data.decode("utf-8"), path)

    def agent_conf_text(self, text: str, path: str) -> AgentConfig:
        """antrea-agent.conf's `text`; problems and warnings name `path`."""
        c = _Ctx(path, "", self.problems)
        try:
            data = yaml.load(text, Loader=_SafeLoader)
        except yaml.YAMLError as e:
            c.err(f"YAML syntax error{_yaml_position(e)}")
            return AgentConfig()
        if data is None:
            return AgentConfig()
        if not isinstance(data, dict):
            c.err(f"antrea-agent.conf must be a mapping, got {_type_name(data)}")
            return AgentConfig()
        for k in data:
            if k not in _AGENT_CONF_KEYS:
                self.warnings.append(f"{path}: ignored unknown key {quote(k)}")
        d = AgentConfig()
        gates = dict(d.feature_gates)
        for gname, val in c.mapping(data.get("featureGates"), "featureGates").items():
            if not isinstance(gname, str):
                c.err(f"featureGates keys must be strings, got {quote(gname)}")
                continue
            b = c.boolean(val, f"featureGates.{gname}")
            if b is not None:
                gates[gname] = b
        service_cidr = c.cidr(data.get("serviceCIDR"), "serviceCIDR") or d.service_cidr
        mtu = c.integer(data.get("defaultMTU"), "defaultMTU", 0, 65535)
        proxy_all = d.proxy_all
        ap = c.mapping(data.get("antreaProxy"), "antreaProxy")
        for k in ap:
            if k != "proxyAll":
                self.warnings.append(f"{path}: ignored unknown key {quote('antreaProxy.' + str(k))}")
        if "proxyAll" in ap:
            b = c.boolean(ap.get("proxyAll"), "antreaProxy.proxyAll")
            proxy_all = d.proxy_all if b is None else b
        bridge = self._ifname(c, data.get("ovsBridge"), "ovsBridge") or d.ovs_bridge
        gateway = self._ifname(c, data.get("hostGateway"), "hostGateway") or d.host_gateway
        return AgentConfig(
            feature_gates=tuple(sorted(gates.items())),
            ovs_bridge=bridge,
            host_gateway=gateway,
            tunnel_type=c.choice(data.get("tunnelType"), "tunnelType", TUNNEL_TYPES, d.tunnel_type),
            traffic_encap_mode=c.choice(data.get("trafficEncapMode"), "trafficEncapMode", ENCAP_MODES,
                                        d.traffic_encap_mode),
            service_cidr=service_cidr,
            default_mtu=d.default_mtu if mtu is None else mtu,
            pipeline_profile=c.choice(data.get("pipelineProfile"), "pipelineProfile", PIPELINE_PROFILES,
                                      d.pipeline_profile),
            proxy_all=proxy_all,
        )


def _yaml_position(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = f"{context}, {problem}" if context else f"{problem}"
    return f"{where}: {what}"


def manifest_files(path: str | os.PathLike[str]) -> list[str]:
    """The manifest files of a cluster folder, sorted by file name (not recursive)."""
    root = str(path)
    names = sorted(
        n for n in os.listdir(root)
        if n.endswith((".yaml", ".yml")) and os.path.isfile(os.path.join(root, n))
    )
    return [os.path.join(root, n) for n in names]


def load_folder(path: str | os.PathLike[str], gate: bool = True) -> RawCluster:
    """Read a cluster folder. Raises ManifestError listing every problem found (nothing is returned then).
    `gate=False`: Antrea-native objects are read whatever antrea-agent.conf says (objects an API server
    already admitted, e.g. the controller's persisted state)."""
    root = str(path)
    if not os.path.isdir(root):
        raise ManifestError([f"{root}: not a directory (a cluster folder holds *.yaml manifests)"])
    files = manifest_files(root)
    conf_path = os.path.join(root, AGENT_CONF)
    raw = load_files(files, conf_path if os.path.exists(conf_path) else None, gate=gate)
    if not files:
        raw = replace(raw, warnings=(f"{root}: no *.yaml or *.yml files",) + raw.warnings)
    return raw


def load_files(files: list[str], conf: str | None = None, gate: bool = True) -> RawCluster:
    """Like load_folder, for an explicit list of manifest files (read in the given order) and an
    optional antrea-agent.conf. Used by load_folder and by readers of single manifests."""
    loader = _Loader()
    for f in files:
        loader.load_file(f)
    config = loader.load_agent_conf(conf) if conf else AgentConfig()
    return loader.result(config, conf or "", gate=gate)


def load_text(text: str, name: str, conf_text: str | None = None) -> RawCluster:
    """A multi-document YAML string, read as a file named `name` would be (every problem names
    `name` and the document number: 'policy.yaml (document 2): NetworkPolicy default/x: ...'),
    with an optional antrea-agent.conf text (its problems and warnings name "antrea-agent.conf").
    Touches no file system. Raises ManifestError listing every problem."""
    loader = _Loader()
    loader.load_text(text, name)
    config = loader.agent_conf_text(conf_text, AGENT_CONF) if conf_text is not None else AgentConfig()
    return loader.result(config, AGENT_CONF if conf_text is not None else "")


def load_docs(docs: Iterable[tuple[Any, str]]) -> RawCluster:
    """Documents already parsed (e.g. from JSON), each with its `where` label, which starts every
    problem about it; a label of the form 'FILE (document N)' (or '..., item I)') also becomes the
    objects' Source. Empty (None) documents are skipped; a v1 List is read item by item.
    Raises ManifestError listing every problem."""
    loader = _Loader()
    loader.load_docs(docs)
    return loader.result(AgentConfig(), "", gate=False)


def parse_agent_conf(text: str, name: str) -> AgentConfig:
    """antrea-agent.conf's text (problems name `name`). Raises ManifestError listing every problem.
    Warnings (ignored unknown keys) are dropped: `load_text(..., conf_text=...)` keeps them."""
    loader = _Loader()
    config = loader.agent_conf_text(text, name)
    if loader.problems:
        raise ManifestError(loader.problems)
    return config


_WHERE_RE = re.compile(r"(?P<file>.*) \(document (?P<doc>[0-9]+)(?:, item [0-9]+)?\)", re.DOTALL)


def _source_of(where: str) -> Source:
    """The Source of an object from its where label ('FILE (document N)'); Source(where, 0) else."""
    m = _WHERE_RE.fullmatch(where)
    if m is None:
        return Source(where, 0)
    return Source(m["file"], int(m["doc"]))
