"""antctl's commands and flags as Antrea users know them (issue 13 item 5), offline on examples/seed:
each output checked against the folder's real state (its compiled flows, its computed policies and
groups, its interfaces). The live lab's answers are checked in tests/lab/test_observability.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from pyantrea.antctl.main import main as antctl
from pyantrea.offline import OfflineCluster

SEED = str(Path(__file__).resolve().parents[2] / "examples" / "seed")


@pytest.fixture(scope="module")
def seed() -> OfflineCluster:
    return OfflineCluster.load(SEED)


def run(capsys: pytest.CaptureFixture[str], *args: str, cluster: bool = True) -> tuple[int, str, str]:
    try:
        rc = antctl((["--cluster", SEED] if cluster else []) + list(args))
    except SystemExit as e:  # argparse's usage errors
        rc = int(e.code or 0)
    out = capsys.readouterr()
    return rc, out.out, out.err


def table(out: str) -> list[list[str]]:
    return [ln.split() for ln in out.splitlines()]


# ---------------------------------------------------------------------------------------- version
def test_version_without_a_lab(capsys, tmp_path: Path) -> None:
    rc, out, err = run(capsys, "--lab-dir", str(tmp_path / "nolab"), "version", cluster=False)
    assert rc == 0 and yaml.safe_load(out) == {"antctlVersion": "v0.1.0"} and err == ""
    rc, out, _ = run(capsys, "--lab-dir", str(tmp_path / "nolab"), "version", "-o", "json", cluster=False)
    assert rc == 0 and json.loads(out) == {"antctlVersion": "v0.1.0"}


# ---------------------------------------------------------------------------------------- agentinfo
def test_agentinfo_is_what_the_folder_says(capsys, seed: OfflineCluster) -> None:
    rc, out, _ = run(capsys, "get", "agentinfo")
    rows = table(out)
    assert rc == 0 and rows[0] == ["POD", "NODE", "STATUS", "NODE-SUBNET", "NETWORK-POLICIES", "ADDRESS-GROUPS",
                                   "APPLIED-TO-GROUPS", "LOCAL-PODS"]
    by_node = {r[1]: r for r in rows[1:]}
    assert set(by_node) == {n.name for n in seed.cluster.nodes}
    for n in seed.cluster.nodes:
        view = seed.policy_state.node_view(n.name)
        net = seed.cluster.network(n.name)
        assert by_node[n.name][3:] == [net.pod_cidr, str(len(view.policies)), str(len(view.address_groups)),
                                       str(len(view.applied_to_groups)), str(len(net.interfaces))]
    assert by_node["worker1"][0] == "kube-system/antrea-agent-f76q2"  # the seed's antrea-agent Pod on worker1
    rc, out, _ = run(capsys, "get", "ai", "--node", "worker1", "-o", "yaml")
    d = yaml.safe_load(out)
    flows = seed.node_flows("worker1").flows
    assert d["nodeRef"] == {"kind": "Node", "name": "worker1"} and d["localPodNum"] == 4
    assert sum(d["ovsInfo"]["flowTable"].values()) == len(flows)
    assert d["ovsInfo"]["flowTable"]["10"] == sum(1 for f in flows if f.table == 10)


def test_controllerinfo(capsys, seed: OfflineCluster) -> None:
    rc, out, _ = run(capsys, "get", "ci")
    rows = table(out)
    st = seed.policy_state
    assert rows[0] == ["POD", "NODE", "STATUS", "NETWORK-POLICIES", "ADDRESS-GROUPS", "APPLIED-TO-GROUPS",
                       "CONNECTED-AGENTS"]
    assert rows[1] == ["kube-system/antrea-controller-655fcbc656-hrkwg", "worker2", "<NONE>", str(len(st.policies)),
                       str(len(st.address_groups)), str(len(st.applied_to_groups)), "0"]
    rc, out, _ = run(capsys, "get", "controllerinfo", "-o", "json")
    assert json.loads(out)["networkPolicyControllerInfo"]["networkPolicyNum"] == len(st.policies)


# ---------------------------------------------------------------------------------------- ovsflows
def test_ovsflows_of_a_pod_are_its_interface_flows(capsys, seed: OfflineCluster) -> None:
    iface = seed.cluster.interface_of("default", "frontend")
    assert iface is not None
    rc, out, _ = run(capsys, "get", "ovsflows", "-p", "frontend", "-n", "default")  # the node comes from the Pod
    lines = out.splitlines()[1:]
    assert rc == 0 and out.startswith("FLOW\n") and len(lines) == 5
    for ln in lines:  # its port, its MAC or its IP: every one, and nothing else
        assert iface.interface in ln or iface.mac in ln or f"nw_dst={iface.ip}" in ln, ln
    mine = [f.of13_text() for f in seed.node_flows("worker1").flows
            if f'in_port="{iface.interface}"' in f.of13_text() or f"dl_dst={iface.mac}" in f.of13_text()
            or f"nw_dst={iface.ip} " in f.of13_text()]
    assert lines == mine
    rc, out2, _ = run(capsys, "get", "of", "-p", "default/frontend", "--node", "worker1")
    assert out2 == out
    rc, out, err = run(capsys, "get", "of", "-p", "frontend", "--node", "worker2")
    assert rc == 1 and "no interface on node worker2" in err


def test_ovsflows_of_a_networkpolicy_are_its_conjunctions(capsys, seed: OfflineCluster) -> None:
    rules = [r for r in seed.node_flows("worker1").rules if r.policy == "default/frontendpolicy"]
    ids = {r.conj_id for r in rules}
    assert ids
    rc, out, _ = run(capsys, "get", "ovsflows", "-N", "frontendpolicy", "-n", "default", "-o", "json")
    flows = json.loads(out)
    assert rc == 0 and flows
    for f in flows:
        got = {int(x) for x in re.findall(r"conj_id=(\d+)|conjunction\((\d+),", f["flow"]) for x in x if x}
        assert got & ids, f
    expected = [f for f in seed.node_flows("worker1").flows
                if any(f"conjunction({i}," in f.dump_text() or f"conj_id={i}," in f.dump_text() for i in ids)]
    assert len(flows) == len(expected)
    # a policy on two nodes needs --node
    rc, _, err = run(capsys, "get", "of", "-N", "backendpolicy")
    assert rc == 1 and "worker1, worker2: give --node" in err
    rc, out, _ = run(capsys, "get", "of", "-N", "default/backendpolicy", "--node", "worker2", "-o", "ofctl")
    assert rc == 0 and out and all("conj" in ln for ln in out.splitlines())
    rc, _, err = run(capsys, "get", "of", "-N", "nosuch")
    assert rc == 1 and "default/nosuch has no OpenFlow rules" in err


def test_ovsflows_of_several_tables(capsys, seed: OfflineCluster) -> None:
    rc, out, _ = run(capsys, "get", "ovsflows", "--node", "worker1", "-T", "50,EgressDefaultRule", "-o", "yaml")
    flows = yaml.safe_load(out)
    want = [f for f in seed.node_flows("worker1").flows if f.table in (50, 60)]
    assert rc == 0 and [(f["table"], f["priority"]) for f in flows] == [(f.table, f.priority) for f in want]
    rc, out, _ = run(capsys, "get", "of", "--node", "worker1", "-T", "0,110", "-o", "ofctl")
    assert len(out.splitlines()) == sum(1 for f in seed.node_flows("worker1").flows if f.table in (0, 110))
    rc, out, _ = run(capsys, "get", "of", "--table-names-only")
    assert "10 SpoofGuard" in out.splitlines() and len(out.splitlines()) == 14


# ---------------------------------------------------------------------------------------- networkpolicy
def test_networkpolicy_of_a_pod(capsys, seed: OfflineCluster) -> None:
    rc, out, _ = run(capsys, "get", "networkpolicy", "-p", "backend2", "-n", "default")
    assert rc == 0 and [r[1] for r in table(out)[1:]] == ["backendpolicy"]
    rc, out, _ = run(capsys, "get", "netpol", "-p", "default/frontend", "--node", "worker1", "-o", "yaml")
    assert [p["name"] for p in yaml.safe_load(out)] == ["frontendpolicy"]
    rc, out, _ = run(capsys, "get", "netpol", "-p", "coredns-66bff467f8-bclzd", "-n", "kube-system")
    assert rc == 0 and out == "\n"  # no policy applies to it
    rc, _, err = run(capsys, "get", "netpol", "-p", "nosuch")
    assert rc == 1 and "nosuch" in err


def test_sort_by(capsys) -> None:
    rc, out, _ = run(capsys, "get", "netpol", "--sort-by=.rules")  # by the number of rules
    assert rc == 0 and [r[1] for r in table(out)[1:]] == ["backendpolicy", "frontendpolicy"]
    rc, out, _ = run(capsys, "get", "netpol", "--sort-by", ".sourceRef.name", "-o", "json")
    assert [p["name"] for p in json.loads(out)] == ["backendpolicy", "frontendpolicy"]
    rc, out, _ = run(capsys, "get", "atg", "--sort-by=.pods")
    assert rc == 0 and len(table(out)) == 3
    rc, out, _ = run(capsys, "get", "ag", "--sort-by")  # no value: Antrea's default field (the name)
    names = [r[0] for r in table(out)[1:]]
    assert names == sorted(names)


# ---------------------------------------------------------------------------------------- podinterface
def test_aggregated_podinterface_has_a_node_column(capsys, seed: OfflineCluster) -> None:
    rc, out, _ = run(capsys, "get", "podinterface")
    rows = table(out)
    assert rows[0][-1] == "NODE"
    want = {(i.namespace, i.pod, n.name) for n in seed.cluster.networks for i in n.interfaces}
    assert {(r[0], r[1], r[-1]) for r in rows[1:]} == want
    rc, out, _ = run(capsys, "get", "pi", "--node", "worker1")
    assert "NODE" not in table(out)[0]


# ---------------------------------------------------------------------------------------- query endpoint
def test_query_endpoint(capsys, seed: OfflineCluster) -> None:
    rc, out, _ = run(capsys, "query", "endpoint", "-p", "backend1", "-o", "json")
    ep = json.loads(out)["endpoints"][0]
    assert rc == 0 and (ep["namespace"], ep["name"]) == ("default", "backend1")
    assert [p["name"] for p in ep["policies"]] == ["backendpolicy"]
    # frontendpolicy's egress rule 1 selects backend1 (its AddressGroup) as a destination, no ingress rule as source
    assert [(r["policyref"]["name"], r["ruleindex"], r["direction"]) for r in ep["egressdstrules"]] == \
        [("frontendpolicy", 1, "Out")]
    assert ep["ingresssrcrules"] == []
    pol = seed.policy_state.policies["default/frontendpolicy"]
    assert ep["egressdstrules"][0]["ports"] == "TCP/80" and pol.rules[1].direction == "Out"
    rc, out, _ = run(capsys, "query", "endpoint", "-p", "frontend", "-n", "default")
    assert rc == 0 and out.startswith("Endpoint default/frontend\n")
    assert "Ingress rules that select the endpoint as a source:" in out
    assert re.search(r"^backendpolicy\s+default\s+0\s+default/backendpolicy\s+TCP/80", out, re.M)
    rc, out, _ = run(capsys, "query", "endpoints", "-p", "nosuch")
    assert rc == 1


# ---------------------------------------------------------------------------------------- CLI
def test_cluster_after_the_verb(capsys) -> None:
    rc, before, _ = run(capsys, "get", "netpol")
    rc2, after, _ = run(capsys, "get", "netpol", "--cluster", SEED, cluster=False)
    assert rc == rc2 == 0 and before == after
    rc, out, _ = run(capsys, "get", "--cluster", SEED, "ai", "--node", "worker2", cluster=False)
    assert rc == 0 and "worker2" in out


@pytest.mark.parametrize("args,usage", [
    (["get", "ovsflows", "--bogus"], "usage: antctl get ovsflows"),
    (["get", "networkpolicy", "-x"], "usage: antctl get networkpolicy"),
    (["query", "endpoint", "-p", "a", "--nope"], "usage: antctl query endpoint"),
    (["query", "endpoint"], "usage: antctl query endpoint"),
    (["traceflow", "-S", "a", "-D", "b", "--what"], "usage: antctl traceflow"),
])
def test_a_bad_flag_prints_that_commands_usage(capsys, args: list[str], usage: str) -> None:
    rc, out, err = run(capsys, *args)
    assert rc == 2 and err.startswith(usage), err


def test_help_lists_every_command(capsys) -> None:
    with pytest.raises(SystemExit):
        antctl(["get", "--help"])
    out = capsys.readouterr().out
    for noun in ("agentinfo", "controllerinfo", "ovsflows", "networkpolicy", "appliedtogroup", "addressgroup",
                 "podinterface"):
        assert noun in out
    with pytest.raises(SystemExit):
        antctl(["query", "--help"])
    out = capsys.readouterr().out
    assert "endpoint" in out and "networkpolicyevaluation" in out


