"""`OFBridge(names=False, prestart=True)`, the agent's: flows given to a prestarted `ovs-ofctl --no-names`
land exactly as through a fresh `ovs-ofctl`, failures say the same, concurrent calls each get a
process, and `close()` leaves no process behind (dummy datapath, no root)."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyantrea.errors import OVSError
from pyantrea.ovs.ofctl import OFBridge
from pyantrea.ovs.sandbox import Sandbox

pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="ovs-vswitchd is not installed"),
]


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    rundir = Path(tempfile.mkdtemp(prefix="pa-"))
    sandbox = Sandbox(rundir)
    try:
        sandbox.start()
        db = sandbox.db
        db.transact(db.add_br("br-int", "netdev", ["OpenFlow10", "OpenFlow13"], fail_mode="secure")
                    + db.add_port("br-int", "p1", ofport_request=1) + db.add_port("br-int", "p2", ofport_request=2))
        db.wait_ofport("p2")
        yield sandbox
    finally:
        sandbox.stop()
        shutil.rmtree(rundir, ignore_errors=True)


FLOWS = ["add cookie=0x1,table=0,priority=100,in_port=1,actions=goto_table:10",
         "add cookie=0x1,table=10,priority=200,ip,in_port=1,dl_src=be:2c:bf:e4:ec:c5,nw_src=10.222.1.48,"
         "actions=set_field:0x1->reg0,goto_table:30",
         "add cookie=0x1,table=70,priority=200,ip,nw_dst=10.222.1.48,actions=set_field:aa:bb:cc:dd:ee:ff->eth_src,"
         "output:2"]


def test_same_flows_as_a_fresh_ovs_ofctl(sb: Sandbox) -> None:
    plain = sb.bridge("br-int")
    fast = OFBridge(sb.mgmt_socket("br-int"), names=False, prestart=True)
    try:
        plain.add_flows(FLOWS)
        want = plain.dump_flows(names=False)
        plain.del_flows()
        for ln in FLOWS:  # one bundle each: every call after the first finds a process ready
            fast.add_flows([ln])
            time.sleep(0.05)
        assert fast.dump_flows(names=False) == want
        assert fast._add_flows is not None and fast._add_flows.cold_starts == 0
        fast.add_flows(["delete_strict table=0,priority=100,in_port=1"])
        assert len(fast.dump_flows()) == 2
        with pytest.raises(OVSError, match=r"ovs-ofctl .*add-flows .* exit code 1: .*bogus"):
            fast.add_flows(["add table=200,priority=1,bogus=1,actions=drop"])
        with pytest.raises(OVSError, match="unknown port|Bad openflow|in_port"):
            fast.add_flows(["add table=200,priority=1,in_port=p1,actions=drop"])  # --no-names: numbers only
        assert len(fast.dump_flows()) == 2  # a refused bundle changed nothing
    finally:
        fast.close()
        plain.del_flows()


def test_concurrent_calls_and_close(sb: Sandbox) -> None:
    fast = OFBridge(sb.mgmt_socket("br-int"), names=False, prestart=True)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            fast.add_flows([f"add table=200,priority={i},ip,nw_src=10.9.9.{i},actions=drop"])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ths = [threading.Thread(target=one, args=(i,)) for i in range(1, 9)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert errors == [] and len(fast.dump_flows(table=200)) == 8
    assert fast._add_flows is not None
    time.sleep(0.2)
    ready = fast._add_flows._ready
    fast.close()
    assert ready is not None and ready.poll() is not None  # the process kept ready has exited
    assert len(fast.dump_flows(table=200)) == 8  # its empty input changed nothing
    sb.bridge("br-int").del_flows()
