"""Pods, created the way kubelet creates them: a network namespace, then the CNI plugin executable
(CNI spec 1.0: environment + network config on stdin, result or error JSON on stdout), then the
Pod's resolv.conf and its workload process.

The agent's CNI server does all the plumbing (veth, IPAM, OVS port, flows); nothing here touches
the Pod's interfaces.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyantrea.lab import netns
from pyantrea.lab.procs import ProcRef, start_detached

__all__ = [
    "CNI_PATH",
    "CNIResult",
    "cni_argv",
    "cni_config",
    "cni_env",
    "resolv_conf",
    "run_cni",
    "start_workload",
    "wait_ready",
]

CNI_PATH = "/usr/lib/cni"
CNI_VERSION = "1.0.0"
CLUSTER_DOMAIN = "cluster.local"


def cni_argv() -> list[str]:
    """The CNI executable: the plugin run by this interpreter (not a pyenv shim: those take a second
    to start) in isolated mode without site (`pyantrea.cni.plugin.cni_command`): it needs only the
    standard library, and skipping site saves most of a start-up (``pyantrea-cni``, the console
    script, takes about 4x as long)."""
    from pyantrea.cni.plugin import cni_command

    return cni_command()


def dns_search(namespace: str) -> list[str]:
    return [f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]


def cni_config(agent_sock: str | Path, namespace: str, dns_ip: str | None) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": CNI_VERSION,
        "name": "antrea",
        "type": "antrea",
        "agentSocket": str(agent_sock),
        "ipam": {"type": "host-local"},
    }
    dns: dict[str, Any] = {"search": dns_search(namespace)}
    if dns_ip:
        dns = {"nameservers": [dns_ip], **dns}
    conf["dns"] = dns
    return conf


def cni_env(command: str, container_id: str, netns_name: str, namespace: str, name: str,
            ip: str | None, ifname: str = "eth0") -> dict[str, str]:
    args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={container_id}"
    if ip:
        args += f";IP={ip}"
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": str(netns.NETNS_DIR / netns_name),
        "CNI_IFNAME": ifname,
        "CNI_PATH": CNI_PATH,
        "CNI_ARGS": args,
    }


@dataclass(frozen=True)
class CNIResult:
    command: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def json(self) -> Any:
        try:
            return json.loads(self.stdout) if self.stdout.strip() else None
        except ValueError:
            return None

    def error_text(self) -> str:
        """A one-line description of a failure: the CNI error's code, msg and details."""
        d = self.json()
        if isinstance(d, dict) and ("code" in d or "msg" in d):
            txt = f"CNI {self.command} error code {d.get('code')}: {d.get('msg')}"
            if d.get("details"):
                txt += f" ({d.get('details')})"
            return txt
        said = (self.stdout.strip() or self.stderr.strip() or "(no output)").splitlines()
        return f"CNI {self.command} exit code {self.returncode}: {' / '.join(said[-5:])}"


def run_cni(command: str, node_ns: str | None, config: Mapping[str, Any], env: Mapping[str, str],
            timeout: float = 30.0) -> CNIResult:
    """Run the CNI executable as kubelet does (in the node's namespace, where kubelet runs)."""
    full_env = dict(os.environ)
    full_env.update(env)
    argv = netns.exec_argv(node_ns, cni_argv())
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, input=json.dumps(config), capture_output=True, text=True, env=full_env,
                           timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        return CNIResult(command, -1, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes)
                         else (e.stdout or ""), f"timed out after {timeout:g} s", time.monotonic() - t0)
    return CNIResult(command, p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


def resolv_conf(namespace: str, dns_ip: str | None) -> str:
    lines = []
    if dns_ip:
        lines.append(f"nameserver {dns_ip}")
    lines.append("search " + " ".join(dns_search(namespace)))
    lines.append("options ndots:5")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ workloads


def start_workload(pod_ns: str, pod: str, ip: str, prefix: int, log: Path, dns_state: Path | None
                   ) -> tuple[ProcRef, int]:
    """Start the Pod's workload inside its namespace. Returns its ProcRef and the read end of its
    readiness pipe (see `wait_ready`)."""
    r, w = os.pipe()
    try:
        argv = [sys.executable, "-m", "pyantrea.lab.workload", "--pod", pod, "--ip", ip, "--prefix", str(prefix),
                "--ready-fd", str(w)]
        if dns_state is not None:
            argv += ["--dns", str(dns_state)]
        ref = start_detached(netns.exec_argv(pod_ns, argv), log, pass_fds=(w,))
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return ref, r


def wait_ready(fds: Mapping[int, Any], timeout: float = 15.0) -> tuple[list[Any], list[Any]]:
    """Wait on readiness pipes {fd: key}. Returns (ready keys, failed keys): a workload that exits
    (EOF without "ready") or is not ready by ``timeout`` failed. Closes every fd."""
    pending = dict(fds)
    ready: list[Any] = []
    failed: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            rl, _, _ = select.select(list(pending), [], [], left)
            for fd in rl:
                data = os.read(fd, 64)
                key = pending.pop(fd)
                os.close(fd)
                (ready if data.startswith(b"ready") else failed).append(key)
    finally:
        for fd, key in pending.items():
            failed.append(key)
            os.close(fd)
    return ready, failed
