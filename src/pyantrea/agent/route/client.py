"""Host networking of a node (spec §4): gateway address, peer routes, ipset, iptables, sysctls.

Runs in the node's network namespace (the agent's own). One netlink socket for the agent's life
(design §2: opening a socket per call made Pod plumbing slower than `ip`). Every operation is
idempotent: `replace` for routes, `-exist` for ipset, check-then-append for iptables jumps, and
`iptables-restore --noflush` rewriting only Antrea's own chains.
"""

from __future__ import annotations

import ipaddress
import subprocess
import threading
import time
from pathlib import Path

from pyroute2 import IPRoute

from pyantrea.errors import PyantreaError

IPSET = "ANTREA-POD-IP"
JUMPS = [
    ("filter", "FORWARD", "ANTREA-FORWARD", "Antrea: jump to Antrea forwarding rules"),
    ("nat", "POSTROUTING", "ANTREA-POSTROUTING", "Antrea: jump to Antrea postrouting rules"),
    ("mangle", "PREROUTING", "ANTREA-MANGLE", "Antrea: jump to Antrea mangle rules"),
]


def run(argv: list[str], input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise PyantreaError(f"{' '.join(argv)} failed (exit {p.returncode}): {p.stderr.strip()}")
    return p


def sysctl(key: str, value: str) -> None:
    Path("/proc/sys", key.replace(".", "/")).write_text(value)


class RouteClient:
    def __init__(self, gateway: str):
        self.gateway = gateway
        self.ipr = IPRoute()
        self.lock = threading.Lock()

    def close(self) -> None:
        self.ipr.close()

    # ------------------------------------------------------------------------------ gateway
    def link_index(self, name: str, wait: float = 5.0) -> int:
        deadline = time.monotonic() + wait
        while True:
            idx = self.ipr.link_lookup(ifname=name)
            if idx:
                return int(idx[0])
            if time.monotonic() > deadline:
                raise PyantreaError(f"link {name} did not appear within {wait:.0f} s")
            time.sleep(0.1)

    def mtu_of_address(self, ip: str) -> int | None:
        """The MTU of the interface that holds `ip` (the Node IP), or None."""
        with self.lock:
            for a in self.ipr.get_addr(family=2):
                if a.get("address") == ip:
                    return int(self.ipr.get_links(a["index"])[0].get("mtu"))
        return None

    def configure_gateway(self, gw_ip: str, prefix: int, mtu: int) -> None:
        """Link up, MTU, and the first host address of the Pod subnet (spec §2 step 5)."""
        with self.lock:
            idx = self.link_index(self.gateway)
            self.ipr.link("set", index=idx, state="up", mtu=mtu)
            have = {(a.get("address"), a["prefixlen"]) for a in self.ipr.get_addr(index=idx, family=2)}
            if (gw_ip, prefix) not in have:
                self.ipr.addr("add", index=idx, address=gw_ip, prefixlen=prefix)
        sysctl(f"net.ipv4.conf.{self.gateway}.send_redirects", "0")

    # ------------------------------------------------------------------------------ routes
    def sync_routes(self, own_cidr: str, peers: dict[str, str]) -> None:
        """`peers` maps a peer podCIDR to its gateway IP. Adds/replaces them, removes stale ones."""
        with self.lock:
            idx = self.link_index(self.gateway)
            for cidr, gw in peers.items():
                net = ipaddress.IPv4Network(cidr)
                self.ipr.route("replace", dst=str(net.network_address), dst_len=net.prefixlen, gateway=gw,
                               oif=idx, flags=4)  # RTNH_F_ONLINK
            wanted = {str(ipaddress.IPv4Network(c)) for c in peers} | {str(ipaddress.IPv4Network(own_cidr))}
            for r in self.ipr.get_routes(family=2, oif=idx, table=254):
                dst = r.get("dst")
                if dst is None:
                    continue
                if f"{dst}/{r['dst_len']}" not in wanted:
                    self.ipr.route("del", dst=dst, dst_len=r["dst_len"], oif=idx)

    # ------------------------------------------------------------------------------ ipset/iptables
    def sync_ipset(self, cidrs: list[str]) -> None:
        run(["ipset", "create", IPSET, "hash:net", "-exist"])
        have = set()
        p = run(["ipset", "list", IPSET, "-output", "save"], check=False)
        for line in p.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "add":
                have.add(parts[2])
        want = {str(ipaddress.IPv4Network(c)) for c in cidrs}
        cmds = [f"add {IPSET} {c} -exist" for c in sorted(want - have)]
        cmds += [f"del {IPSET} {c} -exist" for c in sorted(have - want)]
        if cmds:
            run(["ipset", "restore"], input="\n".join(cmds) + "\n")

    def sync_iptables(self, pod_cidr: str) -> None:
        rules = f"""*filter
:ANTREA-FORWARD - [0:0]
-A ANTREA-FORWARD -i {self.gateway} -m comment --comment "Antrea: accept packets from local pods" -j ACCEPT
-A ANTREA-FORWARD -o {self.gateway} -m comment --comment "Antrea: accept packets to local pods" -j ACCEPT
COMMIT
*nat
:ANTREA-POSTROUTING - [0:0]
-A ANTREA-POSTROUTING -s {pod_cidr} -m comment --comment "Antrea: masquerade pod to external packets" \
-m set ! --match-set {IPSET} dst -j MASQUERADE
COMMIT
*mangle
:ANTREA-MANGLE - [0:0]
COMMIT
"""
        run(["iptables-restore", "--noflush"], input=rules)
        for table, chain, target, comment in JUMPS:
            spec = ["-m", "comment", "--comment", comment, "-j", target]
            if run(["iptables", "-w", "-t", table, "-C", chain, *spec], check=False).returncode != 0:
                run(["iptables", "-w", "-t", table, "-A", chain, *spec])
        sysctl("net.ipv4.conf.all.send_redirects", "0")
