"""The persistent OVSDB connection (ovs/ovsdbclient.py) against a real ovsdb-server + ovs-vswitchd
(dummy datapath, no root): a port added in one transaction gets its ofport from the monitor, the
rows are what `ovs-vsctl --may-exist add-port ... -- set ...` makes, every write is idempotent, and
the connection comes back after ovsdb-server restarts."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyantrea.errors import OVSError
from pyantrea.ovs.ovsdbclient import OVSDBClient
from pyantrea.ovs.sandbox import Sandbox

pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="ovs-vswitchd is not installed"),
]

IDS = {"attached-mac": "be:2c:bf:e4:ec:c5", "container-id": "c1", "ip-address": "10.222.1.48",
       "pod-name": "frontend", "pod-namespace": "default"}


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    rundir = Path(tempfile.mkdtemp(prefix="pa-"))
    sandbox = Sandbox(rundir)
    try:
        sandbox.start()
        db = sandbox.db
        db.transact(db.add_br("br-int", "netdev", ["OpenFlow10", "OpenFlow13"], fail_mode="secure"))
        yield sandbox
    finally:
        sandbox.stop()
        shutil.rmtree(rundir, ignore_errors=True)


@pytest.fixture
def client(sb: Sandbox) -> Iterator[OVSDBClient]:
    c = OVSDBClient(sb.rundir / "db.sock")
    yield c
    c.close()


def ports(sb: Sandbox) -> dict[str, tuple[int, dict[str, str], str]]:
    return {p.name: (p.ofport, p.external_ids, p.uuid) for p in sb.db.list_ports("br-int")}


def test_add_port_one_transaction_ofport_from_the_monitor(sb: Sandbox, client: OVSDBClient) -> None:
    uuid = client.add_port("br-int", "frontend-a3ba2f", port_external_ids=IDS)
    ofport = client.wait_ofport("frontend-a3ba2f")
    assert ofport > 0 and client.transactions == 1
    assert ports(sb)["frontend-a3ba2f"] == (ofport, IDS, uuid)
    # the same rows as ovs-vsctl makes: compare with a port added by it
    sb.db.transact(sb.db.add_port("br-int", "p-vsctl", port_external_ids=IDS))
    cols = "--columns=type,options,ofport_request,external_ids"
    mine = sb.db.transact([[cols, "list", "Interface", "frontend-a3ba2f"]], no_wait=True)
    theirs = sb.db.transact([[cols, "list", "Interface", "p-vsctl"]], no_wait=True)
    assert mine == theirs
    assert client.del_port("br-int", "frontend-a3ba2f") and client.del_port("br-int", "p-vsctl")
    assert "frontend-a3ba2f" not in ports(sb) and "p-vsctl" not in ports(sb)
    out = subprocess.run([*sb.tool_argv("ovs-vsctl"), "--bare", "--columns=name", "list", "Interface"],
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["br-int"]  # the Interface rows went with their Ports


def test_writes_are_idempotent(sb: Sandbox, client: OVSDBClient) -> None:
    u1 = client.add_port("br-int", "p1", ofport_request=49, port_external_ids=IDS)
    assert client.wait_ofport("p1") == 49
    u2 = client.add_port("br-int", "p1", ofport_request=49, port_external_ids={**IDS, "ip-address": "10.222.1.7"})
    assert u1 == u2 and ports(sb)["p1"] == (49, {**IDS, "ip-address": "10.222.1.7"}, u1)
    assert client.del_port("br-int", "p1") is True
    assert client.del_port("br-int", "p1") is False  # --if-exists
    assert "p1" not in ports(sb)


def test_concurrent_adds_and_errors(sb: Sandbox, client: OVSDBClient) -> None:
    got: dict[str, int] = {}

    def one(i: int) -> None:
        client.add_port("br-int", f"c{i}", port_external_ids={"container-id": str(i)})
        got[f"c{i}"] = client.wait_ofport(f"c{i}")

    ths = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert sorted(got) == [f"c{i}" for i in range(8)] and len(set(got.values())) == 8
    assert {n: o for n, (o, _, _) in ports(sb).items() if n.startswith("c")} == got
    for n in got:
        client.del_port("br-int", n)
    with pytest.raises(OVSError, match="Bridge"):
        client.add_port("br-nosuch", "x1")
    assert "x1" not in {p.name for p in sb.db.list_ports("br-int")}
    with pytest.raises(OVSError, match="ofport of interface nosuch"):
        client.wait_ofport("nosuch", timeout=0.2)


def test_reconnects_after_ovsdb_server_restarts(client: OVSDBClient) -> None:
    rundir = Path(tempfile.mkdtemp(prefix="pa-"))
    sb = Sandbox(rundir)
    try:
        sb.start()
        sb.db.transact(sb.db.add_br("br-int", "netdev", ["OpenFlow10", "OpenFlow13"]))
        c = OVSDBClient(rundir / "db.sock", timeout=5)
        c.add_port("br-int", "r1")
        assert c.wait_ofport("r1") > 0
        sb.stop()
        sb.start()  # same database: r1 is still there
        c.add_port("br-int", "r2")
        assert c.wait_ofport("r2") > 0 and c.wait_ofport("r1") > 0
        assert c.del_port("br-int", "r1") and c.del_port("br-int", "r2")
        c.close()
    finally:
        sb.stop()
        shutil.rmtree(rundir, ignore_errors=True)
