"""What the agent says about itself (antctl get agentinfo: Antrea's AntreaAgentInfo fields, in /v1/stats)
and which of its flows belong to a Pod (antctl get ovsflows -p: `/v1/ovsflows?pod=ns/name`)."""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from pyantrea import __version__

if TYPE_CHECKING:
    from pyantrea.agent.daemon import Agent


def _probe(fn: Any) -> tuple[bool, str]:
    try:
        return True, str(fn() or "")
    except Exception as e:  # noqa: BLE001 - a failed probe is a condition, not an error
        return False, f"{type(e).__name__}: {e}"


def agent_info(a: Agent) -> dict[str, Any]:
    """version, nodeRef, nodeSubnets, ovsInfo {version, bridgeName, flowTable}, networkPolicyControllerInfo,
    localPodNum and agentConditions (AgentHealthy, ControllerConnectionUp, OVSDBConnectionUp,
    OpenflowConnectionUp), each probed now."""
    from pyantrea.ovs.unixctl import Unixctl

    def ovs_version() -> str:
        with Unixctl(a.ovs_rundir / "ovs-vswitchd.ctl", timeout=5) as u:
            return u.call("version", []).strip()

    view = a.rules.view()
    flows = getattr(a, "flows", None)
    tables: Counter[int] = Counter()
    if flows is not None:
        with flows.lock:
            tables = Counter(f.table for fam in flows.families.values() for f in fam.values())
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    of_up, ver = _probe(ovs_version)
    m = re.search(r"\(Open vSwitch\)\s+(\S+)", ver)
    probes = [("AgentHealthy", (a.ready.is_set(), "" if a.ready.is_set() else "initializing")),
              ("ControllerConnectionUp", _probe(lambda: a.ctl.get("/healthz", timeout=2) and None)),
              ("OVSDBConnectionUp", _probe(lambda: a.db.get_bridge_external_id(a.bridge_name, "roundNum") and None)),
              ("OpenflowConnectionUp", (of_up, "" if of_up else ver))]
    conditions = []
    for kind, (ok, msg) in probes:
        c: dict[str, Any] = {"type": kind, "status": "True" if ok else "False", "lastHeartbeatTime": now}
        if not ok:
            c["message"] = msg
        conditions.append(c)
    return {"version": f"v{__version__}", "nodeRef": {"kind": "Node", "name": a.node},
            "nodeSubnets": [a.pod_cidr] if getattr(a, "pod_cidr", None) else [],
            "ovsInfo": {"version": m.group(1) if m else "", "bridgeName": a.bridge_name,
                        "flowTable": {str(t): n for t, n in sorted(tables.items())}},
            "networkPolicyControllerInfo": {"networkPolicyNum": len(view.policies),
                                            "addressGroupNum": len(view.address_groups),
                                            "appliedToGroupNum": len(view.applied_to_groups)},
            "localPodNum": len(a.ifstore.all()), "agentConditions": conditions}


def _no_stats(line: str) -> str:
    return re.sub(r"\b(duration|n_packets|n_bytes|idle_age|hard_age)=[^,]*, ?", "", line.strip())


def pod_lines(a: Agent, pod: str, lines: list[str], of13: bool) -> list[str]:
    """The dumped `lines` that are the Pod's own flows (its interface's flow family: classifier,
    SpoofGuard, ARP, L2/L3 forwarding to it)."""
    from pyantrea.httpapi import HTTPError

    ns, _, name = pod.rpartition("/")
    iface = next((i for i in a.ifstore.all() if i.namespace == (ns or "default") and i.pod == name), None)
    if iface is None:
        raise HTTPError(404, f"Pod {ns or 'default'}/{name} has no interface on node {a.node}")
    with a.flows.lock:
        fam = list(a.flows.families.get(f"pod/{iface.interface}", {}).values())
    want = {_no_stats(f.of13_text(stats=None)) if of13 else f.dump_text().strip() for f in fam}
    return [ln for ln in lines if (_no_stats(re.sub(r"^.*?table=", "table=", ln)) if of13 else ln.strip()) in want]
