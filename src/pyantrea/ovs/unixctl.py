"""A persistent unixctl (``ovs-appctl``) client for one OVS daemon's control socket.

Every ``ovs-appctl`` process costs several milliseconds of start-up; one connection kept open
answers the same request in a fraction of that (figures in docs/ovs-layer.md). The unixctl
protocol is JSON-RPC 1.0 over a unix stream socket. Three transports speak it:

* ``"socket"`` (default): a minimal client on the standard library (``socket`` + C-accelerated
  ``json``). No dependency.
* ``"ovs"``: ``ovs.unixctl.client.UnixctlClient`` over ``ovs.stream`` from the Python ``ovs``
  package. Same protocol, but the PyPI ``ovs`` wheel has no C JSON parser and its pure-Python one
  needs ~3.5 ms to decode a 4 KB trace, ten times the rest of the round trip; Debian's
  ``python3-openvswitch`` (system python only) has the C parser.
* ``"subprocess"``: ``ovs-appctl -t PATH`` per call.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import json
import os
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from pyantrea.errors import OVSError
from pyantrea.ovs.vsctl import run_tool

try:  # pragma: no cover - depends on the environment
    import ovs.jsonrpc
    import ovs.poller
    import ovs.stream
    import ovs.unixctl.client

    HAVE_OVS_PY = True
except ImportError:  # pragma: no cover
    HAVE_OVS_PY = False

Transport = Literal["auto", "socket", "ovs", "subprocess"]

_NO_RETRY = frozenset({"exit"})  # never resent after a broken connection


class _Broken(Exception):
    """The connection failed (daemon gone or restarted); the call may be retried once."""


class _Client(Protocol):
    def transact(self, command: str, args: list[str]) -> tuple[Any, Any]:
        """(error, result) of one request; raises _Broken or OVSError (timeout)."""

    def close(self) -> None: ...


class _SocketClient:
    """JSON-RPC 1.0 over AF_UNIX with the standard library."""

    def __init__(self, path: str, timeout: float) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError:
            self._sock.close()
            raise
        self._buf = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._json = json.JSONDecoder()
        self._id = 0

    def transact(self, command: str, args: list[str]) -> tuple[Any, Any]:
        self._id += 1
        req = json.dumps({"id": self._id, "method": command, "params": args})
        try:
            self._sock.sendall(req.encode())
            while True:
                msg = self._recv_msg()
                if isinstance(msg, dict) and msg.get("id") == self._id and "method" not in msg:
                    return msg.get("error"), msg.get("result")
        except TimeoutError:
            raise
        except OSError as e:
            raise _Broken(os.strerror(e.errno) if e.errno else str(e)) from e

    def _recv_msg(self) -> Any:
        while True:
            s = self._buf.lstrip()
            if s.endswith("}"):  # only then can a whole object be there: avoid quadratic re-parsing
                try:
                    obj, end = self._json.raw_decode(s)
                except json.JSONDecodeError:
                    pass
                else:
                    self._buf = s[end:]
                    return obj
            data = self._sock.recv(1 << 16)
            if not data:
                raise _Broken("connection closed by peer")
            self._buf = s + self._utf8.decode(data)

    def close(self) -> None:
        self._sock.close()


class _OvsLibClient:
    """``ovs.unixctl.client.UnixctlClient`` over ``ovs.stream``, with a reply deadline."""

    def __init__(self, path: str, timeout: float) -> None:
        err, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(f"unix:{path}"))
        if err:
            raise OSError(err, _strerror(err))
        self._conn = ovs.jsonrpc.Connection(stream)
        self._client = ovs.unixctl.client.UnixctlClient(self._conn)
        self._timeout = timeout

    def transact(self, command: str, args: list[str]) -> tuple[Any, Any]:
        conn = self._conn
        request = ovs.jsonrpc.Message.create_request(command, args)
        err = conn.send(request)
        if err:
            raise _Broken(_strerror(err))
        deadline = time.monotonic() + self._timeout
        while True:
            conn.run()
            err, msg = conn.recv()
            if err == 0:
                if msg.type in (ovs.jsonrpc.Message.T_REPLY, ovs.jsonrpc.Message.T_ERROR) and msg.id == request.id:
                    return msg.error, msg.result
                continue
            if err != errno.EAGAIN:
                raise _Broken(_strerror(err))
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            poller = ovs.poller.Poller()
            conn.wait(poller)
            conn.recv_wait(poller)
            poller.timer_wait(int(left * 1000) + 1)
            poller.block()

    def close(self) -> None:
        self._client.close()


class Unixctl:
    """Client for ``ctl`` (e.g. ``RUNDIR/ovs-vswitchd.ctl``).

    ``call()`` returns the daemon's reply text verbatim and raises :class:`OVSError` when the
    daemon answers with an error (the message has the command and the daemon's text), cannot be
    reached, or does not answer within ``timeout``. A broken connection (daemon restarted) is
    reopened and the request resent once (never for ``exit``). Calls are serialised (thread-safe).
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, ctl: str | Path, *, timeout: float = 30.0, transport: Transport = "auto") -> None:
        self.path = str(ctl)
        self.timeout = timeout
        if transport == "auto":
            transport = "socket"
        if transport == "ovs" and not HAVE_OVS_PY:
            raise OVSError("unixctl: the Python 'ovs' package is not installed (pip install ovs)")
        self.transport: Literal["socket", "ovs", "subprocess"] = transport
        self._client: _Client | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Unixctl({self.path!r}, transport={self.transport!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing a dead connection must not fail
                self._client.close()
            self._client = None

    def _describe(self, command: str, args: list[str]) -> str:
        return " ".join(["ovs-appctl", "-t", self.path, command, *args])

    def call(self, command: str, args: list[str] | tuple[str, ...] = ()) -> str:
        """Run one unixctl command; return the daemon's reply text verbatim."""
        argv = [str(a) for a in args]
        if self.transport == "subprocess":
            return run_tool(["ovs-appctl", f"--timeout={max(1, int(self.timeout))}", "-t", self.path,
                             command, *argv], timeout=self.timeout + 5)
        with self._lock:
            attempts = 1 if command in _NO_RETRY else 2
            why = ""
            for _ in range(attempts):
                try:
                    if self._client is None:
                        self._client = self._connect()
                    error, result = self._client.transact(command, argv)
                except OSError as e:  # connect failed (or TimeoutError)
                    self._drop()
                    if isinstance(e, TimeoutError):
                        raise OVSError(f"{self._describe(command, argv)}: no reply within {self.timeout:g} s") from e
                    raise OVSError(f"{self._describe(command, argv)}: cannot connect: "
                                   f"{e.strerror or e}") from e
                except _Broken as e:
                    self._drop()
                    why = str(e)
                    continue
                if error is not None:
                    raise OVSError(f"{self._describe(command, argv)}: {_text(error).rstrip()}")
                return _text(result)
            raise OVSError(f"{self._describe(command, argv)}: connection failed: {why}")

    def _connect(self) -> _Client:
        if self.transport == "ovs":
            return _OvsLibClient(self.path, self.timeout)
        return _SocketClient(self.path, self.timeout)


def _text(v: Any) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(v)


def _strerror(err: int) -> str:
    if err == -1:  # ovs.util.EOF
        return "connection closed by peer"
    try:
        return os.strerror(err)
    except (ValueError, OverflowError):
        return f"error {err}"
