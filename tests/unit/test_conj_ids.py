"""conj_ids stay bound to their rule while other rules come and go (agent side, spec §8.4-§8.5)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pyantrea.agent.networkpolicy import ConjIDAllocator, compute_rules
from pyantrea.offline import OfflineCluster

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"


def test_ids_are_stable_when_a_policy_goes_and_comes_back() -> None:
    oc = OfflineCluster.load(SEED)
    view = oc.policy_state.node_view("worker1")
    ifaces = {i.pod_key: i for i in oc.cluster.network("worker1").interfaces}
    alloc = ConjIDAllocator()
    first = {(r.policy, r.rule_index): r.conj_id for r in compute_rules(view, ifaces, alloc)}
    assert sorted(first.values()) == [1, 2, 3, 4, 5]
    # backendpolicy (ids 1 and 2) goes away: frontendpolicy keeps 3, 4, 5
    only_front = dataclasses.replace(view, policies=tuple(p for p in view.policies if p.name == "frontendpolicy"))
    second = {(r.policy, r.rule_index): r.conj_id for r in compute_rules(only_front, ifaces, alloc)}
    assert second == {k: v for k, v in first.items() if k[0] == "default/frontendpolicy"}
    # it comes back: its rules reuse the released ids first-in-first-out (1, then 2)
    third = {(r.policy, r.rule_index): r.conj_id for r in compute_rules(view, ifaces, alloc)}
    assert third == first


def test_a_fresh_allocator_gives_the_offline_numbering() -> None:
    oc = OfflineCluster.load(SEED)
    view = oc.policy_state.node_view("worker2")
    ifaces = {i.pod_key: i for i in oc.cluster.network("worker2").interfaces}
    rules = compute_rules(view, ifaces, ConjIDAllocator())
    assert [(r.conj_id, r.direction) for r in rules] == [(1, "In"), (2, "Out")]
