"""OVSDB access through ``ovs-vsctl``: one process call is one OVSDB transaction.

Nothing here is Antrea-specific. The helpers (:meth:`OVSDB.add_br`, :meth:`OVSDB.add_port`, ...)
only *build* ``ovs-vsctl`` commands, so that a caller can batch many of them into a single
transaction::

    db = OVSDB("/tmp/pa-x/db.sock")
    db.transact(
        db.add_br("br-int", "netdev", ["OpenFlow10", "OpenFlow13"])
        + db.add_port("br-int", "antrea-gw0", type="internal", ofport_request=2)
    )

This module also holds :func:`run_tool`, the one subprocess runner every OVS tool call of this
package goes through (it turns failures into :class:`pyantrea.errors.OVSError`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyantrea.errors import OVSError

Command = list[str]
"""One ``ovs-vsctl`` command with its per-command options, e.g. ``["--may-exist", "add-br", "br-int"]``."""


def run_tool(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run an OVS command-line tool and return its stdout.

    Raises :class:`OVSError` naming the command and carrying OVS's stderr when the tool is
    missing, times out or exits non-zero.
    """
    cmd = " ".join(_shell_quote(a) for a in argv)
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            check=False,
        )
    except FileNotFoundError as e:
        raise OVSError(f"{cmd}: {argv[0]} not found ({e.strerror})") from e
    except subprocess.TimeoutExpired as e:
        raise OVSError(f"{cmd}: timed out after {timeout:g} s") from e
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip()) or "(no output)"
        raise OVSError(f"{cmd}: exit code {proc.returncode}: {said}")
    return proc.stdout


_SAFE_SHELL = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def _shell_quote(arg: str) -> str:
    if arg and _SAFE_SHELL.match(arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


_SAFE_ATOM = re.compile(r"^[A-Za-z0-9_.-]+$")


def atom(value: str | int | bool) -> str:
    """Render a value as an ``ovs-vsctl`` atom: bools/ints bare, strings quoted unless trivially safe.

    Quoting keeps strings like ``"3"`` strings and protects ``:``, ``=``, ``,`` and spaces
    (MACs, free text) from ovs-vsctl's ``column:key=value`` parser.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if _SAFE_ATOM.match(value) and not _looks_numeric(value):
        return value
    return json.dumps(value)


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return s.lower() in ("true", "false")
    return True


def _map_args(column: str, kv: Mapping[str, str | int | bool]) -> list[str]:
    return [f"{column}:{atom(str(k))}={atom(v)}" for k, v in sorted(kv.items())]


def _from_ovsdb_json(value: Any) -> Any:
    """Decode OVSDB's JSON notation (``["map", ...]``, ``["set", ...]``, ``["uuid", ...]``)."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        kind, body = value
        if kind == "map":
            return {_from_ovsdb_json(k): _from_ovsdb_json(v) for k, v in body}
        if kind == "set":
            return [_from_ovsdb_json(v) for v in body]
        if kind in ("uuid", "named-uuid"):
            return body
    return value


@dataclass(frozen=True)
class PortInfo:
    """One port of a bridge, as OVSDB has it (Port joined with its Interface)."""

    name: str
    ofport: int  # -1 when OVS has not assigned one (or failed to)
    type: str  # "" for a system/netdev port, "internal", "geneve", "patch", ...
    options: dict[str, str] = field(default_factory=dict)
    external_ids: dict[str, str] = field(default_factory=dict)  # the *Port* record's (Antrea style)
    mac_in_use: str | None = None
    uuid: str = ""  # the Port record's UUID
    interface_external_ids: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # Interface.error, e.g. "could not open network device"


class OVSDB:
    """An OVSDB (``Open_vSwitch`` database) reached by ``ovs-vsctl --db=REMOTE``.

    ``db`` is a socket path (``/run/x/db.sock``) or a full remote (``unix:...``, ``tcp:...``).
    """

    def __init__(self, db: str | Path, *, timeout: int = 10) -> None:
        s = str(db)
        self.remote = s if re.match(r"^(unix|tcp|ssl|punix):", s) else f"unix:{s}"
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"OVSDB({self.remote!r})"

    # ------------------------------------------------------------------ running

    def argv(self, commands: Sequence[Sequence[str]], *, no_wait: bool = False,
             global_opts: Sequence[str] = ()) -> list[str]:
        """The ``ovs-vsctl`` argv that runs ``commands`` as one transaction."""
        argv = ["ovs-vsctl", f"--timeout={self.timeout}", f"--db={self.remote}"]
        if no_wait:
            argv.append("--no-wait")
        argv.extend(global_opts)
        for c in commands:
            argv.append("--")
            argv.extend(c)
        return argv

    def transact(self, commands: Sequence[Sequence[str]], *, no_wait: bool = False) -> list[str]:
        """Run every command in ONE ``ovs-vsctl`` call (one OVSDB transaction).

        Returns stdout's lines in command order. ``get`` prints one line per column/key asked
        (an empty line for a missing key under ``--if-exists``); add/set/del print nothing.
        Unless ``no_wait``, ovs-vsctl waits (at most ``timeout`` s) until ovs-vswitchd has
        applied the change, so ofports are normally assigned when this returns.
        """
        if not commands:
            return []
        out = run_tool(self.argv(commands, no_wait=no_wait), timeout=self.timeout + 5)
        return out.splitlines()

    def _list_json(self, commands: Sequence[Sequence[str]]) -> list[list[dict[str, Any]]]:
        """Run ``list``/``find`` commands with ``--format=json``; one row list per command."""
        out = run_tool(self.argv(commands, no_wait=True, global_opts=["--format=json"]),
                       timeout=self.timeout + 5)
        tables: list[list[dict[str, Any]]] = []
        for line in out.splitlines():
            if not line.strip():
                continue
            doc = json.loads(line)
            heads = doc["headings"]
            tables.append([{h: _from_ovsdb_json(v) for h, v in zip(heads, row)} for row in doc["data"]])
        return tables

    # ------------------------------------------------------------------ command builders

    @staticmethod
    def add_br(
        name: str,
        datapath_type: str | None = None,
        protocols: Sequence[str] | str | None = None,
        fail_mode: str | None = "secure",
        may_exist: bool = True,
        other_config: Mapping[str, str] | None = None,
    ) -> list[Command]:
        """``add-br`` plus a ``set Bridge`` of datapath_type, protocols, fail_mode and other_config."""
        cmds: list[Command] = [(["--may-exist"] if may_exist else []) + ["add-br", name]]
        sets: list[str] = []
        if datapath_type is not None:
            sets.append(f"datapath_type={atom(datapath_type)}")
        if protocols is not None:
            protos = protocols if isinstance(protocols, str) else ",".join(protocols)
            sets.append(f"protocols={protos}" if protos else "protocols=[]")
        if fail_mode is not None:
            sets.append(f"fail_mode={atom(fail_mode)}")
        sets.extend(_map_args("other_config", other_config or {}))
        if sets:
            cmds.append(["set", "Bridge", name, *sets])
        return cmds

    @staticmethod
    def del_br(name: str, if_exists: bool = True) -> list[Command]:
        return [(["--if-exists"] if if_exists else []) + ["del-br", name]]

    @staticmethod
    def add_port(
        bridge: str,
        name: str,
        type: str | None = None,
        ofport_request: int | None = None,
        options: Mapping[str, str] | None = None,
        mtu_request: int | None = None,
        port_external_ids: Mapping[str, str] | None = None,
        may_exist: bool = True,
        interface_external_ids: Mapping[str, str] | None = None,
    ) -> list[Command]:
        """``add-port`` plus ``set Interface`` (type, ofport_request, options, mtu_request) and
        ``set Port`` (external_ids: on the Port record, as antrea-agent stores them)."""
        cmds: list[Command] = [(["--may-exist"] if may_exist else []) + ["add-port", bridge, name]]
        iface: list[str] = []
        if type is not None:
            iface.append(f"type={atom(type)}")
        if ofport_request is not None:
            iface.append(f"ofport_request={int(ofport_request)}")
        if mtu_request is not None:
            iface.append(f"mtu_request={int(mtu_request)}")
        iface.extend(_map_args("options", options or {}))
        iface.extend(_map_args("external_ids", interface_external_ids or {}))
        if iface:
            cmds.append(["set", "Interface", name, *iface])
        if port_external_ids:
            cmds.append(["set", "Port", name, *_map_args("external_ids", port_external_ids)])
        return cmds

    @staticmethod
    def del_port(bridge: str, name: str, if_exists: bool = True) -> list[Command]:
        return [(["--if-exists"] if if_exists else []) + ["del-port", bridge, name]]

    @staticmethod
    def set_(table: str, record: str, **kv: str | int | bool | Mapping[str, str]) -> list[Command]:
        """``set TABLE RECORD col=value ...``. A mapping value sets those keys only
        (``col:key=value``), leaving the column's other keys alone."""
        args: list[str] = []
        for col, val in kv.items():
            if isinstance(val, Mapping):
                args.extend(_map_args(col, val))
            else:
                args.append(f"{col}={atom(val)}")
        return [["set", table, record, *args]] if args else []

    @staticmethod
    def remove(table: str, record: str, column: str, *keys: str) -> list[Command]:
        """``remove TABLE RECORD COLUMN KEY...`` (delete map keys)."""
        return [["remove", table, record, column, *[atom(k) for k in keys]]]

    @staticmethod
    def get(table: str, record: str, *columns: str, if_exists: bool = False) -> list[Command]:
        """``get TABLE RECORD COLUMN[:KEY]...``: one output line per column."""
        return [(["--if-exists"] if if_exists else []) + ["get", table, record, *columns]]

    # ------------------------------------------------------------------ queries

    def wait_ofport(self, iface: str, timeout: float = 5.0) -> int:
        """Poll until OVS has assigned ``iface`` an ofport (not ``[]``, not -1) and return it."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            lines = self.transact(self.get("Interface", iface, "ofport", "error"), no_wait=True)
            last = lines[0].strip() if lines else ""
            if re.fullmatch(r"\d+", last) and int(last) > 0:
                return int(last)
            if time.monotonic() >= deadline:
                err = lines[1].strip() if len(lines) > 1 else "[]"
                raise OVSError(
                    f"ofport of interface {iface} on {self.remote}: still {last or '[]'} after "
                    f"{timeout:g} s (Interface.error: {err})"
                )
            time.sleep(0.01)

    def list_ports(self, bridge: str) -> list[PortInfo]:
        """Every port of ``bridge`` (including the bridge's own internal port), sorted by ofport
        then name, read with one ``ovs-vsctl --format=json`` call."""
        br, ports, ifaces = self._list_json([
            ["--columns=ports", "list", "Bridge", bridge],
            ["--columns=_uuid,name,interfaces,external_ids", "list", "Port"],
            ["--columns=_uuid,name,ofport,type,options,mac_in_use,external_ids,error", "list", "Interface"],
        ])
        if not br:
            raise OVSError(f"ovs-vsctl list Bridge {bridge}: no such bridge on {self.remote}")
        port_uuids = set(_as_list(br[0]["ports"]))
        by_iface = {i["_uuid"]: i for i in ifaces}
        result: list[PortInfo] = []
        for p in ports:
            if p["_uuid"] not in port_uuids:
                continue
            for iu in _as_list(p["interfaces"]):
                i = by_iface.get(iu)
                if i is None:
                    continue
                ofport = i["ofport"]
                mac = i["mac_in_use"]
                err = i["error"]
                result.append(PortInfo(
                    name=i["name"],
                    ofport=ofport if isinstance(ofport, int) else -1,
                    type=i["type"],
                    options=dict(i["options"]),
                    external_ids=dict(p["external_ids"]),
                    mac_in_use=mac if isinstance(mac, str) else None,
                    uuid=p["_uuid"],
                    interface_external_ids=dict(i["external_ids"]),
                    error=err if isinstance(err, str) else None,
                ))
        result.sort(key=lambda x: (x.ofport if x.ofport > 0 else 1 << 30, x.name))
        return result

    def bridge_external_ids(self, bridge: str) -> dict[str, str]:
        rows = self._list_json([["--columns=external_ids", "list", "Bridge", bridge]])[0]
        return dict(rows[0]["external_ids"]) if rows else {}

    def get_bridge_external_id(self, bridge: str, key: str) -> str | None:
        """One key of Bridge.external_ids (e.g. antrea-agent's ``roundNum``), None if absent."""
        return self.bridge_external_ids(bridge).get(key)

    def set_bridge_external_ids(self, bridge: str, ids: Mapping[str, str]) -> None:
        """Set these keys of Bridge.external_ids (other keys are kept)."""
        self.transact(self.set_("Bridge", bridge, external_ids=ids), no_wait=True)

    def bridge_exists(self, bridge: str) -> bool:
        return bool(self._list_json([["--columns=name", "find", "Bridge", f"name={atom(bridge)}"]])[0])


def _as_list(v: Any) -> list[Any]:
    """An OVSDB set column decodes to a list, except a 1-element set which is the bare value."""
    return v if isinstance(v, list) else [v]
