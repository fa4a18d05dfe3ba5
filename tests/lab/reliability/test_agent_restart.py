"""Agent restarts (issue 5 §1, spec §11.1): SIGKILL + start, five times, under traffic.

The seed's policies deny ICMP between frontend and the backends (frontendpolicy's egress allows
only TCP 80 and UDP 53), so the ping of the issue needs an extra policy allowing frontend <->
backends for any protocol: `reltools.ALLOW_FE_BE`, applied for the test and deleted after.
"""

from __future__ import annotations

import json
import os
import signal
import time

from .reltools import (
    ALLOW_FE_BE,
    BACKEND1,
    BACKEND2,
    BACKENDSVC,
    COREDNS1,
    FRONTEND,
    Pinger,
    RelLab,
    applied,
    until,
)

RESTARTS = 5


def test_agent_restarts_lose_nothing_and_replace_nothing(lab: RelLab) -> None:
    """Ping every 50 ms frontend -> backend2 (cross node) and long-lived TCP streams through
    backendsvc (one keep-alive connection per backend, a GET every 50 ms) while worker1's agent is
    SIGKILLed and restarted 5 times: 0 pings lost, no stream breaks, denied traffic stays denied.
    OVS's flow monitor sees no flow deleted; flows replaced in place (round bump) keep their counters;
    the flows afterwards equal those before, ignoring the cookies' round bits."""
    with applied(lab, ALLOW_FE_BE):
        assert until(lambda: lab.sh(FRONTEND, "ping", "-c1", "-W1", lab.ip(BACKEND2)).returncode == 0, 10) \
            is not None, "the extra policy does not let frontend ping backend2"
        # the running agent persists its round 10 s after its start: from then on a restart bumps the
        # round, so every flow's cookie changes (the case where "replaced in place" matters)
        round0 = lab.stats("worker1")["round"]
        assert until(lambda: lab.round_num("worker1") == str(round0), 15, 0.2) is not None
        before = {f.key: f for f in lab.flows("worker1", stats=True)}
        mon = lab.monitor("worker1")
        # traffic: ping, streams, and a denied probe (backend1 -> frontend:80: backendpolicy's egress)
        recv = lab.probe(FRONTEND, "recv", "--iface", "eth0")
        denied = lab.probe(BACKEND1, "probe", "--dst", lab.ip(FRONTEND), "--port", "80", "--rate", "100")
        stream = lab.probe(FRONTEND, "stream", "--dst", BACKENDSVC, "--port", "80", "--backends", "2")
        ping = Pinger(lab.ns(FRONTEND), lab.ip(BACKEND2), 0.05)
        pids = []
        try:
            time.sleep(1.0)
            for _ in range(RESTARTS):
                t0 = time.monotonic()
                lab.lab("restart", "agent", "worker1")
                pids.append((lab.agent_pid("worker1"), round(time.monotonic() - t0, 2)))
                time.sleep(1.0)
        finally:
            res = ping.stop()
            streams = stream.stop()
            d = denied.stop()
            got = recv.stop()
        print(f"\nrestarts (pid, seconds): {pids}\nping: {res.transmitted} sent, {res.received} received, "
              f"longest gap {res.max_gap * 1000:.0f} ms\nstreams: {streams}\ndenied probes: {d}")
        assert len({p for p, _ in pids}) == RESTARTS
        assert res.transmitted >= RESTARTS * 20 and res.lost == 0, res
        assert len(streams["streams"]) == 2, f"kube-proxy never picked both backends: {streams}"
        for s in streams["streams"]:
            assert s["error"] is None, s
            assert s["requests"] >= RESTARTS * 10 and s["max_gap"] < 0.5, s
        assert d["attempts"] > 500 and d["through"] == 0, d
        assert got.get(f"tcp:{lab.ip(BACKEND1)}:80", 0) == 0, got

        # the last agent's stale-flow sweep (10 s after its start) deletes nothing either
        st = lab.stats("worker1")
        assert until(lambda: lab.round_num("worker1") == str(st["round"]), 15, 0.2) is not None, \
            "roundNum was not persisted"
        time.sleep(0.3)
        after = {f.key: f for f in lab.flows("worker1", stats=True)}
        events = mon.stop()

    assert sorted(f.norm() for f in after.values()) == sorted(f.norm() for f in before.values())
    deleted = [e for e in events if e[0] == "DELETED"]
    assert deleted == [], f"flows deleted by the restarts: {deleted[:5]}"
    assert [e for e in events if e[0] == "MODIFIED"] == []
    before_matches = {(k[0], k[2]) for k in before}
    added = [(e[1], e[2]) for e in events if e[0] == "ADDED"]
    assert set(added) <= before_matches, f"new flows: {set(added) - before_matches}"
    # a flow is replaced at most once (the round bump of the first restart); the other restarts,
    # inside the 10 s sweep delay, keep the round and change nothing
    assert len(added) == len(set(added)), "a flow was replaced more than once"
    assert st["round"] == round0 % 65535 + 1
    assert len(added) == len(before)  # every cookie changed: each flow replaced in place, once
    reset = [(k, before[k].n_packets, after[k].n_packets) for k in before if after[k].n_packets < before[k].n_packets]
    assert reset == [], f"packet counters went back: {reset[:5]}"
    spoofguard = [k for k in before if k[0] == 10 and "nw_src=10.222.1.48" in k[2]]
    assert spoofguard and after[spoofguard[0]].n_packets > before[spoofguard[0]].n_packets + 100
    print(f"flow events: {len(added)} replaced in place, {len(deleted)} deleted; round {round0} -> {st['round']}")


OLD_POD = """apiVersion: v1
kind: Pod
metadata: {name: reltest-old, namespace: default, labels: {app: reltest}}
spec:
  nodeName: worker1
  containers: [{name: c, image: x, ports: [{containerPort: 80}]}]
"""
NEW_POD = OLD_POD.replace("reltest-old", "reltest-new")


def test_pods_added_and_deleted_while_the_agent_is_down(lab: RelLab) -> None:
    """worker1's agent is killed; a Pod is deleted (kubelet cannot call CNI DEL: the lab removes the
    workload and the namespace) and another added (CNI ADD fails with code 11, try again later).
    When the agent returns it removes the deleted Pod's port, flows and IP reservation (spec §11.1)
    and the lab, as kubelet would, retries the failed ADD."""
    base = {f.norm() for f in lab.flows("worker1")}
    lab.apply_text(OLD_POD)
    old = lab.refresh().pod("reltest-old")
    assert old["ready"]
    old_cid = json.loads((lab.root / "lab.json").read_text())["pods"]["default/reltest-old"]["container_id"]
    try:
        os.kill(lab.agent_pid("worker1"), signal.SIGKILL)
        assert until(lambda: not lab.refresh().nodes["worker1"]["agent"], 5) is not None
        lab.apply_text(OLD_POD, delete=True, settle=False)
        p = lab.apply_text(NEW_POD, check=False, settle=False)
        assert p.returncode == 1
        assert "CNI ADD error code 11" in p.stderr and "not reachable" in p.stderr, p.stderr
        new = lab.refresh().pod("reltest-new")
        assert not new["ready"] and "code 11" in new["error"]
        # the old Pod is still plumbed on the node: nobody could tell the agent
        assert old["interface"] in lab.vsctl("worker1", "list-ports", "br-int").split()
        assert any(f.match.endswith(f"nw_src={old['ip']}") for f in lab.flows("worker1"))
        lease = lab.root / "nodes/worker1/ipam/antrea" / old["ip"]
        assert lease.read_text().splitlines()[0] == old_cid

        out = lab.lab("restart", "agent", "worker1")
        assert "retrying the CNI ADD of default/reltest-new" in out.stdout, out.stdout
        lab.refresh()
        new = lab.pod("reltest-new")
        assert new["ready"], new
        assert lab.reaches(COREDNS1, "reltest-new", t=3)
        objs = lab.node_objects("worker1")
        assert old["interface"] not in objs["ovs_ports"] + objs["links"] + objs["pod_interfaces"], objs
        assert new["interface"] in objs["pod_interfaces"]
        owners = {ip: (lab.root / "nodes/worker1/ipam/antrea" / ip).read_text().splitlines()[0]
                  for ip in objs["ipam_leases"]}
        assert old_cid not in owners.values(), owners  # released when the agent came back
        assert new["ip"] in owners
        flows = {f.norm() for f in lab.flows("worker1")}
        assert base <= flows and len(flows - base) == 5, sorted(flows - base)  # the new Pod's 5 flows
        log = (lab.root / "nodes/worker1/agent.log").read_text()
        assert f"removing interface {old['interface']} of deleted Pod default/reltest-old" in log
    finally:
        if not lab.refresh().nodes["worker1"]["agent"]:
            lab.lab("restart", "agent", "worker1", check=False)
        lab.apply_text(NEW_POD, delete=True, check=False)
        lab.apply_text(OLD_POD, delete=True, check=False)
    assert {f.norm() for f in lab.flows("worker1")} == base
