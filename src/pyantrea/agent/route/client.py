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
# AntreaProxy with proxyAll (Antrea v1.4+'s NodePort support): the host DNATs NodeIP:nodePort (the
# ipset's ip,proto:port entries) to a virtual IP that is routed into antrea-gw0 with the global
# virtual MAC as its permanent neighbour; ServiceLB in br-int has a flow per (virtual IP, nodePort).
NODEPORT_IPSET = "ANTREA-NODEPORT-IP"
NODEPORT_VIRTUAL_IP = "169.254.0.252"
GLOBAL_VMAC = "aa:bb:cc:dd:ee:ff"
PROXY_JUMPS = [
    ("nat", "PREROUTING", "ANTREA-PREROUTING", "Antrea: jump to Antrea prerouting rules"),
    ("nat", "OUTPUT", "ANTREA-OUTPUT", "Antrea: jump to Antrea output rules"),
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
    def sync_routes(self, own_cidr: str, peers: dict[str, str], proxy_all: bool = False) -> None:
        """`peers` maps a peer podCIDR to its gateway IP. Adds/replaces them, removes stale ones. With
        `proxy_all`, also the NodePort virtual IP's route and permanent neighbour on the gateway."""
        with self.lock:
            idx = self.link_index(self.gateway)
            for cidr, gw in peers.items():
                net = ipaddress.IPv4Network(cidr)
                self.ipr.route("replace", dst=str(net.network_address), dst_len=net.prefixlen, gateway=gw,
                               oif=idx, flags=4)  # RTNH_F_ONLINK
            wanted = {str(ipaddress.IPv4Network(c)) for c in peers} | {str(ipaddress.IPv4Network(own_cidr))}
            if proxy_all:
                self.ipr.route("replace", dst=NODEPORT_VIRTUAL_IP, dst_len=32, oif=idx, scope=253)  # link
                self.ipr.neigh("replace", dst=NODEPORT_VIRTUAL_IP, lladdr=GLOBAL_VMAC, ifindex=idx,
                               state=0x80)  # NUD_PERMANENT
                wanted.add(f"{NODEPORT_VIRTUAL_IP}/32")
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

    def sync_iptables(self, pod_cidr: str, proxy_all: bool = False) -> None:
        nat_chains = ":ANTREA-POSTROUTING - [0:0]\n"
        nat_rules = (f"-A ANTREA-POSTROUTING -s {pod_cidr} -m comment --comment \"Antrea: masquerade pod to external "
                     f"packets\" -m set ! --match-set {IPSET} dst -j MASQUERADE\n")
        if proxy_all:
            run(["ipset", "create", NODEPORT_IPSET, "hash:ip,port", "-exist"])
            dnat = f"-m set --match-set {NODEPORT_IPSET} dst,dst -j DNAT --to-destination {NODEPORT_VIRTUAL_IP}"
            nat_chains += ":ANTREA-PREROUTING - [0:0]\n:ANTREA-OUTPUT - [0:0]\n"
            nat_rules += (f"-A ANTREA-POSTROUTING -d {NODEPORT_VIRTUAL_IP}/32 -o {self.gateway} -m comment --comment "
                          f"\"Antrea: masquerade NodePort packets sent into OVS\" -j MASQUERADE\n"
                          f"-A ANTREA-PREROUTING -m comment --comment \"Antrea: DNAT external to NodePort packets\" "
                          f"{dnat}\n"
                          f"-A ANTREA-OUTPUT -m comment --comment \"Antrea: DNAT local to NodePort packets\" {dnat}\n")
        rules = f"""*filter
:ANTREA-FORWARD - [0:0]
-A ANTREA-FORWARD -i {self.gateway} -m comment --comment "Antrea: accept packets from local pods" -j ACCEPT
-A ANTREA-FORWARD -o {self.gateway} -m comment --comment "Antrea: accept packets to local pods" -j ACCEPT
COMMIT
*nat
{nat_chains}{nat_rules}COMMIT
*mangle
:ANTREA-MANGLE - [0:0]
COMMIT
"""
        run(["iptables-restore", "--noflush"], input=rules)
        for table, chain, target, comment in JUMPS + (PROXY_JUMPS if proxy_all else []):
            spec = ["-m", "comment", "--comment", comment, "-j", target]
            if run(["iptables", "-w", "-t", table, "-C", chain, *spec], check=False).returncode != 0:
                run(["iptables", "-w", "-t", table, "-A", chain, *spec])
        sysctl("net.ipv4.conf.all.send_redirects", "0")

    def sync_nodeports(self, node_ip: str, ports: list[tuple[str, int]]) -> None:
        """proxyAll: the NodePort ipset holds `node_ip,<proto>:<nodePort>` for every NodePort (and
        nothing else)."""
        run(["ipset", "create", NODEPORT_IPSET, "hash:ip,port", "-exist"])
        p = run(["ipset", "list", NODEPORT_IPSET, "-output", "save"], check=False)
        have = {parts[2] for parts in (ln.split() for ln in p.stdout.splitlines())
                if len(parts) == 3 and parts[0] == "add"}
        want = {f"{node_ip},{proto}:{port}" for proto, port in ports}
        cmds = [f"add {NODEPORT_IPSET} {e} -exist" for e in sorted(want - have)]
        cmds += [f"del {NODEPORT_IPSET} {e} -exist" for e in sorted(have - want)]
        if cmds:
            run(["ipset", "restore"], input="\n".join(cmds) + "\n")
