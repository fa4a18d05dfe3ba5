"""The seed cluster's flows equal the reviewed golden files (tests/golden/README.md)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pyantrea.offline import OfflineCluster

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed"
GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture(scope="module")
def seed() -> OfflineCluster:
    return OfflineCluster.load(SEED)


@pytest.mark.parametrize("node", ["master", "worker1", "worker2"])
def test_flows_equal_golden(seed: OfflineCluster, node: str) -> None:
    got = [f.dump_text() for f in seed.node_flows(node).flows]
    want = (GOLDEN / f"seed-{node}.flows").read_text().splitlines()
    assert got == want


@pytest.mark.parametrize("node,total,policy", [
    ("worker1", 76, {50: 10, 60: 2, 90: 7, 100: 2}),
    ("worker2", 53, {50: 2, 60: 1, 90: 4, 100: 1}),
    ("master", 35, {}),
])
def test_flow_counts_follow_spec_15(seed: OfflineCluster, node: str, total: int, policy: dict[int, int]) -> None:
    flows = seed.node_flows(node).flows
    assert len(flows) == total
    # policy flows = everything in 50/60/90/100 except the fixed est-bypass, gateway-bypass and miss flows
    fixed = {(50, 210), (50, 0), (60, 0), (90, 210), (100, 0), (90, 0)}
    per_table = Counter(f.table for f in flows if f.table in (50, 60, 90, 100) and (f.table, f.priority) not in fixed
                        and not (f.table == 90 and f.priority == 210))
    assert dict(per_table) == policy


def test_cookies_carry_round_and_category(seed: OfflineCluster) -> None:
    flows = seed.node_flows("worker1").flows
    by_cat = Counter((f.cookie >> 40) & 0xFF for f in flows)
    assert all((f.cookie >> 48) == 1 for f in flows)
    # Pod 4 x 5, Node 2 x 2, Service 1 (spec §5.2)
    assert by_cat[3] == 20 and by_cat[2] == 4 and by_cat[4] == 1
    # Policy: conjunctive match + action flows, 7 + 3 in table 50 and 5 + 2 in table 90 (spec §8.4);
    # the 4 isolation drop flows in 60/100 carry the Default cookie
    assert by_cat[5] == 17
    drops = [f for f in flows if f.table in (60, 100) and f.priority == 200]
    assert len(drops) == 4 and all((f.cookie >> 40) & 0xFF == 0 for f in drops)
