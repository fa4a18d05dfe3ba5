"""The upstream-style 9-Pod matrix (Antrea's test/e2e/antreapolicy_test.go): Namespaces x, y, z, each
with Pods a, b, c (label pod=<name>; Namespaces label ns=<name>) on two Nodes, and
ClusterNetworkPolicy cases with the reachability each must give, written by hand as a rule over
(source, destination, protocol, port). Used offline (tests/functional/test_antrea_matrix.py, by
`antctl reachability`) and live (tests/lab/test_antrea_policy_lab.py, by real probes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
ALL = [f"{ns}/{p}" for ns in NAMESPACES for p in PODS]


def node_of(key: str) -> str:
    return "n1" if ALL.index(key) % 2 == 0 else "n2"


def cluster_manifests(node_ips: bool = True) -> str:
    docs = []
    for i, n in enumerate(("n1", "n2"), start=1):
        addr = f"\nstatus: {{addresses: [{{type: InternalIP, address: 10.79.1.{200 + i}}}]}}" if node_ips else ""
        docs.append(f"apiVersion: v1\nkind: Node\nmetadata: {{name: {n}}}{addr}\n")
    for ns in NAMESPACES:
        docs.append(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n")
        for p in PODS:
            docs.append(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {p}, namespace: {ns}, labels: {{pod: {p}}}}}\n"
                        f"spec: {{nodeName: {node_of(ns + '/' + p)}, containers: [{{name: c, ports: "
                        f"[{{containerPort: 80, name: http}}]}}]}}\n")
    return "---\n".join(docs)


AGENT_CONF = "featureGates: {AntreaPolicy: true, Traceflow: true}\n"


def acnp(name: str, spec: str) -> str:
    return f"apiVersion: crd.antrea.io/v1beta1\nkind: ClusterNetworkPolicy\nmetadata: {{name: {name}}}\nspec: {spec}\n"


def knp(ns: str, name: str, spec: str) -> str:
    return f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"


def tier(name: str, prio: int) -> str:
    return f"apiVersion: crd.antrea.io/v1beta1\nkind: Tier\nmetadata: {{name: {name}}}\nspec: {{priority: {prio}}}\n"


NS_X = "{matchLabels: {ns: x}}"
NS_Y = "{matchLabels: {ns: y}}"
NS_Z = "{matchLabels: {ns: z}}"
POD_A = "{matchLabels: {pod: a}}"

# expected verdict of (from, to, protocol, port): "allow", "drop", or "reject"
Expect = Callable[[str, str, str, int], str]


def ns(k: str) -> str:
    return k.split("/")[0]


def pod(k: str) -> str:
    return k.split("/")[1]


@dataclass(frozen=True)
class Case:
    name: str
    manifests: str  # the policies (and Tiers) of the case
    expect: Expect
    ports: tuple[tuple[str, int], ...] = (("TCP", 80),)


def _all(verdict: str) -> Expect:
    return lambda a, b, proto, port: verdict


CASES: tuple[Case, ...] = (
    # testACNPDropEgress: Pods a may not reach Namespace z
    Case("drop-egress-a-to-z",
         acnp("acnp-deny-a-to-z", f"{{priority: 1, appliedTo: [{{podSelector: {POD_A}}}], egress: [{{action: Drop, "
                                  f"ports: [{{protocol: TCP, port: 80}}], to: [{{namespaceSelector: {NS_Z}}}]}}]}}"),
         lambda a, b, proto, port: "drop" if pod(a) == "a" and ns(b) == "z" else "allow"),
    # testACNPDropIngressInSelectedNamespace: nothing may reach Namespace x
    Case("drop-ingress-into-x",
         acnp("acnp-deny-ingress-x", f"{{priority: 1, appliedTo: [{{namespaceSelector: {NS_X}}}], ingress: "
                                     f"[{{action: Drop, ports: [{{protocol: TCP, port: 80}}]}}]}}"),
         lambda a, b, proto, port: "drop" if ns(b) == "x" else "allow"),
    # drop ingress from a Namespace: y may not reach x
    Case("drop-ingress-from-y",
         acnp("acnp-deny-y-to-x", f"{{priority: 1, appliedTo: [{{namespaceSelector: {NS_X}}}], ingress: "
                                  f"[{{action: Drop, from: [{{namespaceSelector: {NS_Y}}}]}}]}}"),
         lambda a, b, proto, port: "drop" if ns(a) == "y" and ns(b) == "x" else "allow"),
    # testACNPPriorityOverride: the lower priority number wins inside a tier
    Case("priority-override",
         acnp("acnp-prio2-allow", f"{{priority: 2, appliedTo: [{{namespaceSelector: {NS_X}}}], ingress: "
                                  f"[{{action: Allow, from: [{{namespaceSelector: {NS_Z}}}]}}]}}") + "---\n"
         + acnp("acnp-prio1-drop", f"{{priority: 1, appliedTo: [{{podSelector: {POD_A}, namespaceSelector: {NS_X}}}], "
                                   f"ingress: [{{action: Drop, from: [{{namespaceSelector: {NS_Z}}}]}}]}}") + "---\n"
         + acnp("acnp-prio3-drop", f"{{priority: 3, appliedTo: [{{namespaceSelector: {NS_X}}}], ingress: "
                                   f"[{{action: Drop, from: [{{namespaceSelector: {{}}}}]}}]}}"),
         lambda a, b, proto, port: ("allow" if ns(b) != "x" else "drop" if pod(b) == "a" and ns(a) == "z" else
                                    "allow" if ns(a) == "z" else "drop")),
    # testACNPTierOverride: a higher tier's Drop beats a lower tier's Allow, whatever their priorities
    Case("tier-override",
         acnp("acnp-app-allow", f"{{priority: 1, tier: application, appliedTo: [{{namespaceSelector: {NS_X}}}], "
                                f"ingress: [{{action: Allow, from: [{{namespaceSelector: {NS_Y}}}]}}]}}") + "---\n"
         + acnp("acnp-secops-drop", f"{{priority: 100, tier: securityops, appliedTo: [{{namespaceSelector: {NS_X}}}], "
                                    f"ingress: [{{action: Drop, from: [{{podSelector: {POD_A}, "
                                    f"namespaceSelector: {NS_Y}}}]}}]}}"),
         lambda a, b, proto, port: "drop" if a == "y/a" and ns(b) == "x" else "allow"),
    # testACNPCustomTiers: a user Tier between the built-in ones
    Case("custom-tier",
         tier("high-prio", 10) + "---\n" + tier("low-prio", 240) + "---\n"
         + acnp("acnp-low-drop", f"{{priority: 1, tier: low-prio, appliedTo: [{{namespaceSelector: {NS_X}}}], "
                                 f"ingress: [{{action: Drop, from: [{{namespaceSelector: {NS_Z}}}]}}]}}") + "---\n"
         + acnp("acnp-high-allow", f"{{priority: 1, tier: high-prio, appliedTo: [{{podSelector: {POD_A}, "
                                   f"namespaceSelector: {NS_X}}}], ingress: [{{action: Allow, from: "
                                   f"[{{namespaceSelector: {NS_Z}}}]}}]}}"),
         lambda a, b, proto, port: "drop" if ns(a) == "z" and ns(b) == "x" and b != "x/a" else "allow"),
    # testACNPAllowXBtoA over a Kubernetes default deny: Antrea-native policies come first
    Case("allow-over-default-deny",
         knp("x", "default-deny", "{podSelector: {}, policyTypes: [Ingress]}") + "---\n"
         + acnp("acnp-allow-y", f"{{priority: 1, appliedTo: [{{namespaceSelector: {NS_X}}}], ingress: "
                                f"[{{action: Allow, from: [{{namespaceSelector: {NS_Y}}}]}}]}}"),
         lambda a, b, proto, port: "drop" if ns(b) == "x" and ns(a) != "y" else "allow"),
    # testBaselineNamespaceIsolation, step 1: no Kubernetes NetworkPolicy, the Baseline tier isolates x
    Case("baseline-isolation",
         acnp("acnp-baseline-isolate-x", f"{{priority: 1, tier: baseline, appliedTo: [{{namespaceSelector: {NS_X}}}], "
                                         "ingress: [{action: Drop, from: [{namespaceSelector: {matchExpressions: "
                                         "[{key: ns, operator: NotIn, values: [x]}]}}]}]}"),
         lambda a, b, proto, port: "drop" if ns(b) == "x" and ns(a) != "x" else "allow"),
    # ... step 2: a Kubernetes NetworkPolicy opens x/a to y/a and isolates x/a; Baseline still isolates
    # x/b and x/c, and no longer decides for x/a
    Case("baseline-isolation-with-k8s-policy",
         acnp("acnp-baseline-isolate-x", f"{{priority: 1, tier: baseline, appliedTo: [{{namespaceSelector: {NS_X}}}], "
                                         "ingress: [{action: Drop, from: [{namespaceSelector: {matchExpressions: "
                                         "[{key: ns, operator: NotIn, values: [x]}]}}]}]}") + "---\n"
         + knp("x", "allow-y-a-to-x-a", "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: "
                                        "[{from: [{podSelector: {matchLabels: {pod: a}}, namespaceSelector: "
                                        "{matchLabels: {ns: y}}}], ports: [{protocol: TCP, port: 80}]}]}"),
         lambda a, b, proto, port: ("allow" if ns(b) != "x" else ("allow" if a == "y/a" else "drop") if b == "x/a"
                                    else "drop" if ns(a) != "x" else "allow")),
    # testACNPNoEffectOnOtherProtocols: a TCP/81 Drop leaves TCP/80 and UDP/80 alone
    Case("no-effect-on-other-protocols",
         acnp("acnp-drop-81", f"{{priority: 1, appliedTo: [{{namespaceSelector: {NS_X}}}], ingress: [{{action: Drop, "
                              f"ports: [{{protocol: TCP, port: 81}}], from: [{{namespaceSelector: {NS_Y}}}]}}]}}"),
         _all("allow"), (("TCP", 80), ("UDP", 80))),
    # testACNPRejectEgress / testACNPRejectIngress: rejected, not dropped
    Case("reject",
         acnp("acnp-reject-a-to-y", f"{{priority: 1, appliedTo: [{{podSelector: {POD_A}, namespaceSelector: {NS_X}}}], "
                                    f"egress: [{{action: Reject, to: [{{namespaceSelector: {NS_Y}}}]}}]}}") + "---\n"
         + acnp("acnp-reject-into-z-c", "{priority: 1, appliedTo: [{podSelector: {matchLabels: {pod: c}}, "
                                        f"namespaceSelector: {NS_Z}}}], ingress: [{{action: Reject, from: "
                                        f"[{{namespaceSelector: {NS_X}}}]}}]}}"),
         lambda a, b, proto, port: ("reject" if (a == "x/a" and ns(b) == "y") or (ns(a) == "x" and b == "z/c")
                                    else "allow"), (("TCP", 80), ("UDP", 80))),
    # Pass: a SecurityOps Pass skips the Application tier's Drop; the Baseline tier still decides
    Case("pass",
         acnp("acnp-secops-pass", f"{{priority: 1, tier: securityops, appliedTo: [{{namespaceSelector: {NS_X}}}], "
                                  f"ingress: [{{action: Pass, from: [{{namespaceSelector: {NS_Y}}}]}}]}}") + "---\n"
         + acnp("acnp-app-drop", f"{{priority: 1, appliedTo: [{{namespaceSelector: {NS_X}}}], ingress: "
                                 f"[{{action: Drop, from: [{{namespaceSelector: {{}}}}]}}]}}") + "---\n"
         + acnp("acnp-baseline-drop-ya", f"{{priority: 1, tier: baseline, appliedTo: [{{namespaceSelector: {NS_X}}}], "
                                         f"ingress: [{{action: Drop, from: [{{podSelector: {POD_A}, "
                                         f"namespaceSelector: {NS_Y}}}]}}]}}"),
         lambda a, b, proto, port: ("allow" if ns(b) != "x" else "drop" if a == "y/a" else
                                    "allow" if ns(a) == "y" else "drop")),
    # testACNPNamespaceIsolation: namespaces.match Self
    Case("namespace-isolation",
         acnp("acnp-ns-isolation", "{priority: 1, appliedTo: [{namespaceSelector: {}}], ingress: [{action: Allow, "
                                   "from: [{namespaces: {match: Self}}]}, {action: Drop}]}"),
         lambda a, b, proto, port: "allow" if ns(a) == ns(b) else "drop"),
)
