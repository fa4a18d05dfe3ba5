"""The process that plays a Pod's containers in the lab: ``python -m pyantrea.lab.workload``.

It runs inside the Pod's network namespace and serves HTTP on port 80, answering every ``GET /``
with the seed image's index page (Praqma Network-MultiTool)::

    Praqma Network MultiTool (with NGINX) - <pod name> - <podIP>/<prefix>

Pods labelled ``k8s-app=kube-dns`` also get ``--dns STATE_DIR``: a DNS server on UDP and TCP 53
for ``cluster.local`` (`pyantrea.lab.dns`) fed from the controller's current state folder.

``--ready-fd N``: once every socket listens, "ready" is written to that file descriptor and it is
closed, so the lab waits for exactly that instead of polling.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVER = "nginx/1.18.0"


def index_page(pod: str, ip: str, prefix: int) -> str:
    return f"Praqma Network MultiTool (with NGINX) - {pod} - {ip}/{prefix}\n"


def make_handler(body: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = SERVER
        sys_version = ""

        def _answer(self, send_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)
            else:
                msg = b"<html><head><title>404 Not Found</title></head><body><h1>404 Not Found</h1></body></html>\n"
                self.send_response(404)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                if send_body:
                    self.wfile.write(msg)

        def do_GET(self) -> None:
            self._answer(True)

        def do_HEAD(self) -> None:
            self._answer(False)

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the lab keeps only errors in the Pod's log

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pyantrea.lab.workload", description=__doc__.splitlines()[0])
    ap.add_argument("--pod", required=True, help="Pod name (shown in the index page)")
    ap.add_argument("--ip", required=True, help="Pod IP")
    ap.add_argument("--prefix", type=int, default=24, help="prefix length of the node's pod CIDR")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--dns", metavar="STATE_DIR", help="also serve DNS on port 53 from this cluster folder")
    ap.add_argument("--ready-fd", type=int, help="write 'ready' to this fd once listening")
    a = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    httpd = _Server(("0.0.0.0", a.port), make_handler(index_page(a.pod, a.ip, a.prefix).encode()))
    if a.dns:
        from pyantrea.lab.dns import ClusterZoneSource, DNSServer

        try:
            DNSServer(ClusterZoneSource(a.dns), port=53).start()
        except OSError as e:
            print(f"workload {a.pod}: DNS server failed: {e}", file=sys.stderr, flush=True)
            return 1
    if a.ready_fd is not None:
        try:
            os.write(a.ready_fd, b"ready\n")
            os.close(a.ready_fd)
        except OSError:
            pass
    try:
        httpd.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as e:  # e.g. port 80 already taken
        print(f"workload: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
