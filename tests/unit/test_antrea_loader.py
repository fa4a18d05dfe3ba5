"""Antrea-native policy kinds in a cluster folder and in the embedded API server: decoding, the
AntreaPolicy gate, and the checks of Antrea's CRD schemas and admission webhook (issue 10)."""

from __future__ import annotations

import pytest

from pyantrea.apis import crd
from pyantrea.apis.k8s import AgentConfig
from pyantrea.controller.store import ObjectStore
from pyantrea.errors import ManifestError, PyantreaError
from pyantrea.k8s.loader import load_text

GATE_ON = "featureGates: {AntreaPolicy: true}"


def problems(text: str, conf: str | None = GATE_ON) -> list[str]:
    with pytest.raises(ManifestError) as ei:
        load_text(text, "p.yaml", conf)
    return ei.value.problems


def acnp(spec: str, name: str = "c") -> str:
    return f"apiVersion: crd.antrea.io/v1beta1\nkind: ClusterNetworkPolicy\nmetadata: {{name: {name}}}\nspec: {spec}\n"


def anp(spec: str, name: str = "a", ns: str = "x") -> str:
    return (f"apiVersion: crd.antrea.io/v1beta1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec: {spec}\n")


GOOD = acnp("{priority: 5, tier: SecurityOps, appliedTo: [{namespaceSelector: {matchLabels: {ns: x}}}], "
            "ingress: [{action: Drop, name: deny-y, from: [{namespaceSelector: {matchLabels: {ns: y}}}], "
            "ports: [{protocol: TCP, port: 80, endPort: 90}]}], "
            "egress: [{action: Reject, to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}}], "
            "protocols: [{icmp: {icmpType: 8, icmpCode: 0}}]}]}")


def test_a_valid_acnp_is_read() -> None:
    raw = load_text(GOOD, "p.yaml", GATE_ON)
    (p,) = raw.antrea_policies
    assert (p.namespace, p.name, p.priority, p.tier, p.kind, p.type) == (
        None, "c", 5.0, "securityops", crd.ACNP, crd.TYPE_ACNP)
    (r,) = p.ingress
    assert (r.action, r.name, r.ports[0].port, r.ports[0].end_port) == ("Drop", "deny-y", 80, 90)
    (e,) = p.egress
    assert e.action == "Reject" and e.icmp == (crd.ICMP(8, 0),) and e.peers[0].ip_block is not None
    assert e.name.startswith("egress-reject-") and len(e.name) == len("egress-reject-") + 7


def test_default_tier_and_names() -> None:
    raw = load_text(acnp("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Allow}]}"), "p.yaml", GATE_ON)
    assert raw.antrea_policies[0].tier == "application"


@pytest.mark.parametrize("conf", [None, "featureGates: {AntreaPolicy: false}"])
def test_gate_off_is_an_error_naming_the_gate(conf: str | None) -> None:
    text = GOOD + "---\n" + anp("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Allow}]}") + \
        "---\napiVersion: crd.antrea.io/v1beta1\nkind: Tier\nmetadata: {name: t1}\nspec: {priority: 10}\n" + \
        "---\napiVersion: crd.antrea.io/v1beta1\nkind: ClusterGroup\nmetadata: {name: g}\nspec: {podSelector: {}}\n"
    ps = problems(text, conf)
    assert len(ps) == 4
    assert ps[0].startswith("p.yaml (document 1): ClusterNetworkPolicy c: ClusterNetworkPolicy (crd.antrea.io/v1beta1) "
                            "needs the AntreaPolicy feature gate")
    assert ps[1].startswith("p.yaml (document 2): AntreaNetworkPolicy x/a: NetworkPolicy (crd.antrea.io/v1beta1) needs")
    assert "Tier t1" in ps[2] and "ClusterGroup g" in ps[3]
    assert all("featureGates: {AntreaPolicy: true}" in p for p in ps)


INVALID = [
    ("{priority: 0, appliedTo: [{podSelector: {}}], ingress: [{action: Allow}]}",
     "spec.priority 0 is out of range (1-10000)"),
    ("{priority: 10001, appliedTo: [{podSelector: {}}], ingress: [{action: Allow}]}",
     "spec.priority 10001 is out of range (1-10000)"),
    ("{appliedTo: [{podSelector: {}}], ingress: [{action: Allow}]}", "spec.priority is required"),
    ("{priority: high, appliedTo: [{podSelector: {}}], ingress: [{action: Allow}]}",
     'spec.priority must be a number, got a string "high"'),
    ("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{from: []}]}", "spec.ingress[0].action is required"),
    ("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Deny}]}",
     'spec.ingress[0].action "Deny" is not one of Allow, Drop, Reject, Pass'),
    ("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Allow, appliedTo: [{podSelector: {}}]}]}",
     "appliedTo should not be set in both spec and rules"),
    ("{priority: 1, ingress: [{action: Allow}]}",
     "appliedTo needs to be set in either spec.appliedTo or every rule's appliedTo"),
    ("{priority: 1, ingress: [{action: Allow, appliedTo: [{podSelector: {}}]}, {action: Drop}]}",
     "appliedTo field should either be set in all rules or in none of them"),
    ("{priority: 1, tier: baseline, appliedTo: [{podSelector: {}}], egress: [{action: Pass}]}",
     "spec.egress[0].action: Pass should not be set for Baseline Tier policy rules"),
    ("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Drop, from: [{ipBlock: {cidr: 10.0.0.1/8}}]}]}",
     'spec.ingress[0].from[0].ipBlock.cidr "10.0.0.1/8" is not a network address (host bits set; did you mean 10.0.0.0/8?)'),
    ("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Drop, from: [{ipBlock: {cidr: 10.0.0.0/8, "
     "except: [11.0.0.0/24]}}]}]}",
     'spec.ingress[0].from[0].ipBlock.except[0] "11.0.0.0/24" is not inside cidr "10.0.0.0/8"'),
    ("{priority: 1, tier: nope, appliedTo: [{podSelector: {}}], ingress: [{action: Drop}]}",
     'spec.tier "nope": tier nope does not exist'),
    ("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Drop, name: r}, {action: Allow, name: r}]}",
     'spec.ingress[1].name "r": rule names must be unique within the policy'),
    ("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Drop, from: [{namespaces: {match: Self}, "
     "namespaceSelector: {}}]}]}", "namespaces and namespaceSelector cannot be set at the same time"),
    ("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Drop, from: [{namespaces: {match: Other}}]}]}",
     'spec.ingress[0].from[0].namespaces.match "Other" is not one of Self'),
    ("{priority: 1, appliedTo: [{group: g, podSelector: {}}], ingress: [{action: Drop}]}",
     "spec.appliedTo[0]: group cannot be set with other peers in appliedTo"),
    ("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Drop, from: [{group: g, podSelector: {}}]}]}",
     "spec.ingress[0].from[0]: group cannot be set with other peers in rules"),
    ("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Drop, ports: [{protocol: TCP, endPort: 90}]}]}",
     "spec.ingress[0].ports[0].endPort: if endPort is specified, port must be specified"),
    ("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Drop, ports: [{protocol: TCP, port: 90, "
     "endPort: 80}]}]}", "spec.ingress[0].ports[0].endPort 80 should be greater than or equal to port 90"),
    ("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Drop, ports: [{protocol: ICMP}]}]}",
     'spec.ingress[0].ports[0].protocol "ICMP" is not one of TCP, UDP, SCTP'),
    ("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Drop, protocols: [{icmp: {icmpType: 256}}]}]}",
     "spec.ingress[0].protocols[0].icmp.icmpType 256 is out of range (0-255)"),
    ("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Drop, to: []}]}",
     "spec.ingress[0].to: an ingress rule has from, not to"),
    ("{priority: 1, appliedTo: [{podSelector: {}}], egress: [{action: Drop, to: [{fqdn: a.com}]}]}",
     "spec.egress[0].to[0].fqdn is not supported by pyantrea"),
    ("{priority: 1, appliedTo: [{podSelector: {}}], ingress: [{action: Drop}], foo: 1}",
     "spec.foo is not a ClusterNetworkPolicy field"),
]


@pytest.mark.parametrize("spec,message", INVALID, ids=[m[:40] for _, m in INVALID])
def test_invalid_acnp(spec: str, message: str) -> None:
    ps = problems(acnp(spec))
    assert any(p.startswith("p.yaml (document 1): ClusterNetworkPolicy c: ") and message in p for p in ps), ps


def test_anp_specific_rules() -> None:
    ps = problems(anp("{priority: 1, appliedTo: [{namespaceSelector: {}}], ingress: [{action: Drop, "
                      "from: [{namespaces: {match: Self}}]}]}"))
    assert any("AntreaNetworkPolicy x/a: spec.appliedTo[0].namespaceSelector: an Antrea NetworkPolicy applies" in p
               for p in ps), ps
    assert any("spec.ingress[0].from[0].namespaces is only valid in a ClusterNetworkPolicy" in p for p in ps), ps


def tier(name: str, prio: object) -> str:
    return f"apiVersion: crd.antrea.io/v1beta1\nkind: Tier\nmetadata: {{name: {name}}}\nspec: {{priority: {prio}}}\n"


def test_tiers() -> None:
    raw = load_text(tier("t1", 10) + "---\n" + acnp("{priority: 1, tier: t1, appliedTo: [{podSelector: {}}], "
                                                   "ingress: [{action: Pass}]}"), "p.yaml", GATE_ON)
    assert [(t.name, t.priority) for t in raw.tiers] == [("t1", 10)]
    assert raw.antrea_policies[0].tier == "t1"
    assert "spec.priority 100 overlaps with existing Tier securityops" in problems(tier("t2", 100))[0]
    assert "spec.priority 252 is reserved" in problems(tier("t2", 252))[0]
    assert "spec.priority 256 is out of range (0-255)" in problems(tier("t2", 256))[0]
    assert "is the name of a built-in Tier" in problems(tier("application", 7))[0]
    ps = problems(tier("t3", 11) + "---\n" + tier("t4", 11))
    assert ps == ["p.yaml (document 2): Tier t4: spec.priority 11 overlaps with existing Tier t3"]


def test_groups() -> None:
    cg = ("apiVersion: crd.antrea.io/v1beta1\nkind: ClusterGroup\nmetadata: {name: g}\nspec: {podSelector: "
          "{matchLabels: {app: a}}, ipBlocks: [{cidr: 10.0.0.0/8}]}\n")
    assert "at most one of podSelector/namespaceSelector, ipBlocks and childGroups may be set" in problems(cg)[0]
    ok = ("apiVersion: crd.antrea.io/v1beta1\nkind: Group\nmetadata: {name: g, namespace: x}\nspec: "
          "{podSelector: {matchLabels: {app: a}}}\n")
    raw = load_text(ok, "p.yaml", GATE_ON)
    assert raw.groups[0].key == "x/g" and raw.groups[0].kind == crd.GROUP


# ------------------------------------------------------------------------------------ live: the API server

ON = AgentConfig(feature_gates=(("AntreaPolicy", True), ("Traceflow", True)))


def test_store_gate_off_refuses_naming_the_gate() -> None:
    st = ObjectStore()
    with pytest.raises(ManifestError) as ei:
        st.apply(tier("t1", 10), "t.yaml")
    assert ei.value.problems == ["t.yaml (document 1): Tier t1: Tier (crd.antrea.io/v1beta1) needs the AntreaPolicy "
                                 "feature gate: set featureGates: {AntreaPolicy: true} in antrea-agent.conf"]


def test_store_tier_in_use_cannot_be_deleted() -> None:
    st = ObjectStore(ON)
    st.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n" + tier("t1", 10) + "---\n" +
             anp("{priority: 2, tier: t1, appliedTo: [{podSelector: {}}], egress: [{action: Drop}]}"), "p.yaml")
    assert st.get("AntreaNetworkPolicy", "x", "a").tier == "t1"
    assert st.get("Tier", "", "t1").priority == 10
    with pytest.raises(ManifestError) as ei:
        st.delete(tier("t1", 10), "d.yaml")
    assert ei.value.problems == ["d.yaml: Tier t1: tier t1 is referenced by 1 policy (AntreaNetworkPolicy x/a) and "
                                 "cannot be deleted"]
    with pytest.raises(PyantreaError, match="cannot delete reserved tier application"):
        st.delete(tier("application", 250), "d.yaml")
    with pytest.raises(ManifestError, match="tier nope does not exist"):
        st.apply(acnp("{priority: 1, tier: nope, appliedTo: [{podSelector: {}}], ingress: [{action: Drop}]}"), "c.yaml")
    # a K8s NetworkPolicy and an Antrea NetworkPolicy of the same name are different objects
    st.apply("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a, namespace: x}\n"
             "spec: {podSelector: {}}\n", "k.yaml")
    assert st.get("NetworkPolicy", "x", "a").name == "a" and st.get("AntreaNetworkPolicy", "x", "a").name == "a"
    st.delete(anp("{}") + "---\n" + tier("t1", 10), "d.yaml")
    assert [t.name for t in st.cluster().tiers] == [] and st.cluster().antrea_policies == ()
    assert [p.name for p in st.cluster().policies] == ["a"]
