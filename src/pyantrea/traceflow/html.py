"""`antctl traceflow -o html`: one self-contained page (inline CSS and SVG, no script, no external
asset) that draws the path across nodes and tables, with each hop's explanation underneath."""

from __future__ import annotations

import html
from typing import Any

from pyantrea.agent.openflow import tables as T
from pyantrea.traceflow.engine import Engine, hop_flow
from pyantrea.traceflow.explain import Explainer, _State, table_name
from pyantrea.traceflow.model import HostStep, PassStep, Path

COL_W = 200
COL_GAP = 56
BOX_H = 30
BOX_GAP = 8
TOP = 86
LEFT = 24

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px;color:#1d2330;background:#f6f7fb}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 6px}
.sub{color:#505a6b;margin:0 0 12px;font-size:14px}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600;font-size:13px}
.Delivered{background:#1f8a4c}.Dropped{background:#c62828}.ForwardedOutOfOverlay{background:#8a6d1f}.Failed{background:#666}
.card{background:#fff;border:1px solid #dde1ea;border-radius:8px;padding:12px 16px;margin:12px 0;overflow-x:auto}
svg text{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif}
table.obs{border-collapse:collapse;font-size:13px}
table.obs td,table.obs th{border:1px solid #dde1ea;padding:3px 8px;text-align:left}
ol.hops{font-size:13px;line-height:1.45} ol.hops li{margin:3px 0}
code{font-size:12px;background:#eef1f7;padding:1px 4px;border-radius:3px}
details summary{cursor:pointer;font-weight:600;margin:6px 0}
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


def _svg(engine: Engine, path: Path) -> str:
    ex = Explainer(engine)
    steps = path.steps
    cols: list[dict[str, Any]] = []
    for s in steps:
        if isinstance(s, PassStep):
            st = _State(s.result.flow, s.packet)
            boxes = []
            for h in s.hops:
                boxes.append((h, ex.hop(s, h, st)))
            cols.append({"step": s, "boxes": boxes})
        else:
            cols.append({"step": s, "boxes": []})
    n_rows = max([len(c["boxes"]) for c in cols] + [4])
    height = TOP + n_rows * (BOX_H + BOX_GAP) + 90
    width = LEFT * 2 + len(cols) * COL_W + (len(cols) - 1) * COL_GAP
    out: list[str] = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                      f'viewBox="0 0 {width} {height}" role="img" aria-label="packet path">',
                      '<defs><marker id="arr" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
                      'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#35506e"/></marker></defs>']
    # node panels: consecutive columns of one node
    spans: list[tuple[str, int, int]] = []
    for i, c in enumerate(cols):
        node = c["step"].node
        if spans and spans[-1][0] == node:
            spans[-1] = (node, spans[-1][1], i)
        else:
            spans.append((node, i, i))
    for node, a, b in spans:
        x0 = LEFT + a * (COL_W + COL_GAP) - 12
        x1 = LEFT + b * (COL_W + COL_GAP) + COL_W + 12
        out.append(f'<rect x="{x0}" y="8" width="{x1 - x0}" height="{height - 16}" rx="10" fill="#ffffff" '
                   f'stroke="#b8c2d6" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{x0 + 12}" y="30" font-size="16" font-weight="700" fill="#1d2330">Node {_e(node)}</text>')
    for i, c in enumerate(cols):
        s = c["step"]
        x = LEFT + i * (COL_W + COL_GAP)
        if isinstance(s, PassStep):
            label = f"br-int, in from {s.in_port}"
            sub = f"conntrack: {s.conntrack}" + (f", ct_mark=0x{s.ct_mark:x}" if s.ct_mark else "")
            out.append(f'<text x="{x}" y="54" font-size="13" font-weight="600" fill="#35506e">{_e(label)}</text>')
            out.append(f'<text x="{x}" y="70" font-size="11" fill="#505a6b">{_e(sub)}</text>')
            prev_y = None
            for j, (h, sentence) in enumerate(c["boxes"]):
                y = TOP + j * (BOX_H + BOX_GAP)
                short = table_name(h.table, engine.proxy).split("(")[0]
                fill, stroke = COLORS[_kind(h)]
                out.append(f'<g><title>{_e(sentence)}&#10;{_e(hop_flow(h))}</title>'
                           f'<rect x="{x}" y="{y}" width="{COL_W}" height="{BOX_H}" rx="6" fill="{fill}" '
                           f'stroke="{stroke}" stroke-width="1.5"/>'
                           f'<text x="{x + 8}" y="{y + 19}" font-size="13" font-weight="700" fill="{stroke}">{h.table}</text>'
                           f'<text x="{x + 38}" y="{y + 19}" font-size="12" fill="#1d2330">{_e(short)}</text>'
                           f'<text x="{x + COL_W - 8}" y="{y + 19}" font-size="10" text-anchor="end" fill="#505a6b">'
                           f'p{h.priority}</text></g>')
                if prev_y is not None:
                    out.append(f'<line x1="{x + COL_W / 2}" y1="{prev_y + BOX_H}" x2="{x + COL_W / 2}" y2="{y}" '
                               f'stroke="#8190aa" stroke-width="1.5" marker-end="url(#arr)"/>')
                prev_y = y
            t = s.result.trace
            end_y = TOP + len(c["boxes"]) * (BOX_H + BOX_GAP) + 6
            if t is not None and t.verdict == "output" and t.out_port is not None:
                name = s.result.port_names.get(t.out_port, str(t.out_port))
                res = f"out of {name}"
                color = "#35506e"
            else:
                res = "dropped"
                color = "#c62828"
            out.append(f'<text x="{x}" y="{end_y + 12}" font-size="12" font-weight="600" fill="{color}">{_e(res)}</text>')
        else:
            assert isinstance(s, HostStep)
            out.append(f'<text x="{x}" y="54" font-size="13" font-weight="600" fill="#8a6d1f">host (Linux)</text>')
            lines = []
            pi, po = s.packet_in, s.packet_out
            if s.unnat:
                lines.append(("conntrack", "reverses NAT"))
                if po.src != pi.src:
                    lines.append(("", f"src {pi.src} -> {po.src}"))
                if po.dst != pi.dst:
                    lines.append(("", f"dst {pi.dst} -> {po.dst}"))
            if s.nat is not None:
                lines.append(("kube-proxy", f"DNAT {pi.dst}:{pi.dport}"))
                lines.append(("", f"-> {s.nat.dnat_to}"))
                lines.append(("", f"{s.nat.endpoint_chain or ''}"))
            if s.reject is not None:
                lines.append(("kube-proxy", "REJECT: no endpoints"))
            if s.masquerade:
                lines.append(("masquerade", f"src -> {po.src}"))
            if s.route is not None:
                r = s.route
                how = {"pod": f"connected, {r.device}", "peer": f"via {r.via} onlink", "local": "local address",
                       "underlay": "default route, underlay"}[r.kind]
                lines.append(("route", f"{po.dst}"))
                lines.append(("", how))
            if s.arp_mac:
                lines.append(("ARP", f"{s.route.via if s.route else ''} is-at"))
                lines.append(("", f"{s.arp_mac} (table 20)"))
            split: list[tuple[str, str]] = []
            for lab, val in lines:
                if lab:
                    split.append((lab, ""))
                split.append(("", val))
            lines = split
            box_h = 14 + 16 * len(lines)
            out.append(f'<g><title>{_e(" ".join(ex.host(s)))}</title>'
                       f'<rect x="{x}" y="{TOP}" width="{COL_W}" height="{box_h}" rx="8" fill="#fff7e6" '
                       f'stroke="#c07a1a" stroke-width="1.5"/>')
            for k, (lab, val) in enumerate(lines):
                y = TOP + 18 + 16 * k
                if lab:
                    out.append(f'<text x="{x + 8}" y="{y}" font-size="11" font-weight="700" fill="#8a5a10">{_e(lab)}</text>')
                else:
                    out.append(f'<text x="{x + 16}" y="{y}" font-size="10.5" fill="#1d2330">{_e(val)}</text>')
            out.append("</g>")
        # the arrow to the next column
        if i + 1 < len(cols):
            nxt = cols[i + 1]["step"]
            ax = x + COL_W + 4
            ay = TOP + 14
            label = ""
            if isinstance(s, PassStep) and isinstance(nxt, PassStep) and nxt.entry == "tunnel":
                label = "Geneve"
            elif isinstance(s, PassStep) and isinstance(nxt, HostStep):
                label = "gw0"
            elif isinstance(s, HostStep):
                label = "gw0"
            out.append(f'<line x1="{ax}" y1="{ay}" x2="{ax + COL_GAP - 8}" y2="{ay}" stroke="#35506e" stroke-width="2" '
                       f'marker-end="url(#arr)"/>')
            if label:
                out.append(f'<text x="{ax + (COL_GAP - 8) / 2}" y="{ay - 6}" font-size="10" text-anchor="middle" '
                           f'fill="#35506e">{_e(label)}</text>')
    o = path.outcome
    fill = {"Delivered": "#1f8a4c", "Dropped": "#c62828"}.get(o.action, "#8a6d1f")
    msg = f"{o.action} on {o.node}" + (f": Pod {o.pod}" if o.pod else "") + (
        f" (table {o.table} {o.table_name})" if o.action == "Dropped" and o.table is not None else "")
    out.append(f'<text x="{LEFT}" y="{height - 22}" font-size="15" font-weight="700" fill="{fill}">{_e(msg)}</text>')
    out.append("</svg>")
    return "\n".join(out)


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
        parts.append(f'<div class="card">{_svg(engine, p)}</div>')
        parts.append(f'<div class="card"><b>Antrea Traceflow observations</b>{_observations(d)}</div>')
        parts.append(f'<div class="card">{_details(engine, p)}</div>')
    parts.append("</body></html>\n")
    return "\n".join(parts)
