"""The lab's namespace prefix (PYANTREA_LAB_PREFIX): names, validation, lab.json, which prefix a lab uses.

No root: nothing here creates a namespace.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyantrea.lab import netns, nodes
from pyantrea.lab.lab import Lab
from pyantrea.lab.netns import LabError
from pyantrea.lab.state import LabPaths, LabState


@pytest.mark.parametrize("p", ["pa-", "pt-", "a-", "0-", "abcdefgh-", "r2d2-"])
def test_valid_prefixes(p: str) -> None:
    assert netns.valid_prefix(p) == p


@pytest.mark.parametrize("p", ["", "-", "pa", "PA-", "pa-t-", "pa--", "abcdefghi-", "p_a-", "pa-\n", "../", "p a-"])
def test_invalid_prefixes(p: str) -> None:
    with pytest.raises(LabError, match="PYANTREA_LAB_PREFIX"):
        netns.valid_prefix(p)


def test_no_prefix_is_the_start_of_another_labs_names() -> None:
    """Why a prefix has one '-': with "pa-t-" allowed, the pa- lab's Pod t/x and the pa-t- lab's
    node x would both be pa-t-x, and `lab down` of the pa- lab (pa-*) would take the other's."""
    assert netns.pod_netns_name("t", "x", "pa-") == "pa-t-x"
    with pytest.raises(LabError):
        netns.valid_prefix("pa-t-")
    assert not netns.node_netns_name("x", "pt-").startswith("pa-")


def test_names_carry_the_prefix() -> None:
    assert netns.node_netns_name("worker1", "pt-") == "pt-worker1"
    assert netns.node_netns_name("underlay", "pt-").startswith("pt-n-")
    assert netns.pod_netns_name("default", "frontend", "pt-") == "pt-default-frontend"
    long = netns.pod_netns_name("kube-system", "x" * 80, "pt-")
    assert long.startswith("pt-kube-system-") and len(long) == netns.MAX_NETNS_NAME
    assert netns.pod_netns_fallback("default", "frontend", "pt-").startswith("pt-p-")
    assert nodes.underlay_netns("pt-") == "pt-underlay"
    plans = nodes.plan_nodes([("master", "10.79.1.200"), ("worker1", "10.79.1.201")], 24, lab_prefix="pt-")
    assert [(p.netns, p.uplink_peer) for p in plans] == [("pt-master", "master"), ("pt-worker1", "worker1")]


def test_list_lab_is_per_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in ("pa-underlay", "pa-worker1", "pt-underlay", "pt-default-frontend", "other"):
        (tmp_path / n).touch()
    monkeypatch.setattr(netns, "NETNS_DIR", tmp_path)
    assert netns.list_lab("pa-") == ["pa-underlay", "pa-worker1"]
    assert netns.list_lab("pt-") == ["pt-default-frontend", "pt-underlay"]


def test_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYANTREA_LAB_PREFIX", raising=False)
    assert netns.env_prefix() == "pa-"
    monkeypatch.setenv("PYANTREA_LAB_PREFIX", "")
    assert netns.env_prefix() == "pa-"
    monkeypatch.setenv("PYANTREA_LAB_PREFIX", "pt-")
    assert netns.env_prefix() == "pt-"
    monkeypatch.setenv("PYANTREA_LAB_PREFIX", "pt")
    with pytest.raises(LabError, match="PYANTREA_LAB_PREFIX='pt'"):
        netns.env_prefix()


def test_lab_json_records_the_prefix(tmp_path: Path) -> None:
    paths = LabPaths(tmp_path / "lab")
    LabState(folder="/x", prefix="pt-").save(paths)
    assert '"prefix": "pt-"' in paths.state_file.read_text()
    got = LabState.load(paths)
    assert got is not None and got.prefix == "pt-"
    assert LabState.from_json({"folder": "/x"}).prefix == "pa-"  # a lab.json from before prefixes


def test_a_lab_keeps_its_recorded_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = LabPaths(tmp_path / "lab")
    lab = Lab(paths, out=lambda s: None)
    monkeypatch.setenv("PYANTREA_LAB_PREFIX", "pt-")
    assert lab.prefix == "pt-" and lab.underlay_netns == "pt-underlay"  # no lab.json: the environment's
    LabState(folder="/x", prefix="pq-").save(paths)
    lab.load_state()
    assert lab.prefix == "pq-"  # lab.json's, whatever the environment says now (down, status, exec)
    monkeypatch.delenv("PYANTREA_LAB_PREFIX")
    assert lab.prefix == "pq-"
    lab.state.prefix = "../"
    with pytest.raises(LabError, match="lab.json: prefix='../'"):
        _ = lab.prefix
