"""OpenFlow access to one bridge through ``ovs-ofctl``. Flows go in and out as text lines.

Every change (replace/add/mod/del-strict) is ONE ``ovs-ofctl -O OpenFlow13 --bundle`` call with
the flows on stdin, so it is atomic: a single bad line rejects the whole batch and nothing
changes. ``-O OpenFlow13`` is needed for ``--bundle`` on a bridge whose protocols are
``OpenFlow10,OpenFlow13`` (Antrea's); without it ovs-ofctl only offers OF1.4+ for bundles and
version negotiation fails.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from pyantrea.errors import OVSError
from pyantrea.ovs.prestart import Prestarted
from pyantrea.ovs.vsctl import run_tool

OFPP_LOCAL = 0xFFFE
"""OpenFlow port number of a bridge's own internal port (``LOCAL``)."""

_HEADER = re.compile(r"^(NXST|OFPST)_FLOW reply\b")
_ACTIONS = re.compile(r"[\s,]+actions\s*=.*$")


_BARE_COOKIE = re.compile(r"(^|[\s,])cookie=(0x[0-9a-fA-F]+|\d+)(?=[\s,]|$)")


def strip_actions(line: str) -> str:
    """Drop the ``actions=...`` part (always last in ovs-ofctl syntax) of a flow line."""
    return _ACTIONS.sub("", line.strip())


def delete_spec(line: str) -> str:
    """A flow line as a strict-delete spec: no actions, and no *unmasked* cookie (ovs-ofctl
    refuses ``cookie=V`` in a delete; table+priority+match identify the flow anyway). A masked
    ``cookie=V/M`` is kept and restricts the deletion to flows with that cookie."""
    spec = _BARE_COOKIE.sub(r"\1", strip_actions(line))
    return re.sub(r"^[\s,]+|[\s,]+$", "", re.sub(r"(,\s*){2,}", ",", spec))


class OFBridge:
    """One bridge's OpenFlow management socket (``RUNDIR/<bridge>.mgmt``).

    ``mgmt`` is that socket's path, or any ovs-ofctl target (``unix:...``, ``tcp:...``).

    ``names=False``: the lines given to the changes (replace/add/mod/del, `bundle`) use port and table
    numbers only, so ovs-ofctl runs with ``--no-names`` and skips what it asks the switch first to
    read names (the port list, and under OpenFlow 1.3 the features of all 255 tables: about 20 of
    the 25-40 ms of a small bundle).

    ``prestart=True``: `add_flows` goes to an ``ovs-ofctl ... add-flows`` process started before it is
    needed (`prestart.Prestarted`: 2.6 instead of 6.1 ms for a small bundle); `close()` stops it.
    """

    def __init__(self, mgmt: str | Path, *, timeout: int = 30, names: bool = True, prestart: bool = False) -> None:
        s = str(mgmt)
        self.target = s if re.match(r"^(unix|tcp|ssl):", s) else f"unix:{s}"
        self.timeout = timeout
        self.names = names
        self._add_flows: Prestarted | None = None
        if prestart:  # (no --timeout: it would run from the process's start; the call's is enforced)
            self._add_flows = Prestarted(["ovs-ofctl", "-O", "OpenFlow13", "--bundle",
                                          *([] if names else ["--no-names"]), "add-flows", self.target, "-"])

    def close(self) -> None:
        if self._add_flows is not None:
            self._add_flows.close()

    def __repr__(self) -> str:
        return f"OFBridge({self.target!r})"

    def _ofctl(self, *args: str, input: str | None = None, of13: bool = True) -> str:
        argv = ["ovs-ofctl", f"--timeout={self.timeout}"]
        if of13:
            argv += ["-O", "OpenFlow13"]
        argv += list(args)
        return run_tool(argv, input=input, timeout=self.timeout + 5)

    @staticmethod
    def _stdin(lines: Iterable[str]) -> str:
        body = [ln.strip() for ln in lines]
        return "".join(ln + "\n" for ln in body if ln and not ln.startswith("#"))

    def _bundle(self, verb: str, lines: Iterable[str], *, strict: bool = False) -> None:
        text = self._stdin(lines)
        if not text and verb != "replace-flows":
            return  # nothing to do; an empty bundle is still a round trip
        if verb == "add-flows" and not strict and self._add_flows is not None:
            self._add_flows.run(text, timeout=self.timeout + 5)
            return
        args = ["--bundle"] + (["--strict"] if strict else []) + ([] if self.names else ["--no-names"]) \
            + [verb, self.target, "-"]
        self._ofctl(*args, input=text)

    # ------------------------------------------------------------------ changes

    def replace_flows(self, lines: Iterable[str]) -> None:
        """Make the bridge's flow table exactly ``lines`` (one atomic bundle). Flows already
        present with the same match, priority, cookie and actions are left untouched (their
        counters and durations survive)."""
        self._bundle("replace-flows", lines)

    def add_flows(self, lines: Iterable[str]) -> None:
        """Add (or overwrite, same match+priority) flows, in one atomic bundle."""
        self._bundle("add-flows", lines)

    def mod_flows(self, lines: Iterable[str], *, strict: bool = True) -> None:
        """Change the actions of existing flows, in one atomic bundle. Under OpenFlow 1.3 the
        cookie is NOT changed (a ``cookie=`` in the line is ignored): use :meth:`add_flows`
        (which overwrites a flow with the same table+priority+match, resetting its counters) to
        change cookies."""
        self._bundle("mod-flows", lines, strict=strict)

    def del_flows_strict(self, lines: Iterable[str]) -> None:
        """Delete exactly these flows (table + priority + match), in one atomic bundle. Lines may
        be full flow lines: their ``actions=`` part and unmasked cookie are dropped
        (:func:`delete_spec`)."""
        self._bundle("del-flows", (delete_spec(ln) for ln in lines), strict=True)

    def bundle(self, lines: Iterable[str]) -> None:
        """``ovs-ofctl -O OpenFlow13 bundle``: flow AND group mods in one atomic transaction, executed
        in order. Each line starts with ``flow add|modify|modify_strict|delete|delete_strict`` or
        ``group add|modify|add_or_mod|delete``, then the flow or group in ovs-ofctl syntax. A group
        must exist before a flow that names it is added, and a group that is deleted drops the flows
        that name it: callers order the lines accordingly (groups added first, deleted last)."""
        text = self._stdin(lines)
        if text:
            self._ofctl(*([] if self.names else ["--no-names"]), "bundle", self.target, "-", input=text)

    def del_flows(self, match: str = "") -> None:
        """Delete every flow matching ``match`` (non-strict), e.g.
        ``cookie=0x2000000000000/0xffff000000000000`` or ``table=31``; ``""`` deletes all."""
        self._ofctl("del-flows", self.target, *([match] if match else []))

    def add_tlv_map(self, spec: str, *, may_exist: bool = True) -> None:
        """``add-tlv-map``, e.g. ``{class=0x0104,type=0x80,len=4}->tun_metadata0``.

        With ``may_exist``, an identical mapping that is already installed is not an error
        (OVS itself answers ``NXTTMFC_ALREADY_MAPPED``)."""
        try:
            self._ofctl("add-tlv-map", self.target, spec)
        except OVSError as e:
            if may_exist and "ALREADY_MAPPED" in str(e) and self._tlv_mapped(spec):
                return
            raise

    def dump_tlv_map(self) -> list[tuple[int, int, int, str]]:
        """Installed TLV mappings as ``(class, type, length, field)``."""
        out = self._ofctl("dump-tlv-map", self.target)
        rows = []
        for line in out.splitlines():
            m = re.match(r"^\s*(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(\d+)\s+(\S+)\s*$", line)
            if m:
                rows.append((int(m[1], 16), int(m[2], 16), int(m[3]), m[4]))
        return rows

    def _tlv_mapped(self, spec: str) -> bool:
        wanted = _parse_tlv_spec(spec)
        return bool(wanted) and set(wanted) <= set(self.dump_tlv_map())

    # ------------------------------------------------------------------ reads

    def dump_flows(
        self,
        names: bool = True,
        no_stats: bool = True,
        of13: bool = False,
        table: int | None = None,
        match: str | None = None,
    ) -> list[str]:
        """``ovs-ofctl dump-flows``: OVS's lines verbatim (leading space kept), minus the
        ``NXST_FLOW reply``/``OFPST_FLOW reply`` header. Without ``of13`` the tool negotiates
        OpenFlow 1.0 (the rendering of ``ovs-ofctl dump-flows br-int``)."""
        args = ["--names" if names else "--no-names"]
        if no_stats:
            args.append("--no-stats")
        args += ["dump-flows", self.target]
        sel = ",".join(x for x in ([f"table={table}"] if table is not None else []) + ([match] if match else []))
        if sel:
            args.append(sel)
        out = self._ofctl(*args, of13=of13)
        return [ln for ln in out.splitlines() if ln and not _HEADER.match(ln)]

    def dump_groups(self) -> list[str]:
        """``ovs-ofctl -O OpenFlow13 dump-groups``: one line per group (leading space kept), sorted
        by group id (OVS returns them in hash order)."""
        out = self._ofctl("dump-groups", self.target)
        lines = [ln for ln in out.splitlines() if ln.strip() and not _GROUP_HEADER.match(ln)]
        return sorted(lines, key=_group_id_of)

    def dump_group_stats(self) -> dict[int, dict[str, object]]:
        """``ovs-ofctl -O OpenFlow13 dump-group-stats``: group id -> ``{"packets", "bytes",
        "buckets": [(packets, bytes), ...]}`` (buckets in their order in the group)."""
        out = self._ofctl("dump-group-stats", self.target)
        stats: dict[int, dict[str, object]] = {}
        for line in out.splitlines():
            m = re.match(r"^\s*group_id=(\d+),", line)
            if not m:
                continue
            tot = re.search(r"(?<!:)packet_count=(\d+),byte_count=(\d+)", line)
            buckets = [(int(b[1]), int(b[2])) for b in re.finditer(r"bucket\d+:packet_count=(\d+),byte_count=(\d+)", line)]
            stats[int(m[1])] = {"packets": int(tot[1]) if tot else 0, "bytes": int(tot[2]) if tot else 0,
                                "buckets": buckets}
        return stats

    def group_ids(self) -> list[int]:
        return [_group_id_of(ln) for ln in self.dump_groups()]

    def show(self) -> dict[str, int]:
        """Port name -> ofport, from ``ovs-ofctl show`` (the bridge's own port is LOCAL=65534)."""
        out = self._ofctl("show", self.target, of13=False)
        ports: dict[str, int] = {}
        for line in out.splitlines():
            m = re.match(r"^ (\d+|LOCAL)\((.*)\): addr:", line)
            if m:
                ports[m[2]] = OFPP_LOCAL if m[1] == "LOCAL" else int(m[1])
        return ports


_GROUP_HEADER = re.compile(r"^(NXST|OFPST)_GROUP_DESC reply\b")


def _group_id_of(line: str) -> int:
    m = re.search(r"group_id=(\d+)", line)
    return int(m[1]) if m else -1


def _parse_tlv_spec(spec: str) -> list[tuple[int, int, int, str]]:
    out = []
    for m in re.finditer(r"\{\s*class=(\w+)\s*,\s*type=(\w+)\s*,\s*len=(\w+)\s*\}\s*->\s*(tun_metadata\d+)", spec):
        out.append((int(m[1], 0), int(m[2], 0), int(m[3], 0), m[4]))
    return out
