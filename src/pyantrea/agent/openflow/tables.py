"""The pipeline's tables, declared once. Next tables are derived from the order (spec §6)."""

from __future__ import annotations

from dataclasses import dataclass

from pyantrea.errors import InvalidArgument


@dataclass(frozen=True)
class Table:
    id: int
    name: str
    miss: str  # "drop" | "next" | "none" (no table-miss flow)
    main: bool = True  # on the main chain (ARPResponder is a side branch off SpoofGuard)


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

# Names antctl accepts for tables that exist in other configurations (spec §12.3), for -T errors.
OTHER_TABLE_NAMES = {
    5: "Uplink", 29: "ServiceHairpin", 41: "ServiceLB", 42: "EndpointDNAT", 106: "HairpinSNATTable",
}


class Pipeline:
    def __init__(self, tables: tuple[Table, ...] = _ARTICLE):
        self.tables = tables
        self.by_id = {t.id: t for t in tables}
        chain = [t.id for t in tables if t.main]
        self._next = {a: b for a, b in zip(chain, chain[1:])}

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

CLASSIFIER, SPOOF_GUARD, ARP_RESPONDER, CT_ZONE, CT_STATE, DNAT = 0, 10, 20, 30, 31, 40
EGRESS_RULE, EGRESS_DEFAULT, L3_FORWARDING, L2_FORWARDING = 50, 60, 70, 80
INGRESS_RULE, INGRESS_DEFAULT, CT_COMMIT, OUTPUT = 90, 100, 105, 110
