"""antctl --cluster DIR: output formats (spec §12) and clear errors, without OVS."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pyantrea.antctl.main import main as antctl

SEED = str(Path(__file__).resolve().parents[2] / "examples" / "seed")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = antctl(["--cluster", SEED, *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_networkpolicy_table_is_spec_12_5(capsys) -> None:
    rc, out, _ = run(capsys, "get", "networkpolicy", "--node", "worker1")
    assert rc == 0
    assert out == (
        "NAMESPACE NAME           APPLIED-TO                           RULES\n"
        "default   backendpolicy  42008407-e0c9-518d-899d-27f872c89fc6 2    \n"
        "default   frontendpolicy b421488d-0bd0-52b2-9f10-df327e3bad32 3    \n")


def test_groups_tables_are_spec_12_6(capsys) -> None:
    _, out, _ = run(capsys, "get", "addressgroup", "--node", "worker1")
    assert out.splitlines() == [
        "NAME                                 POD-IPS                ",
        "42008407-e0c9-518d-899d-27f872c89fc6 10.222.1.47,10.222.2.34",
        "b421488d-0bd0-52b2-9f10-df327e3bad32 10.222.1.48            "]
    _, out, _ = run(capsys, "get", "appliedtogroup", "--node", "worker1")
    assert out.splitlines() == [
        "NAME                                 PODS            ",
        "42008407-e0c9-518d-899d-27f872c89fc6 default/backend1",
        "b421488d-0bd0-52b2-9f10-df327e3bad32 default/frontend"]
    # worker2 receives only backendpolicy's groups, and only its own Pods in AppliedToGroups
    _, out, _ = run(capsys, "get", "atg", "--node", "worker2")
    assert out.splitlines()[1:] == ["42008407-e0c9-518d-899d-27f872c89fc6 default/backend2"]


def test_podinterface_columns(capsys) -> None:
    _, out, _ = run(capsys, "get", "podinterface", "frontend", "-n", "default", "--node", "worker1")
    header, row = out.splitlines()
    assert header.split() == ["NAMESPACE", "NAME", "INTERFACE-NAME", "IP", "MAC", "PORT-UUID", "OF-PORT", "CONTAINER-ID"]
    cells = row.split()
    assert cells[:5] == ["default", "frontend", "frontend-a3ba2f", "10.222.1.48", "be:2c:bf:e4:ec:c5"]
    assert cells[6] == "49" and len(cells[7]) == 11


@pytest.mark.parametrize("spec,table", [("70", 70), ("l3Forwarding", 70), ("SPOOFGUARD", 10),
                                        ("DNAT", 40), ("Output", 110)])
def test_table_filter_by_number_or_name(capsys, spec: str, table: int) -> None:
    rc, out, _ = run(capsys, "get", "ovsflows", "--node", "worker1", "-T", spec, "-o", "json")
    assert rc == 0
    assert {f["table"] for f in yaml.safe_load(out)} == {table}


def test_ofctl_output_is_sorted_table_then_priority(capsys) -> None:
    _, out, _ = run(capsys, "get", "ovsflows", "--node", "worker2", "-o", "ofctl")
    keys = []
    for line in out.splitlines():
        assert line.startswith(" cookie=0x")
        t = int(line.split("table=")[1].split(",")[0]) if "table=" in line else 0
        keys.append((t, -int(line.split("priority=")[1].split(",")[0].split(" ")[0])))
    assert keys == sorted(keys) and len(keys) == 53


def test_version(capsys) -> None:
    rc, out, _ = run(capsys, "version")  # offline no controller runs: antctl's own version (Antrea prints it alone)
    d = yaml.safe_load(out)
    assert rc == 0 and set(d) == {"antctlVersion"}


@pytest.mark.parametrize("args,msg", [
    (["get", "ovsflows", "--node", "worker9"], "node 'worker9' not found"),
    (["get", "ovsflows"], "give --node"),
    (["get", "ovsflows", "--node", "worker1", "-T", "999"], "invalid table name or number"),
    (["get", "ovsflows", "--node", "worker1", "-T", "Bogus"], "invalid table name or number"),
    (["get", "networkpolicy", "nosuch"], "networkpolicy 'nosuch' not found"),
    (["get", "podinterface", "nosuch", "--node", "worker1"], "podinterface 'nosuch' not found"),
    (["trace-packet", "--node", "worker1"], "-p/--port or -S/--source"),
    (["trace-packet", "--node", "worker1", "-S", "default/nosuch"], "pod default/nosuch not found"),
    (["trace-packet", "--node", "worker1", "-S", "bad/pod/name"], "malformed"),
    (["trace-packet", "--node", "worker1", "-S", "default/frontend", "-f", "arp"],
     "must not be specified for non-IP packet"),
    (["trace-packet", "--node", "worker1", "-S", "default/frontend", "-f", "ip,nw_src=1.2.3.4"], "duplicated 'nw_src'"),
])
def test_errors_are_clear_and_nonzero(capsys, args: list[str], msg: str) -> None:
    rc, out, err = run(capsys, *args)
    assert rc == 1 and out == ""
    assert msg in err and err.startswith("Error: ")


def test_a_broken_folder_lists_every_problem(tmp_path: Path, capsys) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDR: 10.1.0.0/33}\n")
    (tmp_path / "b.yaml").write_text("kind: [\n")
    rc = antctl(["--cluster", str(tmp_path), "get", "networkpolicy"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "2 problem(s)" in err and "a.yaml (document 1): Node n1" in err and "b.yaml" in err
