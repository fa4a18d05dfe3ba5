"""kube-proxy's iptables rules for one node, as a pure function of the cluster (see `rules`).

Used by the lab (which programs them) and by traces (which walk them offline); not part of the
emulated Antrea. It imports neither `pyantrea.lab` nor `pyantrea.antctl` (tests/unit/test_layering.py).
"""

from pyantrea.kubeproxy.rules import (
    JUMPS,
    MASQ_MARK,
    Jump,
    KubeProxyRules,
    Match,
    Rule,
    ServiceHit,
    ServicePortInfo,
    Target,
    build_rules,
    cluster_cidr,
    endpoint_chain,
    kube_chains_in,
    lookup,
    missing_jumps,
    render_iptables,
    service_chain,
    service_port_name,
    service_ports,
)

__all__ = [
    "JUMPS",
    "MASQ_MARK",
    "Jump",
    "KubeProxyRules",
    "Match",
    "Rule",
    "ServiceHit",
    "ServicePortInfo",
    "Target",
    "build_rules",
    "cluster_cidr",
    "endpoint_chain",
    "kube_chains_in",
    "lookup",
    "missing_jumps",
    "render_iptables",
    "service_chain",
    "service_port_name",
    "service_ports",
]
