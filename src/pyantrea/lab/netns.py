"""Network namespaces and links of the lab, through the `ip`, `sysctl` and `nft` commands.

Every namespace a lab creates starts with the lab's prefix (``pa-`` by default, `DEFAULT_PREFIX`;
``PYANTREA_LAB_PREFIX`` chooses another, recorded in lab.json): two labs with different prefixes (and
run dirs) run side by side on one host. Nothing here touches a name without the prefix it is given.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pyantrea.errors import PyantreaError

__all__ = [
    "DEFAULT_PREFIX",
    "NETNS_DIR",
    "PREFIX_ENV",
    "LabError",
    "add",
    "delete",
    "exec_argv",
    "env_prefix",
    "exists",
    "ip_batch",
    "isolate",
    "list_lab",
    "node_netns_name",
    "pod_netns_name",
    "run",
    "sysctl",
    "valid_prefix",
]

DEFAULT_PREFIX = "pa-"
PREFIX_ENV = "PYANTREA_LAB_PREFIX"
# One to eight of [a-z0-9], then "-", and no other "-": no prefix is then the start of another (nor
# of a name another lab makes), so `pa-*` and `pt-*` never overlap; "pa-t-" would (Pod t/x of the
# pa- lab is pa-t-x, as node x of a pa-t- lab).
PREFIX_RE = re.compile(r"[a-z0-9]{1,8}-")
NETNS_DIR = Path("/var/run/netns")
ETC_NETNS = Path("/etc/netns")
MAX_NETNS_NAME = 48  # ours; the kernel's limit is NAME_MAX (a file in /var/run/netns)
ISOLATE_TABLE = "ovs-isolate"


class LabError(PyantreaError):
    """A lab operation failed; the message names the command and what it said."""


def run(argv: Sequence[str], *, input: str | None = None, timeout: float = 30.0, check: bool = True,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        p = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout,
                           env=full_env, check=False)
    except FileNotFoundError as e:
        raise LabError(f"{' '.join(argv)}: {argv[0]} not found (run scripts/setup.sh)") from e
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout:g} s") from e
    if check and p.returncode != 0:
        said = (p.stderr.strip() or p.stdout.strip()) or "(no output)"
        raise LabError(f"{' '.join(argv)}: exit code {p.returncode}: {said}")
    return p


def exec_argv(ns: str | None, argv: Sequence[str]) -> list[str]:
    """``ip netns exec NS argv...`` (or argv itself in the root namespace)."""
    return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)


def ip_batch(ns: str | None, commands: Sequence[str], *, force: bool = False) -> None:
    """Several `ip` commands in one process (``ip [-n NS] [-force] -batch -``)."""
    if not commands:
        return
    argv = ["ip"] + (["-n", ns] if ns else []) + (["-force"] if force else []) + ["-batch", "-"]
    run(argv, input="\n".join(commands) + "\n", check=not force)


# ------------------------------------------------------------------------------------ names


def valid_prefix(prefix: str, what: str = PREFIX_ENV) -> str:
    """``prefix`` if it is a valid lab prefix (see `PREFIX_RE`), else a LabError naming ``what``."""
    if not PREFIX_RE.fullmatch(prefix):
        raise LabError(f"{what}={prefix!r}: a lab prefix is 1 to 8 of a-z and 0-9 followed by one '-' "
                       f"(e.g. {DEFAULT_PREFIX!r}, 'pt-'), and no other '-'")
    return prefix


def env_prefix() -> str:
    """The prefix of a new lab: ``PYANTREA_LAB_PREFIX`` (validated), else `DEFAULT_PREFIX`."""
    return valid_prefix(os.environ.get(PREFIX_ENV) or DEFAULT_PREFIX)


def _short_hash(s: str, n: int = 8) -> str:
    return hashlib.sha1(s.encode()).hexdigest()[:n]


def node_netns_name(node: str, prefix: str) -> str:
    """``<prefix><node>`` (``<prefix>n-<hash>`` if that would be too long or clash with the underlay)."""
    name = f"{prefix}{node}"
    if len(name) > MAX_NETNS_NAME or node in ("underlay",) or "/" in node:
        return f"{prefix}n-{_short_hash(node, 12)}"
    return name


def pod_netns_name(namespace: str, name: str, prefix: str) -> str:
    """``<prefix><ns>-<name>``, truncated with a hash suffix past `MAX_NETNS_NAME` characters."""
    full = f"{prefix}{namespace}-{name}"
    if len(full) <= MAX_NETNS_NAME:
        return full
    return full[:MAX_NETNS_NAME - 9] + "-" + _short_hash(f"{namespace}/{name}")


def pod_netns_fallback(namespace: str, name: str, prefix: str) -> str:
    """The name used when `pod_netns_name` clashes with another namespace of the lab."""
    return f"{prefix}p-{_short_hash(f'{namespace}/{name}', 12)}"


# ------------------------------------------------------------------------------------ namespaces


def exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def list_lab(prefix: str) -> list[str]:
    """Every network namespace named ``<prefix>*`` (a lab's, whichever run dir it has)."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def add(ns: str, *, forward: bool = False) -> None:
    """Create ``ns`` (if missing) with lo up and IPv6 off; ``forward``: a router (node) namespace:
    ip_forward=1 and no ICMP redirects (recipe gotcha F)."""
    if not exists(ns):
        run(["ip", "netns", "add", ns])
    ip_batch(ns, ["link set lo up"])
    kv = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
    if forward:
        kv.update({"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.send_redirects": "0",
                   "net.ipv4.conf.default.send_redirects": "0"})
    sysctl(ns, kv)


def delete(ns: str) -> None:
    if exists(ns):
        p = run(["ip", "netns", "del", ns], check=False)
        if p.returncode != 0 and exists(ns):
            time.sleep(0.1)
            run(["ip", "netns", "del", ns], check=False)


def sysctl(ns: str, kv: Mapping[str, str]) -> None:
    """Set sysctls inside ``ns`` in one process (writes /proc/sys from inside the namespace)."""
    if not kv:
        return
    args = [f"{k}={v}" for k, v in kv.items()]
    run(exec_argv(ns, ["sysctl", "-qw", *args]))


def link_exists(ns: str | None, dev: str) -> bool:
    argv = ["ip"] + (["-n", ns] if ns else []) + ["-j", "link", "show", "dev", dev]
    p = run(argv, check=False)
    return p.returncode == 0


def link_info(ns: str | None, dev: str) -> dict[str, object] | None:
    argv = ["ip"] + (["-n", ns] if ns else []) + ["-j", "link", "show", "dev", dev]
    p = run(argv, check=False)
    if p.returncode != 0:
        return None
    try:
        data = json.loads(p.stdout)
    except ValueError:
        return None
    return data[0] if data else None


def isolate(ns: str, dev: str) -> None:
    """Make a kernel netdev that userspace OVS reads through AF_PACKET dead to the namespace's own
    stack (recipe gotcha A): IPv6 off, ARP off, and an nftables netdev ingress chain that drops
    everything (it runs after the AF_PACKET taps, so OVS still sees every frame)."""
    sysctl(ns, {f"net.ipv6.conf.{dev}.disable_ipv6": "1"})
    ip_batch(ns, [f"link set dev {dev} arp off"])
    script = (f"add table netdev {ISOLATE_TABLE}\n"
              f"add chain netdev {ISOLATE_TABLE} in-{dev} "
              f"{{ type filter hook ingress device \"{dev}\" priority 0; policy drop; }}\n")
    run(exec_argv(ns, ["nft", "-f", "-"]), input=script)


# ------------------------------------------------------------------------------------ /etc/netns


def resolv_conf_path(ns: str) -> Path:
    return ETC_NETNS / ns / "resolv.conf"


def write_etc_file(ns: str, name: str, text: str) -> Path:
    """``/etc/netns/NS/NAME``: `ip netns exec NS` bind-mounts it over /etc/NAME."""
    d = ETC_NETNS / ns
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    tmp = d / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, p)
    return p


def remove_etc(ns: str) -> None:
    d = ETC_NETNS / ns
    if not d.is_dir():
        return
    for f in d.iterdir():
        try:
            f.unlink()
        except OSError:
            pass
    try:
        d.rmdir()
    except OSError:
        pass
    try:
        ETC_NETNS.rmdir()  # only if empty: /etc/netns did not exist before the lab on a fresh host
    except OSError:
        pass


def list_etc_lab(prefix: str) -> list[str]:
    """Every ``/etc/netns/<prefix>*`` directory."""
    try:
        return sorted(n for n in os.listdir(ETC_NETNS) if n.startswith(prefix))
    except FileNotFoundError:
        return []
