#!/usr/bin/env python3
"""Benchmark: agent and OVS restarts on the live lab (root). Prints, for each kind of restart:

  * packets lost: ping every --interval s frontend -> backend2 (across nodes) and frontend ->
    backend1 (same node) through worker1, and the longest time without a reply;
  * the time until the flows are complete: sampled every 10 ms from the SIGKILL on, the time until
    br-int holds every flow it held before (round bits of the cookies ignored), and whether any
    sample missed a flow;
  * flows deleted and re-added when nothing changed (`ovs-ofctl monitor br-int watch:` on worker1:
    a DELETED event for a flow that is still wanted, or an ADDED one after a DELETED of the same
    flow); flows replaced in place (an ADDED event over an existing flow: the round bump changes
    every cookie, OVS keeps the counters) are counted apart. Must be 0 for an agent restart.

Agent restarts (`pyantrea lab restart agent worker1`): each after the running agent has persisted
its round (so every restart bumps the round and every cookie changes), plus --quick restarts inside
a new agent's 10 s window (same round: nothing to change). "flows complete: always" means no
sample ever missed a flow. OVS restarts (`pyantrea lab restart ovs worker1`): the agent replays its flows in one bundle.
A long-lived HTTP keep-alive stream through backendsvc runs during the agent restarts.

The seed's policies deny ICMP between frontend and the backends: an extra policy allowing
frontend <-> backends (any protocol) is applied first. Everything runs in a private lab
(PYANTREA_LAB_DIR=/run/pa-bench-restart), refused if another lab is up, torn down at the end.

Run:  python bench/restart.py [--agent 3] [--quick 3] [--ovs 3] [--interval 0.01]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "lab")]

from reliability.reltools import (  # noqa: E402
    ALLOW_FE_BE,
    BACKEND1,
    BACKEND2,
    BACKENDSVC,
    FRONTEND,
    SEED,
    Pinger,
    RelLab,
    kill_leftovers,
    lab_netns,
    until,
)

NODE = "worker1"


class FlowSampler:
    """Samples worker1's flows every 10 ms; records when they are complete again and any miss."""

    def __init__(self, lab: RelLab, want: list[tuple[int, int, str, int, str]]):
        self.lab, self.want = lab, sorted(want)
        self.t0 = time.monotonic()
        self.min_present = len(want)
        self.complete_at: float | None = None
        self.incomplete_seen = False
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self) -> None:
        want = set(self.want)
        while not self.stop_ev.is_set():
            try:
                have = {f.norm() for f in self.lab.flows(NODE)}
            except Exception:  # noqa: BLE001 - vswitchd restarting
                have = set()
            present = len(want & have)
            self.min_present = min(self.min_present, present)
            if present < len(want):
                self.incomplete_seen = True
                self.complete_at = None
            elif self.complete_at is None:
                self.complete_at = time.monotonic() - self.t0
            time.sleep(0.01)

    def stop(self) -> None:
        self.stop_ev.set()
        self.t.join()


def flow_events(events: list[tuple[str, int, str, int]], before: set[tuple[int, str]]) -> tuple[int, int]:
    """(deleted and re-added / deleted while wanted, replaced in place)."""
    deleted: set[tuple[int, str]] = set()
    churned = replaced = 0
    for ev, table, match, _cookie in events:
        key = (table, match)
        if ev == "DELETED":
            deleted.add(key)
            churned += key in before
        elif ev == "ADDED" and key in before:
            if key not in deleted:
                replaced += 1
    return churned, replaced


def agent_restart(lab: RelLab, interval: float, wait_round: bool) -> dict[str, object]:
    if wait_round:
        r = lab.stats(NODE)["round"]
        until(lambda: lab.round_num(NODE) == str(r), 15, 0.2)
    before = lab.flows(NODE, stats=True)
    keys = {(f.table, f.match) for f in before}
    mon = lab.monitor(NODE)
    p_cross = Pinger(lab.ns(FRONTEND), lab.ip(BACKEND2), interval)
    p_local = Pinger(lab.ns(FRONTEND), lab.ip(BACKEND1), interval)
    time.sleep(0.3)
    sampler = FlowSampler(lab, [f.norm() for f in before])
    t0 = time.monotonic()
    lab.lab("restart", "agent", NODE)
    ready = time.monotonic() - t0
    time.sleep(1.0)
    sampler.stop()
    cross, local = p_cross.stop(), p_local.stop()
    if wait_round:  # the new agent's stale-flow sweep, 10 s after its start
        st = lab.stats(NODE)
        until(lambda: lab.round_num(NODE) == str(st["round"]), 15, 0.2)
    events = mon.stop()
    churned, replaced = flow_events(events, keys)
    after = {f.key: f for f in lab.flows(NODE, stats=True)}
    reset = sum(1 for f in before if f.key in after and after[f.key].n_packets < f.n_packets)
    return {"lost": cross.lost + local.lost, "sent": cross.transmitted + local.transmitted,
            "gap": max(cross.max_gap, local.max_gap), "ready": ready,
            "complete": 0.0 if not sampler.incomplete_seen else sampler.complete_at,
            "missing": len(before) - sampler.min_present, "churned": churned, "replaced": replaced,
            "flows": len(before), "reset": reset}


def ovs_restart(lab: RelLab, interval: float) -> dict[str, object]:
    before = lab.flows(NODE)
    st0 = lab.stats(NODE)
    p_cross = Pinger(lab.ns(FRONTEND), lab.ip(BACKEND2), interval)
    p_local = Pinger(lab.ns(FRONTEND), lab.ip(BACKEND1), interval)
    time.sleep(0.5)
    sampler = FlowSampler(lab, [f.norm() for f in before])
    lab.lab("restart", "ovs", NODE)
    until(lambda: sampler.complete_at is not None and sampler.incomplete_seen, 10, 0.01)
    time.sleep(1.5)
    sampler.stop()
    cross, local = p_cross.stop(), p_local.stop()
    st1 = lab.stats(NODE)
    after = sorted(f.norm() for f in lab.flows(NODE))
    # the time to resume: the longest gap without replies (it spans the restart)
    return {"lost": cross.lost + local.lost, "sent": cross.transmitted + local.transmitted,
            "gap": max(cross.max_gap, local.max_gap), "complete": sampler.complete_at,
            "same": after == sorted(f.norm() for f in before), "flows": len(before),
            "bundles": st1["bundles"] - st0["bundles"], "replays": st1["ovsReplays"] - st0["ovsReplays"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agent", type=int, default=3, help="agent restarts, each after the round was persisted")
    ap.add_argument("--quick", type=int, default=3, help="agent restarts 1 s apart (same round)")
    ap.add_argument("--ovs", type=int, default=3, help="OVS restarts")
    ap.add_argument("--interval", type=float, default=0.01, help="ping interval, s")
    ap.add_argument("--lab-dir", default="/run/pa-bench-restart")
    a = ap.parse_args()
    if lab_netns():
        print(f"another lab is up ({', '.join(lab_netns()[:3])} ...): `pyantrea lab down` it first", file=sys.stderr)
        return 2
    lab = RelLab(a.lab_dir)
    ok = True
    try:
        lab.lab("up", str(SEED))
        lab.refresh()
        lab.apply_text(ALLOW_FE_BE)
        until(lambda: lab.sh(FRONTEND, "ping", "-c1", "-W1", lab.ip(BACKEND2)).returncode == 0, 10)
        stream = lab.probe(FRONTEND, "stream", "--dst", BACKENDSVC, "--port", "80", "--backends", "2")
        rows = []
        for i in range(a.agent):
            rows.append(("agent (round bump)", agent_restart(lab, a.interval, wait_round=True)))
        if a.quick:  # enter the 10 s window of a new agent: the next restarts keep its round
            lab.lab("restart", "agent", NODE)
        for i in range(a.quick):
            rows.append(("agent (same round)", agent_restart(lab, a.interval, wait_round=False)))
        streams = stream.stop()
        print(f"\nagent restarts on {NODE}, ping every {a.interval * 1000:.0f} ms (cross node + same node):")
        print(f"{'restart':22} {'lost/sent':>10} {'longest gap':>12} {'agent ready':>12} {'flows complete':>15} "
              f"{'flows missing':>14} {'deleted+re-added':>17} {'replaced in place':>18} {'counters reset':>15}")
        for kind, r in rows:
            complete = "always" if r["complete"] == 0.0 else f"{r['complete']:.2f} s"
            print(f"{kind:22} {r['lost']:>4}/{r['sent']:<5} {r['gap'] * 1000:>9.0f} ms {r['ready']:>10.2f} s "
                  f"{complete:>15} {r['missing']:>14} {r['churned']:>17} {r['replaced']:>14}/{r['flows']:<3} "
                  f"{r['reset']:>15}")
            ok &= r["lost"] == 0 and r["churned"] == 0 and r["missing"] == 0
        for s in streams["streams"]:
            print(f"HTTP keep-alive stream to {s['backend']} through backendsvc: {s['requests']} requests, "
                  f"error {s['error']}, longest gap {s['max_gap'] * 1000:.0f} ms")
            ok &= s["error"] is None
        rows = [ovs_restart(lab, a.interval) for _ in range(a.ovs)]
        print(f"\nOVS (ovs-vswitchd) restarts on {NODE}, ping every {a.interval * 1000:.0f} ms:")
        print(f"{'#':>2} {'lost/sent':>10} {'traffic gap':>12} {'flows complete':>15} {'same flows':>11} "
              f"{'replayed':>9} {'bundles':>8}")
        for i, r in enumerate(rows, 1):
            print(f"{i:>2} {r['lost']:>4}/{r['sent']:<5} {r['gap'] * 1000:>9.0f} ms {r['complete']:>13.2f} s "
                  f"{str(r['same']):>11} {r['flows']:>9} {r['bundles']:>8}")
            ok &= bool(r["same"]) and float(r["gap"]) < 2.0  # type: ignore[arg-type]
    finally:
        kill_leftovers()
        lab.lab("down", check=False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
