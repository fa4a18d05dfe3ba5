"""IPAM through the real CNI `host-local` plugin (Debian containernetworking-plugins), spec §10 step 2."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from typing import Any

from pyantrea.errors import CNIError

SEARCH = ["/opt/cni/bin", "/usr/lib/cni"]


def find_plugin(name: str, cni_path: str = "") -> str:
    for d in SEARCH + [p for p in cni_path.split(":") if p]:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    found = shutil.which(name)
    if found:
        return found
    raise CNIError(5, f"IPAM plugin {name} not found", f"searched {', '.join(SEARCH)} and CNI_PATH {cni_path!r}")


def host_local(command: str, container_id: str, ifname: str, subnet: str, gateway: str, data_dir: str,
               ip: str | None = None, cni_path: str = "", netns: str = "/dev/null") -> dict[str, Any]:
    """Run host-local with the agent's rewritten IPAM config (subnet = podCIDR, gateway = gateway IP)."""
    conf = {"cniVersion": "1.0.0", "name": "antrea", "type": "antrea",
            "ipam": {"type": "host-local", "dataDir": data_dir,
                     "ranges": [[{"subnet": subnet, "gateway": gateway}]]}}
    args = "IgnoreUnknown=1" + (f";IP={ip}" if ip else "")
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
           "CNI_IFNAME": ifname, "CNI_PATH": cni_path or ":".join(SEARCH), "CNI_ARGS": args,
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    p = subprocess.run([find_plugin("host-local", cni_path)], input=json.dumps(conf), env=env,
                       capture_output=True, text=True, timeout=10)
    out: dict[str, Any] = {}
    if p.stdout.strip():
        try:
            out = json.loads(p.stdout)
        except ValueError:
            raise CNIError(5, f"host-local {command} returned non-JSON output", p.stdout[:200]) from None
    if p.returncode != 0:
        code = int(out.get("code", 999)) if isinstance(out, dict) else 999
        raise CNIError(code, f"IPAM (host-local) {command} failed: {out.get('msg', p.stderr.strip())}",
                       str(out.get("details", "")))
    return out


def leases(data_dir: str, network: str = "antrea") -> list[tuple[str, str, str]]:
    """host-local's reservations in ``data_dir/network``: (container id, ifname, IP), one per file
    named by the IP (content ``<container id>\\r\\n<ifname>``)."""
    out: list[tuple[str, str, str]] = []
    try:
        names = os.listdir(os.path.join(data_dir, network))
    except FileNotFoundError:
        return out
    for name in sorted(names):
        try:
            ipaddress.ip_address(name)
            with open(os.path.join(data_dir, network, name)) as f:
                lines = f.read().splitlines()
        except (ValueError, OSError):
            continue
        if lines and lines[0].strip():
            out.append((lines[0].strip(), lines[1].strip() if len(lines) > 1 else "eth0", name))
    return out
