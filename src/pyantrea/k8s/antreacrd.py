"""Decoding and validating Antrea's policy kinds (`crd.antrea.io/v1beta1`), as Antrea's CRD schemas and
its admission webhook (pkg/controller/networkpolicy/validate.go) do.

The loader (`k8s.loader`) calls the readers here for Tier, ClusterNetworkPolicy, NetworkPolicy
(Antrea's), ClusterGroup and Group; each problem names the file, the document, the object and the
field, like every other problem of a cluster folder. `cross_problems` holds the checks that need
more than one object (a policy's Tier exists, Tier priorities do not overlap, nested Groups are
one level deep); the offline loader and the embedded API server both run it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pyantrea.apis import crd
from pyantrea.apis.k8s import NetworkPolicyPort, Source
from pyantrea.apis.crd import ICMP, AntreaPolicy, AppliedTo, ClusterGroup, Peer, Rule, Tier

if TYPE_CHECKING:
    from pyantrea.k8s.loader import _Ctx, _Loader

_RULE_FIELDS = ("action", "name", "from", "to", "ports", "protocols", "appliedTo", "enableLogging", "logLabel")
_UNSUPPORTED_RULE_FIELDS = ("toServices", "l7Protocols")
_PEER_FIELDS = ("podSelector", "namespaceSelector", "namespaces", "ipBlock", "group")
_UNSUPPORTED_PEER_FIELDS = ("fqdn", "serviceAccount", "nodeSelector", "externalEntitySelector", "scope")
_APPLIED_TO_FIELDS = ("podSelector", "namespaceSelector", "group")
_UNSUPPORTED_APPLIED_TO_FIELDS = ("serviceAccount", "service", "nodeSelector", "externalEntitySelector")


def _q(v: object) -> str:
    from pyantrea.k8s.loader import quote

    return quote(v)


def _tn(v: object) -> str:
    from pyantrea.k8s.loader import _type_name

    return _type_name(v)


# ------------------------------------------------------------------------------------------- Tier


def read_tier(ld: _Loader, c: _Ctx, doc: dict[str, Any], meta: dict[str, Any], _ns: str | None, name: str,
              source: Source) -> None:
    spec = c.mapping(doc.get("spec"), "spec")
    for k in spec:
        if k not in ("priority", "description"):
            c.err(f"spec.{k} is not a Tier field (priority, description)")
    prio = spec.get("priority")
    priority: int | None = None
    if prio is None:
        c.err("spec.priority is required")
    else:
        priority = c.integer(prio, "spec.priority", 0, 255)
    if priority is not None and priority in crd.RESERVED_TIER_PRIORITIES:
        c.err(f"spec.priority {priority} is reserved (tier priorities "
              f"{', '.join(map(str, crd.RESERVED_TIER_PRIORITIES))} are Antrea's)")
        priority = None
    if name in crd.BUILTIN_TIERS:
        c.err(f"metadata.name {_q(name)} is the name of a built-in Tier (priority {crd.BUILTIN_TIERS[name]}), "
              "which cannot be redefined")
        return
    desc = c.string(spec.get("description"), "spec.description") or ""
    if priority is not None:
        ld.tiers.append(Tier(name, priority, desc, source=source))


# ------------------------------------------------------------------------------------------- groups


def read_group(ld: _Loader, c: _Ctx, doc: dict[str, Any], meta: dict[str, Any], ns: str | None, name: str,
               source: Source) -> None:
    kind = "ClusterGroup" if ns is None else "Group"
    uid = c.string(meta.get("uid"), "metadata.uid") or ""
    spec = c.mapping(doc.get("spec"), "spec")
    allowed = ("podSelector", "namespaceSelector", "ipBlocks", "ipBlock", "childGroups")
    for k in spec:
        if k in ("serviceReference", "externalEntitySelector", "nodeSelector"):
            c.err(f"spec.{k} is not supported by pyantrea")
        elif k not in allowed:
            c.err(f"spec.{k} is not a {kind} field ({', '.join(allowed)})")
    pod_sel = c.selector(spec["podSelector"], "spec.podSelector") if "podSelector" in spec else None
    ns_sel = c.selector(spec["namespaceSelector"], "spec.namespaceSelector") if "namespaceSelector" in spec else None
    if ns is not None and ns_sel is not None:
        pass  # a namespaced Group may select Pods of other Namespaces by label, as Antrea allows
    blocks = []
    raw_blocks = c.seq(spec.get("ipBlocks"), "spec.ipBlocks")
    if "ipBlock" in spec:  # v1alpha2's single ipBlock
        raw_blocks = raw_blocks + [spec["ipBlock"]]
    for i, b in enumerate(raw_blocks):
        blk = ld._ip_block(c, b, f"spec.ipBlocks[{i}]")
        if blk is not None:
            blocks.append(blk)
    children: list[str] = []
    for i, ch in enumerate(c.seq(spec.get("childGroups"), "spec.childGroups")):
        s = c.string(ch, f"spec.childGroups[{i}]", required=True)
        if s is not None:
            if s == name:
                c.err(f"spec.childGroups[{i}] {_q(s)}: a {kind} cannot be its own child group")
            else:
                children.append(s)
    used = sum(1 for x in ((pod_sel is not None or ns_sel is not None), bool(raw_blocks), "childGroups" in spec) if x)
    if used > 1:
        c.err("at most one of podSelector/namespaceSelector, ipBlocks and childGroups may be set")
    if used == 0 and not any(k in spec for k in ("serviceReference", "externalEntitySelector", "nodeSelector")):
        c.err("spec must set podSelector and/or namespaceSelector, ipBlocks or childGroups")
    ld.groups.append(ClusterGroup(ns, name, pod_sel, ns_sel, tuple(blocks), tuple(children), uid, source))


# ------------------------------------------------------------------------------------------- policies


def _applied_to(c: _Ctx, v: Any, path: str, cluster: bool) -> list[AppliedTo]:
    out: list[AppliedTo] = []
    for i, at in enumerate(c.seq(v, path)):
        p = f"{path}[{i}]"
        d = c.mapping(at, p)
        if not d:
            c.err(f"{p} must set podSelector, namespaceSelector or group")
            continue
        for k in d:
            if k in _UNSUPPORTED_APPLIED_TO_FIELDS:
                c.err(f"{p}.{k} is not supported by pyantrea")
            elif k not in _APPLIED_TO_FIELDS:
                c.err(f"{p}.{k} is not an appliedTo field ({', '.join(_APPLIED_TO_FIELDS)})")
        group = c.string(d.get("group"), f"{p}.group", required="group" in d)
        pod_sel = c.selector(d["podSelector"], f"{p}.podSelector") if "podSelector" in d else None
        ns_sel = c.selector(d["namespaceSelector"], f"{p}.namespaceSelector") if "namespaceSelector" in d else None
        if group is not None and (pod_sel is not None or ns_sel is not None):
            c.err(f"{p}: group cannot be set with other peers in appliedTo")
            continue
        if ns_sel is not None and not cluster:
            c.err(f"{p}.namespaceSelector: an Antrea NetworkPolicy applies to Pods of its own Namespace "
                  "(use a ClusterNetworkPolicy to select Namespaces)")
            continue
        out.append(AppliedTo(pod_sel, ns_sel, group))
    return out


def _peers(ld: _Loader, c: _Ctx, v: Any, path: str, cluster: bool) -> list[Peer]:
    out: list[Peer] = []
    for j, peer in enumerate(c.seq(v, path)):
        pp = f"{path}[{j}]"
        d = c.mapping(peer, pp)
        if not d:
            c.err(f"{pp} must specify podSelector, namespaceSelector, namespaces, ipBlock or group")
            continue
        for k in d:
            if k in _UNSUPPORTED_PEER_FIELDS:
                c.err(f"{pp}.{k} is not supported by pyantrea")
            elif k not in _PEER_FIELDS:
                c.err(f"{pp}.{k} is not a peer field ({', '.join(_PEER_FIELDS)})")
        pod_sel = c.selector(d["podSelector"], f"{pp}.podSelector") if "podSelector" in d else None
        ns_sel = c.selector(d["namespaceSelector"], f"{pp}.namespaceSelector") if "namespaceSelector" in d else None
        group = c.string(d.get("group"), f"{pp}.group", required="group" in d)
        self_ns = False
        if "namespaces" in d:
            nsd = c.mapping(d["namespaces"], f"{pp}.namespaces")
            if not cluster:
                c.err(f"{pp}.namespaces is only valid in a ClusterNetworkPolicy")
            if ns_sel is not None:
                c.err(f"{pp}: namespaces and namespaceSelector cannot be set at the same time for a single peer")
            for k in nsd:
                if k == "sameLabels":
                    c.err(f"{pp}.namespaces.sameLabels is not supported by pyantrea")
                elif k != "match":
                    c.err(f"{pp}.namespaces.{k} is not a namespaces field (match)")
            m = c.string(nsd.get("match"), f"{pp}.namespaces.match")
            if m is not None and m != "Self":
                c.err(f"{pp}.namespaces.match {_q(m)} is not one of Self")
            elif m == "Self":
                self_ns = True
            elif "sameLabels" not in nsd:
                c.err(f"{pp}.namespaces must set match")
        block = None
        if "ipBlock" in d:
            if pod_sel is not None or ns_sel is not None or group is not None or "namespaces" in d:
                c.err(f"{pp}: ipBlock may not be combined with other fields of the peer")
            block = ld._ip_block(c, d["ipBlock"], f"{pp}.ipBlock")
        if group is not None and (pod_sel is not None or ns_sel is not None or "namespaces" in d):
            c.err(f"{pp}: group cannot be set with other peers in rules")
        out.append(Peer(pod_sel, ns_sel, self_ns, block, group))
    return out


def _ports(c: _Ctx, v: Any, path: str) -> list[NetworkPolicyPort]:
    out: list[NetworkPolicyPort] = []
    for j, port in enumerate(c.seq(v, path)):
        pp = f"{path}[{j}]"
        d = c.mapping(port, pp)
        for k in d:
            if k in ("sourcePort", "sourceEndPort"):
                c.err(f"{pp}.{k} is not supported by pyantrea")
            elif k not in ("protocol", "port", "endPort"):
                c.err(f"{pp}.{k} is not a port field (protocol, port, endPort)")
        proto = c.protocol(d.get("protocol"), f"{pp}.protocol")
        number = c.int_or_name(d.get("port"), f"{pp}.port")
        end = c.port_number(d.get("endPort"), f"{pp}.endPort")
        if end is not None:
            if d.get("port") is None:
                c.err(f"{pp}.endPort: if endPort is specified, port must be specified")
                end = None
            elif isinstance(d.get("port"), str):
                c.err(f"{pp}.endPort: if port is a name, endPort cannot be specified")
                end = None
            elif isinstance(number, int) and end < number:
                c.err(f"{pp}.endPort {end} should be greater than or equal to port {number}")
                end = None
        out.append(NetworkPolicyPort(protocol=proto, port=number, end_port=end))
    return out


def _protocols(c: _Ctx, v: Any, path: str) -> list[ICMP]:
    out: list[ICMP] = []
    for j, proto in enumerate(c.seq(v, path)):
        pp = f"{path}[{j}]"
        d = c.mapping(proto, pp)
        for k in d:
            if k == "igmp":
                c.err(f"{pp}.igmp is not supported by pyantrea")
            elif k != "icmp":
                c.err(f"{pp}.{k} is not a protocol of a rule (icmp)")
        if "icmp" not in d:
            if "igmp" not in d:
                c.err(f"{pp} must set icmp")
            continue
        icmp = c.mapping(d["icmp"], f"{pp}.icmp")
        for k in icmp:
            if k not in ("icmpType", "icmpCode"):
                c.err(f"{pp}.icmp.{k} is not an icmp field (icmpType, icmpCode)")
        t = c.integer(icmp.get("icmpType"), f"{pp}.icmp.icmpType", 0, 255)
        code = c.integer(icmp.get("icmpCode"), f"{pp}.icmp.icmpCode", 0, 255)
        if code is not None and t is None and icmp.get("icmpType") is None:
            c.err(f"{pp}.icmp.icmpCode needs icmpType")
        out.append(ICMP(t, code))
    return out


def _rule_name(direction: str, action: str, raw: dict[str, Any]) -> str:
    """Antrea's mutating webhook names an unnamed rule `<direction>-<action>-<7 hex of its hash>`."""
    body = json.dumps(raw, sort_keys=True, default=str).encode()
    return f"{direction}-{action.lower()}-{hashlib.sha1(body).hexdigest()[:7]}"


def _rules(ld: _Loader, c: _Ctx, spec: dict[str, Any], direction: str, peers_key: str, cluster: bool) -> list[Rule]:
    out: list[Rule] = []
    for i, r in enumerate(c.seq(spec.get(direction), f"spec.{direction}")):
        p = f"spec.{direction}[{i}]"
        d = c.mapping(r, p)
        other = "to" if peers_key == "from" else "from"
        for k in d:
            if k in _UNSUPPORTED_RULE_FIELDS:
                c.err(f"{p}.{k} is not supported by pyantrea")
            elif k == other:
                c.err(f"{p}.{k}: an {direction} rule has {peers_key}, not {other}")
            elif k not in _RULE_FIELDS:
                c.err(f"{p}.{k} is not a rule field (action, name, {peers_key}, ports, protocols, appliedTo)")
        action = c.string(d.get("action"), f"{p}.action", required=True)
        if action is not None and action not in crd.ACTIONS:
            c.err(f"{p}.action {_q(action)} is not one of {', '.join(crd.ACTIONS)}")
            action = None
        c.boolean(d.get("enableLogging"), f"{p}.enableLogging")
        c.string(d.get("logLabel"), f"{p}.logLabel")
        name = c.string(d.get("name"), f"{p}.name")
        peers = _peers(ld, c, d.get(peers_key), f"{p}.{peers_key}", cluster)
        ports = _ports(c, d.get("ports"), f"{p}.ports")
        icmp = _protocols(c, d.get("protocols"), f"{p}.protocols")
        applied = _applied_to(c, d.get("appliedTo"), f"{p}.appliedTo", cluster)
        if action is None:
            continue
        out.append(Rule(action, tuple(peers), tuple(ports), tuple(icmp),
                        name or _rule_name(direction, action, d), tuple(applied)))
    return out


def read_policy(ld: _Loader, c: _Ctx, doc: dict[str, Any], meta: dict[str, Any], ns: str | None, name: str,
                source: Source) -> None:
    cluster = ns is None
    kind = "ClusterNetworkPolicy" if cluster else "NetworkPolicy"
    uid = c.string(meta.get("uid"), "metadata.uid") or ""
    spec = c.mapping(doc.get("spec"), "spec")
    fields = ("tier", "priority", "appliedTo", "ingress", "egress")
    for k in spec:
        if k not in fields:
            c.err(f"spec.{k} is not a {kind} field ({', '.join(fields)})")
    prio = spec.get("priority")
    priority: float | None = None
    if prio is None:
        c.err("spec.priority is required")
    elif isinstance(prio, bool) or not isinstance(prio, (int, float)):
        c.err(f"spec.priority must be a number, got {_tn(prio)} {_q(prio)}")
    elif not 1.0 <= float(prio) <= 10000.0:
        c.err(f"spec.priority {prio} is out of range (1-10000)")
    else:
        priority = float(prio)
    tier = crd.tier_name(c.string(spec.get("tier"), "spec.tier"))
    applied = _applied_to(c, spec.get("appliedTo"), "spec.appliedTo", cluster)
    ingress = _rules(ld, c, spec, "ingress", "from", cluster)
    egress = _rules(ld, c, spec, "egress", "to", cluster)
    rules = ingress + egress
    raw_rules = [r for d in ("ingress", "egress") for r in (spec[d] if isinstance(spec.get(d), list) else [])]
    in_rules = sum(1 for r in raw_rules if isinstance(r, dict) and r.get("appliedTo"))
    if "appliedTo" in spec and spec.get("appliedTo") and in_rules:
        c.err("appliedTo should not be set in both spec and rules")
    elif not spec.get("appliedTo") and not in_rules:
        c.err("appliedTo needs to be set in either spec.appliedTo or every rule's appliedTo")
    elif in_rules and in_rules != len(raw_rules):
        c.err("appliedTo field should either be set in all rules or in none of them")
    if tier == crd.BASELINE_TIER:
        for direction, rs in (("ingress", ingress), ("egress", egress)):
            for i, r in enumerate(rs):
                if r.action == "Pass":
                    c.err(f"spec.{direction}[{i}].action: Pass should not be set for Baseline Tier policy rules")
    for direction, rs in (("ingress", ingress), ("egress", egress)):
        seen: dict[str, int] = {}
        for i, r in enumerate(rs):
            if r.name in seen:
                c.err(f"spec.{direction}[{i}].name {_q(r.name)}: rule names must be unique within the policy "
                      f"(also spec.{direction}[{seen[r.name]}])")
            seen.setdefault(r.name, i)
    del rules
    if priority is None:  # already a problem: the object is kept only for the cross-object checks
        priority = 0.0
    ld.antrea_policies.append(AntreaPolicy(ns, name, priority, tier, tuple(applied), tuple(ingress), tuple(egress),
                                           uid, source))


# ------------------------------------------------------------------------------------------- across objects


def object_label(kind: str, namespace: str | None, name: str) -> str:
    return f"{kind} {namespace}/{name}" if namespace is not None else f"{kind} {name}"


def cross_problems(tiers: Iterable[Tier], policies: Iterable[AntreaPolicy], groups: Iterable[ClusterGroup],
                   where: dict[tuple[str, str], str] | None = None) -> list[str]:
    """Problems that need more than one object: unknown tiers, overlapping tier priorities, too many
    tiers, nested groups more than one level deep. `where` maps (kind, key) to the object's
    where-label (default: its Source)."""
    where = where or {}

    def at(kind: str, key: str, src: Source) -> str:
        return where.get((kind, key)) or str(src)

    out: list[str] = []
    user = sorted(tiers, key=lambda t: t.name)
    by_prio: dict[int, str] = {p: n for n, p in crd.BUILTIN_TIERS.items()}
    for t in user:
        other = by_prio.get(t.priority)
        if other is not None:
            out.append(f"{at(crd.TIER, t.name, t.source)}: Tier {t.name}: spec.priority {t.priority} overlaps "
                       f"with existing Tier {other}")
        else:
            by_prio[t.priority] = t.name
    if len(user) + len(crd.BUILTIN_TIERS) > crd.MAX_TIERS:
        out.append(f"{at(crd.TIER, user[-1].name, user[-1].source)}: Tier {user[-1].name}: maximum number of "
                   f"Tiers supported: {crd.MAX_TIERS} (the {len(crd.BUILTIN_TIERS)} built-in ones included)")
    known = set(crd.BUILTIN_TIERS) | {t.name for t in user}
    for p in sorted(policies, key=lambda p: (p.namespace or "", p.name)):
        if p.tier not in known:
            out.append(f"{at(p.kind, p.key, p.source)}: {object_label(p.kind, p.namespace, p.name)}: spec.tier "
                       f"{_q(p.tier)}: tier {p.tier} does not exist (tiers: {', '.join(sorted(known))})")
    gs = {(g.namespace, g.name): g for g in groups}
    for g in sorted(gs.values(), key=lambda g: (g.namespace or "", g.name)):
        for ch in g.child_groups:
            child = gs.get((g.namespace, ch))
            if child is not None and child.child_groups:
                out.append(f"{at(g.kind, g.key, g.source)}: {object_label(g.kind, g.namespace, g.name)}: "
                           f"spec.childGroups: {g.kind} {ch} cannot be a child group: it has child groups itself")
    return out


def referencing(tier: str, policies: Iterable[AntreaPolicy]) -> list[AntreaPolicy]:
    """The policies that name `tier` (a Tier they reference cannot be deleted)."""
    return [p for p in policies if p.tier == tier]


def gate_problem(kind: str) -> str:
    return (f"{crd.MANIFEST_KIND.get(kind, kind)} ({crd.API_VERSION}) needs the {crd.GATE} feature gate: "
            f"set featureGates: {{{crd.GATE}: true}} in antrea-agent.conf")
