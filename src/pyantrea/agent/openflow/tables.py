"""The pipeline's tables, declared once. Next tables are derived from the order (spec §6)."""

from __future__ import annotations

from dataclasses import dataclass

from pyantrea.errors import InvalidArgument


@dataclass(frozen=True)
class Table:
    id: int
    name: str
    miss: str  # "drop" | "next" | "none" (no table-miss flow, or a feature's own priority-0 flow)
    main: bool = True  # on the main chain (ARPResponder is a side branch off SpoofGuard)
    next: int | None = None  # a side table's next table (AntreaProxy's ServiceLB -> EndpointDNAT)


_ARTICLE = (
    Table(0, "Classification", "drop"),
    Table(10, "SpoofGuard", "drop"),
    Table(20, "ARPResponder", "drop", main=False),
    Table(30, "ConntrackZone", "none"),
    Table(31, "ConntrackState", "next"),
    Table(40, "DNAT(SessionAffinity)", "next"),
    Table(50, "EgressRule", "next"),
    Table(60, "EgressDefaultRule", "next"),
    Table(70, "l3Forwarding", "next"),
    Table(80, "L2Forwarding", "next"),
    Table(90, "IngressRule", "next"),
    Table(100, "IngressDefaultRule", "next"),
    Table(105, "ConntrackCommit", "next"),
    Table(110, "Output", "drop"),
)

# The ARTICLE tables with AntreaProxy on: v0.10.1's proxy profile (pkg/agent/openflow/pipeline.go,
# generatePipeline with enableProxy) without the RELEASE-only metric tables 61/101 (docs/decisions.md).
# ConntrackState's miss flow resubmits to SessionAffinity (a side-effect table: it only loads
# registers) and ServiceLB; ServiceLB's miss goes on to EndpointDNAT, whose miss joins the main chain.
_ARTICLE_PROXY = (
    Table(0, "Classification", "drop"),
    Table(10, "SpoofGuard", "drop"),
    Table(20, "ARPResponder", "drop", main=False),
    Table(29, "ServiceHairpin", "next"),
    Table(30, "ConntrackZone", "none"),
    Table(31, "ConntrackState", "none"),
    Table(40, "SessionAffinity", "none", main=False),
    Table(41, "ServiceLB", "next", main=False, next=42),
    Table(42, "EndpointDNAT", "next"),
    Table(50, "EgressRule", "next"),
    Table(60, "EgressDefaultRule", "next"),
    Table(70, "l3Forwarding", "next"),
    Table(80, "L2Forwarding", "next"),
    Table(90, "IngressRule", "next"),
    Table(100, "IngressDefaultRule", "next"),
    Table(105, "ConntrackCommit", "next"),
    Table(106, "HairpinSNATTable", "next"),
    Table(110, "Output", "drop"),
)

# Names antctl accepts for tables that exist in other configurations (spec §12.3), for -T errors.
OTHER_TABLE_NAMES = {
    5: "Uplink", 29: "ServiceHairpin", 41: "ServiceLB", 42: "EndpointDNAT", 106: "HairpinSNATTable",
    45: "AntreaPolicyEgressRule", 85: "AntreaPolicyIngressRule",
}

# The AntreaPolicy gate adds one table before each direction's Kubernetes NetworkPolicy rule table
# (Antrea 2.x's design, docs/decisions.md): every Antrea-native tier's rules, ordered by OpenFlow
# priority; Baseline tier rules go to EgressDefaultRule / IngressDefaultRule, below the isolation drops.
ANTREA_POLICY_TABLES = (
    Table(45, "AntreaPolicyEgressRule", "next"),
    Table(85, "AntreaPolicyIngressRule", "next"),
)


def _with_antrea_policy(tables: tuple[Table, ...]) -> tuple[Table, ...]:
    return tuple(sorted(tables + ANTREA_POLICY_TABLES, key=lambda t: t.id))


class Pipeline:
    def __init__(self, tables: tuple[Table, ...] = _ARTICLE):
        self.tables = tables
        self.by_id = {t.id: t for t in tables}
        chain = [t.id for t in tables if t.main]
        self._next = {a: b for a, b in zip(chain, chain[1:])}
        self._next.update({t.id: t.next for t in tables if t.next is not None})

    def next(self, table: int) -> int:
        return self._next[table]

    def name(self, table: int) -> str:
        return self.by_id[table].name

    def resolve(self, spec: str) -> int:
        """A table number or a table name (case-insensitive) -> table id (antctl -T)."""
        s = spec.strip()
        if s.isdigit() and int(s) in self.by_id:
            return int(s)
        for t in self.tables:
            if t.name.lower() == s.lower() or t.name.split("(")[0].lower() == s.lower():
                return t.id
        known = ", ".join(f"{t.id} {t.name}" for t in self.tables)
        raise InvalidArgument(f"invalid table name or number {spec!r} (tables: {known})")


ARTICLE = Pipeline()
ARTICLE_PROXY = Pipeline(_ARTICLE_PROXY)
ARTICLE_ANP = Pipeline(_with_antrea_policy(_ARTICLE))
ARTICLE_PROXY_ANP = Pipeline(_with_antrea_policy(_ARTICLE_PROXY))


def pipeline_for(proxy: bool, antrea_policy: bool = False) -> Pipeline:
    """The node's tables: the article's, or with the AntreaProxy gate on, the proxy profile's; with
    the AntreaPolicy gate, also the Antrea-native policy tables."""
    if antrea_policy:
        return ARTICLE_PROXY_ANP if proxy else ARTICLE_ANP
    return ARTICLE_PROXY if proxy else ARTICLE


def table_name(table: int, proxy: bool = False) -> str:
    """antctl's name of a table number (of the proxy profile when `proxy`), or `table N`."""
    p = pipeline_for(proxy)
    if table in p.by_id:
        return p.name(table)
    return OTHER_TABLE_NAMES.get(table, f"table {table}")

CLASSIFIER, SPOOF_GUARD, ARP_RESPONDER, CT_ZONE, CT_STATE, DNAT = 0, 10, 20, 30, 31, 40
EGRESS_RULE, EGRESS_DEFAULT, L3_FORWARDING, L2_FORWARDING = 50, 60, 70, 80
INGRESS_RULE, INGRESS_DEFAULT, CT_COMMIT, OUTPUT = 90, 100, 105, 110
# AntreaProxy (gate on)
SERVICE_HAIRPIN, SESSION_AFFINITY, SERVICE_LB, ENDPOINT_DNAT, HAIRPIN_SNAT = 29, 40, 41, 42, 106
# AntreaPolicy (gate on)
ANP_EGRESS_RULE, ANP_INGRESS_RULE = 45, 85
