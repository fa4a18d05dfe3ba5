"""`antctl traceflow -o html`: one self-contained page (inline CSS and SVG, no script, no external
asset) that draws the path across nodes and tables, with each hop's explanation underneath."""

from __future__ import annotations

import html
from typing import Any

from pyantrea.agent.openflow import tables as T
from pyantrea.traceflow.engine import Engine, hop_flow
from pyantrea.traceflow.explain import Explainer, _State, table_name
from pyantrea.traceflow.model import HostStep, PassStep, Path

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px;color:#1d2330;background:#f6f7fb}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 6px}
.sub{color:#505a6b;margin:0 0 12px;font-size:14px}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600;font-size:13px}
.Delivered{background:#1f8a4c}.Dropped{background:#c62828}.Rejected{background:#ad1457}.ForwardedOutOfOverlay{background:#8a6d1f}.Failed{background:#666}
.card{background:#fff;border:1px solid #dde1ea;border-radius:8px;padding:12px 16px;margin:12px 0;overflow-x:auto}
svg text{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif}
table.obs{border-collapse:collapse;font-size:13px}
table.obs td,table.obs th{border:1px solid #dde1ea;padding:3px 8px;text-align:left}
ol.hops{font-size:13px;line-height:1.45} ol.hops li{margin:3px 0}
code{font-size:12px;background:#eef1f7;padding:1px 4px;border-radius:3px}
details summary{cursor:pointer;font-weight:600;margin:6px 0}
.path{display:flex;flex-wrap:wrap;align-items:flex-start;row-gap:14px}
.node{border:1px dashed #b8c2d6;border-radius:10px;padding:10px 12px 12px;background:#fff;min-width:0}
.node>.lbl.nodename{font-size:16px;font-weight:700;margin:0 0 8px}
.cols{display:flex;flex-wrap:wrap;align-items:flex-start;row-gap:14px}
.col{width:230px;flex:none;min-width:0}
.col>.head{font-size:13px;font-weight:600;color:#35506e;overflow-wrap:anywhere}
.col>.head.host{color:#8a6d1f}
.col>.conn{font-size:11px;color:#505a6b;margin:2px 0 8px;overflow-wrap:anywhere}
.box{display:flex;align-items:baseline;column-gap:8px;border:1.5px solid;border-radius:6px;padding:6px 8px;
margin:0 0 14px;position:relative}
.box:not(:last-of-type)::after{content:"";position:absolute;left:calc(50% - 5px);bottom:-12px;border-left:5px solid transparent;
border-right:5px solid transparent;border-top:8px solid #8190aa}
.box>.tid{font-size:13px;font-weight:700;min-width:26px}
.box>.tname{flex:1 1 auto;min-width:0;font-size:12px;color:#1d2330;overflow-wrap:anywhere}
.box>.prio{flex:none;font-size:10px;color:#505a6b}
.hostbox{border:1.5px solid #c07a1a;background:#fff7e6;border-radius:8px;padding:6px 8px;margin:0 0 8px}
.hostbox>.hk{font-size:11px;font-weight:700;color:#8a5a10;overflow-wrap:anywhere}
.hostbox>.hv{font-size:11px;color:#1d2330;padding-left:8px;overflow-wrap:anywhere}
.res{font-size:12px;font-weight:600;overflow-wrap:anywhere}
.link{flex:none;width:60px;margin-top:40px;text-align:center}
.link>.lbl{display:block;font-size:10px;color:#35506e;overflow-wrap:anywhere}
.verdict{font-size:15px;font-weight:700;margin:12px 0 0;overflow-wrap:anywhere}
"""

COLORS = {
    "class": ("#e3eaf7", "#5b78b0"), "ct": ("#efe6f8", "#7d57a8"), "svc": ("#fff1dc", "#c07a1a"),
    "allow": ("#def3e6", "#1f8a4c"), "policy": ("#eef5f0", "#6b9a7d"), "drop": ("#fbe2e2", "#c62828"),
    "fwd": ("#e1f1f7", "#2b7c9e"), "out": ("#dfe7f0", "#35506e"), "arp": ("#f4f0dc", "#8a7a1f"),
}


def _kind(h: Any) -> str:
    t = h.table
    if h.flow_actions == ("drop",):
        return "drop"
    if t in (T.CLASSIFIER, T.SPOOF_GUARD):
        return "class"
    if t == T.ARP_RESPONDER:
        return "arp"
    if t in (T.CT_ZONE, T.CT_STATE, T.CT_COMMIT):
        return "ct"
    if t == T.DNAT:
        return "svc" if h.priority > 0 else "fwd"
    if t in (T.SERVICE_LB, T.ENDPOINT_DNAT, T.HAIRPIN_SNAT, T.SERVICE_HAIRPIN):  # AntreaProxy
        return "svc" if h.priority > 0 else "fwd"
    if t in (T.EGRESS_RULE, T.INGRESS_RULE, T.EGRESS_DEFAULT, T.INGRESS_DEFAULT):
        return "allow" if h.priority == 190 else "policy"
    if t == T.OUTPUT:
        return "out"
    return "fwd"


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


ARROW_DEFS = ('<svg class="defs" width="0" height="0" style="position:absolute" aria-hidden="true"><defs>'
              '<marker id="arr" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
              'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#35506e"/></marker></defs></svg>')


def _link(label: str) -> str:
    """The arrow from one column to the next (to another pass, the host, or a peer node), with its label."""
    return ('<div class="link"><svg width="52" height="12" aria-hidden="true"><line x1="2" y1="6" x2="48" y2="6" '
            'stroke="#35506e" stroke-width="2" marker-end="url(#arr)"/></svg>'
            + (f'<span class="lbl">{_e(label)}</span>' if label else "") + "</div>")


def _pass_column(ex: Explainer, s: PassStep) -> str:
    out = [f'<div class="col"><div class="lbl head">br-int, in from {_e(s.in_port)}</div>',
           f'<div class="lbl conn">conntrack: {_e(s.conntrack)}'
           + (f", ct_mark=0x{s.ct_mark:x}" if s.ct_mark else "") + "</div>"]
    st = _State(s.result.flow)
    for h in s.hops:
        sentence = ex.hop(s, h, st)
        fill, stroke = COLORS[_kind(h)]
        out.append(f'<div class="box" style="background:{fill};border-color:{stroke}" '
                   f'title="{_e(sentence)}&#10;{_e(hop_flow(h))}">'
                   f'<span class="lbl tid" style="color:{stroke}">{h.table}</span>'
                   f'<span class="lbl tname">{_e(table_name(h.table).split("(")[0])}</span>'
                   f'<span class="lbl prio">p{h.priority}</span></div>')
    t = s.result.trace
    if t is not None and t.verdict == "output" and t.out_port is not None:
        res, color = f"out of {s.result.port_names.get(t.out_port, str(t.out_port))}", "#35506e"
    else:
        res, color = "dropped", "#c62828"
    out.append(f'<div class="lbl res" style="color:{color}">{_e(res)}</div></div>')
    return "".join(out)


def _host_column(ex: Explainer, s: HostStep) -> str:
    lines: list[tuple[str, str]] = []
    pi, po = s.packet_in, s.packet_out
    if s.unnat:
        lines.append(("conntrack", "reverses NAT"))
        if po.src != pi.src:
            lines.append(("", f"src {pi.src} -> {po.src}"))
        if po.dst != pi.dst:
            lines.append(("", f"dst {pi.dst} -> {po.dst}"))
    if s.nat is not None:
        lines += [("kube-proxy", f"DNAT {pi.dst}:{pi.dport}"), ("", f"-> {s.nat.dnat_to}"),
                  ("", f"{s.nat.endpoint_chain or ''}")]
    if s.reject is not None:
        lines.append(("kube-proxy", "REJECT: no endpoints"))
    if s.masquerade:
        lines.append(("masquerade", f"src -> {po.src}"))
    if s.route is not None:
        r = s.route
        how = {"pod": f"connected, {r.device}", "peer": f"via {r.via} onlink", "local": "local address",
               "underlay": "default route, underlay"}[r.kind]
        lines += [("route", f"{po.dst}"), ("", how)]
    if s.arp_mac:
        lines += [("ARP", f"{s.route.via if s.route else ''} is-at"), ("", f"{s.arp_mac} (table 20)")]
    body = []
    for lab, val in lines:
        if lab:
            body.append(f'<div class="lbl hk">{_e(lab)}</div>')
        if val:
            body.append(f'<div class="lbl hv">{_e(val)}</div>')
    return (f'<div class="col"><div class="lbl head host">host (Linux)</div><div class="lbl conn">&nbsp;</div>'
            f'<div class="hostbox" title="{_e(" ".join(ex.host(s)))}">{"".join(body)}</div></div>')


def _diagram(engine: Engine, path: Path) -> str:
    """The path as node panels (consecutive steps of one node), one column per br-int pass or host leg,
    one box per table; laid out by the browser (flex, wrapping), so that no label is ever cut off."""
    ex = Explainer(engine)
    steps = path.steps
    panels: list[tuple[str, list[int]]] = []
    for i, s in enumerate(steps):
        if panels and panels[-1][0] == s.node:
            panels[-1][1].append(i)
        else:
            panels.append((s.node, [i]))

    def link_after(i: int) -> str:
        s, nxt = steps[i], steps[i + 1]
        if isinstance(s, PassStep) and isinstance(nxt, PassStep) and nxt.entry == "tunnel":
            return _link("Geneve")
        return _link("gw0" if isinstance(s, HostStep) or isinstance(nxt, HostStep) else "")

    out = ['<div class="path">']
    for node, idx in panels:
        out.append(f'<div class="node"><div class="lbl nodename">Node {_e(node)}</div><div class="cols">')
        for k, i in enumerate(idx):
            s = steps[i]
            out.append(_pass_column(ex, s) if isinstance(s, PassStep) else _host_column(ex, s))  # type: ignore[arg-type]
            if k + 1 < len(idx):
                out.append(link_after(i))
        out.append("</div></div>")
        if idx[-1] + 1 < len(steps):
            out.append(link_after(idx[-1]))
    out.append("</div>")
    o = path.outcome
    color = {"Delivered": "#1f8a4c", "Dropped": "#c62828", "Rejected": "#c62828"}.get(o.action, "#8a6d1f")
    msg = f"{o.action} on {o.node}" + (f": Pod {o.pod}" if o.pod else "") + (
        f" (table {o.table} {o.table_name})" if o.action in ("Dropped", "Rejected") and o.table is not None else "")
    out.append(f'<div class="lbl verdict" style="color:{color}">{_e(msg)}</div>')
    return "".join(out)


def _observations(doc: dict[str, Any]) -> str:
    rows = []
    for r in doc.get("results", []):
        for o in r["observations"]:
            rows.append("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in (
                r["node"], r["role"], o.get("component", ""), o.get("componentInfo", ""), o.get("action", ""),
                o.get("pod", ""), o.get("networkPolicy", ""), o.get("translatedSrcIP", ""),
                o.get("translatedDstIP", ""), o.get("tunnelDstIP", ""))) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("node", "role", "component", "componentInfo", "action", "pod",
                                              "networkPolicy", "translatedSrcIP", "translatedDstIP", "tunnelDstIP"))
    return f'<table class="obs"><tr>{head}</tr>{"".join(rows)}</table>'


def _details(engine: Engine, path: Path) -> str:
    ex = Explainer(engine)
    out = []
    n = 0
    for s in path.steps:
        n += 1
        if isinstance(s, PassStep):
            out.append(f"<details open><summary>{n}. {_e(s.node)}: br-int, in from {_e(s.in_port)} "
                       f"({_e(s.packet.describe())}, conntrack {_e(s.conntrack)})</summary>")
            out.append(f"<p><code>{_e(s.request.command())}</code></p><ol class=\"hops\">")
            st = _State(s.result.flow, s.packet)
            for h in s.hops:
                out.append(f"<li>{_e(ex.hop(s, h, st))}<br><code>{_e(hop_flow(h))}</code></li>")
            out.append("</ol></details>")
        else:
            out.append(f"<details open><summary>{n}. {_e(s.node)}: host ({_e(s.packet_in.describe())})</summary>"
                       f"<ol class=\"hops\">")
            for line in ex.host(s):
                out.append(f"<li>{_e(line.strip())}</li>")
            out.append("</ol></details>")
    return "\n".join(out)


def render_html(engine: Engine, spec: Any, paths: list[Path], docs: list[dict[str, Any]]) -> str:
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>traceflow {_e(spec.source)} to {_e(spec.destination)}</title><style>{CSS}</style></head><body>",
             ARROW_DEFS,
             f"<h1>Traceflow {_e(spec.source)} &rarr; {_e(spec.destination)}</h1>"]
    for p, d in zip(paths, docs):
        o = p.outcome
        direction = "reply" if p.direction == "reply" else "request"
        parts.append(f"<h2>{_e(direction.capitalize())}: {_e(p.packet.describe())}"
                     + (f" &mdash; endpoint {_e(p.endpoint)}" if p.endpoint else "") + "</h2>")
        if p.extras.get("noReply"):
            parts.append(f'<p class="sub"><span class="badge Failed">no reply</span> {_e(p.extras["noReply"])}</p>')
            continue
        parts.append(f'<p class="sub"><span class="badge {_e(o.action)}">{_e(o.action)}</span> on {_e(o.node)}: '
                     f"{_e(o.reason)}</p>")
        if o.rules:
            parts.append(f'<p class="sub">policy rules: {_e("; ".join(o.rules))}</p>')
        if o.allowed_by:  # Antrea-native rules: which one allowed it, which ones passed it on
            parts.append(f'<p class="sub">allowed by: {_e("; ".join(o.allowed_by))}</p>')
        if o.passed:
            parts.append(f'<p class="sub">passed by: {_e("; ".join(o.passed))}</p>')
        parts.append(f'<div class="card">{_diagram(engine, p)}</div>')
        parts.append(f'<div class="card"><b>Antrea Traceflow observations</b>{_observations(d)}</div>')
        parts.append(f'<div class="card">{_details(engine, p)}</div>')
    parts.append("</body></html>\n")
    return "\n".join(parts)
