"""Traffic probes that run inside a Pod's (or a node's) network namespace: stdlib only.

    ip netns exec NS <python> netprobe.py stream --dst IP --port 80 [--backends 2] [--period 0.05]
    ip netns exec NS <python> netprobe.py probe --dst IP --port 80 [--rate 200]
    ip netns exec NS <python> netprobe.py recv --iface eth0 [--marker PAREL]
    ip netns exec NS <python> netprobe.py send --iface eth0 < frames.json

Each prints "ready" on stdout once it is set up, runs until SIGTERM (or --duration), then prints one
JSON object and exits 0.

* stream: long-lived HTTP/1.1 keep-alive connections to IP:port, opened until --backends distinct
  backends answer (kube-proxy picks one per connection), then one GET per connection every --period.
  A connection that breaks is not reopened: its error is reported.
* probe: a new TCP connection attempt (non-blocking connect) every 1/--rate s, each given 0.5 s.
  "through" counts attempts answered by the destination (connected, or refused = the SYN arrived).
* recv: an AF_PACKET socket on --iface counting received frames (not our own outgoing ones) by kind:
  "mark:<case>" for frames carrying the marker b"<marker>:<case>:", "arp:<op>:<spa>:<sha>",
  "tcp:<src>:<dport>", "icmp:<src>", "eth:<ethertype>" for the rest.
* send: frames as JSON [{"hex": "...", "count": n}] on stdin, each sent count times 20 ms apart.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from collections import Counter

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4

stop = False


def _on_term(*_: object) -> None:
    global stop
    stop = True


def _ready() -> None:
    print("ready", flush=True)


def _sleep(t: float) -> None:
    end = time.monotonic() + t
    while not stop and time.monotonic() < end:
        time.sleep(min(0.01, max(0.0, end - time.monotonic())))


# ------------------------------------------------------------------------------------------ stream


class Stream:
    def __init__(self, dst: str, port: int):
        self.sock = socket.create_connection((dst, port), timeout=3)
        self.sock.settimeout(3)
        self.req = f"GET / HTTP/1.1\r\nHost: {dst}\r\n\r\n".encode()
        self.buf = b""
        self.ok = 0
        self.error: str | None = None
        self.max_gap = 0.0
        self.last = time.monotonic()
        self.backend = self.get()

    def _recv(self) -> None:
        d = self.sock.recv(65536)
        if not d:
            raise ConnectionError("connection closed by the server")
        self.buf += d

    def get(self) -> str:
        self.sock.sendall(self.req)
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(self.buf) < length:
            self._recv()
        body, self.buf = self.buf[:length], self.buf[length:]
        now = time.monotonic()
        self.max_gap = max(self.max_gap, now - self.last)
        self.last = now
        self.ok += 1
        parts = body.decode(errors="replace").split(" - ")
        return parts[1] if len(parts) > 2 else body.decode(errors="replace").strip()

    def step(self) -> None:
        if self.error is not None:
            return
        try:
            backend = self.get()
            if backend != self.backend:
                raise ConnectionError(f"answer from {backend}, connection was to {self.backend}")
        except (OSError, ValueError) as e:
            self.error = f"{type(e).__name__}: {e}"


def cmd_stream(a: argparse.Namespace) -> dict[str, object]:
    streams: dict[str, Stream] = {}
    attempts = 0
    while len(streams) < a.backends and attempts < 40:
        attempts += 1
        s = Stream(a.dst, a.port)
        if s.backend in streams:
            s.sock.close()
        else:
            streams[s.backend] = s
    _ready()
    t0 = time.monotonic()
    while not stop and (a.duration is None or time.monotonic() - t0 < a.duration):
        for s in streams.values():
            s.step()
        _sleep(a.period)
    now = time.monotonic()
    out = []
    for name, s in sorted(streams.items()):
        if s.error is None:
            s.max_gap = max(s.max_gap, now - s.last)
        out.append({"backend": name, "requests": s.ok, "error": s.error, "max_gap": round(s.max_gap, 3)})
        s.sock.close()
    return {"streams": out, "attempts": attempts}


# ------------------------------------------------------------------------------------------ probe


def cmd_probe(a: argparse.Namespace) -> dict[str, object]:
    pending: dict[socket.socket, float] = {}
    c: Counter[str] = Counter()
    period = 1.0 / a.rate
    _ready()
    t0 = time.monotonic()
    nxt = t0
    while not stop and (a.duration is None or time.monotonic() - t0 < a.duration):
        now = time.monotonic()
        if now >= nxt:
            nxt += period
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
            rc = s.connect_ex((a.dst, a.port))
            c["attempts"] += 1
            if rc not in (errno.EINPROGRESS, 0):
                c[f"error:{errno.errorcode.get(rc, rc)}"] += 1
                s.close()
            else:
                pending[s] = now
        _, w, _ = select.select([], list(pending), [], max(0.0, min(0.005, nxt - time.monotonic())))
        for s in w:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                c["connected"] += 1
            elif err == errno.ECONNREFUSED:
                c["refused"] += 1
            else:
                c[f"error:{errno.errorcode.get(err, err)}"] += 1
            pending.pop(s)
            s.close()
        now = time.monotonic()
        for s, t in list(pending.items()):
            if now - t > 0.5:
                c["timeout"] += 1
                pending.pop(s)
                s.close()
    for s in pending:
        c["timeout"] += 1
        s.close()
    c["through"] = c["connected"] + c["refused"]
    return dict(c)


# ------------------------------------------------------------------------------------------ recv


def _ip(b: bytes) -> str:
    return socket.inet_ntoa(b)


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def classify(frame: bytes, marker: bytes) -> str:
    etype = struct.unpack("!H", frame[12:14])[0]
    i = frame.find(marker + b":")
    if i >= 0:
        case = frame[i + len(marker) + 1:].split(b":", 1)[0].decode(errors="replace")
        return f"mark:{case}"
    if etype == 0x0806 and len(frame) >= 42:
        op = struct.unpack("!H", frame[20:22])[0]
        return f"arp:{op}:{_ip(frame[28:32])}:{_mac(frame[22:28])}"
    if etype == 0x0800 and len(frame) >= 34:
        ihl = (frame[14] & 0x0F) * 4
        proto = frame[23]
        src = _ip(frame[26:30])
        if proto == 6 and len(frame) >= 14 + ihl + 4:
            dport = struct.unpack("!H", frame[14 + ihl + 2:14 + ihl + 4])[0]
            return f"tcp:{src}:{dport}"
        if proto == 1:
            return f"icmp:{src}"
        return f"ip:{proto}:{src}"
    return f"eth:{etype:04x}"


def cmd_recv(a: argparse.Namespace) -> dict[str, object]:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((a.iface, 0))
    s.settimeout(0.05)
    marker = a.marker.encode()
    c: Counter[str] = Counter()
    _ready()
    t0 = time.monotonic()
    while not stop and (a.duration is None or time.monotonic() - t0 < a.duration):
        try:
            frame, addr = s.recvfrom(65536)
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        if addr[2] == PACKET_OUTGOING:
            continue
        c[classify(frame, marker)] += 1
    return dict(c)


# ------------------------------------------------------------------------------------------ send


def cmd_send(a: argparse.Namespace) -> dict[str, object]:
    frames = json.loads(sys.stdin.read())
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.iface, 0))
    _ready()
    sent = 0
    for f in frames:
        data = bytes.fromhex(f["hex"])
        for _ in range(int(f.get("count", 1))):
            s.send(data)
            sent += 1
            time.sleep(0.02)
    return {"sent": sent}


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("stream")
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--backends", type=int, default=1)
    p.add_argument("--period", type=float, default=0.05)
    p.add_argument("--duration", type=float)
    p = sub.add_parser("probe")
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--duration", type=float)
    p = sub.add_parser("recv")
    p.add_argument("--iface", default="eth0")
    p.add_argument("--marker", default="PAREL")
    p.add_argument("--duration", type=float)
    p = sub.add_parser("send")
    p.add_argument("--iface", default="eth0")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    fn = {"stream": cmd_stream, "probe": cmd_probe, "recv": cmd_recv, "send": cmd_send}[a.cmd]
    out = fn(a)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
