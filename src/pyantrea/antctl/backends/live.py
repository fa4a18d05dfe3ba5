"""antctl's live backend: the running lab's controller and agents, over their unix sockets.

Every answer comes from the component that owns it: objects (IPs, clusterIPs, Endpoints) from the
controller's API server, ports, MACs, ofports, rules and conj_ids from each node's agent. Nothing
is recomputed here."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

from pyantrea.antctl.backends.base import ClusterQueries, group_json
from pyantrea.apis import controlplane as cp
from pyantrea.errors import NotFoundError, PyantreaError
from pyantrea.httpapi import APIClient
from pyantrea.k8s.cluster import Cluster
from pyantrea.lab.state import lab_dir
from pyantrea.ovs.trace import TraceResult, parse_trace

__all__ = ["LabBackend"]


class _LiveState:
    """The controller's state, fetched once per antctl call."""

    def __init__(self, ctl: APIClient):
        self.ctl = ctl
        self.policies = {cp.policy_key_of(p): cp.policy_from_dict(p) for p in ctl.get("/v1/networkpolicies")}
        self.applied_to_groups = {g["name"]: cp.atg_from_dict(g) for g in ctl.get("/v1/appliedtogroups")}
        self.address_groups = {g["name"]: cp.ag_from_dict(g) for g in ctl.get("/v1/addressgroups")}

    def node_view(self, node: str) -> Any:
        from pyantrea.controller.networkpolicy import PolicyState

        return PolicyState(self.policies, self.applied_to_groups, self.address_groups).node_view(node)


class LabBackend(ClusterQueries):
    def __init__(self, explicit_dir: str | None = None):
        self.dir = lab_dir(explicit_dir)
        sock = self.dir / "controller" / "controller.sock"
        if not sock.exists():
            raise PyantreaError(f"no running lab at {self.dir} (start one with `pyantrea lab up`, "
                                "or give --cluster DIR to work offline)")
        self.ctl = APIClient(str(sock))
        self._state: _LiveState | None = None
        self._cluster: Cluster | None = None

    @property
    def cluster(self) -> Cluster:  # type: ignore[override]  # the base's attribute, fetched on first use
        """The controller's objects, with each node's network as its agent reports it (fetched once)."""
        if self._cluster is None:
            from pyantrea.agent.daemon import load_config
            from pyantrea.apis.k8s import NodeNetwork
            from pyantrea.controller.store import cluster_of
            from pyantrea.k8s.informer import decode
            from pyantrea.k8s.loader import AGENT_CONF
            from pyantrea.lab.state import LabPaths, LabState

            st = LabState.load(LabPaths(self.dir))
            conf = Path(st.folder) / AGENT_CONF if st is not None and st.folder else None
            config = load_config(str(conf) if conf is not None and conf.is_file() else None)
            objs = [decode(d) for d in self.ctl.get("/v1/objects")["items"]]
            base = cluster_of(objs, config)
            nets = []
            for n in base.nodes:
                if not (n.pod_cidr and n.node_ip):
                    continue
                net = self._agent_network(n.name)
                if net is None:  # its agent is down: what the Node object says, no ports
                    net = NodeNetwork(n.name, n.node_ip, n.pod_cidr,
                                      str(ipaddress.IPv4Network(n.pod_cidr).network_address + 1), "")
                nets.append(net)
            self._cluster = cluster_of(objs, config, tuple(nets))
        return self._cluster

    def _agent_network(self, node: str) -> Any:
        from pyantrea.apis.k8s import NodeNetwork, PodInterface

        sock = self.dir / "nodes" / node / "agent.sock"
        if not sock.exists():
            return None
        try:
            d = APIClient(str(sock), timeout=10).get("/v1/network")
        except (OSError, PyantreaError):
            return None
        ifaces = tuple(sorted((PodInterface(i["podNamespace"], i["podName"], node, i["interfaceName"],
                                            int(i["ofPort"]), i["mac"], i["ip"], i.get("containerID", ""))
                               for i in d["interfaces"]), key=lambda i: i.ofport))
        return NodeNetwork(d["name"], d["nodeIP"], d["podCIDR"], d["gatewayIP"], d["gatewayMAC"], d["gatewayName"],
                           int(d["gatewayOFPort"]), d["tunnelName"], int(d["tunnelOFPort"]), ifaces)

    def close(self) -> None:
        pass

    def policy_state(self) -> Any:
        if self._state is None:
            self._state = _LiveState(self.ctl)
        return self._state

    def agent(self, node: str) -> APIClient:
        self.cluster.node(node)
        sock = self.dir / "nodes" / node / "agent.sock"
        if not sock.exists():
            raise NotFoundError(f"the agent of node {node} is not running ({sock} is missing)")
        return APIClient(str(sock))

    def version(self, node: str | None = None) -> dict[str, str]:
        """The controller's version (its /v1/controlplane/stats), and with a node its agent's."""
        out = {"controllerVersion": str(self.ctl.get("/v1/controlplane/stats")["version"])}
        if node is not None:
            out["agentVersion"] = "v" + str(self.agent(node).get("/v1/version")["agentVersion"]).lstrip("v")
        return out

    # ---------------------------------------------------------------- agentinfo / controllerinfo
    def agentinfo(self, node: str | None) -> list[dict[str, Any]]:
        """Each agent's own report (/v1/stats: version, OVS, its policies and groups, its Pods, its
        conditions probed now); without --node every running agent."""
        keys = ("version", "nodeRef", "nodeSubnets", "ovsInfo", "networkPolicyControllerInfo", "localPodNum",
                "agentConditions")
        nodes = [node] if node else [n for n in self.node_names() if (self.dir / "nodes" / n / "agent.sock").exists()]
        out = []
        for n in nodes:
            st = self.agent(n).get("/v1/stats")
            info = {k: st[k] for k in keys if k in st}
            out.append({"version": info.pop("version", ""), "podRef": self.antrea_pod("antrea-agent", n), **info})
        return out

    def controllerinfo(self) -> dict[str, Any]:
        st = self.ctl.get("/v1/controlplane/stats")
        pod = self.antrea_pod("antrea-controller")
        node = next((p.node_name for p in self.cluster.pods if pod and p.namespace == pod["namespace"]
                     and p.name == pod["name"]), None)
        import time

        return {"version": st.get("version", ""), "podRef": pod,
                "nodeRef": {"kind": "Node", "name": node} if node else {},
                "networkPolicyControllerInfo": {"networkPolicyNum": st["policies"],
                                                "addressGroupNum": st["addressGroups"],
                                                "appliedToGroupNum": st["appliedToGroups"]},
                "connectedAgentNum": len(st.get("connectedAgents", [])),
                "controllerConditions": [{"type": "ControllerHealthy", "status": "True",
                                          "lastHeartbeatTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]}

    # ---------------------------------------------------------------------------- flows
    def _lines(self, node: str, table: int | None, fmt: str, pod: str | None = None) -> list[str]:
        from urllib.parse import quote

        q = f"/v1/ovsflows?format={fmt}" + (f"&table={table}" if table is not None else "") + \
            (f"&pod={quote(pod)}" if pod else "")
        return list(self.agent(node).get(q)["lines"])

    def ovsflows_ofctl(self, node: str, table: int | None, pod: str | None = None) -> list[str]:
        return self._lines(node, table, "ofctl", pod)

    def ovsflows_of13(self, node: str, table: int | None, pod: str | None = None) -> list[str]:
        return [re.sub(r"^.*?table=", "table=", re.sub(r"duration=[^,]*, ", "", line))
                for line in self._lines(node, table, "of13", pod)]

    def ovsflows_json(self, node: str, table: int | None, pod: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self._lines(node, table, "ofctl", pod):
            m = re.match(r"\s*cookie=(\S+), (?:table=(\d+), )?priority=(\d+),?(.*?) actions=(.*)$", line)
            if m:
                out.append({"table": int(m.group(2) or 0), "priority": int(m.group(3)), "cookie": m.group(1).rstrip(","),
                            "match": m.group(4), "actions": m.group(5), "flow": line.strip()})
        return out

    def ovsgroups(self, node: str, ids: list[int] | None) -> list[dict[str, Any]]:
        """The node's OVS groups as OVS has them, with their bucket counters (the agent's /v1/ovsgroups)."""
        ans = self.agent(node).get("/v1/ovsgroups")
        out = []
        for line in ans["lines"]:
            g = group_json(line, ans["stats"].get(str(group_json(line)["groupID"]), {}))
            if ids is None or g["groupID"] in ids:
                out.append(g)
        return out

    # ---------------------------------------------------------------------------- agent objects
    def networkpolicies(self, node: str | None, name: str | None, ns: str | None) -> list[cp.NetworkPolicy]:
        if node is None:
            return super().networkpolicies(None, name, ns)
        pols = [cp.policy_from_dict(p) for p in self.agent(node).get("/v1/networkpolicies")]
        pols = [p for p in pols if ns is None or p.namespace == ns]
        return _named(pols, name, "networkpolicy")

    def appliedtogroups(self, node: str | None, name: str | None) -> list[cp.AppliedToGroup]:
        if node is None:
            return super().appliedtogroups(None, name)
        return _named([cp.atg_from_dict(g) for g in self.agent(node).get("/v1/appliedtogroups")], name,
                      "appliedtogroup")

    def addressgroups(self, node: str | None, name: str | None) -> list[cp.AddressGroup]:
        if node is None:
            return super().addressgroups(None, name)
        return _named([cp.ag_from_dict(g) for g in self.agent(node).get("/v1/addressgroups")], name,
                      "addressgroup")

    def podinterfaces(self, node: str | None, name: str | None, ns: str | None) -> list[dict[str, Any]]:
        nodes = [node] if node else [n.name for n in self.cluster.nodes
                                     if (self.dir / "nodes" / n.name / "agent.sock").exists()]
        out = []
        for n in nodes:
            for i in self.agent(n).get("/v1/podinterfaces"):
                if (name is None or i["podName"] == name) and (ns is None or i["podNamespace"] == ns):
                    out.append(i)
        if name is not None and not out:
            raise NotFoundError(f"podinterface {name!r} not found")
        return out

    def trace_packet(self, node: str, port: str | None, source: str | None, destination: str | None,
                     flow: str, ct_next: list[str]) -> TraceResult:
        from pyantrea.agent.tracepacket import build_flow

        # -S/-D are resolved here, against the whole cluster (the agent knows only its own node)
        built = build_flow(self.cluster, node, port, source, destination, flow)
        ans = self.agent(node).post("/v1/trace-packet", {"flow": built, "ctNext": ct_next})
        names = {int(k): v for k, v in ans["portNames"].items()}
        trace = parse_trace(ans["text"], self.cluster.config.ovs_bridge) if ans["ok"] else None
        return TraceResult(node, ans["flow"], ans["text"], trace, names, 1)


    # ---------------------------------------------------------------- traceflow / reachability (issue 4)
    def node_network(self, node: str) -> Any:
        """The node's br-int as its agent has it: its Pod interfaces (ofports, MACs), gateway and tunnel."""
        self.agent(node)  # a clear error when the agent is not running
        return self.cluster.network(node)

    def policy_rules(self, node: str) -> list[Any]:
        """The agent's own OpenFlow policy rules, with the conj_ids it installed (its rule cache)."""
        from pyantrea.agent.networkpolicy import rule_from_dict

        return [rule_from_dict(d) for d in self.agent(node).get("/v1/ofrules")]

    def kube_proxy_rules(self, node: str) -> Any:
        """kube-proxy's rules on the node: what the lab wrote with `render_iptables` (same model, same cluster)."""
        from pyantrea.kubeproxy import build_rules

        return build_rules(self.cluster, node)

    def flow_stats(self, node: str) -> list[tuple[int, int, str, int]]:
        """(table, priority, match with numeric ports, n_packets) of every flow on the node's br-int."""
        names = {v: k for k, v in self.trace_port_names(node).items()}
        out = []
        for line in self.agent(node).get("/v1/ovsflows?format=of13")["lines"]:
            m = re.search(r"table=(\d+), n_packets=(\d+), n_bytes=\d+, (?:[a-z_]+=\d+, )*priority=(\d+),?(\S*) actions=",
                          line)
            if not m:
                continue
            match = re.sub(r'in_port="?([^,"]+)"?', lambda mm: f"in_port={names.get(mm.group(1), mm.group(1))}",
                           m.group(4))
            out.append((int(m.group(1)), int(m.group(3)), match, int(m.group(2))))
        return out

    def trace_port_names(self, node: str) -> dict[int, str]:
        net = self.node_network(node)
        names = {net.gateway_ofport: net.gateway_name, net.tunnel_ofport: net.tunnel_name}
        names.update({i.ofport: i.interface for i in net.interfaces})
        return names


def _named(objs: list[Any], name: str | None, kind: str) -> list[Any]:
    if name is None:
        return sorted(objs, key=lambda o: getattr(o, "key", o.name))
    got = [o for o in objs if o.name == name]
    if not got:
        raise NotFoundError(f"{kind} {name!r} not found")
    return got
