"""`pyantrea-cni`: the thin CNI plugin (CNI spec 1.0). stdin + CNI_* env -> the agent -> result or error.

Like Antrea's `antrea` binary it does no work itself: it forwards the request to the agent on its
node over a unix socket (`agentSocket` in the network config, default /var/run/antrea/cni.sock) with
a hard timeout, and prints the agent's answer. Errors are CNI JSON on stdout with a non-zero exit.

kubelet starts it once per request, so its start-up is part of every Pod's ADD and DEL. It is meant
to run as `cni_command()` says: ``python3 -I -S -c "<import this module from its .pyc>; main()"``: no
site, no site-packages, no environment, so nothing but the standard library and this module are
looked at (site alone is 10+ ms here, the package's usual imports 30+), and no source is compiled.
Besides the interpreter's own start-up it imports only `_socket`, `_json` and `posix`: the `socket`
module's enum set-up costs 3-5x a bare interpreter start, `json` pulls in `re` and `enum` (10 ms
together) and `os` 1.5 ms. So JSON goes through `_json`'s C scanner and encoder, exactly what
`json.loads`/`json.dumps` use; anything they do not handle, and every error, goes to `json` itself,
so results and messages are json's.
"""

from __future__ import annotations

import _socket
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # (typing alone is a few ms of start-up)
    from typing import Any

SUPPORTED = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
DEFAULT_SOCKET = "/var/run/antrea/cni.sock"
TIMEOUT = 60.0


def _json_loads(text: str | bytes) -> Any:
    """json.loads(text), through `_json`'s C scanner when it can."""
    try:
        import _json

        class _Ctx:  # what json.JSONDecoder() gives the scanner
            strict = True
            object_hook = None
            object_pairs_hook = None
            parse_float = float
            parse_int = int
            parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__

        s = text.decode() if isinstance(text, bytes) else text
        ws = " \t\n\r"
        i = len(s) - len(s.lstrip(ws))
        obj, end = _json.make_scanner(_Ctx())(s, i)  # type: ignore[arg-type]  # (its stub wants a JSONDecoder)
        if s[end:].strip(ws):
            raise ValueError("extra data")
        return obj
    except Exception:  # noqa: BLE001 - json says what is wrong, in its words
        import json

        return json.loads(text)


def _json_dumps(obj: Any) -> str:
    """json.dumps(obj), through `_json`'s C encoder when it can."""
    try:
        import _json

        def default(o: Any) -> Any:
            raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")

        enc = _json.make_encoder({}, default, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)
        return "".join(enc(obj, 0))
    except Exception:  # noqa: BLE001
        import json

        return json.dumps(obj)


def error(code: int, msg: str, details: str = "", version: str = "1.0.0") -> dict[str, Any]:
    return {"cniVersion": version, "code": code, "msg": msg, "details": details}


def run(env: dict[str, str], stdin: str) -> tuple[int, dict[str, Any]]:
    command = env.get("CNI_COMMAND", "")
    if command == "VERSION":
        return 0, {"cniVersion": "1.0.0", "supportedVersions": SUPPORTED}
    if command not in ("ADD", "DEL", "CHECK"):
        return 1, error(4, f"invalid CNI_COMMAND {command!r}" if command else "required env variable CNI_COMMAND is missing",
                        "want ADD, DEL, CHECK or VERSION")
    try:
        conf = _json_loads(stdin)
    except ValueError as e:
        return 1, error(6, f"failed to decode the network configuration: {e}")
    if not isinstance(conf, dict):
        return 1, error(6, "the network configuration is not a JSON object")
    version = str(conf.get("cniVersion", "1.0.0"))
    missing = [k for k in ("CNI_CONTAINERID", "CNI_IFNAME") if not env.get(k)]
    if command in ("ADD", "CHECK") and not env.get("CNI_NETNS"):
        missing.append("CNI_NETNS")
    if missing:
        return 1, error(4, f"required env variables [{','.join(missing)}] missing", version=version)
    sock = str(conf.get("agentSocket") or DEFAULT_SOCKET)
    body = {"env": {k: v for k, v in env.items() if k.startswith("CNI_")}, "conf": stdin}
    try:
        status, ans = post(sock, f"/cni/{command.lower()}", body)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        return 1, error(11, f"the agent is not reachable at {sock}: {e}", version=version)
    except TimeoutError:
        return 1, error(11, f"the agent at {sock} did not answer within {TIMEOUT:.0f} s", version=version)
    except (OSError, ValueError) as e:
        return 1, error(5, f"request to the agent failed: {e}", version=version)
    err = ans.get("error") if isinstance(ans, dict) else None
    if isinstance(err, dict):  # a CNI error (the agent answers it with a 4xx/5xx status)
        return 1, error(int(err.get("code", 999)), str(err.get("msg", "")), str(err.get("details", "")), version)
    if status >= 400 or not isinstance(ans, dict):
        return 1, error(5, f"the agent refused the request ({status}): {err or ans}", version=version)
    return 0, ans.get("result") or {}


def post(sock_path: str, path: str, body: Any, timeout: float = TIMEOUT) -> tuple[int, Any]:
    """One HTTP/1.1 POST of JSON over the agent's unix socket (``Connection: close``); returns (status,
    the decoded JSON body, or its text when it is not JSON). ``timeout`` bounds each socket operation."""
    data = _json_dumps(body).encode()
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (path.encode(), len(data)) + data)
        buf = b""
        head = b""
        length = -1
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if not head and b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                length = next((int(v) for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:])
                               if k.strip().lower() == b"content-length"), -2)
            if length >= 0 and len(buf) >= length:
                break
    finally:
        s.close()
    if not head:
        raise ValueError(f"the agent at {sock_path} closed the connection without an HTTP answer")
    line = head.split(b"\r\n", 1)[0].split()
    if len(line) < 2 or not line[0].startswith(b"HTTP/") or not line[1].isdigit():
        raise ValueError(f"not an HTTP answer from {sock_path}: {head[:80]!r}")
    payload = buf[:length] if length >= 0 else buf
    ctype = next((v.strip() for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:])
                  if k.strip().lower() == b"content-type"), b"")
    return int(line[1]), _json_loads(payload) if ctype.startswith(b"application/json") else payload.decode()


def cni_command(python: str | None = None) -> list[str]:
    """The argv that runs this plugin fast (``python`` defaults to the running interpreter): isolated
    mode without site, this package's directory first on sys.path, this module from its cached
    bytecode (a script given by path is compiled at every start)."""
    import os

    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return [python or sys.executable, "-I", "-S", "-c",
            f"import sys; sys.path[:0] = [{src!r}]; from pyantrea.cni.plugin import main; sys.exit(main())"]


def main() -> int:
    import posix  # built in, loaded at start-up (os is 1.5 ms more)

    env = {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
           for k, v in posix.environ.items()}
    code, out = run(env, sys.stdin.read() if not sys.stdin.isatty() else "")
    if out or code:
        print(_json_dumps(out))
    return code


if __name__ == "__main__":
    sys.exit(main())
