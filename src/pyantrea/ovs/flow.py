"""OpenFlow flows as values, and the one place that renders them to ovs-ofctl text.

Two renderings exist, because OVS prints a flow differently depending on the OpenFlow version of
the tool that dumps it (spec §5.3):

* `Flow.dump_text()` is what `ovs-ofctl dump-flows br-int --no-stats --names` prints (OpenFlow 1.0 +
  NXM, the seed article's form): `resubmit(,N)`, `mod_dl_src:`, `load:...->NXM_NX_ARP_SHA[]`...
* `Flow.install_text()` is what we hand to `ovs-ofctl -O OpenFlow13 --bundle add-flows`: OF1.3
  instructions and `set_field`, so that an OF1.3 dump (antctl's) and `ofproto/trace` show
  `goto_table`/`set_field` exactly as Antrea's own flows do.
* `Flow.of13_text()` is what an OpenFlow 1.3 dump prints (antctl's default table view).

Nothing outside `pyantrea.ovs` builds raw flow text.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Union

# ---------------------------------------------------------------------------------------------
# helpers


def hexv(v: int) -> str:
    """OVS prints hex in lowercase with 0x, and the value 0 as a bare `0`."""
    return "0" if v == 0 else f"0x{v:x}"


def mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def ip_int(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def port_name_text(name: str) -> str:
    """How ovs-ofctl --names prints a port name: bare if it starts with a letter and is alphanumeric."""
    if name[:1].isalpha() and name.isalnum() and name.isascii():
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Port:
    """An OpenFlow port: its number (what we install) and its name (what --names prints)."""

    ofport: int
    name: str | None = None

    def dump(self, names: bool = True) -> str:
        if names and self.name:
            return port_name_text(self.name)
        return str(self.ofport)

    def install(self) -> str:
        return str(self.ofport)


# ---------------------------------------------------------------------------------------------
# matches

# The order OVS prints match fields in (lib/match.c, the subset Antrea v0.10 uses).
FIELD_ORDER = [
    "conj_id", "ct_state", "ct_mark", "ct_label", "proto",
    "reg0", "reg1", "reg2", "reg3", "reg4", "reg5", "reg6", "reg7", "reg8", "reg9",
    "in_port", "dl_src", "dl_dst",
    "arp_spa", "arp_tpa", "arp_op", "arp_sha", "arp_tha",
    "nw_src", "nw_dst", "tp_src", "tp_dst", "icmp_type", "icmp_code",
]
_RANK = {f: i for i, f in enumerate(FIELD_ORDER)}
PROTOCOLS = ("ip", "arp", "tcp", "udp", "sctp", "icmp")

MatchValue = Union[str, int, Port]


@dataclass(frozen=True)
class Match:
    """An ordered set of match fields. Build it with `match(...)`."""

    fields: tuple[tuple[str, MatchValue], ...] = ()

    def get(self, name: str) -> MatchValue | None:
        for k, v in self.fields:
            if k == name:
                return v
        return None

    def _render(self, names: bool, install: bool) -> list[str]:
        out: list[str] = []
        for k, v in self.fields:
            if k == "proto":
                out.append(str(v))
            elif isinstance(v, Port):
                out.append(f"{k}={v.install() if install else v.dump(names)}")
            else:
                out.append(f"{k}={v}")
        return out

    def dump_parts(self, names: bool = True) -> list[str]:
        return self._render(names, install=False)

    def install_parts(self) -> list[str]:
        return self._render(False, install=True)


def _reg_value(value: int, mask: int | None) -> str:
    if mask is None:
        return hexv(value)
    return f"{hexv(value)}/{hexv(mask)}"


def reg_match(value: int, bits: tuple[int, int] | None = None) -> str:
    """`reg0=0x1/0xffff` for bits (0,15) = 1; full register when bits is None."""
    if bits is None:
        return hexv(value)
    lo, hi = bits
    mask = ((1 << (hi - lo + 1)) - 1) << lo
    return _reg_value(value << lo, mask)


def ip_match(cidr: str) -> str | None:
    """`10.0.0.1` for a /32, `10.0.0.0/24` otherwise, None for /0 (OVS then prints no field)."""
    net = ipaddress.IPv4Network(cidr, strict=False)
    if net.prefixlen == 0:
        return None
    if net.prefixlen == 32:
        return str(net.network_address)
    return str(net)


def match(**kw: MatchValue | None) -> Match:
    """Build a Match from keyword fields; None values are left out. `proto="tcp"` etc.

    Fields are kept in OVS's canonical print order, whatever order they are given in.
    """
    items = [(k, v) for k, v in kw.items() if v is not None]
    for k, _ in items:
        if k not in _RANK:
            raise ValueError(f"unsupported match field {k!r}")
    items.sort(key=lambda kv: _RANK[kv[0]])
    return Match(tuple(items))


# ---------------------------------------------------------------------------------------------
# actions


class Action:
    """Base class. `of10()` is the OpenFlow 1.0 dump text, `of13()` the install / OF1.3 dump text."""

    is_goto = False

    def of10(self) -> str:
        raise NotImplementedError

    def of13(self) -> str:
        return self.of10()


@dataclass(frozen=True)
class Goto(Action):
    """The goto_table instruction. OpenFlow 1.0 dumps show it as `resubmit(,N)`."""

    table: int
    is_goto = True

    def of10(self) -> str:
        return f"resubmit(,{self.table})"

    def of13(self) -> str:
        return f"goto_table:{self.table}"


@dataclass(frozen=True)
class Resubmit(Action):
    table: int

    def of10(self) -> str:
        return f"resubmit(,{self.table})"


_SET_FIELD_OF10 = {
    "eth_src": lambda v: f"mod_dl_src:{v}",
    "eth_dst": lambda v: f"mod_dl_dst:{v}",
    "arp_sha": lambda v: f"load:{hexv(mac_int(v))}->NXM_NX_ARP_SHA[]",
    "arp_spa": lambda v: f"load:{hexv(ip_int(v))}->NXM_OF_ARP_SPA[]",
    "tun_dst": lambda v: f"load:{hexv(ip_int(v))}->NXM_NX_TUN_IPV4_DST[]",
    "ip_src": lambda v: f"mod_nw_src:{v}",
    "ip_dst": lambda v: f"mod_nw_dst:{v}",
}


@dataclass(frozen=True)
class SetField(Action):
    field: str  # eth_src | eth_dst | arp_sha | arp_spa | tun_dst | ip_src | ip_dst
    value: str

    def __post_init__(self) -> None:
        if self.field not in _SET_FIELD_OF10:
            raise ValueError(f"unsupported set_field target {self.field!r}")

    def of10(self) -> str:
        return _SET_FIELD_OF10[self.field](self.value)

    def of13(self) -> str:
        return f"set_field:{self.value}->{self.field}"


def nxm_range(field: str, bits: tuple[int, int] | int | None) -> str:
    if bits is None:
        return f"{field}[]"
    if isinstance(bits, int):
        return f"{field}[{bits}]"
    lo, hi = bits
    return f"{field}[{lo}..{hi}]" if lo != hi else f"{field}[{lo}]"


@dataclass(frozen=True)
class Load(Action):
    """`load:VALUE->FIELD[range]`, e.g. Load(1, "NXM_NX_REG0", (0, 15))."""

    value: int
    field: str
    bits: tuple[int, int] | int | None = None

    def of10(self) -> str:
        return f"load:{hexv(self.value)}->{nxm_range(self.field, self.bits)}"


@dataclass(frozen=True)
class Move(Action):
    src: str  # already with range, e.g. "NXM_OF_ETH_SRC[]"
    dst: str

    def of10(self) -> str:
        return f"move:{self.src}->{self.dst}"


@dataclass(frozen=True)
class DecTTL(Action):
    def of10(self) -> str:
        return "dec_ttl"


@dataclass(frozen=True)
class OutputReg(Action):
    src: str = "NXM_NX_REG1[]"

    def of10(self) -> str:
        return f"output:{self.src}"


@dataclass(frozen=True)
class Output(Action):
    port: Port

    def of10(self) -> str:
        return f"output:{self.port.dump(True)}"

    def of13(self) -> str:
        return f"output:{self.port.install()}"


@dataclass(frozen=True)
class InPort(Action):
    def of10(self) -> str:
        return "IN_PORT"


@dataclass(frozen=True)
class Normal(Action):
    def of10(self) -> str:
        return "NORMAL"


@dataclass(frozen=True)
class Conjunction(Action):
    id: int
    clause: int  # 1-based
    n_clauses: int

    def of10(self) -> str:
        return f"conjunction({self.id},{self.clause}/{self.n_clauses})"


@dataclass(frozen=True)
class NAT:
    """The ``nat`` argument of ``ct``: bare ``nat`` (apply the connection's NAT to later packets and
    replies) or ``nat(dst=IP:PORT)`` / ``nat(src=IP)`` for the first packet of a connection."""

    kind: str = ""  # "" | "dst" | "src"
    ip: str = ""
    port: int | None = None

    def text(self) -> str:
        if not self.kind:
            return "nat"
        addr = self.ip + (f":{self.port}" if self.port is not None else "")
        return f"nat({self.kind}={addr})"


@dataclass(frozen=True)
class CT(Action):
    commit: bool = False
    table: int | None = None
    zone: int = 65520
    exec_: tuple[Action, ...] = ()
    nat: NAT | None = None

    def _text(self, of13: bool) -> str:
        parts = []
        if self.commit:
            parts.append("commit")
        if self.table is not None:
            parts.append(f"table={self.table}")
        parts.append(f"zone={self.zone}")
        if self.nat is not None:
            parts.append(self.nat.text())
        if self.exec_:
            inner = ",".join(a.of13() if of13 else a.of10() for a in self.exec_)
            parts.append(f"exec({inner})")
        return "ct(" + ",".join(parts) + ")"

    def of10(self) -> str:
        return self._text(False)

    def of13(self) -> str:
        return self._text(True)


@dataclass(frozen=True)
class Controller(Action):
    """Send the packet to the agent (packet-in, reason action). OVS prints the plain form (controller
    id 0) as `CONTROLLER:<max_len>`."""

    max_len: int = 128
    id: int = 0

    def of10(self) -> str:
        if self.id == 0:
            return f"CONTROLLER:{self.max_len}"
        return f"controller(max_len={self.max_len},id={self.id})"


@dataclass(frozen=True)
class GroupAction(Action):
    """``group:N``: hand the packet to group N (a select group picks one bucket)."""

    group_id: int

    def of10(self) -> str:
        return f"group:{self.group_id}"


@dataclass(frozen=True)
class LearnSpec:
    """One item of a ``learn`` action, as OVS prints it:

    * ``LearnSpec("eth_type", "0x800")``: the learned flow matches that constant (``eth_type=0x800``);
    * ``LearnSpec("NXM_OF_TCP_DST[]")``: it matches the field's current value (``NXM_OF_TCP_DST[]``);
    * ``LearnSpec(load_src="NXM_NX_REG3[]", field="NXM_NX_REG3[]")`` / ``LearnSpec(load_value=2,
      field="NXM_NX_REG4[16..18]")``: its actions load the current field value / a constant.
    """

    field: str
    value: str | None = None
    load_src: str | None = None
    load_value: int | None = None

    def text(self) -> str:
        if self.load_src is not None:
            return f"load:{self.load_src}->{self.field}"
        if self.load_value is not None:
            return f"load:{hexv(self.load_value)}->{self.field}"
        return self.field if self.value is None else f"{self.field}={self.value}"


@dataclass(frozen=True)
class Learn(Action):
    """``learn(table=T,[idle_timeout=I,][hard_timeout=H,]priority=P,[delete_learned,]cookie=C,specs...)``:
    adds (or refreshes) a flow in table T built from the packet (session affinity, spec §16)."""

    table: int
    priority: int
    specs: tuple[LearnSpec, ...]
    hard_timeout: int = 0
    idle_timeout: int = 0
    cookie: int = 0
    delete_learned: bool = False

    def of10(self) -> str:
        parts = [f"table={self.table}"]
        if self.idle_timeout:
            parts.append(f"idle_timeout={self.idle_timeout}")
        if self.hard_timeout:
            parts.append(f"hard_timeout={self.hard_timeout}")
        parts.append(f"priority={self.priority}")
        if self.delete_learned:
            parts.append("delete_learned")
        if self.cookie:
            parts.append(f"cookie={hexv(self.cookie)}")
        parts += [sp.text() for sp in self.specs]
        return "learn(" + ",".join(parts) + ")"


# ---------------------------------------------------------------------------------------------
# groups


@dataclass(frozen=True)
class Bucket:
    """One bucket of a group: its weight and its actions (rendered like a flow's)."""

    actions: tuple[Action, ...]
    weight: int = 100

    def text(self, of13: bool = True) -> str:
        acts = ",".join(a.of13() if of13 else a.of10() for a in self.actions) or "drop"
        return f"bucket=weight:{self.weight},actions={acts}"


@dataclass(frozen=True)
class Group:
    """An OpenFlow group (``select``: one bucket per packet, by hash; AntreaProxy's Service ports).

    `install_text()` is what ``ovs-ofctl -O OpenFlow13 bundle`` takes after ``group add`` /
    ``group modify``; `dump_text()` is one line of ``ovs-ofctl -O OpenFlow13 dump-groups`` (leading
    space included). OpenFlow 1.3 has no bucket ids: OVS numbers the buckets 0, 1, ... in order, as
    ``dump-group-stats`` counts them."""

    group_id: int
    buckets: tuple[Bucket, ...] = ()
    type: str = "select"

    def install_text(self) -> str:
        return ",".join([f"group_id={self.group_id}", f"type={self.type}", *(b.text() for b in self.buckets)])

    def dump_text(self) -> str:
        return " " + self.install_text()

    def delete_text(self) -> str:
        return f"group_id={self.group_id}"


# ---------------------------------------------------------------------------------------------
# flows


@dataclass(frozen=True)
class Flow:
    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...]
    cookie: int = 0
    hard_timeout: int = 0
    seq: int = field(default=0, compare=False)  # creation order inside a node's flow set (for sorting)

    def __post_init__(self) -> None:
        for a in self.actions[:-1]:
            if a.is_goto:
                raise ValueError("a goto_table instruction must be the last action")

    @property
    def key(self) -> tuple[int, int, Match]:
        """What makes a flow unique in OpenFlow: table, priority and match."""
        return (self.table, self.priority, self.match)

    def _head(self, with_table0: bool) -> list[str]:
        head = [f"cookie={hexv(self.cookie)}"]
        if self.table != 0 or with_table0:
            head.append(f"table={self.table}")
        if self.hard_timeout:
            head.append(f"hard_timeout={self.hard_timeout}")
        return head

    def _actions(self, of13: bool) -> str:
        if not self.actions:
            return "drop"
        return ",".join(a.of13() if of13 else a.of10() for a in self.actions)

    def dump_text(self, names: bool = True) -> str:
        """Exactly one line of `ovs-ofctl dump-flows br-int --no-stats [--names]` (leading space included)."""
        prio = ",".join([f"priority={self.priority}", *self.match.dump_parts(names)])
        return " " + ", ".join(self._head(False)) + ", " + prio + " actions=" + self._actions(False)

    def of13_text(self, names: bool = True, stats: tuple[int, int] | None = (0, 0)) -> str:
        """A line of `ovs-ofctl -O OpenFlow13 dump-flows --names`, cut at `table=` (antctl's form)."""
        parts = [f"table={self.table}"]
        if stats is not None:
            parts += [f"n_packets={stats[0]}", f"n_bytes={stats[1]}"]
        if self.hard_timeout:
            parts.append(f"hard_timeout={self.hard_timeout}")
        prio = ",".join([f"priority={self.priority}", *self.match.dump_parts(names)])
        return ", ".join(parts) + ", " + prio + " actions=" + self._actions(True)

    def install_text(self) -> str:
        """The flow as given to `ovs-ofctl -O OpenFlow13 add-flows` (numeric ports)."""
        parts = [f"cookie={hexv(self.cookie)}", f"table={self.table}"]
        if self.hard_timeout:
            parts.append(f"hard_timeout={self.hard_timeout}")
        parts.append(f"priority={self.priority}")
        parts += self.match.install_parts()
        return ",".join(parts) + ",actions=" + self._actions(True)

    def strict_match_text(self) -> str:
        """Table, priority and match, for `del-flows --strict` / `mod-flows --strict`."""
        return ",".join([f"table={self.table}", f"priority={self.priority}", *self.match.install_parts()])


def sort_flows(flows: Iterable[Flow]) -> list[Flow]:
    """Deterministic order: table ascending, priority descending, then creation order."""
    return sorted(flows, key=lambda f: (f.table, -f.priority, f.seq))
