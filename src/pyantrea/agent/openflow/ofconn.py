"""The agent's persistent OpenFlow connection to its br-int: packet-in and packet-out.

Antrea's agent keeps one OpenFlow connection to br-int (ofnet over the bridge's management socket)
for what the datapath hands to the agent: Reject answers, Traceflow observations, policy audit
logs. pyantrea does the same with os-ken's OpenFlow 1.3 message library (the one OpenStack
Neutron's native OVS agent uses) for encoding and decoding, over a plain unix-socket connection to
`<rundir>/br-int.mgmt`: no event loop is imposed on the agent (os-ken's application framework needs
eventlet; its message and packet libraries do not).

The connection says hello, asks OVS for packet-ins (OFPT_SET_ASYNC), answers echo requests, hands
each packet-in to a callback on its reader thread, and reconnects (with back-off) when the bridge
goes away, e.g. while ovs-vswitchd restarts.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from pyantrea.errors import OVSError

HEADER = struct.Struct("!BBHI")  # version, type, length, xid


@dataclass(frozen=True)
class PacketIn:
    """A packet the datapath sent to the agent."""

    data: bytes
    table_id: int
    cookie: int
    reason: int
    fields: dict[str, Any]  # the OXM fields of the packet-in's match: in_port, reg0..., tun_dst...

    @property
    def in_port(self) -> int | None:
        v = self.fields.get("in_port")
        return int(v) if v is not None else None


class _Datapath:
    """What os-ken's messages need to serialize themselves."""

    ofproto = ofp
    ofproto_parser = parser

    def __init__(self) -> None:
        self.xid = 0

    def set_xid(self, msg: Any) -> None:
        self.xid = (self.xid + 1) & 0xFFFFFFFF
        msg.set_xid(self.xid)


class OFConnection:
    def __init__(self, mgmt: str | Path, on_packet_in: Callable[[PacketIn], None],
                 log: Callable[[str], None] = lambda s: None):
        self.mgmt = str(mgmt)
        self.on_packet_in = on_packet_in
        self.log = log
        self.dp = _Datapath()
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()  # one writer at a time
        self.connected = threading.Event()
        self.stop_event = threading.Event()
        self.packet_ins = 0
        self.packet_outs = 0
        self.reconnects = 0
        self.handler_errors = 0

    # ------------------------------------------------------------------ life cycle
    def start(self) -> threading.Thread:
        t = threading.Thread(target=self._run, daemon=True, name="openflow")
        t.start()
        return t

    def close(self) -> None:
        self.stop_event.set()
        s = self.sock
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def wait_connected(self, timeout: float = 5.0) -> bool:
        return self.connected.wait(timeout)

    def _run(self) -> None:
        backoff = 0.1
        while not self.stop_event.is_set():
            try:
                self._connect()
                backoff = 0.1
                self._read_loop()
            except Exception as e:  # noqa: BLE001 - OSError, or a message os-ken cannot decode: reconnect
                if self.stop_event.is_set():
                    break
                self.log(f"OpenFlow connection to {self.mgmt}: {type(e).__name__}: {e}; reconnecting")
            finally:
                self.connected.clear()
                if self.sock is not None:
                    self.sock.close()
                    self.sock = None
            if self.stop_event.wait(backoff):
                break
            backoff = min(backoff * 2, 2.0)
            self.reconnects += 1

    def _connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.mgmt)
        self.sock = s
        self._send(parser.OFPHello(self.dp))
        # packet-ins for the `controller` action and table misses; no port status / flow removed
        pi = (1 << ofp.OFPR_NO_MATCH) | (1 << ofp.OFPR_ACTION) | (1 << ofp.OFPR_INVALID_TTL)
        self._send(parser.OFPSetAsync(self.dp, [pi, pi], [0, 0], [0, 0]))
        self.connected.set()

    def _recv_exact(self, n: int) -> bytes:
        assert self.sock is not None
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise OSError("the bridge closed the connection")
            buf += chunk
        return buf

    def _read_loop(self) -> None:
        while not self.stop_event.is_set():
            head = self._recv_exact(HEADER.size)
            version, typ, length, xid = HEADER.unpack(head)
            body = self._recv_exact(length - HEADER.size) if length > HEADER.size else b""
            if version != ofp.OFP_VERSION:
                if typ == ofp.OFPT_HELLO:
                    continue  # OVS's hello may carry a version bitmap; we speak 1.3, which br-int allows
                raise OSError(f"OpenFlow version {version} from the bridge (expected 1.3)")
            if typ == ofp.OFPT_ECHO_REQUEST:
                reply = parser.OFPEchoReply(self.dp, data=body)
                reply.set_xid(xid)
                self._send(reply, keep_xid=True)
            elif typ == ofp.OFPT_PACKET_IN:
                msg = ofproto_parser.msg(self.dp, version, typ, length, xid, head + body)
                self.packet_ins += 1
                fields = {k: v for k, v in msg.match.items()}
                try:
                    self.on_packet_in(PacketIn(bytes(msg.data), msg.table_id, msg.cookie, msg.reason, fields))
                except Exception as e:  # noqa: BLE001 - a handler's bug must not cut the connection
                    self.handler_errors += 1
                    self.log(f"packet-in handler failed: {type(e).__name__}: {e}")
            elif typ == ofp.OFPT_ERROR:
                msg = ofproto_parser.msg(self.dp, version, typ, length, xid, head + body)
                self.log(f"OpenFlow error from the bridge: type {msg.type} code {msg.code}")

    # ------------------------------------------------------------------ sending
    def _send(self, msg: Any, keep_xid: bool = False) -> None:
        if not keep_xid:
            self.dp.set_xid(msg)
        msg.serialize()
        with self.lock:
            if self.sock is None:
                raise OVSError(f"no OpenFlow connection to {self.mgmt}")
            self.sock.sendall(bytes(msg.buf))

    def packet_out(self, data: bytes, out_port: int, in_port: int = ofp.OFPP_CONTROLLER,
                   actions: Sequence[Any] | None = None) -> None:
        """Send `data` out of `out_port` (or through `actions`, e.g. [OFPActionOutput(OFPP_TABLE)] to
        run it through the pipeline as if it came in on `in_port`)."""
        acts = list(actions) if actions is not None else [parser.OFPActionOutput(out_port)]
        msg = parser.OFPPacketOut(self.dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port, actions=acts, data=data)
        self._send(msg)
        self.packet_outs += 1

    def stats(self) -> dict[str, int | bool]:
        return {"connected": self.connected.is_set(), "packetIns": self.packet_ins, "packetOuts": self.packet_outs,
                "reconnects": self.reconnects, "handlerErrors": self.handler_errors}


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()
