"""HTTP over a unix socket, client side (the controller's and the agents' APIs).

::

    status, body = request("/run/pyantrea-lab/controller/controller.sock", "POST", "/v1/apply", yaml_text)
    wait_healthy(sock, timeout=20)          # GET /healthz until 200
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyantrea.httpapi import UnixHTTPConnection

__all__ = ["UnixHTTPConnection", "request", "request_json", "wait_healthy"]


def request(sock: str | Path, method: str, path: str, body: bytes | str | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """One request; returns (status, body). Raises OSError when the socket cannot be reached."""
    conn = UnixHTTPConnection(sock, timeout=timeout)
    try:
        data = body.encode() if isinstance(body, str) else body
        hdrs = dict(headers or {})
        if data is not None:
            hdrs.setdefault("Content-Length", str(len(data)))
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (TimeoutError, http.client.HTTPException) as e:
        raise OSError(f"{method} {path} on {sock}: {e.__class__.__name__}: {e}") from e
    finally:
        conn.close()


def request_json(sock: str | Path, method: str, path: str, body: bytes | str | None = None,
                 content_type: str = "application/json", timeout: float = 10.0) -> tuple[int, Any]:
    """Like `request`, decoding a JSON answer (a non-JSON answer is returned as {"error": text})."""
    status, raw = request(sock, method, path, body, {"Content-Type": content_type}, timeout)
    try:
        return status, json.loads(raw) if raw else {}
    except ValueError:
        return status, {"error": raw.decode(errors="replace").strip()}


def wait_healthy(sock: str | Path, timeout: float = 20.0, alive: Callable[[], bool] | None = None,
                 interval: float = 0.05) -> bool:
    """Poll ``GET /healthz`` until it answers 200 (True), ``timeout`` passes or ``alive()`` says the
    server process is gone (False)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _ = request(sock, "GET", "/healthz", timeout=2.0)
            if status == 200:
                return True
        except OSError:
            pass
        if alive is not None and not alive():
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
