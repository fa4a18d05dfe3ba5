"""A small authoritative DNS server for ``cluster.local``, run by the lab's kube-dns Pods.

Only the standard library: the wire format (RFC 1035) is parsed and built here.

Names answered (A records, TTL 5 s like CoreDNS's kubernetes plugin), from the *current* cluster
(the controller's state folder, reloaded when a file in it changes):

* ``<service>.<namespace>.svc.cluster.local`` -> the Service's ClusterIP;
* ``<a-b-c-d>.<namespace>.pod.cluster.local`` -> a.b.c.d, when a Pod of that namespace has that IP
  (CoreDNS's ``pods verified`` mode).

A name that exists (or is an ancestor of one, like ``default.svc.cluster.local``) but has no record
of the asked type gets NOERROR with no answer (NODATA), so a resolver asking A and AAAA together is
happy. Everything else is NXDOMAIN; there is no upstream. UDP and TCP (2-byte length prefix).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyantrea.k8s.cluster import Cluster

__all__ = [
    "CLUSTER_DOMAIN",
    "FormatError",
    "Query",
    "Question",
    "Zone",
    "DNSServer",
    "build_response",
    "decode_name",
    "encode_name",
    "parse_answers",
    "parse_query",
    "query",
]

CLUSTER_DOMAIN = "cluster.local"
TTL = 5

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_OPT = 41
TYPE_ANY = 255
CLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5

_FLAG_QR = 0x8000
_FLAG_AA = 0x0400
_FLAG_TC = 0x0200
_FLAG_RD = 0x0100
_OPCODE_MASK = 0x7800

MAX_UDP = 512


class FormatError(ValueError):
    """The message is not a well-formed DNS message."""


# ------------------------------------------------------------------------------------ wire format


def encode_name(name: str) -> bytes:
    """``www.example.`` -> length-prefixed labels ending with the root label (no compression)."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        if not label:
            if name.strip(".") == "":
                break
            raise ValueError(f"empty label in {name!r}")
        raw = label.encode("ascii")
        if len(raw) > 63:
            raise ValueError(f"label longer than 63 bytes in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"name longer than 255 bytes: {name!r}")
    return bytes(out)


def decode_name(msg: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` (following compression pointers) and the offset just after it in the
    message. Names are returned without the trailing dot (the root is ``""``)."""
    labels: list[str] = []
    end: int | None = None
    jumps = 0
    pos = offset
    while True:
        if pos >= len(msg):
            raise FormatError("name runs past the end of the message")
        length = msg[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise FormatError("truncated compression pointer")
            if end is None:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            jumps += 1
            if jumps > 64:
                raise FormatError("compression pointer loop")
            continue
        if length & 0xC0:
            raise FormatError(f"unsupported label type 0x{length:02x}")
        pos += 1
        if length == 0:
            break
        if pos + length > len(msg):
            raise FormatError("label runs past the end of the message")
        try:
            labels.append(msg[pos:pos + length].decode("ascii"))
        except UnicodeDecodeError:
            raise FormatError("non-ASCII label") from None
        pos += length
    name = ".".join(labels)
    if len(name) > 253:
        raise FormatError("name longer than 255 bytes")
    return name, (end if end is not None else pos)


@dataclass(frozen=True)
class Question:
    name: str  # as asked (case kept), no trailing dot
    qtype: int
    qclass: int = CLASS_IN


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    questions: tuple[Question, ...]
    raw_question: bytes  # the question section as received (echoed in the response)

    @property
    def opcode(self) -> int:
        return (self.flags & _OPCODE_MASK) >> 11

    @property
    def is_response(self) -> bool:
        return bool(self.flags & _FLAG_QR)


def parse_query(msg: bytes) -> Query:
    """Parse the header and the question section of a DNS message. Raises FormatError."""
    if len(msg) < 12:
        raise FormatError("shorter than a DNS header")
    qid, flags, qd, _an, _ns, _ar = struct.unpack("!6H", msg[:12])
    pos = 12
    qs: list[Question] = []
    for _ in range(qd):
        name, pos = decode_name(msg, pos)
        if pos + 4 > len(msg):
            raise FormatError("truncated question")
        qtype, qclass = struct.unpack("!HH", msg[pos:pos + 4])
        pos += 4
        qs.append(Question(name, qtype, qclass))
    return Query(qid, flags, tuple(qs), msg[12:pos])


def header_of(msg: bytes) -> tuple[int, int]:
    """(id, flags) of a message that may not parse further (0, 0 if even the header is cut)."""
    if len(msg) < 4:
        return 0, 0
    qid, flags = struct.unpack("!HH", msg[:4])
    return qid, flags


def build_response(query: Query | tuple[int, int], rcode: int, answers: Sequence[tuple[int, bytes]] = (),
                   ttl: int = TTL, authoritative: bool = True) -> bytes:
    """A response to ``query`` (a parsed Query, or ``(id, flags)`` for an unparsable one, then
    with no question section). ``answers``: ``(type, rdata)`` records for the (single) question's
    name, written with a compression pointer to the question's name."""
    if isinstance(query, Query):
        qid, qflags, question, qd = query.id, query.flags, query.raw_question, len(query.questions)
    else:
        (qid, qflags), question, qd = query, b"", 0
    flags = _FLAG_QR | (qflags & (_OPCODE_MASK | _FLAG_RD)) | (rcode & 0xF)
    if authoritative:
        flags |= _FLAG_AA
    out = bytearray(struct.pack("!6H", qid, flags, qd, len(answers) if qd else 0, 0, 0))
    out += question
    if qd:
        for rtype, rdata in answers:
            out += struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, ttl, len(rdata)) + rdata
    return bytes(out)


def truncate_for_udp(resp: bytes, limit: int = MAX_UDP) -> bytes:
    """A response too long for UDP: header + question only, with TC set."""
    if len(resp) <= limit:
        return resp
    qid, flags, qd, _an, _ns, _ar = struct.unpack("!6H", resp[:12])
    pos = 12
    for _ in range(qd):
        _name, pos = decode_name(resp, pos)
        pos += 4
    return struct.pack("!6H", qid, flags | _FLAG_TC, qd, 0, 0, 0) + resp[12:pos]


# ------------------------------------------------------------------------------------ zone


class Zone:
    """The records of ``cluster.local`` for one cluster: name -> IPv4 addresses."""

    def __init__(self, records: dict[str, list[str]], domain: str = CLUSTER_DOMAIN):
        self.domain = domain.strip(".").lower()
        self.records = {k.lower(): v for k, v in records.items()}
        self.names: set[str] = set()  # every existing name and every ancestor up to the domain
        for name in self.records:
            labels = name.split(".")
            for i in range(len(labels)):
                self.names.add(".".join(labels[i:]))

    @classmethod
    def from_cluster(cls, cluster: Cluster, domain: str = CLUSTER_DOMAIN) -> Zone:
        recs: dict[str, list[str]] = {}
        for s in cluster.services:
            if s.cluster_ip:
                recs.setdefault(f"{s.name}.{s.namespace}.svc.{domain}", []).append(s.cluster_ip)
        for p in cluster.pods:
            if p.pod_ip and not p.terminated:
                dashed = p.pod_ip.replace(".", "-")
                ips = recs.setdefault(f"{dashed}.{p.namespace}.pod.{domain}", [])
                if p.pod_ip not in ips:
                    ips.append(p.pod_ip)
        recs.setdefault(domain, [])  # the apex exists
        for ns in {s.namespace for s in cluster.services} | {n.name for n in cluster.namespaces}:
            recs.setdefault(f"{ns}.svc.{domain}", [])
        return cls({k: v for k, v in recs.items()}, domain)

    def resolve(self, name: str, qtype: int) -> tuple[int, list[tuple[int, bytes]]]:
        """(rcode, answers) for one question."""
        n = name.strip(".").lower()
        if n not in self.names:
            return RCODE_NXDOMAIN, []
        ips = self.records.get(n, [])
        if qtype in (TYPE_A, TYPE_ANY):
            return RCODE_NOERROR, [(TYPE_A, ipaddress.IPv4Address(ip).packed) for ip in ips]
        return RCODE_NOERROR, []

    def answer(self, msg: bytes) -> bytes | None:
        """The response to one request message (None: not a query, drop it)."""
        try:
            q = parse_query(msg)
        except FormatError:
            qid, flags = header_of(msg)
            if flags & _FLAG_QR or len(msg) < 12:
                return None
            return build_response((qid, flags), RCODE_FORMERR)
        if q.is_response:
            return None
        if q.opcode != 0:
            return build_response(q, RCODE_NOTIMP)
        if len(q.questions) != 1:
            return build_response(q, RCODE_FORMERR)
        question = q.questions[0]
        if question.qclass not in (CLASS_IN, TYPE_ANY):
            return build_response(q, RCODE_NXDOMAIN)
        rcode, answers = self.resolve(question.name, question.qtype)
        return build_response(q, rcode, answers)


# ------------------------------------------------------------------------------------ server


class ClusterZoneSource:
    """The Zone of the cluster folder at ``path``, reloaded when any file in it changes (checked at
    most every ``interval`` s). A folder that fails to load keeps the previous zone."""

    def __init__(self, path: str | os.PathLike[str], interval: float = 0.2,
                 loader: Callable[[Path], Cluster] | None = None):
        self.path = Path(path)
        self.interval = interval
        self._loader = loader
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._checked = 0.0
        self._zone = Zone({})
        self._lock = threading.Lock()
        self.errors = 0

    def _stamp_now(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        try:
            for e in os.scandir(self.path):
                try:
                    st = e.stat()
                except OSError:
                    continue
                out.append((e.name, st.st_mtime_ns, st.st_size))
        except OSError:
            return ()
        return tuple(sorted(out))

    def zone(self) -> Zone:
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self.interval or self._stamp is None:
                self._checked = now
                stamp = self._stamp_now()
                if stamp != self._stamp:
                    try:
                        loader = self._loader
                        if loader is None:
                            from pyantrea.controller.store import load_stored

                            loader = load_stored
                        self._zone = Zone.from_cluster(loader(self.path))
                        self._stamp = stamp
                    except Exception as e:  # keep serving the last good zone
                        self.errors += 1
                        print(f"dns: cannot load {self.path}: {e}", flush=True)
                        self._stamp = stamp
            return self._zone


class DNSServer:
    """UDP (and TCP) DNS on ``host:port`` answering from ``source`` (a ClusterZoneSource, or
    anything with a ``zone()`` method). ``port=0`` picks a free port (the same for UDP and TCP)."""

    def __init__(self, source: Any, host: str = "0.0.0.0", port: int = 53, tcp: bool = True):
        self.source = source
        self.stop_event = threading.Event()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.udp.bind((host, port))
        self.udp.settimeout(0.5)
        self.port = self.udp.getsockname()[1]
        self.tcp: socket.socket | None = None
        if tcp:
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                t.bind((host, self.port))
                t.listen(16)
            except OSError:
                t.close()
                self.udp.close()
                raise
            t.settimeout(0.5)
            self.tcp = t
        self._threads: list[threading.Thread] = []

    def start(self) -> DNSServer:
        """Serve in background threads (the zone is loaded once first)."""
        self.source.zone()
        for target in ([self._udp_loop] + ([self._tcp_loop] if self.tcp is not None else [])):
            th = threading.Thread(target=target, daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for th in self._threads:
            th.join(2.0)
        self.udp.close()
        if self.tcp is not None:
            self.tcp.close()

    def _answer(self, data: bytes) -> bytes | None:
        try:
            return self.source.zone().answer(data)
        except Exception as e:  # never die on one bad packet
            print(f"dns: error answering: {e}", flush=True)
            qid, flags = header_of(data)
            return build_response((qid, flags), RCODE_SERVFAIL)

    def _udp_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                data, addr = self.udp.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            resp = self._answer(data)
            if resp is not None:
                try:
                    self.udp.sendto(truncate_for_udp(resp), addr)
                except OSError:
                    pass

    def _tcp_loop(self) -> None:
        assert self.tcp is not None
        while not self.stop_event.is_set():
            try:
                conn, _addr = self.tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def _tcp_conn(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        try:
            while True:
                head = _recv_exact(conn, 2)
                if head is None:
                    return
                (length,) = struct.unpack("!H", head)
                data = _recv_exact(conn, length)
                if data is None:
                    return
                resp = self._answer(data)
                if resp is None:
                    return
                conn.sendall(struct.pack("!H", len(resp)) + resp)
        except OSError:
            return
        finally:
            conn.close()


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def query(name: str, qtype: int = TYPE_A, qid: int = 0x1234, rd: bool = True) -> bytes:
    """A query message for one question (what a stub resolver sends)."""
    flags = _FLAG_RD if rd else 0
    return struct.pack("!6H", qid, flags, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)


def parse_answers(msg: bytes) -> tuple[int, list[tuple[str, int, int, bytes]]]:
    """(rcode, [(name, type, ttl, rdata)]) of a response message (tests and tools)."""
    q = parse_query(msg)
    _qid, flags, _qd, an, _ns, _ar = struct.unpack("!6H", msg[:12])
    pos = 12 + len(q.raw_question)
    out = []
    for _ in range(an):
        name, pos = decode_name(msg, pos)
        rtype, _rclass, ttl, rdlen = struct.unpack("!HHIH", msg[pos:pos + 10])
        pos += 10
        out.append((name, rtype, ttl, msg[pos:pos + rdlen]))
        pos += rdlen
    return flags & 0xF, out
