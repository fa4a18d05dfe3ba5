"""One request's limits: the daemons answer a body over 4 MiB with a 413 the client can read (even
one that sends the whole body first), and `pyantrea lab apply|delete -f FILE` refuses a file over
the limit or not UTF-8 before anything is sent."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyantrea import httpapi
from pyantrea.httpapi import MAX_BODY, UnixHTTPConnection, UnixHTTPServer
from pyantrea.lab.manifest import read_manifest
from pyantrea.lab.netns import LabError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[tuple[str, list[int]]]:
    """A server with POST /echo (answers the body's length) on a temp socket, no root needed."""
    d = Path(tempfile.mkdtemp(prefix="pa-"))
    seen: list[int] = []
    r = httpapi.Router()

    def echo(req: httpapi.Request) -> Any:
        seen.append(len(req.body))
        return {"length": len(req.body)}

    r.add("POST", "/echo", echo)
    r.add("GET", "/healthz", lambda req: "ok\n")
    srv = UnixHTTPServer(str(d / "s.sock"), r)
    srv.serve_in_thread()
    yield str(d / "s.sock"), seen
    srv.close()
    for f in d.iterdir():
        f.unlink()
    d.rmdir()


def _read_all(s: socket.socket) -> bytes:
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return out
        out += chunk


def _parse(raw: bytes) -> tuple[str, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.decode().split("\r\n")[0], json.loads(body)


def test_a_client_that_sends_the_whole_oversized_body_gets_the_413(server: tuple[str, list[int]]) -> None:
    path, seen = server
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(path)
    n = MAX_BODY + 1
    s.sendall(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n".encode())
    s.sendall(b"x" * n)  # no broken pipe, no reset: the server reads and drops it
    status, body = _parse(_read_all(s))
    s.close()
    assert status == "HTTP/1.1 413 Request Entity Too Large"
    assert body == {"error": f"request body of {n} bytes is over the limit of {MAX_BODY}"}
    assert seen == []  # the handler never saw it


def test_http_client_gets_the_413(server: tuple[str, list[int]]) -> None:
    """http.client sends the body before it reads the answer: it must still get the status."""
    path, seen = server
    conn = UnixHTTPConnection(path, timeout=20)
    conn.request("POST", "/echo", body=b"{" * (MAX_BODY + 10), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 413 and resp.getheader("Content-Type") == "application/json"
    assert "over the limit" in json.loads(resp.read())["error"]
    conn.close()
    conn = UnixHTTPConnection(path, timeout=20)  # the server keeps serving
    conn.request("POST", "/echo", body=b"x" * MAX_BODY)
    assert json.loads(conn.getresponse().read()) == {"length": MAX_BODY}
    conn.close()
    assert seen == [MAX_BODY]


def test_the_413_comes_before_the_body_is_read(server: tuple[str, list[int]]) -> None:
    """A client that waits for an answer before it sends (Expect: 100-continue style) gets it."""
    path, _ = server
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n")
    raw = b""
    while b"}" not in raw:
        raw += s.recv(4096)
    s.shutdown(socket.SHUT_WR)  # gives up without sending: the server stops draining at once
    raw += _read_all(s)
    s.close()
    status, body = _parse(raw)
    assert status == "HTTP/1.1 413 Request Entity Too Large" and "10000000000 bytes" in body["error"]


def test_draining_is_bounded(server: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that claims and sends more than DRAIN_MAX is cut off, but its 413 is there to read."""
    path, _ = server
    monkeypatch.setattr(httpapi, "DRAIN_MAX", 1 << 20)
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
    sent = 0
    t0 = time.monotonic()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        while sent < 100_000_000:
            sent += s.send(b"x" * 65536)
    assert sent < 100_000_000 and time.monotonic() - t0 < 5
    try:
        raw = _read_all(s)
    except ConnectionResetError:
        # The server closed with this client's unread bytes queued: Linux then resets the connection and
        # the queued 413 may be gone (seen once under load). The bound (cut off within 5 s) is what this
        # test holds; the 413 is checked whenever it could be read.
        raw = b""
    s.close()
    if raw:
        assert _parse(raw)[0] == "HTTP/1.1 413 Request Entity Too Large"


def test_draining_stops_after_its_timeout(server: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = server
    monkeypatch.setattr(httpapi, "DRAIN_TIMEOUT", 0.3)
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")  # and never the body
    t0 = time.monotonic()
    status, _ = _parse(_read_all(s))  # EOF: the server closed after its drain timeout
    s.close()
    assert status == "HTTP/1.1 413 Request Entity Too Large" and time.monotonic() - t0 < 3


def test_a_body_not_utf8_names_the_byte() -> None:
    req = httpapi.Request("POST", "/v1/apply", {}, b"kind: Pod\n\xff")
    with pytest.raises(httpapi.HTTPError) as e:
        req.text()
    assert e.value.status == 400 and e.value.message == "body is not UTF-8 text (byte 0xff at offset 10)"


# ------------------------------------------------------------------------------- lab apply -f FILE


def test_read_manifest(tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: café}\n")
    assert read_manifest(str(ok)).endswith("café}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"apiVersion: v1\nkind: Namespace\nmetadata: {name: caf\xe9}\n")
    with pytest.raises(LabError) as e:
        read_manifest(str(bad))
    assert str(e.value) == f"{bad}: not UTF-8 text (byte 0xe9 at offset 51)"
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(MAX_BODY + 1)  # sparse: nothing is written, nothing is read
    with pytest.raises(LabError) as e:
        read_manifest(str(big))
    assert str(e.value) == f"{big}: {MAX_BODY + 1} bytes: over the 4 MiB limit of one request"
    exact = tmp_path / "exact.yaml"
    exact.write_bytes(b"#" * MAX_BODY)
    assert len(read_manifest(str(exact))) == MAX_BODY
    with pytest.raises(LabError, match=r"nope.yaml: No such file or directory$"):
        read_manifest(str(tmp_path / "nope.yaml"))
    with pytest.raises(LabError, match=r": Is a directory$"):
        read_manifest(str(tmp_path))


class _Stdin:
    def __init__(self, data: bytes):
        self.buffer = io.BytesIO(data)


def test_read_manifest_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", _Stdin(b"kind: Pod\n"))
    assert read_manifest("-") == "kind: Pod\n"
    monkeypatch.setattr(sys, "stdin", _Stdin(b"#" * (MAX_BODY + 5)))
    with pytest.raises(LabError) as e:
        read_manifest("-")
    assert str(e.value) == f"<stdin>: more than {MAX_BODY} bytes: over the 4 MiB limit of one request"
    monkeypatch.setattr(sys, "stdin", _Stdin(b"\x80"))
    with pytest.raises(LabError, match=r"^<stdin>: not UTF-8 text \(byte 0x80 at offset 0\)$"):
        read_manifest("-")


@pytest.mark.parametrize("verb", ["apply", "delete"])
def test_lab_apply_refuses_before_sending(tmp_path: Path, verb: str) -> None:
    """`pyantrea lab apply|delete -f FILE`: exit 1, one line, no traceback, no request (the host
    check is stubbed so that the test needs neither root nor a lab; the lab dir is a temp one)."""
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xfe\xff")
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(5 * 1024 * 1024)
    code = (
        "import sys\n"
        "from pyantrea.lab import lab, cli\n"
        "lab.Lab.check_host = staticmethod(lambda: None)\n"
        "def no_request(*a, **k): raise AssertionError('a request was sent')\n"
        "lab.request_json = no_request\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "PYANTREA_LAB_DIR": str(tmp_path / "lab")}
    for f, msg in ((bad, f"Error: {bad}: not UTF-8 text (byte 0xfe at offset 0)\n"),
                   (big, f"Error: {big}: 5242880 bytes: over the 4 MiB limit of one request\n")):
        p = subprocess.run([sys.executable, "-c", code, verb, "-f", str(f)], capture_output=True, text=True,
                           cwd=ROOT, env=env, timeout=60)
        assert (p.returncode, p.stderr, p.stdout) == (1, msg, "")
    assert not (tmp_path / "lab").exists()
