"""antctl trace-packet extras and antctl traceflow on the seed, offline (real OVS sandboxes, dummy datapath).

The acceptance walks are spec ovs-pipeline.md §7: every table/priority sequence per node, for the
article's connection frontend -> backendsvc through each backend, the replies, frontend -> backend2
directly and its reply, and the host's ARP for a peer gateway.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyantrea.antctl.backends import OfflineBackend
from pyantrea.antctl.main import main as antctl
from pyantrea.errors import PyantreaError
from pyantrea.traceflow.api import traceflow

pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="Open vSwitch is not installed"),
]

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"

# ----------------------------------------------------------------------------- spec §7, per pass
POD_TO_SERVICE = [(0, 190), (10, 200), (30, 200), (31, 0), (40, 200), (105, 190), (110, 200)]
GW_TO_LOCAL_BACKEND = [(0, 200), (10, 200), (30, 200), (31, 0), (40, 0), (50, 190), (70, 0), (80, 200), (90, 190),
                       (105, 200), (110, 200)]
GW_TO_REMOTE_BACKEND = [(0, 200), (10, 200), (30, 200), (31, 0), (40, 0), (50, 190), (70, 200), (105, 200), (110, 200)]
TUNNEL_TO_POD_NEW = [(0, 200), (30, 200), (31, 0), (40, 0), (50, 0), (60, 0), (70, 200), (80, 200), (90, 190),
                     (105, 190), (110, 200)]
POD_TO_REMOTE_POD = [(0, 190), (10, 200), (30, 200), (31, 0), (40, 0), (50, 190), (70, 200), (105, 190), (110, 200)]
# replies
BACKEND1_REPLY = [(0, 190), (10, 200), (30, 200), (31, 200), (40, 0), (50, 210), (70, 0), (80, 200), (90, 210),
                  (105, 0), (110, 200)]
UNDNAT_TO_CLIENT = [(0, 200), (10, 200), (30, 200), (31, 0), (40, 0), (50, 210), (70, 0), (80, 200), (90, 210),
                    (105, 0), (110, 200)]
REMOTE_POD_REPLY = [(0, 190), (10, 200), (30, 200), (31, 0), (40, 0), (50, 210), (70, 200), (105, 0), (110, 200)]
TUNNEL_REPLY_OF_GW_CONN = [(0, 200), (30, 200), (31, 200), (40, 0), (50, 210), (70, 0), (80, 200), (90, 210), (105, 0),
                           (110, 200)]
TUNNEL_REPLY_TO_POD = [(0, 200), (30, 200), (31, 0), (40, 0), (50, 210), (70, 200), (80, 200), (90, 210), (105, 0),
                       (110, 200)]
ARP_PEER_GATEWAY = [(0, 200), (10, 200), (20, 200)]


@pytest.fixture(scope="module")
def backend() -> Iterator[OfflineBackend]:
    b = OfflineBackend(str(SEED))
    try:
        yield b
    finally:
        b.close()


def passes(doc: dict[str, Any]) -> list[tuple[str, str, list[tuple[int, int]], str | None]]:
    """(node, inPort, [(table, priority)...], outPort) for every br-int pass of a traceflow document."""
    out = []
    for r in doc["results"]:
        for leg in r["legs"]:
            if leg["kind"] != "pipeline":
                continue
            hops = r["hops"][leg["firstHop"]:leg["firstHop"] + leg["hops"]]
            out.append((r["node"], leg["inPort"], [(h["table"], h["priority"]) for h in hops], leg["outPort"]))
    return out


def one(docs: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(docs) == 1, [d.get("endpoint") for d in docs]
    return docs[0]


# ----------------------------------------------------------------------------- frontend -> backendsvc
def test_service_via_local_backend(backend: OfflineBackend) -> None:
    d = one(traceflow(backend, "default/frontend", "default/backendsvc", "tcp,tcp_dst=80", endpoint="10.222.1.47"))
    assert passes(d) == [
        ("worker1", "frontend-a3ba2f", POD_TO_SERVICE, "antrea-gw0"),
        ("worker1", "antrea-gw0", GW_TO_LOCAL_BACKEND, "backend1-bab86f"),
    ]
    assert d["endpoint"] == "10.222.1.47:80"
    assert d["verdict"]["action"] == "Delivered" and d["verdict"]["pod"] == "default/backend1"
    host = [leg for leg in d["results"][0]["legs"] if leg["kind"] == "host"][0]
    assert host["kubeProxy"]["service"] == "default/backendsvc"
    assert host["kubeProxy"]["dnat"] == "10.222.1.47:80"
    assert host["kubeProxy"]["chains"][:2] == ["KUBE-SERVICES", "KUBE-SVC-SQRBXEDPJTJWMLH3"]
    # back into br-int from the gateway with the backend's MAC (spec §7)
    gw_leg = d["results"][0]["legs"][2]
    assert "dl_dst=f2:32:d8:07:e2:a6" in gw_leg["flow"] and "nw_src=10.222.1.48" in gw_leg["flow"]


def test_service_via_remote_backend(backend: OfflineBackend) -> None:
    d = one(traceflow(backend, "default/frontend", "default/backendsvc", "tcp,tcp_dst=80", endpoint="10.222.2.34"))
    assert passes(d) == [
        ("worker1", "frontend-a3ba2f", POD_TO_SERVICE, "antrea-gw0"),
        ("worker1", "antrea-gw0", GW_TO_REMOTE_BACKEND, "antrea-tun0"),
        ("worker2", "antrea-tun0", TUNNEL_TO_POD_NEW, "backend2-202ff6"),
    ]
    w1 = d["results"][0]
    host = [leg for leg in w1["legs"] if leg["kind"] == "host"][0]
    # the host ARPs for worker2's gateway and br-int's table 20 answers with the virtual MAC
    assert host["route"] == "10.222.2.0/24 via 10.222.2.1 dev antrea-gw0 onlink"
    assert host["arp"]["answer"] == "aa:bb:cc:dd:ee:ff"
    assert [(h["table"], h["priority"]) for h in host["arp"]["hops"]] == ARP_PEER_GATEWAY
    assert "dl_dst=aa:bb:cc:dd:ee:ff" in w1["legs"][2]["flow"]
    # the tunnel leg: tun_src/tun_dst, inner MACs = worker1's gateway MAC -> virtual MAC, TTL twice decremented
    tun = d["results"][1]["legs"][0]
    for f in ("tun_src=10.79.1.201", "tun_dst=10.79.1.202", "dl_src=4e:99:08:c1:53:be", "dl_dst=aa:bb:cc:dd:ee:ff",
              "nw_ttl=62"):
        assert f in tun["flow"]
    assert w1["legs"][2]["tunDst"] == "10.79.1.202"
    assert [r["role"] for r in d["results"]] == ["Sender", "Receiver"]


def test_service_every_backend_in_turn(backend: OfflineBackend) -> None:
    docs = traceflow(backend, "default/frontend", "default/backendsvc")  # the Service's only port: TCP 80
    assert [d["endpoint"] for d in docs] == ["10.222.1.47:80", "10.222.2.34:80"]
    assert [d["probability"] for d in docs] == [0.5, 0.5]
    assert [d["verdict"]["pod"] for d in docs] == ["default/backend1", "default/backend2"]


def test_service_reply_from_local_backend(backend: OfflineBackend) -> None:
    d = one(traceflow(backend, "default/frontend", "default/backendsvc", "tcp,tcp_src=34567,tcp_dst=80",
                      endpoint="10.222.1.47", reply=True))
    assert d["direction"] == "reply"
    assert passes(d) == [
        ("worker1", "backend1-bab86f", BACKEND1_REPLY, "antrea-gw0"),
        ("worker1", "antrea-gw0", UNDNAT_TO_CLIENT, "frontend-a3ba2f"),
    ]
    legs = d["results"][0]["legs"]
    # the reply of the gateway-originated connection: ct_mark 0x20 and --ct-next trk,est,rpl
    assert legs[0]["ctMark"] == "0x20" and legs[0]["ctNext"] == ["trk,est,rpl"]
    assert "ct_mark=0x20" in legs[0]["flow"] and "tcp_dst=34567" in legs[0]["flow"]
    # un-DNAT on the host: the source becomes the ClusterIP, and the client's own connection has no mark
    assert "10.104.65.133:80" in legs[1]["conntrack"]
    assert "nw_src=10.104.65.133" in legs[2]["flow"] and "ctMark" not in legs[2]
    assert d["verdict"]["pod"] == "default/frontend"


def test_service_reply_from_remote_backend(backend: OfflineBackend) -> None:
    d = one(traceflow(backend, "default/frontend", "default/backendsvc", "tcp,tcp_dst=80", endpoint="10.222.2.34",
                      reply=True))
    assert passes(d) == [
        ("worker2", "backend2-202ff6", REMOTE_POD_REPLY, "antrea-tun0"),
        ("worker1", "antrea-tun0", TUNNEL_REPLY_OF_GW_CONN, "antrea-gw0"),
        ("worker1", "antrea-gw0", UNDNAT_TO_CLIENT, "frontend-a3ba2f"),
    ]
    w2, w1 = d["results"]
    assert "ctMark" not in w2["legs"][0]  # worker2 committed the tunnel connection without a mark
    assert w1["legs"][0]["ctMark"] == "0x20"


def test_pod_to_remote_pod_and_reply(backend: OfflineBackend) -> None:
    d = one(traceflow(backend, "default/frontend", "default/backend2", "tcp,tcp_dst=80"))
    assert passes(d) == [
        ("worker1", "frontend-a3ba2f", POD_TO_REMOTE_POD, "antrea-tun0"),
        ("worker2", "antrea-tun0", TUNNEL_TO_POD_NEW, "backend2-202ff6"),
    ]
    obs = [(o["component"], o.get("componentInfo"), o["action"]) for r in d["results"] for o in r["observations"]]
    assert obs == [("SpoofGuard", None, "Forwarded"), ("NetworkPolicy", "EgressRule", "Forwarded"),
                   ("Forwarding", "Output", "Forwarded"), ("Forwarding", "Classification", "Received"),
                   ("NetworkPolicy", "IngressRule", "Forwarded"), ("Forwarding", "Output", "Delivered")]
    pols = [o.get("networkPolicy") for r in d["results"] for o in r["observations"] if o["component"] == "NetworkPolicy"]
    assert pols == ["default/frontendpolicy", "default/backendpolicy"]
    assert d["results"][0]["observations"][2]["tunnelDstIP"] == "10.79.1.202"
    r = one(traceflow(backend, "default/frontend", "default/backend2", "tcp,tcp_dst=80", reply=True))
    assert passes(r) == [
        ("worker2", "backend2-202ff6", REMOTE_POD_REPLY, "antrea-tun0"),
        ("worker1", "antrea-tun0", TUNNEL_REPLY_TO_POD, "frontend-a3ba2f"),
    ]


def test_dropped_by_policy_names_table_and_rule(backend: OfflineBackend) -> None:
    # backend1's egress is deny-all (backendpolicy): dropped on worker1 in table 60
    d = one(traceflow(backend, "default/backend1", "default/frontend", "tcp,tcp_dst=80"))
    v = d["verdict"]
    assert (v["action"], v["node"], v["table"], v["tableName"]) == ("Dropped", "worker1", 60, "EgressDefaultRule")
    assert v["networkPolicies"] == ["default/backendpolicy"]
    assert any("deny-all egress" in r for r in v["rules"])
    last = d["results"][-1]["observations"][-1]
    assert last == {"component": "NetworkPolicy", "componentInfo": "EgressDefaultRule", "action": "Dropped",
                    "networkPolicy": "default/backendpolicy"}
    # frontend -> backend2 on UDP 53 passes frontend's egress (UDP 53 anywhere) and is dropped by backendpolicy
    d = one(traceflow(backend, "default/frontend", "default/backend2", "udp,udp_dst=53"))
    v = d["verdict"]
    assert (v["node"], v["table"], v["networkPolicies"]) == ("worker2", 100, ["default/backendpolicy"])
    assert v["rules"] == [r for r in v["rules"] if "backendpolicy ingress rule 1" in r]
    # a reply of a dropped request: nothing to trace, said so
    r = one(traceflow(backend, "default/frontend", "default/backend2", "udp,udp_dst=53", reply=True))
    assert r["phase"] == "Failed" and "dropped" in r["reason"]


def test_pod_to_external_ip_leaves_the_overlay(backend: OfflineBackend) -> None:
    d = one(traceflow(backend, "kube-system/coredns-66bff467f8-bclzd", "8.8.8.8", "udp,udp_dst=53"))
    assert d["verdict"]["action"] == "ForwardedOutOfOverlay"
    last = d["results"][0]["observations"][-1]
    assert last["action"] == "ForwardedOutOfOverlay" and last["translatedSrcIP"] == "10.79.1.201"
    r = one(traceflow(backend, "kube-system/coredns-66bff467f8-bclzd", "8.8.8.8", "udp,udp_dst=53", reply=True))
    assert r["verdict"]["pod"] == "kube-system/coredns-66bff467f8-bclzd"


def test_icmp_is_the_default(backend: OfflineBackend) -> None:
    d = one(traceflow(backend, "default/frontend", "default/backend1"))
    assert d["packet"]["protocol"] == "ICMP"
    assert "icmp_type=8" in d["results"][0]["legs"][0]["flow"]
    assert d["verdict"]["table"] == 60  # frontend's egress allows TCP 80 and UDP 53 only


# ----------------------------------------------------------------------------- trace-packet extras
def tp(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert antctl(["--cluster", str(SEED), "trace-packet", *args, "-o", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_trace_packet_arp_for_a_peer_gateway(capsys: pytest.CaptureFixture[str]) -> None:
    j = tp(capsys, "--node", "worker1", "-p", "antrea-gw0", "-f",
           "arp,arp_spa=10.222.1.1,arp_sha=4e:99:08:c1:53:be,arp_tpa=10.222.2.1,arp_op=1")
    assert [(h["table"], h["priority"]) for h in j["hops"]] == ARP_PEER_GATEWAY
    assert j["verdict"] == "output" and j["out_port"] == "antrea-gw0" and j["tun_dst"] is None
    assert j["hops"][-1]["flow"].endswith("set_field:10.222.2.1->arp_spa,IN_PORT")


def test_trace_packet_from_a_remote_pod_enters_through_the_tunnel(capsys: pytest.CaptureFixture[str]) -> None:
    j = tp(capsys, "--node", "worker2", "-S", "default/frontend", "-D", "default/backend2", "-f", "tcp,tcp_dst=80")
    assert [(h["table"], h["priority"]) for h in j["hops"]] == TUNNEL_TO_POD_NEW
    assert j["out_port"] == "backend2-202ff6"
    assert antctl(["--cluster", str(SEED), "trace-packet", "--node", "worker2", "-S", "default/frontend", "-D",
                   "default/backend2", "-f", "tcp,tcp_dst=80"]) == 0
    text = capsys.readouterr().out
    flow = text.splitlines()[0]
    for f in ("tun_src=10.79.1.201", "tun_dst=10.79.1.202", "in_port=1", "dl_src=aa:bb:cc:dd:ee:ff",
              "dl_dst=aa:bb:cc:dd:ee:ff"):
        assert f in flow


def test_trace_packet_tunnel_port_with_explicit_flow(capsys: pytest.CaptureFixture[str]) -> None:
    j = tp(capsys, "--node", "worker2", "-p", "antrea-tun0", "-f",
           "dl_src=4e:99:08:c1:53:be,tcp,nw_src=10.222.1.48,nw_dst=10.222.2.34,tcp_dst=80,"
           "tun_src=10.79.1.201,tun_dst=10.79.1.202")
    assert [(h["table"], h["priority"]) for h in j["hops"]] == TUNNEL_TO_POD_NEW
    assert j["verdict"] == "output" and j["out_port"] == "backend2-202ff6"


def test_trace_packet_tunnel_egress_reports_tun_dst(capsys: pytest.CaptureFixture[str]) -> None:
    j = tp(capsys, "--node", "worker1", "-S", "default/frontend", "-D", "default/backend2", "-f", "tcp,tcp_dst=80")
    assert [(h["table"], h["priority"]) for h in j["hops"]] == POD_TO_REMOTE_POD
    assert (j["out_port"], j["tun_dst"]) == ("antrea-tun0", "10.79.1.202")


def test_trace_packet_ct_next_reply_of_gateway_connection(capsys: pytest.CaptureFixture[str]) -> None:
    j = tp(capsys, "--node", "worker1", "-S", "default/backend1", "-D", "default/frontend", "-f",
           "tcp,tcp_src=80,ct_mark=0x20", "--ct-next", "trk,est,rpl")
    assert [(h["table"], h["priority"]) for h in j["hops"]] == BACKEND1_REPLY
    assert j["out_port"] == "antrea-gw0"
    # without --ct-next the same packet is a new connection: backend1's deny-all egress drops it
    j = tp(capsys, "--node", "worker1", "-S", "default/backend1", "-D", "default/frontend", "-f", "tcp,tcp_src=80")
    assert (j["verdict"], j["hops"][-1]["table"]) == ("drop", 60)


# ----------------------------------------------------------------------------- CLI, formats, errors
def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = antctl(["--cluster", str(SEED), *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_json_and_yaml_field_order(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "traceflow", "-S", "default/frontend", "-D", "default/backend2", "-f", "tcp,tcp_dst=80",
                     "-o", "json")
    assert rc == 0
    d = json.loads(out)
    assert list(d)[:5] == ["name", "phase", "source", "destination", "results"]
    assert (d["name"], d["phase"], d["source"], d["destination"]) == (
        "default-frontend-to-default-backend2", "Succeeded", "default/frontend", "default/backend2")
    order = ["component", "componentInfo", "action", "pod", "dstMAC", "networkPolicy", "ttl", "translatedSrcIP",
             "translatedDstIP", "tunnelDstIP"]
    for r in d["results"]:
        assert list(r)[:4] == ["node", "role", "timestamp", "observations"]
        assert list(r)[4:] == ["hops", "legs"]
        for o in r["observations"]:
            assert list(o) == [k for k in order if k in o]
        for h in r["hops"]:
            assert list(h) == ["table", "priority", "flow"]
    rc, out, _ = run(capsys, "tf", "-S", "default/frontend", "-D", "default/backend2", "-f", "tcp,tcp_dst=80",
                     "-o", "yaml")
    assert rc == 0 and out.startswith("name: default-frontend-to-default-backend2\nphase: Succeeded\n")
    y = yaml.safe_load(out)
    assert [r["node"] for r in y["results"]] == ["worker1", "worker2"]
    # several backends: a list in JSON, one YAML document each
    rc, out, _ = run(capsys, "tf", "-S", "default/frontend", "-D", "default/backendsvc", "-o", "json")
    assert rc == 0 and [x["endpoint"] for x in json.loads(out)] == ["10.222.1.47:80", "10.222.2.34:80"]
    rc, out, _ = run(capsys, "tf", "-S", "default/frontend", "-D", "default/backendsvc", "-o", "yaml")
    assert len(list(yaml.safe_load_all(out))) == 2


def test_text_explains_each_hop(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "tf", "-S", "default/frontend", "-D", "default/backendsvc", "--endpoint", "10.222.2.34")
    assert rc == 0
    assert "Result: Delivered on worker2" in out
    assert "10.104.65.133 is in the Service CIDR 10.96.0.0/12" in out
    assert "KUBE-SVC-SQRBXEDPJTJWMLH3 picks KUBE-SEP-" in out and "DNATs to 10.222.2.34:80" in out
    assert "br-int answers (tables 0 -> 10 -> 20, IN_PORT) with aa:bb:cc:dd:ee:ff" in out
    assert "default/frontendpolicy egress rule 1" in out and "default/backendpolicy ingress rule 1" in out
    assert "committed to conntrack with ct_mark=0x20" in out
    assert "$ antctl trace-packet --node worker2 -p antrea-tun0" in out
    # one line per hop: 7 + 9 + 11 hops
    assert sum(1 for line in out.splitlines() if line.strip().startswith("- table ")) == 27
    rc, out, _ = run(capsys, "tf", "-S", "default/frontend", "-D", "default/backendsvc", "--endpoint", "10.222.2.34",
                     "--reply")
    assert rc == 0 and "table 31 set the gateway's, so the packet goes to the host" in out
    assert "reverses the DNAT" in out


@pytest.mark.parametrize("args,message", [
    (["-S", "default/nope", "-D", "default/backend1"], "Error: source Pod default/nope not found"),
    (["-S", "default/frontend", "-D", "default/nope"],
     "Error: destination default/nope not found: no Pod or Service of that name"),
    (["-S", "default/frontend", "-D", "default/backend1", "-f", "tcp,tcp_dstt=80"],
     "Error: ofproto/trace on worker1 rejected the flow: Bad openflow flow syntax: "),
    (["-S", "default/frontend", "-D", "default/backendsvc", "--endpoint", "10.222.2.99"],
     "Error: 10.222.2.99 is not an endpoint of default/backendsvc on worker1"),
    (["-S", "default/frontend", "-D", "default/backend1", "--endpoint", "10.222.1.47"],
     "Error: --endpoint picks the backend of a Service"),
    (["-S", "kube-system/kube-proxy-qj5bp", "-D", "default/backend1"],
     "Error: source Pod kube-system/kube-proxy-qj5bp uses the host network"),
])
def test_bad_input_gives_one_clear_error(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    rc, out, err = run(capsys, "traceflow", *args)
    assert rc == 1 and out == ""
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1
    if "Bad openflow" in message:
        assert err.rstrip().endswith("unknown field tcp_dstt")  # OVS's own words
        assert "ovs-appctl" not in err


def test_service_without_endpoints_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "c"
    shutil.copytree(SEED, d)
    (d / "empty.yaml").write_text("""apiVersion: v1
kind: Service
metadata: {name: emptysvc, namespace: default}
spec:
  selector: {app: nothing}
  ports: [{port: 8080, protocol: TCP}]
""")
    rc = antctl(["--cluster", str(d), "traceflow", "-S", "default/frontend", "-D", "default/emptysvc"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("Error: Service default/emptysvc has no endpoints: kube-proxy on worker1 rejects TCP ")
    assert '"default/emptysvc has no endpoints"' in err and "-j REJECT" in err


def test_errors_are_pyantrea_errors(backend: OfflineBackend) -> None:
    with pytest.raises(PyantreaError):
        traceflow(backend, "default/frontend", "default/backend1", "icmp,tcp_dst=80")


# ----------------------------------------------------------------------------- HTML, through a real Chromium
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_is_one_self_contained_page(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "tf", "-S", "default/frontend", "-D", "default/backendsvc", "--endpoint", "10.222.2.34",
                     "-o", "html")
    assert rc == 0
    assert out.startswith("<!DOCTYPE html>") and out.count("<html") == 1 and "<svg" in out
    for external in (" src=", " href=", "@import", "<script", "<link", "<img", "<iframe"):
        assert external not in out
    assert re.findall(r"url\(([^)]*)\)", out) and all(u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", out))
    assert "Node worker1" in out and "Node worker2" in out and "KUBE-SEP-" in out


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package chromium)")
def test_html_renders_in_headless_chromium(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "tf", "-S", "default/frontend", "-D", "default/backendsvc", "--endpoint", "10.222.2.34",
                     "-o", "html")
    assert rc == 0
    page = tmp_path / "tf.html"
    page.write_text(out)
    png = tmp_path / "tf.png"
    profile = tempfile.mkdtemp(prefix="pa-chromium-")
    try:
        subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                        f"--screenshot={png}", "--window-size=1400,900", page.as_uri()],
                       capture_output=True, timeout=120, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1400, 900)
    assert len(data) > 30_000  # a drawn page, not a blank one (a blank 1400x900 PNG is a few KB)


# Every label of the drawing, measured by Chromium's own layout: the text's extent (a Range over its
# contents) must lie inside the label, the label inside the box, column and node panel that hold it,
# and all of it inside the page's width (nothing cut off, nothing hidden under a neighbour).
MEASURE = """<script>
(function () {
  const bad = [];
  const W = document.documentElement.clientWidth;
  const inside = (a, b) => a.left >= b.left - 0.5 && a.right <= b.right + 0.5 && a.top >= b.top - 0.5 &&
    a.bottom <= b.bottom + 0.5;
  const labels = document.querySelectorAll('.card .lbl');
  for (const el of labels) {
    const r = el.getBoundingClientRect();
    const range = document.createRange();
    range.selectNodeContents(el);
    const t = range.getBoundingClientRect();
    const what = el.className + ': ' + el.textContent.trim();
    if (el.scrollWidth > el.clientWidth || el.scrollHeight > el.clientHeight) bad.push('scrolls ' + what);
    if (t.width > 0 && !inside(t, r)) bad.push('text outside its label ' + what);
    for (const sel of ['.box', '.hostbox', '.col', '.link', '.node', '.card']) {
      const c = el.parentElement.closest(sel);
      if (c && !inside(r, c.getBoundingClientRect())) bad.push('outside ' + sel + ' ' + what);
    }
    if (r.right > W + 0.5) bad.push('past the page width ' + what);
  }
  const out = document.createElement('pre');
  out.id = 'measure';
  out.textContent = JSON.stringify({labels: labels.length, bad: bad,
                                    scrollWidth: document.documentElement.scrollWidth, width: W});
  document.body.appendChild(out);
})();
</script>"""


def chromium(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(prefix="pa-chromium-")
    try:
        return subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               "--no-first-run", f"--user-data-dir={profile}", "--window-size=1400,900", *args,
                               page.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def measure(tmp_path: Path, page_html: str, extra_css: str = "") -> dict[str, Any]:
    page = tmp_path / "measure.html"
    body = page_html.replace("</style>", extra_css + "</style>", 1) if extra_css else page_html
    page.write_text(body.replace("</body>", MEASURE + "</body>", 1))
    dom = chromium(page, "--dump-dom").stdout
    m = re.search(r'<pre id="measure">(.*?)</pre>', dom, re.S)
    assert m, dom[-2000:]
    import html as _html

    return json.loads(_html.unescape(m.group(1)))


DROPPED = ("tf", "-S", "default/backend1", "-D", "default/backend2", "-f", "tcp,tcp_dst=80", "-o", "html")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package chromium)")
def test_html_of_a_dropped_trace_cuts_no_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 13 item 6: the dropped trace's page (one node, one pass) used to cut `br-int, in from
    backend1-bab8...` and `Dropped on worker1 (table...` at its drawing's edge."""
    rc, out, _ = run(capsys, *DROPPED)
    assert rc == 0 and "Dropped on worker1 (table 60 EgressDefaultRule)" in out
    assert "br-int, in from backend1-bab86f" in out
    m = measure(tmp_path, out)
    assert m["labels"] >= 12 and m["bad"] == [], m
    assert m["scrollWidth"] <= m["width"]
    # the screenshot of the same page: a drawn 1400x900 PNG
    page = tmp_path / "drop.html"
    page.write_text(out)
    png = tmp_path / "drop.png"
    chromium(page, f"--screenshot={png}")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (1400, 900)
    assert len(data) > 30_000


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package chromium)")
def test_html_measure_sees_cut_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The measurement itself: labels forced onto one line in narrow columns are reported, and a
    delivered trace across two nodes and the host lays out as cleanly as the dropped one."""
    rc, out, _ = run(capsys, *DROPPED)
    assert rc == 0
    m = measure(tmp_path, out, ".col{width:90px}.lbl{white-space:nowrap;overflow:hidden}")
    assert any("br-int, in from backend1-bab86f" in b for b in m["bad"]), m
    rc, out, _ = run(capsys, "tf", "-S", "default/frontend", "-D", "default/backendsvc", "--endpoint", "10.222.2.34",
                     "-o", "html")
    assert rc == 0
    m = measure(tmp_path, out)
    assert m["labels"] > 60 and m["bad"] == [], m
