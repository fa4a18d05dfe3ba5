"""HTTP over unix sockets: the transport of the controller's and the agents' APIs.

The sockets are created with mode 0600 (owner only): the APIs are reachable only by root on the
host, like antrea-agent's CNI socket. Requests are JSON (or YAML for manifests); bodies over
`MAX_BODY` get 413, unknown paths 404, malformed bodies 400, and a handler error never kills the
server: it becomes a 500 with the message.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import socketserver
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from pyantrea.errors import (
    CNIError,
    InvalidArgument,
    ManifestError,
    NotFoundError,
    PyantreaError,
)

MAX_BODY = 4 * 1024 * 1024
# A body over MAX_BODY is answered 413 at once, then what the client still sends of it is read and
# dropped (at most DRAIN_MAX bytes, for at most DRAIN_TIMEOUT seconds) before the connection is
# closed: a client that sends its whole body before it reads (http.client does) gets the 413
# instead of a broken pipe or a reset connection.
DRAIN_MAX = 16 * MAX_BODY
DRAIN_TIMEOUT = 5.0


class HTTPError(Exception):
    def __init__(self, status: int, message: str, extra: dict[str, Any] | None = None):
        self.status = status
        self.message = message
        self.extra = extra or {}
        super().__init__(message)


class Request:
    def __init__(self, method: str, path: str, query: dict[str, str], body: bytes):
        self.method = method
        self.path = path
        self.query = query
        self.body = body

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise HTTPError(400, f"malformed JSON body: {e}") from None

    def text(self) -> str:
        try:
            return self.body.decode()
        except UnicodeDecodeError as e:
            raise HTTPError(400, f"body is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})"
                            ) from None


Handler = Callable[[Request], Any]  # returns a JSON-able object, or (status, object), or str (text/plain)


@dataclass(frozen=True)
class Raw:
    """A handler's answer with its own content type (e.g. Prometheus' text format)."""

    content_type: str
    body: bytes


class Router:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def dispatch(self, req: Request) -> tuple[int, str, bytes]:
        h = self.routes.get((req.method, req.path))
        if h is None:
            if any(p == req.path for _, p in self.routes):
                raise HTTPError(405, f"method {req.method} not allowed on {req.path}")
            raise HTTPError(404, f"unknown path {req.path}")
        res = h(req)
        status = 200
        if isinstance(res, tuple):
            status, res = res
        if isinstance(res, Raw):
            return status, res.content_type, res.body
        if isinstance(res, str):
            return status, "text/plain; charset=utf-8", res.encode()
        return status, "application/json", (json.dumps(res) + "\n").encode()


def _error_status(e: BaseException) -> tuple[int, dict[str, Any]]:
    if isinstance(e, HTTPError):
        return e.status, {"error": e.message, **e.extra}
    if isinstance(e, ManifestError):
        return 400, {"error": str(e), "problems": e.problems}
    if isinstance(e, CNIError):
        return 400, {"error": e.msg, "cni": {"code": e.code, "msg": e.msg, "details": e.details}}
    if isinstance(e, NotFoundError):
        return 404, {"error": str(e)}
    if isinstance(e, InvalidArgument):
        return 400, {"error": str(e)}
    if isinstance(e, PyantreaError):
        return 400, {"error": str(e)}
    return 500, {"error": f"internal error: {type(e).__name__}: {e}"}


class _RequestHandler(BaseHTTPRequestHandler):
    server: UnixHTTPServer
    protocol_version = "HTTP/1.1"

    # a request line that does not parse is answered with a status line too (not HTTP/0.9's bare body)
    default_request_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet; the daemons log what matters
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line or headers, unsupported method) as JSON."""
        payload = (json.dumps({"error": message or self.responses.get(code, ("error",))[0]}) + "\n").encode()
        self.close_connection = True
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _handle(self) -> None:
        drain = 0  # bytes of a refused body still to read and drop once answered
        try:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True  # the body's end is unknown: this connection is done
                raise HTTPError(400, "bad Content-Length")
            if length > MAX_BODY:
                self.close_connection = True  # the body is not kept: answered first, then drained
                drain = length
                raise HTTPError(413, f"request body of {length} bytes is over the limit of {MAX_BODY}")
            body = self.rfile.read(length) if length else b""
            status, ctype, payload = self.server.router.dispatch(Request(self.command, url.path, query, body))
        except BaseException as e:
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            status, obj = _error_status(e)
            if status == 500:
                self.server.log(f"internal error on {self.command} {self.path}:\n{traceback.format_exc()}")
            ctype, payload = "application/json", (json.dumps(obj) + "\n").encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            return
        if drain:
            self._drain(drain)

    def _drain(self, length: int) -> None:
        """Read and drop up to ``length`` bytes of the body (bounded by DRAIN_MAX / DRAIN_TIMEOUT)."""
        left = min(length, DRAIN_MAX)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        try:
            while left > 0:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return
                self.connection.settimeout(wait)
                chunk = self.rfile.read1(min(left, 1 << 16))
                if not chunk:
                    return
                left -= len(chunk)
        except OSError:  # timeout, reset: the connection is closed all the same
            return

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle
    do_DELETE = _handle


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, path: str, router: Router, log: Callable[[str], None] = lambda s: None):
        self.router = router
        self.log = log
        if os.path.exists(path):
            os.unlink(path)
        old = os.umask(0o177)
        try:
            super().__init__(path, _RequestHandler)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.path = path

    def get_request(self) -> Any:
        req, _ = super().get_request()
        return req, ("unix", 0)

    def serve_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name=f"api:{self.path}", daemon=True)
        t.start()
        return t

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client.HTTPConnection whose transport is the unix socket at ``path``."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 10.0):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.socket_path)
        except OSError:
            s.close()
            raise
        self.sock = s


class APIClient:
    """A small client for the daemons' APIs. Raises PyantreaError subclasses on error answers."""

    def __init__(self, path: str, timeout: float = 30.0):
        self.path = path
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, timeout: float | None = None,
                raw: bool = False) -> Any:
        status, obj = self.call(method, path, body, timeout, raw)
        if status >= 400:
            msg = obj.get("error", str(obj)) if isinstance(obj, dict) else str(obj)
            if isinstance(obj, dict) and obj.get("problems"):
                raise ManifestError(list(obj["problems"]))
            if status == 404:
                raise NotFoundError(msg)
            if status < 500:
                raise InvalidArgument(msg)
            raise PyantreaError(msg)
        return obj

    def call(self, method: str, path: str, body: Any = None, timeout: float | None = None,
             raw: bool = False) -> tuple[int, Any]:
        """One request; returns (HTTP status, decoded body) whatever the status."""
        conn = UnixHTTPConnection(self.path, timeout or self.timeout)
        try:
            if body is None:
                data = None
                headers = {}
            elif isinstance(body, (bytes, str)):
                data = body.encode() if isinstance(body, str) else body
                headers = {"Content-Type": "application/yaml"}
            else:
                data = json.dumps(body).encode()
                headers = {"Content-Type": "application/json"}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        ctype = resp.getheader("Content-Type", "")
        obj: Any = payload.decode() if (raw or not ctype.startswith("application/json")) else json.loads(payload)
        return resp.status, obj

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body, **kw)
