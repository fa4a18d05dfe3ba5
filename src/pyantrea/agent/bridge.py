"""br-int's OVSDB layout, as antrea-agent creates it (spec §2 steps 2, 4, 5 and §3, §10).

Pure command builders: they return ovs-vsctl command lists for `OVSDB.transact`, so a caller
batches a whole change into one OVSDB transaction. Used by the offline sandbox and by the agent.
"""

from __future__ import annotations

from pyantrea.apis.k8s import NodeNetwork, PodInterface
from pyantrea.ovs.vsctl import OVSDB, Command

BRIDGE_PROTOCOLS = ("OpenFlow10", "OpenFlow13")
TLV_MAP = "{class=0x104,type=0x80,len=4}->tun_metadata0"


def bridge_commands(bridge: str, datapath_type: str) -> list[Command]:
    return OVSDB.add_br(bridge, datapath_type=datapath_type, protocols=list(BRIDGE_PROTOCOLS),
                        fail_mode="secure")


def tunnel_commands(bridge: str, net: NodeNetwork, tunnel_type: str = "geneve") -> list[Command]:
    return OVSDB.add_port(bridge, net.tunnel_name, type=tunnel_type, ofport_request=net.tunnel_ofport,
                          options={"key": "flow", "remote_ip": "flow", "csum": "true"})


def gateway_commands(bridge: str, net: NodeNetwork, mtu: int | None = 1450) -> list[Command]:
    return OVSDB.add_port(bridge, net.gateway_name, type="internal", ofport_request=net.gateway_ofport,
                          mtu_request=mtu)


def pod_port_external_ids(i: PodInterface) -> dict[str, str]:
    return {"attached-mac": i.mac, "container-id": i.container_id, "ip-address": i.ip,
            "pod-name": i.pod, "pod-namespace": i.namespace}


def pod_port_commands(bridge: str, i: PodInterface, pin_ofport: bool = True) -> list[Command]:
    return OVSDB.add_port(bridge, i.interface, ofport_request=i.ofport if pin_ofport else None,
                          port_external_ids=pod_port_external_ids(i))


def node_commands(bridge: str, net: NodeNetwork, datapath_type: str, tunnel_type: str = "geneve",
                  with_pods: bool = True) -> list[Command]:
    cmds = bridge_commands(bridge, datapath_type) + tunnel_commands(bridge, net, tunnel_type) \
        + gateway_commands(bridge, net)
    if with_pods:
        for i in net.interfaces:
            cmds += pod_port_commands(bridge, i)
    return cmds
