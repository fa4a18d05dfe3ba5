"""A persistent OVSDB connection (RFC 7047 JSON-RPC over ovsdb-server's unix socket).

`vsctl.OVSDB` starts one ``ovs-vsctl`` process per transaction, and learning a new port's ofport
meant starting one every 10 ms until ovs-vswitchd had assigned it. This client keeps one connection
for the agent's life: a transaction is one request and its reply, and a monitor of the Interface,
Port and Open_vSwitch tables keeps a local copy of what the agent waits for (an Interface's
``ofport`` and ``error``, Port names and UUIDs, ``cur_cfg``), pushed by ovsdb-server as it changes.

Standard library only (`socket`, C-accelerated `json`): the `ovs` package's IDL on PyPI parses JSON in
pure Python (3.6 ms for 4 KB, `docs/ovs-layer.md`) and replicates whole tables; this needs three
columns of three tables.

Every write is idempotent and is one transaction: `add_port` inserts the Port and its Interface and
adds it to the bridge, or, when a Port of that name exists, sets the same columns on it (what
``ovs-vsctl --may-exist add-port ... -- set Interface ... -- set Port ...`` does); `del_port` of a port
that does not exist does nothing (``--if-exists del-port``). A connection that breaks (ovsdb-server
restarted) is opened again, and the monitor with it, by the next call.
"""

from __future__ import annotations

import codecs
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pyantrea.errors import OVSError

DB = "Open_vSwitch"
MONITORED = {
    "Interface": ["name", "ofport", "error"],
    "Port": ["name"],
    "Open_vSwitch": ["cur_cfg"],
}


def ovs_map(d: Mapping[str, str]) -> list[Any]:
    """A Python dict as an OVSDB map (``["map", [[k, v], ...]]``)."""
    return ["map", [[str(k), str(v)] for k, v in sorted(d.items())]]


def _atom_or_empty(v: Any) -> Any:
    """An optional column's value: ``["set", []]`` is None, a bare atom is itself."""
    if isinstance(v, list) and len(v) == 2 and v[0] == "set":
        return v[1][0] if v[1] else None
    return v


class OVSDBClient:
    """One JSON-RPC connection to ``db`` (a socket path, or ``unix:PATH``)."""

    def __init__(self, db: str | Path, *, timeout: float = 10.0, log: Callable[[str], None] | None = None):
        s = str(db)
        self.path = s[len("unix:"):] if s.startswith("unix:") else s
        self.timeout = timeout
        self.log = log or (lambda m: None)
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._conn_lock = threading.Lock()
        self._cond = threading.Condition()
        self._next_id = 0
        self._replies: dict[int, Any] = {}
        self._gen = 0  # connection generation: replies and waits of a broken connection fail
        self._dead: set[int] = set()
        self._monitors: set[int] = set()  # ids of monitor requests (their answer is the first copy)
        # the monitored state, guarded by _cond
        self.interfaces: dict[str, dict[str, Any]] = {}  # uuid -> {name, ofport, error}
        self.ports: dict[str, str] = {}  # uuid -> name
        self.cur_cfg = 0
        self.transactions = 0  # how many transactions were sent (stats)

    def __repr__(self) -> str:
        return f"OVSDBClient({self.path!r})"

    # ------------------------------------------------------------------ connection

    def _connect(self) -> int:
        """Connected, and the monitor's first copy in place, on return; the connection's generation."""
        with self._cond:
            if self._sock is not None and self._gen not in self._dead:
                return self._gen
        with self._conn_lock:  # one connection attempt at a time
            with self._cond:
                if self._sock is not None and self._gen not in self._dead:
                    return self._gen
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(self.timeout)
                s.connect(self.path)
                s.settimeout(None)
            except OSError as e:
                s.close()
                raise OVSError(f"OVSDB at unix:{self.path}: cannot connect: {e}") from e
            with self._cond:
                self._gen += 1
                gen = self._gen
                self._sock = s
                self.interfaces, self.ports, self.cur_cfg = {}, {}, 0
            threading.Thread(target=self._read_loop, args=(s, gen), daemon=True, name=f"ovsdb:{self.path}").start()
            # the reader applies the monitor's answer itself, before any update that follows it
            self._call("monitor", [DB, "pyantrea", {t: {"columns": c} for t, c in MONITORED.items()}], gen,
                       monitor=True)
            return gen

    def close(self) -> None:
        with self._cond:
            s, gen = self._sock, self._gen
        if s is not None:
            self._drop(s, gen)

    def _drop(self, s: socket.socket, gen: int) -> None:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
        with self._cond:
            if self._sock is s:
                self._sock = None
            self._dead.add(gen)
            self._cond.notify_all()

    def _read_loop(self, s: socket.socket, gen: int) -> None:
        dec = json.JSONDecoder()
        utf8 = codecs.getincrementaldecoder("utf-8")()
        buf = ""
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                buf += utf8.decode(data)
                while True:
                    buf = buf.lstrip()
                    if not buf:
                        break
                    try:
                        msg, end = dec.raw_decode(buf)
                    except ValueError:
                        break  # incomplete: wait for the rest
                    buf = buf[end:]
                    self._dispatch(s, msg)
        except OSError:
            pass
        finally:
            self._drop(s, gen)

    def _dispatch(self, s: socket.socket, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        method = msg.get("method")
        if method == "echo":  # keep-alive probe: answer with the same params
            self._send(s, {"id": msg.get("id"), "result": msg.get("params", []), "error": None})
        elif method == "update":
            params = msg.get("params") or []
            if len(params) == 2:
                self._apply(params[1])
        elif method is None and isinstance(msg.get("id"), int):
            if msg["id"] in self._monitors and msg.get("error") is None:
                self._apply(msg.get("result"))
            with self._cond:
                self._monitors.discard(msg["id"])
                self._replies[msg["id"]] = msg
                self._cond.notify_all()

    def _send(self, s: socket.socket, obj: Any) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode()
        with self._send_lock:
            s.sendall(data)

    def _call(self, method: str, params: list[Any], gen: int, monitor: bool = False) -> Any:
        with self._cond:
            s = self._sock if self._gen == gen else None
            if s is None or gen in self._dead:
                raise OVSError(f"OVSDB at unix:{self.path}: not connected")
            self._next_id += 1
            rid = self._next_id
            if monitor:
                self._monitors.add(rid)
        try:
            self._send(s, {"method": method, "params": params, "id": rid})
        except OSError as e:
            self._drop(s, gen)
            raise OVSError(f"OVSDB at unix:{self.path}: {method}: {e}") from e
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while rid not in self._replies:
                left = deadline - time.monotonic()
                if gen in self._dead:
                    raise OVSError(f"OVSDB at unix:{self.path}: the connection closed during {method}")
                if left <= 0:
                    raise OVSError(f"OVSDB at unix:{self.path}: no answer to {method} within {self.timeout:g} s")
                self._cond.wait(left)
            msg = self._replies.pop(rid)
        if msg.get("error") is not None:
            raise OVSError(f"OVSDB at unix:{self.path}: {method}: {msg['error']}")
        return msg.get("result")

    # ------------------------------------------------------------------ the monitored copy

    def _apply(self, updates: Any) -> None:
        if not isinstance(updates, dict):
            return
        with self._cond:
            for uuid, ch in (updates.get("Interface") or {}).items():
                new = ch.get("new")
                if new is None:
                    self.interfaces.pop(uuid, None)
                    continue
                row = self.interfaces.setdefault(uuid, {})
                if "name" in new:
                    row["name"] = new["name"]
                if "ofport" in new:
                    row["ofport"] = _atom_or_empty(new["ofport"])
                if "error" in new:
                    row["error"] = _atom_or_empty(new["error"])
            for uuid, ch in (updates.get("Port") or {}).items():
                new = ch.get("new")
                if new is None:
                    self.ports.pop(uuid, None)
                elif "name" in new:
                    self.ports[uuid] = new["name"]
            for _, ch in (updates.get("Open_vSwitch") or {}).items():
                new = ch.get("new") or {}
                if "cur_cfg" in new:
                    self.cur_cfg = int(new["cur_cfg"])
            self._cond.notify_all()

    def port_uuid(self, name: str) -> str | None:
        """The UUID of the Port named ``name`` (the monitored copy), None if there is none."""
        self._connect()
        with self._cond:
            return next((u for u, n in self.ports.items() if n == name), None)

    # ------------------------------------------------------------------ transactions

    def transact(self, ops: Sequence[Mapping[str, Any]], *, wait_vswitchd: bool = False,
                 meanwhile: Callable[[], None] | None = None) -> list[Any]:
        """Run ``ops`` as ONE transaction; returns the per-operation results. Raises OVSError naming
        the failing operation. With ``wait_vswitchd`` the transaction also bumps ``next_cfg`` and
        this returns once ovs-vswitchd has applied it (``cur_cfg``), as ``ovs-vsctl`` waits;
        ``meanwhile`` runs after the commit, while ovs-vswitchd applies it."""
        ops = list(ops)
        if wait_vswitchd:
            ops += [{"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["next_cfg", "+=", 1]]},
                    {"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]}]
        for attempt in (0, 1):
            gen = self._connect()
            try:
                res = self._call("transact", [DB, *ops], gen)
                break
            except OVSError as e:
                if attempt or "connection closed" not in str(e) and "not connected" not in str(e):
                    raise
        self.transactions += 1
        if not isinstance(res, list):
            raise OVSError(f"OVSDB at unix:{self.path}: transact: unexpected answer {res!r}")
        for i, r in enumerate(res):
            if isinstance(r, dict) and r.get("error"):
                what = json.dumps(ops[i]) if i < len(ops) else "commit"
                raise OVSError(f"OVSDB at unix:{self.path}: transaction failed: {r['error']}: "
                               f"{r.get('details', '')} (operation {what[:200]})")
        if meanwhile is not None:
            meanwhile()
        if wait_vswitchd:
            rows = res[-1].get("rows") if isinstance(res[-1], dict) else None
            if rows:
                want = int(rows[0]["next_cfg"])
                self._wait(lambda: self.cur_cfg >= want, "ovs-vswitchd to apply the change", gen)
            res = res[:-2]
        return res

    def _wait(self, cond: Callable[[], bool], what: str, gen: int, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._cond:
            while not cond():
                left = deadline - time.monotonic()
                if gen in self._dead:
                    raise OVSError(f"OVSDB at unix:{self.path}: the connection closed while waiting for {what}")
                if left <= 0:
                    raise OVSError(f"OVSDB at unix:{self.path}: waited {timeout or self.timeout:g} s for {what}")
                self._cond.wait(left)

    # ------------------------------------------------------------------ ports

    def add_port(self, bridge: str, name: str, *, ofport_request: int | None = None,
                 port_external_ids: Mapping[str, str] | None = None) -> str:
        """Add port ``name`` (one Interface of the same name, type ""/system) to ``bridge``, with these
        Port external_ids and Interface ofport_request; one transaction. Returns the Port's UUID."""
        iface: dict[str, Any] = {"name": name}
        if ofport_request is not None:
            iface["ofport_request"] = int(ofport_request)
        ids = dict(port_external_ids or {})
        if self.port_uuid(name) is None:
            ops: list[dict[str, Any]] = [
                # the bridge must exist (a mutate of no row is not an error by itself)
                {"op": "wait", "table": "Bridge", "where": [["name", "==", bridge]], "columns": ["name"],
                 "until": "==", "rows": [{"name": bridge}], "timeout": 0},
                {"op": "insert", "table": "Interface", "row": iface, "uuid-name": "iface"},
                {"op": "insert", "table": "Port", "uuid-name": "port",
                 "row": {"name": name, "interfaces": ["named-uuid", "iface"], "external_ids": ovs_map(ids)}},
                {"op": "mutate", "table": "Bridge", "where": [["name", "==", bridge]],
                 "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]]},
            ]
            try:
                res = self.transact(ops)
                return str(res[2]["uuid"][1])
            except OVSError as e:
                if "constraint violation" not in str(e):  # else: created meanwhile, set it below
                    raise
        uuid = self.port_uuid(name)
        if uuid is None:
            raise OVSError(f"OVSDB at unix:{self.path}: port {name} neither added nor found")
        ops = [
            {"op": "mutate", "table": "Bridge", "where": [["name", "==", bridge]],
             "mutations": [["ports", "insert", ["set", [["uuid", uuid]]]]]},
            {"op": "mutate", "table": "Port", "where": [["_uuid", "==", ["uuid", uuid]]],
             "mutations": [["external_ids", "delete", ["set", sorted(ids)]], ["external_ids", "insert", ovs_map(ids)]]},
        ]
        if ofport_request is not None:
            ops.append({"op": "update", "table": "Interface", "where": [["name", "==", name]],
                        "row": {"ofport_request": int(ofport_request)}})
        self.transact(ops)
        return uuid

    def del_port(self, bridge: str, name: str, *, wait_vswitchd: bool = True,
                 meanwhile: Callable[[], None] | None = None) -> bool:
        """Remove port ``name`` from ``bridge`` (its Port and Interface rows go with it); False if
        there was none. By default returns once ovs-vswitchd has let go of the device; ``meanwhile``
        runs while it does (and also when there was no port)."""
        uuid = self.port_uuid(name)
        if uuid is None:
            if meanwhile is not None:
                meanwhile()
            return False
        self.transact([{"op": "mutate", "table": "Bridge", "where": [["name", "==", bridge]],
                        "mutations": [["ports", "delete", ["set", [["uuid", uuid]]]]]}],
                      wait_vswitchd=wait_vswitchd, meanwhile=meanwhile)
        return True

    def wait_ofport(self, name: str, timeout: float = 5.0) -> int:
        """The ofport OVS assigned to interface ``name``, waiting (on the monitor's updates, no
        polling) until it has one; OVSError with Interface.error after ``timeout``."""
        gen = self._connect()
        found: list[int] = []

        def assigned() -> bool:
            for row in self.interfaces.values():
                if row.get("name") == name and isinstance(row.get("ofport"), int) and row["ofport"] > 0:
                    found.append(row["ofport"])
                    return True
            return False

        try:
            self._wait(assigned, f"an ofport of interface {name}", gen, timeout)
        except OVSError as e:
            with self._cond:
                row = next((r for r in self.interfaces.values() if r.get("name") == name), {})
            raise OVSError(f"ofport of interface {name} on unix:{self.path}: still {row.get('ofport') or '[]'} "
                           f"after {timeout:g} s (Interface.error: {row.get('error') or '[]'}) ({e})") from None
        return found[0]
