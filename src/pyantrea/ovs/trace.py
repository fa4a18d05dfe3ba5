"""Parse the text of ``ovs-appctl ofproto/trace`` (OVS 3.1) into a :class:`Trace` value.

The text is made of *sections*, one per datapath pass: the first, then one per recirculation
(``ct(table=N)`` forks the packet, and the next section, after a ``====`` rule, says
``Resuming from table N``). Each section has ``Flow:``, one or more ``bridge("NAME")`` blocks with
one line per flow hit (``<table>. <match>, priority <p>[, cookie 0x<c>]``) and that flow's
actions indented below it (a ``resubmit`` nests the next table hit, more deeply indented), then
``Final flow:``, ``Megaflow:`` and ``Datapath actions:``.

:func:`parse_trace` keeps the hops of ONE bridge (other bridges, such as a lab's ``br-phy``
reached through a patch port or the native tunnel, are skipped) in the order OVS visited them,
across every section. The verdict is the OpenFlow decision (an effective output action), not the
datapath's: an output OVS refuses for OpenFlow reasons (``>> skipping output to input port``,
``>> Nonexistent output port``) does not count, while a tunnel-level refusal that only the trace
makes (``>> Not tunneling to our own address``) does not cancel it; it is reported in ``notes``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pyantrea.errors import OVSError

OFPP_LOCAL = 0xFFFE

Verdict = Literal["output", "drop"]


@dataclass(frozen=True)
class Hop:
    """One flow the packet matched."""

    table: int
    priority: int
    match: str  # as OVS prints it in the trace ("" for a flow without match fields)
    cookie: int
    actions: tuple[str, ...]  # OVS's action lines for this flow, without the "->"/">>" notes
    section: int = 0  # 0 = first datapath pass, 1 = after the first recirculation, ...
    depth: int = 0  # 0 = top level, 1 = reached through a resubmit action of a hop, ...

    @property
    def flow_actions(self) -> tuple[str, ...]:
        """The flow's own actions. ``actions`` is what OVS printed: after a ``ct(...)`` line the
        trace repeats the ct's nested actions (``nat``, the items of ``exec(...)``), one per
        line, or prints ``drop`` when there are none; those echoes are removed here."""
        out: list[str] = []
        skip: list[str] = []
        for a in self.actions:
            if skip and a == skip[0]:
                skip.pop(0)
                continue
            skip = []
            out.append(a)
            if a.startswith("ct("):
                skip = _ct_nested_actions(a) or ["drop"]
        return tuple(out) if out else ("drop",)


@dataclass(frozen=True)
class Trace:
    bridge: str
    hops: tuple[Hop, ...]
    verdict: Verdict
    out_port: int | None  # OpenFlow port of the (last) effective output; None for drop or NORMAL/FLOOD
    tun_dst: str | None  # see parse_trace()
    no_match_table: int | None  # the last "<table>. No match." in this bridge
    datapath_actions: tuple[str, ...]  # one per section where this bridge appears
    out_ports: tuple[int, ...] = ()  # every effective output in order (usually one)
    notes: tuple[str, ...] = ()  # this bridge's ">>" lines, e.g. "IPv4 decrement TTL exception"
    flow: str = ""  # the first section's "Flow:" (the traced packet with OVS's defaults)
    final_flow: str = ""  # "Final flow" of the section that output (else of the last section)

    @property
    def tables(self) -> tuple[int, ...]:
        return tuple(h.table for h in self.hops)


@dataclass(frozen=True)
class TraceResult:
    """One `ofproto/trace` on a node, as antctl's backends (offline or live) answer `trace_packet`."""

    node: str
    flow: str
    text: str
    trace: Trace | None
    port_names: dict[int, str]
    tunnel_ofport: int

    def as_json(self) -> dict[str, Any]:
        t = self.trace
        if t is None:
            return {"node": self.node, "hops": [], "verdict": "drop", "out_port": None, "tun_dst": None,
                    "error": self.text.strip()}
        out_port = self.port_names.get(t.out_port, str(t.out_port)) if t.out_port is not None else None
        tun = t.tun_dst if t.out_port == self.tunnel_ofport else None
        return {
            "node": self.node,
            "hops": [{"table": h.table, "priority": h.priority, "flow": hop_flow(h)} for h in t.hops],
            "verdict": t.verdict,
            "out_port": out_port,
            "tun_dst": tun,
        }


def hop_flow(h: Any) -> str:
    """A matched flow as one line: `priority=P[,match] actions=...` (ports numeric, as in the trace)."""
    head = f"priority={h.priority}" + (f",{h.match}" if h.match else "")
    acts = h.flow_actions
    return head + " actions=" + (",".join(acts) if acts else "drop")


# --------------------------------------------------------------------------- parsing

_RULE = re.compile(r"^=+$")
_BRIDGE = re.compile(r'^( *)bridge\("(?P<name>[^"]*)"\)\s*$')
_DASHES = re.compile(r"^ *-+$")
_TABLE = re.compile(r"^( *)(\d+)\. (.*)$")
_FLOW_HIT = re.compile(r"^(?:(?P<match>.*), )?priority (?P<prio>\d+)(?:, cookie (?P<cookie>0x[0-9a-fA-F]+))?\s*$")
_OUT_NUM = re.compile(r"^output:(\d+)$")
_OUT_FIELD = re.compile(r"^output:(NXM_|OXM_|reg|xreg|\w+\[)")
_ENQUEUE = re.compile(r"^enqueue:(\d+)(?::\d+)?$")
_OUT_PORT_IS = re.compile(r"^-> output port is (\d+)")
_TUN_DST_FLOW = re.compile(r"(?:^|[ ,])tun_dst=([0-9.]+)")
_TUN_DST_SET = re.compile(r"^set_field:([0-9.]+)->(?:tun_dst|tun_ipv4_dst)$")
_TUN_DST_LOAD = re.compile(r"^load:(0x[0-9a-fA-F]+|\d+)->NXM_NX_TUN_IPV4_DST\[\]$")
_TUN_DST_NOW = re.compile(r"^-> NXM_NX_TUN_IPV4_DST\[\] is now ([0-9.]+)")
_IN_PORT = re.compile(r"(?:^|,)in_port=(\w+)")
_TRAILERS = ("Final flow:", "Megaflow:", "Datapath actions:")
_BUCKET = re.compile(r"^bucket \d+$")
_FLOOD_LIKE = frozenset({"NORMAL", "FLOOD", "ALL"})


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _int_ip(v: str) -> str:
    n = int(v, 0)
    return ".".join(str((n >> s) & 0xFF) for s in (24, 16, 8, 0))


def _cancels_output(note: str) -> bool:
    return ("skipping" in note and "output" in note) or note.startswith("Nonexistent output port")


def _port_num(tok: str) -> int | None:
    if tok.isdigit():
        return int(tok)
    if tok == "LOCAL":
        return OFPP_LOCAL
    return None


@dataclass
class _Open:
    """A table line being filled with its action lines."""

    table_indent: int
    action_indent: int | None
    keep: bool  # a hop of the bridge we report
    table: int = 0
    priority: int = 0
    match: str = ""
    cookie: int = 0
    depth: int = 0
    section: int = 0
    actions: list[str] = field(default_factory=list)
    hop_index: int = -1


@dataclass
class _Section:
    flow: str = ""
    final_flow: str = ""
    datapath_actions: str | None = None
    has_bridge: bool = False


@dataclass
class _Out:
    section: int
    port: int | None
    cancelled: bool = False


def parse_trace(text: str, bridge: str = "br-int") -> Trace:
    """Parse ``ofproto/trace`` output, keeping ``bridge``'s hops.

    ``tun_dst``: the ``tun_dst`` of the final flow of the section that output (the section's
    ``Flow:`` when OVS prints ``Final flow: unchanged``), else the last tunnel destination set
    by an action of this bridge (``set_field:IP->tun_dst``, ``load:...->NXM_NX_TUN_IPV4_DST[]``).
    It is only meaningful when the packet leaves through a tunnel port: callers decide.

    Raises :class:`OVSError` when ``text`` is not a trace (e.g. ``Bad openflow flow syntax``).
    """
    lines = text.splitlines()
    if not any(ln.startswith("Flow: ") for ln in lines) and not any(_BRIDGE.match(ln) for ln in lines):
        raise OVSError(f"ofproto/trace: not a trace: {text.strip()[:500]}")

    sections: list[_Section] = [_Section()]
    hops: list[Hop] = []
    opens: list[_Open] = []  # stack of table lines whose actions may still follow
    bridges: list[tuple[int, str]] = []  # stack of (indent, name)
    outs: list[_Out] = []
    pending_out: _Out | None = None  # the output action the next "->"/">>" notes refer to
    notes: list[str] = []
    no_match: int | None = None
    tun_dst_action: str | None = None
    in_trailer = False
    i = 0

    def cur_bridge() -> str | None:
        return bridges[-1][1] if bridges else None

    def pop_to(indent: int) -> None:
        while opens:
            o = opens[-1]
            if (o.action_indent is not None and o.action_indent > indent) or (
                o.action_indent is None and o.table_indent >= indent
            ):
                _close(opens.pop())
            else:
                break

    def _close(o: _Open) -> None:
        if o.keep and o.hop_index >= 0:
            h = hops[o.hop_index]
            hops[o.hop_index] = Hop(h.table, h.priority, h.match, h.cookie, tuple(o.actions), h.section, h.depth)

    while i < len(lines):
        line = lines[i]
        i += 1
        sec_no = len(sections) - 1
        sec = sections[-1]
        if _RULE.match(line):
            # "=====" / "recirc(0x..) - resume conntrack ..." / "=====": a new section
            while opens:
                _close(opens.pop())
            bridges.clear()
            pending_out = None
            if i < len(lines) and not _RULE.match(lines[i]):
                i += 1  # the title line
            if i < len(lines) and _RULE.match(lines[i]):
                i += 1
            sections.append(_Section())
            in_trailer = False
            continue
        if not line.strip():
            continue
        ind = _indent(line)
        body = line.strip()
        if ind == 0:
            if body.startswith("Flow: "):
                sec.flow = body[len("Flow: "):]
                in_trailer = False
                continue
            if body.startswith(_TRAILERS):
                while opens:
                    _close(opens.pop())
                bridges.clear()
                pending_out = None
                in_trailer = True
                if body.startswith("Final flow:"):
                    ff = body[len("Final flow:"):].strip()
                    sec.final_flow = sec.flow if ff == "unchanged" else ff
                elif body.startswith("Datapath actions:"):
                    sec.datapath_actions = body[len("Datapath actions:"):].strip()
                continue
        if in_trailer:
            continue  # "This flow is handled by the userspace slow path because it:" etc.
        m = _BRIDGE.match(line)
        if m:
            pop_to(ind)
            while bridges and bridges[-1][0] >= ind:
                bridges.pop()
            bridges.append((ind, m["name"]))
            if m["name"] == bridge:
                sec.has_bridge = True
            pending_out = None
            continue
        if _DASHES.match(line):
            continue
        # leaving a nested bridge block (e.g. br-phy reached through a patch port)
        while len(bridges) > 1 and ind < bridges[-1][0]:
            bridges.pop()
        keep = cur_bridge() == bridge
        m = _TABLE.match(line)
        if m:
            pop_to(ind)
            pending_out = None
            table = int(m[2])
            rest = m[3]
            depth = sum(1 for o in opens if o.keep) if keep else 0
            o = _Open(table_indent=ind, action_indent=None, keep=False, table=table, depth=depth, section=sec_no)
            hit = _FLOW_HIT.match(rest)
            if keep and hit:
                o.keep = True
                o.hop_index = len(hops)
                hops.append(Hop(table, int(hit["prio"]), hit["match"] or "",
                                int(hit["cookie"], 16) if hit["cookie"] else 0, (), sec_no, depth))
            elif keep and rest.startswith("No match"):
                no_match = table
            opens.append(o)
            continue
        if body in ("thaw",) or body.startswith("Resuming from table ") or _BUCKET.match(body):
            continue  # "bucket N": the select group's choice, printed before the bucket's own actions
        is_note = body.startswith(("->", ">>"))
        if not is_note:
            pop_to(ind)
        top = opens[-1] if opens else None
        if is_note:
            if not keep:
                continue
            note = body[2:].strip()
            if body.startswith(">>"):
                notes.append(note)
                if pending_out is not None and _cancels_output(note):
                    pending_out.cancelled = True
                continue
            mm = _OUT_PORT_IS.match(body)
            if mm and pending_out is not None:
                pending_out.port = int(mm[1])
            mm = _TUN_DST_NOW.match(body)
            if mm:
                tun_dst_action = mm[1]
            continue
        if top is None:
            continue
        if top.action_indent is None:
            top.action_indent = ind
        elif ind != top.action_indent:
            continue  # deeper continuation text that is not an action
        if not top.keep:
            pending_out = None
            continue
        top.actions.append(body)
        pending_out = None
        out = _output_of(body, sec.flow)
        if out is not False:
            pending_out = _Out(sec_no, out)
            outs.append(pending_out)
        mm = _TUN_DST_SET.match(body)
        if mm:
            tun_dst_action = mm[1]
        mm = _TUN_DST_LOAD.match(body)
        if mm:
            tun_dst_action = _int_ip(mm[1])
    while opens:
        _close(opens.pop())

    effective = [o for o in outs if not o.cancelled]
    verdict: Verdict = "output" if effective else "drop"
    out_ports = tuple(o.port for o in effective if o.port is not None)
    out_port = effective[-1].port if effective else None
    final_sec = sections[effective[-1].section] if effective else sections[-1]
    tun_dst: str | None = None
    if effective:
        mm = _TUN_DST_FLOW.search(final_sec.final_flow or final_sec.flow)
        if mm and mm[1] != "0.0.0.0":
            tun_dst = mm[1]
    if tun_dst is None and tun_dst_action and tun_dst_action != "0.0.0.0":
        tun_dst = tun_dst_action
    return Trace(
        bridge=bridge,
        hops=tuple(hops),
        verdict=verdict,
        out_port=out_port,
        tun_dst=tun_dst,
        no_match_table=no_match,
        datapath_actions=tuple(s.datapath_actions for s in sections
                               if s.has_bridge and s.datapath_actions is not None),
        out_ports=out_ports,
        notes=tuple(notes),
        flow=sections[0].flow,
        final_flow=final_sec.final_flow or final_sec.flow,
    )


def _split_top(s: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts: list[str] = []
    depth = 0
    cur = ""
    for ch in s:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    if cur:
        parts.append(cur)
    return parts


def _ct_nested_actions(ct: str) -> list[str]:
    """The nested actions of a ``ct(...)`` action text, as the trace echoes them: ``nat[(...)]``
    and the items of ``exec(...)``, in order."""
    inner = ct[len("ct("):-1] if ct.endswith(")") else ct[len("ct("):]
    nested: list[str] = []
    for arg in _split_top(inner):
        if arg == "nat" or arg.startswith("nat("):
            nested.append(arg)
        elif arg.startswith("exec(") and arg.endswith(")"):
            nested.extend(_split_top(arg[len("exec("):-1]))
    return nested


def _output_of(action: str, section_flow: str) -> int | None | Literal[False]:
    """False if ``action`` does not output; else the port (None when it is not known here:
    NORMAL/FLOOD/ALL, or ``output:<field>`` until OVS's "-> output port is N" note)."""
    if action == "IN_PORT" or action == "output:IN_PORT":
        m = _IN_PORT.search(section_flow)
        return _port_num(m[1]) if m else None
    if action == "LOCAL" or action == "output:LOCAL":
        return OFPP_LOCAL
    if action in _FLOOD_LIKE:
        return None
    m = _OUT_NUM.match(action)
    if m:
        return int(m[1])
    m = _ENQUEUE.match(action)
    if m:
        return int(m[1])
    if _OUT_FIELD.match(action):
        return None
    return False
