"""A persistent unixctl (``ovs-appctl``) client for one OVS daemon's control socket.

Each ``ovs-appctl`` process costs a couple of milliseconds of start-up; one JSON-RPC connection
kept open answers the same request in a fraction of that (see docs/ovs-layer.md). The Python
``ovs`` package (PyPI ``ovs`` or Debian's ``python3-openvswitch``) provides the protocol; if it is
missing, every call falls back to an ``ovs-appctl -t PATH`` subprocess.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pyantrea.errors import OVSError
from pyantrea.ovs.vsctl import run_tool

try:  # pragma: no cover - exercised implicitly
    import ovs.jsonrpc
    import ovs.poller
    import ovs.stream
    import ovs.unixctl.client

    HAVE_OVS_PY = True
except ImportError:  # pragma: no cover
    HAVE_OVS_PY = False

Transport = Literal["auto", "python", "subprocess"]

_NO_RETRY = frozenset({"exit"})  # never resent after a broken connection


class Unixctl:
    """Client for ``ctl`` (e.g. ``RUNDIR/ovs-vswitchd.ctl``).

    ``call()`` raises :class:`OVSError` when the daemon answers with an error (the message has
    the command and the daemon's text) or cannot be reached. A broken connection (daemon
    restarted) is reopened once per call. Thread-safe (calls are serialised). Use as a context
    manager or call :meth:`close`.
    """

    def __init__(self, ctl: str | Path, *, timeout: float = 30.0, transport: Transport = "auto") -> None:
        self.path = str(ctl)
        self.timeout = timeout
        if transport == "auto":
            transport = "python" if HAVE_OVS_PY else "subprocess"
        if transport == "python" and not HAVE_OVS_PY:
            raise OVSError("unixctl: the Python 'ovs' package is not installed (pip install ovs)")
        self.transport: Literal["python", "subprocess"] = transport
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Unixctl({self.path!r}, transport={self.transport!r})"

    def __enter__(self) -> Unixctl:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing a dead stream must not fail
                pass
            self._client = None

    def _describe(self, command: str, args: list[str]) -> str:
        return " ".join(["ovs-appctl", "-t", self.path, command, *args])

    # ------------------------------------------------------------------ calls

    def call(self, command: str, args: list[str] | tuple[str, ...] = ()) -> str:
        """Run one unixctl command; return the daemon's reply text verbatim."""
        argv = [str(a) for a in args]
        if self.transport == "subprocess":
            return run_tool(["ovs-appctl", f"--timeout={max(1, int(self.timeout))}", "-t", self.path,
                             command, *argv], timeout=self.timeout + 5)
        with self._lock:
            attempts = 1 if command in _NO_RETRY else 2
            last_err = 0
            for attempt in range(attempts):
                if self._client is None:
                    self._connect(command, argv)
                err, reply = self._transact(command, argv)
                if err == 0:
                    assert reply is not None
                    if reply.error is not None:
                        raise OVSError(f"{self._describe(command, argv)}: {_text(reply.error)}")
                    return _text(reply.result)
                last_err = err
                self._drop()
            raise OVSError(f"{self._describe(command, argv)}: connection failed: {_strerror(last_err)}")

    def _connect(self, command: str, argv: list[str]) -> None:
        err, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(f"unix:{self.path}"))
        if err:
            raise OVSError(f"{self._describe(command, argv)}: cannot connect: {_strerror(err)}")
        self._client = ovs.unixctl.client.UnixctlClient(ovs.jsonrpc.Connection(stream))

    def _transact(self, command: str, argv: list[str]) -> tuple[int, Any]:
        """Send one request and wait (bounded by ``timeout``) for its reply."""
        conn = self._client._conn
        request = ovs.jsonrpc.Message.create_request(command, argv)
        err = conn.send(request)
        if err:
            return err, None
        deadline = time.monotonic() + self.timeout
        while True:
            conn.run()
            err, msg = conn.recv()
            if err == 0:
                if msg.type in (ovs.jsonrpc.Message.T_REPLY, ovs.jsonrpc.Message.T_ERROR) and msg.id == request.id:
                    return 0, msg
                continue
            if err != errno.EAGAIN:
                return err, None
            left = deadline - time.monotonic()
            if left <= 0:
                self._drop()
                raise OVSError(f"{self._describe(command, argv)}: no reply within {self.timeout:g} s")
            poller = ovs.poller.Poller()
            conn.wait(poller)
            conn.recv_wait(poller)
            poller.timer_wait(int(left * 1000) + 1)
            poller.block()


def _text(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


def _strerror(err: int) -> str:
    if err == -1:  # ovs.util.EOF
        return "connection closed by peer"
    try:
        return os.strerror(err)
    except (ValueError, OverflowError):
        return f"error {err}"
