"""The lab's DNS server: wire format, the cluster.local zone, UDP/TCP serving (no root)."""

from __future__ import annotations

import shutil
import socket
import struct
import time
from pathlib import Path

import pytest

from pyantrea.k8s.complete import load_cluster
from pyantrea.lab import dns

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"


@pytest.fixture(scope="module")
def zone() -> dns.Zone:
    return dns.Zone.from_cluster(load_cluster(SEED))


def a_records(resp: bytes) -> tuple[int, list[str]]:
    rcode, answers = dns.parse_answers(resp)
    return rcode, [socket.inet_ntoa(rd) for _n, t, _ttl, rd in answers if t == dns.TYPE_A]


# ------------------------------------------------------------------------------------ wire format


def test_encode_decode_name_round_trip() -> None:
    raw = dns.encode_name("backendsvc.default.svc.cluster.local.")
    assert raw == b"\x0abackendsvc\x07default\x03svc\x07cluster\x05local\x00"
    assert dns.decode_name(raw, 0) == ("backendsvc.default.svc.cluster.local", len(raw))
    assert dns.encode_name(".") == b"\x00"
    with pytest.raises(ValueError):
        dns.encode_name("a" * 64 + ".local")
    with pytest.raises(ValueError):
        dns.encode_name("a..b")


def test_decode_name_follows_compression_pointers() -> None:
    msg = b"\x00" * 12 + b"\x07cluster\x05local\x00" + b"\x03svc\xc0\x0c"
    name, end = dns.decode_name(msg, 27)
    assert name == "svc.cluster.local" and end == len(msg)
    with pytest.raises(dns.FormatError):
        dns.decode_name(b"\x00" * 12 + b"\xc0\x0c", 12)  # a pointer to itself
    with pytest.raises(dns.FormatError):
        dns.decode_name(b"\x05abc", 0)  # label past the end
    with pytest.raises(dns.FormatError):
        dns.decode_name(b"\x40abc", 0)  # extended label type


def test_parse_a_glibc_style_query() -> None:
    # what `getent hosts backendsvc` sends first (search list applied): id 0xbeef, RD, one question, no EDNS
    msg = bytes.fromhex("beef01000001000000000000") + dns.encode_name("backendsvc.default.svc.cluster.local") \
        + bytes.fromhex("00010001")
    q = dns.parse_query(msg)
    assert q.id == 0xBEEF and q.opcode == 0 and not q.is_response
    assert q.questions == (dns.Question("backendsvc.default.svc.cluster.local", dns.TYPE_A, dns.CLASS_IN),)
    assert msg[12:] == q.raw_question
    with pytest.raises(dns.FormatError):
        dns.parse_query(msg[:11])
    with pytest.raises(dns.FormatError):
        dns.parse_query(msg[:-2])


def test_response_layout(zone: dns.Zone) -> None:
    resp = zone.answer(dns.query("backendsvc.default.svc.cluster.local", qid=0x4242))
    assert resp is not None
    qid, flags, qd, an, ns, ar = struct.unpack("!6H", resp[:12])
    assert (qid, qd, an, ns, ar) == (0x4242, 1, 1, 0, 0)
    assert flags & 0x8000 and flags & 0x0400 and flags & 0x0100  # QR, AA, RD copied
    assert flags & 0xF == dns.RCODE_NOERROR
    answer = resp[12 + len(dns.encode_name("backendsvc.default.svc.cluster.local")) + 4:]
    assert answer == struct.pack("!HHHIH", 0xC00C, dns.TYPE_A, dns.CLASS_IN, 5, 4) + socket.inet_aton("10.104.65.133")


# ------------------------------------------------------------------------------------ zone


@pytest.mark.parametrize("name,ips", [
    ("backendsvc.default.svc.cluster.local", ["10.104.65.133"]),
    ("BackendSvc.Default.SVC.cluster.local.", ["10.104.65.133"]),
    ("kube-dns.kube-system.svc.cluster.local", ["10.96.0.10"]),
    ("kubernetes.default.svc.cluster.local", ["10.96.0.1"]),
    ("10-222-1-48.default.pod.cluster.local", ["10.222.1.48"]),
    ("10-222-2-2.kube-system.pod.cluster.local", ["10.222.2.2"]),
])
def test_a_records(zone: dns.Zone, name: str, ips: list[str]) -> None:
    resp = zone.answer(dns.query(name))
    assert resp is not None and a_records(resp) == (dns.RCODE_NOERROR, ips)


@pytest.mark.parametrize("name", [
    "backendsvc",  # a bare name: the resolver's search list makes it an FQDN first
    "backendsvc.kube-system.svc.cluster.local",
    "nosuch.default.svc.cluster.local",
    "10-222-1-48.kube-system.pod.cluster.local",  # that IP is not a Pod of kube-system
    "10-222-9-9.default.pod.cluster.local",
    "backendsvc.default.svc.cluster.local.example.com",
    "example.com",
])
def test_nxdomain(zone: dns.Zone, name: str) -> None:
    resp = zone.answer(dns.query(name))
    assert resp is not None and a_records(resp) == (dns.RCODE_NXDOMAIN, [])


@pytest.mark.parametrize("name,qtype", [
    ("backendsvc.default.svc.cluster.local", dns.TYPE_AAAA),  # exists, no IPv6: NODATA
    ("backendsvc.default.svc.cluster.local", dns.TYPE_SRV),
    ("default.svc.cluster.local", dns.TYPE_A),  # an empty non-terminal
    ("svc.cluster.local", dns.TYPE_A),
    ("cluster.local", dns.TYPE_SOA),
])
def test_nodata(zone: dns.Zone, name: str, qtype: int) -> None:
    resp = zone.answer(dns.query(name, qtype))
    assert resp is not None and dns.parse_answers(resp) == (dns.RCODE_NOERROR, [])


def test_any_returns_a(zone: dns.Zone) -> None:
    resp = zone.answer(dns.query("backendsvc.default.svc.cluster.local", dns.TYPE_ANY))
    assert resp is not None and a_records(resp) == (0, ["10.104.65.133"])


def test_bad_messages(zone: dns.Zone) -> None:
    # garbage with a header: FORMERR echoing the id, no question
    resp = zone.answer(bytes.fromhex("abcd010000010000000000000561"))
    assert resp is not None and resp[:2] == b"\xab\xcd" and resp[3] & 0xF == dns.RCODE_FORMERR
    assert struct.unpack("!H", resp[4:6])[0] == 0
    # shorter than a header: dropped
    assert zone.answer(b"\x01\x02") is None
    # a response is never answered (no loops)
    q = bytearray(dns.query("backendsvc.default.svc.cluster.local"))
    q[2] |= 0x80
    assert zone.answer(bytes(q)) is None
    # opcode STATUS (2): NOTIMP
    q = bytearray(dns.query("backendsvc.default.svc.cluster.local"))
    q[2] |= 2 << 3
    resp = zone.answer(bytes(q))
    assert resp is not None and resp[3] & 0xF == dns.RCODE_NOTIMP
    # two questions: FORMERR
    two = struct.pack("!6H", 7, 0x0100, 2, 0, 0, 0) + (dns.encode_name("a.cluster.local") + b"\x00\x01\x00\x01") * 2
    resp = zone.answer(two)
    assert resp is not None and resp[3] & 0xF == dns.RCODE_FORMERR


def test_truncate_for_udp() -> None:
    q = dns.parse_query(dns.query("big.default.svc.cluster.local"))
    many = [(dns.TYPE_A, socket.inet_aton(f"10.0.{i // 250}.{i % 250}")) for i in range(100)]
    resp = dns.build_response(q, dns.RCODE_NOERROR, many)
    assert len(resp) > dns.MAX_UDP
    cut = dns.truncate_for_udp(resp)
    assert len(cut) <= dns.MAX_UDP and cut[2] & 0x02  # TC
    assert dns.parse_answers(cut) == (0, [])
    assert dns.truncate_for_udp(cut) == cut


# ------------------------------------------------------------------------------------ live source + server


def test_zone_source_reloads_when_the_folder_changes(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    shutil.copytree(SEED, folder)
    src = dns.ClusterZoneSource(folder, interval=0.0)
    name = "newsvc.default.svc.cluster.local"
    assert src.zone().resolve(name, dns.TYPE_A)[0] == dns.RCODE_NXDOMAIN
    (folder / "zz-new.yaml").write_text("""
apiVersion: v1
kind: Service
metadata: {name: newsvc, namespace: default}
spec: {clusterIP: 10.100.0.7, ports: [{port: 80}]}
""")
    rcode, answers = src.zone().resolve(name, dns.TYPE_A)
    assert rcode == dns.RCODE_NOERROR and answers == [(dns.TYPE_A, socket.inet_aton("10.100.0.7"))]
    (folder / "zz-new.yaml").write_text("kind: [broken")  # a bad folder keeps the last good zone
    assert src.zone().resolve(name, dns.TYPE_A)[0] == dns.RCODE_NOERROR
    assert src.errors == 1


def test_server_udp_and_tcp() -> None:
    server = dns.DNSServer(dns.ClusterZoneSource(SEED), host="127.0.0.1", port=0).start()
    try:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(3)
        u.sendto(dns.query("backendsvc.default.svc.cluster.local", qid=11), ("127.0.0.1", server.port))
        resp, _ = u.recvfrom(4096)
        u.close()
        assert resp[:2] == b"\x00\x0b" and a_records(resp) == (0, ["10.104.65.133"])

        t = socket.create_connection(("127.0.0.1", server.port), timeout=3)
        for qid, name in ((12, "kube-dns.kube-system.svc.cluster.local"), (13, "nope.cluster.local")):
            msg = dns.query(name, qid=qid)
            t.sendall(struct.pack("!H", len(msg)) + msg)
            (n,) = struct.unpack("!H", t.recv(2))
            buf = b""
            deadline = time.monotonic() + 3
            while len(buf) < n and time.monotonic() < deadline:
                buf += t.recv(n - len(buf))
            assert struct.unpack("!H", buf[:2])[0] == qid
            if qid == 12:
                assert a_records(buf) == (0, ["10.96.0.10"])
            else:
                assert a_records(buf) == (dns.RCODE_NXDOMAIN, [])
        t.close()
    finally:
        server.stop()
