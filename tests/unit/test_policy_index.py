"""PolicyFlowIndex (the agent's per-rule path) holds exactly the flows `policy_flows` builds from the
same rules, and an update returns exactly the flow mods between the two sets."""

from __future__ import annotations

import random

from pyantrea.agent.networkpolicy import Address, OFRule
from pyantrea.agent.openflow.policy import PolicyFlowIndex, policy_flows
from pyantrea.apis import controlplane as cp
from pyantrea.ovs.flow import Flow


def as_set(flows: list[Flow]) -> dict[tuple[int, int, object], Flow]:
    out = {f.key: f for f in flows}
    assert len(out) == len(flows), "two flows with one key"
    return out


def random_rules(rng: random.Random, n: int, first_id: int = 1) -> list[OFRule]:
    ips = [Address.net(f"10.0.{i // 250}.{i % 250 + 1}/32") for i in range(60)]
    ports = [Address.ofport(p) for p in range(3, 20)]
    svcs = [None, (cp.Service("TCP", 80),), (cp.Service("UDP", 53), cp.Service("TCP", 53)),
            (cp.Service("TCP", 8000, 8100),)]
    out = []
    for i in range(n):
        d = rng.choice(["In", "Out"])
        peers = tuple(rng.sample(ips, rng.randint(0, 8)))
        local = tuple(rng.sample(ports, rng.randint(1, 4))) if d == "In" else tuple(rng.sample(ips[:20], rng.randint(1, 4)))
        frm, to = (peers, local) if d == "In" else (local, peers)
        out.append(OFRule(first_id + i, d, frm, to, rng.choice(svcs), f"ns/p{i % 7}", i % 3))
    return out


def test_index_equals_the_compiler_and_updates_are_exact_diffs() -> None:
    rng = random.Random(7)
    rules = random_rules(rng, 40)
    idx = PolicyFlowIndex()
    ups, dels = idx.update([], rules)
    assert dels == []
    assert as_set(ups) == as_set(policy_flows(rules)) == as_set(idx.flows())
    next_id = 1000
    for step in range(60):
        removed = rng.sample(rules, rng.randint(0, 5))
        changed = [OFRule(r.conj_id, r.direction, r.from_[: len(r.from_) // 2] + tuple(rng.sample(r.to, 0)), r.to,
                          r.services, r.policy, r.rule_index) for r in rng.sample(rules, rng.randint(0, 3))
                   if r not in removed]
        fresh = random_rules(rng, rng.randint(0, 4), next_id)
        next_id += 10
        gone = removed + [r for r in rules if any(c.conj_id == r.conj_id for c in changed)]
        new_rules = [r for r in rules if r not in gone] + changed + fresh
        before = as_set(idx.flows())
        ups, dels = idx.update(gone, changed + fresh)
        after = as_set(idx.flows())
        assert after == as_set(policy_flows(new_rules)), f"step {step}"
        # the mods are exactly the difference: every changed or new flow, every vanished one
        want_up = {k for k, f in after.items() if k not in before or before[k].actions != f.actions
                   or before[k].cookie != f.cookie}
        assert {f.key for f in ups} == want_up, f"step {step}"
        assert {f.key for f in dels} == set(before) - set(after), f"step {step}"
        rules = new_rules


def test_one_member_more_is_a_handful_of_flow_mods() -> None:
    rng = random.Random(3)
    rules = random_rules(rng, 50)
    idx = PolicyFlowIndex()
    idx.update([], rules)
    r = next(r for r in rules if r.direction == "In" and r.from_)
    new_ip = Address.net("10.9.9.9/32")
    grown = OFRule(r.conj_id, r.direction, r.from_ + (new_ip,), r.to, r.services, r.policy, r.rule_index)
    ups, dels = idx.update([r], [grown])
    assert dels == [] and len(ups) == 1 and "nw_src=10.9.9.9" in ups[0].dump_text()
