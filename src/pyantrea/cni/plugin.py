"""`pyantrea-cni`: the thin CNI plugin (CNI spec 1.0). stdin + CNI_* env -> the agent -> result or error.

Like Antrea's `antrea` binary it does no work itself: it forwards the request to the agent on its
node over a unix socket (`agentSocket` in the network config, default /var/run/antrea/cni.sock) with
a hard timeout, and prints the agent's answer. Errors are CNI JSON on stdout with a non-zero exit.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from pyantrea.errors import PyantreaError

SUPPORTED = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
DEFAULT_SOCKET = "/var/run/antrea/cni.sock"
TIMEOUT = 60.0


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
        conf = json.loads(stdin)
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
    from pyantrea.httpapi import APIClient

    body = {"env": {k: v for k, v in env.items() if k.startswith("CNI_")}, "conf": stdin}
    try:
        status, ans = APIClient(sock, timeout=TIMEOUT).call("POST", f"/cni/{command.lower()}", body)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        return 1, error(11, f"the agent is not reachable at {sock}: {e}", version=version)
    except TimeoutError:
        return 1, error(11, f"the agent at {sock} did not answer within {TIMEOUT:.0f} s", version=version)
    except (OSError, ValueError, PyantreaError) as e:
        return 1, error(5, f"request to the agent failed: {e}", version=version)
    err = ans.get("error") if isinstance(ans, dict) else None
    if isinstance(err, dict):  # a CNI error (the agent answers it with a 4xx/5xx status)
        return 1, error(int(err.get("code", 999)), str(err.get("msg", "")), str(err.get("details", "")), version)
    if status >= 400 or not isinstance(ans, dict):
        return 1, error(5, f"the agent refused the request ({status}): {err or ans}", version=version)
    return 0, ans.get("result") or {}


def main() -> int:
    code, out = run(dict(os.environ), sys.stdin.read() if not sys.stdin.isatty() else "")
    if out or code:
        print(json.dumps(out))
    return code


if __name__ == "__main__":
    sys.exit(main())
