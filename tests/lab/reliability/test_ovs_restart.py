"""OVS restart (issue 5 §2, spec §11.2): `lab restart ovs worker1` kills ovs-vswitchd (SIGKILL) and
starts it again on the same database with flow-restore-wait=true; the agent notices the new
vswitchd, replays every flow in one bundle and clears flow-restore-wait."""

from __future__ import annotations

import time

from .reltools import ALLOW_FE_BE, BACKEND1, BACKEND2, FRONTEND, Pinger, RelLab, applied, until


def test_ovs_restart_traffic_resumes_within_2s_with_the_same_flows(lab: RelLab) -> None:
    with applied(lab, ALLOW_FE_BE):
        assert until(lambda: lab.sh(FRONTEND, "ping", "-c1", "-W1", lab.ip(BACKEND2)).returncode == 0, 10) \
            is not None
        before = sorted(f.norm() for f in lab.flows("worker1"))
        st0 = lab.stats("worker1")
        recv = lab.probe(FRONTEND, "recv", "--iface", "eth0")
        denied = lab.probe(BACKEND1, "probe", "--dst", lab.ip(FRONTEND), "--port", "80", "--rate", "100")
        cross = Pinger(lab.ns(FRONTEND), lab.ip(BACKEND2), 0.02)
        local = Pinger(lab.ns(FRONTEND), lab.ip(BACKEND1), 0.02)
        try:
            time.sleep(0.5)
            t0 = time.monotonic()
            lab.lab("restart", "ovs", "worker1")
            took = until(lambda: sorted(f.norm() for f in lab.flows("worker1")) == before, 10, 0.01)
            complete = time.monotonic() - t0
            time.sleep(2.5)
        finally:
            r_cross, r_local = cross.stop(), local.stop()
            d = denied.stop()
            got = recv.stop()
        print(f"\nflows complete {complete:.2f} s after `lab restart ovs` started\n"
              f"cross-node ping: {r_cross.lost}/{r_cross.transmitted} lost, longest gap {r_cross.max_gap:.2f} s\n"
              f"same-node ping: {r_local.lost}/{r_local.transmitted} lost, longest gap {r_local.max_gap:.2f} s\n"
              f"denied probes: {d}")
        assert took is not None, "the flows did not come back"
        assert complete < 2.0
        assert r_cross.max_gap < 2.0 and r_local.max_gap < 2.0
        # traffic is flowing again at the end: the last 2 s lost nothing
        for r in (r_cross, r_local):
            assert r.times and r.times[-1] > time.time() - 1.0
        assert d["attempts"] > 200 and d["through"] == 0, d
        assert got.get(f"tcp:{lab.ip(BACKEND1)}:80", 0) == 0, got

        st1 = lab.stats("worker1")
        assert st1["ovsReplays"] == st0["ovsReplays"] + 1
        assert st1["bundles"] == st0["bundles"] + 1  # the replay is one bundle
        assert st1["flowMods"] - st0["flowMods"] == len(before)
        other = lab.vsctl("worker1", "get", "Open_vSwitch", ".", "other_config")
        assert "flow-restore-wait" not in other, other
        log = (lab.root / "nodes/worker1/agent.log").read_text()
        assert f"replayed {len(before)} flows in one bundle" in log
    # policies replayed too: the seed's policies deny ICMP again once the extra policy is gone
    assert lab.sh(FRONTEND, "ping", "-c1", "-W1", lab.ip(BACKEND2)).returncode != 0
    assert lab.reaches(FRONTEND, BACKEND2, t=2)
